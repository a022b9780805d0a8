"""Outcome-to-exception mapping, Deadpool's message forms, and Future
semantics, without a supervisor."""

import concurrent.futures
import multiprocessing
import pickle
import unittest

import support  # noqa: F401
import cgpool
import cgpool.deadpool as deadpool
from cgpool import errors, executor


class Messages(unittest.TestCase):
    def test_exit_description(self):
        cases = [
            ((9, 0), "exitcode -9 (Killed)"),
            ((15, 0), "exitcode -15 (Terminated)"),
            ((11, 0), "exitcode -11 (Segmentation fault)"),
            ((0, 3), "exitcode 3 (exit status 3)"),
            ((0, 0), "exitcode 0 (exit status 0)"),
        ]
        for (sig, code), want in cases:
            with self.subTest(sig=sig, code=code):
                self.assertEqual(errors.exit_description(sig, code), want)
        self.assertNotIn("Unknown", errors.exit_description(0, 77))

    def test_signal_name_fallbacks(self):
        self.assertEqual(errors.signal_name(9), "Killed")
        self.assertEqual(errors.signal_name(200), "signal 200")

    def test_process_error_killed(self):
        e = errors.process_error_from({"type": "process_error", "id": 1, "pid": 4242, "leaf": "/x/w-1/worker",
                                       "reason": "killed", "signal": 9})
        self.assertIs(type(e), errors.ProcessError)
        self.assertIsInstance(e, multiprocessing.ProcessError)
        self.assertEqual(str(e).split(":")[0], "Subprocess 4242 completed unexpectedly with exitcode -9 (Killed)")
        self.assertEqual((e.reason, e.signal, e.exit_code, e.pid, e.leaf), ("killed", 9, -9, 4242, "/x/w-1/worker"))

    def test_process_error_oom(self):
        # The golden process_error frame's header.
        e = errors.process_error_from({"type": "process_error", "id": 42, "pid": 31337, "leaf": "w-3",
                                       "reason": "oom", "exit_code": -1, "signal": 9,
                                       "memory_peak": 536870912})
        self.assertIsInstance(e, errors.OutOfMemoryError)
        self.assertIsInstance(e, deadpool.ProcessError)
        self.assertIn("exitcode -9 (Killed)", str(e))
        self.assertIn("out of memory", str(e))
        self.assertIn("512.0 MiB", str(e))
        self.assertEqual(e.memory_peak, 536870912)

    def test_process_error_lost(self):
        # The supervisor's "lost" (an internal error, docs/protocol.md) is a
        # TaskLost, not a worker's death.
        fut = cgpool.Future()
        fut._cg_started = True
        executor._settle_outcome(fut, "process_error", {"type": "process_error", "id": 1, "reason": "lost",
                                                        "message": "slot panicked"}, b"")
        e = fut.exception(timeout=0)
        self.assertIs(type(e), errors.TaskLost)
        self.assertTrue(e.started)
        self.assertIn("lost it to an internal error (slot panicked)", str(e))

    def test_process_error_crashed_exit_code(self):
        e = errors.process_error_from({"type": "process_error", "pid": 7, "reason": "crashed", "exit_code": 3,
                                       "message": "worker exited"})
        self.assertIn("exitcode 3 (exit status 3)", str(e))
        self.assertIn("worker exited", str(e))
        self.assertEqual(e.exit_code, 3)
        e = errors.process_error_from({"type": "process_error", "reason": "crashed",
                                       "message": "exec: no such file"})
        self.assertIn("no such file", str(e))

    def test_process_error_pickles(self):
        e = errors.process_error_from({"type": "process_error", "pid": 7, "reason": "oom", "signal": 9})
        e2 = pickle.loads(pickle.dumps(e))
        self.assertIs(type(e2), errors.OutOfMemoryError)
        self.assertEqual((e2.reason, e2.pid, str(e2)), (e.reason, e.pid, str(e)))

    def test_timeout(self):
        e = errors.timeout_error_from({"type": "timeout", "id": 1, "pid": 5, "timeout_ms": 1500})
        self.assertIsInstance(e, concurrent.futures.TimeoutError)
        self.assertIsInstance(e, deadpool.TimeoutError)
        self.assertIn("timed out", str(e))
        self.assertEqual(e.timeout, 1.5)
        self.assertTrue(issubclass(errors.QueueTimeoutError, errors.TimeoutError))

    def test_rejected(self):
        e = errors.rejected_error_from({"type": "rejected", "reason": "draining", "message": "shutting down"})
        self.assertIsInstance(e, deadpool.PoolClosed)
        self.assertIsInstance(e, RuntimeError)
        e = errors.rejected_error_from({"type": "rejected", "reason": "too_large", "message": "big"})
        self.assertIsInstance(e, errors.Rejected)
        self.assertEqual(e.reason, "too_large")

    def test_task_exception_gets_remote_traceback(self):
        exc = executor._task_exception({"type": "task_error", "message": "ValueError: x",
                                        "traceback": "Traceback...\nValueError: x\n"},
                                       pickle.dumps(ValueError("x")))
        self.assertIsInstance(exc, ValueError)
        self.assertIsInstance(exc.__cause__, errors.RemoteTraceback)
        self.assertIn("Traceback...", str(exc.__cause__))
        # An exception that cannot be unpickled here: the error of
        # unpickling it, as Deadpool gives, with the task's traceback.
        exc = executor._task_exception({"type": "task_error", "message": "Foo: y", "traceback": "tb"}, b"junk")
        self.assertIsInstance(exc, pickle.UnpicklingError)
        self.assertIn("tb", str(exc.__cause__))
        exc = executor._task_exception({"type": "task_error", "message": "Foo: z"}, b"")
        self.assertIsInstance(exc, errors.TaskError)

    def test_names(self):
        self.assertIs(deadpool.TimeoutError, cgpool.TimeoutError)
        self.assertIs(deadpool.CancelledError, concurrent.futures.CancelledError)
        self.assertIs(deadpool.as_completed, concurrent.futures.as_completed)
        self.assertIs(deadpool.Future, cgpool.Future)
        self.assertTrue(issubclass(deadpool.Deadpool, cgpool.Executor))
        self.assertTrue(issubclass(cgpool.Executor, concurrent.futures.Executor))


