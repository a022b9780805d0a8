package main

import (
	"errors"
	"testing"
	"time"

	"github.com/cgpool/cgpool/client"
	"github.com/cgpool/cgpool/ipc"
	"github.com/cgpool/cgpool/oomwatch"
	"github.com/cgpool/cgpool/pool"
)

// TestSameEndSameExit: a task that ends the same way exits the same from
// cgpool submit (a client error from the daemon) and from cgpool run (a
// pool outcome in this process), and with the status README gives.
func TestSameEndSameExit(t *testing.T) {
	cases := []struct {
		name    string
		err     error         // what submit's client returns
		outcome *pool.Outcome // what run's pool gives
		refused error         // run: refused at submission
		want    int
	}{
		{"timeout", &client.TimeoutError{Timeout: time.Second}, &pool.Outcome{Kind: pool.TimedOut, Timeout: time.Second}, nil, 124},
		{"oom", &client.ProcessError{Reason: ipc.ProcessOOM, Signal: 9}, &pool.Outcome{Kind: pool.ProcessError, Reason: oomwatch.OOM, Signal: 9}, nil, 125},
		{"killed by SIGTERM", &client.ProcessError{Reason: ipc.ProcessKilled, Signal: 15}, &pool.Outcome{Kind: pool.ProcessError, Reason: oomwatch.Killed, Signal: 15}, nil, 143},
		{"output limit", &client.ProcessError{Reason: ipc.ProcessOutputLimit}, &pool.Outcome{Kind: pool.ProcessError, Reason: pool.OutputLimit}, nil, 122},
		{"not found", &client.ProcessError{Reason: ipc.ProcessNotFound}, &pool.Outcome{Kind: pool.ProcessError, Reason: pool.NotFound}, nil, 127},
		{"not executable", &client.ProcessError{Reason: ipc.ProcessNotExecutable}, &pool.Outcome{Kind: pool.ProcessError, Reason: pool.NotExecutable, Message: "x: cannot be executed (permission denied)"}, nil, 126},
		{"could not start", &client.ProcessError{Reason: ipc.ProcessCrashed}, &pool.Outcome{Kind: pool.ProcessError, Reason: oomwatch.Crashed}, nil, 126},
		{"cancelled", &client.CancelledError{Message: "by shutdown"}, &pool.Outcome{Kind: pool.Cancelled}, nil, 120},
		{"refused", &client.RejectedError{Reason: "limit", Message: "no memory controller"}, nil, errors.New("no memory controller"), 120},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var submit int
			var ee *exitError
			if err := submitExit(nil, c.err); !errors.As(err, &ee) {
				t.Fatalf("submitExit(%v) = %v, want an exit status", c.err, err)
			}
			submit = ee.code
			run := endingOf(c.outcome, c.refused).code
			if submit != c.want || run != c.want {
				t.Errorf("submit exits %d, run %d; want both %d", submit, run, c.want)
			}
		})
	}
}
