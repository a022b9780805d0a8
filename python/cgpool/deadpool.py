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
  kills it;
- an out-of-memory kill raises ``OutOfMemoryError``, a ``ProcessError``;
- idle workers above ``min_workers`` retire after ``idle_timeout`` seconds
  (default 1 s here; Deadpool retires them at once).

The cgpool options (``memory_max``, ``pids_max``, ``socket``, ``pool``,
``idle_timeout``, ...) are accepted as keywords too, and ``submit`` also
takes the ``cgpool_*`` keywords.
"""

from concurrent.futures import CancelledError, as_completed, wait

from cgpool.errors import (OutOfMemoryError, PoolClosed, ProcessError, QueueTimeoutError,
                           TaskError, TimeoutError)
from cgpool.executor import Executor, Future

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

DEFAULT_IDLE_TIMEOUT = 1.0


class Deadpool(Executor):
    """Deadpool's executor, run by cgpool. See the module doc for what
    differs from the original."""

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
        ``deadpool_priority``: int >= 0, lower runs sooner (ValueError if
        negative). Raises PoolClosed after shutdown."""
        if deadpool_priority < 0:
            raise ValueError("Parameter deadpool_priority must be >= 0, but was %s" % deadpool_priority)
        if deadpool_timeout is not None or deadpool_priority:
            kwargs.setdefault("cgpool_timeout", deadpool_timeout)
            kwargs.setdefault("cgpool_priority", deadpool_priority)
        return super().submit(fn, *args, **kwargs)
