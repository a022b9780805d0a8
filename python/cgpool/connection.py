"""One client connection to ``cgpool serve``: the socket, the thread that
reads it, the writes, and requests with their replies.

A :class:`Connection` knows nothing of futures. It hands every frame about a
submission (``accepted``, ``running`` and the final outcomes) to the
``on_frame`` callback on its reader thread, routes the replies to requests
(``stats_reply``, ``status_reply``, ``ok``, ``error``, ``cancel_reply``) to
whoever waits for them, and calls ``on_lost`` once when the connection ends.
This is the split CPython makes between ``ProcessPoolExecutor`` (futures,
the user's calls) and its manager thread (the pipes): the executor stays
thin.

Threads: every method may be called from any thread. ``request`` and
``wait`` may also be called on the reader thread (from a future's callback):
that thread then reads and dispatches the frames that come before the reply
itself, in order, so a callback can wait for the supervisor without a
deadlock.

Fork: a connection belongs to the process that opened it. ``abandon`` (run
by the Executor's at-fork hook in a child) closes the child's copy of the
socket's descriptor without touching the socket itself, which the parent
keeps using.
"""

import collections
import os
import select
import socket as _socket
import sys
import threading
import time

from cgpool import protocol as _proto
from cgpool.errors import SupervisorError

__all__ = ["Connection", "CLIENT_NAME", "REQUEST_TIMEOUT"]

CLIENT_NAME = "cgpool-py/0.2"
REQUEST_TIMEOUT = 30.0
_RECV = 65536  # below malloc's mmap threshold: no mmap/munmap per recv

# Replies, by type, and which waiter key they answer: a cancel_reply echoes
# the id of the submission it cancels, the others the id of their request.
_REPLIES = {"stats_reply": "req", "status_reply": "req", "ok": "req", "error": "req",
            "cancel_reply": "cancel"}


class _Waiter:
    __slots__ = ("event", "header", "callback")

    def __init__(self, callback=None):
        self.event = threading.Event()
        self.header = None  # the reply; None if the connection ended first
        self.callback = callback


class _Timeout(Exception):
    pass


