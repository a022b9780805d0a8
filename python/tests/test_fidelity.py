"""Issue 10: a true drop-in for Deadpool users. One test class per
fidelity item of the issue, against a real ``cgpool serve``."""

import concurrent.futures
import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import time
import unittest
import warnings

import support
import workerfns
import cgpool
import cgpool.deadpool as deadpool

DEADPOOL_KEYS = ["tasks_received", "tasks_launched", "tasks_failed", "worker_processes_created",
                 "max_workers_busy_concurrently", "worker_processes_still_alive",
                 "worker_processes_busy", "worker_processes_idle"]


def setUpModule():
    support.require_cgpool()


def t(duration=10.0):
    time.sleep(duration)
    return duration


def script(testcase, text, name="script.py"):
    d = support.tmpdir(testcase)
    path = os.path.join(d, name)
    with open(path, "w") as f:
        f.write(textwrap.dedent(text))
    return path


class Statistics(unittest.TestCase):
    def test_exactly_deadpools_eight_keys_in_its_order(self):
        with deadpool.Deadpool(max_workers=1) as exe:
            exe.submit(workerfns.add, 1, 1).result(timeout=30)
            stats = exe.get_statistics()
            self.assertEqual(list(stats), DEADPOOL_KEYS)
            self.assertTrue(all(type(v) is int for v in stats.values()), stats)
            extra = exe.cgpool_statistics()
            for k in ("failures_by_reason", "workers_retired", "leftover_processes_killed",
                      "tasks_queued", "tasks_running", "tasks_rejected", "workers_trimmed"):
                self.assertIn(k, extra)
            self.assertEqual({k: extra[k] for k in DEADPOOL_KEYS}, stats)

    def test_last_statistics_after_shutdown(self):
        exe = deadpool.Deadpool(max_workers=2)
        exe.submit(workerfns.add, 1, 1).result(timeout=30)
        with self.assertRaises(ValueError):
            exe.submit(workerfns.boom, "x").result(timeout=30)
        exe.shutdown()
        stats = exe.get_statistics()
        self.assertEqual(list(stats), DEADPOOL_KEYS)
        self.assertEqual((stats["tasks_received"], stats["tasks_launched"], stats["tasks_failed"]), (2, 2, 1))
        # The workers are gone with the pool, as Deadpool reports them then.
        self.assertEqual((stats["worker_processes_still_alive"], stats["worker_processes_idle"],
                          stats["worker_processes_busy"]), (0, 0, 0))
        self.assertGreaterEqual(stats["worker_processes_created"], 1)
        self.assertEqual(exe.cgpool_statistics()["failures_by_reason"], {"task_error": 1})


class ScaleDown(unittest.TestCase):
    """Deadpool retires the workers above min_workers as soon as nothing is
    queued (its done_with_process), so its README's figures hold half a
    second after the last result."""

    # Deadpool's README statistics example itself (100 tasks, the exact
    # figures) runs unchanged as a script in
    # test_readme_examples.ReadmeExamples.test_statistics.

    def test_short_burst(self):
        with deadpool.Deadpool(min_workers=5, max_workers=10) as exe:
            support.wait_until(lambda: exe.get_statistics()["worker_processes_idle"] == 10, timeout=60,
                               what="the ten first workers up")
            futs = [exe.submit(t, 0.2) for _ in range(6)]
            self.assertEqual([f.result(timeout=60) for f in futs], [0.2] * 6)
            time.sleep(0.5)
            stats = exe.get_statistics()
        self.assertEqual((stats["worker_processes_still_alive"], stats["worker_processes_idle"],
                          stats["worker_processes_busy"]), (5, 5, 0), stats)
        self.assertEqual(stats["max_workers_busy_concurrently"], 6, stats)
        # The ten first workers, as Deadpool counts them.
        self.assertEqual(stats["worker_processes_created"], 10, stats)

    # Deadpool starts max_workers workers at once (its __init__ calls
    # add_worker_to_pool pool_size times, each counted) and retires the ones
    # above min_workers only as they finish a task with nothing queued
    # (done_with_process); a second burst of 6 then adds one: 11 (measured
    # with github.com/cjrh/deadpool 3cb6cf3). cgpool.deadpool asks the
    # supervisor for start_workers = max_workers, whose first workers have
    # no idle deadline before their first task.
    def test_short_burst_workers_created_as_deadpool(self):
        with deadpool.Deadpool(min_workers=5, max_workers=10) as exe:
            support.wait_until(lambda: exe.get_statistics()["worker_processes_idle"] == 10, timeout=60,
                               what="the first workers up")
            created = []
            for _ in range(2):
                futs = [exe.submit(t, 0.2) for _ in range(6)]
                self.assertEqual([f.result(timeout=60) for f in futs], [0.2] * 6)
                time.sleep(0.5)
                created.append(exe.get_statistics()["worker_processes_created"])
        self.assertEqual(created, [10, 11])


