package ipc

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"math"
	"sync"
	"sync/atomic"
	"syscall"
)

// Frame limits.
const (
	// MaxHeader is the largest header length, in bytes, that a frame may
	// announce or carry. It is fixed by the protocol.
	MaxHeader = 64 << 10
	// DefaultMaxPayload is the payload limit of a Conn whose Options leave
	// MaxPayload at 0.
	DefaultMaxPayload = 64 << 20
	// prefixLen is the length of the two big-endian uint32 length fields.
	prefixLen = 8
	// directAlloc: payloads up to this size are allocated in one piece;
	// larger ones grow as their bytes actually arrive, so that a peer that
	// announces a large payload and then stalls or disconnects does not make
	// us allocate the whole announced size.
	directAlloc = 256 << 10
	bufSize     = 32 << 10
)

// Options configure a [Conn]. The zero value is valid.
type Options struct {
	// MaxPayload is the largest payload, in bytes, that the Conn reads or
	// writes. 0 (or negative) means DefaultMaxPayload; values above
	// math.MaxUint32 (the wire limit) are lowered to it. Both ends of a
	// connection should use the same limit.
	MaxPayload int64
	// BufferSize is the size of each of the Conn's read and write buffers;
	// 0 means 32 KiB. A server with many mostly idle connections uses less
	// (each connection holds both buffers for its life).
	BufferSize int
}

// Conn reads and writes frames on a byte stream, usually a *net.UnixConn
// (client protocol) or the *os.File of an inherited socketpair (worker
// protocol).
//
// Concurrency: at most one goroutine may call Read at a time (it owns the
// read buffer). Write and WriteBatch may be called from any number of
// goroutines, concurrently with each other and with Read; frames are never
// interleaved. Close may be called at any time from any goroutine and
// unblocks pending Reads and Writes (by closing the underlying stream).
//
// Deadlines are not managed here: set them on the underlying connection. A
// Write that fails (including by a deadline) leaves the stream in an unknown
// state; every later Write returns the same error and the Conn should be
// closed.
type Conn struct {
	rw         io.ReadWriteCloser
	maxPayload atomic.Int64

	// Reader side, owned by the single reader goroutine. A Read cut short
	// by a deadline keeps what it got of the frame here (rn bytes of the
	// prefix, then hn of the header, then the payload read so far), and
	// the next Read goes on from there.
	r       *bufio.Reader
	pre     [prefixLen]byte
	hbuf    []byte
	rn, hn  int
	hl      uint32
	pl      int64
	partial []byte // payload read so far; nil until the header is decoded
	rh      Header // the decoded header of the frame being read

	// Writer side, guarded by wmu.
	wmu  sync.Mutex
	w    *bufio.Writer
	werr error
	// For TryWrite: the stream's raw socket (nil if it has none) and its
	// send buffer size, read once.
	raw    syscall.RawConn
	sndbuf int

	closed    atomic.Bool
	closeOnce sync.Once
	closeErr  error
}

// NewConn returns a Conn that reads and writes frames on rw. At most one
// Options value may be given; without it the defaults apply. The Conn owns
// rw from now on: Close closes it, and the caller must not read from or
// write to rw directly (setting deadlines is fine). NewConn does not block
// and does no I/O.
func NewConn(rw io.ReadWriteCloser, opts ...Options) *Conn {
	var o Options
	if len(opts) > 0 {
		o = opts[len(opts)-1]
	}
	size := bufSize
	if o.BufferSize > 0 {
		size = o.BufferSize
	}
	c := &Conn{
		rw: rw,
		r:  bufio.NewReaderSize(rw, size),
		w:  bufio.NewWriterSize(rw, size),
	}
	c.SetMaxPayload(o.MaxPayload)
	if sc, ok := rw.(syscall.Conn); ok {
		c.raw, _ = sc.SyscallConn()
	}
	return c
}

