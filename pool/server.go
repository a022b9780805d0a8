package pool

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cgpool/cgpool/ipc"
	"github.com/cgpool/cgpool/oomwatch"
)

// Defaults of ServerOptions.
const (
	DefaultMaxConns         = 2048
	DefaultMaxConnsPerUID   = 1024
	DefaultHandshakeTimeout = 5 * time.Second
	DefaultMaxOutboxBytes   = 64 << 20
	DefaultWriteTimeout     = 60 * time.Second
)

// ServerOptions configure a Server (see SECURITY.md). The zero value gives
// the defaults above.
type ServerOptions struct {
	// Logger receives the server's logs; nil discards them.
	Logger *slog.Logger
	// AdminUIDs and AdminGIDs are the peers that may make requests that
	// affect other peers: set_env, recycle, shutdown, and status details
	// (pids, cgroups, task ids) of other peers' tasks. Root and the
	// server's own effective uid are admins always; a gid matches the
	// peer's primary gid or one of its supplementary groups.
	AdminUIDs, AdminGIDs []uint32
	// MaxConns bounds the connections open at once, MaxConnsPerUID those
	// of one peer uid; a connection past either is answered with an error
	// frame of code busy and closed, and counted.
	MaxConns, MaxConnsPerUID int
	// HandshakeTimeout bounds the time from accept to the client's hello.
	HandshakeTimeout time.Duration
	// MaxOutboxBytes bounds the replies queued for a client that does not
	// take them: past a quarter of it the server stops reading that
	// client's requests until it has taken its replies; past all of it
	// the client is disconnected (its tasks then follow the pools'
	// disconnect policy).
	MaxOutboxBytes int64
	// WriteTimeout disconnects a client that takes none of its replies for
	// this long.
	WriteTimeout time.Duration
}

func (o ServerOptions) withDefaults() ServerOptions {
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if o.MaxConns <= 0 {
		o.MaxConns = DefaultMaxConns
	}
	if o.MaxConnsPerUID <= 0 {
		o.MaxConnsPerUID = DefaultMaxConnsPerUID
	}
	if o.HandshakeTimeout <= 0 {
		o.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if o.MaxOutboxBytes <= 0 {
		o.MaxOutboxBytes = DefaultMaxOutboxBytes
	}
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = DefaultWriteTimeout
	}
	return o
}

// ServerStats are the server's own counters.
type ServerStats struct {
	Connections        int    `json:"connections"`         // open now
	ConnectionsRefused uint64 `json:"connections_refused"` // over MaxConns or MaxConnsPerUID
	HandshakeFailures  uint64 `json:"handshake_failures"`  // no valid hello within HandshakeTimeout
	SlowClientsDropped uint64 `json:"slow_clients_dropped"`
	AcceptErrors       uint64 `json:"accept_errors"` // temporary Accept errors backed off from (EMFILE...)
}

// Server speaks the client protocol (docs/protocol.md) on a listener and
// drives a Supervisor.
type Server struct {
	sup  *Supervisor
	ln   *ipc.Listener
	log  *slog.Logger
	o    ServerOptions
	name string
	euid uint32

	mu         sync.Mutex
	conns      map[*serverConn]struct{}
	perUID     map[uint32]int
	nextClient uint64
	shutdown   chan ShutdownOptions // a client asked for a shutdown, and it was done
	wg         sync.WaitGroup

	refused, handshakeFailed, dropped, acceptErrs atomic.Uint64
	lastRefusalLog                                atomic.Int64 // unix nanoseconds
	refusing                                      atomic.Int32 // goroutines answering refused connections
}

// NewServer returns a server for sup on ln. It starts nothing; Serve does.
func NewServer(sup *Supervisor, ln *ipc.Listener, o ServerOptions) *Server {
	o = o.withDefaults()
	return &Server{sup: sup, ln: ln, log: o.Logger, o: o, name: "cgpool", euid: uint32(os.Geteuid()),
		conns: map[*serverConn]struct{}{}, perUID: map[uint32]int{}, shutdown: make(chan ShutdownOptions, 1)}
}

// ShutdownRequested delivers the options of a shutdown a client asked for,
// once the supervisor's pools have been told (and, with Wait, are gone).
func (s *Server) ShutdownRequested() <-chan ShutdownOptions { return s.shutdown }

// Stats returns the server's counters. It does not block.
func (s *Server) Stats() ServerStats {
	s.mu.Lock()
	n := len(s.conns)
	s.mu.Unlock()
	return ServerStats{Connections: n, ConnectionsRefused: s.refused.Load(), HandshakeFailures: s.handshakeFailed.Load(),
		SlowClientsDropped: s.dropped.Load(), AcceptErrors: s.acceptErrs.Load()}
}

