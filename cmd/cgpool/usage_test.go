package main

import (
	"bytes"
	"context"
	"io"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/cgpool/cgpool/internal/kerneltest"
)

func TestUsageLine(t *testing.T) {
	f := &figures{wall: 1520 * time.Millisecond, user: 1200 * time.Millisecond, system: 88 * time.Millisecond,
		mem: 64 << 20, memScope: "task", pids: 3, pidsScope: "slot", ioWrite: 4 << 20, hasIO: true}
	want := "usage: wall 1.52s, CPU 1.29s (user 1.20s, system 88.0ms), memory peak 64.0 MiB, pids peak at most 3 (the slot's high-water mark), I/O read 0 B, written 4.0 MiB"
	if got := f.line(); got != want {
		t.Errorf("line:\n got  %s\n want %s", got, want)
	}
	if got, want := f.joblogColumns(), "1200000\t88000\t67108864\t<=3\t0\t4194304"; got != want {
		t.Errorf("joblog columns %q, want %q", got, want)
	}
	bare := &figures{wall: 900 * time.Microsecond}
	if got, want := bare.line(), "usage: wall 900µs, CPU 0µs (user 0µs, system 0µs), memory peak not measured, pids peak not measured, I/O not measured"; got != want {
		t.Errorf("line without controllers:\n got  %s\n want %s", got, want)
	}
	if got, want := bare.joblogColumns(), "0\t0\t-\t-\t-\t-"; got != want {
		t.Errorf("joblog columns %q, want %q", got, want)
	}
	if got := (*figures)(nil).joblogColumns(); got != "-\t-\t-\t-\t-\t-" {
		t.Errorf("no usage: joblog columns %q", got)
	}
}

// summarizeRows is the usage lines of a run whose commands are rows.
func summarizeRows(w io.Writer, rows []usageRow) {
	var u usageTop
	for _, r := range rows {
		u.add(r)
	}
	u.summarize(w)
}

func TestSummarizeUsage(t *testing.T) {
	rows := []usageRow{
		{1, "a", &figures{wall: time.Second, user: 3 * time.Second, mem: 10 << 20, memScope: "task"}},
		{2, "b", &figures{wall: 5 * time.Second, user: time.Second, mem: 80 << 20, memScope: "slot"}},
		{3, "c", &figures{wall: 2 * time.Second, mem: 80 << 20, memScope: "task"}},
		{4, "d", nil},
	}
	var b bytes.Buffer
	summarizeRows(&b, rows)
	want := "cgpool: slowest: [2] wall 5.00s, CPU 1.00s: b\ncgpool: hungriest: [3] memory peak 80.0 MiB, CPU 0µs: c\n"
	if b.String() != want {
		t.Errorf("summary:\n got  %q\n want %q", b.String(), want)
	}
	// No memory figures: the hungriest is by CPU.
	for i := range rows[:3] {
		rows[i].f.memScope = ""
	}
	b.Reset()
	summarizeRows(&b, rows)
	if !strings.Contains(b.String(), "hungriest: [1] CPU 3.00s (memory not measured: no memory controller): a") {
		t.Errorf("summary without memory: %q", b.String())
	}
	b.Reset()
	summarizeRows(&b, rows[:1])
	if b.Len() != 0 {
		t.Errorf("one command: %q, want no usage lines", b.String())
	}
}

// usageRE matches submit --usage's line and captures its CPU seconds.
var usageRE = regexp.MustCompile(`(?m)^cgpool: usage: wall [0-9.µm]+s, CPU ([0-9.µm]+s) \(user [0-9.µm]+s, system [0-9.µm]+s\), memory peak ([^,]+), pids peak ([^,]+), I/O (.*)$`)

// TestSubmitUsage: cgpool submit --usage prints what the task cost on its
// last stderr line, CPU of a detached grandchild included.
func TestSubmitUsage(t *testing.T) {
	sock := startServe(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// The burn runs in a setsid grandchild the shell waits for through a
	// pipe, not as its child.
	script := `setsid sh -c 'i=0; while [ $i -lt 150000 ]; do i=$((i+1)); done; echo burned' | cat`
	cmd := cgpool(ctx, "submit", "--socket", sock, "--usage", "--", "/bin/sh", "-c", script)
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	if err := cmd.Run(); err != nil {
		t.Fatalf("submit: %v, stderr %q", err, se.String())
	}
	if so.String() != "burned\n" {
		t.Errorf("stdout %q", so.String())
	}
	m := usageRE.FindStringSubmatch(se.String())
	if m == nil {
		t.Fatalf("no usage line in stderr %q", se.String())
	}
	t.Logf("%s", strings.TrimSpace(se.String()))
	if cpu := m[1]; !strings.HasSuffix(cpu, "ms") && !regexp.MustCompile(`^[0-9.]+s$`).MatchString(cpu) {
		t.Errorf("CPU %s for a shell loop of 150000 rounds in a detached grandchild: want milliseconds at least", cpu)
	}
	if mem := m[2]; kerneltest.InVM() == (mem == "not measured") {
		t.Errorf("memory peak %q in the VM=%v", mem, kerneltest.InVM())
	}
}

// TestRunUsageSummary: cgpool run's summary names the slowest command.
func TestRunUsageSummary(t *testing.T) {
	requireCgroups(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := cgpool(ctx, "run", "-j", "2", "--", "sleep", "{}")
	cmd.Stdin = strings.NewReader("0.1\n1.2\n0.2\n")
	var se strings.Builder
	cmd.Stderr = &se
	if err := cmd.Run(); err != nil {
		t.Fatalf("run: %v, stderr %q", err, se.String())
	}
	if !regexp.MustCompile(`(?m)^cgpool: slowest: \[2\] wall 1\.[0-9]+s, CPU [0-9.µm]+s: sleep 1\.2$`).MatchString(se.String()) {
		t.Errorf("stderr %q does not name sleep 1.2 as the slowest", se.String())
	}
	if !strings.Contains(se.String(), "cgpool: hungriest: [") {
		t.Errorf("stderr %q has no hungriest line", se.String())
	}
}
