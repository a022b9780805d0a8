package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The fuzz targets of cgpool run's input side: how COMMAND, the input
// sources and a value turn into what runs (FuzzRunTemplate), and the
// joblog that --resume reads (FuzzJoblog). Seeds: the f.Add lines and the
// top-level testdata/fuzz/<name>.

// FuzzRunTemplate: whatever the command line (COMMAND, ::: lists,
// --colsep, -q, --halt) and the input lines, planning and expanding ends
// in jobs or a usage error, never a panic, and what runs is what a user
// was promised:
//   - COMMAND without replacement strings, run as an argv: COMMAND and then
//     the job's arguments, byte for byte (with or without -q);
//   - the arguments that are not shell code get the values pasted as they
//     are;
//   - shell code (a one-argument COMMAND line, a shell's -c script): read
//     by a POSIX shell's rules (shLex), it holds the same words as the
//     template with the values put in as data: no byte of a value is ever
//     an unquoted shell character (no injection), however the values look;
//   - the line shown by --dry-run and written to the joblog reads back, by
//     the same rules, as exactly the argv that runs.
//
// TestShLexIsSh checks that shLex reads lines as /bin/sh does.
func FuzzRunTemplate(f *testing.F) {
	add := func(cmdline, input, colsep string, raw bool) { f.Add(cmdline, input, colsep, raw, "") }
	add("echo", "a\nb c\n\n$(echo INJECTED)\n", "", false)
	add("echo\x1f{}", "it's\n`id`\n", "", false)
	add("echo {} {.} {/} {//} {/.} {#} {%}", "dir/sub.dir/file.tar.gz\n'\"\\\n", "", false)
	add("sh\x1f-c\x1fprintf '%s\\n' {1} {-1}; echo {2}", "a,b;c\nx , y ,z\n", ",", false)
	add("bash\x1f-euc\x1fecho {}\x1fargv0", "*\n~root\n!!\n", "", false)
	add("echo {}\x1f:::\x1fa b\x1f$HOME\x1f:::\x1f1\x1f2", "", "", false)
	add("printf\x1f%s\\n\x1f{}", "\t lead\x7f\xff\n", "", true)
	add("echo '{}' \"{}\" \\{}", "a b\n", "", false)
	add("{}", "echo hi\n", "", false)
	add("  {}", "\xb8\n", "", false) // a byte that is not UTF-8, in a shell line
	add("echo {0} {1x} {} {", "v\n", "[", false)
	f.Add("echo {}", "a\n", "", false, "soon,fail=10%")
	dir := filepath.Join("..", "..", "testdata", "fuzz", "FuzzRunTemplate")
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if b, err := os.ReadFile(filepath.Join(dir, e.Name())); err == nil {
			// A seed file: COMMAND's arguments separated by 0x1f on the
			// first line, the input lines after it.
			cmdline, input, _ := strings.Cut(string(b), "\n")
			add(cmdline, input, "", false)
		}
	}
	f.Fuzz(func(t *testing.T, cmdline, stdin, colsep string, raw bool, halt string) {
		args := strings.Split(cmdline, "\x1f")
		if slices.Contains(args, "::::") {
			return // :::: names files to read: not the fuzzer's to open
		}
		o := runOptions{jobs: 2, progress: "never", colsep: colsep, quote: raw, halt: halt}
		p, err := plan(o, args, strings.NewReader(stdin))
		if err != nil {
			if !isUsage(err) {
				t.Fatalf("plan %q: an error that is not a usage error: %v", args, err)
			}
			return
		}
		// Bound the combinations of ::: lists (each is read whole).
		n := 1
		for _, s := range p.srcs {
			if s.list {
				n *= len(s.values)
			}
			if n > 200 {
				return
			}
		}
		ch := make(chan input)
		errc := make(chan error, 1)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		go func() { errc <- produce(ctx, p.readers, p.in, ch); close(ch) }()
		seq := 0
		for in := range ch {
			seq++
			if seq > 200 {
				cancel()
				continue
			}
			j := &job{seq: seq, args: in.args, slot: (seq-1)%o.jobs + 1}
			checkExpand(t, p.cmd, j)
		}
		if err := <-errc; err != nil {
			// An input line can be too long; nothing else fails here.
			if !strings.Contains(err.Error(), "longer than") {
				t.Fatalf("produce: %v", err)
			}
		}
	})
}

func isUsage(err error) bool {
	var ue *usageError
	return errors.As(err, &ue)
}