class ExceptionsThatCannotTravel(unittest.TestCase):
    """Deadpool's test_bad_exception, with its classes: the same types and
    messages, promptly, and the pool goes on."""

    CASES = [
        (workerfns.MyBadException, workerfns.MyBadException, "(1, 2, 3)"),
        (workerfns.MyBadExceptionSetState, ValueError, "failed to unpickle"),
        (workerfns.MyBadExceptionReduce, deadpool.ProcessError, "pickling it failed"),
        (workerfns.MyBadExceptionReduceRaise, deadpool.ProcessError, "pickling it failed"),
    ]

    def test_bad_exceptions(self):
        with deadpool.Deadpool(max_workers=1) as exe:
            for raises, exc_type, match in self.CASES:
                with self.subTest(raises.__name__):
                    t0 = time.monotonic()
                    fut = exe.submit(workerfns.raise_custom_exception, raises)
                    with self.assertRaisesRegex(exc_type, match.replace("(", r"\(").replace(")", r"\)")):
                        fut.result(timeout=30)
                    self.assertLess(time.monotonic() - t0, 5)
                    self.assertEqual(exe.submit(workerfns.add, 1, 2).result(timeout=30), 3)
            stats = exe.get_statistics()
        self.assertEqual(stats["tasks_failed"], 4)
        self.assertEqual(stats["worker_processes_created"], 1, "a bad exception must not cost the worker")

    def test_pickling_failure_text(self):
        with deadpool.Deadpool(max_workers=1) as exe:
            with self.assertRaises(deadpool.ProcessError) as cm:
                exe.submit(workerfns.raise_custom_exception, workerfns.MyBadExceptionReduceRaise).result(timeout=30)
        text = str(cm.exception)
        self.assertTrue(text.startswith("An exception occurred but pickling it failed. The original exception "
                                        "is presented here as a string with traceback."), text)
        self.assertIn("MyBadExceptionReduceRaise: (1, 2, 3)", text)
        self.assertIn("in raise_custom_exception", text)
        self.assertIn("The reason for the pickling failure is the following:\nValueError: I failed to pickle", text)

    def test_result_that_cannot_be_unpickled(self):
        with cgpool.Executor(max_workers=1) as ex:
            with self.assertRaisesRegex(ValueError, "refuses to be unpickled"):
                ex.submit(workerfns.bad_result).result(timeout=30)
            self.assertEqual(ex.submit(workerfns.add, 1, 2).result(timeout=30), 3)


def _nothing():
    pass


def _one():
    return 1


