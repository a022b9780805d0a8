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
