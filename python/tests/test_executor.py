"""cgpool.Executor and cgpool.deadpool.Deadpool against a real supervisor."""

import concurrent.futures
import os
import pickle
import signal
import tempfile
import threading
import time
import unittest

import support
import workerfns
import cgpool
import cgpool.deadpool as deadpool


def setUpModule():
    support.require_cgpool()


class Shared(unittest.TestCase):
    """Tests that can share one two-worker executor."""

    @classmethod
    def setUpClass(cls):
        cls.ex = cgpool.Executor(max_workers=2)

    @classmethod
    def tearDownClass(cls):
        cls.ex.shutdown()

    def test_submit_and_map(self):
        self.assertEqual(self.ex.submit(workerfns.add, 1, b=2).result(timeout=30), 3)
        self.assertEqual(list(self.ex.map(workerfns.add, range(20), range(20))), [2 * i for i in range(20)])
        self.assertEqual(list(self.ex.map(workerfns.add, [], [])), [])

    def test_map_timeout(self):
        it = self.ex.map(workerfns.sleep_return, [2.0, 2.0], [1, 2], timeout=0.3)
        with self.assertRaises(concurrent.futures.TimeoutError):
            list(it)

    def test_task_exception_with_remote_traceback(self):
        fut = self.ex.submit(workerfns.boom, "bad input")
        with self.assertRaises(ValueError) as cm:
            fut.result(timeout=30)
        self.assertEqual(str(cm.exception), "bad input")
        self.assertIn("in boom", str(cm.exception.__cause__))

    def test_base_exception_and_unpicklable_exception(self):
        with self.assertRaises(KeyboardInterrupt):
            self.ex.submit(workerfns.raise_base, KeyboardInterrupt).result(timeout=30)
        with self.assertRaises(cgpool.TaskError) as cm:
            self.ex.submit(workerfns.raise_unpicklable).result(timeout=30)
        self.assertIn("original text", str(cm.exception))
        self.assertEqual(self.ex.submit(workerfns.add, 1, 1).result(timeout=30), 2)

    def test_unpicklable_result_fails_promptly(self):
        t0 = time.monotonic()
        with self.assertRaises(pickle.PicklingError) as cm:
            self.ex.submit(workerfns.unpicklable_result).result(timeout=30)
        self.assertLess(time.monotonic() - t0, 5)
        self.assertIn("could not be pickled", str(cm.exception))

    def test_unpicklable_argument(self):
        fut = self.ex.submit(workerfns.ident, threading.Lock())
        with self.assertRaises(pickle.PicklingError):
            fut.result(timeout=5)

    def test_task_env(self):
        fut = self.ex.submit(workerfns.getenv, "ONLY_THIS_TASK", cgpool_env={"ONLY_THIS_TASK": "yes"})
        self.assertEqual(fut.result(timeout=30), "yes")
        self.assertIsNone(self.ex.submit(workerfns.getenv, "ONLY_THIS_TASK").result(timeout=30))

    def test_running_pid_and_callbacks(self):
        seen = []
        fut = self.ex.submit(workerfns.record_pid_and_sleep, 0.5)
        fut.add_pid_callback(lambda f: seen.append(f.pid))
        support.wait_until(fut.running, timeout=30, what="future running")
        self.assertIsNotNone(fut.pid)
        self.assertFalse(fut.cancel())  # standard semantics: a running task is not cancelled
        self.assertEqual(fut.result(timeout=30), fut.pid)
        self.assertEqual(seen, [fut.pid])
        self.assertFalse(fut.running())

    def test_negative_priority(self):
        with self.assertRaises(ValueError):
            self.ex.submit(workerfns.add, 1, 1, cgpool_priority=-1)

    def test_timeout_kills_and_pool_goes_on(self):
        fut = self.ex.submit(workerfns.sleep_return, 30, 0, cgpool_timeout=0.3)
        with self.assertRaises(cgpool.TimeoutError):
            fut.result(timeout=30)
        self.assertEqual(self.ex.submit(workerfns.add, 2, 2).result(timeout=30), 4)

    def test_statistics_keys(self):
        stats = self.ex.get_statistics()
        for key in ("tasks_received", "tasks_launched", "tasks_failed", "worker_processes_created",
                    "max_workers_busy_concurrently", "worker_processes_still_alive",
                    "worker_processes_idle", "worker_processes_busy"):
            self.assertIsInstance(stats[key], int, key)

    def test_request_from_callback(self):
        # A callback runs on the reader thread; a request made there is
        # served by that thread meanwhile (no deadlock, no refusal).
        got = []
        done = threading.Event()

        def cb(f):
            try:
                got.append(self.ex.get_statistics()["tasks_received"])
                g = self.ex.submit(workerfns.sleep_return, 5, 0)
                got.append(g.cancel())
            except BaseException as e:
                got.append(e)
            done.set()
        self.ex.submit(workerfns.add, 1, 1).add_done_callback(cb)
        self.assertTrue(done.wait(30))
        self.assertIsInstance(got[0], int, got)
        self.assertIn(got[1], (True, False), got)

    def test_submit_from_callback(self):
        results = []
        done = threading.Event()

        def cb(f):
            self.ex.submit(workerfns.add, f.result(), 1).add_done_callback(
                lambda g: (results.append(g.result()), done.set()))
        self.ex.submit(workerfns.add, 1, 1).add_done_callback(cb)
        self.assertTrue(done.wait(30))
        self.assertEqual(results, [3])