class Connection:
    """A handshaken connection to the supervisor at *path*.

    The constructor connects and does the handshake (blocking; raises
    SupervisorError if the supervisor cannot be reached or refuses, and
    ValueError for an unknown *pool*); ``start`` starts the reader thread.
    ``ids`` is the iterator of ids for submissions and requests (shared
    with the caller, so that ids are unique across the caller's
    connections).
    """

    def __init__(self, path, on_frame, on_lost, ids, pool=None, client=CLIENT_NAME):
        self.path = path
        self.pid = os.getpid()
        self.ids = ids
        self._on_frame = on_frame
        self._on_lost = on_lost
        self._lock = threading.Lock()
        self._waiters = {}
        self._outq = collections.deque()
        self._wlock = threading.Lock()
        self._writer = None
        self._writer_event = threading.Event()
        self._frames = collections.deque()
        self._buf = _proto.FrameBuffer(skip_accepted=True)
        self._read_end = None  # the read side's end: None, "eof" or an exception
        self._reader = None
        self._reader_ident = None
        self._closing = False
        self.lost = None  # why the connection ended unexpectedly (text), else None
        self.abandoned = False  # forgotten in a forked child
        self.ended = threading.Event()
        self.sock = None
        self.pools = []
        self.server = ""
        self._connect(pool)

    # ----- set-up

    def _connect(self, pool):
        path = self.path
        s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        try:
            s.settimeout(REQUEST_TIMEOUT)
            s.connect(path)
            s.sendall(_proto.encode_frame({"type": "hello", "version": _proto.PROTOCOL_VERSION,
                                           "client": CLIENT_NAME}))
            frames = []
            while not frames:
                data = s.recv(65536)
                if not data:
                    raise SupervisorError("cgpool serve at %s closed the connection during the handshake" % path)
                self._buf.feed(data)
                frames = self._buf.frames()
            h = frames[0][0]
            if h["type"] == "error":
                raise SupervisorError("cgpool serve refused the handshake: %s" % h.get("message", h.get("code")))
            if h["type"] != "welcome":
                raise SupervisorError("cgpool serve answered the handshake with %r" % h["type"])
            self.pools = list(h.get("pools") or [])
            self.server = h.get("server") or ""
            if pool is not None and self.pools and pool not in self.pools:
                raise ValueError("no pool named %r at %s (pools: %s)" % (pool, path, ", ".join(self.pools)))
            s.settimeout(None)
        except (OSError, _proto.FrameError) as e:
            s.close()
            raise SupervisorError("cannot talk to cgpool serve at %s: %s" % (path, e)) from e
        except BaseException:
            s.close()
            raise
        self.sock = s
        self._frames.extend(frames[1:])

    def start(self):
        """Start the reader thread."""
        self._reader = threading.Thread(target=self._run, name="cgpool-reader", daemon=True)
        self._reader.start()

    def on_reader_thread(self):
        return threading.get_ident() == self._reader_ident

    # ----- reading

    def _next_frame(self, deadline=None):
        """The next frame in arrival order: from those already parsed, else
        read from the socket. None at the end of the stream. Raises
        _Timeout at *deadline* (monotonic), and what reading raised (again,
        on every later call)."""
        while not self._frames:
            end = self._read_end
            if end is not None:
                if end == "eof":
                    return None
                raise end
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([self.sock], [], [], left)[0]:
                    raise _Timeout()
            try:
                data = self.sock.recv(_RECV)
                if not data:
                    self._read_end = "eof"
                    continue
                self._buf.feed(data)
                self._frames.extend(self._buf.frames())
            except (OSError, _proto.FrameError, EOFError) as e:
                self._read_end = e
        return self._frames.popleft()

    def _run(self):
        self._reader_ident = threading.get_ident()
        err = None
        try:
            while True:
                f = self._next_frame()
                if f is None:
                    break
                self._dispatch(f[0], f[1])
        except (OSError, _proto.FrameError, EOFError) as e:
            err = e
        except BaseException as e:  # a bug here must not hang every future
            err = e
            import traceback
            traceback.print_exc()
        self._end(err)

    def _dispatch(self, h, payload):
        t = h["type"]
        kind = _REPLIES.get(t)
        if kind is None:
            self._on_frame(h, payload)
            return
        tid = h.get("id", 0)
        with self._lock:
            w = self._waiters.pop((kind, tid), None) if tid else None
        if w is not None:
            w.header = h
            w.event.set()
            if w.callback is not None:
                w.callback(h)
            return
        if t == "error":
            print("cgpool: the supervisor reports: %s: %s" % (h.get("code"), h.get("message")), file=sys.stderr)

    def _end(self, err):
        with self._lock:
            if self.ended.is_set():
                return
            if not self._closing:
                self.lost = "%s" % (err or "cgpool serve closed the connection")
            waiters = list(self._waiters.values())
            self._waiters.clear()
            self.ended.set()
        for w in waiters:
            w.event.set()
            if w.callback is not None:
                w.callback(None)
        try:
            self._on_lost(self.lost)
        finally:
            self._writer_event.set()
            try:
                self.sock.close()
            except OSError:
                pass

    # ----- writing

    def send(self, data):
        """Write *data* (whole frames). Never blocks the reader thread (a
        helper thread writes for it: the supervisor may be blocked writing
        to us) and raises nothing: a broken connection is the reader's to
        report."""
        self._outq.append(data)
        if threading.get_ident() == self._reader_ident:
            self._wake_writer()
            return
        self._flush()

    def _flush(self):
        q = self._outq
        while q:
            if not self._wlock.acquire(blocking=False):
                return  # the thread that holds it writes ours too
            try:
                while q:
                    if len(q) == 1:
                        chunk = q.popleft()
                    else:
                        parts, n = [], 0
                        while q and n < (1 << 20):
                            b = q.popleft()
                            parts.append(b)
                            n += len(b)
                        chunk = b"".join(parts)
                    try:
                        self.sock.sendall(chunk)
                    except OSError:
                        q.clear()
                        try:
                            self.sock.shutdown(_socket.SHUT_RDWR)
                        except OSError:
                            pass
                        return
            finally:
                self._wlock.release()

    def _wake_writer(self):
        if self._writer is None:
            with self._lock:
                if self._writer is None:
                    self._writer = threading.Thread(target=self._write_loop, name="cgpool-writer", daemon=True)
                    self._writer.start()
        self._writer_event.set()

    def _write_loop(self):
        while not self.ended.is_set():
            self._writer_event.wait()
            self._writer_event.clear()
            if self._outq:
                self._flush()

    # ----- requests

    def request_async(self, header, callback=None, kind="req", flush=True):
        """Send a request and return its waiter; *callback(reply or None)*
        runs on the reader thread when the reply comes (None: the
        connection ended first). ``header["id"]`` is set if absent. With
        *flush* False the frame is only queued: ``flush()`` writes it (and
        others) in one write."""
        tid = header.get("id") or next(self.ids)
        header = dict(header, id=tid)
        w = _Waiter(callback)
        with self._lock:
            if self.ended.is_set():
                raise SupervisorError("the connection to cgpool serve is closed")
            old = self._waiters.get((kind, tid))
            if old is not None and callback is None:
                return old  # the same question is already asked (a second cancel)
            self._waiters[(kind, tid)] = w
        frame = _proto.encode_frame(_proto.canonical_header(header))
        if flush:
            self.send(frame)
        else:
            self._outq.append(frame)
        return w

    def flush(self):
        """Write what is queued (see request_async's *flush*)."""
        if threading.get_ident() == self._reader_ident:
            self._wake_writer()
        else:
            self._flush()

    def pump(self):
        """On the reader thread only: read and dispatch the next frame (for a
        caller that waits for what the frames bring, e.g. room in the
        backlog). Returns False once the connection has ended."""
        if not self.on_reader_thread():
            raise RuntimeError("Connection.pump runs on the reader thread only")
        try:
            f = self._next_frame()
        except (OSError, _proto.FrameError, EOFError):
            return False
        if f is None:
            return False
        self._dispatch(f[0], f[1])
        return True

    def wait(self, w, timeout=REQUEST_TIMEOUT, what="the request"):
        """Wait for a waiter's reply and return it. Raises SupervisorError
        on a timeout or if the connection ended first."""
        if self.on_reader_thread():
            deadline = time.monotonic() + timeout
            try:
                while not w.event.is_set():
                    f = self._next_frame(deadline)
                    if f is None:
                        break
                    self._dispatch(f[0], f[1])
            except _Timeout:
                pass
            except (OSError, _proto.FrameError, EOFError):
                pass  # the outer read loop sees it again and ends the connection
        else:
            w.event.wait(timeout)
        if w.header is None:
            with self._lock:
                for k, v in list(self._waiters.items()):
                    if v is w:
                        del self._waiters[k]
            if self.ended.is_set() or (self._read_end is not None):
                raise SupervisorError("the connection to cgpool serve was lost before it answered %s" % what)
            raise SupervisorError("cgpool serve did not answer %s within %gs" % (what, timeout))
        return w.header

    def request(self, header, timeout=REQUEST_TIMEOUT):
        """Send a request and return the reply header (``error`` replies
        raise SupervisorError)."""
        h = self.wait(self.request_async(header), timeout, header["type"])
        if h["type"] == "error":
            raise SupervisorError("%s failed: %s: %s" % (header["type"], h.get("code"), h.get("message")))
        return h

    # ----- ending

    def close(self, join=True):
        """End the connection (idempotent). The reader thread sees the end,
        calls on_lost(None) and exits; with *join*, wait for it (unless
        called on it)."""
        with self._lock:
            self._closing = True
        try:
            self.sock.shutdown(_socket.SHUT_RDWR)
        except OSError:
            pass
        if join and self._reader is not None and not self.on_reader_thread():
            self._reader.join(timeout=5.0)
        if self._reader is None:
            self._end(None)

    def abandon(self):
        """In a forked child: forget the connection, closing only the
        child's copy of the descriptor (never shutdown(), which would end
        the parent's connection too). Takes no lock: another thread of the
        parent may have held one at the fork."""
        self._closing = True
        self.abandoned = True
        s = self.sock
        if s is not None:
            try:
                os.close(s.detach())
            except OSError:
                pass