class ForkSafety(unittest.TestCase):
    """A forked child (fork Process, fork ProcessPoolExecutor) beside an open
    or a closed cgpool pool finishes promptly, never touches the parent's
    connection or supervisor, and the parent's pool keeps serving."""

    ctx = multiprocessing.get_context("fork")

    def setUp(self):
        # Forking a process with threads (the Executor's) is what these
        # tests are about: 3.12+'s DeprecationWarning says so, every time.
        w = warnings.catch_warnings()
        w.__enter__()
        self.addCleanup(w.__exit__, None, None, None)
        warnings.filterwarnings("ignore", "This process .* is multi-threaded, use of fork", DeprecationWarning)

    def fork_process(self):
        t0 = time.monotonic()
        p = self.ctx.Process(target=_nothing)
        p.start()
        p.join(20)
        took = time.monotonic() - t0
        self.assertEqual(p.exitcode, 0)
        self.assertLess(took, 5, "a fork Process took %.1fs" % took)

    def fork_pool(self):
        t0 = time.monotonic()
        ppe = concurrent.futures.ProcessPoolExecutor(1, mp_context=self.ctx)
        self.assertEqual(ppe.submit(_one).result(timeout=20), 1)
        t1 = time.monotonic()
        ppe.shutdown(wait=True)
        self.assertLess(time.monotonic() - t1, 5, "a fork ProcessPoolExecutor's shutdown(wait=True) was slow")
        self.assertLess(time.monotonic() - t0, 10)

    def test_beside_open_executor(self):
        with cgpool.Executor(max_workers=1) as ex:
            self.assertEqual(ex.submit(workerfns.add, 1, 1).result(timeout=30), 2)
            self.fork_process()
            self.fork_pool()
            self.assertEqual(ex.submit(workerfns.add, 2, 2).result(timeout=30), 4)
            self.assertEqual(ex.get_statistics()["tasks_received"], 2)

    def test_beside_open_deadpool(self):
        with deadpool.Deadpool(max_workers=1) as exe:
            self.assertEqual(exe.submit(workerfns.add, 1, 1).result(timeout=30), 2)
            self.fork_pool()
            self.fork_process()
            self.assertEqual(exe.submit(workerfns.add, 2, 2).result(timeout=30), 4)

    def test_beside_closed_pools(self):
        for make in (cgpool.Executor, deadpool.Deadpool):
            with self.subTest(make.__name__):
                ex = make(max_workers=1)
                self.assertEqual(ex.submit(workerfns.add, 1, 1).result(timeout=30), 2)
                ex.shutdown()
                self.fork_process()
                self.fork_pool()

    def test_child_cannot_use_and_does_not_keep_the_supervisor(self):
        ex = cgpool.Executor(max_workers=1)
        self.assertEqual(ex.submit(workerfns.add, 1, 1).result(timeout=30), 2)
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: report what it sees, then outlive the parent's pool
            try:
                os.close(r)
                try:
                    ex.submit(workerfns.add, 1, 1)
                    what = "submitted"
                except RuntimeError as e:
                    what = "RuntimeError: %s" % e
                ex.shutdown()  # a no-op here
                os.write(w, what.encode() + b"\n")
                os.close(w)
                time.sleep(30)
            finally:
                os._exit(0)
        try:
            os.close(w)
            with os.fdopen(r) as f:
                what = f.readline().strip()
            self.assertTrue(what.startswith("RuntimeError: this cgpool Executor was created in process %d"
                                            % os.getpid()), what)
            self.assertEqual(ex.submit(workerfns.add, 2, 2).result(timeout=30), 4)
            proc = ex._server.proc
            t0 = time.monotonic()
            ex.shutdown()
            # The child holds no copy of the supervisor's stdin: it ended.
            self.assertIsNotNone(proc.poll())
            self.assertLess(time.monotonic() - t0, 10)
        finally:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)

    def test_default_process_pool_after_a_cgpool_pool(self):
        # In a fresh interpreter, as a program would: a cgpool pool runs and
        # shuts down, then the standard library's pool (default start
        # method) runs a task and shuts down.
        path = script(self, """
            import concurrent.futures, time
            import cgpool.deadpool as deadpool

            def one():
                return 1

            if __name__ == "__main__":
                with deadpool.Deadpool(max_workers=2) as exe:
                    assert exe.submit(one).result() == 1
                t0 = time.monotonic()
                with concurrent.futures.ProcessPoolExecutor() as ppe:
                    print(ppe.submit(one).result())
                print("%.1f" % (time.monotonic() - t0))
        """)
        r = support.run_python(path, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        out = r.stdout.split()
        self.assertEqual(out[0], "1")
        self.assertLess(float(out[1]), 5.0)


class MainGuard(unittest.TestCase):
    def test_script_without_guard_runs(self):
        # As a new user would write it (issue 10): the worker stops its
        # import of the script at the refused pool and keeps `work`.
        path = script(self, """
            import cgpool

            def work(x):
                return x * x

            with cgpool.Executor(max_workers=2) as ex:
                print(ex.submit(work, 7).result())
        """)
        r = support.run_python(path, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.splitlines(), ["49"])
        self.assertNotIn("Traceback", r.stderr)
        self.assertNotIn("initializer failed", r.stderr)

    def test_missing_guard_is_one_clear_error(self):
        # The function comes after the pool: the worker cannot have it, and
        # says why, once.
        path = script(self, """
            import cgpool

            with cgpool.Executor(max_workers=2) as ex:
                def work(x):
                    return x * x
                print(ex.submit(work, 7).result())
        """)
        r = support.run_python(path, timeout=60)
        self.assertNotEqual(r.returncode, 0)
        last = r.stderr.strip().splitlines()
        self.assertIn("cgpool.errors.MainGuardError: An attempt has been made to start a cgpool pool while a "
                      "worker was", r.stderr)
        self.assertIn('if __name__ == "__main__":', r.stderr)
        self.assertNotIn("Can't get attribute", r.stderr)
        self.assertNotIn("initializer failed", r.stderr)
        # The caller's traceback and its cause (where in the script the
        # worker stopped): nothing else, no worker's own traceback.
        self.assertEqual(r.stderr.count("Traceback (most recent call last)"), 2, r.stderr)
        self.assertTrue(last, r.stderr)

    def test_nested_pool_during_main_import_is_refused(self):
        # Whatever the script does at its top level, a worker importing it
        # never starts a pool: the supervisor's workers are the only
        # cgpool.worker processes.
        d = support.tmpdir(self)
        marker = os.path.join(d, "nested")
        path = script(self, """
            import os, sys, cgpool

            def pid():
                return os.getpid()

            if os.environ.get("CGPOOL_POOL"):   # only in a worker
                try:
                    cgpool.Executor(max_workers=1)
                    open(%r, "w").write("started")
                except RuntimeError as e:
                    open(%r, "w").write(type(e).__name__)

            if __name__ == "__main__":
                with cgpool.Executor(max_workers=1) as ex:
                    print(ex.submit(pid).result() != os.getpid())
        """ % (marker, marker))
        r = support.run_python(path, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.split(), ["True"])
        self.assertEqual(support.read_text(marker), "MainGuardError")

    def test_worker_prepared_like_spawn(self):
        # sys.argv[1] and a relative file read at the top level, outside
        # the guard (which spawn runs in the child too): spawn runs it, and
        # so does cgpool.
        d = support.tmpdir(self)
        with open(os.path.join(d, "data.txt"), "w") as f:
            f.write("hello")
        path = script(self, """
            import sys, os, concurrent.futures, multiprocessing
            import cgpool

            N = int(sys.argv[1])
            DATA = open("data.txt").read()

            def work(i):
                return (i * N, DATA, sys.argv[1:], os.getcwd(), __name__)

            if __name__ == "__main__":
                with concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pe:
                    print(pe.submit(work, 2).result())
                with cgpool.Executor(max_workers=1) as ex:
                    print(ex.submit(work, 2).result())
        """)
        r = subprocess.run([sys.executable, path, "21", "extra"], cwd=d, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        want = str((42, "hello", ["21", "extra"], os.path.realpath(d), "__mp_main__"))
        self.assertEqual([line.replace(d, os.path.realpath(d)) for line in r.stdout.splitlines()], [want, want],
                         r.stderr)

    def test_module_main(self):
        # `python -m package.module`: the worker imports it by name, as
        # __mp_main__ (as spawn's _fixup_main_from_name does).
        d = support.tmpdir(self)
        os.mkdir(os.path.join(d, "pkg"))
        open(os.path.join(d, "pkg", "__init__.py"), "w").close()
        with open(os.path.join(d, "pkg", "prog.py"), "w") as f:
            f.write(textwrap.dedent("""
                import sys, cgpool
                FLAG = sys.argv[1]

                def work():
                    return FLAG + ":" + __name__

                if __name__ == "__main__":
                    with cgpool.Executor(max_workers=1) as ex:
                        print(ex.submit(work).result())
            """))
        r = subprocess.run([sys.executable, "-m", "pkg.prog", "flag"], cwd=d, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.split(), ["flag:__mp_main__"])


class CancelFromTheSupervisorsView(unittest.TestCase):
    def test_cancel_races_start(self):
        # One idle worker: the task starts at once, and cancel() races it.
        # Whatever cancel() answers must be true: True means the task never
        # ran (and never will), False that it ran and its result comes.
        d = support.tmpdir(self)
        seen = {True: 0, False: 0}
        with cgpool.Executor(max_workers=1) as ex:
            ex.submit(workerfns.add, 0, 0).result(timeout=30)
            for i in range(60):
                path = os.path.join(d, "ran-%d" % i)
                fut = ex.submit(workerfns.touch, path)
                if i % 3:
                    time.sleep(0.0002 * (i % 7))
                ok = fut.cancel()
                seen[ok] += 1
                if ok:
                    self.assertTrue(fut.cancelled())
                    # Drain: a later task has run, so this one would have too.
                    ex.submit(workerfns.add, 0, 0).result(timeout=30)
                    self.assertFalse(os.path.exists(path), "cancel() said True, but task %d ran" % i)
                else:
                    self.assertEqual(fut.result(timeout=30), path)
                    self.assertTrue(os.path.exists(path))
            stats = ex.cgpool_statistics()
        self.assertEqual(stats["tasks_cancelled"], seen[True], (stats, seen))
        self.assertGreater(seen[False], 0)

    def test_cancel_queued_behind_a_running_task(self):
        with cgpool.Executor(max_workers=1) as ex:
            running = ex.submit(workerfns.sleep_return, 0.5, 1)
            support.wait_until(running.running, timeout=30, what="running")
            queued = ex.submit(workerfns.add, 1, 1)
            self.assertFalse(running.cancel())
            self.assertTrue(queued.cancel())
            self.assertTrue(queued.cancel())  # again: still True
            self.assertEqual(running.result(timeout=30), 1)
            self.assertTrue(queued.cancelled())
            self.assertEqual(list(concurrent.futures.as_completed([queued], timeout=5)), [queued])


class OptionsCheckedAtSubmit(unittest.TestCase):
    def test_bad_options(self):
        with deadpool.Deadpool(max_workers=1) as exe:
            cases = [
                (dict(deadpool_timeout="5"), TypeError, "deadpool_timeout must be a number of seconds"),
                (dict(deadpool_timeout=-1), ValueError, "deadpool_timeout must be >= 0"),
                (dict(deadpool_timeout=float("nan")), ValueError, "finite"),
                (dict(deadpool_priority="1"), TypeError, "deadpool_priority must be an int"),
                (dict(deadpool_priority=-1), ValueError, "Parameter deadpool_priority must be >= 0, but was -1"),
                (dict(deadpool_priority=1.5), TypeError, "deadpool_priority must be an int"),
                (dict(cgpool_queue_timeout=[1]), TypeError, "cgpool_queue_timeout"),
                (dict(cgpool_memory_max="1G"), TypeError, "cgpool_memory_max"),
                (dict(cgpool_env={"A": 1}), TypeError, "cgpool_env"),
                (dict(cgpool_env={"A=B": "1"}), ValueError, "cgpool_env"),
                (dict(cgpool_timout=5), TypeError, "unknown submit option cgpool_timout"),
                (dict(deadpool_timeout=10 ** 30), ValueError, "too large"),
                # The wire's ranges: the supervisor would refuse these as invalid.
                (dict(deadpool_timeout=(1 << 40) / 1000 + 1), ValueError, "too large"),
                (dict(deadpool_priority=1 << 31), ValueError, "deadpool_priority 2147483648 is too large"),
            ]
            for kw, exc, text in cases:
                with self.subTest(kw=kw):
                    with self.assertRaises(exc) as cm:
                        exe.submit(workerfns.add, 1, 2, **kw)
                    self.assertIn(text, str(cm.exception))
            self.assertEqual(exe.submit(workerfns.add, 1, 2, deadpool_timeout=5, deadpool_priority=3)
                             .result(timeout=30), 3)
            self.assertEqual(exe.get_statistics()["tasks_received"], 1)
        with cgpool.Executor(max_workers=1) as ex:
            with self.assertRaisesRegex(TypeError, "cgpool_timeout must be a number"):
                ex.submit(workerfns.add, 1, 2, cgpool_timeout="5")
            # The largest values the wire takes are taken.
            self.assertEqual(ex.submit(workerfns.add, 1, 2, cgpool_timeout=(1 << 40) / 1000,
                                       cgpool_priority=(1 << 31) - 1).result(timeout=30), 3)

    def test_task_timeout_above_the_pools_default(self):
        # A pool default is a default, not a ceiling (as in Deadpool, where a
        # task's deadpool_timeout is its own): the private supervisor's
        # max_timeout is the wire's longest.
        with cgpool.Executor(max_workers=1, default_timeout=5) as ex:
            self.assertEqual(ex.submit(workerfns.add, 1, 2, cgpool_timeout=60).result(timeout=30), 3)
            with self.assertRaises(cgpool.TimeoutError):
                ex.submit(workerfns.sleep_return, 30, 1, cgpool_timeout=0.5).result(timeout=30)


class MessagesSayThingsOnce(unittest.TestCase):
    def test_exit_code(self):
        with deadpool.Deadpool(max_workers=1) as exe:
            fut = exe.submit(workerfns.exit_now, 3)
            with self.assertRaises(deadpool.ProcessError) as cm:
                fut.result(timeout=30)
        pid = cm.exception.pid
        self.assertEqual(str(cm.exception), "Subprocess %d completed unexpectedly with exitcode 3 (exit status 3): "
                                            "the worker exited without answering" % pid)
        self.assertIn("exited with code 3", cm.exception.message)  # the supervisor's own words, kept


class Interrupt(unittest.TestCase):
    """Ctrl-C inside ``with deadpool.Deadpool() as ex:``, with a real
    SIGINT: the first cancels what is queued and waits for what runs, a
    second kills what runs, and the interpreter exits promptly."""

    SCRIPT = """
        import sys, time
        import cgpool.deadpool as deadpool

        if __name__ == "__main__":
            futs = []
            try:
                with deadpool.Deadpool(max_workers=2) as ex:
                    futs = [ex.submit(time.sleep, 20) for _ in range(4)]
                    while sum(1 for f in futs if f.pid) < 2:
                        time.sleep(0.01)
                    print("running", *[f.pid for f in futs if f.pid], flush=True)
                    for f in futs:
                        f.result()
            except KeyboardInterrupt:
                print("states", *["cancelled" if f.cancelled() else "done" if f.done() else "open" for f in futs],
                      flush=True)
                raise
    """

    def test_two_sigints(self):
        path = script(self, self.SCRIPT)
        # Started with & from a script, this test process ignores SIGINT,
        # and the script would inherit that and never see a Ctrl-C. A
        # handled signal is reset to the default by exec: handle it here
        # for the moment of the start.
        ignored = signal.getsignal(signal.SIGINT) == signal.SIG_IGN
        if ignored:
            signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            p = subprocess.Popen([sys.executable, path], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        finally:
            if ignored:
                signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            line = p.stdout.readline().split()
            self.assertEqual(line[0], "running", p.stderr.read() if not line else line)
            pids = [int(x) for x in line[1:]]
            os.kill(p.pid, signal.SIGINT)
            # The first: queued ones cancelled, the running ones go on.
            err = p.stderr.readline()
            self.assertIn("interrupted: queued tasks cancelled; waiting for 2 running task(s)", err)
            self.assertTrue(all(support.pid_alive(x) for x in pids))
            t0 = time.monotonic()
            os.kill(p.pid, signal.SIGINT)
            out, err = p.communicate(timeout=15)
            took = time.monotonic() - t0
        finally:
            if p.poll() is None:
                p.kill()
                p.communicate()
        self.assertLess(took, 6, "the interpreter took %.1fs to exit after the second Ctrl-C" % took)
        self.assertIn("states cancelled cancelled cancelled cancelled", out, err)
        self.assertIn("KeyboardInterrupt", err)
        support.wait_until(lambda: not any(support.pid_alive(x) for x in pids), timeout=10,
                           what="the killed tasks' workers gone")


class Billiard(unittest.TestCase):
    """Celery's pool library inside a task (issue 10): cgpool neither
    reaps nor signals a task's grandchildren while the task runs, so a
    nested billiard pool (forked workers, their pipes and semaphores) works
    every time. (The hang reported with `with pool:` is billiard's own: see
    workerfns.nested_billiard.)"""

    def test_nested_billiard_pool_200_times(self):
        try:
            import billiard  # noqa: F401
        except ImportError:
            support.skip_or_fail("billiard is not installed (Debian: python3-billiard)")
        n = int(os.environ.get("CGPOOL_TEST_BILLIARD_RUNS", "200"))
        with cgpool.Executor(max_workers=2) as ex:
            futs = [ex.submit(workerfns.nested_billiard, 10, cgpool_timeout=60) for _ in range(n)]
            hung = [i for i, f in enumerate(futs) if isinstance(f.exception(timeout=600), cgpool.TimeoutError)]
            self.assertEqual(hung, [], "nested billiard pools hung")
            self.assertEqual({f.result() for f in futs}, {55})


if __name__ == "__main__":
    unittest.main()
