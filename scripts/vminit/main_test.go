package main

import (
	"errors"
	"os"
	"os/exec"
	"reflect"
	"syscall"
	"testing"
)

func TestParseResult(t *testing.T) {
	tests := []struct {
		name         string
		line         string
		status, test string
		ok           bool
	}{
		{"pass", "--- PASS: TestKillEmptiesTree (0.01s)", "PASS", "TestKillEmptiesTree", true},
		{"fail", "--- FAIL: TestLeaf (1.20s)", "FAIL", "TestLeaf", true},
		{"skip", "--- SKIP: TestNoCgroup (0.00s)", "SKIP", "TestNoCgroup", true},
		{"subtest", "    --- PASS: TestParse/memory.events (0.00s)", "PASS", "TestParse/memory.events", true},
		{"nested subtest", "        --- FAIL: TestA/b/c#01 (0.00s)", "FAIL", "TestA/b/c#01", true},
		{"tab indent", "\t--- SKIP: TestA/x (0.00s)", "SKIP", "TestA/x", true},
		{"crlf", "--- PASS: TestCRLF (0.00s)\r\n", "PASS", "TestCRLF", true},
		{"no duration", "--- PASS: TestBare", "PASS", "TestBare", true},
		{"benchmark result", "BenchmarkQueue-2   \t  123456\t      9.870 ns/op\t       0 B/op", "PASS", "BenchmarkQueue-2", true},
		{"benchmark sub", "BenchmarkPick/n=100-2 \t 1000 \t 1050 ns/op", "PASS", "BenchmarkPick/n=100-2", true},
		{"benchmark fail", "--- FAIL: BenchmarkQueue", "FAIL", "BenchmarkQueue", true},
		{"benchmark name only", "BenchmarkQueue", "", "", false},
		{"benchmark log", "--- BENCH: BenchmarkQueue-2", "", "", false},
		{"run", "=== RUN   TestKillEmptiesTree", "", "", false},
		{"cont", "=== CONT  TestA", "", "", false},
		{"summary pass", "PASS", "", "", false},
		{"summary fail", "FAIL", "", "", false},
		{"ok line", "ok  \tgithub.com/cgpool/cgpool/cgroup\t0.012s", "", "", false},
		{"log line", "    leaf_test.go:42: --- PASS: TestFake", "", "", false},
		{"no tests", "testing: warning: no tests to run", "", "", false},
		{"lowercase", "--- pass: TestA", "", "", false},
		{"missing name", "--- PASS: ", "", "", false},
		{"empty", "", "", "", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			status, test, ok := parseResult(tc.line)
			if status != tc.status || test != tc.test || ok != tc.ok {
				t.Errorf("parseResult(%q) = %q, %q, %v, want %q, %q, %v",
					tc.line, status, test, ok, tc.status, tc.test, tc.ok)
			}
		})
	}
}

func TestParseConfig(t *testing.T) {
	tests := []struct {
		name    string
		cmdline string
		want    []string // config.args()
		wantErr bool
	}{
		{"defaults", "console=ttyS0 quiet panic=-1 rdinit=/init\n",
			[]string{"-test.v", "-test.timeout=10m0s"}, false},
		{"run", "quiet cgpool.run=^TestKill$|Leaf rdinit=/init",
			[]string{"-test.v", "-test.timeout=10m0s", "-test.run=^TestKill$|Leaf"}, false},
		{"quoted run with space", `quiet cgpool.run="Test A" x=1`,
			[]string{"-test.v", "-test.timeout=10m0s", "-test.run=Test A"}, false},
		{"quoted whole param", `"cgpool.run=a b"`,
			[]string{"-test.v", "-test.timeout=10m0s", "-test.run=a b"}, false},
		{"timeout", "cgpool.timeout=90s",
			[]string{"-test.v", "-test.timeout=1m30s"}, false},
		{"bench", "cgpool.bench=Queue",
			[]string{"-test.v", "-test.timeout=10m0s", "-test.run=^$", "-test.bench=Queue"}, false},
		{"bench and run", "cgpool.bench=. cgpool.run=TestA",
			[]string{"-test.v", "-test.timeout=10m0s", "-test.run=TestA", "-test.bench=."}, false},
		{"later wins", "cgpool.run=A cgpool.run=B",
			[]string{"-test.v", "-test.timeout=10m0s", "-test.run=B"}, false},
		{"bad timeout", "cgpool.timeout=soon", nil, true},
		{"zero timeout", "cgpool.timeout=0s", nil, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := parseConfig(tc.cmdline)
			if (err != nil) != tc.wantErr {
				t.Fatalf("parseConfig(%q) error = %v, want error %v", tc.cmdline, err, tc.wantErr)
			}
			if tc.wantErr {
				return
			}
			if got := cfg.args(); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("parseConfig(%q).args() = %q, want %q", tc.cmdline, got, tc.want)
			}
		})
	}
}

func TestParseKmsg(t *testing.T) {
	tests := []struct {
		rec   string
		level int
		msg   string
		ok    bool
	}{
		{"3,812,5021234,-;Memory cgroup out of memory: Killed process 123 (sh)\n", 3, "Memory cgroup out of memory: Killed process 123 (sh)", true},
		{"6,1,0,-;Linux version 6.1.0\n SUBSYSTEM=x\n", 6, "Linux version 6.1.0", true},
		{"12,5,1,-;user space message\n", 4, "user space message", true},
		{"garbage", 0, "", false},
		{"x,1,1,-;bad priority\n", 0, "", false},
	}
	for _, tc := range tests {
		level, msg, ok := parseKmsg(tc.rec)
		if level != tc.level || msg != tc.msg || ok != tc.ok {
			t.Errorf("parseKmsg(%q) = %d, %q, %v, want %d, %q, %v", tc.rec, level, msg, ok, tc.level, tc.msg, tc.ok)
		}
	}
}

// TestMain lets the test binary act as a child that exits in a given way.
func TestMain(m *testing.M) {
	switch os.Getenv("VMINIT_TEST_HELPER") {
	case "exit3":
		os.Exit(3)
	case "sigkill":
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {}
	}
	os.Exit(m.Run())
}

func TestExitCode(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		helper string
		want   int
	}{
		{"", 0},
		{"exit3", 3},
		{"sigkill", 128 + 9},
	}
	for _, tc := range tests {
		cmd := exec.Command(self, "-test.run=^$")
		cmd.Env = append(os.Environ(), "VMINIT_TEST_HELPER="+tc.helper)
		if got := exitCode(cmd.Run()); got != tc.want {
			t.Errorf("exitCode of helper %q = %d, want %d", tc.helper, got, tc.want)
		}
	}
	if got := exitCode(errors.New("not an exit error")); got != 127 {
		t.Errorf("exitCode(other error) = %d, want 127", got)
	}
}
