"""cgpool.Executor: a concurrent.futures.Executor backed by ``cgpool serve``.

The Executor keeps the futures, the client side of the backlog, and the
shutdown; everything about the socket (the reader thread, writes, requests
and their replies) is its :class:`cgpool.connection.Connection`, and the
private supervisor is a :class:`cgpool.server.PrivateServer`. Submissions are
written on the caller's thread; when several threads (or ``map``) submit at
once their frames go out together in one write.

Threads: every public method may be called from any thread, and from a
future's callback (callbacks run on the connection's reader thread, as
concurrent.futures runs them on its own threads; a callback that waits for
the supervisor is served by that thread in the meantime).

Fork: an Executor belongs to the process that created it. In a forked child
(``os.fork``, multiprocessing's fork start method, a fork
ProcessPoolExecutor) it is disarmed at once by an ``os.register_at_fork``
hook: the child closes its copies of the descriptors and never writes to the
parent's connection or touches the parent's supervisor; the hooks that run at
the child's exit do nothing; ``shutdown`` there is a no-op and other calls
raise RuntimeError.
"""

import atexit
import concurrent.futures
import itertools
import json
import logging
import os
import pickle
import sys
import threading
import time
import weakref

from cgpool import errors as _errors
from cgpool import payload as _payload
from cgpool import protocol as _proto
from cgpool.connection import REQUEST_TIMEOUT, Connection
from cgpool.errors import PoolClosed, SupervisorError, TaskLost
from cgpool.future import Future
from cgpool.options import MAX_MS, SUBMIT_OPTIONS, check_bytes, check_env, check_priority, seconds_ms
from cgpool.server import PrivateServer, go_duration

__all__ = ["Executor", "Future", "DEADPOOL_STATISTICS"]

_log = logging.getLogger("cgpool")
_BATCH_FRAMES = 256

# get_statistics() returns exactly these, in Deadpool's order.
DEADPOOL_STATISTICS = (
    "tasks_received", "tasks_launched", "tasks_failed", "worker_processes_created",
    "max_workers_busy_concurrently", "worker_processes_still_alive",
    "worker_processes_busy", "worker_processes_idle",
)
_GAUGES = ("worker_processes_still_alive", "worker_processes_busy", "worker_processes_idle",
           "tasks_queued", "tasks_running")

def _default_workers():
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


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


MISSING_GUARD = """An attempt has been made to start a cgpool pool while a worker was
importing the main module %s to run your tasks.

This probably means that the pool is created at the top level of the
script, and you have forgotten to use the proper idiom in the main module:

    if __name__ == "__main__":
        with cgpool.Executor() as ex:
            ...

Workers import the main module (as multiprocessing's spawn start method
does) to find the functions you submit: code outside that guard runs again
in every worker, and a pool started there is refused."""


def _check_not_importing_main():
    """Refuse a pool started while a cgpool worker imports the caller's
    main module (multiprocessing.spawn._check_not_importing_main does the
    same for spawn)."""
    w = sys.modules.get("cgpool.worker")
    main = getattr(w, "importing_main", None) if w is not None else None
    if main:
        raise _errors.MainGuardError(MISSING_GUARD % main)


_FORKED = ("this cgpool %s was created in process %d; a forked child (process %d) cannot use it: "
           "create a new one in the child")

_live = weakref.WeakSet()


