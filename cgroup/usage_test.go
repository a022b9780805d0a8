package cgroup

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
)

func readFixture(t *testing.T, name string) string {
	t.Helper()
	b, err := io.ReadAll(fixture(t, name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestParseCPUStat(t *testing.T) {
	for _, tc := range []struct {
		name string
		want CPUStat
	}{
		{"cpu.stat-6.18-no-controller", CPUStat{UsageUsec: 13586799758, UserUsec: 9858087007, SystemUsec: 3728712751}},
		{"cpu.stat-cpu-controller", CPUStat{UsageUsec: 2871904, UserUsec: 2261035, SystemUsec: 610869}},
	} {
		got, err := ParseCPUStat(readFixture(t, tc.name))
		if err != nil || got != tc.want {
			t.Errorf("ParseCPUStat(%s) = %+v, %v, want %+v", tc.name, got, err, tc.want)
		}
	}
	for _, bad := range []string{"", "user_usec 5\n", "usage_usec x\n", "usage_usec\n"} {
		if got, err := ParseCPUStat(bad); err == nil {
			t.Errorf("ParseCPUStat(%q) = %+v, want an error", bad, got)
		}
	}
}

func TestParseIOStat(t *testing.T) {
	got, err := ParseIOStat(readFixture(t, "io.stat-two-devices"))
	want := IOStat{ReadBytes: 1459200 + 90430464, WriteBytes: 314773504 + 299008000, ReadIOs: 192 + 8950, WriteIOs: 353 + 1252}
	if err != nil || got != want {
		t.Errorf("ParseIOStat(io.stat-two-devices) = %+v, %v, want %+v", got, err, want)
	}
	// A group that did no I/O has an empty io.stat; io.cost adds keys.
	for in, want := range map[string]IOStat{
		"":   {},
		"\n": {},
		"253:0 rbytes=4096 wbytes=0 rios=1 wios=0 dbytes=0 dios=0 cost.vrate=100.00 cost.usage=12\n": {ReadBytes: 4096, ReadIOs: 1},
	} {
		if got, err := ParseIOStat(in); err != nil || got != want {
			t.Errorf("ParseIOStat(%q) = %+v, %v, want %+v", in, got, err, want)
		}
	}
	for _, bad := range []string{"rbytes=5\n", "8:0 rbytes\n", "8:0 rbytes=-1\n", "8:0 wbytes=1e3\n"} {
		if got, err := ParseIOStat(bad); err == nil {
			t.Errorf("ParseIOStat(%q) = %+v, want an error", bad, got)
		}
	}
}

// TestUsageFiles reads a fake group's files through UsageFiles: what is
// there is read, what is missing is marked absent, and a file bigger than
// the read buffer is read whole.
func TestUsageFiles(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	g := &Group{dir: dir}
	if _, err := g.OpenUsage(); err == nil {
		t.Fatal("OpenUsage without cpu.stat succeeded")
	}
	write("cpu.stat", readFixture(t, "cpu.stat-6.18-no-controller"))
	u, err := g.OpenUsage()
	if err != nil {
		t.Fatal(err)
	}
	s, err := u.Read()
	u.Close()
	if err != nil || !s.HasCPU || s.CPU.UserUsec != 9858087007 || s.HasMemory || s.HasPids || s.HasIO {
		t.Fatalf("hybrid-like group: Read = %+v, %v; want cpu only", s, err)
	}

	write("memory.peak", "52428800\n")
	write("pids.peak", "7\n")
	var io bytes.Buffer
	for i := range 200 { // more than one read buffer of devices
		fmt.Fprintf(&io, "8:%d rbytes=1 wbytes=2 rios=1 wios=1 dbytes=0 dios=0\n", i)
	}
	write("io.stat", io.String())
	u, err = g.OpenUsage()
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	s, err = u.Read()
	if err != nil || s.MemoryPeak != 52428800 || !s.HasMemory || s.PidsPeak != 7 || !s.HasPids || !s.HasIO || s.IO.ReadBytes != 200 || s.IO.WriteBytes != 400 {
		t.Errorf("full group: Read = %+v, %v", s, err)
	}
}
