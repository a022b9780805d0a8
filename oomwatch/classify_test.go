package oomwatch

import (
	"syscall"
	"testing"
)

func TestClassify(t *testing.T) {
	c0 := Counters{OOMKill: 2, OOMGroupKill: 1}
	up := Counters{OOMKill: 3, OOMGroupKill: 1}
	groupUp := Counters{OOMKill: 2, OOMGroupKill: 2}
	for _, tc := range []struct {
		name string
		f    Facts
		want Verdict
	}{
		{"answered", Facts{Before: c0, After: c0}, Verdict{Reason: None}},
		{"oom kill", Facts{Before: c0, After: up, Exited: true, Signal: syscall.SIGKILL}, Verdict{Reason: OOM, Signal: syscall.SIGKILL}},
		{"oom group kill", Facts{Before: c0, After: groupUp, Exited: true, Signal: syscall.SIGKILL}, Verdict{Reason: OOM, Signal: syscall.SIGKILL}},
		{"oom beats our timeout kill", Facts{Before: c0, After: up, SupervisorKill: Timeout, Exited: true, Signal: syscall.SIGKILL}, Verdict{Reason: OOM, Signal: syscall.SIGKILL}},
		{"oom of a child while the worker lived", Facts{Before: c0, After: up}, Verdict{Reason: OOM}},
		{"timeout", Facts{Before: c0, After: c0, SupervisorKill: Timeout, Exited: true, Signal: syscall.SIGKILL}, Verdict{Reason: Timeout, Signal: syscall.SIGKILL}},
		{"cancel", Facts{SupervisorKill: Cancel, Exited: true, Signal: syscall.SIGKILL}, Verdict{Reason: Cancel, Signal: syscall.SIGKILL}},
		{"external sigkill", Facts{Before: c0, After: c0, Exited: true, Signal: syscall.SIGKILL}, Verdict{Reason: Killed, Signal: syscall.SIGKILL}},
		{"external sigterm", Facts{Exited: true, Signal: syscall.SIGTERM}, Verdict{Reason: Killed, Signal: syscall.SIGTERM}},
		{"segfault", Facts{Exited: true, Signal: syscall.SIGSEGV}, Verdict{Reason: Killed, Signal: syscall.SIGSEGV}},
		{"exit 3", Facts{Exited: true, ExitCode: 3}, Verdict{Reason: Crashed, ExitCode: 3}},
		{"exit 0 mid-task", Facts{Exited: true}, Verdict{Reason: Crashed}},
		{"counter went down (group replaced)", Facts{Before: up, After: c0, Exited: true, ExitCode: 1}, Verdict{Reason: Crashed, ExitCode: 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Classify(tc.f); got != tc.want {
				t.Errorf("Classify(%+v) = %+v, want %+v", tc.f, got, tc.want)
			}
		})
	}
}

func TestVerdictString(t *testing.T) {
	for _, tc := range []struct {
		v    Verdict
		want string
	}{
		{Verdict{}, "ok"},
		{Verdict{Reason: OOM}, "oom"},
		{Verdict{Reason: Killed, Signal: syscall.SIGKILL}, "killed by signal 9 (killed)"},
		{Verdict{Reason: Crashed, ExitCode: 3}, "crashed with exit code 3"},
	} {
		if got := tc.v.String(); got != tc.want {
			t.Errorf("%+v.String() = %q, want %q", tc.v, got, tc.want)
		}
	}
}
