package ipc

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden and the FuzzRead seed corpus")

// loop is an in-memory io.ReadWriteCloser: what is written can be read back.
type loop struct{ bytes.Buffer }

func (*loop) Close() error { return nil }

// reader turns a byte slice into an io.ReadWriteCloser for reading.
type reader struct{ io.Reader }

func (reader) Write(p []byte) (int, error) { return 0, errors.New("read-only") }
func (reader) Close() error                { return nil }

func readerConn(b []byte, opts ...Options) *Conn {
	return NewConn(reader{bytes.NewReader(b)}, opts...)
}

type message struct {
	name    string
	golden  bool // also checked against testdata/<name>.golden
	h       Header
	payload []byte
}

var stdoutStderr = []byte("line 1\nline 2\nwarning: something\n")

// messages holds one (or more) example of every message of both protocols.
var messages = []message{
	// Client protocol.
	{name: "hello", golden: true, h: Header{Type: TypeHello, Version: ProtocolVersion, Client: "cgpool-py/0.1"}},
	{name: "welcome", golden: true, h: Header{Type: TypeWelcome, Version: 1, Server: "cgpool/0.1.0", Pools: []string{"default", "exec"}}},
	{name: "error_version", h: Header{Type: TypeError, Code: CodeVersion, Message: "unsupported protocol version 2; this server speaks version 1"}},
	{name: "submit", golden: true, h: Header{Type: TypeSubmit, ID: 42, Pool: "default", Priority: 2, TimeoutMS: 30000, QueueTimeoutMS: 5000,
		MemoryMax: 512 << 20, Env: map[string]string{"B": "2", "A": "1"}, Hold: true}, payload: []byte("\x80\x05\x95 pickled input")},
	{name: "submit_exec", h: Header{Type: TypeSubmit, ID: 43, Pool: "exec", Argv: []string{"/bin/sh", "-c", "echo hi"}}, payload: []byte("stdin")},
	{name: "accepted", h: Header{Type: TypeAccepted, ID: 42}},
	{name: "rejected", golden: true, h: Header{Type: TypeRejected, ID: 44, Reason: RejectQueueFull, Message: "backlog of pool \"default\" is full (1000)"}},
	{name: "running", h: Header{Type: TypeRunning, ID: 42, PID: 31337, Leaf: "w-3"}},
	{name: "result", h: Header{Type: TypeResult, ID: 42, PID: 31337, Leaf: "w-3"}, payload: []byte("output bytes")},
	{name: "result_exec", golden: true, h: Header{Type: TypeResult, ID: 43, PID: 31338, Leaf: "w-1", ExitCode: 3, StdoutLen: 14,
		StderrTruncated: true}, payload: stdoutStderr},
	{name: "task_error", h: Header{Type: TypeTaskError, ID: 42, PID: 31337, Leaf: "w-3", Message: "ValueError: bad",
		Traceback: "Traceback (most recent call last):\n  ...\nValueError: bad\n"}, payload: []byte("\x80\x05pickled exc")},
	{name: "timeout", h: Header{Type: TypeTimeout, ID: 42, PID: 31337, Leaf: "w-3", TimeoutMS: 30000}},
	{name: "process_error", golden: true, h: Header{Type: TypeProcessError, ID: 42, PID: 31337, Leaf: "w-3", Reason: ProcessOOM,
		Signal: 9, ExitCode: -1, MemoryPeak: 536870912}},
	{name: "cancelled", h: Header{Type: TypeCancelled, ID: 42, PID: 31337, Leaf: "w-3", Message: "cancelled by client (hard)"}},
	{name: "queue_timeout", h: Header{Type: TypeQueueTimeout, ID: 42}},
	{name: "cancel", h: Header{Type: TypeCancel, ID: 42, Mode: CancelHard}},
	{name: "cancel_reply", h: Header{Type: TypeCancelReply, ID: 42, OK: true, State: StateRunning}},
	{name: "stats", h: Header{Type: TypeStats, ID: 7, Pool: "default"}},
	{name: "stats_reply", golden: true, h: Header{Type: TypeStatsReply, ID: 7, Stats: json.RawMessage(`{"queued":3,"running":[1,2]}`)}},
	{name: "status", h: Header{Type: TypeStatus, ID: 8}},
	{name: "status_reply", h: Header{Type: TypeStatusReply, ID: 8, Status: json.RawMessage(`{"workers":4}`)}},
	{name: "set_env", h: Header{Type: TypeSetEnv, ID: 9, Pool: "default", Env: map[string]string{"LANG": "C.UTF-8"}, Replace: true}},
	{name: "recycle", h: Header{Type: TypeRecycle, ID: 10, Pool: "default"}},
	{name: "shutdown", h: Header{Type: TypeShutdown, ID: 11, Wait: true, CancelFutures: true, DeadlineMS: 10000}},
	{name: "ok", h: Header{Type: TypeOK, ID: 11}},
	{name: "error", h: Header{Type: TypeError, ID: 9, Code: CodeUnknownPool, Message: "no pool \"nope\""}},
	// Worker protocol.
	{name: "worker_hello", golden: true, h: Header{Type: TypeHello, PID: 4242, Version: ProtocolVersion}},
	{name: "worker_hello_init_error", h: Header{Type: TypeHello, PID: 4243, Version: ProtocolVersion, InitError: "ImportError: no module named x"}},
	{name: "task", golden: true, h: Header{Type: TypeTask, ID: 42, Env: map[string]string{"TASK": "1"}, TimeoutMS: 30000}, payload: []byte{0, 1, 2, 3, 0xff}},
	{name: "worker_result", h: Header{Type: TypeResult, ID: 42}, payload: []byte("output")},
	{name: "worker_task_error", h: Header{Type: TypeTaskError, ID: 42, Message: "boom", Traceback: "tb"}, payload: []byte("exc")},
	{name: "trim", h: Header{Type: TypeTrim}},
	{name: "trimmed", h: Header{Type: TypeTrimmed, RSS: 12 << 20}},
	{name: "exit", golden: true, h: Header{Type: TypeExit}},
	// Edge values.
	{name: "max_id", h: Header{Type: TypeAccepted, ID: 1<<64 - 1}},
	{name: "unicode", h: Header{Type: TypeTaskError, ID: 1, Message: "héllo \u2028 <&> \"q\" \\ \t\x01 😀"}},
}

