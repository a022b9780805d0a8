"""cgpool.Executor: a concurrent.futures.Executor backed by ``cgpool serve``.

One Executor holds one connection to a supervisor (a private one it starts,
or a shared one given by ``socket``) and one background thread that reads
every frame and settles the futures. Submissions are written on the
caller's thread; when several threads (or ``map``) submit at once their
frames go out together in one write.

Thread safety: every public method may be called from any thread. Future
callbacks run on the reader thread, as concurrent.futures runs them on its
own threads; a callback may submit, but must not call methods that wait for
the supervisor's answer (``get_statistics``, ``clear_workers``).
"""

import atexit
import collections
import concurrent.futures
import concurrent.futures._base as _cfb
import itertools
import json
import math
import os
import pickle
import socket as _socket
import sys
import threading
import time
import weakref

from cgpool import errors as _errors
from cgpool import payload as _payload
from cgpool import protocol as _proto
from cgpool.errors import PoolClosed, SupervisorError
from cgpool.server import PrivateServer, go_duration

__all__ = ["Executor", "Future"]

CLIENT_NAME = "cgpool-py/0.1"
_REQUEST_TIMEOUT = 30.0
_BATCH_FRAMES = 256

_PENDING = _cfb.PENDING
_RUNNING = _cfb.RUNNING
_CANCELLED = _cfb.CANCELLED
_CANCELLED_AND_NOTIFIED = _cfb.CANCELLED_AND_NOTIFIED
_FINISHED = _cfb.FINISHED


class Future(concurrent.futures.Future):
    """A concurrent.futures.Future with cgpool's (and Deadpool's) extras.

    - ``pid``: the worker's pid once the task started (None before);
      ``leaf``: the cgroup it runs in;
    - ``add_pid_callback(fn)``: ``fn(future)`` when the pid is known (at once
      if it already is); runs on the executor's reader thread;
    - ``cancel()``: standard semantics: True only if the task had not
      started; a running task is left to finish;
    - ``cancel_and_kill_if_running()``: also kills a running task's whole
      cgroup; the future then ends cancelled.
    """

    def __init__(self):
        super().__init__()
        self._pid = None
        self.leaf = None
        self._pid_callbacks = []
        self._cg_id = 0
        self._cg_exec = None  # weakref to the Executor, once submitted

    @property
    def pid(self):
        """The pid of the worker that runs (or ran) the task, else None."""
        return self._pid

    def add_pid_callback(self, fn):
        """Call ``fn(self)`` once the task's worker pid is known."""
        with self._condition:
            if self._pid is None:
                self._pid_callbacks.append(fn)
                return
        _call_quietly(fn, self)

    def _set_pid(self, pid, leaf):
        with self._condition:
            self._pid = pid or None
            self.leaf = leaf or None
            cbs, self._pid_callbacks = self._pid_callbacks, []
        for fn in cbs:
            _call_quietly(fn, self)

    def cancel(self):
        """Cancel the task if it has not started. Returns False for a running
        or finished task (it is not stopped: see cancel_and_kill_if_running)."""
        if not super().cancel():
            return False
        self._notify_cancelled()
        ex = self._cg_exec() if self._cg_exec is not None else None
        if ex is not None:
            ex._send_cancel(self._cg_id, "soft")
        return True

    def cancel_and_kill_if_running(self, sig=None):
        """Cancel the task, killing it (its whole cgroup) if it is running.
        *sig* is accepted for Deadpool compatibility: the supervisor always
        kills the cgroup outright. Returns True unless the task had already
        finished."""
        if self.done():
            return self.cancelled()
        if concurrent.futures.Future.cancel(self):
            self._notify_cancelled()
        ex = self._cg_exec() if self._cg_exec is not None else None
        if ex is not None:
            ex._send_cancel(self._cg_id, "hard")
        return True

    def _notify_cancelled(self):
        with self._condition:
            if self._state == _CANCELLED:
                self.set_running_or_notify_cancel()

    # The reader thread's side.

    def _mark_running(self):
        with self._condition:
            if self._state == _PENDING:
                self.set_running_or_notify_cancel()

    def _finish_cancelled(self):
        """The supervisor says cancelled: end the future so, even if it was
        already running (a hard cancel)."""
        with self._condition:
            if self._state in (_FINISHED, _CANCELLED_AND_NOTIFIED):
                return
            if self._state == _CANCELLED:
                self.set_running_or_notify_cancel()
                return
            self._state = _CANCELLED_AND_NOTIFIED
            for waiter in self._waiters:
                waiter.add_cancelled(self)
            self._condition.notify_all()
        self._invoke_callbacks()

    def _settle(self, result=None, exception=None):
        try:
            if exception is not None:
                self.set_exception(exception)
            else:
                self.set_result(result)
        except concurrent.futures.InvalidStateError:
            pass  # cancelled here meanwhile


