"""Framing against the Go implementation's golden frames and fuzz seeds
(ipc/testdata), and the limits of docs/protocol.md section 1."""

import ast
import glob
import io
import json
import os
import struct
import unittest

import support  # noqa: F401  (sys.path)
from cgpool import protocol
from cgpool.usage import Usage

TESTDATA = os.path.join(support.REPO, "ipc", "testdata")


def load_golden(path):
    """(header dict as written in the comment, payload bytes, frame bytes)."""
    hexparts, header, payload = [], None, None
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if line.startswith("# header: "):
                header = json.loads(line[len("# header: "):])
            elif line.startswith("# payload: "):
                payload = ast.literal_eval("b" + line[len("# payload: "):])
            elif line and not line.startswith("#"):
                hexparts.append(line.replace(" ", ""))
    return header, payload, bytes.fromhex("".join(hexparts))


def load_seed(path):
    """The bytes of a FuzzRead seed: raw files in the top-level
    testdata/fuzz/FuzzRead (ipc/fuzz_test.go writes and reads them so);
    a file in Go's corpus format (``go test fuzz v1`` then ``[]byte("...")``)
    is decoded."""
    with open(path, "rb") as f:
        data = f.read()
    if not data.startswith(b"go test fuzz v1\n"):
        return data
    lit = data.decode("utf-8").splitlines()[1].strip()
    assert lit.startswith('[]byte(') and lit.endswith(')'), lit
    inner = lit[len('[]byte('):-1]
    escaped = "".join(c if ord(c) < 128 else "".join("\\x%02x" % b for b in c.encode("utf-8")) for c in inner)
    return ast.literal_eval("b" + escaped)


def usage_parsed(h):
    """h with a raw usage object (the fast path's) parsed, as in the golden's comment."""
    if isinstance(h.get("usage"), bytes):
        h = dict(h, usage=json.loads(h["usage"]))
    return h


class GoldenFrames(unittest.TestCase):
    def goldens(self):
        paths = sorted(glob.glob(os.path.join(TESTDATA, "*.golden")))
        self.assertGreater(len(paths), 5, "golden files missing in %s" % TESTDATA)
        return paths

    def test_encode_matches_go(self):
        for path in self.goldens():
            name = os.path.basename(path)
            with self.subTest(name):
                header, payload, frame = load_golden(path)
                got = protocol.encode_frame(protocol.canonical_header(header), payload)
                self.assertEqual(got, frame, "encode_frame(%s) = %r, want %r" % (name, got, frame))

    def test_canonical_reorders_and_drops_zeros(self):
        _, _, frame = load_golden(os.path.join(TESTDATA, "submit.golden"))
        shuffled = {"hold": True, "env": {"B": "2", "A": "1"}, "memory_max": 536870912,
                    "queue_timeout_ms": 5000, "timeout_ms": 30000, "priority": 2, "pool": "default",
                    "id": 42, "type": "submit", "argv": [], "message": "", "ok": False, "exit_code": 0}
        got = protocol.encode_frame(protocol.canonical_header(shuffled), b"\x80\x05\x95 pickled input")
        self.assertEqual(got, frame)

    def test_decode_golden(self):
        for path in self.goldens():
            name = os.path.basename(path)
            with self.subTest(name):
                header, payload, frame = load_golden(path)
                buf = protocol.FrameBuffer()
                got = []
                for i in range(len(frame)):  # byte by byte: partial frames wait
                    buf.feed(frame[i:i + 1])
                    got.extend(buf.frames())
                self.assertEqual([(usage_parsed(h), p) for h, p in got], [(header, payload)])
                h, p = protocol.read_frame(io.BytesIO(frame))
                self.assertEqual((usage_parsed(h), p), (header, payload))

    def test_usage_fast_path(self):
        # A worker pool's result with usage stays on the parser's fast path
        # (usage kept raw); Usage.from_wire reads both forms alike.
        _, _, frame = load_golden(os.path.join(TESTDATA, "result_usage.golden"))
        buf = protocol.FrameBuffer()
        buf.feed(frame)
        [(h, _)] = list(buf.frames())
        self.assertIsInstance(h["usage"], bytes)
        u = Usage.from_wire(h["usage"])
        self.assertEqual(u, Usage.from_wire(json.loads(h["usage"])))
        self.assertEqual((u.wall, u.cpu_user, u.cpu_system), (1.520331, 1.203114, 0.088012))
        self.assertEqual((u.memory_peak, u.memory_peak_scope), (67153920, "task"))
        self.assertEqual((u.pids_peak, u.pids_peak_scope), (None, None))
        self.assertEqual((u.io_read_bytes, u.io_write_bytes), (0, 4194304))
        self.assertAlmostEqual(u.cpu, 1.291126)

    def test_usage_from_wire_is_lenient(self):
        self.assertIsNone(Usage.from_wire(None))
        self.assertIsNone(Usage.from_wire(b"{not json"))
        self.assertIsNone(Usage.from_wire([1, 2]))
        u = Usage.from_wire({"wall_us": "x", "cpu_user_us": -4, "memory_peak": 5, "pids_peak": True})
        self.assertEqual(u, Usage(wall=0.0, cpu_user=0.0, cpu_system=0.0, memory_peak=5, memory_peak_scope="slot"))

    def test_python_reference_hello(self):
        # docs/protocol.md: the reference encoder gives hello.golden exactly.
        _, _, frame = load_golden(os.path.join(TESTDATA, "hello.golden"))
        got = protocol.encode_frame({"type": "hello", "version": 1, "client": "cgpool-py/0.1"})
        self.assertEqual(got, frame)