class Failures(unittest.TestCase):
    def test_external_kill_is_process_error(self):
        with deadpool.Deadpool(max_workers=2) as exe:
            for sig, label in ((signal.SIGKILL, "exitcode -9 (Killed)"), (signal.SIGTERM, "exitcode -15 (Terminated)")):
                fut = exe.submit(workerfns.sleep_return, 30, 0)
                support.wait_until(lambda: fut.pid, timeout=30, what="pid")
                os.kill(fut.pid, sig)
                with self.assertRaises(deadpool.ProcessError) as cm:
                    fut.result(timeout=30)
                e = cm.exception
                self.assertIn(label, str(e))
                self.assertEqual((e.reason, e.signal, e.exit_code, e.pid), ("killed", sig, -sig, fut.pid))
            self.assertEqual(exe.submit(workerfns.add, 1, 2).result(timeout=30), 3)

    def test_exit_code(self):
        with cgpool.Executor(max_workers=1) as ex:
            with self.assertRaises(cgpool.ProcessError) as cm:
                ex.submit(workerfns.exit_now, 3).result(timeout=30)
            e = cm.exception
            self.assertEqual((e.reason, e.exit_code, e.signal), ("crashed", 3, 0))
            self.assertIn("exitcode 3 (exit status 3)", str(e))
            self.assertNotIn("Unknown", str(e))
            self.assertEqual(ex.submit(workerfns.add, 1, 2).result(timeout=30), 3)

    def test_hard_cancel_running(self):
        with deadpool.Deadpool(max_workers=1) as exe:
            fut = exe.submit(workerfns.sleep_return, 30, 0)
            support.wait_until(fut.running, timeout=30, what="running")
            t0 = time.monotonic()
            self.assertTrue(fut.cancel_and_kill_if_running())
            with self.assertRaises(deadpool.CancelledError):
                fut.result(timeout=10)
            self.assertLess(time.monotonic() - t0, 5)
            self.assertTrue(fut.cancelled())
            self.assertEqual(exe.submit(workerfns.add, 1, 2).result(timeout=30), 3)


class Scheduling(unittest.TestCase):
    def test_priorities(self):
        order = []
        lock = threading.Lock()
        with deadpool.Deadpool(max_workers=1) as exe:
            blocker = exe.submit(workerfns.sleep_return, 0.5, "b")
            support.wait_until(blocker.running, timeout=30, what="blocker running")
            futs = []
            for i in range(5):
                futs.append(exe.submit(workerfns.ident, ".", deadpool_priority=10))
                futs.append(exe.submit(workerfns.ident, "!", deadpool_priority=0))
            for f in futs:
                f.add_done_callback(lambda f: (lock.acquire(), order.append(f.result()), lock.release()))
            concurrent.futures.wait(futs, timeout=30)
        self.assertEqual("".join(order), "!!!!!.....")

    def test_cancel_queued(self):
        with deadpool.Deadpool(max_workers=1) as exe:
            fut1 = exe.submit(workerfns.sleep_return, 0.5, 1)
            fut2 = exe.submit(workerfns.sleep_return, 0.5, 2)
            self.assertTrue(fut2.cancel())
            self.assertEqual(fut1.result(timeout=30), 1)
        self.assertTrue(fut2.cancelled())
        self.assertIsNone(fut2.pid)

    def test_queue_timeout(self):
        with cgpool.Executor(max_workers=1) as ex:
            ex.submit(workerfns.sleep_return, 1.0, 0)
            fut = ex.submit(workerfns.add, 1, 1, cgpool_queue_timeout=0.2)
            with self.assertRaises(cgpool.QueueTimeoutError):
                fut.result(timeout=30)
            self.assertIsNone(fut.pid)

    def test_backlog_blocks_submit(self):
        with cgpool.Executor(max_workers=1, max_backlog=2) as ex:
            futs = [ex.submit(workerfns.sleep_return, 0.3, i) for i in range(3)]  # 1 running + 2 queued
            support.wait_until(futs[0].running, timeout=30, what="first running")
            t0 = time.monotonic()
            futs.append(ex.submit(workerfns.sleep_return, 0.3, 3))
            blocked = time.monotonic() - t0
            self.assertGreater(blocked, 0.1, "submit did not wait for room in the backlog")
            self.assertEqual([f.result(timeout=30) for f in futs], [0, 1, 2, 3])

    def test_max_tasks_per_child(self):
        with cgpool.Executor(max_workers=1, max_tasks_per_child=1) as ex:
            pids = [ex.submit(workerfns.getpid).result(timeout=30) for _ in range(3)]
        self.assertEqual(len(set(pids)), 3)

    def test_default_timeout(self):
        with cgpool.Executor(max_workers=1, default_timeout=0.3) as ex:
            with self.assertRaises(cgpool.TimeoutError):
                ex.submit(workerfns.sleep_return, 30, 0).result(timeout=30)


