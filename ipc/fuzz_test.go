package ipc

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// fuzzSeeds are written, raw, to the top-level testdata/fuzz/FuzzRead by
// -update, and added with f.Add (with every file there).
func fuzzSeeds(t testing.TB) map[string][]byte {
	seeds := map[string][]byte{}
	for _, name := range []string{"submit", "result_exec", "stats_reply", "task", "unicode"} {
		for _, m := range messages {
			if m.name == name {
				seeds["seed-"+name] = encode(t, m.h, m.payload)
			}
		}
	}
	two := append(encode(t, Header{Type: TypeAccepted, ID: 1}, nil), encode(t, Header{Type: TypeRunning, ID: 1, PID: 9}, nil)...)
	seeds["seed-two-frames"] = two
	seeds["seed-huge-lengths"] = rawPrefix(0xffffffff, 0xffffffff)
	seeds["seed-zero-header"] = rawPrefix(0, 0)
	seeds["seed-big-payload-truncated"] = frameBytes(`{"type":"x"}`, 50<<20, "abc")
	seeds["seed-not-json"] = frameBytes("not json", 0, "")
	seeds["seed-no-type"] = frameBytes(`{"id":1,"env":{"a":"b"}}`, 0, "")
	seeds["seed-odd-json"] = frameBytes(`{"type":"x","TYPE":"y","env":{},"pools":[],"stats":{ "a" : [1, 2] },"message":"\ud800","env":{"k":"v"}}`, 1, "p")
	return seeds
}

// seedDir is the top-level corpus directory of a fuzz target.
func seedDir(target string) string { return filepath.Join("..", "testdata", "fuzz", target) }

func TestWriteFuzzSeeds(t *testing.T) {
	dir := seedDir("FuzzRead")
	seeds := fuzzSeeds(t)
	if *update {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for name, b := range seeds {
			if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	for name, want := range seeds {
		if got, err := os.ReadFile(filepath.Join(dir, name)); err != nil || !bytes.Equal(got, want) {
			t.Errorf("seed corpus file %s missing or stale (go test ./ipc -update): %v", name, err)
		}
	}
}

// normalize makes semantically equal headers DeepEqual: empty maps and
// slices become nil, raw JSON is compacted.
func normalize(h Header) Header {
	if len(h.Env) == 0 {
		h.Env = nil
	}
	if len(h.Pools) == 0 {
		h.Pools = nil
	}
	if len(h.Argv) == 0 {
		h.Argv = nil
	}
	compact := func(m json.RawMessage) json.RawMessage {
		if len(m) == 0 {
			return nil
		}
		var b bytes.Buffer
		if err := json.Compact(&b, m); err != nil {
			return m
		}
		return b.Bytes()
	}
	h.Stats = compact(h.Stats)
	h.Status = compact(h.Status)
	return h
}

func FuzzRead(f *testing.F) {
	for _, b := range fuzzSeeds(f) {
		f.Add(b)
	}
	ents, _ := os.ReadDir(seedDir("FuzzRead"))
	for _, e := range ents {
		if b, err := os.ReadFile(filepath.Join(seedDir("FuzzRead"), e.Name())); err == nil {
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c := readerConn(data) // default limits: 64 KiB header, 64 MiB payload
		for range 8 {
			h, p, err := c.Read()
			if err != nil {
				var fe *FrameError
				if err != io.EOF && err != io.ErrUnexpectedEOF && !errors.As(err, &fe) {
					t.Fatalf("unexpected error type %T: %v", err, err)
				}
				return
			}
			if h.Type == "" {
				t.Fatal("frame with empty type accepted")
			}
			// Re-encode and decode again: same header and payload.
			var l loop
			w := NewConn(&l)
			if err := w.Write(&h, p); err != nil {
				var fe *FrameError
				if errors.As(err, &fe) && fe.Reason == FrameHeaderTooLarge {
					continue // escaping (e.g. invalid UTF-8 -> \ufffd) grew it past MaxHeader
				}
				t.Fatalf("re-encoding a decoded header: %v", err)
			}
			enc1 := bytes.Clone(l.Bytes())
			h2, p2, err := w.Read()
			if err != nil {
				t.Fatalf("decoding a re-encoded frame: %v", err)
			}
			if !reflect.DeepEqual(normalize(h), normalize(h2)) {
				t.Fatalf("header changed in re-encoding:\n %+v\n %+v", h, h2)
			}
			if !bytes.Equal(p, p2) {
				t.Fatal("payload changed in re-encoding")
			}
			// The encoding is a fixed point from here on.
			if err := w.Write(&h2, p2); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(l.Bytes(), enc1) {
				t.Fatalf("encoding not stable:\n %q\n %q", enc1, l.Bytes())
			}
		}
	})
}
