package pool

import (
	"errors"
	"fmt"

	"github.com/cgpool/cgpool/ipc"
)

// Sentinels for why a submission was refused; a *RejectError wraps one.
var (
	ErrQueueFull   = errors.New("pool: backlog full")
	ErrDraining    = errors.New("pool: shutting down")
	ErrInvalid     = errors.New("pool: invalid task")
	ErrUnknownPool = errors.New("pool: no such pool")
	ErrOverLimit   = errors.New("pool: above a ceiling of the pool")
	ErrForbidden   = errors.New("pool: not allowed for this peer")
)

// ErrClientGone is returned by the OutputFunc of a task whose client
// disconnected: the rest of its output is dropped.
var ErrClientGone = errors.New("pool: the client is gone")

// RejectError is a refused submission. Nothing of it ran, so a retry is
// safe.
type RejectError struct {
	Reason string // an ipc.Reject* value
	Msg    string
	Err    error // one of the sentinels
}

func (e *RejectError) Error() string { return e.Msg }
func (e *RejectError) Unwrap() error { return e.Err }

func reject(reason string, sentinel error, msg string) *RejectError {
	return &RejectError{Reason: reason, Msg: msg, Err: sentinel}
}

func errFull(n int, bytes int64) error {
	return reject(ipc.RejectQueueFull, ErrQueueFull, fmt.Sprintf("backlog full (%d tasks, %d bytes queued)", n, bytes))
}

func overLimit(format string, args ...any) error {
	return reject(ipc.RejectOverLimit, ErrOverLimit, fmt.Sprintf(format, args...))
}

func errInvalid(format string, args ...any) error {
	return reject(ipc.RejectInvalid, ErrInvalid, fmt.Sprintf(format, args...))
}

var errDraining = reject(ipc.RejectDraining, ErrDraining, "the pool is shutting down")