class ShutdownMatrix(unittest.TestCase):
    """Deadpool's test_shutdown_manual: two running, one queued."""

    def run_case(self, wait, cancel_futures):
        exe = deadpool.Deadpool(max_workers=2)
        futs = [exe.submit(workerfns.sleep_return, 1.0, i) for i in range(3)]
        support.wait_until(lambda: futs[0].running() and futs[1].running(), timeout=30, what="two running")
        t0 = time.monotonic()
        exe.shutdown(wait=wait, cancel_futures=cancel_futures)
        took = time.monotonic() - t0
        if not wait:
            self.assertLess(took, 0.5, "shutdown(wait=False) blocked")
            if cancel_futures:
                for f in futs:
                    with self.assertRaises(deadpool.CancelledError):
                        f.result(timeout=10)
            else:
                self.assertEqual([futs[0].result(timeout=10), futs[1].result(timeout=10)], [0, 1])
                self.assertTrue(futs[2].cancelled())
        else:
            self.assertTrue(futs[0].done() and futs[1].done())
            self.assertEqual([futs[0].result(), futs[1].result()], [0, 1])
            if cancel_futures:
                self.assertTrue(futs[2].cancelled())
            else:
                self.assertEqual(futs[2].result(), 2)
        with self.assertRaises(deadpool.PoolClosed):
            exe.submit(workerfns.add, 1, 1)
        exe.shutdown()  # idempotent, and waits for the wind-down
        self.assertTrue(exe._finished.is_set())

    def test_wait_true_cancel_false(self):
        self.run_case(True, False)

    def test_wait_true_cancel_true(self):
        self.run_case(True, True)

    def test_wait_false_cancel_true(self):
        self.run_case(False, True)

    def test_wait_false_cancel_false(self):
        self.run_case(False, False)

    def test_context_manager_options(self):
        with deadpool.Deadpool(max_workers=1, shutdown_wait=True, shutdown_cancel_futures=True) as exe:
            f1 = exe.submit(workerfns.sleep_return, 0.5, 1)
            f2 = exe.submit(workerfns.sleep_return, 0.5, 2)
            support.wait_until(f1.running, timeout=30, what="running")
        self.assertEqual(f1.result(), 1)
        self.assertTrue(f2.cancelled())


