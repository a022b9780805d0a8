package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cgpool/cgpool/ipc"
)

// DefaultClientName is the client name sent in the hello unless
// [WithClientName] says otherwise.
const DefaultClientName = "cgpool-go"

// Option configures [Dial].
type Option func(*options)

type options struct {
	name       string
	maxPayload int64
}

// WithClientName sets the free-text client name sent in the hello (it shows
// up in the supervisor's logs). The default is [DefaultClientName].
func WithClientName(name string) Option {
	return func(o *options) { o.name = name }
}

// WithMaxPayload sets the largest payload, in bytes, the connection reads
// or writes (ipc.Options.MaxPayload); 0 means ipc.DefaultMaxPayload
// (64 MiB). It should match the supervisor's setting: a larger result from
// the server breaks the connection, a larger Task.Payload is refused by
// Submit.
func WithMaxPayload(n int64) Option {
	return func(o *options) { o.maxPayload = n }
}

// Client is one connection to a cgpool supervisor. It is safe for
// concurrent use by any number of goroutines. Create it with [Dial] and
// release it with [Client.Close].
type Client struct {
	conn   *ipc.Conn
	nc     net.Conn // for the read deadline that interrupts a reading waiter
	server string
	pools  []string
	nextID atomic.Uint64

	mu       sync.Mutex
	futures  map[uint64]*Future    // live submissions
	requests map[uint64]*pending   // stats, status, set_env, recycle, shutdown
	cancels  map[uint64][]*pending // cancel waiters per submission id, FIFO
	err      error                 // set once the connection is gone; wraps ErrClosed
	remote   error                 // last connection-level error frame (no id)

	// The read role (reader.go), guarded by mu.
	role        int
	line        []*turn // waiters queued for the role
	watched     int     // unfinished Futures watched without a waiter
	epoch       uint64  // counts hand-overs of the role
	interrupted bool    // the read deadline is set to interrupt the reader

	closing   atomic.Bool
	closeOnce sync.Once
	closeErr  error
	bgKick    chan struct{} // cap 1: the background goroutine has the role
	bgQuit    chan struct{} // closed by Close
	bgDone    chan struct{}
}

// reply is a server answer, or the error that replaced it.
type reply struct {
	h   ipc.Header
	err error
}

// pending is a request (or cancel) waiting for its reply.
type pending struct {
	done chan struct{} // closed once r is set
	r    reply
}

func newPending() *pending { return &pending{done: make(chan struct{})} }

func (p *pending) deliver(r reply) {
	p.r = r
	close(p.done)
}

// Dial connects to the supervisor's unix socket at path, performs the
// handshake (hello/welcome, [ipc.ClientHello]) and starts the Client's
// background goroutine. It blocks until the welcome arrives, ctx ends, or an
// error occurs; ctx bounds only the dial and the handshake, not the
// Client's lifetime.
//
// Errors: the dial error (wrapped); an *ipc.VersionError if the server does
// not speak this client's protocol version; an *ipc.RemoteError or an
// error wrapping ipc.ErrProtocol for other refusals; ctx.Err() (wrapped)
// if ctx ended first. On error nothing is left open.
func Dial(ctx context.Context, path string, opts ...Option) (*Client, error) {
	o := options{name: DefaultClientName}
	for _, opt := range opts {
		opt(&o)
	}
	var d net.Dialer
	nc, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("cgpool: dial %s: %w", path, err)
	}
	conn := ipc.NewConn(nc, ipc.Options{MaxPayload: o.maxPayload})

	// Bound the handshake by ctx: its deadline directly, its cancellation
	// by expiring the deadline.
	if dl, ok := ctx.Deadline(); ok {
		nc.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { nc.SetDeadline(time.Unix(1, 0)) })
	welcome, err := ipc.ClientHello(conn, o.name)
	if !stop() || ctx.Err() != nil {
		// ctx ended during the handshake; whatever err says (typically an
		// i/o timeout) is a consequence.
		conn.Close()
		return nil, fmt.Errorf("cgpool: handshake with %s: %w", path, context.Cause(ctx))
	}
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("cgpool: handshake with %s: %w", path, err)
	}
	if err := nc.SetDeadline(time.Time{}); err != nil {
		conn.Close()
		return nil, fmt.Errorf("cgpool: handshake with %s: %w", path, err)
	}

	c := &Client{
		conn:     conn,
		nc:       nc,
		server:   welcome.Server,
		pools:    welcome.Pools,
		futures:  make(map[uint64]*Future),
		requests: make(map[uint64]*pending),
		cancels:  make(map[uint64][]*pending),
		bgKick:   make(chan struct{}, 1),
		bgQuit:   make(chan struct{}),
		bgDone:   make(chan struct{}),
	}
	go c.background()
	return c, nil
}