class Limits(unittest.TestCase):
    def frame(self, hlen, plen, rest=b""):
        return struct.pack(">II", hlen, plen) + rest

    def test_bad_prefixes(self):
        cases = [
            ("empty header", self.frame(0, 0), "empty header"),
            ("header too large", self.frame(protocol.MAX_HEADER + 1, 0), "header too large"),
            ("payload too large", self.frame(2, protocol.DEFAULT_MAX_PAYLOAD + 1), "payload too large"),
        ]
        for name, data, want in cases:
            with self.subTest(name):
                buf = protocol.FrameBuffer()
                buf.feed(data)
                with self.assertRaisesRegex(protocol.FrameError, want):
                    buf.frames()
                with self.assertRaisesRegex(protocol.FrameError, want):
                    protocol.read_frame(io.BytesIO(data))

    def test_bad_headers(self):
        for name, raw in [("not json", b"not json"), ("array", b"[1]"), ("no type", b'{"id":1}'),
                          ("empty type", b'{"type":""}'), ("type not string", b'{"type":1}'),
                          ("bad utf8", b'{"type":"\xff"}'), ("trailing", b'{"type":"x"} x')]:
            with self.subTest(name):
                with self.assertRaises(protocol.FrameError):
                    protocol.read_frame(io.BytesIO(self.frame(len(raw), 0, raw)))

    def test_truncated_and_clean_end(self):
        self.assertIsNone(protocol.read_frame(io.BytesIO(b"")))
        full = protocol.encode_frame({"type": "x"}, b"abc")
        for cut in (3, 8, 12, len(full) - 1):
            with self.subTest(cut=cut):
                with self.assertRaises(EOFError):
                    protocol.read_frame(io.BytesIO(full[:cut]))

    def test_small_payload_limit(self):
        buf = protocol.FrameBuffer(max_payload=4)
        buf.feed(protocol.encode_frame({"type": "x"}, b"12345"))
        with self.assertRaisesRegex(protocol.FrameError, "payload too large"):
            buf.frames()

    def test_encoder_refuses(self):
        with self.assertRaises(protocol.FrameError):
            protocol.encode_frame({"id": 1})
        with self.assertRaises(protocol.FrameError):
            protocol.encode_frame({"type": "x", "message": "a" * protocol.MAX_HEADER})
        with self.assertRaises(protocol.FrameError):
            protocol.encode_frame({"type": "x"}, b"12345", max_payload=4)

    def test_large_payload_incremental(self):
        payload = os.urandom(3 << 20)
        frame = protocol.encode_frame({"type": "result", "id": 1}, payload)
        buf = protocol.FrameBuffer()
        got = []
        for i in range(0, len(frame), 65536):
            buf.feed(frame[i:i + 65536])
            got.extend(buf.frames())
        self.assertEqual(len(got), 1)
        self.assertEqual(got[0][1], payload)
        self.assertEqual(protocol.read_frame(io.BytesIO(frame))[1], payload)

    def test_unicode_roundtrip(self):
        h = {"type": "task_error", "id": 1, "message": "héllo \u2028 <&> \"q\" \\ \t\x01 😀"}
        self.assertEqual(protocol.read_frame(io.BytesIO(protocol.encode_frame(h)))[0], h)


class FuzzSeeds(unittest.TestCase):
    """The Go fuzzer's seed corpus: every input either decodes or fails with
    a framing error, never anything else."""

    want = {
        "seed-big-payload-truncated": ("partial", None),
        "seed-huge-lengths": ("error", "header too large"),
        "seed-no-type": ("error", "type"),
        "seed-not-json": ("error", "bad header"),
        "seed-odd-json": ("frames", ["x"]),
        "seed-result_exec": ("frames", ["result"]),
        "seed-stats_reply": ("frames", ["stats_reply"]),
        "seed-submit": ("frames", ["submit"]),
        "seed-task": ("frames", ["task"]),
        "seed-two-frames": ("frames", ["accepted", "running"]),
        "seed-unicode": ("frames", ["task_error"]),
        "seed-zero-header": ("error", "empty header"),
    }

    def test_seeds(self):
        paths = sorted(glob.glob(os.path.join(support.REPO, "testdata", "fuzz", "FuzzRead", "*")))
        self.assertTrue(paths, "no fuzz seeds found")
        for path in paths:
            name = os.path.basename(path)
            with self.subTest(name):
                data = load_seed(path)
                buf = protocol.FrameBuffer()
                buf.feed(data)
                kind, detail = self.want.get(name, (None, None))
                try:
                    frames = buf.frames()
                except protocol.FrameError as e:
                    if kind is not None:
                        self.assertEqual(kind, "error", "%s: unexpected error %s" % (name, e))
                        self.assertIn(detail, str(e))
                    continue
                if kind == "frames":
                    self.assertEqual([h["type"] for h, _ in frames], detail)
                    self.assertEqual(buf.pending(), 0)
                elif kind == "partial":
                    self.assertEqual(frames, [])
                    self.assertGreater(buf.pending(), 0)
                    with self.assertRaises(EOFError):
                        protocol.read_frame(io.BytesIO(data))
                elif kind == "error":
                    self.fail("%s decoded as %r, want an error" % (name, frames))


if __name__ == "__main__":
    unittest.main()