class Lifecycle(unittest.TestCase):
    def test_finalizer_runs_on_shutdown(self):
        d = support.tmpdir(self)
        path = os.path.join(d, "final")
        with deadpool.Deadpool(max_workers=1, finalizer=workerfns.final, finalargs=(path, "bye")) as exe:
            exe.submit(workerfns.add, 1, 1).result(timeout=30)
        self.assertEqual(support.read_text(path), "bye")

    def test_failing_initializer_does_not_break_pool(self):
        with deadpool.Deadpool(max_workers=1, initializer=workerfns.failing_init) as exe:
            self.assertEqual(exe.submit(workerfns.add, 1, 1).result(timeout=30), 2)

    def test_propagate_environ_and_clear_workers(self):
        env = {"PROP": "one"}
        with deadpool.Deadpool(max_workers=1, propagate_environ=env) as exe:
            self.assertEqual(exe.submit(workerfns.environ_item, "PROP").result(timeout=30), "one")
            env["PROP"] = "two"
            exe.clear_workers()
            self.assertEqual(exe.submit(workerfns.environ_item, "PROP").result(timeout=30), "two")

    def test_propagate_environ_reaches_new_workers(self):
        env = {"PROP": "one"}
        with deadpool.Deadpool(max_workers=1, max_tasks_per_child=1, propagate_environ=env) as exe:
            self.assertEqual(exe.submit(workerfns.environ_item, "PROP").result(timeout=30), "one")
            env["PROP"] = "two"
            self.assertEqual(exe.submit(workerfns.environ_item, "PROP").result(timeout=30), "two")

    def test_supervisor_death_fails_in_flight_and_goes_on(self):
        # Issue 9: an Executor whose private supervisor dies starts a new
        # one, fails only the tasks in flight (as lost, with the reason),
        # and goes on.
        ex = cgpool.Executor(max_workers=1)
        fut = None
        try:
            fut = ex.submit(workerfns.sleep_return, 30, 0)
            queued = ex.submit(workerfns.add, 1, 1)
            support.wait_until(fut.running, timeout=30, what="running")
            old = ex._server.proc.pid
            with self.assertLogs("cgpool", "WARNING") as logs:
                ex._server.proc.kill()
                with self.assertRaises(cgpool.TaskLost) as cm:
                    fut.result(timeout=30)
                self.assertIsInstance(cm.exception, cgpool.SupervisorError)
                self.assertTrue(cm.exception.started)
                self.assertIn("outcome is lost", str(cm.exception))
                self.assertIn("exited with status -9", str(cm.exception))
                with self.assertRaises(cgpool.TaskLost) as cm:
                    queued.result(timeout=30)
                self.assertFalse(cm.exception.started)
                # Later tasks run on a new supervisor.
                self.assertEqual(ex.submit(workerfns.add, 2, 3).result(timeout=60), 5)
                self.assertEqual(list(ex.map(workerfns.add, [1, 2], [3, 4])), [4, 6])
            self.assertNotEqual(ex._server.proc.pid, old)
            self.assertEqual(len(logs.output), 1, logs.output)
            self.assertIn("started a new one", logs.output[0])
            # The worker of the dead one noticed and exited at once.
            support.wait_until(lambda: not support.pid_alive(fut.pid), timeout=10, what="orphaned worker gone")
            self.assertEqual(ex.get_statistics()["tasks_received"], 3)  # the new one counts from 0
        finally:
            ex.shutdown()
            # A SIGKILLed supervisor cannot remove its cgroups: this test
            # caused them, so it removes them.
            leaf = support.leaf_dir(fut.leaf) if fut is not None else None
            if leaf:
                support.remove_cgroup_tree(os.path.dirname(os.path.dirname(os.path.dirname(leaf))))

    def test_supervisor_start_failure_is_clear(self):
        with self.assertRaises(cgpool.SupervisorError) as cm:
            cgpool.Executor(max_workers=1, cgpool_bin="/bin/false")
        self.assertIn("before it was ready", str(cm.exception))


class SharedServer(unittest.TestCase):
    """A second client on a running supervisor (socket=)."""

    def test_second_client(self):
        with cgpool.Executor(max_workers=2) as owner:
            with cgpool.Executor(socket=owner._server.socket) as client:
                self.assertEqual(client.pool_name, "default")
                self.assertEqual(client.submit(workerfns.add, 2, 3).result(timeout=30), 5)
                self.assertEqual(list(client.map(workerfns.add, [1, 2], [3, 4])), [4, 6])
                self.assertGreaterEqual(client.get_statistics()["tasks_received"], 3)
            # Closing the client leaves the server serving its owner.
            self.assertEqual(owner.submit(workerfns.add, 1, 1).result(timeout=30), 2)
        with self.assertRaises(ValueError):
            cgpool.Executor(socket="/nonexistent.sock", max_workers=3)

    def test_fifo_within_priority_on_shared_server(self):
        # Protocol 3.1 rule 5: held submissions enter the backlog in arrival
        # order; each client's tasks run in submission order.
        with cgpool.Executor(max_workers=1) as owner:
            with cgpool.Executor(socket=owner._server.socket) as client:
                blocker = client.submit(workerfns.sleep_return, 0.3, -1)
                futs = [client.submit(workerfns.ident, i) for i in range(20)]
                order = []
                for f in futs:
                    f.add_pid_callback(lambda f: order.append(futs.index(f)))
                blocker.result(timeout=30)
                concurrent.futures.wait(futs, timeout=30)
                self.assertEqual(order, list(range(20)))


if __name__ == "__main__":
    unittest.main()
