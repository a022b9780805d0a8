//go:build !vm

package deptest

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/cgpool/cgpool"

// allowed lists, for each package, the cgpool packages it may depend on
// (directly or not). DESIGN.md's table, with STYLE.md's stricter rule that
// cgroup and spawn import no cgpool package.
var allowed = map[string][]string{
	"cgroup":              nil,
	"spawn":               nil,
	"sched":               nil,
	"ipc":                 nil,
	"oomwatch":            {"cgroup"},
	"client":              {"ipc"},
	"worker":              {"ipc"},
	"pool":                {"sched", "spawn", "cgroup", "oomwatch", "ipc"},
	"metrics":             {"pool", "sched", "spawn", "cgroup", "oomwatch", "ipc"},
	"check":               {"pool", "sched", "spawn", "cgroup", "oomwatch", "ipc"},
	"internal/kerneltest": {"cgroup", "spawn"},
	"internal/deptest":    nil,
	"internal/pyvm":       {"internal/kerneltest", "cgroup", "spawn"},
	"internal/systemdvm":  nil,
	"scripts/vminit":      nil,
	"scripts/benchfloor":  nil, // scripts/bench-run.sh's floor: a fresh leaf per command, no cgpool package
	"cmd/cgpool":          {"pool", "metrics", "check", "sched", "spawn", "cgroup", "oomwatch", "ipc", "client", "worker"},
}

func TestImportArrows(t *testing.T) {
	out, err := exec.Command("go", "list", "-f", "{{.ImportPath}}|{{join .Deps \" \"}}|{{join .Imports \" \"}}", module+"/...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	seen := 0
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		parts := strings.SplitN(line, "|", 3)
		pkg := strings.TrimPrefix(strings.TrimPrefix(parts[0], module), "/")
		ok, known := allowed[pkg]
		if !known {
			t.Errorf("package %s is not in the layout table of this test (DESIGN.md): add it", pkg)
			continue
		}
		seen++
		for _, dep := range strings.Fields(parts[1]) {
			if rel, ours := strings.CutPrefix(dep, module+"/"); ours && !slices.Contains(ok, rel) {
				t.Errorf("%s depends on %s; it may depend only on %q", pkg, rel, ok)
			}
		}
		for _, imp := range strings.Fields(parts[2]) {
			if strings.HasPrefix(imp, "github.com/coreos/go-systemd") && pkg != "cmd/cgpool" {
				t.Errorf("%s imports %s: go-systemd belongs in cmd/cgpool only", pkg, imp)
			}
		}
	}
	if seen < 10 {
		t.Errorf("saw only %d packages in go list's output:\n%s", seen, out)
	}
}