class Executor(concurrent.futures.Executor):
    """A process pool whose workers each live in their own cgroup, run by
    ``cgpool serve``. It never breaks: a worker that dies fails only its own
    task (ProcessError, OutOfMemoryError), a timeout kills the task's whole
    cgroup (TimeoutError), and the pool goes on; if its private supervisor
    itself dies, the tasks then in flight fail with TaskLost and a new
    supervisor takes over.

    Pool options (Deadpool's names; None means the supervisor's default):
    ``max_workers`` (default: the CPUs this process may use), ``min_workers``
    (default max_workers; idle workers above it retire after
    ``idle_timeout`` seconds, default 10), ``max_tasks_per_child``,
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
    a Python worker takes tens of milliseconds to start), ``start_workers``
    (how many workers start with the pool, ``"max"`` for max_workers;
    default min_workers; those first workers wait for their first task
    however long, then retire as the others do: Deadpool's way).

    ``socket``: use a running ``cgpool serve`` at this path instead of
    starting a private one (``pool`` names the pool; its shape is the
    server's configuration, so the pool options above are refused then).
    ``cgpool_bin``: the binary for the private supervisor (default
    ``$CGPOOL_BIN`` or ``cgpool`` on PATH); ``log_level``: its log level
    (default ``$CGPOOL_LOG_LEVEL`` or "warn"; its logs go to stderr).

    ``submit`` keywords consumed (not passed to the function), each checked
    at once (TypeError, ValueError): ``cgpool_timeout`` (seconds from the
    start of the task), ``cgpool_priority`` (int >= 0, lower runs sooner),
    ``cgpool_queue_timeout`` (seconds it may wait to start),
    ``cgpool_memory_max`` (bytes, at most the pool's), ``cgpool_env``
    (environment additions for this task only). Any other keyword that
    starts with ``cgpool_`` is refused (TypeError), so a misspelt option
    never reaches the function.

    Tasks' output: with a private supervisor, workers write to this
    process's own stdout and stderr (the same open files, as a forked child
    would); with a shared one, to that supervisor's log.
    """

    _kind = "Executor"

    def __init__(self, max_workers=None, min_workers=None, max_tasks_per_child=None,
                 max_worker_memory_bytes=None, malloc_trim_rss_memory_threshold_bytes=None,
                 initializer=None, initargs=(), finalizer=None, finalargs=(),
                 max_backlog=1000, shutdown_wait=None, shutdown_cancel_futures=None,
                 propagate_environ=None, memory_max=None, pids_max=None,
                 idle_timeout=None, default_timeout=None, socket=None, pool=None,
                 cgpool_bin=None, log_level=None, spare_workers=1, start_workers=None):
        _check_not_importing_main()
        if max_workers is not None and max_workers <= 0:
            raise ValueError("max_workers must be greater than 0")
        if min_workers is not None and min_workers < 0:
            raise ValueError("min_workers must be >= 0")
        if max_backlog is not None and max_backlog < 0:
            raise ValueError("max_backlog must be >= 0")
        for name, f in (("initializer", initializer), ("finalizer", finalizer)):
            if f is not None and not callable(f):
                raise TypeError("%s must be callable" % name)
        self._pid = os.getpid()
        self.shutdown_wait = shutdown_wait
        self.shutdown_cancel_futures = shutdown_cancel_futures
        self.propagate_environ = propagate_environ
        self.max_backlog = max_backlog or 0
        self._lock = threading.Lock()
        self._room = threading.Condition(self._lock)
        self._futures = {}
        self._queued = 0
        self._ids = itertools.count(1)
        self._closed = False
        self._finishing = False
        self._finished = threading.Event()
        self._lost = None         # why the Executor cannot go on (text), else None
        self._restarting = False
        self._conn = None
        self._server = None
        self._last_stats = None
        self._env_snapshot = dict(propagate_environ) if propagate_environ is not None else None
        self._static_env = {}
        self._cfg = None
        self._log_level = log_level or os.environ.get("CGPOOL_LOG_LEVEL") or "warn"
        self._cgpool_bin = cgpool_bin
        prep = _payload.preparation_data()
        self.affinity = _payload.affinity(prep)

        if socket is None:
            self.max_workers = max_workers or _default_workers()
            self.pool_name = pool or "default"
            self._static_env = self._startup_env(prep, initializer, initargs, finalizer, finalargs)
            cfg = {"name": self.pool_name, "kind": "worker",
                   "command": [sys.executable, "-m", "cgpool.worker"],
                   "max_workers": self.max_workers,
                   "max_backlog": self.max_backlog or 0,
                   "spare_workers": int(spare_workers or 0),
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
            if start_workers == "max":
                start_workers = self.max_workers
            if start_workers is not None:
                if isinstance(start_workers, bool) or not isinstance(start_workers, int) or start_workers < 0:
                    raise ValueError('start_workers must be an int >= 0 or "max", not %r' % (start_workers,))
                cfg["start_workers"] = min(start_workers, self.max_workers)
            for key, value in (("max_tasks_per_child", max_tasks_per_child),
                               ("max_worker_memory_bytes", max_worker_memory_bytes),
                               ("trim_threshold_bytes", malloc_trim_rss_memory_threshold_bytes),
                               ("memory_max", memory_max), ("pids_max", pids_max)):
                if value:
                    cfg[key] = int(value)
            if idle_timeout is not None:
                seconds_ms(idle_timeout, "idle_timeout")  # checks it
                cfg["idle_delay"] = go_duration(idle_timeout)
            if default_timeout:
                seconds_ms(default_timeout, "default_timeout")  # checks it
                cfg["default_timeout"] = go_duration(default_timeout)
                # A default, not a ceiling: a task may ask for longer (the
                # supervisor's max_timeout would otherwise be the default).
                cfg["max_timeout"] = "%dms" % MAX_MS
            self._cfg = cfg
            self._prep_blob = None
            self._server, self._conn = self._start_private()
        else:
            given = [n for n, v in (("max_workers", max_workers), ("min_workers", min_workers),
                                    ("max_tasks_per_child", max_tasks_per_child),
                                    ("max_worker_memory_bytes", max_worker_memory_bytes),
                                    ("malloc_trim_rss_memory_threshold_bytes", malloc_trim_rss_memory_threshold_bytes),
                                    ("initializer", initializer), ("finalizer", finalizer),
                                    ("propagate_environ", propagate_environ),
                                    ("memory_max", memory_max), ("pids_max", pids_max),
                                    ("idle_timeout", idle_timeout), ("default_timeout", default_timeout),
                                    ("start_workers", start_workers))
                     if v is not None]
            if given:
                raise ValueError("with socket=, the pool's shape is the server's configuration; "
                                 "these options cannot be given: %s" % ", ".join(given))
            self.max_workers = None
            self._prep_blob = _payload.dumps(prep)
            self._conn = Connection(socket, self._on_frame, None, self._ids, pool=pool)
            self._conn._on_lost = self._lost_callback(self._conn)
            self.pool_name = pool if pool is not None else (self._conn.pools[0] if self._conn.pools else None)
            if self.pool_name is None:
                self._conn.close()
                raise SupervisorError("cgpool serve at %s has no pools" % socket)
        self._pool_json = json.dumps(self.pool_name)
        # A private supervisor's backlog is ours alone and the client bounds
        # it (max_backlog, the same bound as the server's): the server never
        # has to hold a submission. A shared one may be full of other
        # clients' work, so there submit waits for room (hold).
        self._hold = socket is not None or not self.max_backlog
        self._submit_head = '{"type":"submit","id":'
        self._submit_tail = (',"pool":%s,"affinity":"%s"%s}' % (
            self._pool_json, self.affinity, ',"hold":true' if self._hold else ''))
        self._conn.start()
        _live.add(self)

    # ----- set-up

    def _startup_env(self, prep, initializer, initargs, finalizer, finalargs):
        env = {}
        here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        if not _installed_in_site(here):
            # Not installed (a source tree on sys.path): let `-m cgpool.worker`
            # find the package.
            pp = os.environ.get("PYTHONPATH")
            env["PYTHONPATH"] = here + (os.pathsep + pp if pp else "")
        env[_payload.ENV_MAIN] = _payload.encode_env_blob(prep)
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
        if self._server is not None:
            env.update(self._server.env)
        return {str(k): str(v) for k, v in env.items()}

    def _start_private(self):
        """Start a private supervisor with the pool's configuration (and the
        current propagated environment) and connect to it."""
        cfg = dict(self._cfg, env=dict(self._env_snapshot or {}, **self._static_env))
        cfg["env"] = {str(k): str(v) for k, v in cfg["env"].items()}
        server = PrivateServer(cfg, binary=self._cgpool_bin, log_level=self._log_level)
        server.start()
        try:
            conn = Connection(server.socket, self._on_frame, None, self._ids, pool=self.pool_name)
        except BaseException:
            server.close(timeout=5.0)
            raise
        conn._on_lost = self._lost_callback(conn)
        return server, conn

    def _lost_callback(self, conn):
        ref = weakref.ref(self)

        def lost(reason):
            ex = ref()
            if ex is not None:
                ex._on_lost(conn, reason)
        return lost

    # ----- checks

    def _check_process(self):
        if self._pid != os.getpid():
            raise RuntimeError(_FORKED % (self._kind, self._pid, os.getpid()))

    def _check_open(self):
        self._check_process()
        if self._closed:
            raise PoolClosed("The pool is closed. No more tasks can be submitted.")
        if self._lost is not None:
            raise SupervisorError("the connection to cgpool serve is lost: %s" % self._lost)

    # ----- submitting

    def submit(self, fn, /, *args, **kwargs):
        """Schedule ``fn(*args, **kwargs)`` and return a Future. See the class
        doc for the ``cgpool_*`` keywords. A function or argument that cannot
        be pickled fails the future (the pool is unaffected). Raises
        PoolClosed after shutdown, TypeError and ValueError for a bad
        option."""
        if kwargs:
            opts = None
            for k in kwargs:
                if k.startswith("cgpool_"):
                    opts = {}
                    break
            if opts is not None:
                for k in list(kwargs):
                    if k.startswith("cgpool_"):
                        if k not in SUBMIT_OPTIONS:
                            raise TypeError("unknown submit option %s (the options are %s)"
                                            % (k, ", ".join(SUBMIT_OPTIONS)))
                        opts[k] = kwargs.pop(k)
                return self._submit(fn, args, kwargs, opts)
        return self._submit(fn, args, kwargs, None)

    def _options_header(self, opts, names=None):
        """The submit header's fields for per-task options, checked: a
        format string taking the id. *names* maps option to the keyword the
        caller used (for messages)."""
        names = names or {}

        def name(k):
            return names.get(k, k)
        h = {"type": "submit", "id": 0, "pool": self.pool_name,
             "priority": check_priority(opts.get("cgpool_priority") or 0, name("cgpool_priority")),
             "timeout_ms": seconds_ms(opts.get("cgpool_timeout"), name("cgpool_timeout")),
             "queue_timeout_ms": seconds_ms(opts.get("cgpool_queue_timeout"), name("cgpool_queue_timeout")),
             "memory_max": check_bytes(opts.get("cgpool_memory_max"), name("cgpool_memory_max")),
             "env": check_env(opts.get("cgpool_env"), name("cgpool_env")),
             "hold": self._hold, "affinity": self.affinity}
        text = _proto.encode_header(_proto.canonical_header(h)).decode()
        # "id":0 is dropped as a zero value: put the id back, first after type.
        assert text.startswith('{"type":"submit",')
        return '{"type":"submit","id":%d,' + text[len('{"type":"submit",'):].replace("%", "%%")

    def _submit(self, fn, args, kwargs, opts, names=None):
        self._check_open()
        if self._env_snapshot is not None:
            self._sync_environ()
        head = self._options_header(opts, names) if opts else None
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
        conn, tid = self._register(fut)
        header = ((head % tid) if head else (self._submit_head + str(tid) + self._submit_tail)).encode()
        conn.send(_proto.PREFIX.pack(len(header), len(data)) + header + data)
        return fut

    def _register(self, fut):
        """Wait for room in the backlog (pumping the connection instead when
        called on its reader thread, where room comes from), then register
        *fut* on the current connection. Returns ``(conn, id)``."""
        with self._lock:
            while True:
                if self._closed:
                    raise PoolClosed("The pool is closed. No more tasks can be submitted.")
                if self._lost is not None:
                    raise SupervisorError("the connection to cgpool serve is lost: %s" % self._lost)
                conn = self._conn
                if conn is None:  # a new private supervisor is starting
                    self._room.wait()
                    continue
                if not self.max_backlog or self._queued < self.max_backlog:
                    break
                if conn.on_reader_thread():
                    self._lock.release()
                    try:
                        conn.pump()
                    finally:
                        self._lock.acquire()
                else:
                    self._room.wait()
            tid = next(self._ids)
            fut._cg_task = (conn, tid)
            fut._cg_queued = True
            self._queued += 1
            self._futures[tid] = fut
        return conn, tid

    def map(self, fn, *iterables, timeout=None, chunksize=1):
        """Like concurrent.futures' ``map``: results in order; *timeout*
        bounds the whole iteration; with *chunksize* > 1 the inputs travel
        in chunks of that many calls, one task each (as
        ProcessPoolExecutor.map does: a long input goes much faster). The
        submissions go out in batches. When the iterator is closed early, the
        tasks not yet started are cancelled."""
        if chunksize < 1:
            raise ValueError("chunksize must be >= 1.")
        end = None if timeout is None else timeout + time.monotonic()
        if chunksize == 1:
            fs = self._submit_many(fn, zip(*iterables))
        elif len(iterables) == 1:
            fs = self._submit_many(_payload.call_chunk,
                                   ((fn, chunk, False) for chunk in _chunks(iterables[0], chunksize)))
        else:
            fs = self._submit_many(_payload.call_chunk,
                                   ((fn, chunk) for chunk in _chunks(zip(*iterables), chunksize)))

        def results():
            try:
                fs.reverse()
                while fs:
                    f = fs.pop()
                    if end is None:
                        r = f.result()
                    else:
                        r = f.result(end - time.monotonic())
                    del f
                    if chunksize == 1:
                        yield r
                    else:
                        yield from r
            finally:
                self._cancel_many(fs)
        return results()

    def _submit_many(self, fn, arglists):
        self._check_open()
        if self._env_snapshot is not None:
            self._sync_environ()
        fs, batch, conn = [], [], None
        head, tail, prep = self._submit_head, self._submit_tail, self._prep_blob
        pack = _proto.PREFIX.pack
        try:
            for args in arglists:
                fut = Future()
                fs.append(fut)
                try:
                    data = _payload.encode_call(fn, args, {}, prep)
                except Exception as e:
                    fut.set_exception(_pickling_error(fn, e))
                    continue
                full = self.max_backlog and self._queued >= self.max_backlog
                if batch and (full or len(batch) >= _BATCH_FRAMES):
                    conn.send(b"".join(batch))
                    batch = []
                c, tid = self._register(fut)
                if c is not conn and batch:
                    conn.send(b"".join(batch))  # the old one is gone: its futures fail as lost
                    batch = []
                conn = c
                header = (head + str(tid) + tail).encode()
                batch.append(pack(len(header), len(data)) + header + data)
        finally:
            if batch:
                conn.send(b"".join(batch))
        return fs

    def _cancel_many(self, fs):
        """Cancel the futures of *fs* that have not started, in one write
        and one round trip."""
        waits = []
        for f in fs:
            if f.done() or f._cg_started or f._cg_task is None:
                continue
            conn, tid = f._cg_task
            if conn.pid != os.getpid() or conn.ended.is_set():
                continue
            try:
                waits.append((f, conn, conn.request_async({"type": "cancel", "id": tid, "mode": "soft"},
                                                          kind="cancel", flush=False)))
            except SupervisorError:
                break
        for conn in {c for _, c, _ in waits}:
            conn.flush()
        for f, conn, w in waits:
            try:
                h = conn.wait(w, what="cancel")
            except SupervisorError:
                continue
            if h.get("ok"):
                f._end_cancelled()

    # ----- the reader thread's side

    def _on_frame(self, h, payload):
        t = h["type"]
        if t == "accepted":
            return
        tid = h.get("id", 0)
        if t == "running":
            fut = self._futures.get(tid)
            if fut is None:
                return
            with self._lock:
                self._started_locked(fut)
            fut._set_pid(h.get("pid"), h.get("leaf"))
            return
        if t in _proto.FINAL_TYPES:
            with self._lock:
                fut = self._futures.pop(tid, None)
                if fut is None:
                    return
                if fut._cg_queued:
                    fut._cg_queued = False
                    self._queued -= 1
                    self._room.notify()
                done = self._closed and not self._futures
            if t == "result":
                fut._cg_started = True
                try:
                    value = pickle.loads(payload)
                except BaseException as e:
                    # As Deadpool: the error of unpickling, raised here.
                    if hasattr(e, "add_note"):
                        e.add_note("cgpool: raised while unpickling the task's result in the caller")
                    fut._settle(exception=e)
                else:
                    fut._settle(value)
            else:
                _settle_outcome(fut, t, h, payload)
            if done:
                self._begin_finish()
            return

    def _started_locked(self, fut):
        fut._cg_started = True
        if fut._cg_queued:
            fut._cg_queued = False
            self._queued -= 1
            self._room.notify()

    def _on_lost(self, conn, reason):
        """The connection *conn* ended (on its reader thread). Expected (we
        are finishing): nothing to do. Else the tasks it had in flight fail
        as lost; a private Executor starts a new supervisor first and goes
        on."""
        with self._lock:
            if self._conn is not conn:
                return
            self._conn = None
            futs = list(self._futures.values())
            self._futures.clear()
            self._queued = 0
            expected = reason is None or self._finishing
            restart = not expected and self._server is not None and not self._closed \
                and self._pid == os.getpid()
            if not expected and not restart:
                self._lost = reason
            self._restarting = restart
            self._room.notify_all()
        why = reason or "the supervisor shut down"
        old = self._server
        if old is not None and old.proc is not None:
            code = old.proc.poll()
            if code is None and not expected:
                try:
                    code = old.proc.wait(timeout=1.0)
                except Exception:
                    code = None
            if code is not None:
                why += " (cgpool serve exited with status %s)" % code
                out = old.output().strip()
                if out:
                    why += "; its last output:\n" + out[-4000:]
        if restart:
            old.close(timeout=2.0)
            try:
                server, new = self._start_private()
            except Exception as e:
                with self._lock:
                    self._lost = "%s; and a new supervisor could not be started: %s" % (reason, e)
                    self._restarting = False
                    self._room.notify_all()
                restart = False
            else:
                with self._lock:
                    self._server, self._conn = server, new
                    self._restarting = False
                    self._room.notify_all()
                new.start()
                _log.warning("cgpool: the private supervisor (pid %s) went away: %s; started a new one "
                             "(pid %s); %d task(s) in flight failed as lost",
                             old.proc.pid if old.proc else "?", reason, server.proc.pid, len(futs))
        for fut in futs:
            started = fut._cg_started
            fut._settle(exception=TaskLost(
                "the task's outcome is lost: %s; it %s" % (why, "had started, and may have run in part or whole"
                                                          if started else "had not started as far as the client knew"),
                started=started))
        if not restart:
            self._end()
        elif self._closed:
            with self._lock:
                empty = not self._futures
            if empty:
                self._begin_finish()

    # ----- requests

    def _request(self, header):
        self._check_process()
        with self._lock:
            conn = self._conn
        if conn is None or self._finished.is_set():
            raise SupervisorError("the connection to cgpool serve is closed")
        return conn.request(header)

    def _stats(self):
        """The supervisor's statistics document for the pool; after the
        end, the last one (taken when the last task had finished)."""
        self._check_process()
        with self._lock:
            conn = self._conn
        if conn is not None and not self._finished.is_set():
            try:
                s = conn.request({"type": "stats", "pool": self.pool_name}).get("stats") or {}
            except SupervisorError:
                if self._last_stats is None or not (self._closed or self._finished.is_set()):
                    raise
            else:
                if not self._finished.is_set():
                    self._last_stats = s
                return s
        if self._last_stats is None:
            raise SupervisorError("the connection to cgpool serve is closed and no statistics were taken")
        return dict(self._last_stats)

    def get_statistics(self):
        """Deadpool's statistics, exactly its eight keys in its order:
        tasks_received, tasks_launched, tasks_failed,
        worker_processes_created, max_workers_busy_concurrently,
        worker_processes_still_alive, worker_processes_busy,
        worker_processes_idle. After shutdown: the final figures (no worker
        is alive then). cgpool's other figures: cgpool_statistics()."""
        s = self._stats()
        return {k: int(s.get(k) or 0) for k in DEADPOOL_STATISTICS}

    def cgpool_statistics(self):
        """Every figure the supervisor keeps for the pool: Deadpool's eight
        (see get_statistics) and cgpool's own: tasks_succeeded,
        tasks_cancelled, tasks_rejected, tasks_queued, tasks_running,
        failures_by_reason (task_error, timeout, queue_timeout, oom, killed,
        crashed), leftover_processes_killed, workers_retired,
        workers_trimmed, initializer_failures, worker_start_failures,
        max_workers, min_workers (the supervisor's pool package documents
        each). After shutdown: the final figures."""
        return self._stats()

    def status(self):
        """The pool's workers as the supervisor sees them (pid, cgroup,
        state, memory)."""
        return self._request({"type": "status", "pool": self.pool_name}).get("status") or {}

    def _sync_environ(self, force=False):
        current = dict(self.propagate_environ or {})
        if not force and current == self._env_snapshot:
            return
        self._env_snapshot = current
        with self._lock:
            conn = self._conn
        if conn is None:
            return  # a new supervisor starts with the current snapshot
        env = self._pool_env() if self._server is not None else {str(k): str(v) for k, v in current.items()}
        conn.send(_proto.encode_frame({"type": "set_env", "id": next(self._ids), "pool": self.pool_name,
                                       "env": env, "replace": self._server is not None}))

    def clear_workers(self):
        """Replace the pool's workers (idle ones now, busy ones after their
        task), so that a changed ``propagate_environ`` reaches all of them."""
        self._check_process()
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
        finalizers. Idempotent; a no-op in a forked child.
        """
        if self._pid != os.getpid():
            return
        with self._lock:
            self._closed = True
            self._room.notify_all()
            pending = list(self._futures.values())
            empty = not self._futures and not self._restarting
            conn = self._conn
        if (cancel_futures or not wait) and conn is not None:
            frames = []
            for fut in pending:
                if fut.done():
                    continue
                if not fut._cg_started:
                    frames.append(_proto.encode_frame({"type": "cancel", "id": fut._cg_task[1], "mode": "soft"}))
                elif not wait and cancel_futures:
                    frames.append(_proto.encode_frame({"type": "cancel", "id": fut._cg_task[1], "mode": "hard"}))
            if frames:
                conn.send(b"".join(frames))
        if empty:
            self._begin_finish()
        if wait:
            self._wait_finished(pending)

    def _wait_finished(self, pending=None):
        """Wait until every task has ended and the supervisor is done with."""
        if pending is None:
            with self._lock:
                pending = list(self._futures.values())
        concurrent.futures.wait(pending)
        if not self._finished.wait(REQUEST_TIMEOUT):
            self._end()  # the supervisor did not answer: stop it the hard way

    def _begin_finish(self):
        """No task is open and no more will come: take the last statistics,
        then stop the supervisor (if ours) gracefully, or close the
        connection to a shared one. Never blocks."""
        with self._lock:
            if self._finishing:
                return
            self._finishing = True
            conn = self._conn
        if conn is None or conn.ended.is_set():
            self._end()
            return

        def took_stats(h):
            if h is not None and h.get("type") == "stats_reply":
                self._last_stats = h.get("stats") or {}
            if self._server is None:
                self._end()

        def stopped(h):
            self._end()
        try:
            conn.request_async({"type": "stats", "pool": self.pool_name}, took_stats)
            if self._server is not None:
                conn.request_async({"type": "shutdown", "wait": True, "cancel_futures": True}, stopped)
        except SupervisorError:
            self._end()

    def _end(self):
        """Close the connection and stop the private supervisor. Idempotent;
        runs on the reader thread or on a shutting-down caller."""
        with self._lock:
            if self._finished.is_set() or getattr(self, "_ending", False):
                return
            self._ending = True
            self._finishing = True
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
        if self._server is not None:
            self._server.close()
            if self._last_stats is not None:
                # The private supervisor's workers are gone with it.
                self._last_stats = dict(self._last_stats, **{k: 0 for k in _GAUGES})
        self._finished.set()
        _live.discard(self)

    def _abandon(self):
        """In a forked child (the at-fork hook): forget everything of the
        parent's without touching it. Takes no lock."""
        self._closed = True
        self._finishing = True
        conn = self._conn
        if conn is not None:
            conn.abandon()
        if self._server is not None:
            self._server.abandon()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc_val, exc_tb):
        if self._pid != os.getpid():
            return False
        if exc_type is not None and issubclass(exc_type, KeyboardInterrupt):
            self._interrupted()
            return False
        kwargs = {}
        if self.shutdown_wait is not None:
            kwargs["wait"] = self.shutdown_wait
        if self.shutdown_cancel_futures is not None:
            kwargs["cancel_futures"] = self.shutdown_cancel_futures
        self.shutdown(**kwargs)
        return False

    def _interrupted(self):
        """A KeyboardInterrupt leaves the ``with`` block: cancel what is
        queued and wait for what runs; a second Ctrl-C (at any point of
        this, the message included) kills what runs."""
        try:
            self.shutdown(wait=False)  # the queued ones are cancelled, the running go on
            with self._lock:
                running = [f for f in self._futures.values() if f._cg_started]
            if running:
                print("cgpool: interrupted: queued tasks cancelled; waiting for %d running task(s) "
                      "(Ctrl-C again kills them)" % len(running), file=sys.stderr, flush=True)
            self._wait_finished()
        except KeyboardInterrupt:
            self.shutdown(wait=False, cancel_futures=True)
            self._finished.wait(5.0)
            raise

