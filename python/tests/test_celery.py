"""Issue 15, acceptance 1 and 2: the same scenarios through a real
``celery worker`` with the cgpool pool and with Celery's prefork pool, in
one run, against a private redis-server; each ends in the state and
exception type a prefork user expects, and the table printed at the end
(tearDownModule) shows both pools side by side, differences included: the
detached grandchild that survives prefork's hard time limit, how long a
lost worker takes to be reported, the memory limit prefork does not have
(test_11, in the systemd VM: scripts/systemd-vm-test.sh's
TestCeleryMemoryLimit runs this module there, where the cgroup v2 memory
controller is; on a host without it the cgpool row is skipped with the
reason).

Needs Celery and redis-py for this interpreter (Debian: python3-celery,
python3-redis, for /usr/bin/python3) and redis-server; skips with the
reason otherwise. The pool's mapping of an OOM through Celery's own Request
is also tested on any host (test_celery_memory).
"""

import os
import shutil
import tempfile
import signal
import sys
import time
import unittest

import support
import celery_support as cs

REDIS = None
TABLE = {}        # pool -> {scenario: (state, exception, seconds, note)}
ORDER = []


def setUpModule():
    global REDIS
    REDIS = cs.setup_module()


def tearDownModule():
    if REDIS is not None:
        cs.teardown_module()
    if TABLE:
        print("\n" + format_table(), file=sys.stderr)
        out = os.environ.get("CGPOOL_CELERY_TABLE")
        if out:
            with open(out, "a") as f:
                f.write(format_table() + "\n")


def format_table():
    pools = [p for p in ("cgpool", "prefork") if p in TABLE]
    lines = ["| scenario | " + " | ".join("%s pool" % p for p in pools) + " |",
             "|---|" + "---|" * len(pools)]
    for name in ORDER:
        cells = []
        for p in pools:
            row = TABLE[p].get(name)
            if row is None:
                cells.append("-")
                continue
            state, exc, secs, note = row
            cell = "%s%s after %.2f s" % (state, (" `%s`" % exc) if exc else "", secs)
            if note:
                cell += "; " + note
            cells.append(cell)
        lines.append("| %s | %s |" % (name, " | ".join(cells)))
    return "\n".join(lines)


def record(pool, name, state, exc, secs, note=""):
    if name not in ORDER:
        ORDER.append(name)
    TABLE.setdefault(pool, {})[name] = (state, exc, secs, note)


def outcome(res, timeout=60):
    """(state, exception type name or "", the exception or result)."""
    try:
        value = res.get(timeout=timeout, propagate=True, disable_sync_subtasks=False)
        return res.state, "", value
    except Exception as e:
        if type(e).__name__ == "TimeoutError" and res.state in ("PENDING", "STARTED"):
            raise AssertionError("task %s still %s after %gs" % (res.id, res.state, timeout))
        return res.state, type(e).__name__, e


