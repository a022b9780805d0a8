"""cgpool's wire format (docs/protocol.md), standard library only.

Every message is one frame: two big-endian uint32 lengths (header H, payload
P), a UTF-8 JSON object header with a non-empty string ``type``, and P opaque
payload bytes. This module owns the framing, the limits and the field order
the Go encoder uses; it does no I/O policy of its own (the executor and the
worker decide what to send when).

Nothing here is thread-safe by itself: a :class:`FrameBuffer` belongs to one
reader, and writers serialise their own ``sendall`` calls.
"""

import json
import re
import struct

__all__ = [
    "PROTOCOL_VERSION",
    "MAX_HEADER",
    "DEFAULT_MAX_PAYLOAD",
    "FINAL_TYPES",
    "FrameError",
    "encode_frame",
    "encode_header",
    "canonical_header",
    "decode_header",
    "FrameBuffer",
    "read_frame",
]

PROTOCOL_VERSION = 1
MAX_HEADER = 64 * 1024
DEFAULT_MAX_PAYLOAD = 64 << 20
PREFIX = struct.Struct(">II")

# The order of the members of ipc.Header, which is the order the Go encoder
# writes them in. Frames we write in this order are byte-identical to Go's.
FIELD_ORDER = (
    "type", "id", "version", "client", "server", "pools", "pid", "leaf",
    "init_error", "pool", "priority", "timeout_ms", "queue_timeout_ms",
    "memory_max", "env", "argv", "cwd", "affinity", "stream_output",
    "max_output", "hold", "reason", "code", "message",
    "traceback", "exit_code", "signal", "memory_peak", "stdout_len",
    "stdout_truncated", "stderr_truncated", "stream", "rss", "mode", "ok", "state",
    "stats", "status", "replace", "wait", "cancel_futures", "deadline_ms",
)
_RANK = {name: i for i, name in enumerate(FIELD_ORDER)}

# Server-to-client messages that end a submission (ipc.IsFinal).
FINAL_TYPES = frozenset(
    ("rejected", "result", "task_error", "timeout", "process_error",
     "cancelled", "queue_timeout")
)


class FrameError(ValueError):
    """The byte stream broke a framing rule; it can no longer be trusted."""


def _is_zero(v):
    if v is None or v is False:
        return True
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return v == 0
    if isinstance(v, (str, bytes, dict, list, tuple)):
        return len(v) == 0
    return False


def canonical_header(header):
    """Return a copy of *header* in the Go field order without zero values.

    Zero values (0, "", False, None, empty containers) are dropped, as the Go
    encoder drops them; ``env`` maps are sorted by key, as Go sorts map keys.
    Unknown members keep their relative order after the known ones. ``type``
    is always kept.
    """
    items = []
    for i, (k, v) in enumerate(header.items()):
        if k != "type" and _is_zero(v):
            continue
        if isinstance(v, dict) and k == "env":
            v = dict(sorted(v.items()))
        items.append((_RANK.get(k, len(FIELD_ORDER) + i), k, v))
    items.sort(key=lambda t: t[0])
    return {k: v for _, k, v in items}


def encode_header(header):
    """The JSON bytes of *header*, compact, UTF-8, in the given order."""
    return json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def encode_frame(header, payload=b"", max_payload=DEFAULT_MAX_PAYLOAD):
    """One frame's bytes. *header* is written in its own order (use
    :func:`canonical_header` for Go's). Raises FrameError for a frame the
    protocol forbids (no type, header or payload too large)."""
    t = header.get("type")
    if not isinstance(t, str) or not t:
        raise FrameError("bad header: type must be a non-empty string")
    h = encode_header(header)
    if len(h) > MAX_HEADER:
        raise FrameError("header too large (%d bytes > %d)" % (len(h), MAX_HEADER))
    if len(payload) > max_payload:
        raise FrameError("payload too large (%d bytes > %d)" % (len(payload), max_payload))
    return PREFIX.pack(len(h), len(payload)) + h + bytes(payload)


def decode_header(raw):
    """Parse and check one header (bytes). Raises FrameError."""
    try:
        h = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise FrameError("bad header: %s" % e) from None
    if not isinstance(h, dict):
        raise FrameError("bad header: not a JSON object")
    t = h.get("type")
    if not isinstance(t, str) or not t:
        raise FrameError("bad header: type must be a non-empty string")
    return h