func encode(t testing.TB, h Header, payload []byte) []byte {
	t.Helper()
	var l loop
	if err := NewConn(&l).Write(&h, payload); err != nil {
		t.Fatalf("Write(%+v): %v", h, err)
	}
	return l.Bytes()
}

func TestRoundTripEveryMessage(t *testing.T) {
	// All messages through one Conn, one after the other, then read back.
	var l loop
	c := NewConn(&l)
	for _, m := range messages {
		if err := c.Write(&m.h, m.payload); err != nil {
			t.Fatalf("%s: Write: %v", m.name, err)
		}
	}
	for _, m := range messages {
		t.Run(m.name, func(t *testing.T) {
			h, p, err := c.Read()
			if err != nil {
				t.Fatalf("Read: %v", err)
			}
			if !reflect.DeepEqual(h, m.h) {
				t.Errorf("header round trip:\n got  %+v\n want %+v", h, m.h)
			}
			if !bytes.Equal(p, m.payload) {
				t.Errorf("payload round trip: got %q want %q", p, m.payload)
			}
			if len(m.payload) == 0 && p != nil {
				t.Errorf("empty payload should read as nil, got %#v", p)
			}
		})
	}
	if _, _, err := c.Read(); err != io.EOF {
		t.Fatalf("after the last frame: got %v, want io.EOF", err)
	}
}

func TestWireLayout(t *testing.T) {
	// Hand-built frame, independent of the encoder.
	hdr := `{"type":"ok","id":7}`
	payload := "xyz"
	var b []byte
	b = binary.BigEndian.AppendUint32(b, uint32(len(hdr)))
	b = binary.BigEndian.AppendUint32(b, uint32(len(payload)))
	b = append(b, hdr...)
	b = append(b, payload...)
	h, p, err := readerConn(b).Read()
	if err != nil {
		t.Fatal(err)
	}
	if h.Type != TypeOK || h.ID != 7 || string(p) != payload {
		t.Fatalf("got %+v %q", h, p)
	}
	// And the encoder produces exactly that.
	if got := encode(t, Header{Type: TypeOK, ID: 7}, []byte(payload)); !bytes.Equal(got, b) {
		t.Fatalf("encoder:\n got  %q\n want %q", got, b)
	}
	// Unknown members and whitespace are accepted.
	hdr = " {\"type\" : \"ok\", \"id\": 7, \"future_field\": [1, {\"x\": null}]}\n"
	b = binary.BigEndian.AppendUint32(nil, uint32(len(hdr)))
	b = binary.BigEndian.AppendUint32(b, 0)
	b = append(b, hdr...)
	if h, _, err := readerConn(b).Read(); err != nil || h.Type != TypeOK || h.ID != 7 {
		t.Fatalf("unknown member: %+v %v", h, err)
	}
}

