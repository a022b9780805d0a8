"""Issue 5's acceptance list, one test each, against a real ``cgpool serve``
(built from cmd/cgpool when CGPOOL_BIN is unset; skipped with a printed
reason when it cannot be built, and failed instead inside the VM)."""

import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import unittest
import uuid

import support
import workerfns
import cgpool
import cgpool.deadpool as deadpool


def setUpModule():
    support.require_cgpool()


def f():
    return 123


def ok_task(i):
    return i


def raising_task(i):
    raise ValueError("task %d fails" % i)


class A1SimplestExample(unittest.TestCase):
    def test_readme_simple_case(self):
        # Deadpool's README, unchanged but for the import.
        with deadpool.Deadpool() as exe:
            fut = exe.submit(f)
            result = fut.result()

        assert result == 123


class A2Statistics(unittest.TestCase):
    def test_statistics_example(self):
        with deadpool.Deadpool(min_workers=5, max_workers=10, idle_timeout=0.2) as exe:
            futs = [exe.submit(ok_task, i) for i in range(50)]
            futs += [exe.submit(raising_task, i) for i in range(50)]
            concurrent_wait(futs)
            self.assertEqual(sum(1 for x in futs if x.exception() is None), 50)
            stats = support.wait_until(
                lambda: (lambda s: s if s["worker_processes_still_alive"] == 5 else None)(exe.get_statistics()),
                timeout=15, what="scale down to min_workers")
        self.assertEqual(stats["tasks_received"], 100)
        self.assertEqual(stats["tasks_launched"], 100)
        self.assertEqual(stats["tasks_failed"], 50)
        self.assertLessEqual(stats["max_workers_busy_concurrently"], 10)
        self.assertGreaterEqual(stats["max_workers_busy_concurrently"], 1)
        self.assertEqual(stats["worker_processes_still_alive"], 5)
        self.assertEqual(stats["worker_processes_idle"], 5)
        self.assertEqual(stats["worker_processes_busy"], 0)
        for key in ("tasks_received", "tasks_launched", "tasks_failed", "worker_processes_created",
                    "max_workers_busy_concurrently", "worker_processes_still_alive",
                    "worker_processes_idle", "worker_processes_busy"):
            self.assertIn(key, stats)


def concurrent_wait(futs):
    import concurrent.futures
    concurrent.futures.wait(futs, timeout=60)


class A3GilTimeout(unittest.TestCase):
    def test_catastrophic_regex_times_out(self):
        with deadpool.Deadpool(max_workers=1) as exe:
            exe.submit(f).result()  # the worker is up
            t0 = time.monotonic()
            fut = exe.submit(workerfns.catastrophic_regex, deadpool_timeout=1.0)
            with self.assertRaises(deadpool.TimeoutError) as cm:
                fut.result(timeout=10)
            elapsed = time.monotonic() - t0
            self.assertLess(elapsed, 2.0, "timed out after %.2fs" % elapsed)
            self.assertIn("timed out", str(cm.exception))
            self.assertEqual(exe.submit(f).result(timeout=30), 123)


class A4OutOfMemory(unittest.TestCase):
    def test_oom_then_next_task_succeeds(self):
        try:
            exe = cgpool.Executor(max_workers=1, memory_max=64 << 20)
        except cgpool.SupervisorError as e:
            if "memory controller" in str(e) or "controller not available" in str(e):
                support.skip_or_fail("memory limits need the cgroup v2 memory controller (VM only): %s"
                                     % str(e).splitlines()[-1])
            raise
        with exe:
            fut = exe.submit(workerfns.allocate, 512 << 20)
            with self.assertRaises(cgpool.OutOfMemoryError) as cm:
                fut.result(timeout=60)
            e = cm.exception
            self.assertIsInstance(e, deadpool.ProcessError)
            self.assertEqual(e.reason, "oom")
            self.assertIn("out of memory", str(e))
            self.assertEqual(exe.submit(workerfns.add, 1, 2).result(timeout=60), 3)


class A5MainScriptAndLambda(unittest.TestCase):
    def test_function_in_main_script(self):
        d = support.tmpdir(self)
        script = os.path.join(d, "myscript.py")
        with open(script, "w") as fh:
            fh.write(textwrap.dedent("""
                import cgpool

                def square(x):
                    return x * x

                if __name__ == "__main__":
                    with cgpool.Executor(max_workers=2) as ex:
                        print(sorted(ex.map(square, range(5))))
                        fut = ex.submit(lambda: 1)
                        try:
                            fut.result()
                        except Exception as e:
                            print("lambda:", type(e).__name__)
                        print(ex.submit(square, 12).result())
            """))
        r = support.run_python(script, timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.splitlines(), ["[0, 1, 4, 9, 16]", "lambda: PicklingError", "144"], r.stderr)

    def test_lambda_fails_and_pool_keeps_going(self):
        import pickle
        with cgpool.Executor(max_workers=1) as ex:
            fut = ex.submit(lambda: 1)
            with self.assertRaises(pickle.PicklingError):
                fut.result(timeout=10)
            self.assertEqual(ex.submit(workerfns.add, 2, 2).result(timeout=30), 4)


class A6PropagateEnvironWithInitializer(unittest.TestCase):
    def test_initializer_sees_environ_and_args(self):
        with deadpool.Deadpool(max_workers=1, propagate_environ={"PROP": "p1", "PROP2": "p2"},
                               initializer=workerfns.init, initargs=("argument",)) as exe:
            self.assertEqual(exe.submit(workerfns.init_seen).result(timeout=30), ("argument", "p1", "p2"))
            self.assertEqual(exe.submit(workerfns.environ_item, "PROP").result(timeout=30), "p1")


