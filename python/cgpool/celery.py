"""cgpool.celery: a Celery worker pool whose tasks run in cgpool workers.

Select it in the Celery app's configuration (every Celery 5.x)::

    app.conf.worker_pool = "cgpool.celery:TaskPool"

or, on Celery 5.3 and later, on the command line::

    CELERY_CUSTOM_WORKER_POOL=cgpool.celery:TaskPool celery -A proj worker -P custom

Each task then runs in a worker process of a cgpool supervisor, in its own
cgroup: a private ``cgpool serve`` that the pool starts (the default), or a
running one named by the setting ``cgpool_socket``. What a Celery user sets
maps so (the tests in ``python/tests/test_celery*.py`` show each):

=============================== ==============================================
Celery                          cgpool
=============================== ==============================================
``-c N``, ``--autoscale``,      N workers; grow/shrink change how many tasks
``pool_grow``/``pool_shrink``   run at once (a private supervisor is replaced
                                by one of the new size, running tasks finish)
``time_limit`` (hard)           the supervisor's deadline from the task's
                                start; the task's whole cgroup is killed
                                (grandchildren and ``setsid`` daemons too);
                                ``TimeLimitExceeded``
``soft_time_limit``             ``SoftTimeLimitExceeded`` raised inside the
                                task (SIGUSR1 from a timer in the worker, as
                                prefork's signal)
``worker_max_tasks_per_child``  ``max_tasks_per_child``
``worker_max_memory_per_child`` ``max_worker_memory_bytes`` (KiB x 1024),
                                checked after each task, as prefork does
``revoke(terminate=True)``      the task's cgroup is killed; REVOKED
a worker that dies              ``WorkerLostError`` within milliseconds
                                (``acks_late`` + ``reject_on_worker_lost``
                                requeue it, as with prefork)
``pool_restart``                the workers are replaced (busy ones after
                                their task)
``inspect stats``               prefork's keys, and cgpool's figures under
                                ``"cgpool"``
=============================== ==============================================

New: a per-task memory limit, ``cgpool_memory_max`` (bytes, or a size such
as ``"150M"``), given as a task attribute (``@app.task(cgpool_memory_max=
"150M")``), a message header (``apply_async(headers={"cgpool_memory_max":
"150M"})``, which wins) or the setting ``cgpool_memory_max`` (every
worker's cgroup limit, and the ceiling of the others). A task that goes over
it is OOM-killed by the kernel with its cgroup and fails with
:class:`MemoryLimitExceeded` (neither ``WorkerLostError``, which
``reject_on_worker_lost`` would requeue into the same death, nor
``MemoryError``, which Celery's request handling re-raises in the worker).
It needs the cgroup v2 memory controller.

Settings (``app.conf``): ``cgpool_socket`` and ``cgpool_pool`` (use a running
``cgpool serve``; the pool's shape is then its configuration),
``cgpool_memory_max``, ``cgpool_pids_max``, ``cgpool_max_workers`` (let the
private supervisor keep this many workers, so that growing up to it needs no
new supervisor), ``cgpool_spare_workers`` (default 1: a started worker kept
ready to replace one that dies), ``cgpool_bin``, and ``cgpool_app`` (the
``module:attribute`` of the app, for the workers to import; by default it is
found among the loaded modules; ``$CGPOOL_CELERY_APP`` overrides it).

How it runs: a worker process is a fresh interpreter, so it imports the app
and runs Celery's own child initializer (``prefork.process_initializer``, on
the path Celery takes for spawned children), which builds the task tracers
and sends ``worker_process_init``; ``worker_process_shutdown`` is sent when
the worker leaves gracefully. The pool never blocks Celery's event loop:
``apply_async`` queues the request, at most ``N`` tasks are submitted to the
Executor at a time, and outcomes come back through a pipe registered with
Celery's hub, so every Celery callback runs on the event-loop thread
(without a hub, on one thread of the pool's). Requests queued in the pool
but not started are dropped on ``flush()`` and at stop, unacknowledged, so
the broker delivers them again.
"""

import atexit
import collections
import ctypes
import heapq
import itertools
import os
import re
import select
import signal
import sys
import threading
import time
import traceback

from billiard.common import human_status
from billiard.einfo import ExceptionInfo
from billiard.exceptions import (SoftTimeLimitExceeded, Terminated,
                                 TimeLimitExceeded, WorkerLostError)
from celery.concurrency.base import BasePool
from celery.utils.log import get_logger

import cgpool
from cgpool import errors as _errors

__all__ = ["TaskPool", "MemoryLimitExceeded", "parse_size"]

logger = get_logger(__name__)

#: The header and task attribute that carry a task's memory limit.
MEMORY_OPTION = "cgpool_memory_max"

SOFT_SIGNAL = signal.SIGUSR1


class MemoryLimitExceeded(Exception):
    """The task's cgroup reached its memory limit and the kernel OOM-killed
    it (cgpool's ``OutOfMemoryError``, reason ``oom``).

    ``reason`` is ``"oom"``; ``memory_max`` and ``memory_peak`` are bytes (0
    when unknown), ``pid`` the worker's. They travel as the exception's
    arguments, so a client that imports this module gets them back from any
    result backend, JSON included (Celery rebuilds a stored exception from
    ``sys.modules`` of its module). Not a ``MemoryError`` and not a
    ``WorkerLostError``, on purpose: see the module's documentation.
    """

    reason = "oom"

    def __init__(self, message="the task's cgroup reached its memory limit", memory_max=0,
                 memory_peak=0, pid=0):
        super().__init__(message, memory_max, memory_peak, pid)
        self.message = message
        self.memory_max = memory_max
        self.memory_peak = memory_peak
        self.pid = pid

    def __str__(self):
        return self.message


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)\s*$", re.IGNORECASE)


