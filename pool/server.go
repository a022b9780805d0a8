package pool

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/cgpool/cgpool/ipc"
)

// Server speaks the client protocol (docs/protocol.md) on a listener and
// drives a Supervisor.
type Server struct {
	sup  *Supervisor
	ln   *ipc.Listener
	log  *slog.Logger
	name string

	mu         sync.Mutex
	conns      map[*serverConn]struct{}
	nextClient uint64
	shutdown   chan ShutdownOptions // a client asked for a shutdown, and it was done
	wg         sync.WaitGroup
}

// NewServer returns a server for sup on ln. It starts nothing; Serve does.
func NewServer(sup *Supervisor, ln *ipc.Listener, log *slog.Logger) *Server {
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return &Server{sup: sup, ln: ln, log: log, name: "cgpool", conns: map[*serverConn]struct{}{}, shutdown: make(chan ShutdownOptions, 1)}
}

// ShutdownRequested delivers the options of a shutdown a client asked for,
// once the supervisor's pools have been told (and, with Wait, are gone).
func (s *Server) ShutdownRequested() <-chan ShutdownOptions { return s.shutdown }

// Serve accepts connections until ctx ends or the listener fails, then
// closes the listener and every connection and returns after all their
// goroutines have ended. It returns nil when ctx ended.
func (s *Server) Serve(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() { s.ln.Close() })
	defer stop()
	var err error
	for {
		var c *net.UnixConn
		c, err = s.ln.Accept()
		if err != nil {
			break
		}
		sc := &serverConn{s: s, c: ipc.NewConn(c), tasks: map[uint64]*connTask{}, pools: map[*Pool]bool{},
			wake: make(chan struct{}, 1), writerDone: make(chan struct{})}
		sc.lazy = time.AfterFunc(time.Hour, sc.lazyDue)
		sc.lazy.Stop()
		s.mu.Lock()
		s.nextClient++
		sc.client = s.nextClient
		s.conns[sc] = struct{}{}
		s.mu.Unlock()
		s.wg.Add(1)
		go sc.serve()
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

type serverConn struct {
	s      *Server
	c      *ipc.Conn
	client uint64

	mu      sync.Mutex
	tasks   map[uint64]*connTask // by client id, until the final message
	pools   map[*Pool]bool
	held    []func() // held submissions not yet taken, in arrival order
	holding bool     // a goroutine is taking them

	// The outbox decouples the pool from the client: a slot never blocks
	// on a client that reads slowly, and the writer sends whatever piled
	// up in one batch (one syscall for many results).
	omu        sync.Mutex
	outbox     []ipc.Frame
	writing    bool          // the writer is sending a batch taken from the outbox
	wake       chan struct{} // cap 1
	closing    bool
	writerDone chan struct{}
	lazy       *time.Timer // kicks the writer for frames that may wait (writeLazy)
	lazyArmed  bool
}

type connTask struct {
	pool     *Pool
	task     *Task              // nil while held
	cancel   context.CancelFunc // ends a hold
	accepted chan struct{}      // closed once "accepted" is written
	// Guarded by serverConn.mu: whether "accepted" is on its way, and a
	// Running event that came before it (a task that started at once),
	// which then goes out with "accepted" in one write.
	sent bool
	run  *Event
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
		s.mu.Unlock()
	}()
	if _, err := ipc.ServerHello(sc.c, ipc.Header{Server: s.name, Pools: s.sup.Pools()}); err != nil {
		s.log.Info("client refused at handshake", "client", sc.client, "err", err)
		return
	}
	for {
		h, payload, err := sc.c.Read()
		if err != nil {
			var fe *ipc.FrameError
			if errors.As(err, &fe) {
				s.log.Warn("disconnecting a client that sent a bad frame", "client", sc.client, "err", err)
				sc.write(&ipc.Header{Type: ipc.TypeError, Code: ipc.CodeProtocol, Message: err.Error()}, nil)
			}
			return
		}
		if err := h.ValidateRequest(); err != nil {
			if h.Type == ipc.TypeSubmit {
				sc.write(&ipc.Header{Type: ipc.TypeRejected, ID: h.ID, Reason: ipc.RejectInvalid, Message: err.Error()}, nil)
			} else {
				sc.write(&ipc.Header{Type: ipc.TypeError, ID: h.ID, Code: ipc.CodeInvalid, Message: err.Error()}, nil)
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
		case ipc.TypeSetEnv, ipc.TypeRecycle:
			p, err := s.sup.Pool(h.Pool)
			if err != nil {
				sc.write(&ipc.Header{Type: ipc.TypeError, ID: h.ID, Code: ipc.CodeUnknownPool, Message: err.Error()}, nil)
				continue
			}
			if h.Type == ipc.TypeSetEnv {
				p.SetEnv(h.Env, h.Replace)
			} else {
				p.Recycle()
			}
			sc.write(&ipc.Header{Type: ipc.TypeOK, ID: h.ID}, nil)
		case ipc.TypeShutdown:
			// Served in its own goroutine: with wait it blocks until the
			// pools are done, and this connection's outcomes must flow.
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				o := ShutdownOptions{Wait: h.Wait, CancelFutures: h.CancelFutures, Deadline: time.Duration(h.DeadlineMS) * time.Millisecond}
				err := s.sup.Shutdown(context.Background(), o)
				if err != nil {
					sc.write(&ipc.Header{Type: ipc.TypeError, ID: h.ID, Code: ipc.CodeInternal, Message: err.Error()}, nil)
				} else {
					sc.write(&ipc.Header{Type: ipc.TypeOK, ID: h.ID}, nil)
				}
				select {
				case s.shutdown <- o:
				default:
				}
			}()
		default:
			sc.write(&ipc.Header{Type: ipc.TypeError, ID: h.ID, Code: ipc.CodeProtocol, Message: "unexpected message type " + h.Type}, nil)
		}
	}
}