// checkExpand asserts FuzzRunTemplate's properties for one job.
func checkExpand(t *testing.T, c *command, j *job) {
	t.Helper()
	argv, line := c.expand(j)
	for _, s := range append(slices.Clone(c.args), j.args...) {
		if strings.ContainsAny(s, "\x00\x01\x02") {
			return // NUL cannot be in an argv; 1 and 2 mark placeholders below
		}
	}
	switch c.form {
	case formLine:
		if len(argv) != 3 || argv[0] != "/bin/sh" || argv[1] != "-c" || line != argv[2] {
			t.Fatalf("a shell line runs as %q, shown as %q", argv, line)
		}
		tmpl := c.args[0]
		if !c.repl {
			tmpl += " {}" // the values are appended, as GNU parallel does
		}
		checkShellCode(t, tmpl, argv[2], j)
		return
	case formScript:
		if len(argv) < len(c.args) {
			t.Fatalf("argv %q is shorter than COMMAND %q", argv, c.args)
		}
		checkShellCode(t, c.args[c.script], argv[c.script], j)
	}
	want := make([]string, 0, len(c.args)+len(j.args))
	for i, a := range c.args {
		if c.form == formScript && i == c.script {
			want = append(want, argv[i]) // checked above
			continue
		}
		want = append(want, pasteRef(a, j))
	}
	if !c.repl {
		want = append(want, j.args...)
	}
	if !slices.Equal(argv, want) {
		t.Fatalf("COMMAND %q with arguments %q runs %q; want %q", c.args, j.args, argv, want)
	}
	words, ok := shLex(line)
	if !ok {
		t.Fatalf("the line %q of argv %q does not read as a shell line", line, argv)
	}
	got := make([]string, len(words))
	for i, w := range words {
		for _, ch := range w {
			if ch.special {
				t.Fatalf("the line %q of argv %q has an unquoted %q", line, argv, ch.c)
			}
		}
		got[i] = w.text()
	}
	if !slices.Equal(got, argv) {
		t.Fatalf("the line %q reads as %q; argv is %q", line, got, argv)
	}
}

// checkShellCode: the shell code code, made from tmpl and j, reads as
// tmpl's words with the values in as data. Only where every replacement
// string of tmpl is outside quotes (inside them GNU parallel's quoting
// does not nest either: the user's own quotes are the user's).
func checkShellCode(t *testing.T, tmpl, code string, j *job) {
	t.Helper()
	marked, vals := placeholders(tmpl, j)
	twords, ok := shLex(marked)
	if !ok {
		return // not a complete line (an open quote): the shell's error
	}
	// want: the template's words, each placeholder replaced by its value.
	var want []string
	for _, w := range twords {
		var b strings.Builder
		for i := 0; i < len(w); i++ {
			if w[i].c == '\x01' {
				end := i + 1
				for end < len(w) && w[end].c != '\x02' {
					end++
				}
				for k := i; k <= end && k < len(w); k++ {
					if w[k].quoted {
						return // a replacement string inside quotes
					}
				}
				if end >= len(w) {
					t.Fatalf("placeholder cut in %q", marked)
				}
				k, _ := strconv.Atoi(w.textRange(i+1, end))
				b.WriteString(vals[k]) // a value: data, never special
				i = end
				continue
			}
			b.WriteString(w[i].enc())
		}
		want = append(want, b.String())
	}
	cwords, ok := shLex(code)
	if !ok {
		t.Fatalf("template %q with arguments %q makes shell code %q that does not read as a line", tmpl, j.args, code)
	}
	got := make([]string, len(cwords))
	for i, w := range cwords {
		var b strings.Builder
		for _, ch := range w {
			b.WriteString(ch.enc())
		}
		got[i] = b.String()
	}
	if !slices.Equal(got, want) {
		t.Fatalf("template %q with arguments %q: shell code %q reads as\n %q\nwant (values as data; \\x00 marks an unquoted shell character)\n %q", tmpl, j.args, code, got, want)
	}
}

// placeholders replaces each replacement string of tmpl with markers
// \x01K\x02, one a value (a replacement string of all the arguments gets
// one a argument, separated by spaces, as the values are), and returns the
// values by K. {#} and {%} are numbers, put in as they are.
func placeholders(tmpl string, j *job) (string, []string) {
	var b strings.Builder
	var vals []string
	mark := func(v string) {
		fmt.Fprintf(&b, "\x01%d\x02", len(vals))
		vals = append(vals, v)
	}
	s := tmpl
	for len(s) > 0 {
		if s[0] != '{' {
			b.WriteByte(s[0])
			s = s[1:]
			continue
		}
		n := replLen(s)
		if n == 0 {
			b.WriteByte('{')
			s = s[1:]
			continue
		}
		idx, op, _ := parseRepl(s[1 : n-1])
		s = s[n:]
		switch {
		case op == "#":
			b.WriteString(strconv.Itoa(j.seq))
		case op == "%":
			b.WriteString(strconv.Itoa(j.slot))
		case idx == 0:
			for i, a := range j.args {
				if i > 0 {
					b.WriteByte(' ')
				}
				mark(transformRef(a, op))
			}
		default:
			if idx < 0 {
				idx += len(j.args) + 1
			}
			v := ""
			if idx >= 1 && idx <= len(j.args) {
				v = transformRef(j.args[idx-1], op)
			}
			mark(v)
		}
	}
	return b.String(), vals
}