// SetMaxPayload changes the payload limit (see Options.MaxPayload; n <= 0
// restores the default). It is safe to call concurrently with Read and
// Write; a frame already being read keeps the limit it was checked against.
func (c *Conn) SetMaxPayload(n int64) {
	if n <= 0 {
		n = DefaultMaxPayload
	}
	if n > math.MaxUint32 {
		n = math.MaxUint32
	}
	c.maxPayload.Store(n)
}

// MaxPayload returns the current payload limit in bytes.
func (c *Conn) MaxPayload() int64 { return c.maxPayload.Load() }

// Read blocks until one whole frame has arrived and returns its header and
// payload. The Header and the payload slice are freshly allocated and owned
// by the caller (the payload is nil when the frame has none); Read keeps no
// reference to them.
//
// A Read that fails with a deadline error (os.ErrDeadlineExceeded, set on
// the underlying stream) keeps the part of the frame it got, and the next
// Read goes on from there: a deadline can interrupt a reader at any time
// without putting the stream out of sync.
//
// Errors:
//   - io.EOF: the stream ended cleanly before the first byte of a frame;
//   - io.ErrUnexpectedEOF: the stream ended inside a frame;
//   - *FrameError (errors.As): a length broke a limit (errors.Is
//     ErrFrameTooLarge; nothing of the announced size was allocated), the
//     header length was 0, or the header is not a JSON object with a
//     non-empty string "type". The stream is out of sync afterwards;
//   - ErrClosed: the Conn was closed;
//   - any other error of the underlying stream.
//
// Only one goroutine may call Read at a time.
func (c *Conn) Read() (Header, []byte, error) {
	if c.closed.Load() {
		return Header{}, nil, ErrClosed
	}
	for c.rn < prefixLen {
		n, err := c.r.Read(c.pre[c.rn:])
		c.rn += n
		if err != nil && c.rn < prefixLen {
			if c.rn == 0 && err == io.EOF {
				return Header{}, nil, io.EOF
			}
			return Header{}, nil, c.readErr(err)
		}
	}
	if c.hn == 0 && c.partial == nil {
		c.hl = binary.BigEndian.Uint32(c.pre[0:4])
		c.pl = int64(binary.BigEndian.Uint32(c.pre[4:8]))
		if c.hl == 0 {
			return Header{}, nil, &FrameError{Reason: FrameEmptyHeader}
		}
		if c.hl > MaxHeader {
			return Header{}, nil, &FrameError{Reason: FrameHeaderTooLarge, Size: int64(c.hl), Limit: MaxHeader, Err: ErrFrameTooLarge}
		}
		if max := c.maxPayload.Load(); c.pl > max {
			return Header{}, nil, &FrameError{Reason: FramePayloadTooLarge, Size: c.pl, Limit: max, Err: ErrFrameTooLarge}
		}
		if cap(c.hbuf) < int(c.hl) {
			c.hbuf = make([]byte, max(int(c.hl), 512))
		}
	}
	if c.partial == nil {
		hb := c.hbuf[:c.hl]
		for c.hn < len(hb) {
			n, err := c.r.Read(hb[c.hn:])
			c.hn += n
			if err != nil && c.hn < len(hb) {
				return Header{}, nil, c.readErr(err)
			}
		}
		c.rh = Header{}
		if err := decodeHeader(hb, &c.rh); err != nil {
			return Header{}, nil, err
		}
		// Up to directAlloc the payload is allocated at once; beyond, it
		// grows (doubling) only as bytes arrive, so that a peer that
		// announces a large payload and stalls does not make us allocate
		// all of it.
		c.partial = make([]byte, 0, min(c.pl, directAlloc))
	}
	for int64(len(c.partial)) < c.pl {
		if len(c.partial) == cap(c.partial) {
			nb := make([]byte, len(c.partial), min(int64(2*cap(c.partial)), c.pl))
			copy(nb, c.partial)
			c.partial = nb
		}
		n, err := c.r.Read(c.partial[len(c.partial):cap(c.partial)])
		c.partial = c.partial[:len(c.partial)+n]
		if err != nil && int64(len(c.partial)) < c.pl {
			return Header{}, nil, c.readErr(err)
		}
	}
	h, payload := c.rh, c.partial
	if c.pl == 0 {
		payload = nil
	}
	c.rn, c.hn, c.partial, c.rh = 0, 0, nil, Header{}
	return h, payload, nil
}