// writeNow writes a frame from the connection's own goroutines (its reader,
// a held submit): blocking on this client's socket stalls only this
// client, and it saves waking the writer. Frames from pool goroutines go
// through write.
func (sc *serverConn) writeNow(frames ...ipc.Frame) {
	if err := sc.c.WriteBatch(frames); err != nil && !errors.Is(err, ipc.ErrClosed) {
		sc.s.log.Debug("write to client failed", "client", sc.client, "err", err)
	}
}

// write sends a frame to the client without ever blocking on the socket.
// When the client has few tasks in flight, it writes at once from the
// calling goroutine, with whatever waits in the outbox before it, if the
// writer goroutine is not busy and the socket has room: waking the writer
// would cost more than the write. Otherwise the frame goes through the
// outbox, and the writer sends the frames that piled up meanwhile in one
// write (with many tasks in flight that batching is worth more).
func (sc *serverConn) write(h *ipc.Header, payload []byte) {
	sc.mu.Lock()
	quiet := len(sc.tasks) <= quietTasks
	sc.mu.Unlock()
	sc.omu.Lock()
	if sc.closing {
		sc.omu.Unlock()
		return // the client is gone
	}
	sc.outbox = append(sc.outbox, ipc.Frame{Header: *h, Payload: payload})
	if quiet && !sc.writing && len(sc.outbox) <= inlineFrames {
		ok, err := sc.c.TryWriteBatch(sc.outbox)
		if err != nil {
			sc.outbox = nil
			sc.omu.Unlock()
			sc.writeFailed(err)
			return
		}
		if ok {
			sc.outbox = nil
			sc.omu.Unlock()
			return
		}
	}
	sc.omu.Unlock()
	sc.kick()
}

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
	if sc.closing {
		return
	}
	sc.outbox = append(sc.outbox, frames...)
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
	if errors.As(err, &fe) { // a frame of ours could not be encoded: a bug, not the client's fault
		sc.s.log.Error("could not encode a frame for a client", "client", sc.client, "err", err)
	} else {
		sc.s.log.Debug("write to client failed", "client", sc.client, "err", err)
	}
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
// queued before closing are still sent.
func (sc *serverConn) writer() {
	defer close(sc.writerDone)
	for range sc.wake {
		sc.omu.Lock()
		batch, closing := sc.outbox, sc.closing
		sc.outbox = nil
		sc.writing = len(batch) > 0
		sc.omu.Unlock()
		if len(batch) > 0 {
			if err := sc.c.WriteBatch(batch); err != nil {
				sc.writeFailed(err)
			}
			sc.omu.Lock()
			sc.writing = false
			more := len(sc.outbox) > 0
			sc.omu.Unlock()
			if more {
				sc.kick()
			}
		}
		if closing {
			return
		}
	}
}