class FutureSemantics(unittest.TestCase):
    """The transitions a Future goes through, driven as the reader thread
    drives them, through the public concurrent.futures API only."""

    def test_cancel_pending_is_seen_by_as_completed(self):
        f = cgpool.Future()
        self.assertTrue(f.cancel())
        self.assertTrue(f.cancelled())
        self.assertEqual(list(concurrent.futures.as_completed([f], timeout=1)), [f])
        self.assertTrue(f._end_cancelled())   # the supervisor's late word changes nothing
        f._settle(1)
        self.assertTrue(f.cancelled())

    def test_cancel_running_returns_false(self):
        f = cgpool.Future()
        f._cg_started = True
        self.assertTrue(f.running())
        self.assertIn("state=running", repr(f))
        self.assertFalse(f.cancel())
        f._settle(5)
        self.assertEqual(f.result(), 5)
        self.assertFalse(f.running())

    def test_hard_cancel_of_running_future(self):
        f = cgpool.Future()
        f._cg_started = True
        seen = []
        f.add_done_callback(seen.append)
        waiter = concurrent.futures.wait([f], timeout=0)
        self.assertEqual(waiter.done, set())
        self.assertTrue(f._end_cancelled())
        self.assertTrue(f.cancelled())
        self.assertEqual(seen, [f])
        self.assertEqual(list(concurrent.futures.as_completed([f], timeout=1)), [f])
        with self.assertRaises(concurrent.futures.CancelledError):
            f.result()
        self.assertTrue(f._end_cancelled())  # twice: no "unexpected state" error

    def test_pid_callbacks(self):
        f = cgpool.Future()
        seen = []
        f.add_pid_callback(lambda fut: seen.append(("early", fut.pid)))
        self.assertIsNone(f.pid)
        f._set_pid(123, "/cg/w-1/worker")
        f.add_pid_callback(lambda fut: seen.append(("late", fut.pid)))
        self.assertEqual(seen, [("early", 123), ("late", 123)])
        self.assertEqual(f.leaf, "/cg/w-1/worker")

    def test_cancel_and_kill_pending(self):
        f = cgpool.Future()
        self.assertTrue(f.cancel_and_kill_if_running())
        self.assertTrue(f.cancelled())
        g = cgpool.Future()
        g._settle(1)
        self.assertFalse(g.cancel_and_kill_if_running())


if __name__ == "__main__":
    unittest.main()
