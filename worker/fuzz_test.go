package worker

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cgpool/cgpool/ipc"
)

// FuzzWorkerProtocol feeds the worker's serve loop whatever a supervisor
// (or a corrupted socket) might send: it must end, never panic, and say
// only what the worker protocol allows, in order: a hello first, then one
// answer per task it was sent, with that task's id, and trimmed for trim.
// Seeds: the top-level testdata/fuzz/FuzzWorkerProtocol, plus the frames
// below.
func FuzzWorkerProtocol(f *testing.F) {
	frame := func(h ipc.Header, payload string) []byte {
		var b bytes.Buffer
		if err := ipc.NewConn(nopRWC{&b}).Write(&h, []byte(payload)); err != nil {
			f.Fatal(err)
		}
		return b.Bytes()
	}
	f.Add(frame(ipc.Header{Type: ipc.TypeTask, ID: 1}, "x"))
	f.Add(append(frame(ipc.Header{Type: ipc.TypeTask, ID: 7, Env: map[string]string{"A": "1"}}, "fail"), frame(ipc.Header{Type: ipc.TypeExit}, "")...))
	f.Add(frame(ipc.Header{Type: ipc.TypeTrim}, ""))
	f.Add(frame(ipc.Header{Type: "bogus"}, ""))
	f.Add([]byte{0, 0, 0, 2, 0, 0, 0, 0, '{', '}'})
	ents, _ := os.ReadDir(filepath.Join("..", "testdata", "fuzz", "FuzzWorkerProtocol"))
	for _, e := range ents {
		if b, err := os.ReadFile(filepath.Join("..", "testdata", "fuzz", "FuzzWorkerProtocol", e.Name())); err == nil {
			f.Add(b)
		}
	}
	h := func(_ context.Context, t *Task) ([]byte, error) {
		switch string(t.Payload) {
		case "fail":
			return nil, errors.New("boom")
		case "panic":
			panic("oops")
		}
		return t.Payload, nil
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		sup, wk := net.Pipe()
		done := make(chan error, 1)
		go func() { done <- serve(ipc.NewConn(wk), h, Options{}) }()
		sup.SetDeadline(time.Now().Add(10 * time.Second))
		c := ipc.NewConn(sup)
		defer c.Close()
		// What the worker may answer: the tasks sent, in order, as far as
		// the input decodes into frames.
		type sent struct {
			typ string
			id  uint64
		}
		var want []sent
		for r := ipc.NewConn(nopRWC{bytes.NewBuffer(in)}); ; {
			fh, _, err := r.Read()
			if err != nil {
				break
			}
			switch fh.Type {
			case ipc.TypeTask, ipc.TypeTrim:
				want = append(want, sent{fh.Type, fh.ID})
			}
		}
		go func() {
			sup.Write(in)
			c.Close() // ending the stream ends the worker (it reads end of file)
		}()
		hello, _, err := c.Read()
		if err == nil && hello.Type != ipc.TypeHello {
			t.Fatalf("first frame %q, want hello", hello.Type)
		}
		for n := 0; err == nil; n++ {
			var fh ipc.Header
			fh, _, err = c.Read()
			if err != nil {
				break
			}
			if n >= len(want) {
				t.Fatalf("answer %d (%s) to a message that was never sent", n, fh.Type)
			}
			switch w := want[n]; {
			case w.typ == ipc.TypeTrim && fh.Type != ipc.TypeTrimmed,
				w.typ == ipc.TypeTask && fh.Type != ipc.TypeResult && fh.Type != ipc.TypeTaskError,
				w.typ == ipc.TypeTask && fh.ID != w.id:
				t.Fatalf("answer %d is %s for id %d, to a %s with id %d", n, fh.Type, fh.ID, w.typ, w.id)
			}
		}
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("the worker's serve loop did not end when its stream did")
		}
	})
}

type nopRWC struct{ io.ReadWriter }

func (nopRWC) Close() error { return nil }