// decodeHeader parses b into h and enforces the header rules.
func decodeHeader(b []byte, h *Header) error {
	if err := json.Unmarshal(b, h); err != nil {
		return &FrameError{Reason: FrameBadHeader, Err: err}
	}
	if h.Type == "" {
		return &FrameError{Reason: FrameBadHeader, Err: errors.New(`missing or empty "type"`)}
	}
	return nil
}

func (c *Conn) readErr(err error) error {
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	if c.closed.Load() && err != io.ErrUnexpectedEOF {
		return ErrClosed
	}
	return err
}

// encoder turns headers into prefix+JSON bytes. Pooled: encoding happens
// outside the write lock so that concurrent writers encode in parallel.
type encoder struct {
	buf bytes.Buffer
	enc *json.Encoder
}

var encPool = sync.Pool{New: func() any {
	e := &encoder{}
	e.enc = json.NewEncoder(&e.buf)
	e.enc.SetEscapeHTML(false)
	return e
}}

func getEncoder() *encoder { return encPool.Get().(*encoder) }

func putEncoder(e *encoder) {
	if e.buf.Cap() > 4*MaxHeader {
		return // let a huge batch buffer be collected
	}
	e.buf.Reset()
	encPool.Put(e)
}

// appendFrameHead appends the 8-byte prefix and the JSON header of h (for a
// payload of plen bytes) to e.buf. On error e.buf is restored.
func (e *encoder) appendFrameHead(h *Header, plen int, maxPayload int64) error {
	if h == nil || h.Type == "" {
		return &FrameError{Reason: FrameBadHeader, Err: errors.New(`missing or empty "type"`)}
	}
	if int64(plen) > maxPayload {
		return &FrameError{Reason: FramePayloadTooLarge, Size: int64(plen), Limit: maxPayload, Err: ErrFrameTooLarge}
	}
	start := e.buf.Len()
	var zero [prefixLen]byte
	e.buf.Write(zero[:])
	if err := e.enc.Encode(h); err != nil {
		e.buf.Truncate(start)
		return &FrameError{Reason: FrameBadHeader, Err: err}
	}
	e.buf.Truncate(e.buf.Len() - 1) // Encode's trailing newline
	b := e.buf.Bytes()[start:]
	hl := len(b) - prefixLen
	if hl > MaxHeader {
		e.buf.Truncate(start)
		return &FrameError{Reason: FrameHeaderTooLarge, Size: int64(hl), Limit: MaxHeader, Err: ErrFrameTooLarge}
	}
	binary.BigEndian.PutUint32(b[0:4], uint32(hl))
	binary.BigEndian.PutUint32(b[4:8], uint32(plen))
	return nil
}

