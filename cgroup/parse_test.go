package cgroup

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

func fixture(t *testing.T, name string) *os.File {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", name))
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
	b, _ := os.ReadFile("testdata/memory.events-oom")
	me, err := ParseMemoryEvents(string(b))
	want := MemoryEvents{Max: 355, OOM: 19, OOMKill: 2, OOMGroupKill: 1}
	if err != nil || me != want {
		t.Errorf("ParseMemoryEvents = %+v, %v, want %+v", me, err, want)
	}
	b, _ = os.ReadFile("testdata/cgroup.events-populated")
	ev, err := ParseEvents(string(b))
	if err != nil || ev != (Events{Populated: true}) {
		t.Errorf("ParseEvents = %+v, %v, want populated", ev, err)
	}
	for _, bad := range []string{"populated", "populated x\n", "frozen 0\n"} {
		if _, err := ParseEvents(bad); err == nil {
			t.Errorf("ParseEvents(%q) = nil error, want one", bad)
		}
	}
}

func TestLimitsControllers(t *testing.T) {
	zero := int64(0)
	for _, tc := range []struct {
		l    Limits
		want []string
	}{
		{Limits{}, nil},
		{Limits{MemoryMax: 1, MemorySwapMax: &zero, OOMGroup: true}, []string{"memory"}},
		{Limits{PidsMax: 64, CPUWeight: 100, MemoryHigh: 5}, []string{"memory", "pids", "cpu"}},
	} {
		if got := tc.l.Controllers(); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%+v.Controllers() = %q, want %q", tc.l, got, tc.want)
		}
	}
}
