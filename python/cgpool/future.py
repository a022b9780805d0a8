"""cgpool's Future: a concurrent.futures.Future with Deadpool's extras,
settled by the Executor's reader thread through the public
concurrent.futures API only.

A Future stays PENDING (in concurrent.futures' terms) while its task runs:
``running()`` answers from the supervisor's "running" message instead, and
so a running task's future can still end cancelled when the supervisor
killed it (``cancel_and_kill_if_running``), through the public ``cancel()``
and ``set_running_or_notify_cancel()``.
"""

import concurrent.futures
import os
import sys
import threading

from cgpool.errors import SupervisorError

__all__ = ["Future"]

_CANCEL_LOCK = threading.Lock()


class Future(concurrent.futures.Future):
    """A concurrent.futures.Future with cgpool's (and Deadpool's) extras.

    - ``pid``: the worker's pid once the task started (None before);
      ``leaf``: the cgroup it runs in;
    - ``add_pid_callback(fn)``: ``fn(future)`` when the pid is known (at once
      if it already is); runs on the executor's reader thread;
    - ``running()``: True while the supervisor runs the task;
    - ``cancel()``: asks the supervisor, and answers from its view, as
      concurrent.futures does from its own: True only if the task had not
      started (it then never will); False for a running or finished task,
      which is left alone (see cancel_and_kill_if_running);
    - ``cancel_and_kill_if_running()``: also kills a running task's whole
      cgroup; the future then ends cancelled.
    """

    def __init__(self):
        super().__init__()
        self._pid = None
        self.leaf = None
        self._pid_callbacks = []
        self._cg_started = False   # the supervisor said "running" (or answered)
        self._cg_queued = False    # counted in the executor's backlog
        self._cg_notified = False  # ended cancelled (once)
        self._cg_task = None       # (Connection, id) once submitted

    @property
    def pid(self):
        """The pid of the worker that runs (or ran) the task, else None."""
        return self._pid

    def add_pid_callback(self, fn):
        """Call ``fn(self)`` once the task's worker pid is known."""
        with _CANCEL_LOCK:
            if self._pid is None:
                self._pid_callbacks.append(fn)
                return
        _call_quietly(fn, self)

    def _set_pid(self, pid, leaf):
        with _CANCEL_LOCK:
            self._pid = pid or None
            self.leaf = leaf or None
            cbs, self._pid_callbacks = self._pid_callbacks, []
        for fn in cbs:
            _call_quietly(fn, self)

    def running(self):
        """True while the task runs on a worker."""
        return self._cg_started and not self.done()

    def cancel(self):
        """Cancel the task if it has not started, as the supervisor sees it
        (one round trip to it). Returns True if the task will never run,
        False if it is running or done (a running task is not stopped: see
        cancel_and_kill_if_running)."""
        if self.cancelled():
            return True
        if self.done() or self._cg_started:
            return False
        if self._cg_task is None:
            return self._end_cancelled()
        return _cancel(self, hard=False)

    def cancel_and_kill_if_running(self, sig=None):
        """Cancel the task, killing it (its whole cgroup) if it is running.
        *sig* is accepted for Deadpool compatibility: the supervisor always
        kills the cgroup outright. Returns True unless the task had already
        finished."""
        if self.done():
            return self.cancelled()
        if self._cg_task is None:
            return self._end_cancelled()
        return _cancel(self, hard=True)

    def _end_cancelled(self):
        """End the future cancelled (once), through the public API: the
        future stays PENDING while its task runs, so even a running task's
        future can end so when the supervisor killed it."""
        with _CANCEL_LOCK:
            if self._cg_notified:
                return True
            if not concurrent.futures.Future.cancel(self):
                return False  # it finished meanwhile
            self._cg_notified = True
        self.set_running_or_notify_cancel()
        return True

    def _settle(self, result=None, exception=None):
        try:
            if exception is not None:
                self.set_exception(exception)
            else:
                self.set_result(result)
        except concurrent.futures.InvalidStateError:
            pass  # cancelled here meanwhile

    def __repr__(self):
        if self.cancelled():
            state = "cancelled"
        elif self.done():
            exc = self.exception()
            state = "finished raised %s" % type(exc).__name__ if exc is not None else "finished"
        elif self._cg_started:
            state = "running"
        else:
            state = "pending"
        return "<%s at %#x state=%s>" % (type(self).__name__, id(self), state)


def _cancel(fut, hard):
    conn, tid = fut._cg_task
    if conn.pid != os.getpid() or conn.abandoned:
        return False
    try:
        h = conn.wait(conn.request_async({"type": "cancel", "id": tid, "mode": "hard" if hard else "soft"},
                                         kind="cancel"), what="cancel")
    except SupervisorError:
        return fut.cancelled()  # the connection went away: the future fails as lost
    if h.get("ok"):
        return fut._end_cancelled()
    if h.get("state") == "running":
        fut._cg_started = True
    return fut.cancelled()


def _call_quietly(fn, fut):
    try:
        fn(fut)
    except Exception:
        import traceback
        print("cgpool: exception in pid callback %r:" % (fn,), file=sys.stderr)
        traceback.print_exc()
