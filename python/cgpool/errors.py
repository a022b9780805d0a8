"""Exceptions a cgpool future can end with, and how server outcomes map to them.

The classes double as Deadpool's (``cgpool.deadpool`` re-exports them), so code
written against Deadpool catches the same names:

- :class:`TimeoutError` (a ``concurrent.futures.TimeoutError``): the task ran
  past its time limit and the supervisor killed its whole cgroup;
- :class:`QueueTimeoutError`: it never started within its queue deadline;
- :class:`ProcessError` (a ``multiprocessing.ProcessError``): the worker died
  under the task (:class:`OutOfMemoryError` when the cgroup hit its limit);
- :class:`PoolClosed`: submit after shutdown, or the supervisor is draining;
- :class:`Rejected`: the supervisor refused the submission (nothing ran);
- :class:`TaskError` (a :class:`ProcessError`, as Deadpool reports it): the
  task raised an exception that could not be pickled in the worker (its
  text and traceback are kept). An exception that was sent but cannot be
  unpickled here fails the future with the unpickling error itself, as in
  Deadpool, with the task's traceback as its ``__cause__``;
- :class:`SupervisorError`: the supervisor could not be started or reached,
  or it went away; :class:`TaskLost`: a task's outcome was lost with it.
"""

import concurrent.futures
import multiprocessing
import signal as _signal

__all__ = [
    "CancelledError",
    "TimeoutError",
    "QueueTimeoutError",
    "ProcessError",
    "OutOfMemoryError",
    "PoolClosed",
    "Rejected",
    "TaskError",
    "SupervisorError",
    "TaskLost",
    "MainGuardError",
    "RemoteTraceback",
    "signal_name",
    "exit_description",
]

CancelledError = concurrent.futures.CancelledError
_BaseTimeout = concurrent.futures.TimeoutError


class TimeoutError(_BaseTimeout):  # noqa: A001 - Deadpool's name
    """The task ran longer than its timeout; its cgroup was killed whole."""

    def __init__(self, message="task timed out", timeout=None, pid=None):
        super().__init__(message)
        self.timeout = timeout
        self.pid = pid


class QueueTimeoutError(TimeoutError):
    """The task did not start within its queue timeout; it never ran."""


class ProcessError(multiprocessing.ProcessError):
    """The process running the task died without producing an outcome.

    Attributes: ``reason`` ("oom", "killed" or "crashed"), ``signal`` (the
    killing signal number or 0), ``exit_code`` (Deadpool's form: minus the
    signal number for a signal, else the exit status), ``pid``, ``leaf`` (the
    task's cgroup), ``memory_peak`` (bytes or 0) and ``message`` (the
    supervisor's detail).
    """

    def __init__(self, text, reason="crashed", signal=0, exit_code=0, pid=0,
                 leaf="", memory_peak=0, message=""):
        super().__init__(text)
        self.reason = reason
        self.signal = signal
        self.exit_code = exit_code
        self.pid = pid
        self.leaf = leaf
        self.memory_peak = memory_peak
        self.message = message

    def __reduce__(self):
        return (_rebuild_process_error, (type(self), self.args, self.__dict__))


def _rebuild_process_error(cls, args, state):
    e = cls(*args)
    e.__dict__.update(state)
    return e


class OutOfMemoryError(ProcessError):
    """The task's cgroup reached its memory limit and the kernel OOM-killed it."""


class MainGuardError(RuntimeError):
    """A pool was started while a cgpool worker imported the caller's main
    module: the script creates its pool outside an ``if __name__ ==
    "__main__":`` guard. The text says so and shows the idiom."""


class PoolClosed(RuntimeError):
    """The pool is shut down (or shutting down): no more tasks are taken."""


class Rejected(RuntimeError):
    """The supervisor refused the submission; nothing of it ran, so retrying
    is safe. ``reason`` is the protocol's: queue_full, invalid, too_large,
    over_limit (above one of the pool's ceilings: max_timeout, memory_max,
    max_env_bytes, max_tasks_per_client), forbidden (it would run as root
    on a pool without allow_root), unknown_pool."""

    def __init__(self, message, reason=""):
        super().__init__(message)
        self.reason = reason


class TaskError(ProcessError):
    """The task raised, but its exception could not be pickled in the worker
    (its ``__reduce__`` raised or returned something pickle refuses).
    Deadpool reports this as a ProcessError whose text begins "An exception
    occurred but pickling it failed."; so does cgpool. The text then gives
    the original exception and its traceback, and why pickling failed;
    ``traceback`` is the worker-side traceback alone. ``reason`` is
    "task_error"."""

    def __init__(self, message, traceback="", **kw):
        kw.setdefault("reason", "task_error")
        super().__init__(message, **kw)
        self.traceback = traceback


