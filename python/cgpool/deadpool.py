"""Deadpool's API on cgpool: ``import cgpool.deadpool as deadpool``.

Code written for the Deadpool library (``deadpool-executor``) runs unchanged
with this import: ``Deadpool`` takes the same constructor arguments with the
same defaults, ``submit`` takes ``deadpool_timeout`` and
``deadpool_priority``, and the exceptions, ``Future`` extras,
``as_completed``, ``get_statistics()`` and ``clear_workers()`` are there.

What differs, on purpose:

- ``mp_context`` and ``daemon`` are accepted and mean nothing here: workers
  are started by the supervisor (``python -m cgpool.worker``) and are never
  daemonic (a task may start subprocesses and pools of its own);
- timeouts are enforced by the supervisor, which kills the task's whole
  cgroup, so a task stuck in C code holding the GIL times out too;
- ``Future.cancel()`` follows concurrent.futures: False for a running task
  (Deadpool returns True but lets it run); ``cancel_and_kill_if_running()``
  kills it; ``Future.running()`` is True while the task runs;
- an out-of-memory kill raises ``OutOfMemoryError``, a ``ProcessError``;
- as Deadpool, the pool starts ``max_workers`` workers (``start_workers``,
  default "max"); each retires once it has finished a task, is idle with
  nothing queued and the pool is above ``min_workers`` (``idle_timeout``,
  default 0.001 s), and ``worker_processes_created`` counts every worker
  that took a slot (first ones, growth and replacements): the figures of
  Deadpool's README statistics example, and of two bursts of 6 with
  ``min_workers=5, max_workers=10`` (10, then 11), are Deadpool's;
- per-task options are checked at ``submit`` (``deadpool_timeout="5"`` is a
  TypeError there, not in the pool).

The cgpool options (``memory_max``, ``pids_max``, ``socket``, ``pool``,
``idle_timeout``, ...) are accepted as keywords too, and ``submit`` also
takes the ``cgpool_*`` keywords.
"""

from concurrent.futures import CancelledError, as_completed, wait

from cgpool.errors import (OutOfMemoryError, PoolClosed, ProcessError, QueueTimeoutError,
                           TaskError, TimeoutError)
from cgpool.executor import Executor
from cgpool.future import Future
from cgpool.options import SUBMIT_OPTIONS

__all__ = [
    "Deadpool",
    "Future",
    "CancelledError",
    "TimeoutError",
    "ProcessError",
    "OutOfMemoryError",
    "QueueTimeoutError",
    "PoolClosed",
    "TaskError",
    "as_completed",
    "wait",
]

# Deadpool retires a worker above min_workers the moment it finishes a task
# with nothing queued; the supervisor's idle delay does that when it is this
# short.
DEFAULT_IDLE_TIMEOUT = 0.001


class Deadpool(Executor):
    """Deadpool's executor, run by cgpool. See the module doc for what
    differs from the original."""

    _kind = "Deadpool"
    _names = {"cgpool_timeout": "deadpool_timeout", "cgpool_priority": "deadpool_priority"}

    def __init__(self, max_workers=None, min_workers=None, max_tasks_per_child=None,
                 max_worker_memory_bytes=None, mp_context=None, initializer=None, initargs=(),
                 finalizer=None, finalargs=(), max_backlog=1000, shutdown_wait=None,
                 shutdown_cancel_futures=None, daemon=True,
                 malloc_trim_rss_memory_threshold_bytes=None, propagate_environ=None,
                 **cgpool_options):
        self.mp_context = mp_context  # meaningless here: kept for introspection
        self.daemon = daemon          # meaningless here: workers may have children
        if "socket" not in cgpool_options:
            cgpool_options.setdefault("idle_timeout", DEFAULT_IDLE_TIMEOUT)
            # Deadpool starts max_workers workers and counts each.
            cgpool_options.setdefault("start_workers", "max")
        super().__init__(
            max_workers=max_workers, min_workers=min_workers,
            max_tasks_per_child=max_tasks_per_child,
            max_worker_memory_bytes=max_worker_memory_bytes,
            malloc_trim_rss_memory_threshold_bytes=malloc_trim_rss_memory_threshold_bytes,
            initializer=initializer, initargs=initargs, finalizer=finalizer, finalargs=finalargs,
            max_backlog=max_backlog, shutdown_wait=shutdown_wait,
            shutdown_cancel_futures=shutdown_cancel_futures,
            propagate_environ=propagate_environ, **cgpool_options)

    def submit(self, fn, /, *args, deadpool_timeout=None, deadpool_priority=0, **kwargs):
        """Schedule ``fn(*args, **kwargs)``. ``deadpool_timeout``: seconds from
        the start of the task (None or 0: none), then TimeoutError;
        ``deadpool_priority``: int >= 0, lower runs sooner. Both are checked
        here: TypeError for the wrong type, ValueError for a negative
        value. Raises PoolClosed after shutdown."""
        opts = {}
        for k in list(kwargs):
            if k.startswith("cgpool_"):
                if k not in SUBMIT_OPTIONS:
                    raise TypeError("unknown submit option %s (the options are %s)"
                                    % (k, ", ".join(SUBMIT_OPTIONS)))
                opts[k] = kwargs.pop(k)
        if deadpool_timeout is not None:
            opts.setdefault("cgpool_timeout", deadpool_timeout)
        if deadpool_priority != 0 or isinstance(deadpool_priority, bool):
            opts.setdefault("cgpool_priority", deadpool_priority)
        return self._submit(fn, args, kwargs, opts or None, self._names)