def parse_size(value):
    """Bytes from an int or a size text: ``"150M"``, ``"1.5GiB"``, ``"512k"``
    (powers of 1024, as cgroup files count). None, 0 and "" mean no limit
    (0). Raises ValueError for anything else."""
    if value is None or value == "":
        return 0
    if isinstance(value, bool):
        raise ValueError("a memory size must be bytes or a text like '150M', not %r" % (value,))
    if isinstance(value, int):
        if value < 0:
            raise ValueError("a memory size must be >= 0, not %d" % value)
        return value
    if isinstance(value, float) and value >= 0 and value == int(value):
        return int(value)
    m = _SIZE.match(str(value))
    if m is None:
        raise ValueError("a memory size must be bytes or a text like '150M' or '1GiB', not %r" % (value,))
    n = float(m.group(1)) * (1024 ** " kmgt".index((m.group(2) or " ").lower()))
    return int(n)


# ---------------------------------------------------------------------------
# The worker side: runs in the cgpool worker process.

class _Here:
    """State of this process when it is a cgpool worker serving Celery."""
    app = None
    ref = None
    hostname = None
    init_error = None
    in_task = False
    timer = None


def _clear_pdeathsig():
    """prefork's initializer asks for SIGKILL when the parent *thread* ends
    (PR_SET_PDEATHSIG is per thread); the supervisor is a Go program whose
    threads come and go, so that would kill healthy workers. The supervisor
    kills its workers' cgroups itself, and a worker leaves when the
    supervisor's socket closes."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, 0, 0, 0, 0)  # PR_SET_PDEATHSIG, 0
    except (OSError, AttributeError):
        pass


def _on_soft_signal(signum, frame):
    # Between tasks the signal means nothing (a late timer, or a revoke that
    # raced the end of the task); the default action would kill the worker.
    if _Here.in_task:
        raise SoftTimeLimitExceeded()


class _SoftTimer:
    """One thread per worker that sends this process SIGUSR1 when the running
    task's soft time limit passes. A thread rather than setitimer/SIGALRM,
    so that SIGALRM stays the task's own, and the signal is prefork's."""

    def __init__(self):
        self._cond = threading.Condition()
        self._deadline = None
        t = threading.Thread(target=self._run, name="cgpool-celery-soft-limit", daemon=True)
        t.start()

    def arm(self, seconds):
        with self._cond:
            self._deadline = time.monotonic() + seconds
            self._cond.notify()

    def disarm(self):
        with self._cond:
            self._deadline = None

    def _run(self):
        pid = os.getpid()
        with self._cond:
            while True:
                if self._deadline is None:
                    self._cond.wait()
                    continue
                left = self._deadline - time.monotonic()
                if left > 0:
                    self._cond.wait(left)
                    continue
                self._deadline = None
                os.kill(pid, SOFT_SIGNAL)


def _worker_exit():
    from celery.concurrency.prefork import process_destructor
    try:
        process_destructor(os.getpid(), 0)
    except Exception:
        traceback.print_exc()


def _warm_up(app):
    """Do at start what a forked child inherits ready-made: the result
    backend (its client library is imported on first use) and the
    producer pool that tasks sending tasks need."""
    try:
        app.backend
        app.amqp.producer_pool
    except Exception as e:
        print("cgpool.celery: worker %d could not prepare the result backend: %r" % (os.getpid(), e),
              file=sys.stderr)


def worker_init(ref, hostname, changes=None):
    """Load the Celery app named *ref* in this (fresh) worker process the way
    prefork's children are set up: Celery's ``process_initializer`` on its
    path for spawned children (``FORKED_BY_MULTIPROCESSING``), which builds
    the task tracers and sends ``worker_process_init``. *changes* are the
    parent's runtime configuration changes. Runs once per process; an error
    is kept and raised by every task, so that each fails with the cause."""
    if _Here.app is not None or _Here.init_error is not None:
        return
    _Here.ref, _Here.hostname = ref, hostname
    had = "FORKED_BY_MULTIPROCESSING" in os.environ
    os.environ["FORKED_BY_MULTIPROCESSING"] = "1"
    try:
        from celery.app.utils import find_app
        from celery.concurrency.prefork import process_initializer
        app = find_app(ref)
        if callable(app) and not hasattr(app, "tasks"):
            app = app()  # an app factory
        if changes:
            app.conf.update(changes)
        process_initializer(app, hostname)
    except BaseException as e:
        _Here.init_error = "could not load the Celery app %r in cgpool worker %d: %s: %s" % (
            ref, os.getpid(), type(e).__name__, e)
        raise
    finally:
        if not had:
            os.environ.pop("FORKED_BY_MULTIPROCESSING", None)
    _clear_pdeathsig()
    _warm_up(app)
    # process_initializer reset SIGUSR1 to its default (terminate): the soft
    # limit's handler goes on after it.
    signal.signal(SOFT_SIGNAL, _on_soft_signal)
    _Here.app = app
    atexit.register(_worker_exit)


def run_task(init, target, args, soft, kwargs=None):
    """Run one Celery task (*target* is Celery's tracer, *args* its
    arguments) in this worker; *init* is ``(ref, hostname, changes)`` when
    the worker was not initialized at start (a shared supervisor), else
    None. Arms the soft time limit around the call."""
    if _Here.app is None:
        if _Here.init_error is None and init is not None:
            worker_init(*init)
        if _Here.app is None:
            raise RuntimeError(_Here.init_error or "the cgpool worker has no Celery app (no initializer ran)")
    elif init is not None and init[0] != _Here.ref:
        raise RuntimeError("cgpool worker %d serves the Celery app %r, not %r: give each app its own pool"
                           % (os.getpid(), _Here.ref, init[0]))
    if soft:
        if _Here.timer is None:
            _Here.timer = _SoftTimer()
        _Here.timer.arm(soft)
    done = False
    try:
        _Here.in_task = True
        ret = target(*args, **(kwargs or {}))
        done = True
        _Here.in_task = False
    except SoftTimeLimitExceeded:
        # The limit fired outside the task body, after Celery's tracer had
        # finished with it: the outcome stands.
        _Here.in_task = False
        if not done:
            raise
    finally:
        _Here.in_task = False
        if soft:
            _Here.timer.disarm()
    return ret


def probe():
    """What the pool asks a fresh worker at start: is the app loaded?"""
    if _Here.app is None:
        raise RuntimeError(_Here.init_error or "the cgpool worker has no Celery app (no initializer ran)")
    return os.getpid()


def probe_init(init):
    if _Here.app is None and _Here.init_error is None:
        worker_init(*init)
    return probe()


# ---------------------------------------------------------------------------
# The pool side: runs in the Celery worker's main process.

def _einfo(exc):
    """billiard's ExceptionInfo for *exc*, with a traceback, as the pool's
    error callbacks get it from prefork."""
    try:
        raise exc
    except BaseException:
        return ExceptionInfo()


class _Inbox:
    """Events from the Executor's threads to the pool's owner thread: a deque
    and a non-blocking pipe whose read end is registered with Celery's hub
    (or watched by the pool's own dispatcher thread)."""

    def __init__(self):
        self.rfd, self.wfd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.items = collections.deque()
        self._signalled = False

    def put(self, item):
        """Any thread; never blocks."""
        self.items.append(item)
        if not self._signalled:
            self._signalled = True
            try:
                os.write(self.wfd, b"x")
            except BlockingIOError:
                pass  # the pipe is full of wake-ups already
            except OSError:
                pass  # closed at stop

    def take(self):
        """The owner thread: everything queued so far (possibly nothing)."""
        try:
            while os.read(self.rfd, 4096):
                pass
        except (BlockingIOError, OSError):
            pass
        self._signalled = False
        items = self.items
        out = []
        while items:
            out.append(items.popleft())
        return out

    def close(self):
        for fd in (self.rfd, self.wfd):
            try:
                os.close(fd)
            except OSError:
                pass


class _Job:
    """One request given to apply_async; also the object apply_async returns
    (Celery keeps a weak reference and calls ``terminate``)."""

    __slots__ = ("target", "args", "kwargs", "callback", "error_callback", "accept_callback",
                 "timeout_callback", "soft", "hard", "memory_max", "correlation_id",
                 "fut", "ex", "pid", "accepted", "finished", "terminated", "killing",
                 "dropped", "soft_timer", "leaf", "__weakref__")

    def __init__(self, target, args, kwargs, callback, error_callback, accept_callback,
                 timeout_callback, soft, hard, memory_max, correlation_id):
        self.target = target
        self.args = args
        self.kwargs = kwargs
        self.callback = callback
        self.error_callback = error_callback
        self.accept_callback = accept_callback
        self.timeout_callback = timeout_callback
        self.soft = soft
        self.hard = hard
        self.memory_max = memory_max
        self.correlation_id = correlation_id
        self.fut = None
        self.ex = None
        self.pid = None
        self.leaf = None
        self.accepted = False
        self.finished = False
        self.terminated = None   # signal given to terminate() before it started
        self.killing = None      # signal of terminate_job while it runs
        self.dropped = False     # flushed: say nothing, the broker redelivers
        self.soft_timer = None

    def terminate(self, signum):
        """Celery's revoke(terminate=True) of a request not started yet:
        it never starts (one waiting in the supervisor's queue is cancelled
        there), and ends Terminated, as billiard's outbound buffer does."""
        self.terminated = signum or signal.SIGTERM
        fut = self.fut
        if fut is not None and not self.accepted:
            try:
                fut.cancel()  # if it started meanwhile, on_accepted kills it
            except Exception:
                pass

    def __repr__(self):
        return "<cgpool.celery job %s pid=%s>" % (self.correlation_id, self.pid)


def _celery_changes(app):
    """The parent's runtime configuration changes that a fresh worker should
    see (what a forked prefork child would have inherited), where they
    pickle."""
    import pickle
    out = {}
    try:
        changes = dict(app.conf.changes)
    except Exception:
        return out
    for k, v in changes.items():
        try:
            pickle.dumps(v)
        except Exception:
            continue
        out[k] = v
    return out


def _find_app_ref(app):
    """``module:attribute`` of *app* for a fresh interpreter to import."""
    ref = os.environ.get("CGPOOL_CELERY_APP") or app.conf.get("cgpool_app")
    if ref:
        return ref
    skip = ("celery", "kombu", "billiard", "vine", "cgpool", "click")
    candidates = []
    main = getattr(app, "main", None)
    if main and main in sys.modules:
        candidates.append(main)
    candidates += [n for n in list(sys.modules) if n != main]
    for name in candidates:
        if name.split(".")[0] in skip or name == "__mp_main__":
            continue
        mod = sys.modules.get(name)
        d = getattr(mod, "__dict__", None)
        if not isinstance(d, dict):
            continue
        for attr, value in list(d.items()):
            if value is app:
                return "%s:%s" % (name, attr)
    raise RuntimeError(
        "cgpool.celery: cannot tell which module holds the Celery app %r: its workers are fresh "
        "interpreters that import it. Set app.conf.cgpool_app = 'module:attribute' (or "
        "CGPOOL_CELERY_APP)." % (app,))


class TaskPool(BasePool):
    """A Celery worker pool whose tasks run in cgpool workers, each in its own
    cgroup (see the module's documentation for what each Celery option maps
    to). Selected with ``worker_pool = "cgpool.celery:TaskPool"``.

    Thread safety: Celery calls it from its event-loop thread (apply_async,
    control commands, timers) and, with an autoscaler or a transport without
    an event loop, from other threads; a lock keeps its state and Celery's
    callbacks always run outside it.
    """

    uses_semaphore = False
    body_can_be_buffer = False
    task_join_will_block = True
    # Celery's stop from a signal handler would run our stop in the middle of
    # whatever the event loop was doing; without this flag Celery leaves the
    # loop first and stops from there.
    signal_safe = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._lock = threading.RLock()
        self._pending = collections.deque()
        self._submitted = set()           # jobs given to an Executor, not finished
        self._want = None
        self._ahead = 0
        self._limit = 0                   # tasks at once (Celery's limit, then grow/shrink)
        self._running = 0                 # submitted and not finished
        self._by_pid = {}
        self._ex = None
        self._cap = None                  # workers of the private supervisor
        self._building = False
        self._retiring = set()
        self._inbox = None
        self._hub = None
        self._dispatcher = None
        self._timers = []
        self._timer_seq = itertools.count()
        self._stopping = False
        self._start_error = None
        self._init = None
        self._socket = None
        self._owner = None
        self._drain_lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self.counts = collections.Counter()

    # ----- configuration

    def _conf(self, key, default=None):
        app = self.app
        if app is None:
            return default
        value = app.conf.get(key)
        return default if value is None else value

    def _executor_options(self, size):
        opts = {}
        if self._socket:
            opts["socket"] = self._socket
            opts["pool"] = self._conf("cgpool_pool")
            return opts
        opts["max_workers"] = size
        opts["min_workers"] = min(size, self._limit or self.limit or size)  # the current limit (grow)
        opts["spare_workers"] = int(self._conf("cgpool_spare_workers", 1))
        mtpc = self.options.get("maxtasksperchild")
        if mtpc:
            opts["max_tasks_per_child"] = int(mtpc)
        mmpc = self.options.get("max_memory_per_child")
        if mmpc:
            opts["max_worker_memory_bytes"] = int(mmpc) * 1024  # Celery counts KiB
        mem = parse_size(self._conf("cgpool_memory_max"))
        if mem:
            opts["memory_max"] = mem
        pids = self._conf("cgpool_pids_max")
        if pids:
            opts["pids_max"] = int(pids)
        binary = self._conf("cgpool_bin")
        if binary:
            opts["cgpool_bin"] = binary
        opts["initializer"] = worker_init
        opts["initargs"] = self._init
        return opts

    def _new_executor(self, size):
        return cgpool.Executor(**self._executor_options(size))

    # ----- start and stop

    def on_start(self):
        app = self.app
        if app is None:
            raise RuntimeError("cgpool.celery.TaskPool needs the Celery app (Celery passes app=)")
        hostname = None
        initargs = self.options.get("initargs") or ()
        if len(initargs) >= 2:
            hostname = initargs[1]
        self._socket = self._conf("cgpool_socket") or None
        self._init = (_find_app_ref(app), hostname, _celery_changes(app))
        self._limit = self.limit or 1
        self._soft_default = self.options.get("soft_timeout") or None
        self._hard_default = self.options.get("timeout") or None
        ceiling = int(self._conf("cgpool_max_workers", 0) or 0)
        self._cap = None if self._socket else max(self._limit, ceiling)
        self._ahead = int(self._conf("cgpool_submit_ahead", self._limit))
        if self._socket and (self.options.get("maxtasksperchild") or self.options.get("max_memory_per_child")):
            logger.warning("cgpool.celery: with cgpool_socket the pool's shape (max tasks and memory per "
                           "child) is the server's configuration; the worker's options are not used")
        self._inbox = _Inbox()
        self._stopping = False
        ex = self._new_executor(self._cap)
        try:
            self._check_worker(ex)
        except BaseException:
            ex.shutdown(wait=False, cancel_futures=True)
            raise
        self._ex = ex

    def _check_worker(self, ex):
        """Run one probe task, so that an app the workers cannot import stops
        the Celery worker at start with the cause, not every task later."""
        if self._socket:
            fut = ex.submit(probe_init, self._init)
        else:
            fut = ex.submit(probe)
        try:
            fut.result(timeout=120)
        except Exception as e:
            raise RuntimeError("cgpool.celery: the cgpool worker could not start the Celery app: %s" % e) from e
        if not self._socket and self.options.get("maxtasksperchild"):
            # The probe counted as a task of the worker that ran it: replace
            # the workers, so each starts its max_tasks_per_child afresh
            # (prefork's child initializer is not a task either).
            ex.clear_workers()
        if not self._socket:
            self._wait_workers(ex, self._limit)

    def _wait_workers(self, ex, n, timeout=30.0):
        """Wait (up to *timeout*) until the private supervisor has *n*
        workers up, as prefork has forked its children before the Celery
        worker says it is ready: the first tasks do not wait for an
        interpreter to start, and ``inspect stats`` lists them all."""
        deadline = time.monotonic() + timeout
        delay = 0.005
        while True:
            try:
                up = [w for w in (ex.status().get("workers") or []) if w.get("pid")]
            except Exception as e:
                logger.warning("cgpool.celery: could not read the supervisor's status: %r", e)
                return
            if len(up) >= n:
                return
            if time.monotonic() >= deadline:
                logger.warning("cgpool.celery: %d of %d cgpool workers up after %gs; going on", len(up), n, timeout)
                return
            time.sleep(delay)
            delay = min(delay * 2, 0.1)

    def did_start_ok(self):
        return self._ex is not None

    def register_with_event_loop(self, hub):
        """Deliver outcomes on the hub's thread (called again after Celery
        reconnects to the broker: its hub then lost our reader)."""
        self._hub = hub
        self._owner = threading.get_ident()
        hub.add_reader(self._inbox.rfd, self._on_readable)

    def _on_readable(self, *_):
        self._drain()

    def on_stop(self):
        """Warm stop: requests not started are dropped (the broker delivers
        them again); running tasks finish and their outcomes are delivered
        here, since Celery's loop has ended."""
        self._stopping = True
        self.flush()
        while True:
            with self._lock:
                busy = self._running
            if not busy:
                break
            self._wait_and_drain(1.0)
        self._drain()
        self._close_executors(wait=True)

    def on_terminate(self):
        """Cold stop: running tasks are killed with their cgroups."""
        self._stopping = True
        with self._lock:
            for job in self._pending:
                job.dropped = True
            self._pending.clear()
        self._close_executors(wait=False)

    def on_close(self):
        pass

    def _close_executors(self, wait):
        with self._lock:
            exs = [self._ex] + list(self._retiring)
            self._ex = None
            self._retiring.clear()
        for ex in exs:
            if ex is None:
                continue
            try:
                ex.shutdown(wait=wait, cancel_futures=True)
            except Exception as e:
                logger.warning("cgpool.celery: shutting down a cgpool Executor: %r", e)
        if self._hub is not None and self._inbox is not None:
            try:
                self._hub.remove_reader(self._inbox.rfd)
            except Exception:
                pass
        d = self._dispatcher
        if d is not None and d is not threading.current_thread():
            self._inbox.put(("wake",))
            d.join(timeout=5)
        self._dispatcher = None

    def _wait_and_drain(self, timeout):
        try:
            select.select([self._inbox.rfd], [], [], timeout)
        except (OSError, ValueError):
            time.sleep(0.01)
        self._drain()

    # ----- submitting

    def on_apply(self, target, args=None, kwargs=None, callback=None, accept_callback=None,
                 timeout_callback=None, error_callback=None, soft_timeout=None, timeout=None,
                 correlation_id=None, **_):
        """Queue a request; never blocks. Returns the job, whose
        ``terminate(signum)`` Celery calls on revoke."""
        soft = soft_timeout or self._soft_default
        hard = timeout or self._hard_default
        if soft and hard and soft >= hard:
            soft = None  # as billiard: a soft limit at or past the hard one never fires
        job = _Job(target, tuple(args or ()), kwargs or None, callback, error_callback, accept_callback,
                   timeout_callback, soft, hard, self._memory_for(args), correlation_id)
        if self._hub is None and self._dispatcher is None:
            self._start_dispatcher()
        with self._lock:
            self._pending.append(job)
            self._pump_locked()
        return job

    def _memory_for(self, args):
        """The job's memory limit: the message header, else the task's
        attribute. Invalid values are reported when the job is submitted."""
        value = None
        try:
            name, request = args[0], args[2]
            if isinstance(request, dict):
                value = request.get(MEMORY_OPTION)
            if value is None and self.app is not None:
                task = self.app.tasks.get(name)
                value = getattr(task, MEMORY_OPTION, None)
        except (IndexError, TypeError, AttributeError):
            return None
        return value

    def _window(self):
        """How many jobs may be given to the Executor at once: the limit,
        plus, when the private supervisor has exactly that many workers,
        as many again waiting in its queue. A worker that finishes then
        starts the next task at once, without a round trip through this
        process (which is what prefork's outbound buffer does too); the
        waiting ones are not started, so not accepted and not acknowledged,
        and flush() and a stop cancel them. With a shared supervisor or a
        bigger private one, waiting tasks would start on idle workers beyond
        the limit, so none wait there; nor while a replaced one (grow,
        shrink, autoscale) still runs its last tasks."""
        limit = self._limit
        if self._socket or self._cap != limit or self._ahead <= 0 or self._retiring:
            # While a replaced Executor still runs tasks, a job waiting in the
            # new one's queue would start beside them, above the limit.
            return limit
        return limit + min(self._ahead, limit)

    def _pump_locked(self):
        """Submit queued jobs while the window (see _window) has room."""
        failed = []
        ex = self._ex
        limit = self._window()
        while self._pending and self._running < limit and not self._stopping:
            if ex is None:
                self._rebuild_locked(self._cap)
                break
            job = self._pending.popleft()
            if job.terminated is not None or self._revoked(job):
                failed.append((job, "terminated"))
                continue
            try:
                fut = self._submit(ex, job)
            except (_errors.SupervisorError, _errors.PoolClosed) as e:
                # The Executor is gone (its supervisor died): a new one
                # takes the job.
                self._pending.appendleft(job)
                logger.error("cgpool.celery: the cgpool supervisor is gone (%s); starting a new one", e)
                self._lose_executor_locked(ex)
                break
            except Exception as e:
                failed.append((job, e))
                continue
            job.fut, job.ex = fut, ex
            self._submitted.add(job)
            self._running += 1
            self.counts["submitted"] += 1
            put = self._inbox.put
            fut.add_pid_callback(lambda f, job=job: put(("start", job, f.pid, f.leaf, time.monotonic())))
            fut.add_done_callback(lambda f, job=job: put(("done", job, f)))
        if failed:
            for job, why in failed:
                self._inbox.put(("fail", job, why))

    def _revoked(self, job):
        if job.correlation_id is None:
            return False
        try:
            from celery.worker.state import revoked
        except ImportError:
            return False
        return job.correlation_id in revoked

    def _submit(self, ex, job):
        opts = {}
        if job.hard:
            opts["cgpool_timeout"] = float(job.hard)
        if job.memory_max is not None:
            mem = parse_size(job.memory_max)
            if mem:
                opts["cgpool_memory_max"] = mem
        init = self._init if self._socket else None
        return ex.submit(run_task, init, job.target, job.args, job.soft, job.kwargs, **opts)

    # ----- executors: replacing one that died, resizing

    def _lose_executor_locked(self, ex):
        if self._ex is ex:
            self._ex = None
        try:
            ex.shutdown(wait=False, cancel_futures=True)
        except Exception:
            pass
        if not self._stopping:
            self._rebuild_locked(self._cap)

    def _rebuild_locked(self, size):
        """Start a new Executor of *size* workers in a thread; the hub thread
        swaps it in when it is ready (so the event loop never waits for a
        supervisor to start)."""
        self._want = size
        if self._building:
            return
        self._building = True

        def build():
            while True:
                want = self._want
                try:
                    ex = self._new_executor(want)
                except BaseException as e:
                    self._inbox.put(("built", None, e, want))
                    return
                if want == self._want:
                    self._inbox.put(("built", ex, None, want))
                    return
                ex.shutdown(wait=False)  # the size changed meanwhile

        threading.Thread(target=build, name="cgpool-celery-build", daemon=True).start()

    def _on_built(self, ex, err, size):
        with self._lock:
            self._building = False
            if err is not None:
                logger.error("cgpool.celery: could not start a cgpool supervisor: %s; trying again in 1s", err)
                self._call_later(1.0, self._retry_build)
                return
            if self._stopping:
                self._retiring.add(ex)
                return
            old, self._ex, self._cap = self._ex, ex, size
            if old is not None:
                self._retire_locked(old)
            self._pump_locked()

    def _retry_build(self):
        with self._lock:
            if self._ex is None and not self._stopping:
                self._rebuild_locked(self._cap)

    def _retire_locked(self, old):
        """An Executor replaced by a new one: its running tasks finish; a task
        it had not started yet comes back cancelled and is submitted again."""
        self._retiring.add(old)

        def retire():
            try:
                old.shutdown(wait=True, cancel_futures=True)
            finally:
                self._inbox.put(("retired", old))

        threading.Thread(target=retire, name="cgpool-celery-retire", daemon=True).start()

    def grow(self, n=1):
        """Run *n* more tasks at once. A private supervisor smaller than that
        is replaced by a bigger one (its running tasks finish)."""
        self._resize(self._limit + int(n))

    def shrink(self, n=1):
        """Run *n* fewer tasks at once; a private supervisor is replaced by a
        smaller one unless cgpool_max_workers keeps it."""
        n = int(n)
        if n >= self._limit:
            raise ValueError("cannot shrink the pool to %d processes" % (self._limit - n))
        self._resize(self._limit - n)

    def _resize(self, size):
        with self._lock:
            self._limit = size
            if self._socket:
                resize = None
            else:
                resize = getattr(self._ex, "resize", None)
            if resize is not None:
                resize(size)
                self._cap = size
            elif not self._socket:
                ceiling = int(self._conf("cgpool_max_workers", 0) or 0)
                want = max(size, ceiling)
                if want != self._cap:
                    self._rebuild_locked(want)
            self._pump_locked()

    @property
    def num_processes(self):
        return self._limit if self._inbox is not None else self.limit

    def restart(self):
        """pool_restart: every worker is replaced (idle ones now, busy ones
        after their task), so they import the app's modules again."""
        ex = self._ex
        if ex is None:
            return
        threading.Thread(target=ex.clear_workers, name="cgpool-celery-restart", daemon=True).start()

    # ----- revoke

    def terminate_job(self, pid, signal=None):
        """revoke(terminate=True): kill the task running in worker *pid* with
        its whole cgroup (whatever *signal*: the supervisor kills the cgroup;
        SIGUSR1, prefork's soft-limit signal, is sent to the worker itself
        instead, so that ``SoftTimeLimitExceeded`` is raised in the task)."""
        with self._lock:
            job = self._by_pid.get(pid)
        if job is None or job.finished:
            return
        sig = signal or _signal_mod.SIGTERM
        if sig == SOFT_SIGNAL and self._signal_worker(job, sig):
            return
        job.killing = sig
        try:
            job.fut.cancel_and_kill_if_running()
        except Exception as e:
            logger.error("cgpool.celery: could not kill the task in worker %s: %r", pid, e)

    def _signal_worker(self, job, sig):
        """Send *sig* to the task's worker process, if it runs in our pid
        namespace (a private supervisor): through a pidfd opened after the
        process was seen in the task's cgroup, so a reused pid is never
        signalled."""
        if self._socket or not job.leaf or not job.pid:
            return False
        try:
            fd = os.pidfd_open(job.pid)
        except (OSError, AttributeError):
            return False
        try:
            with open("/proc/%d/cgroup" % job.pid) as f:
                if not any(line.rstrip("\n").endswith(":" + job.leaf) for line in f):
                    return False
            _signal_mod.pidfd_send_signal(fd, sig)
            return True
        except (OSError, AttributeError):
            return False
        finally:
            os.close(fd)

    # ----- flush

    def flush(self):
        """Drop the requests not started yet, unacknowledged: Celery calls this
        when its broker connection closes, and the broker delivers them
        again. Tasks already submitted but not started are cancelled too."""
        with self._lock:
            dropped = list(self._pending)
            self._pending.clear()
            submitted = [j for j in self._submitted if not j.accepted and not j.finished]
        for job in dropped:
            job.dropped = True
        n = len(dropped)
        for job in submitted:
            job.dropped = True
            try:
                cancelled = job.fut.cancel()
            except Exception:
                cancelled = False
            if cancelled:
                n += 1
            else:
                job.dropped = False  # it started: its outcome is delivered
        if n:
            logger.debug("cgpool.celery: flushed %d request(s) not started", n)

    # ----- delivering outcomes (the owner thread)

    def _start_dispatcher(self):
        """No hub (a transport without an event loop): one thread of ours
        runs Celery's callbacks, as billiard's result handler thread does."""
        with self._lock:
            if self._dispatcher is not None:
                return
            t = threading.Thread(target=self._dispatch_loop, name="cgpool-celery-dispatch", daemon=True)
            self._dispatcher = t
        t.start()

    def _dispatch_loop(self):
        while not (self._stopping and self._ex is None):
            timeout = 1.0
            with self._lock:
                if self._timers:
                    timeout = max(0.0, min(timeout, self._timers[0][0] - time.monotonic()))
            self._wait_and_drain(timeout)
            self._fire_timers()

    def _call_later(self, delay, fn):
        if self._hub is not None:
            return self._hub.call_later(delay, fn)
        entry = [time.monotonic() + delay, next(self._timer_seq), fn]
        with self._lock:
            heapq.heappush(self._timers, entry)
        self._inbox.put(("wake",))
        return _TimerEntry(entry)

    def _fire_timers(self):
        now = time.monotonic()
        due = []
        with self._lock:
            while self._timers and self._timers[0][0] <= now:
                due.append(heapq.heappop(self._timers)[2])
        for fn in due:
            if fn is not None:
                self._safe(fn)

    def _drain(self):
        if not self._drain_lock.acquire(blocking=False):
            return  # another thread drains (on_stop beside the dispatcher)
        try:
            while True:
                items = self._inbox.take()
                if not items:
                    return
                for item in items:
                    kind = item[0]
                    if kind == "start":
                        self._on_start(*item[1:])
                    elif kind == "done":
                        self._on_done(*item[1:])
                    elif kind == "fail":
                        self._on_fail(*item[1:])
                    elif kind == "built":
                        self._on_built(*item[1:])
                    elif kind == "retired":
                        with self._lock:
                            self._retiring.discard(item[1])
                            self._pump_locked()  # the window may widen again
        finally:
            self._drain_lock.release()

    def _safe(self, fn, *args, **kwargs):
        """Run one of Celery's callbacks as billiard does: log what it raises
        (Request.on_failure raises MemoryError on purpose), let only
        callbacks_propagate through. An exception must not leave the hub."""
        if fn is None:
            return
        try:
            fn(*args, **kwargs)
        except self.callbacks_propagate:
            raise
        except Exception as exc:
            logger.error("Pool callback raised exception: %r", exc, exc_info=1)

    def _accept(self, job, pid, when):
        if job.accepted:
            return
        job.accepted = True
        self._safe(job.accept_callback, pid, when)

    def _on_start(self, job, pid, leaf, when):
        if job.finished:
            return
        job.pid, job.leaf = pid, leaf
        with self._lock:
            if pid:
                self._by_pid[pid] = job
        self._accept(job, pid or os.getpid(), when)
        if job.soft and job.timeout_callback is not None:
            job.soft_timer = self._call_later(job.soft, lambda: self._soft_expired(job))

    def _soft_expired(self, job):
        if not job.finished:
            self._safe(job.timeout_callback, soft=True, timeout=job.soft)

    def _finish(self, job):
        job.finished = True
        with self._lock:
            self._running -= 1
            self._submitted.discard(job)
            if job.pid and self._by_pid.get(job.pid) is job:
                del self._by_pid[job.pid]
            self._pump_locked()
            if not self._running:
                self._idle.notify_all()
        if job.soft_timer is not None:
            try:
                job.soft_timer.cancel()
            except Exception:
                pass
            job.soft_timer = None

    def _on_fail(self, job, why):
        """A job that could not be submitted, or was revoked while queued."""
        if job.finished or job.dropped:
            return
        job.finished = True
        self._accept(job, os.getpid(), time.monotonic())
        if why == "terminated":
            self._safe(job.error_callback, _einfo(Terminated(job.terminated)))
        else:
            self._safe(job.error_callback, _einfo(why))

    def _on_done(self, job, fut):
        if job.finished:
            return
        if fut.cancelled():
            if job.killing is not None:
                self._finish(job)
                self._safe(job.error_callback, _einfo(Terminated(job.killing)))
                return
            if job.dropped:
                self._finish(job)
                return
            # Cancelled by an Executor being replaced before it started it:
            # the next one runs it.
            with self._lock:
                self._running -= 1
                self._submitted.discard(job)
                job.fut = job.ex = None
                self._pending.appendleft(job)
                self._pump_locked()
            return
        exc = fut.exception()
        if exc is None:
            self._finish(job)
            self._accept(job, job.pid or fut.pid or os.getpid(), time.monotonic())
            self._safe(job.callback, fut.result())
            return
        if isinstance(exc, _errors.SupervisorError) and not job.accepted:
            # The supervisor went away before it started the task: it never
            # ran; a new supervisor takes it.
            with self._lock:
                self._running -= 1
                self._submitted.discard(job)
                ex, job.fut, job.ex = job.ex, None, None
                self._pending.appendleft(job)
                if ex is not None:
                    self._lose_executor_locked(ex)
                self._pump_locked()
            return
        self._finish(job)
        self._accept(job, job.pid or fut.pid or os.getpid(), time.monotonic())
        if isinstance(exc, _errors.QueueTimeoutError):
            self._safe(job.error_callback, _einfo(exc))
        elif isinstance(exc, _errors.TimeoutError):
            self.counts["timeouts"] += 1
            self._safe(job.error_callback, _einfo(TimeLimitExceeded(job.hard)))
            self._safe(job.timeout_callback, soft=False, timeout=job.hard)
        elif isinstance(exc, _errors.OutOfMemoryError):
            self.counts["oom"] += 1
            self._safe(job.error_callback, _einfo(self._oom_error(job, exc)))
        elif isinstance(exc, _errors.ProcessError):
            self.counts["lost"] += 1
            status = exc.exit_code if exc.exit_code else 0
            self._safe(job.error_callback, _einfo(WorkerLostError(
                "Worker exited prematurely: %s Job: %s. (cgpool: %s)"
                % (human_status(status), job.correlation_id, exc))))
        elif isinstance(exc, _errors.SupervisorError):
            self.counts["lost"] += 1
            self._safe(job.error_callback, _einfo(WorkerLostError(
                "Worker exited prematurely: the cgpool supervisor went away Job: %s. (%s)"
                % (job.correlation_id, exc))))
            with self._lock:
                if job.ex is not None:
                    self._lose_executor_locked(job.ex)
        elif isinstance(exc, Exception):
            self._safe(job.error_callback, _einfo(exc))
        else:
            # SystemExit, KeyboardInterrupt...: prefork's child would have
            # died of it (celery.concurrency.base.apply_target does the same).
            self._safe(job.error_callback, _einfo(WorkerLostError(repr(exc))))

    def _oom_error(self, job, exc):
        limit = parse_size(job.memory_max) if job.memory_max is not None else 0
        if not limit:
            limit = parse_size(self._conf("cgpool_memory_max"))
        text = "cgpool worker %d was OOM-killed: the task's cgroup reached its memory limit (reason=oom" % (
            exc.pid or 0)
        if limit:
            text += ", memory_max=%d" % limit
        if exc.memory_peak:
            text += ", memory_peak=%d" % exc.memory_peak
        text += ")"
        return MemoryLimitExceeded(text, limit, exc.memory_peak or 0, exc.pid or 0)

    # ----- statistics

    def _get_info(self):
        info = super()._get_info()
        ex = self._ex
        pids = []
        stats = {}
        if ex is not None:
            try:
                pids = [w["pid"] for w in (ex.status().get("workers") or []) if w.get("pid")]
            except Exception as e:
                stats["error"] = str(e)
            try:
                stats.update(ex.get_statistics())
                more = getattr(ex, "cgpool_statistics", None)
                if more is not None:
                    stats.update(more())
            except Exception as e:
                stats["error"] = str(e)
        with self._lock:
            stats.update({
                "supervisor": self._socket or "private",
                "pool": getattr(ex, "pool_name", None),
                "queued_in_pool": len(self._pending),
                "running": self._running,
                "timeouts": self.counts["timeouts"],
                "oom_kills": self.counts["oom"],
                "workers_lost": self.counts["lost"],
            })
        info.update({
            "max-concurrency": self._limit if self._inbox is not None else self.limit,
            "implementation": "cgpool.celery:TaskPool",
            "processes": pids,
            "max-tasks-per-child": self.options.get("maxtasksperchild") or "N/A",
            "put-guarded-by-semaphore": False,
            "timeouts": (self._soft_default or 0, self._hard_default or 0),
            "cgpool": stats,
        })
        return info


_signal_mod = signal


class _TimerEntry:
    __slots__ = ("entry",)

    def __init__(self, entry):
        self.entry = entry

    def cancel(self):
        self.entry[2] = None