func (sc *serverConn) submit(h ipc.Header, payload []byte) {
	p, err := sc.s.sup.Pool(h.Pool)
	if err != nil {
		sc.write(&ipc.Header{Type: ipc.TypeRejected, ID: h.ID, Reason: ipc.RejectUnknownPool, Message: err.Error()}, nil)
		return
	}
	sc.mu.Lock()
	if _, live := sc.tasks[h.ID]; live {
		sc.mu.Unlock()
		sc.write(&ipc.Header{Type: ipc.TypeRejected, ID: h.ID, Reason: ipc.RejectInvalid, Message: "id is still live on this connection"}, nil)
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	ct := &connTask{pool: p, cancel: cancel, accepted: make(chan struct{})}
	sc.tasks[h.ID] = ct
	sc.pools[p] = true
	sc.mu.Unlock()
	spec := Spec{
		Payload: payload, Argv: h.Argv, Dir: h.Cwd, Env: h.Env, Priority: h.Priority,
		Timeout: time.Duration(h.TimeoutMS) * time.Millisecond, QueueTimeout: time.Duration(h.QueueTimeoutMS) * time.Millisecond,
		MemoryMax: h.MemoryMax, Client: sc.client, Hold: h.Hold,
	}
	id := h.ID
	notify := func(e Event) {
		if e.Running {
			sc.mu.Lock()
			if !ct.sent { // it goes out with "accepted"
				ct.run = &e
				sc.mu.Unlock()
				return
			}
			sc.mu.Unlock()
		}
		<-ct.accepted // "accepted" goes out before anything else about the task
		if e.Running {
			sc.write(&ipc.Header{Type: ipc.TypeRunning, ID: id, PID: e.Pid, Leaf: e.Leaf}, nil)
			return
		}
		sc.forget(id)
		oh, op := outcomeFrame(id, e.Outcome)
		sc.write(&oh, op)
	}
	do := func() {
		var t *Task
		err := ctx.Err() // cancelled while waiting its turn among the held
		if err == nil {
			t, err = p.Submit(ctx, spec, notify)
		}
		if err != nil {
			sc.forget(id)
			held := ctx.Err() != nil
			cancel()
			if held {
				sc.write(&ipc.Header{Type: ipc.TypeCancelled, ID: id, Message: "cancelled while waiting for room in the backlog"}, nil)
				return
			}
			var re *RejectError
			reason := ipc.RejectInvalid
			if errors.As(err, &re) {
				reason = re.Reason
			}
			sc.write(&ipc.Header{Type: ipc.TypeRejected, ID: id, Reason: reason, Message: err.Error()}, nil)
			return
		}
		sc.mu.Lock()
		ct.task, ct.sent = t, true
		run := ct.run
		sc.mu.Unlock()
		cancel() // the hold is over; a later cancel goes to the pool
		accepted := ipc.Frame{Header: ipc.Header{Type: ipc.TypeAccepted, ID: id}}
		if run != nil { // started at once: both may wait for the answer
			sc.writeLazy(accepted, ipc.Frame{Header: ipc.Header{Type: ipc.TypeRunning, ID: id, PID: run.Pid, Leaf: run.Leaf}})
		} else {
			sc.writeNow(accepted)
		}
		close(ct.accepted)
	}
	if h.Hold {
		sc.hold(do)
		return
	}
	do()
}

// hold queues a held submission. Held submissions enter the backlog in
// arrival order (docs/protocol.md 3.1 rule 5): one goroutine per
// connection, started when the first is held and ending when none is
// left, takes them one after the other, so the reader goes on serving.
func (sc *serverConn) hold(do func()) {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	sc.held = append(sc.held, do)
	if sc.holding {
		return
	}
	sc.holding = true
	sc.s.wg.Add(1)
	go func() {
		defer sc.s.wg.Done()
		for {
			sc.mu.Lock()
			if len(sc.held) == 0 {
				sc.holding = false
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

func (sc *serverConn) forget(id uint64) {
	sc.mu.Lock()
	if ct := sc.tasks[id]; ct != nil {
		delete(sc.tasks, id)
	}
	sc.mu.Unlock()
}

func (sc *serverConn) cancel(h ipc.Header) {
	sc.mu.Lock()
	ct := sc.tasks[h.ID]
	sc.mu.Unlock()
	reply := ipc.Header{Type: ipc.TypeCancelReply, ID: h.ID, State: ipc.StateUnknown}
	switch {
	case ct == nil:
		// Finished, or never submitted here: the connection keeps no
		// history, so both read "unknown" unless the id is live.
	case ct.task == nil:
		ct.cancel() // a held submission: it ends with "cancelled"
		reply.OK, reply.State = true, ipc.StateQueued
	default:
		reply.OK, reply.State = ct.pool.Cancel(ct.task.ID(), h.Mode == ipc.CancelHard)
	}
	sc.write(&reply, nil)
}

func (sc *serverConn) report(h ipc.Header) {
	s := sc.s
	value := func(p *Pool) any {
		if h.Type == ipc.TypeStats {
			return p.Stats()
		}
		return p.Status()
	}
	var doc any
	if h.Pool != "" {
		p, err := s.sup.Pool(h.Pool)
		if err != nil {
			sc.write(&ipc.Header{Type: ipc.TypeError, ID: h.ID, Code: ipc.CodeUnknownPool, Message: err.Error()}, nil)
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
		sc.write(&ipc.Header{Type: ipc.TypeError, ID: h.ID, Code: ipc.CodeInternal, Message: err.Error()}, nil)
		return
	}
	if h.Type == ipc.TypeStats {
		sc.write(&ipc.Header{Type: ipc.TypeStatsReply, ID: h.ID, Stats: b}, nil)
	} else {
		sc.write(&ipc.Header{Type: ipc.TypeStatusReply, ID: h.ID, Status: b}, nil)
	}
}

// disconnected applies each pool's disconnect policy to this client.
func (sc *serverConn) disconnected() {
	sc.mu.Lock()
	for _, ct := range sc.tasks {
		if ct.task == nil {
			ct.cancel()
		}
	}
	pools := sc.pools
	sc.pools = map[*Pool]bool{}
	sc.mu.Unlock()
	for p := range pools {
		p.ForgetClient(sc.client)
	}
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
		h.Type, h.Reason, h.Signal, h.ExitCode, h.MemoryPeak, h.Message = ipc.TypeProcessError, string(o.Reason), o.Signal, o.ExitCode, o.MemoryPeak, o.Message
	case Cancelled:
		h.Type, h.Message = ipc.TypeCancelled, o.Message
	case QueueTimeout:
		h.Type, h.Message = ipc.TypeQueueTimeout, o.Message
	}
	return h, nil
}