UNPICKLABLE_EXCEPTION = ("An exception occurred but pickling it failed. The original exception is "
                         "presented here as a string with traceback.")


def unpicklable_exception_text(message, tb, why):
    """Deadpool's text for an exception that could not be pickled: its
    sentence, the original exception and traceback, then the reason."""
    return "%s\n%s\n%s\nThe reason for the pickling failure is the following:\n%s" % (
        UNPICKLABLE_EXCEPTION, message, tb.rstrip("\n"), why)


class SupervisorError(RuntimeError):
    """cgpool serve could not be started or reached, or it went away."""


class TaskLost(SupervisorError):
    """The supervisor went away while the task was submitted and not yet
    finished: its outcome is lost. ``started`` says whether the task was
    known to have started (it may have run, or be partly done); a task
    that had not may still have started in the last moments. The Executor
    goes on with a new supervisor: resubmit only what is safe to run
    twice."""

    def __init__(self, message, started=False):
        super().__init__(message)
        self.started = started


class RemoteTraceback(Exception):
    """Carries a worker-side traceback as the ``__cause__`` of a task's own
    exception, as concurrent.futures.process does, so it prints with it."""

    def __init__(self, tb):
        super().__init__(tb)
        self.tb = tb

    def __str__(self):
        return self.tb


def signal_name(sig):
    """Deadpool's signal label: ``signal.strsignal`` (9 -> "Killed"), else
    the symbolic name (SIGKILL), else "signal N"."""
    try:
        name = _signal.strsignal(sig)
    except (ValueError, TypeError, AttributeError):
        name = None
    if name and not name.startswith("Unknown signal"):
        return name
    try:
        return _signal.Signals(sig).name
    except ValueError:
        return "signal %d" % sig


def exit_description(signal=0, exit_code=0):
    """Deadpool's ``exitcode N (label)`` text: ``exitcode -9 (Killed)`` for a
    signal, ``exitcode 3 (exit status 3)`` for an exit status (never
    "(Unknown)")."""
    if signal:
        return "exitcode %d (%s)" % (-signal, signal_name(signal))
    return "exitcode %d (exit status %d)" % (exit_code, exit_code)


def _mib(n):
    return "%.1f MiB" % (n / (1 << 20))


def process_error_from(h):
    """Build the ProcessError (or OutOfMemoryError) for a ``process_error``
    header. The text is Deadpool's sentence, ``Subprocess PID completed
    unexpectedly with exitcode -9 (Killed)``, then why, once. The
    supervisor's own detail (which repeats the pid and the exit) stays in
    ``.message``; it is added to the text only where no worker ran (a
    worker that could not start: the detail is the only cause given)."""
    reason = h.get("reason") or "crashed"
    sig = int(h.get("signal") or 0)
    code = int(h.get("exit_code") or 0)
    pid = int(h.get("pid") or 0)
    peak = int(h.get("memory_peak") or 0)
    detail = h.get("message") or ""
    exitcode = -sig if sig else code
    if reason == "oom":
        why = "out of memory: the task's cgroup reached its memory limit"
        if peak:
            why += " (peak %s)" % _mib(peak)
    elif reason == "killed":
        why = "killed by a signal that cgpool did not send"
    elif sig:
        why = "the worker died without answering"
    else:
        why = "the worker exited without answering"
    if pid:
        text = "Subprocess %d completed unexpectedly with %s: %s" % (
            pid, exit_description(sig, code), why)
    else:
        text = "Worker process could not run the task: %s" % (detail or why)
    cls = OutOfMemoryError if reason == "oom" else ProcessError
    return cls(text, reason=reason, signal=sig, exit_code=exitcode, pid=pid,
               leaf=h.get("leaf") or "", memory_peak=peak, message=detail)


def task_lost_from(h, started):
    """The TaskLost for a ``process_error`` whose reason is ``lost``: the
    supervisor lost the task to an internal error (a bug in cgpool, which
    it logs with its stack); the task may have run in part."""
    detail = h.get("message") or "no detail"
    return TaskLost("the task's outcome is lost: the supervisor lost it to an internal error (%s); "
                    "it may have run in part or whole" % detail, started=started)


def timeout_error_from(h):
    ms = int(h.get("timeout_ms") or 0)
    pid = int(h.get("pid") or 0)
    text = "Task timed out after %gs" % (ms / 1000.0) if ms else "Task timed out"
    if pid:
        text += "; process %d and everything in its cgroup were killed" % pid
    return TimeoutError(text, timeout=ms / 1000.0 if ms else None, pid=pid or None)


def rejected_error_from(h):
    reason = h.get("reason") or ""
    msg = h.get("message") or reason or "rejected"
    if reason == "draining":
        return PoolClosed("The pool is closed. No more tasks can be submitted. (%s)" % msg)
    return Rejected("submission rejected (%s): %s" % (reason, msg), reason=reason)
