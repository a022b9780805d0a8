package cgroup

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// fixtures is the repository's shared folder of recorded kernel files
// (see testdata/README.md); tests run in the package's directory, in the
// VM too (scripts/vm-test.sh copies it to /src/testdata).
var fixtures = filepath.Join("..", "testdata", "cgroupfs")

func fixture(t *testing.T, name string) *os.File {
	t.Helper()
	f, err := os.Open(filepath.Join(fixtures, name))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func TestParseMountinfo(t *testing.T) {
	for _, tc := range []struct {
		name string
		want MountInfo
	}{
		{"mountinfo-hybrid", MountInfo{Root: "/", Point: "/sys/fs/cgroup/unified"}},
		{"mountinfo-v2", MountInfo{Root: "/", Point: "/sys/fs/cgroup"}},
		{"mountinfo-escaped", MountInfo{Root: "/ns/root", Point: "/sys/fs/cgroup/my dir"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ms, err := ParseMountinfo(fixture(t, tc.name))
			if err != nil {
				t.Fatal(err)
			}
			got, err := PickMount(ms)
			if err != nil || got != tc.want {
				t.Errorf("PickMount(ParseMountinfo(%s)) = %+v, %v, want %+v", tc.name, got, err, tc.want)
			}
		})
	}
	if _, err := PickMount(nil); err != ErrNoCgroup2 {
		t.Errorf("PickMount(nil) error = %v, want ErrNoCgroup2", err)
	}
}

func TestParseProcCgroup(t *testing.T) {
	for _, tc := range []struct{ name, want string }{
		{"proc-cgroup-hybrid", "/"},
		{"proc-cgroup-v2", "/system.slice/cgpool.service/supervisor"},
	} {
		got, err := ParseProcCgroup(fixture(t, tc.name))
		if err != nil || got != tc.want {
			t.Errorf("ParseProcCgroup(%s) = %q, %v, want %q", tc.name, got, err, tc.want)
		}
	}
}

func TestHostPath(t *testing.T) {
	for _, tc := range []struct {
		m    MountInfo
		in   string
		want string
	}{
		{MountInfo{"/", "/sys/fs/cgroup"}, "/a/b", "/sys/fs/cgroup/a/b"},
		{MountInfo{"/", "/sys/fs/cgroup/unified"}, "/", "/sys/fs/cgroup/unified"},
		{MountInfo{"/ns", "/sys/fs/cgroup"}, "/ns/x", "/sys/fs/cgroup/x"},
	} {
		if got := tc.m.HostPath(tc.in); got != tc.want {
			t.Errorf("%+v.HostPath(%q) = %q, want %q", tc.m, tc.in, got, tc.want)
		}
	}
}

func TestParseEventFiles(t *testing.T) {
	b, _ := os.ReadFile(filepath.Join(fixtures, "memory.events-oom"))
	me, err := ParseMemoryEvents(string(b))
	want := MemoryEvents{Max: 355, OOM: 19, OOMKill: 2, OOMGroupKill: 1}
	if err != nil || me != want {
		t.Errorf("ParseMemoryEvents = %+v, %v, want %+v", me, err, want)
	}
	b, _ = os.ReadFile(filepath.Join(fixtures, "cgroup.events-populated"))
	ev, err := ParseEvents(string(b))
	if err != nil || ev != (Events{Populated: true}) {
		t.Errorf("ParseEvents = %+v, %v, want populated", ev, err)
	}
	// cgroup.stat of a slot with one child (its leaf), as Linux 6.18 writes
	// it: newer kernels add nr_subsys_* lines, which must not confuse the
	// pool's nr_descendants check.
	b, _ = os.ReadFile(filepath.Join(fixtures, "cgroup.stat-6.18-one-child"))
	st, err := ParseFlatKeyed(string(b))
	if err != nil || st["nr_descendants"] != 1 || st["nr_dying_descendants"] != 0 || len(st) != 6 {
		t.Errorf("ParseFlatKeyed(cgroup.stat) = %v, %v, want nr_descendants 1 among 6 keys", st, err)
	}
	for _, bad := range []string{"populated", "populated x\n", "frozen 0\n"} {
		if _, err := ParseEvents(bad); err == nil {
			t.Errorf("ParseEvents(%q) = nil error, want one", bad)
		}
	}
}

func TestLimitsControllers(t *testing.T) {
	mem, pids := int64(1), int64(64)
	for _, tc := range []struct {
		name string
		res  *specs.LinuxResources
		want []string
	}{
		{"nil", nil, nil},
		{"empty", &specs.LinuxResources{}, nil},
		{"memory", &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: &mem, Swap: &mem}, Unified: map[string]string{"memory.oom.group": "1"}}, []string{"memory"}},
		{"mixed", &specs.LinuxResources{Pids: &specs.LinuxPids{Limit: &pids}, Unified: map[string]string{"memory.high": "5", "cpu.weight": "100"}}, []string{"pids", "cpu", "memory"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Controllers(tc.res); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("Controllers(%+v) = %q, want %q", tc.res, got, tc.want)
			}
		})
	}
}

// TestLimitsRefused: fields a slot does not use are refused by name, never
// ignored.
func TestLimitsRefused(t *testing.T) {
	mem, low, weight := int64(64), int64(32), uint64(10)
	for _, tc := range []struct {
		name string
		res  *specs.LinuxResources
		want string
	}{
		{"devices", &specs.LinuxResources{Devices: []specs.LinuxDeviceCgroup{{Allow: true}}}, "Devices"},
		{"swappiness", &specs.LinuxResources{Memory: &specs.LinuxMemory{Swappiness: &weight}}, "Swappiness"},
		{"swap alone", &specs.LinuxResources{Memory: &specs.LinuxMemory{Swap: &mem}}, "needs Memory.Limit"},
		{"swap below limit", &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: &mem, Swap: &low}}, "below Memory.Limit"},
		{"cpuset", &specs.LinuxResources{CPU: &specs.LinuxCPU{Cpus: "0"}}, "cpuset"},
		{"quota alone", &specs.LinuxResources{CPU: &specs.LinuxCPU{Quota: &mem}}, "needs CPU.Period"},
		{"unified cgroup file", &specs.LinuxResources{Unified: map[string]string{"cgroup.procs": "1"}}, "cgroup.procs"},
		{"unified path", &specs.LinuxResources{Unified: map[string]string{"memory.max/../x": "1"}}, "not a controller"},
		{"unified no dot", &specs.LinuxResources{Unified: map[string]string{"memory": "1"}}, "not a controller"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := limitFiles(tc.res)
			if !errors.Is(err, ErrUnsupportedLimit) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("limitFiles(%+v) = %v, want ErrUnsupportedLimit naming %q", tc.res, err, tc.want)
			}
			if got := Controllers(tc.res); got != nil {
				t.Errorf("Controllers of a refused value = %q, want nil", got)
			}
		})
	}
}