// Pools returns the names of the pools the server announced in its welcome
// (a fresh copy). It does not block.
func (c *Client) Pools() []string { return slices.Clone(c.pools) }

// Server returns the server name and version from the welcome. It does not
// block.
func (c *Client) Server() string { return c.server }

// Close closes the connection and blocks until the background goroutine
// has exited. Every pending Future, Accepted, Cancel and request then fails
// with an error wrapping [ErrClosed]; what happens on the server to
// unfinished submissions depends on the pool's on_disconnect policy. Close
// is idempotent and safe for concurrent use; the first call returns the
// error of closing the socket, later ones nil.
func (c *Client) Close() error {
	first := false
	c.closeOnce.Do(func() {
		first = true
		c.closing.Store(true)
		c.closeErr = c.conn.Close()
		close(c.bgQuit)
		c.shutdown(ErrClosed)
	})
	<-c.bgDone
	if first {
		return c.closeErr
	}
	return nil
}

// Submit sends a submission and returns its Future at once: it does not
// wait for "accepted" (use [Future.Accepted] or [Future.Wait]), so a full
// backlog never blocks the caller. It blocks only while the frame is
// written to the socket, which takes long only if the server stops
// reading. ctx is checked before anything is sent; it does not interrupt
// the write (that would corrupt the stream).
//
// The submission's id comes from the Client's counter (1, 2, ...), shared
// with the requests. Submit does not retain t's slices or map after it
// returns.
//
// Errors (no Future, nothing was sent): ctx.Err(); an error wrapping
// [ErrInvalid] and ipc.ErrInvalidRequest for a Task that breaks the
// protocol's structural rules (negative priority or durations, bad env
// names, NUL in argv); an *ipc.FrameError (errors.As) for a payload above
// the connection's MaxPayload; an error wrapping [ErrClosed] if the
// connection is gone (if it failed during the write, the server may have
// received the submission).
func (c *Client) Submit(ctx context.Context, t Task) (*Future, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	h := ipc.Header{
		Type:           ipc.TypeSubmit,
		ID:             c.nextID.Add(1),
		Pool:           t.Pool,
		Priority:       t.Priority,
		TimeoutMS:      millis(t.Timeout),
		QueueTimeoutMS: millis(t.QueueTimeout),
		MemoryMax:      t.MemoryMax,
		Env:            t.Env,
		Argv:           t.Argv,
		Cwd:            t.Dir,
		StreamOutput:   t.Stdout != nil || t.Stderr != nil,
		MaxOutput:      t.MaxOutput,
		Hold:           t.Hold,
	}
	if err := h.ValidateRequest(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	f := newFuture(c, h.ID, &t)
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return nil, err
	}
	c.futures[h.ID] = f
	c.maybeBGLocked()
	c.mu.Unlock()
	if err := c.send(&h, t.Payload); err != nil {
		c.mu.Lock()
		delete(c.futures, h.ID)
		c.mu.Unlock()
		return nil, err
	}
	return f, nil
}

// Stats asks for the statistics of pool ("" = all pools) and blocks until
// the "stats_reply" arrives or ctx ends. The document is defined by the
// supervisor: for one pool an object of counters, for all pools an object
// keyed by pool name. Errors: an *ipc.RemoteError (errors.As) if the server
// answered with an error (e.g. code "unknown_pool"), an error wrapping
// [ErrClosed], or ctx.Err(). Ending ctx abandons the answer.
func (c *Client) Stats(ctx context.Context, pool string) (json.RawMessage, error) {
	h, err := c.request(ctx, ipc.Header{Type: ipc.TypeStats, Pool: pool}, ipc.TypeStatsReply)
	if err != nil {
		return nil, err
	}
	return h.Stats, nil
}

// Status asks for the status of pool ("" = all pools): its workers, their
// state and memory. It blocks and fails like [Client.Stats], and returns
// the "status_reply" document.
func (c *Client) Status(ctx context.Context, pool string) (json.RawMessage, error) {
	h, err := c.request(ctx, ipc.Header{Type: ipc.TypeStatus, Pool: pool}, ipc.TypeStatusReply)
	if err != nil {
		return nil, err
	}
	return h.Status, nil
}

// SetEnv changes the extra environment of pool's workers: env is added to
// it (overriding equal names), or replaces it if replace is true (an empty
// env then clears it). It takes effect for workers started afterwards; use
// [Client.Recycle] to restart the existing ones. It blocks until the "ok"
// arrives or ctx ends. Errors: an error wrapping [ErrInvalid] for a bad
// variable name (nothing sent), otherwise as for [Client.Stats].
func (c *Client) SetEnv(ctx context.Context, pool string, env map[string]string, replace bool) error {
	_, err := c.request(ctx, ipc.Header{Type: ipc.TypeSetEnv, Pool: pool, Env: env, Replace: replace}, ipc.TypeOK)
	return err
}

