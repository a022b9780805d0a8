"""Issue 15: each Celery option the cgpool pool maps, through a real
``celery worker`` against a private redis-server, beside Celery's prefork
pool where the two should agree: max tasks and memory per child,
--autoscale, pool_grow/pool_shrink/pool_restart, inspect stats, the
worker_process_init/_shutdown signals, the requests dropped at a warm stop,
the thread Celery's callbacks run on, and what is left after the Celery
worker is SIGKILLed.

Needs Celery, redis-py and redis-server (see test_celery.py); skips with
the reason otherwise.
"""

import os
import shutil
import signal
import tempfile
import unittest

import support
import celery_support as cs

REDIS = None


def setUpModule():
    global REDIS
    REDIS = cs.setup_module()


def tearDownModule():
    if REDIS is not None:
        cs.teardown_module()


def get(res, timeout=60):
    return res.get(timeout=timeout, disable_sync_subtasks=False)


def overlap(spans):
    """The most spans [pid, start, end] running at one moment."""
    edges = sorted([(s, 1) for _, s, _ in spans] + [(e, -1) for _, _, e in spans])
    best = cur = 0
    for _, d in edges:
        cur += d
        best = max(best, cur)
    return best


class _Case(unittest.TestCase):

    def setUp(self):
        import celery_tasks
        self.t = celery_tasks
        self.dir = tempfile.mkdtemp(prefix="cgpool-celery-opt-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.n = 0

    def worker(self, pool, *args, concurrency=2, env=None):
        """Start a worker of *pool* on a queue of its own; stopped (and
        checked to leave no process behind) at the end of the test."""
        self.n += 1
        node = "%s-%s-%d" % (self._testMethodName[5:], pool, self.n)
        queue = "q-" + node
        w = cs.CeleryWorker(REDIS.url, pool, self.dir, queues=queue, node=node, args=list(args),
                            concurrency=concurrency, env=env)
        w.queue = queue
        self.addCleanup(self.stop, w)
        w.wait_ready()
        return w

    def stop(self, w):
        procs = w.descendants()
        w.stop()
        support.wait_until(lambda: [p for p in procs if cs.pid_alive(p)] == [], timeout=15,
                           what="every process of the %s worker gone" % w.pool)

    def send(self, w, task, *args, **options):
        return task.apply_async(args, queue=w.queue, **options)

    def stats(self, w):
        r = self.t.app.control.inspect(destination=[w.hostname], timeout=5).stats() or {}
        return r.get(w.hostname)

    def processes(self, w):
        s = self.stats(w)
        return s["pool"]["processes"] if s else None


class CeleryOptionsTest(_Case):

    def test_max_tasks_per_child(self):
        for pool in ("cgpool", "prefork"):
            with self.subTest(pool=pool):
                w = self.worker(pool, "--max-tasks-per-child", "2", concurrency=1)
                pids = [get(self.send(w, self.t.whoami)) for _ in range(6)]
                self.assertEqual(len(set(pids)), 3, pids)
                self.assertEqual(pids[0], pids[1], pids)
                self.assertEqual(pids[2], pids[3], pids)
                self.assertEqual(pids[4], pids[5], pids)
                self.assertNotIn(w.proc.pid, pids)
                self.assertIn(2, [s["pool"]["max-tasks-per-child"] for s in [self.stats(w)]])

    def test_max_memory_per_child(self):
        # 100,000 KiB: a worker that keeps 150 MiB is replaced after that
        # task (not during it), in both pools.
        for pool in ("cgpool", "prefork"):
            with self.subTest(pool=pool):
                w = self.worker(pool, "--max-memory-per-child", "100000", concurrency=1)
                a = get(self.send(w, self.t.whoami))
                b = get(self.send(w, self.t.leak, 150))
                rest = [get(self.send(w, self.t.whoami)) for _ in range(3)]
                self.assertEqual(a, b, "the task over the limit ran in the same worker")
                self.assertNotEqual(rest[0], b, "the worker over the limit was not replaced: %s" % ([a, b] + rest))
                self.assertEqual(len(set(rest)), 1, rest)

    def test_autoscale(self):
        # --autoscale 3,1: six 2-second tasks run three at a time; with
        # AUTOSCALE_KEEPALIVE=1 the pool goes back to one afterwards.
        for pool in ("cgpool", "prefork"):
            with self.subTest(pool=pool):
                w = self.worker(pool, "--autoscale", "3,1", env={"AUTOSCALE_KEEPALIVE": "1"})
                self.assertEqual(len(self.processes(w)), 1)
                rs = [self.send(w, self.t.span, 2) for _ in range(6)]
                spans = [get(r) for r in rs]
                self.assertEqual(overlap(spans), 3, spans)
                self.assertGreaterEqual(len({p for p, _, _ in spans}), 3)
                support.wait_until(lambda: self.stats(w)["autoscaler"]["current"] == 1, timeout=30,
                                   interval=0.5, what="%s pool scaled back to 1" % pool)
                support.wait_until(lambda: len(self.processes(w)) == 1, timeout=30, interval=0.5,
                                   what="%s pool back to one process" % pool)
                self.assertIsInstance(get(self.send(w, self.t.whoami)), int)

    def test_pool_grow_shrink_restart(self):
        for pool in ("cgpool", "prefork"):
            with self.subTest(pool=pool):
                w = self.worker(pool)
                ctl = self.t.app.control
                self.assertEqual(len(self.processes(w)), 2)  # up before "ready", as prefork's
                ctl.pool_grow(1, destination=[w.hostname], reply=True, timeout=5)
                support.wait_until(lambda: len(self.processes(w)) == 3, timeout=30, interval=0.2,
                                   what="%s pool grown to 3" % pool)
                self.assertEqual(self.stats(w)["pool"]["max-concurrency"] if pool == "cgpool" else 3, 3)
                rs = [self.send(w, self.t.span, 1) for _ in range(3)]
                self.assertEqual(overlap([get(r) for r in rs]), 3)
                # prefork shrinks only idle processes: wait until the worker
                # (its event loop, which also takes the pool's results) has
                # no active request left.
                support.wait_until(lambda: self.t.app.control.inspect(destination=[w.hostname], timeout=5)
                                   .active() == {w.hostname: []}, timeout=30, interval=0.1,
                                   what="%s worker idle" % pool)
                ctl.pool_shrink(2, destination=[w.hostname], reply=True, timeout=5)
                support.wait_until(lambda: len(self.processes(w)) == 1, timeout=30, interval=0.2,
                                   what="%s pool shrunk to 1" % pool)
                before = set(self.processes(w))
                ctl.pool_restart(destination=[w.hostname], reply=True, timeout=5)
                support.wait_until(lambda: set(self.processes(w) or []) - before, timeout=30, interval=0.2,
                                   what="%s pool restarted with new processes" % pool)
                pid = get(self.send(w, self.t.whoami))
                self.assertNotIn(pid, before)

    def test_inspect_stats(self):
        w = self.worker("cgpool", "--time-limit", "30", "--soft-time-limit", "20")
        get(self.send(w, self.t.add, 1, 2))
        s = self.stats(w)["pool"]
        self.assertEqual(s["implementation"], "cgpool.celery:TaskPool")
        self.assertEqual(s["max-concurrency"], 2)
        self.assertEqual(len(s["processes"]), 2)
        self.assertEqual(list(s["timeouts"]), [20, 30])
        self.assertEqual(s["max-tasks-per-child"], "N/A")
        cg = s["cgpool"]
        self.assertEqual(cg["supervisor"], "private")
        self.assertGreaterEqual(cg["tasks_received"], 2)  # the start-up probe and add
        for key in ("tasks_launched", "tasks_failed", "worker_processes_still_alive", "queued_in_pool",
                    "running", "timeouts", "oom_kills", "workers_lost"):
            self.assertIn(key, cg)

    def test_worker_process_signals_fire_in_the_cgpool_worker(self):
        w = self.worker("cgpool", concurrency=1)
        pid = get(self.send(w, self.t.whoami))
        self.assertEqual(support.read_text(os.path.join(self.dir, "init-%d" % pid)), "MainThread")
        self.stop(w)
        text = cs.wait_file(os.path.join(self.dir, "shutdown-%d" % pid), timeout=10)
        self.assertEqual(text, "%d 0" % pid)

    def test_warm_stop_drops_requests_not_started(self):
        # One running, two prefetched into the pool: the running one
        # finishes, the others are neither run nor acknowledged, and the
        # broker has them again (Celery logs "Restoring 2 unacknowledged
        # message(s)"), as with prefork.
        for pool in ("cgpool", "prefork"):
            with self.subTest(pool=pool):
                w = self.worker(pool, "--prefetch-multiplier", "4", concurrency=1)
                tag = "warm-" + pool
                first = self.send(w, self.t.sleepy, 2, tag)
                others = [self.send(w, self.t.add, i, i) for i in range(2)]
                cs.wait_file(os.path.join(self.dir, "pid-" + tag))
                w.wait_for(r"Task celery_tasks.add\[%s\] received" % others[1].id, timeout=10)
                w.proc.send_signal(signal.SIGTERM)
                self.assertEqual(w.proc.wait(30), 0, w.output()[-3000:])
                self.assertEqual(get(first), get(first))
                self.assertEqual(first.state, "SUCCESS")
                self.assertEqual([r.state for r in others], ["PENDING", "PENDING"])
                self.assertIn("Restoring 2 unacknowledged message(s)", w.output())
                self.assertEqual(REDIS.client.llen(w.queue), 2)
                REDIS.client.delete(w.queue)

    def test_callbacks_run_on_the_event_loop_thread(self):
        w = self.worker("cgpool")
        res = self.send(w, self.t.die, 3)
        with self.assertRaises(Exception):
            get(res)
        pid, thread, exc = cs.wait_file(os.path.join(self.dir, "failure-" + res.id)).split()
        self.assertEqual(int(pid), w.proc.pid)
        self.assertEqual(thread, "MainThread")
        self.assertEqual(exc, "WorkerLostError")

    def test_sigkill_of_the_celery_worker_leaves_nothing(self):
        w = self.worker("cgpool")
        pid, cg = get(self.send(w, self.t.mycgroup))
        rel = [line.split(":", 2)[2] for line in cg.splitlines() if line.startswith("0::")][0]
        top = rel.strip("/").split("/")[0]
        mount = support.cgroup2_mount() or "/sys/fs/cgroup"
        self.assertTrue(top.startswith("cgpool"), rel)
        tag = "killed-main"
        self.send(w, self.t.sleepy, 60, tag)
        running = int(cs.wait_file(os.path.join(self.dir, "pid-" + tag)))
        procs = w.descendants()
        self.assertIn(running, procs)
        w.kill()
        support.wait_until(lambda: [p for p in procs if cs.pid_alive(p)] == [], timeout=15,
                           what="the supervisor, its workers and the running task gone")
        support.wait_until(lambda: not os.path.exists(os.path.join(mount, top)), timeout=15,
                           what="the supervisor's cgroup %s removed" % top)


class CustomPoolOptionTest(_Case):

    def test_dash_P_custom(self):
        # Celery 5.3 and later: -P custom with CELERY_CUSTOM_WORKER_POOL.
        import celery
        if tuple(int(x) for x in celery.__version__.split(".")[:2]) < (5, 3):
            raise unittest.SkipTest("Celery %s has no -P custom (5.3 added it); worker_pool is used instead"
                                    % celery.__version__)
        w = self.worker("custom", "-P", "custom", env={"CELERY_CUSTOM_WORKER_POOL": "cgpool.celery:TaskPool"})
        self.assertEqual(self.stats(w)["pool"]["implementation"], "cgpool.celery:TaskPool")
        self.assertIsInstance(get(self.send(w, self.t.whoami)), int)


if __name__ == "__main__":
    unittest.main()
