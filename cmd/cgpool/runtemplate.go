package main

import (
	"path"
	"strconv"
	"strings"
)

// How cgpool run turns COMMAND and one job's arguments into what runs.
//
// GNU parallel joins COMMAND into one shell line and shell-quotes every
// value it puts in (parallel(1), "{}": "Replacement strings are normally
// quoted"). cgpool runs COMMAND as an argv, without a shell, so a value
// in an argument of its own needs no quoting: `cgpool run gzip {}` gets
// any file name to gzip intact. Where a value lands in shell code, it is
// quoted as GNU parallel quotes it, so an input line `$(echo INJECTED)`
// is data, never code:
//   - COMMAND is one argument with spaces or shell syntax
//     (`cgpool run 'echo {}; sleep 1'`): a shell line, run by /bin/sh -c,
//     as in GNU parallel;
//   - the script of a shell's -c (`cgpool run sh -c 'echo {}'`, bash,
//     dash, zsh, ksh, mksh, ash, busybox sh).
// -q (--quote) turns the quoting off: values are pasted as they are.

// cmdForm is how a command runs.
type cmdForm int

const (
	formArgv   cmdForm = iota // exec the arguments, no shell
	formLine                  // one shell line: /bin/sh -c LINE
	formScript                // a shell's -c SCRIPT in the arguments
)

// command is COMMAND as given on the command line.
type command struct {
	args   []string
	form   cmdForm
	script int  // formScript: the index of the script in args
	repl   bool // some argument holds a replacement string
	slot   bool // some argument holds {%}: a job's slot must be known when it is expanded
	raw    bool // -q: never quote values
}

// shells whose -c takes a script that cgpool quotes values in.
var shells = map[string]bool{"sh": true, "bash": true, "dash": true, "zsh": true, "ksh": true, "mksh": true, "ash": true, "busybox": true}

// shellSyntax are the characters that make a lone COMMAND argument a
// shell line (parallel(1), QUOTING, lists the same).
const shellSyntax = " \t\n;&|<>()$`'\"\\*?[]~#!{}="

func newCommand(args []string, raw bool) *command {
	c := &command{args: args, raw: raw, script: -1}
	for _, a := range args {
		if hasRepl(a) {
			c.repl = true
		}
		if strings.Contains(a, "{%}") {
			c.slot = true
		}
	}
	switch {
	case raw: // GNU parallel's -q: the arguments are the command, as they are
	case len(args) == 1 && strings.ContainsAny(stripRepl(args[0]), shellSyntax):
		c.form = formLine
	case shells[path.Base(args[0])]:
		if i := scriptIndex(args); i > 0 {
			c.form, c.script = formScript, i
		}
	}
	return c
}

// scriptIndex finds the argument that is the script of a shell's -c:
// the one after an option cluster holding c (-c, -ec, -euxc). Options
// that take a value (-o, +o, -O) skip it. 0 if there is none.
func scriptIndex(args []string) int {
	i := 1
	if path.Base(args[0]) == "busybox" {
		if len(args) < 2 || !shells[args[1]] {
			return 0
		}
		i = 2
	}
	for ; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "-o" || a == "+o" || a == "-O" || a == "+O":
			i++
		case a == "--" || a == "-" || len(a) < 2 || (a[0] != '-' && a[0] != '+'):
			return 0
		case a[0] == '-' && a[1] != '-' && strings.ContainsRune(a, 'c'):
			if i+1 < len(args) {
				return i + 1
			}
			return 0
		}
	}
	return 0
}

// stripRepl removes replacement strings, so that {} alone does not make
// an argument a shell line.
func stripRepl(s string) string {
	var b strings.Builder
	for len(s) > 0 {
		i := strings.IndexByte(s, '{')
		if i < 0 {
			b.WriteString(s)
			break
		}
		b.WriteString(s[:i])
		if n := replLen(s[i:]); n > 0 {
			s = s[i+n:]
			continue
		}
		b.WriteByte('{')
		s = s[i+1:]
	}
	return b.String()
}

// hasRepl reports whether s holds a replacement string.
func hasRepl(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] == '{' && replLen(s[i:]) > 0 {
			return true
		}
	}
	return false
}

// replLen returns the length of the replacement string at the start of s
// ({}, {.}, {/}, {//}, {/.}, {#}, {%}, {N}, {N.}, {N/}, {N//}, {N/.}, N
// negative counting from the end), or 0.
func replLen(s string) int {
	end := strings.IndexByte(s, '}')
	if end < 0 || s[0] != '{' {
		return 0
	}
	if _, _, ok := parseRepl(s[1:end]); !ok {
		return 0
	}
	return end + 1
}

