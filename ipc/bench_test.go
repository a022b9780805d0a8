package ipc

import (
	"testing"
)

// typicalSubmit is what a client sends for an ordinary task.
var typicalSubmit = Header{
	Type:           TypeSubmit,
	ID:             123456,
	Pool:           "default",
	Priority:       1,
	TimeoutMS:      30000,
	QueueTimeoutMS: 5000,
	MemoryMax:      512 << 20,
	Env:            map[string]string{"TASK_KIND": "resize"},
	Hold:           true,
}

var payload64 = make([]byte, 64)

// BenchmarkWriteRead measures the CPU cost of encoding and decoding one
// typical submit frame with a 64-byte payload (in memory, no system calls).
func BenchmarkWriteRead(b *testing.B) {
	var l loop
	c := NewConn(&l)
	b.ReportAllocs()
	for b.Loop() {
		if err := c.Write(&typicalSubmit, payload64); err != nil {
			b.Fatal(err)
		}
		if _, _, err := c.Read(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkWriteReadSocketpair is the same over a real socketpair: one
// write and one read system call per frame.
func BenchmarkWriteReadSocketpair(b *testing.B) {
	x, y := socketpair(b)
	w, r := NewConn(x), NewConn(y)
	b.ReportAllocs()
	for b.Loop() {
		if err := w.Write(&typicalSubmit, payload64); err != nil {
			b.Fatal(err)
		}
		if _, _, err := r.Read(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkWriteBatch64 writes results 64 at a time (one flush per batch)
// over a socketpair and reads them back; ns/op is per frame.
func BenchmarkWriteBatch64(b *testing.B) {
	x, y := socketpair(b)
	w, r := NewConn(x), NewConn(y)
	frames := make([]Frame, 64)
	for i := range frames {
		frames[i] = Frame{Header: Header{Type: TypeResult, ID: uint64(i + 1), PID: 4242, Leaf: "w-3"}, Payload: payload64}
	}
	done := make(chan error, 1)
	n := b.N
	go func() {
		for i := 0; i < n; i++ {
			if _, _, err := r.Read(); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	b.ReportAllocs()
	b.ResetTimer()
	for sent := 0; sent < n; sent += len(frames) {
		batch := frames[:min(len(frames), n-sent)]
		if err := w.WriteBatch(batch); err != nil {
			b.Fatal(err)
		}
	}
	if err := <-done; err != nil {
		b.Fatal(err)
	}
}

// BenchmarkEncodeSubmit and BenchmarkDecodeSubmit split the cost.
func BenchmarkEncodeSubmit(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		e := getEncoder()
		if err := e.appendFrameHead(&typicalSubmit, 64, DefaultMaxPayload); err != nil {
			b.Fatal(err)
		}
		putEncoder(e)
	}
}

func BenchmarkDecodeSubmit(b *testing.B) {
	frame := encode(b, typicalSubmit, nil)[prefixLen:]
	b.ReportAllocs()
	for b.Loop() {
		var h Header
		if err := decodeHeader(frame, &h); err != nil {
			b.Fatal(err)
		}
	}
}