// Recycle replaces pool's workers (idle ones now, busy ones after their
// task). It blocks until the "ok" arrives or ctx ends; errors as for
// [Client.Stats].
func (c *Client) Recycle(ctx context.Context, pool string) error {
	_, err := c.request(ctx, ipc.Header{Type: ipc.TypeRecycle, Pool: pool}, ipc.TypeOK)
	return err
}

// Shutdown asks the supervisor to shut down; from then on every pool
// rejects new submissions with "draining". wait and cancelFutures follow
// concurrent.futures.Executor.shutdown (see docs/protocol.md §3.7):
// cancelFutures cancels queued tasks; wait makes the server answer only
// once the work has wound down; without wait and with cancelFutures,
// running tasks are killed. deadline > 0 bounds how long running work may
// go on before it is killed (it then ends with a *CancelledError); it is
// sent in milliseconds, rounded up.
//
// Shutdown blocks until the "ok" arrives or ctx ends; with wait that can be
// as long as the longest running task (or deadline). The supervisor then
// exits and closes the connection, after which the Client fails with
// [ErrClosed]; call [Client.Close] to release it. Errors as for
// [Client.Stats].
func (c *Client) Shutdown(ctx context.Context, wait, cancelFutures bool, deadline time.Duration) error {
	_, err := c.request(ctx, ipc.Header{Type: ipc.TypeShutdown, Wait: wait, CancelFutures: cancelFutures,
		DeadlineMS: millis(deadline)}, ipc.TypeOK)
	return err
}

// request sends h with a fresh id and waits for its answer of type want
// (or an error frame).
func (c *Client) request(ctx context.Context, h ipc.Header, want string) (ipc.Header, error) {
	if err := ctx.Err(); err != nil {
		return ipc.Header{}, err
	}
	h.ID = c.nextID.Add(1)
	if err := h.ValidateRequest(); err != nil {
		return ipc.Header{}, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	p := newPending()
	if err := c.register(func() { c.requests[h.ID] = p }); err != nil {
		return ipc.Header{}, err
	}
	if err := c.send(&h, nil); err != nil {
		c.mu.Lock()
		delete(c.requests, h.ID)
		c.mu.Unlock()
		return ipc.Header{}, err
	}
	r, err := c.awaitReply(ctx, p, h.Type, func() {
		c.mu.Lock()
		delete(c.requests, h.ID)
		c.mu.Unlock()
	})
	if err == nil && r.Type != want {
		return ipc.Header{}, fmt.Errorf("cgpool: %s: %w: answered with %q, want %q", h.Type, ipc.ErrProtocol, r.Type, want)
	}
	return r, err
}

// register runs add under c.mu, unless the connection is gone: then it
// returns why.
func (c *Client) register(add func()) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return c.err
	}
	add()
	return nil
}

// awaitReply waits for p's reply (see await) and turns an error frame into
// an error. If ctx ends first, abandon runs and ctx.Err() is returned.
func (c *Client) awaitReply(ctx context.Context, p *pending, what string, abandon func()) (ipc.Header, error) {
	if err := c.await(ctx, p.done); err != nil {
		select {
		case <-p.done:
		default:
			abandon()
			return ipc.Header{}, err
		}
	}
	if p.r.err != nil {
		return ipc.Header{}, p.r.err
	}
	if p.r.h.Type == ipc.TypeError {
		return ipc.Header{}, fmt.Errorf("cgpool: %s: %w", what, p.r.h.Err())
	}
	return p.r.h, nil
}

// cancel sends cancel{id, mode} and waits for its cancel_reply (or error).
// Cancel replies are matched FIFO per submission id: a waiter that gives up
// stays queued so that later replies still reach the right waiter.
func (c *Client) cancel(ctx context.Context, id uint64, mode string) (ipc.Header, error) {
	h := ipc.Header{Type: ipc.TypeCancel, ID: id, Mode: mode}
	p := newPending()
	if err := c.register(func() { c.cancels[id] = append(c.cancels[id], p) }); err != nil {
		return ipc.Header{}, err
	}
	if err := c.send(&h, nil); err != nil {
		c.mu.Lock()
		if q := c.cancels[id]; q != nil {
			q = slices.DeleteFunc(q, func(x *pending) bool { return x == p })
			if len(q) == 0 {
				delete(c.cancels, id)
			} else {
				c.cancels[id] = q
			}
		}
		c.mu.Unlock()
		return ipc.Header{}, err
	}
	// An abandoned cancel stays queued: later replies still reach the
	// right waiter.
	return c.awaitReply(ctx, p, ipc.TypeCancel, func() {})
}