// pasteRef is tmpl with the values pasted in as they are (an argument
// that is not shell code).
func pasteRef(tmpl string, j *job) string {
	marked, vals := placeholders(tmpl, j)
	var b strings.Builder
	for {
		i := strings.IndexByte(marked, '\x01')
		if i < 0 {
			b.WriteString(marked)
			return b.String()
		}
		b.WriteString(marked[:i])
		end := strings.IndexByte(marked[i:], '\x02') + i
		k, _ := strconv.Atoi(marked[i+1 : end])
		b.WriteString(vals[k])
		marked = marked[end+1:]
	}
}

// transformRef is parallel(1)'s {.} {/} {//} {/.}, written out again.
func transformRef(s, op string) string {
	dir, file := "", s
	if i := strings.LastIndexByte(s, '/'); i >= 0 {
		dir, file = s[:i+1], s[i+1:]
	}
	noExt := func(f string) string {
		if i := strings.LastIndexByte(f, '.'); i >= 0 {
			return f[:i]
		}
		return f
	}
	switch op {
	case ".":
		return dir + noExt(file)
	case "/":
		return file
	case "/.":
		return noExt(file)
	case "//":
		return filepath.Dir(s)
	}
	return s
}

// shChar is one character of a word as a POSIX shell reads a line.
type shChar struct {
	c       byte
	quoted  bool // inside '' or "", or after a backslash
	special bool // a character the shell acts on: unquoted syntax, $ or ` in ""
}

type shWord []shChar

func (w shWord) text() string { return w.textRange(0, len(w)) }

func (w shWord) textRange(i, j int) string {
	b := make([]byte, 0, j-i)
	for _, ch := range w[i:j] {
		b = append(b, ch.c)
	}
	return string(b)
}

// enc writes a character with \x00 before it where it is special.
func (ch shChar) enc() string {
	if ch.special {
		return string([]byte{0, ch.c})
	}
	return string([]byte{ch.c})
}

// shSpecial are the characters an unquoted word has the shell act on
// (operators, expansions, globs, comments, ...): POSIX's "Token
// Recognition", "Quoting" and "Pattern Matching Notation".
const shSpecial = ";&|<>()$`*?[]~#!{}=\\'\""

// shLex reads line as a POSIX shell splits it into words, telling for
// each character whether it was quoted and whether the shell acts on it.
// ok is false for an unterminated quote.
func shLex(line string) (words []shWord, ok bool) {
	var w shWord
	inWord := false
	end := func() {
		if inWord {
			words = append(words, w)
		}
		w, inWord = nil, false
	}
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n':
			end()
		case c == '\'':
			inWord = true
			k := strings.IndexByte(line[i+1:], '\'')
			if k < 0 {
				return nil, false
			}
			for _, q := range []byte(line[i+1 : i+1+k]) {
				w = append(w, shChar{c: q, quoted: true})
			}
			i += k + 1
		case c == '"':
			inWord = true
			for i++; ; i++ {
				if i >= len(line) {
					return nil, false
				}
				d := line[i]
				if d == '"' {
					break
				}
				if d == '\\' && i+1 < len(line) && strings.IndexByte("$`\"\\\n", line[i+1]) >= 0 {
					i++
					if line[i] != '\n' {
						w = append(w, shChar{c: line[i], quoted: true})
					}
					continue
				}
				w = append(w, shChar{c: d, quoted: true, special: d == '$' || d == '`'})
			}
		case c == '\\':
			if i+1 >= len(line) {
				w = append(w, shChar{c: c, special: true})
				inWord = true
				continue
			}
			i++
			if line[i] == '\n' {
				continue // a line continuation
			}
			inWord = true
			w = append(w, shChar{c: line[i], quoted: true})
		default:
			inWord = true
			w = append(w, shChar{c: c, special: strings.IndexByte(shSpecial, c) >= 0})
		}
	}
	end()
	return words, true
}