def _call_quietly(fn, fut):
    try:
        fn(fut)
    except Exception:
        import traceback
        print("cgpool: exception in pid callback %r:" % (fn,), file=sys.stderr)
        traceback.print_exc()


class _Request:
    __slots__ = ("event", "header")

    def __init__(self):
        self.event = threading.Event()
        self.header = None


def _ms(seconds, what):
    if seconds is None or seconds == 0:
        return 0
    if seconds < 0:
        raise ValueError("%s must be >= 0, got %r" % (what, seconds))
    return max(1, int(math.ceil(seconds * 1000)))


def _default_workers():
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


_live = weakref.WeakSet()


def _installed_in_site(path):
    import site
    dirs = []
    try:
        dirs += site.getsitepackages()
    except AttributeError:
        pass
    try:
        dirs.append(site.getusersitepackages())
    except AttributeError:
        pass
    real = os.path.realpath(path)
    return any(os.path.realpath(d) == real for d in dirs)


class Executor(concurrent.futures.Executor):
    """A process pool whose workers each live in their own cgroup, run by
    ``cgpool serve``. It never breaks: a worker that dies fails only its own
    task (ProcessError, OutOfMemoryError), a timeout kills the task's whole
    cgroup (TimeoutError), and the pool goes on.

    Pool options (Deadpool's names; None means the supervisor's default):
    ``max_workers`` (default: the CPUs this process may use), ``min_workers``
    (default max_workers; idle workers above it retire after
    ``idle_timeout`` seconds), ``max_tasks_per_child``,
    ``max_worker_memory_bytes`` (retire a worker whose cgroup uses this much
    after a task), ``malloc_trim_rss_memory_threshold_bytes`` (ask the worker
    to give memory back above this), ``initializer``/``initargs``,
    ``finalizer``/``finalargs``, ``max_backlog`` (submit blocks while this
    many tasks wait to start), ``shutdown_wait`` and
    ``shutdown_cancel_futures`` (what ``with`` passes to ``shutdown``),
    ``propagate_environ`` (a mapping applied to every worker started after
    it changed, before the initializer), ``memory_max`` and ``pids_max`` (the
    cgroup limits of each worker), ``default_timeout`` (seconds),
    ``spare_workers`` (default 1: workers kept started beyond max_workers,
    so that a worker that dies is replaced by one that has already started;
    a Python worker takes tens of milliseconds to start).

    ``socket``: use a running ``cgpool serve`` at this path instead of
    starting a private one (``pool`` names the pool; its shape is the
    server's configuration, so the pool options above are refused then).
    ``cgpool_bin``: the binary for the private supervisor (default
    ``$CGPOOL_BIN`` or ``cgpool`` on PATH); ``log_level``: its log level
    (default ``$CGPOOL_LOG_LEVEL`` or "warn"; its logs go to stderr).

    ``submit`` keywords consumed (not passed to the function):
    ``cgpool_timeout`` (seconds from the start of the task),
    ``cgpool_priority`` (int >= 0, lower runs sooner), ``cgpool_queue_timeout``
    (seconds it may wait to start), ``cgpool_memory_max`` (bytes, at most the
    pool's), ``cgpool_env`` (environment additions for this task only).
    """

    _submit_keywords = ("cgpool_timeout", "cgpool_priority", "cgpool_queue_timeout",
                        "cgpool_memory_max", "cgpool_env")

    def __init__(self, max_workers=None, min_workers=None, max_tasks_per_child=None,
                 max_worker_memory_bytes=None, malloc_trim_rss_memory_threshold_bytes=None,
                 initializer=None, initargs=(), finalizer=None, finalargs=(),
                 max_backlog=1000, shutdown_wait=None, shutdown_cancel_futures=None,
                 propagate_environ=None, memory_max=None, pids_max=None,
                 idle_timeout=None, default_timeout=None, socket=None, pool=None,
                 cgpool_bin=None, log_level=None, spare_workers=1):
        if max_workers is not None and max_workers <= 0:
            raise ValueError("max_workers must be greater than 0")
        if min_workers is not None and min_workers < 0:
            raise ValueError("min_workers must be >= 0")
        if max_backlog is not None and max_backlog < 0:
            raise ValueError("max_backlog must be >= 0")
        for name, f in (("initializer", initializer), ("finalizer", finalizer)):
            if f is not None and not callable(f):
                raise TypeError("%s must be callable" % name)
        self.shutdown_wait = shutdown_wait
        self.shutdown_cancel_futures = shutdown_cancel_futures
        self.propagate_environ = propagate_environ
        self.max_backlog = max_backlog or 0
        self._lock = threading.Lock()
        self._room = threading.Condition(self._lock)
        self._room_waiters = 0
        self._futures = {}
        self._requests = {}
        self._queued = 0
        self._ids = itertools.count(1)
        self._closed = False
        self._finishing = False
        self._finish_id = 0
        self._finished = threading.Event()
        self._lost = None
        self._outq = collections.deque()
        self._reader_ident = None
        self._writer = None
        self._wlock = threading.Lock()
        self._server = None
        self._sock = None
        self._reader = None
        self._env_snapshot = dict(propagate_environ) if propagate_environ is not None else None
        self._static_env = {}

        if socket is None:
            self.max_workers = max_workers or _default_workers()
            self.pool_name = pool or "default"
            self._static_env = self._startup_env(initializer, initargs, finalizer, finalargs)
            cfg = {"name": self.pool_name, "kind": "worker",
                   "command": [sys.executable, "-m", "cgpool.worker"],
                   "max_workers": self.max_workers,
                   "max_backlog": self.max_backlog or 0,
                   "spare_workers": int(spare_workers or 0),
                   "env": self._pool_env(),
                   # propagate_environ is this process's own environment
                   # for its own workers: any name goes.
                   "allow_env": ["*"]}
            if os.geteuid() == 0:
                # This private supervisor serves this process alone: its
                # workers run as we do, root included (a root daemon's
                # worker pools need it said).
                cfg["allow_root"] = True
            if min_workers is not None:
                cfg["min_workers"] = min(min_workers, self.max_workers)
            for key, value in (("max_tasks_per_child", max_tasks_per_child),
                               ("max_worker_memory_bytes", max_worker_memory_bytes),
                               ("trim_threshold_bytes", malloc_trim_rss_memory_threshold_bytes),
                               ("memory_max", memory_max), ("pids_max", pids_max)):
                if value:
                    cfg[key] = int(value)
            if idle_timeout is not None:
                cfg["idle_delay"] = go_duration(idle_timeout)
            if default_timeout:
                cfg["default_timeout"] = go_duration(default_timeout)
            self._prep_blob = None
            self._server = PrivateServer(cfg, binary=cgpool_bin,
                                         log_level=log_level or os.environ.get("CGPOOL_LOG_LEVEL") or "warn")
            self._server.start()
            path = self._server.socket
        else:
            given = [n for n, v in (("max_workers", max_workers), ("min_workers", min_workers),
                                    ("max_tasks_per_child", max_tasks_per_child),
                                    ("max_worker_memory_bytes", max_worker_memory_bytes),
                                    ("malloc_trim_rss_memory_threshold_bytes", malloc_trim_rss_memory_threshold_bytes),
                                    ("initializer", initializer), ("finalizer", finalizer),
                                    ("propagate_environ", propagate_environ),
                                    ("memory_max", memory_max), ("pids_max", pids_max),
                                    ("idle_timeout", idle_timeout), ("default_timeout", default_timeout))
                     if v is not None]
            if given:
                raise ValueError("with socket=, the pool's shape is the server's configuration; "
                                 "these options cannot be given: %s" % ", ".join(given))
            self.max_workers = None
            self.pool_name = pool
            self._prep_blob = _payload.dumps(_payload.preparation_data())
            path = socket
        try:
            self._connect(path)
        except BaseException:
            if self._server is not None:
                self._server.close(timeout=5.0)
            raise
        self._pool_json = json.dumps(self.pool_name)
        # A private supervisor's backlog is ours alone and the client bounds
        # it (max_backlog, the same bound as the server's): the server never
        # has to hold a submission. A shared one may be full of other
        # clients' work, so there submit waits for room (hold).
        self._hold = socket is not None or not self.max_backlog
        self._submit_tail = ',"hold":true}' if self._hold else '}'
        self._reader = threading.Thread(target=self._read_loop, name="cgpool-reader", daemon=True)
        self._reader.start()
        _live.add(self)

    # ----- set-up

    @staticmethod
    def _startup_env(initializer, initargs, finalizer, finalargs):
        env = {}
        here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        if not _installed_in_site(here):
            # Not installed (a source tree on sys.path): let `-m cgpool.worker`
            # find the package.
            pp = os.environ.get("PYTHONPATH")
            env["PYTHONPATH"] = here + (os.pathsep + pp if pp else "")
        env[_payload.ENV_MAIN] = _payload.encode_env_blob(_payload.preparation_data())
        try:
            if initializer is not None:
                env[_payload.ENV_INIT] = _payload.encode_env_blob((initializer, tuple(initargs or ())))
            if finalizer is not None:
                env[_payload.ENV_FINAL] = _payload.encode_env_blob((finalizer, tuple(finalargs or ())))
        except Exception as e:
            raise pickle.PicklingError("the initializer or finalizer (and its args) must be picklable: %s" % e) from e
        return env

    def _pool_env(self):
        env = dict(self._env_snapshot or {})
        env.update(self._static_env)
        return {str(k): str(v) for k, v in env.items()}

    def _connect(self, path):
        s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        try:
            s.connect(path)
            s.sendall(_proto.encode_frame({"type": "hello", "version": _proto.PROTOCOL_VERSION,
                                           "client": CLIENT_NAME}))
            s.settimeout(_REQUEST_TIMEOUT)
            buf = _proto.FrameBuffer()
            frames = []
            while not frames:
                data = s.recv(65536)
                if not data:
                    raise SupervisorError("cgpool serve at %s closed the connection during the handshake" % path)
                buf.feed(data)
                frames = buf.frames()
            h = frames[0][0]
            if h["type"] == "error":
                raise SupervisorError("cgpool serve refused the handshake: %s" % h.get("message", h.get("code")))
            if h["type"] != "welcome":
                raise SupervisorError("cgpool serve answered the handshake with %r" % h["type"])
            pools = h.get("pools") or []
            if self.pool_name is None:
                if not pools:
                    raise SupervisorError("cgpool serve at %s has no pools" % path)
                self.pool_name = pools[0]
            elif pools and self.pool_name not in pools:
                raise ValueError("no pool named %r at %s (pools: %s)" % (self.pool_name, path, ", ".join(pools)))
            s.settimeout(None)
        except (OSError, _proto.FrameError) as e:
            s.close()
            raise SupervisorError("cannot talk to cgpool serve at %s: %s" % (path, e)) from e
        except BaseException:
            s.close()
            raise
        self._sock = s
        self._early = frames[1:]
        self._early_buf = buf

    # ----- writing

    def _send(self, data):
        """Queue bytes for the socket and write whatever is queued unless
        another thread is writing (it will take ours too). Raises nothing:
        a broken connection is the reader's to report."""
        self._outq.append(data)
        if threading.get_ident() == self._reader_ident:
            # The reader must never block in a write: the supervisor may be
            # blocked writing to us. A helper thread writes for it.
            self._wake_writer()
            return
        self._flush()

    def _flush(self):
        while self._outq:
            if not self._wlock.acquire(blocking=False):
                return
            try:
                q = self._outq
                while q:
                    if len(q) == 1:
                        chunk = q.popleft()
                    else:
                        parts = []
                        n = 0
                        while q and n < (1 << 20):
                            b = q.popleft()
                            parts.append(b)
                            n += len(b)
                        chunk = b"".join(parts)
                    try:
                        self._sock.sendall(chunk)
                    except OSError as e:
                        q.clear()
                        self._connection_broken(e)
                        return
            finally:
                self._wlock.release()

    def _wake_writer(self):
        with self._lock:
            if self._writer is None:
                self._writer_event = threading.Event()
                self._writer = threading.Thread(target=self._write_loop, name="cgpool-writer", daemon=True)
                self._writer.start()
        self._writer_event.set()

    def _write_loop(self):
        while not self._finished.is_set():
            self._writer_event.wait(1.0)
            self._writer_event.clear()
            if self._outq:
                self._flush()

    def _connection_broken(self, err):
        try:
            self._sock.shutdown(_socket.SHUT_RDWR)
        except OSError:
            pass

    def _send_cancel(self, tid, mode):
        if tid and not self._finished.is_set():
            self._send(_proto.encode_frame({"type": "cancel", "id": tid, "mode": mode}))

    # ----- submitting

    def submit(self, fn, /, *args, **kwargs):
        """Schedule ``fn(*args, **kwargs)`` and return a Future. See the class
        doc for the ``cgpool_*`` keywords. A function or argument that cannot
        be pickled fails the future (the pool is unaffected). Raises
        PoolClosed after shutdown and ValueError for a negative priority."""
        if kwargs and not kwargs.keys().isdisjoint(self._submit_keywords):
            opts = {k: kwargs.pop(k) for k in self._submit_keywords if k in kwargs}
            return self._submit(fn, args, kwargs, opts.get("cgpool_timeout"),
                                opts.get("cgpool_priority") or 0, opts.get("cgpool_queue_timeout"),
                                opts.get("cgpool_memory_max"), opts.get("cgpool_env"))
        return self._submit(fn, args, kwargs)

    def _header(self, tid, timeout=None, priority=0, queue_timeout=None, memory_max=None, env=None):
        if timeout is None and not priority and queue_timeout is None and not memory_max and not env:
            return '{"type":"submit","id":%d,"pool":%s%s' % (tid, self._pool_json, self._submit_tail)
        if not isinstance(priority, int) or isinstance(priority, bool):
            raise TypeError("priority must be an int, got %r" % (priority,))
        if priority < 0:
            raise ValueError("priority must be >= 0, but was %d" % priority)
        h = {"type": "submit", "id": tid, "pool": self.pool_name, "priority": priority,
             "timeout_ms": _ms(timeout, "timeout"), "queue_timeout_ms": _ms(queue_timeout, "queue timeout"),
             "memory_max": int(memory_max or 0),
             "env": {str(k): str(v) for k, v in (env or {}).items()}, "hold": self._hold}
        return _proto.encode_header(_proto.canonical_header(h)).decode()

    def _check_open(self):
        if self._closed:
            raise PoolClosed("The pool is closed. No more tasks can be submitted.")
        if self._lost is not None:
            raise SupervisorError("the connection to cgpool serve is lost: %s" % self._lost)

    def _submit(self, fn, args, kwargs, timeout=None, priority=0, queue_timeout=None,
                memory_max=None, env=None):
        self._check_open()
        if self._env_snapshot is not None:
            self._sync_environ()
        tid = next(self._ids)
        header = self._header(tid, timeout, priority, queue_timeout, memory_max, env).encode()
        fut = Future()
        try:
            data = _payload.encode_call(fn, args, kwargs, self._prep_blob)
        except Exception as e:
            fut.set_exception(_pickling_error(fn, e))
            return fut
        if len(data) > _proto.DEFAULT_MAX_PAYLOAD:
            fut.set_exception(ValueError("the pickled task is too large (%d bytes > %d)"
                                         % (len(data), _proto.DEFAULT_MAX_PAYLOAD)))
            return fut
        frame = _proto.PREFIX.pack(len(header), len(data)) + header + data
        self._register(tid, fut, block=True)
        self._send(frame)
        return fut

    def _register(self, tid, fut, block):
        fut._cg_id = tid
        fut._cg_exec = self._weakself
        with self._lock:
            if block and self.max_backlog and self._queued >= self.max_backlog \
                    and threading.current_thread() is not self._reader:
                self._room_waiters += 1
                try:
                    while self._queued >= self.max_backlog and not self._closed and self._lost is None:
                        self._room.wait()
                finally:
                    self._room_waiters -= 1
            if self._closed:
                raise PoolClosed("The pool is closed. No more tasks can be submitted.")
            if self._lost is not None:
                raise SupervisorError("the connection to cgpool serve is lost: %s" % self._lost)
            self._futures[tid] = fut
            self._queued += 1

    @property
    def _weakself(self):
        ref = self.__dict__.get("_wref")
        if ref is None:
            ref = self.__dict__["_wref"] = weakref.ref(self)
        return ref

    def map(self, fn, *iterables, timeout=None, chunksize=1):
        """Like Executor.map (results in order; *timeout* bounds the whole
        iteration). Submissions go out in batches; *chunksize* is accepted
        and ignored."""
        end = None if timeout is None else timeout + time.monotonic()
        fs = self._submit_many(fn, zip(*iterables))

        def results():
            try:
                fs.reverse()
                while fs:
                    if end is None:
                        yield _result(fs.pop())
                    else:
                        yield _result(fs.pop(), end - time.monotonic())
            finally:
                for f in fs:
                    f.cancel()
        return results()

    def _submit_many(self, fn, arglists):
        self._check_open()
        if self._env_snapshot is not None:
            self._sync_environ()
        fs, batch = [], []
        try:
            for args in arglists:
                tid = next(self._ids)
                header = ('{"type":"submit","id":%d,"pool":%s%s' % (tid, self._pool_json, self._submit_tail)).encode()
                fut = Future()
                fs.append(fut)
                try:
                    data = _payload.encode_call(fn, args, {}, self._prep_blob)
                except Exception as e:
                    fut.set_exception(_pickling_error(fn, e))
                    continue
                full = self.max_backlog and self._queued >= self.max_backlog
                if batch and (full or len(batch) >= _BATCH_FRAMES):
                    self._send(b"".join(batch))
                    batch = []
                self._register(tid, fut, block=True)
                batch.append(_proto.PREFIX.pack(len(header), len(data)) + header + data)
        finally:
            if batch:
                self._send(b"".join(batch))
        return fs

    # ----- reading

    def _read_loop(self):
        self._reader_ident = threading.get_ident()
        err = None
        buf = self._early_buf
        try:
            for h, p in self._early:
                self._dispatch(h, p)
            self._early = None
            recv = self._sock.recv
            while True:
                data = recv(262144)
                if not data:
                    break
                buf.feed(data)
                for h, p in buf.frames():
                    self._dispatch(h, p)
        except (OSError, _proto.FrameError, EOFError) as e:
            err = e
        except BaseException as e:  # a bug here must not hang every future
            err = e
            import traceback
            traceback.print_exc()
        self._connection_lost(err)

    def _dispatch(self, h, payload):
        t = h["type"]
        tid = h.get("id", 0)
        if t == "accepted":
            return
        if t == "running":
            fut = self._futures.get(tid)
            if fut is None:
                return
            with self._lock:
                self._started_locked(fut)
            fut._mark_running()
            fut._set_pid(h.get("pid"), h.get("leaf"))
            return
        if t in _proto.FINAL_TYPES:
            with self._lock:
                fut = self._futures.pop(tid, None)
                if fut is None:
                    return
                self._started_locked(fut)
                done = self._closed and not self._futures
            self._settle(fut, t, h, payload)
            if done:
                self._begin_finish()
            return
        if t == "cancel_reply":
            return
        req = self._requests.pop(tid, None) if tid else None
        if req is not None:
            req.header = h
            req.event.set()
            if tid == self._finish_id and t in ("ok", "error"):
                self._end()
            return
        if t == "error":
            print("cgpool: the supervisor reports: %s: %s" % (h.get("code"), h.get("message")),
                  file=sys.stderr)

    def _started_locked(self, fut):
        if not getattr(fut, "_cg_started", False):
            fut._cg_started = True
            self._queued -= 1
            if self._room_waiters:
                self._room.notify()

    def _settle(self, fut, t, h, payload):
        if t == "result":
            try:
                value = pickle.loads(payload)
            except BaseException as e:
                fut._settle(exception=_errors.TaskError(
                    "the task's result could not be unpickled here: %s: %s" % (type(e).__name__, e)))
                return
            fut._settle(value)
        elif t == "task_error":
            fut._settle(exception=_task_exception(h, payload))
        elif t == "timeout":
            fut._settle(exception=_errors.timeout_error_from(h))
        elif t == "process_error":
            fut._settle(exception=_errors.process_error_from(h))
        elif t == "cancelled":
            fut._finish_cancelled()
        elif t == "queue_timeout":
            fut._settle(exception=_errors.QueueTimeoutError(
                "Task did not start within its queue timeout; it never ran"))
        elif t == "rejected":
            fut._settle(exception=_errors.rejected_error_from(h))

    def _connection_lost(self, err):
        """End of the connection: fail what is still open, wake everyone,
        and stop the private supervisor."""
        with self._lock:
            expected = self._finishing
            if not expected:
                self._lost = "%s" % (err or "cgpool serve closed the connection")
            futs = list(self._futures.values())
            self._futures.clear()
            reqs = list(self._requests.values())
            self._requests.clear()
            self._room.notify_all()
        if futs:
            why = self._lost or "the supervisor shut down"
            if self._server is not None and self._server.proc is not None:
                code = self._server.proc.poll()
                if code is not None:
                    why += " (cgpool serve exited with status %s)" % code
                    out = self._server.output().strip()
                    if out:
                        why += "; its last output:\n" + out[-4000:]
            for fut in futs:
                fut._settle(exception=SupervisorError("the task's outcome is unknown: %s" % why))
        for r in reqs:
            r.event.set()
        self._end()

    # ----- requests

    def _request(self, header, timeout=_REQUEST_TIMEOUT):
        if threading.current_thread() is self._reader:
            raise RuntimeError("this method waits for the supervisor and cannot run in a future's callback")
        tid = next(self._ids)
        header = dict(header, id=tid)
        req = _Request()
        with self._lock:
            if self._lost is not None or self._finished.is_set():
                raise SupervisorError("the connection to cgpool serve is closed")
            self._requests[tid] = req
        self._send(_proto.encode_frame(_proto.canonical_header(header)))
        if not req.event.wait(timeout):
            with self._lock:
                self._requests.pop(tid, None)
            raise SupervisorError("cgpool serve did not answer %s within %gs" % (header["type"], timeout))
        h = req.header
        if h is None:
            raise SupervisorError("the connection to cgpool serve was lost")
        if h["type"] == "error":
            raise SupervisorError("%s failed: %s: %s" % (header["type"], h.get("code"), h.get("message")))
        return h

    def get_statistics(self):
        """The pool's statistics: Deadpool's eight keys (tasks_received,
        tasks_launched, tasks_failed, worker_processes_created,
        max_workers_busy_concurrently, worker_processes_still_alive,
        worker_processes_idle, worker_processes_busy) plus cgpool's own."""
        return self._request({"type": "stats", "pool": self.pool_name}).get("stats") or {}

    statistics = get_statistics

    def status(self):
        """The pool's workers as the supervisor sees them (pid, cgroup,
        state, memory)."""
        return self._request({"type": "status", "pool": self.pool_name}).get("status") or {}

    def _sync_environ(self, force=False):
        current = dict(self.propagate_environ or {})
        if not force and current == self._env_snapshot:
            return
        self._env_snapshot = current
        env = self._pool_env() if self._server is not None else {str(k): str(v) for k, v in current.items()}
        frame = _proto.encode_frame({"type": "set_env", "id": next(self._ids), "pool": self.pool_name,
                                     "env": env, "replace": self._server is not None})
        self._send(frame)

    def clear_workers(self):
        """Replace the pool's workers (idle ones now, busy ones after their
        task), so that a changed ``propagate_environ`` reaches all of them."""
        if self._env_snapshot is not None:
            self._sync_environ()
        self._request({"type": "recycle", "pool": self.pool_name})

    recycle = clear_workers

    # ----- shutting down

    def shutdown(self, wait=True, *, cancel_futures=False):
        """Stop taking tasks. What happens to the others (Deadpool's matrix):

        ===== ============== ==============================================
        wait  cancel_futures effect
        ===== ============== ==============================================
        True  False          queued and running tasks all run; returns after
        True  True           queued ones are cancelled, running ones finish
        False True           queued ones cancelled, running ones killed
        False False          queued ones cancelled, running ones finish
        ===== ============== ==============================================

        With ``wait`` it returns once every task has ended and the private
        supervisor (if any) has stopped, its workers having run their
        finalizers. Idempotent.
        """
        with self._lock:
            self._closed = True
            self._room.notify_all()
            pending = list(self._futures.values())
            empty = not self._futures
        if cancel_futures or not wait:
            frames = []
            for fut in pending:
                if not getattr(fut, "_cg_started", False) and super(Future, fut).cancel():
                    fut._notify_cancelled()
                    frames.append(_proto.encode_frame({"type": "cancel", "id": fut._cg_id, "mode": "soft"}))
                elif not wait and cancel_futures:
                    frames.append(_proto.encode_frame({"type": "cancel", "id": fut._cg_id, "mode": "hard"}))
            if frames and not self._finished.is_set():
                self._send(b"".join(frames))
        if empty:
            self._begin_finish()
        if wait:
            concurrent.futures.wait(pending)
            if not self._finished.wait(_REQUEST_TIMEOUT):
                self._end()  # the supervisor did not answer: stop it the hard way

    def _begin_finish(self):
        """No task is open and no more will come: stop the supervisor (if
        ours) gracefully, or close the connection to a shared one."""
        with self._lock:
            if self._finishing:
                return
            self._finishing = True
        if self._server is None or self._lost is not None:
            self._end()
            return
        tid = next(self._ids)
        req = _Request()
        with self._lock:
            self._requests[tid] = req
            self._finish_id = tid
        self._send(_proto.encode_frame({"type": "shutdown", "id": tid, "wait": True, "cancel_futures": True}))

    def _end(self):
        """Close the connection and stop the private supervisor. Idempotent;
        runs on the reader thread or on a shutting-down caller."""
        with self._lock:
            if self._finished.is_set() or getattr(self, "_ending", False):
                return
            self._ending = True
            self._finishing = True
        try:
            self._sock.shutdown(_socket.SHUT_RDWR)
        except OSError:
            pass
        if self._server is not None:
            self._server.close()
        if threading.current_thread() is not self._reader and self._reader is not None:
            self._reader.join(timeout=5.0)
        try:
            self._sock.close()
        except OSError:
            pass
        self._finished.set()
        _live.discard(self)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc_val, exc_tb):
        kwargs = {}
        if self.shutdown_wait is not None:
            kwargs["wait"] = self.shutdown_wait
        if self.shutdown_cancel_futures is not None:
            kwargs["cancel_futures"] = self.shutdown_cancel_futures
        self.shutdown(**kwargs)
        return False