def _chunks(it, n):
    it = iter(it)
    while True:
        chunk = tuple(itertools.islice(it, n))
        if not chunk:
            return
        yield chunk


def _pickling_error(fn, e):
    if isinstance(e, pickle.PicklingError):
        return e
    err = pickle.PicklingError("cannot pickle the task %r or its arguments: %s: %s"
                               % (getattr(fn, "__qualname__", fn), type(e).__name__, e))
    err.__cause__ = e
    return err


def _settle_outcome(fut, t, h, payload):
    if t == "task_error":
        fut._cg_started = True
        fut._settle(exception=_task_exception(h, payload))
    elif t == "timeout":
        fut._settle(exception=_errors.timeout_error_from(h))
    elif t == "process_error":
        if h.get("reason") == "lost":
            fut._settle(exception=_errors.task_lost_from(h, fut._cg_started))
        else:
            fut._settle(exception=_errors.process_error_from(h))
    elif t == "cancelled":
        fut._end_cancelled()
    elif t == "queue_timeout":
        fut._settle(exception=_errors.QueueTimeoutError(
            "Task did not start within its queue timeout; it never ran"))
    elif t == "rejected":
        fut._settle(exception=_errors.rejected_error_from(h))


def _task_exception(h, payload):
    """The exception a task raised, as itself; if it cannot be unpickled
    here, the error of unpickling it (as Deadpool), the task's traceback
    attached as __cause__ either way."""
    tb = h.get("traceback") or ""
    message = h.get("message") or "the task raised an exception"
    exc = None
    if payload:
        try:
            exc = pickle.loads(payload)
        except BaseException as e:
            exc = e
            if hasattr(e, "add_note"):
                e.add_note("cgpool: raised while unpickling the exception the task raised (%s)" % message)
    if not isinstance(exc, BaseException):
        exc = _errors.TaskError(message, tb)
    if tb:
        exc.__cause__ = _errors.RemoteTraceback('\n"""\n%s"""' % tb)
    return exc


def _after_fork_in_child():
    global _live
    for ex in list(_live):
        try:
            ex._abandon()
        except Exception:
            pass
    _live = weakref.WeakSet()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _at_exit():
    """At interpreter exit, finish what executors of this process still
    have (as concurrent.futures does): never-shut-down ones are shut down
    with wait; ones shut down without wait get their wind-down. Bounded: a
    second Ctrl-C ends them hard."""
    for ex in list(_live):
        if ex._pid != os.getpid():
            continue
        try:
            if not ex._closed:
                ex.shutdown(wait=True)
            else:
                ex._finished.wait(REQUEST_TIMEOUT)
                ex._end()
        except KeyboardInterrupt:
            ex._end()
        except Exception:
            pass


try:
    threading._register_atexit(_at_exit)
except (AttributeError, RuntimeError):
    atexit.register(_at_exit)