// TestHeaderJSONNames pins the JSON member name of every Header field.
func TestHeaderJSONNames(t *testing.T) {
	want := []string{"type", "id", "version", "client", "server", "pools", "pid", "leaf", "init_error",
		"pool", "priority", "timeout_ms", "queue_timeout_ms", "memory_max", "env", "argv", "cwd", "affinity", "stream_output", "max_output", "hold",
		"reason", "code", "message", "traceback", "exit_code", "signal", "memory_peak", "stdout_len",
		"stdout_truncated", "stderr_truncated", "stream", "rss", "mode", "ok", "state", "stats", "status",
		"replace", "wait", "cancel_futures", "deadline_ms"}
	var got []string
	rt := reflect.TypeFor[Header]()
	for i := range rt.NumField() {
		tag := rt.Field(i).Tag.Get("json")
		name, opts, _ := strings.Cut(tag, ",")
		got = append(got, name)
		if name != "type" && opts != "omitempty" {
			t.Errorf("field %s: tag %q lacks omitempty", rt.Field(i).Name, tag)
		}
	}
	if !slices.Equal(got, want) {
		t.Fatalf("JSON names changed (update docs/protocol.md and this list):\n got  %q\n want %q", got, want)
	}
	// The zero Header (but for type) encodes to just the type.
	b := encode(t, Header{Type: "x"}, nil)
	if got := string(b[prefixLen:]); got != `{"type":"x"}` {
		t.Fatalf("zero header encodes to %s", got)
	}
}

// Golden files pin the exact bytes of representative frames.

func goldenPath(name string) string { return filepath.Join("testdata", name+".golden") }

func formatGolden(m message, frame []byte) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "# cgpool ipc golden frame %q: hex of the whole frame (# lines are comments).\n", m.name)
	fmt.Fprintf(&b, "# header length %d, payload length %d\n", binary.BigEndian.Uint32(frame[0:4]), binary.BigEndian.Uint32(frame[4:8]))
	fmt.Fprintf(&b, "# header: %s\n", frame[prefixLen:prefixLen+int(binary.BigEndian.Uint32(frame[0:4]))])
	fmt.Fprintf(&b, "# payload: %s\n", strconv.Quote(string(m.payload)))
	for len(frame) > 0 {
		n := min(32, len(frame))
		for i := 0; i < n; i += 4 {
			if i > 0 {
				b.WriteByte(' ')
			}
			b.WriteString(hex.EncodeToString(frame[i:min(i+4, n)]))
		}
		b.WriteByte('\n')
		frame = frame[n:]
	}
	return []byte(b.String())
}

func parseGolden(t *testing.T, data []byte) []byte {
	t.Helper()
	var h strings.Builder
	for line := range strings.Lines(string(data)) {
		if strings.HasPrefix(line, "#") {
			continue
		}
		h.WriteString(strings.Join(strings.Fields(line), ""))
	}
	b, err := hex.DecodeString(h.String())
	if err != nil {
		t.Fatalf("bad golden hex: %v", err)
	}
	return b
}

func TestGolden(t *testing.T) {
	n := 0
	for _, m := range messages {
		if !m.golden {
			continue
		}
		n++
		t.Run(m.name, func(t *testing.T) {
			frame := encode(t, m.h, m.payload)
			path := goldenPath(m.name)
			if *update {
				if err := os.WriteFile(path, formatGolden(m, frame), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test ./ipc -update to create it)", err)
			}
			want := parseGolden(t, data)
			if !bytes.Equal(frame, want) {
				t.Errorf("encoding of %s drifted from %s:\n got  %q\n want %q", m.name, path, frame, want)
			}
			h, p, err := readerConn(want).Read()
			if err != nil {
				t.Fatalf("decoding golden: %v", err)
			}
			if !reflect.DeepEqual(h, m.h) || !bytes.Equal(p, m.payload) {
				t.Errorf("decoding golden:\n got  %+v %q\n want %+v %q", h, p, m.h, m.payload)
			}
		})
	}
	if n < 5 {
		t.Fatalf("only %d golden messages", n)
	}
}