// Write encodes one frame and writes it, flushing before it returns. It
// blocks until the frame has been handed to the underlying stream (or
// failed). It does not modify h or payload and keeps no reference to them
// after returning. Safe for concurrent use; frames from concurrent calls
// are never interleaved.
//
// Errors: *FrameError if h has no Type, cannot be encoded, encodes to more
// than MaxHeader bytes, or payload is longer than MaxPayload (nothing is
// written and the Conn stays usable); ErrClosed after Close; otherwise the
// underlying stream's error, which is sticky.
func (c *Conn) Write(h *Header, payload []byte) error {
	e := getEncoder()
	defer putEncoder(e)
	if err := e.appendFrameHead(h, len(payload), c.maxPayload.Load()); err != nil {
		return err
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if err := c.writeCheck(); err != nil {
		return err
	}
	c.w.Write(e.buf.Bytes())
	c.w.Write(payload)
	return c.flushLocked()
}

// WriteBatch writes several frames, in order, with a single flush: with
// many small frames this costs one write system call instead of one per
// frame. All headers are encoded and checked first; if any is invalid
// (see Write) nothing is written and its *FrameError is returned. Otherwise
// the frames are written back to back, never interleaved with frames of
// concurrent writers. Blocking, ownership and errors are as for Write. An
// empty batch writes nothing and returns nil (or ErrClosed).
func (c *Conn) WriteBatch(frames []Frame) error {
	if len(frames) == 0 {
		if c.closed.Load() {
			return ErrClosed
		}
		return nil
	}
	e := getEncoder()
	defer putEncoder(e)
	ends := make([]int, len(frames))
	max := c.maxPayload.Load()
	for i := range frames {
		if err := e.appendFrameHead(&frames[i].Header, len(frames[i].Payload), max); err != nil {
			return err
		}
		ends[i] = e.buf.Len()
	}
	b := e.buf.Bytes()
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if err := c.writeCheck(); err != nil {
		return err
	}
	start := 0
	for i := range frames {
		c.w.Write(b[start:ends[i]])
		c.w.Write(frames[i].Payload)
		start = ends[i]
	}
	return c.flushLocked()
}

// TryWrite writes one frame, as Write does, but only if that cannot block:
// no other write is under way and the stream is a socket whose send buffer
// has room for the whole frame now. It reports whether it wrote. When it
// returns false with a nil error nothing was written, and the caller should
// send the frame some other way (a writer of its own that may block). A
// goroutine that must never wait for a slow reader uses it for the common
// case and hands the rest over. Errors are as for Write.
func (c *Conn) TryWrite(h *Header, payload []byte) (bool, error) {
	return c.TryWriteBatch([]Frame{{Header: *h, Payload: payload}})
}

// TryWriteBatch is WriteBatch on the terms of TryWrite: all the frames in
// one write, or none.
func (c *Conn) TryWriteBatch(frames []Frame) (bool, error) {
	if c.raw == nil || len(frames) == 0 {
		return false, nil
	}
	if !c.wmu.TryLock() {
		return false, nil
	}
	defer c.wmu.Unlock()
	if err := c.writeCheck(); err != nil {
		return false, err
	}
	if c.w.Buffered() > 0 {
		return false, nil
	}
	e := getEncoder()
	defer putEncoder(e)
	ends := make([]int, len(frames))
	max := c.maxPayload.Load()
	size := 0
	for i := range frames {
		if err := e.appendFrameHead(&frames[i].Header, len(frames[i].Payload), max); err != nil {
			return false, err
		}
		ends[i] = e.buf.Len()
		size += len(frames[i].Payload)
	}
	if !c.roomFor(e.buf.Len() + size) {
		return false, nil
	}
	b, start := e.buf.Bytes(), 0
	for i := range frames {
		c.w.Write(b[start:ends[i]])
		c.w.Write(frames[i].Payload)
		start = ends[i]
	}
	return true, c.flushLocked()
}

// tryWriteSlack is the send-buffer room TryWrite leaves beyond the frame
// itself: the kernel charges each of its buffers some overhead, and a
// concurrent Write may add a small frame between the check and the write.
const tryWriteSlack = 64 << 10

func (c *Conn) writeCheck() error {
	if c.closed.Load() {
		return ErrClosed
	}
	return c.werr
}

func (c *Conn) flushLocked() error {
	if err := c.w.Flush(); err != nil {
		if c.closed.Load() {
			err = ErrClosed
		}
		c.werr = err
		return err
	}
	return nil
}

// Close closes the underlying stream, which unblocks a pending Read or
// Write. It is idempotent and safe for concurrent use: the first call
// returns the underlying Close error, later calls return nil. Frames
// already returned by Write have been flushed; nothing else is sent.
func (c *Conn) Close() error {
	first := false
	c.closeOnce.Do(func() {
		first = true
		c.closed.Store(true)
		c.closeErr = c.rw.Close()
	})
	if first {
		return c.closeErr
	}
	return nil
}