// Serve accepts connections until ctx ends or the listener fails for good,
// then closes the listener and every connection and returns after all
// their goroutines have ended. It returns nil when ctx ended. A temporary
// Accept error (EMFILE, ENFILE, ENOBUFS, ENOMEM, ECONNABORTED...) is backed
// off from, as net/http's Server does, and never ends the service.
func (s *Server) Serve(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() { s.ln.Close() })
	defer stop()
	var err error
	var backoff time.Duration
	for {
		var c *net.UnixConn
		c, err = s.ln.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) || !temporary(err) {
				break
			}
			s.acceptErrs.Add(1)
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.log.Warn("accept failed; retrying", "err", err, "in", backoff)
			t := time.NewTimer(backoff)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
			}
			err = nil
			continue
		}
		backoff = 0
		s.accept(c)
	}
	s.ln.Close()
	s.mu.Lock()
	conns := make([]*serverConn, 0, len(s.conns))
	for sc := range s.conns {
		conns = append(conns, sc)
	}
	s.mu.Unlock()
	for _, sc := range conns {
		sc.flushAndClose()
	}
	s.wg.Wait()
	if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// temporary reports whether an Accept error may go away by itself: the
// process or system is out of descriptors or memory, or one connection
// failed before it was accepted.
func temporary(err error) bool {
	for _, e := range []syscall.Errno{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM,
		syscall.ECONNABORTED, syscall.EINTR, syscall.EAGAIN, syscall.EPROTO, syscall.EPERM} {
		if errors.Is(err, e) {
			return true
		}
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// accept registers a connection from an allowed peer and starts serving
// it, or refuses it when a connection cap is reached.
func (s *Server) accept(c *net.UnixConn) {
	uid, gid, _, err := ipc.PeerCred(c)
	if err != nil {
		s.log.Warn("closing a connection whose peer credentials cannot be read", "err", err)
		c.Close()
		return
	}
	s.mu.Lock()
	why := ""
	switch {
	case len(s.conns) >= s.o.MaxConns:
		why = fmt.Sprintf("the server has %d connections open, its limit", len(s.conns))
	case s.perUID[uid] >= s.o.MaxConnsPerUID:
		why = fmt.Sprintf("uid %d has %d connections open, the limit for one user", uid, s.perUID[uid])
	}
	if why != "" {
		s.mu.Unlock()
		s.refuse(c, uid, why)
		return
	}
	sc := &serverConn{s: s, nc: c, c: ipc.NewConn(c, ipc.Options{BufferSize: connBuffer}), uid: uid, gid: gid, tasks: map[uint64]*Task{}, pending: map[uint64]*connTask{}, pools: map[*Pool]bool{},
		gate: make(chan struct{}), outbox: new(ipc.Batch), wake: make(chan struct{}, 1), writerDone: make(chan struct{})}
	sc.admin = s.isAdmin(c, uid, gid)
	sc.lazy = time.AfterFunc(time.Hour, sc.lazyDue)
	sc.lazy.Stop()
	s.nextClient++
	sc.client = s.nextClient
	s.conns[sc] = struct{}{}
	s.perUID[uid]++
	s.mu.Unlock()
	s.wg.Add(1)
	go sc.serve()
}

// refuse answers a connection over a cap with an error frame of code busy
// and closes it; it is counted, and logged at most once a second. The
// client's hello is read first (for at most refuseTimeout, by at most
// maxRefusing goroutines at once; past that the connection is just
// closed), so that a client that writes its hello after the server wrote
// gets the error frame, not a broken pipe.
func (s *Server) refuse(c *net.UnixConn, uid uint32, why string) {
	n := s.refused.Add(1)
	now := time.Now().UnixNano()
	if last := s.lastRefusalLog.Load(); now-last > int64(time.Second) && s.lastRefusalLog.CompareAndSwap(last, now) {
		s.log.Warn("refusing a connection", "uid", uid, "why", why, "refused_so_far", n)
	}
	if s.refusing.Add(1) > maxRefusing {
		s.refusing.Add(-1)
		c.Close()
		return
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer s.refusing.Add(-1)
		conn := ipc.NewConn(c)
		defer conn.Close()
		c.SetDeadline(time.Now().Add(refuseTimeout))
		if _, _, err := conn.Read(); err != nil {
			return
		}
		_ = conn.Write(&ipc.Header{Type: ipc.TypeError, Code: ipc.CodeBusy, Message: "cgpool serve refuses the connection: " + why}, nil)
	}()
}

// connBuffer is the size of each of a client connection's two buffers: a
// frame larger than it is read and written past it, so it bounds only how
// many small frames one system call moves, and it is most of what an idle
// connection costs.
const connBuffer = 8 << 10

// Bounds on answering refused connections (see refuse).
const (
	maxRefusing   = 64
	refuseTimeout = time.Second
)

// isAdmin reports whether the peer may make requests that affect others.
func (s *Server) isAdmin(c *net.UnixConn, uid, gid uint32) bool {
	if uid == 0 || uid == s.euid || slices.Contains(s.o.AdminUIDs, uid) {
		return true
	}
	if len(s.o.AdminGIDs) == 0 {
		return false
	}
	if slices.Contains(s.o.AdminGIDs, gid) {
		return true
	}
	groups, err := ipc.PeerGroups(c)
	if err != nil {
		return false
	}
	for _, g := range groups {
		if slices.Contains(s.o.AdminGIDs, g) {
			return true
		}
	}
	return false
}

type serverConn struct {
	s      *Server
	nc     *net.UnixConn
	c      *ipc.Conn
	client uint64
	uid    uint32
	gid    uint32
	admin  bool

	peerOnce sync.Once
	peer     *Identity // the peer's account, looked up at its first submit

	nTasks atomic.Int32 // len(tasks), read without mu by write

	mu        sync.Mutex
	tasks     map[uint64]*Task     // accepted submissions by client id, until the final message is queued
	pending   map[uint64]*connTask // submissions not answered yet, by client id
	pools     map[*Pool]bool
	held      []func()      // held submissions not yet taken, in arrival order
	heldN     int           // held submissions, waiting or being taken
	heldBytes int64         // their payloads
	holdDone  chan struct{} // closed when the goroutine that takes them ends; nil if none runs
	gone      bool          // the client disconnected: no new submission enters a pool

	// The outbox decouples the pool from the client: a slot never blocks
	// on a client that reads slowly, and the writer sends whatever piled
	// up in one batch (one syscall for many results). It is bounded in
	// bytes (ServerOptions.MaxOutboxBytes).
	// gate is closed and replaced when something the reader waits for in
	// waitRoom may have changed (the outbox drained, a hold ended, the
	// connection closes).
	gmu  sync.Mutex
	gate chan struct{}

	omu          sync.Mutex
	outbox       *ipc.Batch    // frames queued for the client, encoded
	spare        *ipc.Batch    // the writer's last batch, emptied, for the next outbox
	obytes       int64         // bytes in outbox and in the batch being written
	writingBytes int64         // those of the batch being written
	scratch      ipc.Header    // the header being encoded (omu)
	writing      bool          // the writer is sending a batch taken from the outbox
	wake         chan struct{} // cap 1
	closing      bool
	writerDone   chan struct{}
	lazy         *time.Timer // kicks the writer for frames that may wait (writeLazy)
	lazyArmed    bool
}

// connTask is a submission that its pool has not answered yet (it is
// held, or being submitted). Guarded by serverConn.mu. Once accepted, the
// connection keeps the *Task alone.
type connTask struct {
	early     []Event            // the task's events before "accepted": they go out after it
	cancel    context.CancelFunc // ends a hold; nil if not held
	cancelReq *ipc.Header        // a cancel that came while it was held
}

func (sc *serverConn) serve() {
	s := sc.s
	defer s.wg.Done()
	go sc.writer()
	defer func() {
		sc.flushAndClose()
		sc.disconnected()
		s.mu.Lock()
		delete(s.conns, sc)
		if s.perUID[sc.uid]--; s.perUID[sc.uid] <= 0 {
			delete(s.perUID, sc.uid)
		}
		s.mu.Unlock()
	}()
	sc.nc.SetReadDeadline(time.Now().Add(s.o.HandshakeTimeout))
	if _, err := ipc.ServerHello(sc.c, ipc.Header{Server: s.name, Pools: s.sup.Pools()}); err != nil {
		s.handshakeFailed.Add(1)
		s.log.Info("client refused at handshake", "client", sc.client, "uid", sc.uid, "err", err)
		return
	}
	sc.nc.SetReadDeadline(time.Time{})
	for {
		sc.waitRoom()
		h, payload, err := sc.c.Read()
		if err != nil {
			var fe *ipc.FrameError
			if errors.As(err, &fe) {
				s.log.Warn("disconnecting a client that sent a bad frame", "client", sc.client, "err", err)
				sc.write(ipc.Frame{Header: ipc.Header{Type: ipc.TypeError, Code: ipc.CodeProtocol, Message: err.Error()}})
			}
			return
		}
		if err := h.ValidateRequest(); err != nil {
			if h.Type == ipc.TypeSubmit {
				sc.write(ipc.Frame{Header: ipc.Header{Type: ipc.TypeRejected, ID: h.ID, Reason: ipc.RejectInvalid, Message: err.Error()}})
			} else {
				sc.write(ipc.Frame{Header: ipc.Header{Type: ipc.TypeError, ID: h.ID, Code: ipc.CodeInvalid, Message: err.Error()}})
			}
			continue
		}
		switch h.Type {
		case ipc.TypeSubmit:
			sc.submit(h, payload)
		case ipc.TypeCancel:
			sc.cancel(h)
		case ipc.TypeStats, ipc.TypeStatus:
			sc.report(h)
		case ipc.TypeSetEnv, ipc.TypeRecycle, ipc.TypeShutdown:
			if !sc.admin {
				sc.writeErr(h.ID, ipc.CodeForbidden, fmt.Sprintf("%s affects every client's tasks: only an admin may ask for it (root, the daemon's own user, admin_uids and admin_gids); you are uid %d", h.Type, sc.uid))
				continue
			}
			sc.admin1(h)
		default:
			sc.writeErr(h.ID, ipc.CodeProtocol, "unexpected message type "+h.Type)
		}
	}
}

// admin1 serves an admin request: set_env, recycle or shutdown.
func (sc *serverConn) admin1(h ipc.Header) {
	s := sc.s
	if h.Type == ipc.TypeShutdown {
		// Served in its own goroutine: with wait it blocks until the
		// pools are done, and this connection's outcomes must flow.
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			o := ShutdownOptions{Wait: h.Wait, CancelFutures: h.CancelFutures, Deadline: time.Duration(h.DeadlineMS) * time.Millisecond}
			s.log.Info("shutdown requested by a client", "uid", sc.uid, "wait", o.Wait, "cancel_futures", o.CancelFutures, "deadline", o.Deadline)
			if err := s.sup.Shutdown(context.Background(), o); err != nil {
				sc.writeErr(h.ID, ipc.CodeInternal, err.Error())
			} else {
				sc.write(ipc.Frame{Header: ipc.Header{Type: ipc.TypeOK, ID: h.ID}})
			}
			select {
			case s.shutdown <- o:
			default:
			}
		}()
		return
	}
	p, err := s.sup.Pool(h.Pool)
	if err != nil {
		sc.writeErr(h.ID, ipc.CodeUnknownPool, err.Error())
		return
	}
	if h.Type == ipc.TypeSetEnv {
		if err := p.SetEnv(h.Env, h.Replace); err != nil {
			sc.writeErr(h.ID, ipc.CodeInvalid, err.Error())
			return
		}
		s.log.Info("pool environment changed", "pool", p.Name(), "uid", sc.uid, "replace", h.Replace, "names", slices.Sorted(maps.Keys(h.Env)))
	} else {
		p.Recycle()
		s.log.Info("pool recycled", "pool", p.Name(), "uid", sc.uid)
	}
	sc.write(ipc.Frame{Header: ipc.Header{Type: ipc.TypeOK, ID: h.ID}})
}

func (sc *serverConn) writeErr(id uint64, code, msg string) {
	sc.write(ipc.Frame{Header: ipc.Header{Type: ipc.TypeError, ID: id, Code: code, Message: msg}})
}

// write queues frames for the client, in order, without ever blocking on
// its socket: they are encoded onto the outbox at once. When the client
// has few tasks in flight, it writes at once from the calling goroutine,
// with whatever waits in the outbox before it, if the writer goroutine is
// not busy and the socket has room: waking the writer would cost more than
// the write. Otherwise the writer sends what piled up meanwhile in one
// write (with many tasks in flight that batching is worth more). A client
// whose outbox grows past MaxOutboxBytes is disconnected.
func (sc *serverConn) write(frames ...ipc.Frame) {
	quiet := sc.nTasks.Load() <= quietTasks
	sc.omu.Lock()
	if !sc.enqueueLocked(frames) {
		sc.omu.Unlock()
		return
	}
	if quiet && !sc.writing && sc.outbox.Len() <= inlineFrames {
		ok, err := sc.c.TryWriteEncoded(sc.outbox)
		if err != nil {
			sc.outbox.Reset()
			sc.obytes = 0
			sc.signalRoomLocked()
			sc.omu.Unlock()
			sc.writeFailed(err)
			return
		}
		if ok {
			sc.outbox.Reset()
			sc.obytes = 0
			sc.signalRoomLocked()
			sc.omu.Unlock()
			return
		}
	}
	sc.omu.Unlock()
	sc.kick()
}

// enqueueLocked encodes frames onto the outbox; false if the client is
// gone (or just went: past the outbox bound, or a frame of ours that does
// not encode). sc.omu must be held.
func (sc *serverConn) enqueueLocked(frames []ipc.Frame) bool {
	if sc.closing {
		return false // the client is gone
	}
	max := sc.c.MaxPayload()
	for i := range frames {
		// Encoded from a copy of ours: a header handed to the encoder
		// escapes to the heap, and every frame's would be garbage.
		sc.scratch = frames[i].Header
		if err := sc.outbox.Add(&sc.scratch, frames[i].Payload, max); err != nil {
			// A frame of ours that does not encode is a bug, not the
			// client's fault; the connection cannot go on without it.
			sc.s.log.Error("could not encode a frame for a client", "client", sc.client, "type", frames[i].Header.Type, "err", err)
			sc.dropLocked()
			return false
		}
	}
	sc.obytes = sc.outbox.Size() + sc.writingBytes
	if sc.obytes > sc.s.o.MaxOutboxBytes {
		sc.s.dropped.Add(1)
		sc.s.log.Warn("disconnecting a client that does not take its replies", "client", sc.client, "uid", sc.uid, "queued_bytes", sc.obytes, "limit", sc.s.o.MaxOutboxBytes)
		sc.dropLocked()
		return false
	}
	return true
}

// dropLocked gives up on the client at once: what is queued for it is
// dropped and the connection closed (which ends its reader). sc.omu must
// be held.
func (sc *serverConn) dropLocked() {
	sc.outbox.Reset()
	sc.closing = true
	sc.obytes = sc.writingBytes
	sc.signalRoomLocked()
	sc.c.Close()
	sc.kick()
}

// readBound is the outbox size past which the reader stops taking the
// client's requests until the client has taken its replies.
func (sc *serverConn) readBound() int64 { return sc.s.o.MaxOutboxBytes / 4 }

// Held submissions of one connection past which the reader waits for
// some of them to be taken: the held are a second backlog, in the
// daemon's memory, and as bounded as the first.
const (
	maxHeld      = 1024
	maxHeldBytes = 64 << 20
)

// signalRoomLocked opens the reader's gate if the outbox is below the
// read bound or the connection closes. sc.omu must be held.
func (sc *serverConn) signalRoomLocked() {
	if sc.obytes <= sc.readBound() || sc.closing {
		sc.openGate()
	}
}

func (sc *serverConn) openGate() {
	sc.gmu.Lock()
	close(sc.gate)
	sc.gate = make(chan struct{})
	sc.gmu.Unlock()
}

// waitRoom blocks the reader while the client's replies pile up past the
// read bound (a client that sends requests and reads no answer, such as
// 200,000 stats requests, then costs a bounded outbox, not the daemon's
// memory), or while it has maxHeld submissions (or maxHeldBytes of them)
// held: its next requests wait in its socket, and the client's writes
// block, until the pool takes some.
func (sc *serverConn) waitRoom() {
	for {
		sc.gmu.Lock()
		gate := sc.gate
		sc.gmu.Unlock()
		sc.omu.Lock()
		closing, full := sc.closing, sc.obytes > sc.readBound()
		sc.omu.Unlock()
		sc.mu.Lock()
		held := sc.heldN >= maxHeld || sc.heldBytes >= maxHeldBytes
		sc.mu.Unlock()
		if closing || (!full && !held) {
			return
		}
		<-gate
	}
}

// maxSpareBytes bounds the outbox buffers a connection keeps for reuse.
const maxSpareBytes = 256 << 10

// inlineFrames bounds the frames write sends from the caller's goroutine:
// a longer outbox means a client that does not keep up, whose frames the
// writer sends in batches.
const inlineFrames = 8

// quietTasks is how many tasks a client may have in flight for write to
// send its frames from the caller's goroutine.
const quietTasks = 2

// lazyGrace is how long frames that may wait (writeLazy) wait for a frame
// to go out with.
const lazyGrace = 5 * time.Millisecond

// writeLazy queues frames that may wait up to lazyGrace: "accepted" and
// "running" for a task that started at once. A short task's answer takes
// them along in one write, which saves the client a wake-up (on small VMs
// a third of a no-op round trip); a longer task's go out when the grace
// ends.
func (sc *serverConn) writeLazy(frames ...ipc.Frame) {
	sc.omu.Lock()
	defer sc.omu.Unlock()
	if !sc.enqueueLocked(frames) {
		return
	}
	if !sc.lazyArmed {
		sc.lazyArmed = true
		sc.lazy.Reset(lazyGrace)
	}
}

func (sc *serverConn) lazyDue() {
	sc.omu.Lock()
	sc.lazyArmed = false
	sc.omu.Unlock()
	sc.kick()
}

// writeFailed gives up on a client whose socket failed.
func (sc *serverConn) writeFailed(err error) {
	var fe *ipc.FrameError
	switch {
	case errors.As(err, &fe): // a frame of ours could not be encoded: a bug, not the client's fault
		sc.s.log.Error("could not encode a frame for a client", "client", sc.client, "err", err)
	case errors.Is(err, os.ErrDeadlineExceeded):
		sc.s.dropped.Add(1)
		sc.s.log.Warn("disconnecting a client that took none of its replies", "client", sc.client, "uid", sc.uid, "for", sc.s.o.WriteTimeout)
	default:
		sc.s.log.Debug("write to client failed", "client", sc.client, "err", err)
	}
	sc.omu.Lock()
	sc.closing = true
	sc.signalRoomLocked()
	sc.omu.Unlock()
	sc.c.Close() // unblocks the reader: this client is gone
}

func (sc *serverConn) kick() {
	select {
	case sc.wake <- struct{}{}:
	default:
	}
}

// flushAndClose stops taking frames, lets the writer send what is queued
// (for at most flushTimeout: a client that does not read loses them), and
// closes the connection. It is idempotent.
func (sc *serverConn) flushAndClose() {
	sc.omu.Lock()
	sc.closing = true
	sc.signalRoomLocked()
	sc.omu.Unlock()
	sc.kick()
	select {
	case <-sc.writerDone:
	case <-time.After(flushTimeout):
	}
	sc.lazy.Stop()
	sc.c.Close()
	<-sc.writerDone
}

// flushTimeout bounds how long a closing connection waits for its client
// to take the frames still queued for it.
const flushTimeout = 2 * time.Second

// writer sends the outbox in batches until the connection closes; frames
// queued before closing are still sent. A batch the client does not take
// within WriteTimeout disconnects it.
func (sc *serverConn) writer() {
	defer close(sc.writerDone)
	for range sc.wake {
		sc.omu.Lock()
		batch, closing := sc.outbox, sc.closing
		// Two batches take turns, their buffers reused: a fresh outbox for
		// every write was most of the garbage a busy connection made.
		sc.outbox, sc.spare = sc.spare, nil
		if sc.outbox == nil {
			sc.outbox = new(ipc.Batch)
		}
		sc.writing = batch.Len() > 0
		sc.writingBytes = batch.Size()
		sc.omu.Unlock()
		if batch.Len() > 0 {
			sc.nc.SetWriteDeadline(time.Now().Add(sc.s.o.WriteTimeout))
			if err := sc.c.WriteEncoded(batch); err != nil {
				sc.writeFailed(err)
			}
		}
		batch.Reset()
		sc.omu.Lock()
		if batch.Capacity() <= maxSpareBytes {
			sc.spare = batch
		}
		sc.writing, sc.writingBytes = false, 0
		sc.obytes = sc.outbox.Size()
		sc.signalRoomLocked()
		more := sc.outbox.Len() > 0
		sc.omu.Unlock()
		if more {
			sc.kick()
		}
		if closing {
			return
		}
	}
}

// identity is the peer's account, looked up once.
func (sc *serverConn) identity() *Identity {
	sc.peerOnce.Do(func() {
		id := LookupIdentity(sc.uid, sc.gid)
		sc.peer = &id
	})
	return sc.peer
}

func (sc *serverConn) submit(h ipc.Header, payload []byte) {
	p, err := sc.s.sup.Pool(h.Pool)
	if err != nil {
		sc.reject(h.ID, ipc.RejectUnknownPool, err.Error())
		return
	}
	sc.mu.Lock()
	_, live := sc.tasks[h.ID]
	if _, pending := sc.pending[h.ID]; live || pending {
		sc.mu.Unlock()
		sc.reject(h.ID, ipc.RejectInvalid, "id is still live on this connection")
		return
	}
	ct := &connTask{}
	sc.pending[h.ID] = ct
	sc.countTasksLocked()
	sc.pools[p] = true
	if h.Hold {
		sc.heldN++
		sc.heldBytes += int64(len(payload))
	}
	sc.mu.Unlock()
	spec := Spec{
		Payload: payload, Argv: h.Argv, Env: h.Env, Priority: h.Priority,
		Timeout: time.Duration(h.TimeoutMS) * time.Millisecond, QueueTimeout: time.Duration(h.QueueTimeoutMS) * time.Millisecond,
		MemoryMax: h.MemoryMax, Client: sc.client, Hold: h.Hold, Peer: sc.identity(), Affinity: h.Affinity,
	}
	stream := h.StreamOutput && p.cfg.Kind == KindExec // worker pools: their answer is the output
	if h.Cwd != "" || h.MaxOutput != 0 || stream {
		spec.IO = &ExecIO{Dir: h.Cwd, MaxOutput: h.MaxOutput}
		if stream {
			spec.IO.Output = sc.outputFunc(h.ID)
		}
	}
	if !h.Hold {
		sc.enter(context.Background(), h.ID, p, ct, &spec)
		return
	}
	// Only a held submission can be cancelled before the pool has it. Its
	// spec is copied for the closure, so that the common path's stays off
	// the heap (garbage beside every queued task).
	ctx, cancel := context.WithCancel(context.Background())
	ct.cancel = cancel
	id, held := h.ID, spec
	sc.hold(func() { sc.enter(ctx, id, p, ct, &held) })
}

func (sc *serverConn) reject(id uint64, reason, msg string) {
	sc.write(ipc.Frame{Header: ipc.Header{Type: ipc.TypeRejected, ID: id, Reason: reason, Message: msg}})
}

func (sc *serverConn) countTasksLocked() { sc.nTasks.Store(int32(len(sc.tasks) + len(sc.pending))) }

// notifier is how a task's events reach its connection: they wait behind
// "accepted" while the submission is pending, and are queued in order
// after it. It captures only what it needs (a queued task's closure is
// part of what a backlog costs).
func (sc *serverConn) notifier(id uint64) func(Event) {
	return func(e Event) {
		sc.mu.Lock()
		defer sc.mu.Unlock()
		if ct := sc.pending[id]; ct != nil {
			ct.early = append(ct.early, e)
			return
		}
		sc.writeEventLocked(id, e)
	}
}

// enter submits a pending submission to its pool (a held one waits there
// for room, until ctx ends) and answers: "accepted" and whatever happened
// to the task meanwhile, or its refusal; and a cancel that came while it
// was held.
func (sc *serverConn) enter(ctx context.Context, id uint64, p *Pool, ct *connTask, spec *Spec) {
	var t *Task
	err := ctx.Err() // cancelled while waiting its turn among the held
	sc.mu.Lock()
	if sc.gone {
		err = context.Canceled
	}
	sc.mu.Unlock()
	if err == nil {
		t, err = p.Submit(ctx, *spec, sc.notifier(id))
	}
	if ct.cancel != nil {
		ct.cancel() // the hold is over; a later cancel goes to the pool
	}
	sc.mu.Lock()
	if spec.Hold {
		sc.heldN--
		sc.heldBytes -= int64(len(spec.Payload))
		sc.openGate()
	}
	req := ct.cancelReq
	delete(sc.pending, id)
	if err != nil {
		sc.countTasksLocked()
		sc.mu.Unlock()
		if ctx.Err() != nil && errors.Is(err, context.Canceled) {
			if req != nil {
				sc.write(ipc.Frame{Header: ipc.Header{Type: ipc.TypeCancelReply, ID: id, OK: true, State: ipc.StateQueued}})
			}
			sc.write(ipc.Frame{Header: ipc.Header{Type: ipc.TypeCancelled, ID: id, Message: "cancelled while waiting for room in the backlog"}})
			return
		}
		var re *RejectError
		reason := ipc.RejectInvalid
		if errors.As(err, &re) {
			reason = re.Reason
		}
		if req != nil {
			sc.write(ipc.Frame{Header: ipc.Header{Type: ipc.TypeCancelReply, ID: id, State: ipc.StateDone}})
		}
		sc.reject(id, reason, err.Error())
		return
	}
	// "accepted", then what happened to the task meanwhile, in order, all
	// queued under sc.mu so that no later event overtakes them.
	sc.tasks[id] = t
	sc.countTasksLocked()
	accepted := ipc.Frame{Header: ipc.Header{Type: ipc.TypeAccepted, ID: id}}
	if early := ct.early; len(early) == 1 && early[0].Running {
		// Started at once: both may wait a little for the answer.
		sc.writeLazy(accepted, ipc.Frame{Header: ipc.Header{Type: ipc.TypeRunning, ID: id, PID: early[0].Pid, Leaf: early[0].Leaf}})
	} else {
		sc.write(accepted)
		for _, e := range early {
			sc.writeEventLocked(id, e)
		}
	}
	if spec.IO != nil && spec.IO.Output != nil {
		sc.openGate() // its output waits for "accepted"
	}
	sc.mu.Unlock()
	if req != nil { // a cancel came while the submission was held
		sc.answerCancel(req, t)
	}
}

// outputFunc is the OutputFunc of a task submitted with stream_output:
// each chunk becomes an output frame, queued after "accepted" and before
// the outcome (the pool delivers the outcome once the output is read).
// It is the backpressure: while the client's outbox holds more than
// outputRoom it waits for the client to take its frames, and the command
// stalls on its full pipe; the task's timeout still runs, and a kill or
// the connection's end lets it go. It runs on the pool's pipe readers,
// never on a slot's own goroutine, and the frame is queued at once
// (write never blocks; the outbox keeps payloads by reference, so the
// chunk is copied: the reader reuses its buffer).
func (sc *serverConn) outputFunc(id uint64) OutputFunc {
	return func(s Stream, p []byte, abort <-chan struct{}) error {
		for {
			sc.gmu.Lock()
			gate := sc.gate
			sc.gmu.Unlock()
			sc.mu.Lock()
			_, pending := sc.pending[id] // "accepted" is not queued yet
			sc.mu.Unlock()
			sc.omu.Lock()
			closing, full := sc.closing, sc.obytes > outputRoom
			sc.omu.Unlock()
			if closing {
				return ErrClientGone
			}
			if !full && !pending {
				break
			}
			select {
			case <-gate:
			case <-abort:
				return errAborted
			}
		}
		stream := ipc.StreamStdout
		if s == Stderr {
			stream = ipc.StreamStderr
		}
		sc.write(ipc.Frame{Header: ipc.Header{Type: ipc.TypeOutput, ID: id, Stream: stream}, Payload: bytes.Clone(p)})
		return nil
	}
}

// outputRoom is the outbox size past which streamed output waits: far
// below the read bound, so that output alone never stops the reader (a
// client that is slow to take its output can still cancel), and small,
// so that relaying any amount of output costs the daemon about this much
// memory a connection. A few socket buffers' worth keeps the pipe full.
const outputRoom = 1 << 20

// errAborted: the task was killed and its output is no longer wanted.
var errAborted = errors.New("pool: the task was killed; its output is dropped")

// writeEventLocked queues the frame of one of a task's events; the final
// one also forgets the task. sc.mu must be held.
func (sc *serverConn) writeEventLocked(id uint64, e Event) {
	if e.Running {
		sc.write(ipc.Frame{Header: ipc.Header{Type: ipc.TypeRunning, ID: id, PID: e.Pid, Leaf: e.Leaf}})
		return
	}
	sc.forgetLocked(id)
	oh, op := outcomeFrame(id, e.Outcome)
	sc.write(ipc.Frame{Header: oh, Payload: op})
}

// hold queues a held submission. Held submissions enter the backlog in
// arrival order (docs/protocol.md 3.1 rule 5): one goroutine per
// connection, started when the first is held and ending when none is
// left, takes them one after the other, so the reader goes on serving.
func (sc *serverConn) hold(do func()) {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	sc.held = append(sc.held, do)
	if sc.holdDone != nil {
		return
	}
	done := make(chan struct{})
	sc.holdDone = done
	sc.s.wg.Add(1)
	go func() {
		defer sc.s.wg.Done()
		defer close(done)
		for {
			sc.mu.Lock()
			if len(sc.held) == 0 {
				sc.holdDone = nil
				sc.mu.Unlock()
				return
			}
			next := sc.held[0]
			sc.held = sc.held[1:]
			sc.mu.Unlock()
			next()
		}
	}()
}

func (sc *serverConn) forgetLocked(id uint64) {
	delete(sc.tasks, id)
	sc.countTasksLocked()
}

// cancel serves a cancel request. Ids are per connection, so a peer can
// only ever cancel its own submissions. A submission still held (or being
// submitted by the hold goroutine) is answered once its fate is known: the
// hold goroutine either ends it cancelled, or, if the pool took it
// meanwhile, cancels it there and answers with what the pool says.
func (sc *serverConn) cancel(h ipc.Header) {
	sc.mu.Lock()
	t, ct := sc.tasks[h.ID], sc.pending[h.ID]
	switch {
	case t != nil:
		sc.mu.Unlock()
		sc.answerCancel(&h, t)
	case ct != nil && ct.cancel != nil:
		ct.cancelReq = &h
		sc.mu.Unlock()
		ct.cancel() // a held submission: it ends with "cancelled", unless the pool has it already
	default:
		// Finished, or never submitted here: the connection keeps no
		// history, so both read "unknown" unless the id is live. (A
		// pending submission that is not held is one the reader is still
		// submitting: it cannot have read this cancel yet.)
		sc.mu.Unlock()
		sc.write(ipc.Frame{Header: ipc.Header{Type: ipc.TypeCancelReply, ID: h.ID, State: ipc.StateUnknown}})
	}
}

func (sc *serverConn) answerCancel(h *ipc.Header, t *Task) {
	reply := ipc.Header{Type: ipc.TypeCancelReply, ID: h.ID}
	reply.OK, reply.State = t.pool.Cancel(t.ID(), h.Mode == ipc.CancelHard)
	sc.write(ipc.Frame{Header: reply})
}

func (sc *serverConn) report(h ipc.Header) {
	s := sc.s
	value := func(p *Pool) any {
		if h.Type == ipc.TypeStats {
			return p.Stats()
		}
		st := p.Status()
		if !sc.admin {
			st.redact(sc.uid)
		}
		return st
	}
	var doc any
	if h.Pool != "" {
		p, err := s.sup.Pool(h.Pool)
		if err != nil {
			sc.writeErr(h.ID, ipc.CodeUnknownPool, err.Error())
			return
		}
		doc = value(p)
	} else {
		all := map[string]any{}
		for _, n := range s.sup.Pools() {
			p, _ := s.sup.Pool(n)
			all[n] = value(p)
		}
		doc = all
	}
	b, err := json.Marshal(doc)
	if err != nil {
		sc.writeErr(h.ID, ipc.CodeInternal, err.Error())
		return
	}
	if h.Type == ipc.TypeStats {
		sc.write(ipc.Frame{Header: ipc.Header{Type: ipc.TypeStatsReply, ID: h.ID, Stats: b}})
	} else {
		sc.write(ipc.Frame{Header: ipc.Header{Type: ipc.TypeStatusReply, ID: h.ID, Status: b}})
	}
}

// disconnected applies each pool's disconnect policy to this client: no
// held submission enters a pool after it (the hold goroutine is waited
// for), so the policy sees every task of the client.
func (sc *serverConn) disconnected() {
	sc.mu.Lock()
	sc.gone = true
	for _, ct := range sc.pending {
		if ct.cancel != nil {
			ct.cancel()
		}
	}
	done := sc.holdDone
	sc.mu.Unlock()
	if done != nil {
		<-done
	}
	sc.mu.Lock()
	pools := sc.pools
	sc.pools = map[*Pool]bool{}
	sc.mu.Unlock()
	for p := range pools {
		p.ForgetClient(sc.client)
	}
}

// wireReason names a process error's reason on the wire: the one place
// where oomwatch's and the pool's reasons meet the protocol's names.
func wireReason(r oomwatch.Reason) string {
	switch r {
	case oomwatch.OOM:
		return ipc.ProcessOOM
	case oomwatch.Killed:
		return ipc.ProcessKilled
	case ReasonLost:
		return ipc.ProcessLost
	case OutputLimit:
		return ipc.ProcessOutputLimit
	case NotFound:
		return ipc.ProcessNotFound
	case NotExecutable:
		return ipc.ProcessNotExecutable
	}
	return ipc.ProcessCrashed
}

// outcomeFrame encodes a terminal outcome for the client protocol.
func outcomeFrame(id uint64, o *Outcome) (ipc.Header, []byte) {
	h := ipc.Header{ID: id, PID: o.Pid, Leaf: o.Leaf}
	switch o.Kind {
	case Result:
		h.Type = ipc.TypeResult
		if o.Stdout != nil || o.Stderr != nil || o.ExitCode != 0 {
			h.ExitCode = o.ExitCode
			h.StdoutLen = int64(len(o.Stdout))
			h.StdoutTruncated, h.StderrTruncated = o.StdoutTruncated, o.StderrTruncated
			return h, append(append(make([]byte, 0, len(o.Stdout)+len(o.Stderr)), o.Stdout...), o.Stderr...)
		}
		return h, o.Payload
	case TaskError:
		h.Type, h.Message, h.Traceback = ipc.TypeTaskError, o.Message, o.Traceback
		return h, o.Payload
	case TimedOut:
		h.Type, h.TimeoutMS, h.Message = ipc.TypeTimeout, o.Timeout.Milliseconds(), o.Message
	case ProcessError:
		h.Type, h.Reason, h.Signal, h.ExitCode, h.MemoryPeak, h.Message = ipc.TypeProcessError, wireReason(o.Reason), o.Signal, o.ExitCode, o.MemoryPeak, o.Message
	case Cancelled:
		h.Type, h.Message = ipc.TypeCancelled, o.Message
	case QueueTimeout:
		h.Type, h.Message = ipc.TypeQueueTimeout, o.Message
	}
	return h, nil
}
