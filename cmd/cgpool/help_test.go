package main

import (
	"bytes"
	"regexp"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

var (
	flagRE = regexp.MustCompile(`(^|[^A-Za-z0-9-])--([a-z][a-z0-9-]*)`)
	cmdRE  = regexp.MustCompile(`cgpool ([a-z][a-z-]*)`)
)

// TestHelpNamesOnlyRealFlags runs every subcommand's --help and checks
// that each --flag it names exists: on that command, or on the command
// the same line names ("cgpool recycle ..."). Help that promises a flag
// the command does not have (serve's --shutdown-deadline, once) fails.
func TestHelpNamesOnlyRealFlags(t *testing.T) {
	root := rootCmd()
	byName := map[string]*cobra.Command{}
	for _, c := range root.Commands() {
		byName[c.Name()] = c
	}
	has := func(c *cobra.Command, name string) bool {
		return c.Flags().Lookup(name) != nil || c.InheritedFlags().Lookup(name) != nil || c.PersistentFlags().Lookup(name) != nil
	}
	checked := 0
	for _, c := range append([]*cobra.Command{root}, root.Commands()...) {
		args := []string{"--help"}
		if c != root {
			args = []string{c.Name(), "--help"}
		}
		r := rootCmd()
		var out bytes.Buffer
		r.SetOut(&out)
		r.SetErr(&out)
		r.SetArgs(args)
		if err := r.Execute(); err != nil {
			t.Fatalf("cgpool %s: %v", strings.Join(args, " "), err)
		}
		cmd, _, _ := r.Find(args[:len(args)-1])
		for _, line := range strings.Split(out.String(), "\n") {
			for _, m := range flagRE.FindAllStringSubmatch(line, -1) {
				name := m[2]
				checked++
				if has(cmd, name) {
					continue
				}
				ok := false
				if f := strings.Fields(line); c == root && len(f) > 0 && byName[f[0]] != nil {
					ok = has(byName[f[0]], name) // cgpool --help lists the commands, one a line
				}
				if i := strings.Index(line, ".sh --"+name); i >= 0 {
					ok = true // a script's flag (scripts/vm-test.sh --demo)
				}
				for _, cm := range cmdRE.FindAllStringSubmatch(line, -1) {
					if other := byName[cm[1]]; other != nil && has(other, name) {
						ok = true
					}
				}
				if !ok {
					t.Errorf("cgpool %s names --%s, which it does not have: %q", strings.Join(args, " "), name, strings.TrimSpace(line))
				}
			}
		}
	}
	if checked < 50 {
		t.Errorf("only %d flag mentions checked: the help was not read", checked)
	}
	if root.Flags().Lookup("version") == nil && root.PersistentFlags().Lookup("version") == nil {
		r := rootCmd()
		r.InitDefaultVersionFlag()
		if r.Flags().Lookup("version") == nil {
			t.Error("cgpool has no --version")
		}
	}
}
