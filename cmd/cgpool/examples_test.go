package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// sharedTestdata finds the repository's testdata/ (see its README.md) by
// walking up from the test's directory: cmd/cgpool in the source tree,
// /src/cmd_cgpool in the VM, where vm-test.sh puts it at /src/testdata.
func sharedTestdata(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "testdata", "README.md")); err == nil {
			return filepath.Join(dir, "testdata")
		}
		up := filepath.Dir(dir)
		if up == dir {
			t.Fatal("no testdata/README.md in any parent of the test's directory")
		}
		dir = up
	}
}

// TestExampleConfigs: every example configuration in testdata/config loads
// and maps onto pool configurations, and README.md's example is the
// fixture itself, so the documented keys are the ones the code reads.
func TestExampleConfigs(t *testing.T) {
	dir := filepath.Join(sharedTestdata(t), "config")
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		name := e.Name()
		if !strings.HasSuffix(name, ".toml") && !strings.HasSuffix(name, ".json") {
			continue
		}
		n++
		t.Run(name, func(t *testing.T) {
			c, err := loadConfig(filepath.Join(dir, name))
			if err != nil {
				t.Fatal(err)
			}
			if len(c.Pools) == 0 {
				t.Fatalf("%s configures no pool", name)
			}
			for _, pc := range c.Pools {
				if _, err := pc.toPool(); err != nil {
					t.Errorf("pool %s: %v", pc.Name, err)
				}
			}
		})
	}
	if n < 3 {
		t.Errorf("found %d example configurations in %s, want at least 3", n, dir)
	}
	readme, err := os.ReadFile(filepath.Join(dir, "..", "..", "README.md"))
	if os.IsNotExist(err) {
		return // in the VM: README.md is not packed
	}
	if err != nil {
		t.Fatal(err)
	}
	_, block, ok := strings.Cut(string(readme), "```toml\n")
	block, _, ok2 := strings.Cut(block, "```")
	want, _ := os.ReadFile(filepath.Join(dir, "readme.toml"))
	if !ok || !ok2 || block != string(want) {
		t.Errorf("README.md's configuration example differs from testdata/config/readme.toml: keep them the same")
	}
}