class A7Nested(unittest.TestCase):
    def test_nested_executor_and_subprocess_work(self):
        with cgpool.Executor(max_workers=1) as ex:
            result = ex.submit(workerfns.nested_executor, 41).result(timeout=120)
        self.assertEqual(result, (42, "sub", True))

    def test_killing_outer_worker_leaves_nothing(self):
        d = support.tmpdir(self)
        path = os.path.join(d, "pids")
        with cgpool.Executor(max_workers=1) as ex:
            fut = ex.submit(workerfns.nested_blocking, path)
            text = support.wait_until(lambda: support.read_text(path), timeout=60,
                                      what="nested task reporting its pids")
            outer, nested, sleeper = (int(x) for x in text.split())
            self.assertEqual(outer, fut.pid)
            self.assertTrue(nested and support.pid_alive(nested), "nested worker %d not alive" % nested)
            self.assertTrue(support.pid_alive(sleeper))
            os.kill(outer, signal.SIGKILL)
            with self.assertRaises(cgpool.ProcessError) as cm:
                fut.result(timeout=30)
            self.assertIn("exitcode -9 (Killed)", str(cm.exception))
            support.wait_until(lambda: not any(support.pid_alive(p) for p in (outer, nested, sleeper)),
                               timeout=10, what="no process of the killed task left")
            self.assertEqual(ex.submit(workerfns.add, 1, 1).result(timeout=30), 2)


KILL_SCRIPT = """
import sys, time, cgpool, workerfns
ex = cgpool.Executor(max_workers=2, propagate_environ={"CGPOOL_TEST_MARK": sys.argv[1]})
futs = [ex.submit(workerfns.sleep_return, 300, i) for i in range(4)]
while sum(1 for f in futs if f.pid) < 2:
    time.sleep(0.01)
started = [f for f in futs if f.pid]
print(started[0].pid, started[1].pid, started[0].leaf, flush=True)
time.sleep(300)
"""


class A8NothingLeftBehind(unittest.TestCase):
    def test_after_shutdown(self):
        mark = "CGPOOL_TEST_MARK=%s" % uuid.uuid4().hex
        ex = cgpool.Executor(max_workers=2, propagate_environ={"CGPOOL_TEST_MARK": mark.split("=", 1)[1]})
        futs = [ex.submit(workerfns.record_pid_and_sleep, 0.2) for _ in range(4)]
        pids = {x.result(timeout=30) for x in futs}
        leaf = support.leaf_dir(futs[0].leaf)
        self.assertTrue(leaf and os.path.isdir(leaf), leaf)
        self.assertTrue(support.pids_with_env(mark))
        ex.shutdown()
        support.wait_until(lambda: not support.pids_with_env(mark), timeout=10, what="no worker left")
        support.wait_until(lambda: not any(support.pid_alive(p) for p in pids), timeout=10, what="workers gone")
        self.assertFalse(os.path.exists(leaf), "leaf %s still exists after shutdown" % leaf)
        root = os.path.dirname(os.path.dirname(os.path.dirname(leaf)))
        self.assertFalse(os.path.exists(root), "supervisor cgroup %s still exists" % root)
        self.assertEqual(ex._server.proc.poll(), 0, "cgpool serve still running or failed after shutdown")

    def test_after_sigkill_of_python(self):
        mark = uuid.uuid4().hex
        p = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, mark], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=dict(os.environ))
        try:
            line = p.stdout.readline()
            self.assertTrue(line, "child printed nothing; stderr: %s" % p.stderr.read() if not line else "")
            a, b, leaf = line.split()
            leaf = support.leaf_dir(leaf)
            self.assertTrue(os.path.isdir(leaf))
            # The two busy workers, and the spare worker if it has started.
            self.assertIn(len(support.pids_with_env("CGPOOL_TEST_MARK=" + mark)), (2, 3))
        finally:
            p.kill()
            p.wait()
            p.stdout.close()
            p.stderr.close()
        support.wait_until(lambda: not support.pids_with_env("CGPOOL_TEST_MARK=" + mark), timeout=10,
                           what="no worker left after SIGKILL of the client")
        support.wait_until(lambda: not (support.pid_alive(int(a)) or support.pid_alive(int(b))), timeout=10,
                           what="workers %s and %s gone" % (a, b))
        support.wait_until(lambda: not os.path.exists(leaf), timeout=10, what="leaf %s removed" % leaf)
        root = os.path.dirname(os.path.dirname(os.path.dirname(leaf)))
        support.wait_until(lambda: not os.path.exists(root), timeout=10, what="root %s removed" % root)


if __name__ == "__main__":
    unittest.main()


class NoTempDirLeft(unittest.TestCase):
    """The private supervisor's directory (socket and config) goes with it,
    also when the Python process that owned it was SIGKILLed."""

    def test_private_dir_removed_after_sigkill(self):
        support.require_cgpool()
        p = subprocess.Popen([sys.executable, "-c",
                              "import cgpool, sys, time\n"
                              "ex = cgpool.Executor(max_workers=1)\n"
                              "print(ex._server.dir, flush=True)\n"
                              "time.sleep(600)\n"],
                             stdout=subprocess.PIPE, text=True, env=dict(os.environ))
        try:
            d = p.stdout.readline().strip()
            self.assertTrue(d and os.path.isdir(d), d)
        finally:
            p.kill()
            p.wait()
            p.stdout.close()
        support.wait_until(lambda: not os.path.exists(d), timeout=15, what="private dir %s removed" % d)