// Limits and malformed input.

func frameBytes(hdr string, plen uint32, rest string) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(len(hdr)))
	b = binary.BigEndian.AppendUint32(b, plen)
	return append(append(b, hdr...), rest...)
}

func rawPrefix(hl, pl uint32) []byte {
	return binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, hl), pl)
}

func wantFrameError(t *testing.T, err error, reason string, tooLarge bool) {
	t.Helper()
	var fe *FrameError
	if !errors.As(err, &fe) {
		t.Fatalf("got %v (%T), want *FrameError %q", err, err, reason)
	}
	if fe.Reason != reason {
		t.Fatalf("reason %q, want %q (%v)", fe.Reason, reason, err)
	}
	if errors.Is(err, ErrFrameTooLarge) != tooLarge {
		t.Fatalf("errors.Is(ErrFrameTooLarge) = %v, want %v", !tooLarge, tooLarge)
	}
}

func TestReadLimits(t *testing.T) {
	big := `{"type":"x","message":"` + strings.Repeat("a", MaxHeader) + `"}`
	cases := []struct {
		name     string
		in       []byte
		opts     Options
		reason   string
		tooLarge bool
	}{
		{"header over MaxHeader", rawPrefix(MaxHeader+1, 0), Options{}, FrameHeaderTooLarge, true},
		{"header over MaxHeader with data", frameBytes(big, 0, ""), Options{}, FrameHeaderTooLarge, true},
		{"header length 4GiB-1", rawPrefix(0xffffffff, 0), Options{}, FrameHeaderTooLarge, true},
		{"payload over default max", rawPrefix(20, DefaultMaxPayload+1), Options{}, FramePayloadTooLarge, true},
		{"payload over set max", frameBytes(`{"type":"x"}`, 17, strings.Repeat("p", 17)), Options{MaxPayload: 16}, FramePayloadTooLarge, true},
		{"payload 4GiB-1", rawPrefix(20, 0xffffffff), Options{MaxPayload: 1 << 30}, FramePayloadTooLarge, true},
		{"zero header length", rawPrefix(0, 0), Options{}, FrameEmptyHeader, false},
		{"zero header length with payload", append(rawPrefix(0, 3), "abc"...), Options{}, FrameEmptyHeader, false},
		{"not JSON", frameBytes("hello", 0, ""), Options{}, FrameBadHeader, false},
		{"JSON array", frameBytes(`[{"type":"x"}]`, 0, ""), Options{}, FrameBadHeader, false},
		{"JSON string", frameBytes(`"type"`, 0, ""), Options{}, FrameBadHeader, false},
		{"JSON null", frameBytes(`null`, 0, ""), Options{}, FrameBadHeader, false},
		{"JSON without type", frameBytes(`{"id":1}`, 0, ""), Options{}, FrameBadHeader, false},
		{"empty type", frameBytes(`{"type":""}`, 0, ""), Options{}, FrameBadHeader, false},
		{"type not a string", frameBytes(`{"type":5}`, 0, ""), Options{}, FrameBadHeader, false},
		{"trailing garbage", frameBytes(`{"type":"x"}x`, 0, ""), Options{}, FrameBadHeader, false},
		{"id negative", frameBytes(`{"type":"x","id":-1}`, 0, ""), Options{}, FrameBadHeader, false},
		{"id too big", frameBytes(`{"type":"x","id":18446744073709551616}`, 0, ""), Options{}, FrameBadHeader, false},
		{"id fractional", frameBytes(`{"type":"x","id":1.5}`, 0, ""), Options{}, FrameBadHeader, false},
		{"env not strings", frameBytes(`{"type":"x","env":{"a":1}}`, 0, ""), Options{}, FrameBadHeader, false},
		{"truncated JSON", frameBytes(`{"type":"x"`, 0, ""), Options{}, FrameBadHeader, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := readerConn(tc.in, tc.opts).Read()
			wantFrameError(t, err, tc.reason, tc.tooLarge)
		})
	}
}

