package ipc

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// socketpair returns the two ends of a real unix stream socketpair.
func socketpair(t testing.TB) (*net.UnixConn, *net.UnixConn) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	var conns [2]*net.UnixConn
	for i, fd := range fds {
		f := os.NewFile(uintptr(fd), fmt.Sprintf("socketpair-%d", i))
		c, err := net.FileConn(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		conns[i] = c.(*net.UnixConn)
		t.Cleanup(func() { conns[i].Close() })
	}
	return conns[0], conns[1]
}

// payloadFor is a deterministic payload for frame id.
func payloadFor(id uint64) []byte {
	n := int(id*7919) % 9000
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(id) ^ byte(i)
	}
	return b
}

func TestConcurrentWriters(t *testing.T) {
	a, b := socketpair(t)
	w := NewConn(a)
	r := NewConn(b)
	const writers, perWriter = 8, 300
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for g := range writers {
		wg.Go(func() {
			for i := 0; i < perWriter; {
				id := uint64(g)<<32 | uint64(i+1)
				if i%10 == 9 { // every tenth time, a batch of 3
					var batch []Frame
					for k := range 3 {
						id := uint64(g)<<32 | uint64(i+1+k)
						batch = append(batch, Frame{Header: Header{Type: TypeResult, ID: id, Message: fmt.Sprint(id)}, Payload: payloadFor(id)})
					}
					if err := w.WriteBatch(batch); err != nil {
						errs <- err
						return
					}
					i += 3
					continue
				}
				if err := w.Write(&Header{Type: TypeResult, ID: id, Message: fmt.Sprint(id)}, payloadFor(id)); err != nil {
					errs <- err
					return
				}
				i++
			}
		})
	}
	next := make([]uint64, writers)
	total := 0
	for g := range next {
		next[g] = 1
	}
	// Count what each writer sends: the same loop without I/O.
	want := 0
	for range writers {
		for i := 0; i < perWriter; {
			if i%10 == 9 {
				want += 3
				i += 3
			} else {
				want++
				i++
			}
		}
	}
	for total < want {
		h, p, err := r.Read()
		if err != nil {
			t.Fatalf("after %d frames: %v", total, err)
		}
		g, seq := h.ID>>32, h.ID&0xffffffff
		if g >= writers || seq != next[g] {
			t.Fatalf("frame %d: id %x out of order (want seq %d)", total, h.ID, next[g])
		}
		next[g]++
		if h.Message != fmt.Sprint(h.ID) || !bytes.Equal(p, payloadFor(h.ID)) {
			t.Fatalf("frame %x corrupted", h.ID)
		}
		total++
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

func TestCloseIdempotentAndErrClosed(t *testing.T) {
	a, b := socketpair(t)
	c := NewConn(a)
	peer := NewConn(b)
	done := make(chan error, 1)
	go func() { _, _, err := c.Read(); done <- err }()
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := <-done; !errors.Is(err, ErrClosed) {
		t.Fatalf("Read pending during Close: %v", err)
	}
	if _, _, err := c.Read(); !errors.Is(err, ErrClosed) || !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Read after Close: %v", err)
	}
	if err := c.Write(&Header{Type: TypeOK}, nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("Write after Close: %v", err)
	}
	if err := c.WriteBatch(nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("WriteBatch after Close: %v", err)
	}
	// The peer sees a clean EOF.
	if _, _, err := peer.Read(); err != io.EOF {
		t.Fatalf("peer: %v", err)
	}
}

func TestWriteErrorIsSticky(t *testing.T) {
	a, b := socketpair(t)
	c := NewConn(a)
	b.Close()
	var first error
	// The first write may still land in the socket buffer; keep writing
	// until the broken pipe shows.
	for range 1000 {
		if first = c.Write(&Header{Type: TypeOK}, make([]byte, 64<<10)); first != nil {
			break
		}
	}
	if first == nil {
		t.Fatal("no error writing to a closed peer")
	}
	if err := c.Write(&Header{Type: TypeOK}, nil); err != first {
		t.Fatalf("second error %v differs from first %v", err, first)
	}
}

func TestWorkerConnOverFile(t *testing.T) {
	// The worker side wraps the inherited fd 3 as an *os.File.
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	sup := NewConn(os.NewFile(uintptr(fds[0]), "supervisor"))
	wrk := NewConn(os.NewFile(uintptr(fds[1]), "fd3"))
	defer sup.Close()
	defer wrk.Close()
	if err := wrk.Write(&Header{Type: TypeHello, PID: os.Getpid(), Version: ProtocolVersion}, nil); err != nil {
		t.Fatal(err)
	}
	h, _, err := sup.Read()
	if err != nil || h.Type != TypeHello || h.PID != os.Getpid() {
		t.Fatalf("%+v %v", h, err)
	}
	if err := sup.Write(&Header{Type: TypeTask, ID: 5, TimeoutMS: 100}, []byte("in")); err != nil {
		t.Fatal(err)
	}
	h, p, err := wrk.Read()
	if err != nil || h.Type != TypeTask || h.ID != 5 || string(p) != "in" {
		t.Fatalf("%+v %q %v", h, p, err)
	}
}

func TestReadSequenceOfRawFrames(t *testing.T) {
	// Two frames in one buffer, second with an empty payload.
	var b []byte
	for _, hdr := range []string{`{"type":"a","id":1}`, `{"type":"b"}`} {
		b = binary.BigEndian.AppendUint32(b, uint32(len(hdr)))
		b = binary.BigEndian.AppendUint32(b, 2)
		b = append(b, hdr...)
		b = append(b, "pp"...)
	}
	c := readerConn(b)
	for _, want := range []string{"a", "b"} {
		h, p, err := c.Read()
		if err != nil || h.Type != want || string(p) != "pp" {
			t.Fatalf("%+v %q %v", h, p, err)
		}
	}
	if _, _, err := c.Read(); err != io.EOF {
		t.Fatal(err)
	}
}

// TestTryWrite: TryWrite writes a whole frame when the socket has room,
// and otherwise returns false at once, having written nothing, so that
// the stream stays in sync; streams without a socket never take it.
func TestTryWrite(t *testing.T) {
	a, b := socketpair(t)
	w, r := NewConn(a), NewConn(b)
	payload := bytes.Repeat([]byte("x"), 16<<10)
	sent := 0
	filled := make(chan error, 1)
	go func() { // nobody reads: TryWrite must refuse, never block
		for {
			ok, err := w.TryWrite(&Header{Type: TypeResult, ID: uint64(sent + 1)}, payload)
			if err != nil || !ok {
				filled <- err
				return
			}
			if sent++; sent > 10000 {
				filled <- errors.New("TryWrite never refused although nobody reads")
				return
			}
		}
	}()
	select {
	case err := <-filled:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("TryWrite blocked on a full socket")
	}
	if sent == 0 {
		t.Fatal("TryWrite refused on an empty socket")
	}
	for i := 1; i <= sent; i++ {
		h, p, err := r.Read()
		if err != nil || h.ID != uint64(i) || !bytes.Equal(p, payload) {
			t.Fatalf("frame %d of %d: %+v, %d bytes, %v", i, sent, h, len(p), err)
		}
	}
	// Drained: it writes again, and a batch goes out whole.
	ok, err := w.TryWriteBatch([]Frame{{Header: Header{Type: TypeAccepted, ID: 7}}, {Header: Header{Type: TypeResult, ID: 7}, Payload: []byte("r")}})
	if !ok || err != nil {
		t.Fatalf("TryWriteBatch after draining: %v %v", ok, err)
	}
	for _, want := range []string{TypeAccepted, TypeResult} {
		if h, _, err := r.Read(); err != nil || h.Type != want || h.ID != 7 {
			t.Fatalf("batch frame: %+v %v, want %s", h, err, want)
		}
	}
	// A bad header is refused before anything is written.
	var fe *FrameError
	if ok, err := w.TryWriteBatch([]Frame{{Header: Header{Type: TypeAccepted, ID: 8}}, {Header: Header{}}}); ok || !errors.As(err, &fe) {
		t.Fatalf("bad batch: %v %v", ok, err)
	}
	w.Write(&Header{Type: TypeOK, ID: 9}, nil)
	if h, _, err := r.Read(); err != nil || h.ID != 9 {
		t.Fatalf("after the bad batch the next frame is %+v %v", h, err)
	}

	// net.Pipe has no socket to measure: never taken.
	p1, p2 := net.Pipe()
	defer p1.Close()
	defer p2.Close()
	if ok, err := NewConn(p1).TryWrite(&Header{Type: TypeOK}, nil); ok || err != nil {
		t.Fatalf("TryWrite on net.Pipe: %v %v", ok, err)
	}
}

// TestReadResumesAfterDeadline: a deadline that interrupts Read inside a
// frame (in its prefix, its header, its payload) loses nothing: the next
// Read returns the whole frame, and the stream stays in sync.
func TestReadResumesAfterDeadline(t *testing.T) {
	a, b := socketpair(t)
	r := NewConn(b)
	payload := bytes.Repeat([]byte("p"), 100<<10) // more than one buffer, less than the socket's
	var frame bytes.Buffer
	wc := NewConn(nopCloser{&frame})
	if err := wc.Write(&Header{Type: TypeResult, ID: 42, Message: "resumed"}, payload); err != nil {
		t.Fatal(err)
	}
	wc.Write(&Header{Type: TypeOK, ID: 43}, nil)
	raw := frame.Bytes()
	hl := int(binary.BigEndian.Uint32(raw[0:4]))
	cuts := []int{3, prefixLen + 5, prefixLen + hl + 50<<10, len(raw)}
	sent := 0
	interrupted := 0
	for _, cut := range cuts {
		if _, err := a.Write(raw[sent:cut]); err != nil {
			t.Fatal(err)
		}
		sent = cut
		if cut == len(raw) {
			break
		}
		b.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
		if _, _, err := r.Read(); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("after %d of %d bytes: %v, want a deadline error", cut, len(raw), err)
		}
		interrupted++
		b.SetReadDeadline(time.Time{})
	}
	h, p, err := r.Read()
	if err != nil || h.Type != TypeResult || h.ID != 42 || h.Message != "resumed" || !bytes.Equal(p, payload) {
		t.Fatalf("after %d interruptions: %+v, %d bytes, %v", interrupted, h, len(p), err)
	}
	if h, p, err := r.Read(); err != nil || h.ID != 43 || p != nil {
		t.Fatalf("next frame: %+v %v %v", h, p, err)
	}
}

type nopCloser struct{ io.ReadWriter }

func (nopCloser) Close() error { return nil }