class _Suite:
    """The scenarios; subclasses name the pool."""

    POOL = None

    @classmethod
    def setUpClass(cls):
        import celery_tasks
        cls.t = celery_tasks
        cls.dir = tempfile.mkdtemp(prefix="cgpool-celery-")
        cls.queue = "q-%s-%d" % (cls.POOL, os.getpid())
        cls.worker = cs.CeleryWorker(REDIS.url, cls.POOL, cls.dir, queues=cls.queue, node="suite-" + cls.POOL,
                                     env=cls.worker_env())
        try:
            cls.worker.wait_ready()
        except BaseException:
            cls.worker.stop()
            raise
        cls.leftovers = []

    @classmethod
    def worker_env(cls):
        return {}

    @classmethod
    def tearDownClass(cls):
        procs = cls.worker.descendants() + [cls.worker.proc.pid]
        cls.worker.stop()
        cs.kill_leftover(cls.leftovers)
        try:
            support.wait_until(lambda: [p for p in procs if cs.pid_alive(p)] == [], timeout=15,
                               what="every process of the %s worker gone" % cls.POOL)
        finally:
            shutil.rmtree(cls.dir, ignore_errors=True)

    def send(self, task, *args, **options):
        options.setdefault("queue", self.queue)
        return task.apply_async(args, **options)

    def path(self, name):
        return os.path.join(self.dir, name)

    def tag(self):
        return "%s-%s" % (self.POOL, self._testMethodName)

    # ----- the scenarios

    def test_01_success(self):
        t0 = time.monotonic()
        state, exc, value = outcome(self.send(self.t.add, 2, 3))
        record(self.POOL, "`add(2, 3)`", state, exc, time.monotonic() - t0)
        self.assertEqual(state, "SUCCESS", value)
        self.assertEqual(value["sum"], 5)
        self.assertNotEqual(value["pid"], self.worker.proc.pid)

    def test_02_raising(self):
        t0 = time.monotonic()
        state, exc, value = outcome(self.send(self.t.boom))
        record(self.POOL, "`boom()` raises ValueError", state, exc, time.monotonic() - t0)
        self.assertEqual((state, exc), ("FAILURE", "ValueError"))
        self.assertEqual(str(value), "boom from task")

    def test_03_hard_time_limit_with_detached_grandchild(self):
        tag = self.tag()
        t0 = time.monotonic()
        res = self.send(self.t.daemon_then_sleep, tag, 60, time_limit=2)
        state, exc, value = outcome(res)
        secs = time.monotonic() - t0
        daemon = int(cs.wait_file(self.path("daemon-" + tag)))
        task_pid = int(cs.wait_file(self.path("pid-" + tag)))
        if self.expect_tree_killed:
            gone = support.wait_until(lambda: not cs.pid_alive(daemon) and not cs.pid_alive(task_pid),
                                      timeout=5, what="the task and its detached grandchild gone")
            note = "detached grandchild gone" if gone else ""
        else:
            alive = cs.pid_alive(daemon)
            self.leftovers.append(daemon)
            note = "detached grandchild **still alive**" if alive else "detached grandchild gone"
        record(self.POOL, "`time_limit=2`, task started a `setsid` daemon", state, exc, secs, note)
        self.assertEqual((state, exc), ("FAILURE", "TimeLimitExceeded"), value)
        self.assertGreaterEqual(secs, 1.9)
        self.assertLess(secs, 10)
        if not self.expect_tree_killed:
            # What prefork does (and cgpool does not): the grandchild lives on.
            self.assertTrue(cs.pid_alive(daemon), "prefork's kill took the grandchild too?")

    def test_04_soft_time_limit_caught(self):
        t0 = time.monotonic()
        state, exc, value = outcome(self.send(self.t.soft, 20, soft_time_limit=1, time_limit=8))
        secs = time.monotonic() - t0
        record(self.POOL, "`soft_time_limit=1`, caught in the task", state, exc, secs)
        self.assertEqual(state, "SUCCESS", value)
        self.assertEqual(value, "caught SoftTimeLimitExceeded")
        self.assertGreaterEqual(secs, 0.9)
        self.assertLess(secs, 6)

    def test_05_os_exit(self):
        t0 = time.monotonic()
        state, exc, value = outcome(self.send(self.t.die, 3))
        secs = time.monotonic() - t0
        record(self.POOL, "`os._exit(3)`", state, exc, secs)
        self.assertEqual((state, exc), ("FAILURE", "WorkerLostError"), value)
        self.assertIn("exitcode 3", str(value))

    def test_06_killed_from_outside(self):
        times = []
        for i in range(self.kills):
            tag = "%s-%d" % (self.tag(), i)
            res = self.send(self.t.sleepy, 60, tag)
            pid = int(cs.wait_file(self.path("pid-" + tag)))
            t0 = time.monotonic()
            os.kill(pid, signal.SIGKILL)
            state, exc, value = outcome(res)
            times.append(time.monotonic() - t0)
            self.assertEqual((state, exc), ("FAILURE", "WorkerLostError"), value)
            self.assertIn("signal 9", str(value))
        times.sort()
        median = times[len(times) // 2]
        record(self.POOL, "SIGKILL from outside (time from the kill to FAILURE)", state, exc, median,
               "median of %d" % len(times) if len(times) > 1 else "")
        if self.POOL == "cgpool":
            self.assertLess(median, 0.1, "a lost worker must be reported within 100 ms: %s" % times)

    def test_07_revoke_terminate_running(self):
        tag = self.tag()
        res = self.send(self.t.sleepy, 60, tag)
        pid = int(cs.wait_file(self.path("pid-" + tag)))
        t0 = time.monotonic()
        self.t.app.control.revoke(res.id, terminate=True, destination=[self.worker.hostname])
        state, exc, value = outcome(res)
        secs = time.monotonic() - t0
        support.wait_until(lambda: not cs.pid_alive(pid), timeout=10, what="the revoked task's process gone")
        record(self.POOL, "`revoke(terminate=True)` while running", state, exc, secs)
        self.assertEqual((state, exc), ("REVOKED", "TaskRevokedError"), value)

    def test_08_acks_late_redelivered_after_worker_died(self):
        tag = self.tag()
        t0 = time.monotonic()
        state, exc, value = outcome(self.send(self.t.die_once, tag), timeout=90)
        secs = time.monotonic() - t0
        died = support.read_text(self.path("died-" + tag))
        record(self.POOL, "`acks_late` + `reject_on_worker_lost`, worker SIGKILLed once", state, exc, secs,
               "requeued, then ran again" if died else "")
        self.assertTrue(died, "the first run did not die")
        self.assertEqual(state, "SUCCESS", value)
        self.assertEqual(value, "second run")

    def test_09_next_task_after_the_deaths(self):
        state, exc, value = outcome(self.send(self.t.whoami))
        self.assertEqual(state, "SUCCESS", value)

    def test_10_memory_error_raised_by_task(self):
        # Request.on_failure re-raises MemoryError in the worker on purpose;
        # the pool must survive it (billiard logs it), as prefork does.
        t0 = time.monotonic()
        state, exc, value = outcome(self.send(self.t.memerr))
        record(self.POOL, "task raises `MemoryError`", state, exc, time.monotonic() - t0)
        self.assertEqual((state, exc), ("FAILURE", "MemoryError"), value)
        state, exc, value = outcome(self.send(self.t.whoami))
        self.assertEqual(state, "SUCCESS", value)

    def test_11_memory_limit(self):
        # hog_limited carries cgpool_memory_max="64M" and touches 256 MiB.
        # cgpool: the kernel OOM-kills it in its slot, and Celery stores
        # cgpool's MemoryLimitExceeded (reason oom). prefork has no memory
        # limit: the task takes its 256 MiB and succeeds.
        if self.POOL == "cgpool":
            why = memory_controller_reason()
            if why:
                support.skip_or_fail(why)
        # Celery rebuilds a stored exception from its module only if the
        # client has imported it (as a client that catches it has).
        from cgpool import celery as cc
        t0 = time.monotonic()
        state, exc, value = outcome(self.send(self.t.hog_limited, 256))
        secs = time.monotonic() - t0
        if self.POOL == "cgpool":
            record(self.POOL, "over its memory limit (`cgpool_memory_max=\"64M\"`, touches 256 MiB)", state, exc,
                   secs, "reason `%s`" % getattr(value, "reason", "?"))
            self.assertEqual((state, exc), ("FAILURE", "MemoryLimitExceeded"), value)
            self.assertIs(type(value), cc.MemoryLimitExceeded)
            self.assertEqual(value.reason, "oom")
            self.assertEqual(value.memory_max, 64 << 20, str(value))
        else:
            record(self.POOL, "over its memory limit (`cgpool_memory_max=\"64M\"`, touches 256 MiB)", state, exc,
                   secs, "no limit: took its 256 MiB")
            self.assertEqual(state, "SUCCESS", value)
        state, exc, value = outcome(self.send(self.t.whoami))
        self.assertEqual(state, "SUCCESS", value)


def memory_controller_reason():
    """Why a cgroup memory limit cannot be had here (None if it can): the
    cgroup v2 hierarchy must offer the memory controller (the build hosts'
    hybrid layout binds it to cgroup v1; the systemd VM has it)."""
    mount = support.cgroup2_mount()
    if mount is None:
        return "no cgroup v2 hierarchy: the memory limit needs one (the systemd VM runs this test)"
    try:
        with open(os.path.join(mount, "cgroup.controllers")) as f:
            controllers = f.read().split()
    except OSError as e:
        return "cannot read %s/cgroup.controllers: %s" % (mount, e)
    if "memory" not in controllers:
        return ("the cgroup v2 hierarchy at %s has no memory controller (%s): the memory limit needs it; "
                "scripts/systemd-vm-test.sh runs this test under systemd, where it is there" % (mount, controllers or "none"))
    return None


class CgpoolPoolTest(_Suite, unittest.TestCase):
    POOL = "cgpool"
    expect_tree_killed = True
    kills = 5


class PreforkPoolTest(_Suite, unittest.TestCase):
    POOL = "prefork"
    expect_tree_killed = False
    kills = 1


if __name__ == "__main__":
    unittest.main()
