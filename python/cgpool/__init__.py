"""cgpool: a process pool that cannot be broken.

``cgpool.Executor`` is a ``concurrent.futures.Executor`` whose workers are run
by the ``cgpool serve`` supervisor, each in its own cgroup v2 slot: timeouts
and hard cancels kill the task's whole cgroup (even code holding the GIL in
C), a worker killed by the OOM killer fails only its task
(``OutOfMemoryError``), and the pool goes on. ``cgpool.deadpool`` offers the
same under Deadpool's names.

Names are imported lazily so that the worker program (``python -m
cgpool.worker``) starts without loading the client side.
"""

__version__ = "0.1.0"

_LAZY = {
    "Executor": "cgpool.executor",
    "Future": "cgpool.future",
    "CancelledError": "cgpool.errors",
    "TimeoutError": "cgpool.errors",
    "QueueTimeoutError": "cgpool.errors",
    "ProcessError": "cgpool.errors",
    "OutOfMemoryError": "cgpool.errors",
    "PoolClosed": "cgpool.errors",
    "Rejected": "cgpool.errors",
    "TaskError": "cgpool.errors",
    "SupervisorError": "cgpool.errors",
    "TaskLost": "cgpool.errors",
    "MainGuardError": "cgpool.errors",
}

__all__ = sorted(_LAZY) + ["as_completed", "wait"]


def __getattr__(name):
    if name in ("as_completed", "wait"):
        import concurrent.futures
        return getattr(concurrent.futures, name)
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError("module 'cgpool' has no attribute %r" % name)
    import importlib
    value = getattr(importlib.import_module(mod), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + __all__)