def _result(fut, timeout=None):
    try:
        return fut.result(timeout)
    finally:
        del fut


def _pickling_error(fn, e):
    if isinstance(e, pickle.PicklingError):
        return e
    err = pickle.PicklingError("cannot pickle the task %r or its arguments: %s: %s"
                               % (getattr(fn, "__qualname__", fn), type(e).__name__, e))
    err.__cause__ = e
    return err


def _task_exception(h, payload):
    tb = h.get("traceback") or ""
    message = h.get("message") or "the task raised an exception"
    exc = None
    if payload:
        try:
            exc = pickle.loads(payload)
        except BaseException as e:
            exc = _errors.TaskError("%s (its exception could not be unpickled here: %s: %s)"
                                    % (message, type(e).__name__, e), tb)
    if not isinstance(exc, BaseException):
        exc = _errors.TaskError(message, tb)
    if tb:
        exc.__cause__ = _errors.RemoteTraceback('\n"""\n%s"""' % tb)
    return exc


def _at_exit():
    """At interpreter exit, finish what executors still have (as
    concurrent.futures does): never-shut-down ones are shut down with wait;
    ones shut down without wait get their wind-down."""
    for ex in list(_live):
        try:
            if not ex._closed:
                ex.shutdown(wait=True)
            else:
                ex._finished.wait(_REQUEST_TIMEOUT)
                ex._end()
        except Exception:
            pass


try:
    threading._register_atexit(_at_exit)
except (AttributeError, RuntimeError):
    atexit.register(_at_exit)
