package client

import (
	"context"
	"errors"
	"os"
	"slices"
	"time"
)

// The reading model.
//
// One goroutine at a time reads the connection and dispatches every frame
// it reads, whatever it is about: it holds the read role. The role goes to
// whoever needs it: a goroutine that waits (Wait, Accepted, a request, a
// cancel) reads itself when nobody else does, so that the frame it waits
// for wakes it directly; handing each frame from a reader goroutine to the
// waiter would cost a thread wake-up, which on small VMs is most of a
// no-op round trip. Waiters that find the role taken queue in line and
// take it in turn.
//
// The background goroutine reads when a goroutine may not be there to do
// it: while two or more submissions are unfinished (a caller that
// submits many and waits later must not find the connection stalled by
// answers nobody reads: the server stops reading a client that does not
// read), or while an unfinished Future is watched without a waiter (Done,
// PID, Leaf, Running). It then dispatches every frame, as a reader
// goroutine would, until neither holds; a waiter in line then gets the
// role. One unfinished submission alone never needs it: its few answers
// fit in the socket's buffer.
//
// A waiter whose context ends while it reads is interrupted through the
// socket's read deadline (ipc.Conn.Read resumes a frame it cut), passes the
// role on and returns.

const (
	roleNone   = iota // nobody reads
	roleBG            // the background goroutine reads
	roleWaiter        // a waiting goroutine reads
)

// turn is a waiter's place in line for the read role: ch is closed when the
// role is handed to it.
type turn struct{ ch chan struct{} }

// await blocks until done is closed or ctx ends, reading the connection
// itself when nobody else does. It returns ctx.Err() if ctx ended first
// (done may be closed by then as well: the caller checks it first).
func (c *Client) await(ctx context.Context, done <-chan struct{}) error {
	select {
	case <-done:
		return nil
	default:
	}
	c.mu.Lock()
	if c.role == roleNone {
		c.role = roleWaiter
		c.mu.Unlock()
		return c.readUntil(ctx, done)
	}
	t := &turn{ch: make(chan struct{})}
	c.line = append(c.line, t)
	c.mu.Unlock()
	select {
	case <-t.ch:
		return c.readUntil(ctx, done)
	case <-done:
		c.leaveLine(t)
		return nil
	case <-ctx.Done():
		c.leaveLine(t)
		return ctx.Err()
	}
}

// leaveLine takes t out of the line. If the role was handed to t
// meanwhile, t holds it: it is passed on.
func (c *Client) leaveLine(t *turn) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if i := slices.Index(c.line, t); i >= 0 {
		c.line = slices.Delete(c.line, i, i+1)
		return
	}
	c.releaseLocked()
}

// readUntil reads and dispatches frames, holding the read role, until done
// is closed or ctx ends, then passes the role on.
func (c *Client) readUntil(ctx context.Context, done <-chan struct{}) error {
	c.mu.Lock()
	epoch := c.epoch
	c.mu.Unlock()
	stop := context.AfterFunc(ctx, func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.epoch == epoch { // still this holder's turn: interrupt its read
			c.interrupted = true
			c.nc.SetReadDeadline(time.Unix(1, 0))
		}
	})
	defer stop()
	for {
		select {
		case <-done:
			c.release()
			return nil
		default:
		}
		if err := ctx.Err(); err != nil {
			c.release()
			return err
		}
		h, payload, err := c.conn.Read()
		if errors.Is(err, os.ErrDeadlineExceeded) {
			continue // our ctx ended (the loop sees it); the frame read so far is kept
		}
		if err != nil {
			c.shutdown(err)
			c.release()
			// Every Future and request ends with the connection, done's
			// included; a concurrent shutdown (Close) may still be at it.
			<-done
			return nil
		}
		c.dispatch(&h, payload)
	}
}

func (c *Client) release() {
	c.mu.Lock()
	c.releaseLocked()
	c.mu.Unlock()
}

// releaseLocked passes the read role on: to the first waiter in line, else
// to the background goroutine if a Future is watched, else to nobody.
func (c *Client) releaseLocked() {
	c.epoch++
	if c.interrupted {
		c.interrupted = false
		c.nc.SetReadDeadline(time.Time{})
	}
	if len(c.line) > 0 {
		t := c.line[0]
		c.line = c.line[1:]
		c.role = roleWaiter
		close(t.ch)
		return
	}
	if c.needBGLocked() {
		c.role = roleBG
		c.kickBG()
		return
	}
	c.role = roleNone
}

// needBGLocked reports whether the background goroutine should read (see
// the reading model). c.mu is held.
func (c *Client) needBGLocked() bool {
	return c.err == nil && (c.watched > 0 || len(c.futures) >= 2)
}

// maybeBGLocked gives the background goroutine the role if nobody reads
// and it is needed. c.mu is held.
func (c *Client) maybeBGLocked() {
	if c.role == roleNone && c.needBGLocked() {
		c.role = roleBG
		c.kickBG()
	}
}

func (c *Client) kickBG() {
	select {
	case c.bgKick <- struct{}{}:
	default:
	}
}

// watchLocked notes one more watched Future; the background goroutine
// reads if nobody does. c.mu is held.
func (c *Client) watchLocked() {
	c.watched++
	c.maybeBGLocked()
}

// background reads for watched Futures (see the reading model) until
// Close.
func (c *Client) background() {
	defer close(c.bgDone)
	for {
		select {
		case <-c.bgKick: // the role is ours
		case <-c.bgQuit:
			return
		}
		for {
			c.mu.Lock()
			if !c.needBGLocked() {
				c.releaseLocked() // to a waiter in line, if any
				c.mu.Unlock()
				break
			}
			c.mu.Unlock()
			h, payload, err := c.conn.Read()
			if errors.Is(err, os.ErrDeadlineExceeded) {
				continue // a waiter's stale interrupt; cleared when it passed the role on
			}
			if err != nil {
				c.shutdown(err)
				continue // c.err is set: the role is released above
			}
			c.dispatch(&h, payload)
		}
	}
}