def check_prefix(hlen, plen, max_payload):
    if hlen == 0:
        raise FrameError("empty header")
    if hlen > MAX_HEADER:
        raise FrameError("header too large (%d bytes > %d)" % (hlen, MAX_HEADER))
    if plen > max_payload:
        raise FrameError("payload too large (%d bytes > %d)" % (plen, max_payload))


# The commonest headers, in the Go encoder's exact form (field order, no
# spaces, no escapes): parsed without the JSON parser, which costs more than
# the rest of a no-op task's header handling. Anything else (another field,
# an escape in the leaf) takes the JSON parser.
_FAST = re.compile(rb'\{"type":"(accepted|task|running|result)","id":([1-9][0-9]{0,19})'
                   rb'(?:,"pid":([1-9][0-9]{0,9}),"leaf":"([^"\\\x00-\x1f]*)")?\}\Z')


def _fast_header(raw):
    m = _FAST.match(raw)
    if m is None:
        return None
    t, tid, pid, leaf = m.groups()
    h = {"type": t.decode(), "id": int(tid)}
    if pid is not None:
        h["pid"] = int(pid)
        h["leaf"] = leaf.decode("utf-8")
    return h


class FrameBuffer:
    """Incremental frame parser: feed it bytes as they arrive, take frames.

    Lengths are checked as soon as a prefix is complete, before any payload
    is waited for, and nothing of the announced size is allocated ahead of
    the bytes themselves. With *skip_accepted*, ``accepted`` frames are
    dropped here (a client that has no use for them saves their dispatch).
    """

    __slots__ = ("_buf", "_pos", "max_payload", "skip_accepted")

    def __init__(self, max_payload=DEFAULT_MAX_PAYLOAD, skip_accepted=False):
        self._buf = bytearray()
        self._pos = 0
        self.max_payload = max_payload
        self.skip_accepted = skip_accepted

    def feed(self, data):
        """Append received bytes. Compacts consumed bytes first."""
        if self._pos:
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data

    def compact(self):
        """Let go of the bytes of frames already returned (feed does it
        too): a reader that keeps a large payload while it works on it
        should not keep a second copy here."""
        if self._pos:
            del self._buf[: self._pos]
            self._pos = 0

    def pending(self):
        """Bytes held that are not yet part of a returned frame."""
        return len(self._buf) - self._pos

    def frames(self):
        """Return the list of complete ``(header, payload)`` frames held.

        Raises FrameError on a broken frame; the buffer is then unusable.
        """
        out = []
        buf, pos, end = self._buf, self._pos, len(self._buf)
        unpack = PREFIX.unpack_from
        while end - pos >= 8:
            hlen, plen = unpack(buf, pos)
            check_prefix(hlen, plen, self.max_payload)
            stop = pos + 8 + hlen + plen
            if stop > end:
                break
            raw = bytes(buf[pos + 8: pos + 8 + hlen])
            if hlen < 200 and raw[:9] == b'{"type":"':
                h = _fast_header(raw)
                if h is None:
                    h = decode_header(raw)
                elif self.skip_accepted and h["type"] == "accepted":
                    pos = stop
                    continue
            else:
                h = decode_header(raw)
            out.append((h, bytes(buf[pos + 8 + hlen: stop]) if plen else b""))
            pos = stop
        self._pos = pos
        return out


def _read_exact(f, n):
    b = f.read(n)
    if len(b) != n:
        raise EOFError("truncated frame")
    return b


def read_frame(f, max_payload=DEFAULT_MAX_PAYLOAD):
    """Read one frame from a binary file object (e.g. ``sock.makefile("rb")``).

    Returns ``(header, payload)``, or None at a clean end of stream (no byte
    of a new frame). Raises EOFError on a truncated frame, FrameError on a
    broken one. Large payloads are read in pieces as they arrive.
    """
    prefix = f.read(8)
    if not prefix:
        return None
    if len(prefix) != 8:
        raise EOFError("truncated frame")
    hlen, plen = PREFIX.unpack(prefix)
    check_prefix(hlen, plen, max_payload)
    h = decode_header(_read_exact(f, hlen))
    if plen <= 256 << 10:
        return h, _read_exact(f, plen) if plen else b""
    parts, left = [], plen
    while left:
        b = f.read(min(left, 1 << 20))
        if not b:
            raise EOFError("truncated frame")
        parts.append(b)
        left -= len(b)
    return h, b"".join(parts)