func TestReadLimitsAllocateNothingLarge(t *testing.T) {
	// Announce a 60 MiB payload (within the limit) but deliver 10 bytes:
	// the reader must not have allocated the announced size.
	in := frameBytes(`{"type":"x"}`, 60<<20, "0123456789")
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for range 5 {
		if _, _, err := readerConn(in).Read(); err != io.ErrUnexpectedEOF {
			t.Fatalf("got %v, want io.ErrUnexpectedEOF", err)
		}
		if _, _, err := readerConn(rawPrefix(0xffffffff, 0xffffffff)).Read(); err == nil {
			t.Fatal("no error for huge lengths")
		}
	}
	runtime.ReadMemStats(&after)
	if d := after.TotalAlloc - before.TotalAlloc; d > 8<<20 {
		t.Fatalf("allocated %d bytes for 10 truncated frames", d)
	}
}

func TestWriteLimits(t *testing.T) {
	var l loop
	c := NewConn(&l, Options{MaxPayload: 16})
	wantFrameError(t, c.Write(&Header{Type: "x", Message: strings.Repeat("a", MaxHeader)}, nil), FrameHeaderTooLarge, true)
	wantFrameError(t, c.Write(&Header{Type: "x"}, make([]byte, 17)), FramePayloadTooLarge, true)
	wantFrameError(t, c.Write(&Header{}, nil), FrameBadHeader, false)
	wantFrameError(t, c.Write(nil, nil), FrameBadHeader, false)
	wantFrameError(t, c.Write(&Header{Type: "x", Stats: json.RawMessage("{not json")}, nil), FrameBadHeader, false)
	wantFrameError(t, c.WriteBatch([]Frame{{Header: Header{Type: "ok"}}, {Header: Header{}}}), FrameBadHeader, false)
	if l.Len() != 0 {
		t.Fatalf("rejected writes wrote %d bytes", l.Len())
	}
	// The Conn is still usable, and a header of exactly MaxHeader bytes is fine.
	h := Header{Type: "x", Message: strings.Repeat("a", MaxHeader-len(`{"type":"x","message":""}`))}
	if err := c.Write(&h, make([]byte, 16)); err != nil {
		t.Fatal(err)
	}
	if hl := binary.BigEndian.Uint32(l.Bytes()); hl != MaxHeader {
		t.Fatalf("header length %d, want %d", hl, MaxHeader)
	}
	got, p, err := c.Read()
	if err != nil || got.Message != h.Message || len(p) != 16 {
		t.Fatalf("max-size frame: %v", err)
	}
}

func TestTruncatedAtEveryOffset(t *testing.T) {
	for _, m := range messages {
		frame := encode(t, m.h, m.payload)
		for i := range len(frame) {
			_, _, err := readerConn(frame[:i]).Read()
			want := io.ErrUnexpectedEOF
			if i == 0 {
				want = io.EOF
			}
			if err != want {
				t.Fatalf("%s cut at %d/%d: got %v, want %v", m.name, i, len(frame), err, want)
			}
		}
		// A whole frame followed by a cut one: first reads fine.
		two := append(slices.Clone(frame), frame[:len(frame)-1]...)
		c := readerConn(two)
		if _, _, err := c.Read(); err != nil {
			t.Fatalf("%s: %v", m.name, err)
		}
		if _, _, err := c.Read(); err != io.ErrUnexpectedEOF {
			t.Fatalf("%s second frame: got %v", m.name, err)
		}
	}
}

func TestLargePayload(t *testing.T) {
	// Larger than directAlloc: exercises the incremental read path.
	payload := make([]byte, 3*directAlloc+12345)
	for i := range payload {
		payload[i] = byte(i * 7)
	}
	frame := encode(t, Header{Type: TypeResult, ID: 1}, payload)
	h, p, err := readerConn(frame).Read()
	if err != nil || h.ID != 1 || !bytes.Equal(p, payload) {
		t.Fatalf("large payload round trip failed: %v", err)
	}
	for _, cut := range []int{prefixLen + 20, len(frame) - len(payload) + directAlloc, len(frame) - 1} {
		if _, _, err := readerConn(frame[:cut]).Read(); err != io.ErrUnexpectedEOF {
			t.Fatalf("cut at %d: %v", cut, err)
		}
	}
}