// send writes one frame. A *ipc.FrameError means nothing was written and
// the connection is still fine; any other failure breaks the connection:
// it is closed and everything pending fails.
func (c *Client) send(h *ipc.Header, payload []byte) error {
	err := c.conn.Write(h, payload)
	if err == nil {
		return nil
	}
	var fe *ipc.FrameError
	if errors.As(err, &fe) {
		return fmt.Errorf("cgpool: %s %d: %w", h.Type, h.ID, err)
	}
	err = c.setErr(fmt.Errorf("write: %w", err))
	c.shutdown(err)
	return err
}

// setErr records why the connection is gone (the first cause wins) and
// returns the recorded error, which wraps ErrClosed.
func (c *Client) setErr(cause error) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err == nil {
		switch {
		case c.closing.Load():
			c.err = fmt.Errorf("%w: Close was called", ErrClosed)
		case errors.Is(cause, io.EOF) && c.remote != nil:
			c.err = fmt.Errorf("%w: the server closed the connection after %w", ErrClosed, c.remote)
		case errors.Is(cause, io.EOF):
			c.err = fmt.Errorf("%w: the server closed the connection", ErrClosed)
		default:
			c.err = fmt.Errorf("%w: %w", ErrClosed, cause)
		}
	}
	return c.err
}

// shutdown closes the connection after a read error (or Close) and fails
// every pending future, request and cancel.
func (c *Client) shutdown(cause error) {
	err := c.setErr(cause)
	c.conn.Close()
	c.mu.Lock()
	futures, requests, cancels := c.futures, c.requests, c.cancels
	c.futures, c.requests, c.cancels = nil, nil, nil
	c.mu.Unlock()
	for _, f := range futures {
		f.fail(err)
	}
	for _, p := range requests {
		p.deliver(reply{err: err})
	}
	for _, q := range cancels {
		for _, p := range q {
			p.deliver(reply{err: err})
		}
	}
}

// dispatch routes one server frame to the future or request it is about.
// Frames about unknown ids and of unknown types are ignored (forward
// compatibility; late answers to abandoned requests).
func (c *Client) dispatch(h *ipc.Header, payload []byte) {
	switch h.Type {
	case ipc.TypeOutput:
		c.mu.Lock()
		f := c.futures[h.ID]
		c.mu.Unlock()
		if f != nil {
			f.output(h, payload)
		}
	case ipc.TypeAccepted, ipc.TypeRunning, ipc.TypeRejected, ipc.TypeResult, ipc.TypeTaskError,
		ipc.TypeTimeout, ipc.TypeProcessError, ipc.TypeCancelled, ipc.TypeQueueTimeout:
		c.mu.Lock()
		f := c.futures[h.ID]
		if f != nil && ipc.IsFinal(h.Type) {
			delete(c.futures, h.ID)
		}
		c.mu.Unlock()
		if f != nil {
			f.handle(h, payload)
		}
	case ipc.TypeCancelReply:
		if p := c.popCancel(h.ID); p != nil {
			p.deliver(reply{h: *h})
		}
	case ipc.TypeStatsReply, ipc.TypeStatusReply, ipc.TypeOK:
		if p := c.popRequest(h.ID); p != nil {
			p.deliver(reply{h: *h})
		}
	case ipc.TypeError:
		if h.ID == 0 {
			c.mu.Lock()
			c.remote = h.Err()
			c.mu.Unlock()
			return
		}
		// Ids are unique across requests and submissions; an error about a
		// submission id answers a cancel if one is waiting, and otherwise
		// ends the submission.
		if p := c.popRequest(h.ID); p != nil {
			p.deliver(reply{h: *h})
			return
		}
		if p := c.popCancel(h.ID); p != nil {
			p.deliver(reply{h: *h})
			return
		}
		c.mu.Lock()
		f := c.futures[h.ID]
		delete(c.futures, h.ID)
		c.mu.Unlock()
		if f != nil {
			f.handle(h, payload)
		}
	}
}

func (c *Client) popRequest(id uint64) *pending {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := c.requests[id]
	delete(c.requests, id)
	return ch
}

func (c *Client) popCancel(id uint64) *pending {
	c.mu.Lock()
	defer c.mu.Unlock()
	q := c.cancels[id]
	if len(q) == 0 {
		return nil
	}
	if len(q) == 1 {
		delete(c.cancels, id)
	} else {
		c.cancels[id] = q[1:]
	}
	return q[0]
}

// millis converts d to whole milliseconds, rounding away from zero so that
// a positive duration never becomes 0 ("default") and a negative one never
// becomes valid.
func millis(d time.Duration) int64 {
	ms := d / time.Millisecond
	if d%time.Millisecond != 0 {
		if d > 0 {
			ms++
		} else {
			ms--
		}
	}
	return int64(ms)
}