// TestShLexIsSh: shLex, FuzzRunTemplate's reading of shell lines, reads
// the lines cgpool run makes from hard values as /bin/sh does: each word
// printed by sh's printf is the word shLex found.
func TestShLexIsSh(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh to compare with")
	}
	var all strings.Builder
	for c := 1; c < 256; c++ {
		all.WriteByte(byte(c))
	}
	values := []string{"", "plain", "a b", "it's", `"q"`, "$(echo INJECTED)", "`id`", "$HOME", "*", "~", "a\nb", "\\", "'", "''", `'"'"'`, "#c", "x;y|z&", "\t\r", "\x7f\xff\xfe", "!", all.String()}
	c := newCommand([]string{"printf '<%s>\\0' {}"}, false)
	for _, v := range values {
		j := &job{seq: 1, args: []string{v, "2nd " + v}, slot: 1}
		argv, line := c.expand(j)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		out, err := exec.CommandContext(ctx, sh, "-c", argv[2]).Output()
		cancel()
		if err != nil {
			t.Fatalf("sh -c %q: %v", argv[2], err)
		}
		var shWords []string
		for _, f := range bytes.Split(out, []byte{0}) {
			if len(f) > 0 {
				shWords = append(shWords, strings.TrimSuffix(strings.TrimPrefix(string(f), "<"), ">"))
			}
		}
		words, ok := shLex(line)
		if !ok {
			t.Fatalf("shLex(%q): not a line", line)
		}
		var lexWords []string
		for _, w := range words[2:] { // printf and its format
			lexWords = append(lexWords, w.text())
		}
		if !slices.Equal(shWords, lexWords) || !slices.Equal(shWords, j.args) {
			t.Errorf("line %q: sh reads %q, shLex %q; the values were %q", line, shWords, lexWords, j.args)
		}
	}
}

// FuzzJoblog: whatever a joblog file holds, --resume's reading of it ends
// in the sequence numbers to skip or a clear error, never a panic; and a
// joblog cgpool writes (with any command text) reads back as exactly the
// jobs written, all of them for --resume, those that exited 0 without a
// signal for --resume-failed.
func FuzzJoblog(f *testing.F) {
	f.Add([]byte(joblogHeader+"1\t:\t1700000000.000\t     0.002\t0\t0\t0\t0\tok\t-\t-\t-\t-\t-\t-\ttrue\n"), "echo\ta\nb", 3, 1)
	f.Add([]byte("Seq\tHost\tStarttime\tJobRuntime\tSend\tReceive\tExitval\tSignal\tCommand\n2\t:\t1.0\t0.1\t0\t0\t1\t0\tfalse\n\n"), "", 1, 0)
	f.Add([]byte("x\ty\n"), "\r\x00", -1, 9)
	dir := filepath.Join("..", "..", "testdata", "fuzz", "FuzzJoblog")
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if b, err := os.ReadFile(filepath.Join(dir, e.Name())); err == nil {
			f.Add(b, "cmd", 0, 0)
		}
	}
	f.Fuzz(func(t *testing.T, file []byte, command string, exit, signal int) {
		dir := t.TempDir()
		name := filepath.Join(dir, "joblog")
		if err := os.WriteFile(name, file, 0o644); err != nil {
			t.Fatal(err)
		}
		for _, failed := range []bool{false, true} {
			done, err := readJoblog(name, failed)
			if err == nil {
				for seq := range done {
					if seq < 1 {
						t.Fatalf("readJoblog skips seq %d", seq)
					}
				}
			}
		}
		// Round trip: three lines, the second with the fuzzed end.
		name = filepath.Join(dir, "written")
		l, err := openJoblog(name, false)
		if err != nil {
			t.Fatal(err)
		}
		ends := []joblogEntry{{seq: 1, reason: "ok"}, {seq: 7, exit: exit, signal: signal, reason: "exit"}, {seq: 3, exit: 1, reason: "exit"}}
		for _, e := range ends {
			e.command, e.start = command, time.Unix(1700000000, 0)
			if err := l.add(e); err != nil {
				t.Fatal(err)
			}
		}
		if err := l.close(); err != nil {
			t.Fatal(err)
		}
		for _, failed := range []bool{false, true} {
			done, err := readJoblog(name, failed)
			if err != nil {
				t.Fatalf("readJoblog of cgpool's own joblog (command %q): %v", command, err)
			}
			want := map[int]bool{1: true, 7: true, 3: true}
			if failed {
				want = map[int]bool{1: true}
				if exit == 0 && signal == 0 {
					want[7] = true
				}
			}
			if fmt.Sprint(done) != fmt.Sprint(want) {
				t.Fatalf("--resume-failed=%v of cgpool's own joblog (command %q, exit %d, signal %d) skips %v; want %v", failed, command, exit, signal, done, want)
			}
		}
	})
}