func TestPayloadOwnedByCaller(t *testing.T) {
	var l loop
	c := NewConn(&l)
	src := []byte("first")
	if err := c.WriteBatch([]Frame{{Header: Header{Type: "a"}, Payload: src}, {Header: Header{Type: "b"}, Payload: []byte("SECOND")}}); err != nil {
		t.Fatal(err)
	}
	src[0] = 'X' // the Conn keeps no reference after the write returned
	_, p1, _ := c.Read()
	_, p2, _ := c.Read()
	if string(p1) != "first" || string(p2) != "SECOND" {
		t.Fatalf("got %q %q", p1, p2)
	}
}

func TestWriteBatchOneFlush(t *testing.T) {
	var cw countingWriter
	c := NewConn(&cw)
	frames := make([]Frame, 100)
	for i := range frames {
		frames[i] = Frame{Header: Header{Type: TypeResult, ID: uint64(i + 1)}, Payload: []byte("r")}
	}
	if err := c.WriteBatch(frames); err != nil {
		t.Fatal(err)
	}
	if cw.writes != 1 {
		t.Fatalf("WriteBatch of 100 small frames made %d writes, want 1", cw.writes)
	}
	rc := readerConn(cw.buf.Bytes())
	for i := range frames {
		h, p, err := rc.Read()
		if err != nil || h.ID != uint64(i+1) || string(p) != "r" {
			t.Fatalf("frame %d: %+v %q %v", i, h, p, err)
		}
	}
	if err := c.WriteBatch(nil); err != nil {
		t.Fatal(err)
	}
}

type countingWriter struct {
	buf    bytes.Buffer
	writes int
}

func (w *countingWriter) Write(p []byte) (int, error) { w.writes++; return w.buf.Write(p) }
func (w *countingWriter) Read(p []byte) (int, error)  { return 0, io.EOF }
func (w *countingWriter) Close() error                { return nil }

func TestOptions(t *testing.T) {
	if got := NewConn(&loop{}).MaxPayload(); got != DefaultMaxPayload {
		t.Fatalf("default MaxPayload %d", got)
	}
	if got := NewConn(&loop{}, Options{MaxPayload: 1 << 40}).MaxPayload(); got != 1<<32-1 {
		t.Fatalf("clamped MaxPayload %d", got)
	}
	c := NewConn(&loop{}, Options{MaxPayload: 10})
	c.SetMaxPayload(0)
	if c.MaxPayload() != DefaultMaxPayload {
		t.Fatal("SetMaxPayload(0) did not restore the default")
	}
}

func TestHeaderHelpers(t *testing.T) {
	if (&Header{Type: TypeOK}).Err() != nil {
		t.Fatal("ok is not an error")
	}
	var re *RemoteError
	err := (&Header{Type: TypeError, ID: 3, Code: CodeInvalid, Message: "m"}).Err()
	if !errors.As(err, &re) || re.ID != 3 || re.Code != CodeInvalid || re.Message != "m" {
		t.Fatalf("Err: %v", err)
	}
	for _, typ := range []string{TypeRejected, TypeResult, TypeTaskError, TypeTimeout, TypeProcessError, TypeCancelled, TypeQueueTimeout} {
		if !IsFinal(typ) {
			t.Errorf("IsFinal(%q) = false", typ)
		}
	}
	for _, typ := range []string{TypeAccepted, TypeRunning, TypeCancelReply, TypeOK, TypeError} {
		if IsFinal(typ) {
			t.Errorf("IsFinal(%q) = true", typ)
		}
	}
}

