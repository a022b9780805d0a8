"""Issue 15, acceptance 3: two ``celery worker`` processes (two nodes), each
with the cgpool pool and so each with a private cgpool supervisor and a
cgroup subtree of its own, consume one queue; SIGKILL of one node's
supervisor loses no acknowledged task.

What a user sees when a node's supervisor dies: the node's Celery worker
lives on and starts a new supervisor; a task that was running there fails
with WorkerLostError, and an ``acks_late`` + ``reject_on_worker_lost`` one
is requeued and runs again (on either node); the requests the node had
received but not started were never acknowledged and run later. So every
task ends SUCCESS or, acknowledged early and running at the kill, FAILURE
WorkerLostError: none stays PENDING.

Needs Celery, redis-py and redis-server (see test_celery.py); skips with
the reason otherwise.
"""

import datetime
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


def ppid(pid):
    with open("/proc/%d/stat" % pid, "rb") as f:
        return int(f.read().rsplit(b")", 1)[1].split()[1])


def supervisors(worker):
    """The cgpool supervisors among a Celery worker's descendants (a cgpool
    process whose parent is not one: the supervisor's own helpers are its
    children)."""
    binary = os.path.realpath(support.cgpool_binary())
    found = {}
    for pid in worker.descendants():
        try:
            if os.path.realpath("/proc/%d/exe" % pid) == binary:
                found[pid] = ppid(pid)
        except OSError:
            pass
    return sorted(pid for pid, parent in found.items() if parent not in found)


class TwoNodesTest(unittest.TestCase):

    def setUp(self):
        import celery_tasks
        self.t = celery_tasks
        self.dir = tempfile.mkdtemp(prefix="cgpool-celery-nodes-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.queue = "shared-%d" % os.getpid()
        self.nodes = {}
        for name in ("a", "b"):
            w = cs.CeleryWorker(REDIS.url, "cgpool", self.dir, node="node-" + name,
                                queues="%s,own-%s-%d" % (self.queue, name, os.getpid()))
            w.own = "own-%s-%d" % (name, os.getpid())
            self.nodes[name] = w
            self.addCleanup(self.stop, w)
        for w in self.nodes.values():
            w.wait_ready()

    def stop(self, w):
        procs = w.descendants()
        w.stop()
        support.wait_until(lambda: [p for p in procs if cs.pid_alive(p)] == [], timeout=20,
                           what="every process of %s gone" % w.hostname)

    def get(self, res, timeout=90):
        return res.get(timeout=timeout, disable_sync_subtasks=False)

    def test_each_node_has_its_own_cgpool_subtree(self):
        a, b = self.nodes["a"], self.nodes["b"]
        sa, sb = supervisors(a), supervisors(b)
        self.assertEqual(len(sa), 1, "node a's supervisors: %s" % sa)
        self.assertEqual(len(sb), 1, "node b's supervisors: %s" % sb)
        ca = self.get(self.t.slow_early.apply_async((0, ""), queue=a.own))["cgroup"]
        cb = self.get(self.t.slow_early.apply_async((0, ""), queue=b.own))["cgroup"]
        top = lambda cg: cg.strip("/").split("/")[0]  # noqa: E731
        self.assertTrue(top(ca).startswith("cgpool"), ca)
        self.assertTrue(top(cb).startswith("cgpool"), cb)
        self.assertNotEqual(top(ca), top(cb), "both nodes' tasks ran in one subtree: %s %s" % (ca, cb))

    def test_killing_one_supervisor_loses_no_acked_task(self):
        a, b = self.nodes["a"], self.nodes["b"]
        before = supervisors(a)
        self.assertEqual(len(before), 1, before)
        late = [self.t.slow_late.apply_async((0.5, "late-%d" % i), queue=self.queue) for i in range(16)]
        early = [self.t.slow_early.apply_async((0.5, "early-%d" % i), queue=self.queue) for i in range(16)]
        # Wait until node a runs two of them (both its workers busy), then
        # kill its supervisor: its workers and their tasks die with it.
        at_kill = {}  # tag -> pid, of the tasks node a runs when it is killed

        def a_busy():
            running = {}
            kids = set(a.descendants())
            for name in os.listdir(self.dir):
                if name.startswith("run-") and not name.endswith(".tmp"):
                    pid = int(support.read_text(os.path.join(self.dir, name)) or 0)
                    if pid in kids and cs.pid_alive(pid):
                        running[name[4:]] = pid
            at_kill.clear()
            at_kill.update(running)
            return len(running) >= 2
        support.wait_until(a_busy, timeout=60, interval=0.01, what="node a running two tasks")
        os.kill(before[0], signal.SIGKILL)
        killed_at = datetime.datetime.utcnow()

        # Every outcome, in one wait (a get() each would wait for each in
        # turn), then each task's state.
        from celery.result import ResultSet
        ResultSet(late + early).join_native(timeout=120, propagate=False)
        states = {}
        for r in late:
            try:
                self.get(r)
            except Exception as e:
                self.fail("acks_late task %s ended %s %r" % (r.id, r.state, e))
            states[r.id] = r.state
        self.assertEqual(set(states.values()), {"SUCCESS"})
        lost = []
        for r in early:
            try:
                self.get(r)
            except Exception as e:
                self.assertEqual(type(e).__name__, "WorkerLostError", "%s ended %s %r" % (r.id, r.state, e))
                lost.append(r.id)
            self.assertIn(r.state, ("SUCCESS", "FAILURE"))
        # Only tasks running on node a at the kill can be lost: two at most;
        # an acks_late one among them ran again, in another process.
        self.assertLessEqual(len(lost), 2, lost)
        for r in late:
            tag = r.result["tag"]
            if tag in at_kill:
                self.assertNotEqual(r.result["pid"], at_kill[tag], "%s was running at the kill" % tag)
        done = max(r.date_done for r in late + early if r.date_done is not None)
        elapsed = (done.replace(tzinfo=None) - killed_at).total_seconds()

        # Node a carries on with a new supervisor, and both nodes still take
        # from the shared queue.
        support.wait_until(lambda: supervisors(a) and supervisors(a) != before, timeout=30,
                           what="node a's new supervisor")
        self.assertFalse(cs.pid_alive(before[0]))
        self.assertFalse([p for p in at_kill.values() if cs.pid_alive(p)], "a task of the killed supervisor lives on")
        self.assertIsInstance(self.get(self.t.whoami.apply_async(queue=a.own)), int)
        self.assertIsInstance(self.get(self.t.whoami.apply_async(queue=b.own)), int)
        print("\ntwo nodes: 32 tasks, node a's supervisor SIGKILLed while it ran %s; acks_late 16/16 SUCCESS, "
              "early-acked %d/16 SUCCESS and %d WorkerLostError; the last done %.2f s after the kill"
              % (sorted(at_kill), 16 - len(lost), len(lost), elapsed))


if __name__ == "__main__":
    unittest.main()