// parseRepl reads the inside of a replacement string: the argument it
// names (0 = all of them) and the transformation.
func parseRepl(in string) (n int, op string, ok bool) {
	switch in {
	case "", ".", "/", "//", "/.", "#", "%":
		return 0, in, true
	}
	digits := strings.TrimLeft(in, "-0123456789")
	num := in[:len(in)-len(digits)]
	switch digits {
	case "", ".", "/", "//", "/.":
	default:
		return 0, "", false
	}
	v, err := strconv.Atoi(num)
	if err != nil || v == 0 {
		return 0, "", false
	}
	return v, digits, true
}

// job is one command of a run.
type job struct {
	seq  int      // 1, 2, ... in input order ({#})
	args []string // its arguments from the input sources (after --colsep)
	slot int      // {%}: set when it is taken (0 when commands queue ahead: see runner.ahead)
	argv []string // what runs
	line string   // how it reads as a shell line (--dry-run, the joblog)
	in   []byte   // --pipe: its standard input
}

// argv returns what runs for j and how it reads as a shell line.
func (c *command) expand(j *job) (argv []string, line string) {
	q := shellQuote
	if c.raw {
		q = func(s string) string { return s }
	}
	same := func(s string) string { return s }
	switch c.form {
	case formLine:
		l := c.subst(c.args[0], j, q)
		if !c.repl {
			for _, a := range j.args {
				l += " " + q(a)
			}
		}
		return []string{"/bin/sh", "-c", l}, l
	default:
		argv = make([]string, 0, len(c.args)+len(j.args))
		for i, a := range c.args {
			if i == c.script {
				argv = append(argv, c.subst(a, j, q))
			} else {
				argv = append(argv, c.subst(a, j, same))
			}
		}
		if !c.repl {
			argv = append(argv, j.args...)
		}
		words := make([]string, len(argv))
		for i, a := range argv {
			words[i] = shellQuote(a)
		}
		return argv, strings.Join(words, " ")
	}
}

// subst replaces the replacement strings in s with j's values, each
// passed through q.
func (c *command) subst(s string, j *job, q func(string) string) string {
	if !c.repl || strings.IndexByte(s, '{') < 0 {
		return s
	}
	var b strings.Builder
	for len(s) > 0 {
		i := strings.IndexByte(s, '{')
		if i < 0 {
			b.WriteString(s)
			break
		}
		b.WriteString(s[:i])
		n := replLen(s[i:])
		if n == 0 {
			b.WriteByte('{')
			s = s[i+1:]
			continue
		}
		idx, op, _ := parseRepl(s[i+1 : i+n-1])
		b.WriteString(value(j, idx, op, q))
		s = s[i+n:]
	}
	return b.String()
}

// value is what one replacement string stands for.
func value(j *job, idx int, op string, q func(string) string) string {
	switch op {
	case "#":
		return strconv.Itoa(j.seq)
	case "%":
		return strconv.Itoa(j.slot)
	}
	if idx != 0 {
		if idx < 0 {
			idx += len(j.args) + 1
		}
		if idx < 1 || idx > len(j.args) {
			return q("")
		}
		return q(transform(j.args[idx-1], op))
	}
	parts := make([]string, len(j.args))
	for i, a := range j.args {
		parts[i] = q(transform(a, op))
	}
	return strings.Join(parts, " ")
}

// transform applies {.} {/} {//} {/.} as parallel(1) defines them.
func transform(s, op string) string {
	switch op {
	case ".":
		return noExt(s)
	case "/":
		return base(s)
	case "//":
		return path.Dir(s)
	case "/.":
		return noExt(base(s))
	}
	return s
}

func base(s string) string {
	if i := strings.LastIndexByte(s, '/'); i >= 0 {
		return s[i+1:]
	}
	return s
}

// noExt removes the last . and what follows it, if that comes after the
// last / (foo.jpg: foo; sub.dir/bar stays).
func noExt(s string) string {
	i := strings.LastIndexByte(s, '.')
	if i < 0 || strings.LastIndexByte(s, '/') > i {
		return s
	}
	return s[:i]
}

// shellQuote quotes s for a POSIX shell the way GNU parallel does: words
// of letters, digits and -_./+ as they are, anything else in single
// quotes (a ' becomes '"'"').
func shellQuote(s string) string {
	if s == "" {
		return "''"
	}
	safe := true
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("-_./+", c) >= 0) {
			safe = false
			break
		}
	}
	if safe {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'"'"'`) + "'"
}