func TestValidateRequest(t *testing.T) {
	cases := []struct {
		h  Header
		ok bool
	}{
		{Header{Type: TypeSubmit, ID: 1, Pool: "p", Env: map[string]string{"A": "b"}, Argv: []string{"x"}}, true},
		{Header{Type: TypeSubmit, Pool: "p"}, false},
		{Header{Type: TypeSubmit, ID: 1, Priority: -1}, false},
		{Header{Type: TypeSubmit, ID: 1, TimeoutMS: -1}, false},
		{Header{Type: TypeSubmit, ID: 1, QueueTimeoutMS: -1}, false},
		{Header{Type: TypeSubmit, ID: 1, MemoryMax: -1}, false},
		{Header{Type: TypeSubmit, ID: 1, Env: map[string]string{"A=B": "c"}}, false},
		{Header{Type: TypeSubmit, ID: 1, Env: map[string]string{"": "c"}}, false},
		{Header{Type: TypeSubmit, ID: 1, Env: map[string]string{"A": "c\x00"}}, false},
		{Header{Type: TypeSubmit, ID: 1, Argv: []string{"a\x00b"}}, false},
		{Header{Type: TypeCancel, ID: 1}, true},
		{Header{Type: TypeCancel, ID: 1, Mode: CancelSoft}, true},
		{Header{Type: TypeCancel, ID: 1, Mode: "medium"}, false},
		{Header{Type: TypeSetEnv, ID: 1, Env: map[string]string{"A\x00": ""}}, false},
		{Header{Type: TypeShutdown, ID: 1, DeadlineMS: -5}, false},
		// Durations that would wrap a time.Duration (2^58+1 ms became 1 ms).
		{Header{Type: TypeSubmit, ID: 1, TimeoutMS: 1<<58 + 1}, false},
		{Header{Type: TypeSubmit, ID: 1, TimeoutMS: MaxDurationMS}, true},
		{Header{Type: TypeSubmit, ID: 1, TimeoutMS: MaxDurationMS + 1}, false},
		{Header{Type: TypeSubmit, ID: 1, QueueTimeoutMS: 1 << 62}, false},
		{Header{Type: TypeShutdown, ID: 1, DeadlineMS: 1 << 50}, false},
		{Header{Type: TypeSubmit, ID: 1, Priority: MaxPriority + 1}, false},
		{Header{Type: TypeSubmit, ID: 1, Affinity: "ab12-prog"}, true},
		{Header{Type: TypeSubmit, ID: 1, Affinity: "a b"}, false},
		{Header{Type: TypeSubmit, ID: 1, Affinity: strings.Repeat("a", MaxAffinity+1)}, false},
		{Header{Type: TypeStats}, false},
		{Header{Type: TypeStats, ID: 2}, true},
		{Header{Type: TypeResult}, true}, // not a request
	}
	for i, tc := range cases {
		err := tc.h.ValidateRequest()
		if (err == nil) != tc.ok {
			t.Errorf("case %d %+v: err = %v, want ok=%v", i, tc.h, err, tc.ok)
		}
		if err != nil && !errors.Is(err, ErrInvalidRequest) {
			t.Errorf("case %d: %v does not wrap ErrInvalidRequest", i, err)
		}
	}
}

// TestBatchWritesWhatWriteBatchWrites: an encoded Batch, reused after
// Reset, puts the same bytes on the wire as WriteBatch, and checks frames
// as Write does.
func TestBatchWritesWhatWriteBatchWrites(t *testing.T) {
	frames := []Frame{
		{Header: Header{Type: TypeAccepted, ID: 1}},
		{Header: Header{Type: TypeResult, ID: 1, PID: 42, Leaf: "/w-1/worker"}, Payload: []byte("answer")},
		{Header: Header{Type: TypeTaskError, ID: 2, Message: "boom <&>", Traceback: "tb"}, Payload: []byte{0, 1, 2}},
	}
	var want bytes.Buffer
	wc := NewConn(nopCloser{&want})
	if err := wc.WriteBatch(frames); err != nil {
		t.Fatal(err)
	}
	var b Batch
	for round := range 3 { // the buffers are reused
		b.Reset()
		for i := range frames {
			if err := b.Add(&frames[i].Header, frames[i].Payload, DefaultMaxPayload); err != nil {
				t.Fatal(err)
			}
		}
		if b.Len() != len(frames) || b.Size() != int64(want.Len()) {
			t.Fatalf("round %d: Len %d Size %d, want %d and %d", round, b.Len(), b.Size(), len(frames), want.Len())
		}
		var got bytes.Buffer
		if err := NewConn(nopCloser{&got}).WriteEncoded(&b); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got.Bytes(), want.Bytes()) {
			t.Fatalf("round %d: WriteEncoded wrote\n%q\nwant\n%q", round, got.Bytes(), want.Bytes())
		}
	}
	var fe *FrameError
	if err := b.Add(&Header{}, nil, DefaultMaxPayload); !errors.As(err, &fe) {
		t.Errorf("Add of a header without type = %v, want a *FrameError", err)
	}
	if err := b.Add(&Header{Type: "x"}, make([]byte, 10), 5); !errors.As(err, &fe) || fe.Reason != FramePayloadTooLarge {
		t.Errorf("Add of a payload over the limit = %v", err)
	}
	if b.Len() != len(frames) {
		t.Errorf("refused frames were added: Len %d", b.Len())
	}
}
