"""Issue 15: the Celery side of a task OOM-killed in its memory-limited
cgroup, on any host.

The kernel's OOM kill needs the cgroup v2 memory controller, which only the
VM has (there internal/pyvm runs the Executor's own OOM tests: cgpool's
OutOfMemoryError with reason "oom"). Here the pool is given that outcome
(a future whose exception is the OutOfMemoryError the Executor raises) for
a request built by Celery's own Request from a real message, exactly as
``Request.execute_using_pool`` hands it to the pool, and Celery's
``Request.on_failure`` stores it in a real redis backend. What a user sees:
FAILURE with ``cgpool.celery.MemoryLimitExceeded`` (reason "oom", the
limit from the message header, the peak), importable on the client, not
WorkerLostError (so ``reject_on_worker_lost`` does not requeue the task
into the same death) and not MemoryError (which Celery's Request re-raises
in the worker). The same flow with a lost worker is requeued, to show the
difference is the exception's type.

(No "oom" in this module's test names: the VM runs ``-k oom`` without
Celery.)
"""

import unittest
import uuid

import support
import celery_support as cs

REDIS = None


def setUpModule():
    global REDIS
    REDIS = cs.setup_module(need_cgpool=False)


def tearDownModule():
    if REDIS is not None:
        cs.teardown_module()


class _Future:
    """What the Executor's future looks like once the task ended."""

    def __init__(self, exc, pid):
        self._exc = exc
        self.pid = pid

    def cancelled(self):
        return False

    def exception(self):
        return self._exc

    def result(self):
        raise self._exc


class MemoryLimitMappingTest(unittest.TestCase):

    def setUp(self):
        import celery_tasks
        from cgpool import celery as cc
        self.t = celery_tasks
        self.cc = cc
        self.app = celery_tasks.app

    def run_outcome(self, exc, headers):
        """Build Celery's Request for die_once (acks_late,
        reject_on_worker_lost) from a message with *headers*, give the pool
        the job as execute_using_pool would, end it with *exc*; returns
        (request, acked, rejected, AsyncResult, the job)."""
        from celery.contrib.testing.mocks import TaskMessage
        from celery.worker.request import Request
        task = self.t.die_once
        tid = str(uuid.uuid4())
        msg = TaskMessage(task.name, id=tid, args=("never-run",), **headers)
        acked, rejected = [], []
        req = Request(msg, app=self.app, task=task, on_ack=lambda *a, **k: acked.append(a),
                      on_reject=lambda *a, **k: rejected.append(a))
        pool = self.cc.TaskPool(limit=1, app=self.app)
        args = (req._type, req.id, req._request_dict, req._body, req._content_type, req._content_encoding)
        job = self.cc._Job(None, args, None, req.on_success, req.on_failure, req.on_accepted, req.on_timeout,
                           None, None, pool._memory_for(args), req.id)
        pool._running = 1
        pool._on_start(job, 4242, "/cgpool-test/leaf", 0.0)
        pool._on_done(job, _Future(exc, 4242))
        return req, acked, rejected, self.app.AsyncResult(tid), job, pool

    def test_memory_limit_exceeded_is_a_failure_of_its_own_type(self):
        from cgpool import errors
        exc = errors.OutOfMemoryError("task's cgroup reached memory.max", reason="oom", signal=9, exit_code=-9,
                                      pid=4242, leaf="/cgpool-test/leaf", memory_peak=104857600)
        req, acked, rejected, res, job, pool = self.run_outcome(exc, {"cgpool_memory_max": "100M"})
        self.assertEqual(job.memory_max, "100M")
        value = res.get(timeout=10, propagate=False)
        self.assertEqual(res.state, "FAILURE")
        self.assertIs(type(value), self.cc.MemoryLimitExceeded)  # rebuilt by the client from its module
        self.assertNotIsInstance(value, MemoryError)
        from billiard.exceptions import WorkerLostError
        self.assertNotIsInstance(value, WorkerLostError)
        self.assertIn("reason=oom", str(value))
        self.assertIn("memory_max=104857600", str(value))
        self.assertIn("memory_peak=104857600", str(value))
        self.assertEqual(self.cc.MemoryLimitExceeded.reason, "oom")
        # acks_late + reject_on_worker_lost: acknowledged, not requeued.
        self.assertEqual(len(acked), 1)
        self.assertEqual(rejected, [])
        self.assertEqual(pool.counts["oom"], 1)
        self.assertEqual(pool.counts["lost"], 0)

    def test_a_lost_worker_is_requeued_by_reject_on_worker_lost(self):
        from cgpool import errors
        exc = errors.ProcessError("killed by signal 9", reason="killed", signal=9, exit_code=-9, pid=4242)
        req, acked, rejected, res, job, pool = self.run_outcome(exc, {})
        self.assertEqual(acked, [])
        self.assertEqual(len(rejected), 1)  # requeued: it runs again
        self.assertEqual(res.state, "PENDING")
        self.assertEqual(pool.counts["lost"], 1)


if __name__ == "__main__":
    unittest.main()
