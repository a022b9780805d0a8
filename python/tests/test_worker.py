"""The Python worker (python -m cgpool.worker) driven directly over a
socketpair on fd 3, playing the supervisor: no Go binary needed."""

import os
import pickle
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import unittest

import support
import workerfns
from cgpool import errors, payload, protocol

LAUNCH = ("import os, sys; fd = int(sys.argv[1]); os.dup2(fd, 3); os.close(fd); "
          "os.execv(sys.executable, [sys.executable, '-m', 'cgpool.worker'])")


class Worker:
    """One worker process and our end of its protocol socket."""

    def __init__(self, env=None):
        ours, theirs = socket.socketpair()
        e = dict(os.environ)
        e.update(env or {})
        self.proc = subprocess.Popen([sys.executable, "-c", LAUNCH, str(theirs.fileno())],
                                     pass_fds=(theirs.fileno(),), env=e,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        theirs.close()
        self.sock = ours
        self.sock.settimeout(20)
        self.rfile = ours.makefile("rb")
        self.next_id = 1

    def read(self):
        return protocol.read_frame(self.rfile)

    def send(self, header, data=b""):
        self.sock.sendall(protocol.encode_frame(header, data))

    def task(self, fn, *args, env=None, **kwargs):
        tid = self.next_id
        self.next_id += 1
        h = {"type": "task", "id": tid}
        if env:
            h["env"] = env
        self.send(h, payload.encode_call(fn, args, kwargs))
        reply, data = self.read()
        assert reply["id"] == tid, reply
        return reply, data

    def close(self):
        try:
            self.rfile.close()
            self.sock.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        out, err = self.proc.communicate()
        return out.decode(errors="replace"), err.decode(errors="replace")


def env_blob(obj):
    return payload.encode_env_blob(obj)


class WorkerProtocol(unittest.TestCase):
    def start(self, env=None):
        w = Worker(env)
        self.addCleanup(w.close)
        hello, data = w.read()
        self.assertEqual(hello["type"], "hello")
        self.assertEqual(hello["version"], 1)
        self.assertEqual(hello["pid"], w.proc.pid)
        self.assertEqual(data, b"")
        return w, hello

    def test_result(self):
        w, hello = self.start()
        self.assertNotIn("init_error", hello)
        reply, data = w.task(workerfns.add, 2, b=3)
        self.assertEqual(reply, {"type": "result", "id": 1})
        self.assertEqual(pickle.loads(data), 5)

    def test_task_env_is_set_then_restored(self):
        w, _ = self.start({"KEEP": "pool"})
        reply, data = w.task(workerfns.getenv, "TASKVAR", env={"TASKVAR": "1"})
        self.assertEqual(pickle.loads(data), "1")
        _, data = w.task(workerfns.getenv, "TASKVAR")
        self.assertIsNone(pickle.loads(data))
        _, data = w.task(workerfns.getenv, "KEEP", env={"KEEP": "task"})
        self.assertEqual(pickle.loads(data), "task")
        _, data = w.task(workerfns.getenv, "KEEP")
        self.assertEqual(pickle.loads(data), "pool")

    def test_task_error_carries_exception_and_traceback(self):
        w, _ = self.start()
        reply, data = w.task(workerfns.boom, "bad input")
        self.assertEqual(reply["type"], "task_error")
        self.assertEqual(reply["message"], "ValueError: bad input")
        self.assertIn("in boom", reply["traceback"])
        self.assertIn("Traceback (most recent call last)", reply["traceback"])
        exc = pickle.loads(data)
        self.assertIsInstance(exc, ValueError)
        self.assertEqual(exc.args, ("bad input",))

    def test_base_exceptions_do_not_kill_the_worker(self):
        w, _ = self.start()
        for cls in (SystemExit, KeyboardInterrupt):
            reply, data = w.task(workerfns.raise_base, cls)
            self.assertEqual(reply["type"], "task_error")
            self.assertIsInstance(pickle.loads(data), cls)
        reply, data = w.task(workerfns.add, 1, 1)
        self.assertEqual(pickle.loads(data), 2)

    def test_unpicklable_result_fails_promptly(self):
        w, _ = self.start()
        t0 = time.monotonic()
        reply, data = w.task(workerfns.unpicklable_result)
        self.assertLess(time.monotonic() - t0, 5)
        self.assertEqual(reply["type"], "task_error")
        self.assertIn("could not be pickled", reply["message"])
        self.assertIn("unpicklable_result", reply["message"])
        self.assertIsInstance(pickle.loads(data), pickle.PicklingError)
        reply, data = w.task(workerfns.add, 1, 2)
        self.assertEqual(pickle.loads(data), 3)

    def test_unpicklable_exception(self):
        w, _ = self.start()
        reply, data = w.task(workerfns.raise_unpicklable)
        self.assertEqual(reply["type"], "task_error")
        self.assertIn("original text", reply["message"])
        self.assertIn("could not be pickled", reply["message"])
        exc = pickle.loads(data)
        # Deadpool's type and sentence for an exception that cannot be pickled.
        self.assertIsInstance(exc, errors.TaskError)
        self.assertIsInstance(exc, errors.ProcessError)
        self.assertTrue(str(exc).startswith("An exception occurred but pickling it failed."), str(exc))
        self.assertIn("original text", str(exc))
        self.assertIn("this exception refuses to be pickled", str(exc))
        self.assertIn("raise_unpicklable", exc.traceback)

    def test_exception_that_fails_to_unpickle(self):
        # The worker sends it as it is: unpickling it is the caller's (and
        # fails there with the unpickling error, as in Deadpool).
        w, _ = self.start()
        reply, data = w.task(workerfns.raise_bad_unpickle)
        self.assertIn("BadUnpickle", reply["message"])
        with self.assertRaises(ValueError) as cm:
            pickle.loads(data)
        self.assertIn("failed to unpickle", str(cm.exception))

    def test_bad_payload_is_a_task_error(self):
        w, _ = self.start()
        w.send({"type": "task", "id": 9}, b"not a pickle")
        reply, _ = w.read()
        self.assertEqual((reply["type"], reply["id"]), ("task_error", 9))
        reply, data = w.task(workerfns.add, 1, 2)
        self.assertEqual(pickle.loads(data), 3)

    def test_initializer_sees_pool_env(self):
        w, hello = self.start({payload.ENV_INIT: env_blob((workerfns.init, ("tag",))),
                               "PROP": "p", "PROP2": "q"})
        self.assertNotIn("init_error", hello)
        _, data = w.task(workerfns.init_seen)
        self.assertEqual(pickle.loads(data), ("tag", "p", "q"))
        # Start-up data does not leak into tasks (and nested executors).
        _, data = w.task(workerfns.getenv, payload.ENV_INIT)
        self.assertIsNone(pickle.loads(data))

    def test_failing_initializer_reported_and_worker_serves(self):
        w, hello = self.start({payload.ENV_INIT: env_blob((workerfns.failing_init, ()))})
        self.assertIn("init broke", hello["init_error"])
        _, data = w.task(workerfns.add, 1, 2)
        self.assertEqual(pickle.loads(data), 3)

    def test_trim(self):
        w, _ = self.start()
        w.send({"type": "trim"})
        reply, _ = w.read()
        self.assertEqual(reply["type"], "trimmed")
        self.assertGreater(reply["rss"], 1 << 20)

    def test_exit_runs_finalizer_and_atexit(self):
        d = support.tmpdir(self)
        fin, ate = os.path.join(d, "fin"), os.path.join(d, "atexit")
        w, _ = self.start({payload.ENV_FINAL: env_blob((workerfns.final, (fin, "finalized")))})
        _, data = w.task(workerfns.register_atexit, ate)
        self.assertTrue(pickle.loads(data))
        w.send({"type": "exit"})
        self.assertEqual(w.proc.wait(timeout=10), 0)
        with open(fin) as f:
            self.assertEqual(f.read(), "finalized")
        with open(ate) as f:
            self.assertEqual(f.read(), "atexit")

    def test_eof_exits_at_once_without_finalizer(self):
        d = support.tmpdir(self)
        fin = os.path.join(d, "fin")
        w, _ = self.start({payload.ENV_FINAL: env_blob((workerfns.final, (fin, "x")))})
        w.sock.shutdown(socket.SHUT_WR)
        self.assertEqual(w.proc.wait(timeout=10), 0)
        self.assertFalse(os.path.exists(fin))

    def test_supervisor_gone_mid_task_exits_at_once(self):
        w, _ = self.start()
        w.send({"type": "task", "id": 1}, payload.encode_call(workerfns.sleep_return, (30, 0), {}))
        time.sleep(0.2)
        t0 = time.monotonic()
        w.rfile.close()
        w.sock.close()
        self.assertEqual(w.proc.wait(timeout=10), 0)
        self.assertLess(time.monotonic() - t0, 5)

    def test_unexpected_message_exits_nonzero(self):
        w, _ = self.start()
        w.send({"type": "bogus"})
        self.assertNotEqual(w.proc.wait(timeout=10), 0)

    def test_main_script_functions(self):
        d = support.tmpdir(self)
        script = os.path.join(d, "userscript.py")
        with open(script, "w") as f:
            f.write(textwrap.dedent("""
                import os
                def triple(x):
                    return 3 * x
                if __name__ == "__main__":
                    raise SystemExit("must not run in the worker")
            """))
        prep = {"sys_path": [d], "cwd": d, "main_path": script}

        def triple(x):
            return 3 * x
        main = sys.modules["__main__"]
        triple.__module__, triple.__qualname__ = "__main__", "triple"
        had = getattr(main, "triple", None)
        main.triple = triple
        try:
            call = payload.encode_call(triple, (7,), {})
            call_with_prep = payload.encode_call(triple, (8,), {}, payload.dumps(prep))
        finally:
            if had is None:
                del main.triple
        # From the pool environment.
        w, hello = self.start({payload.ENV_MAIN: env_blob(prep)})
        self.assertNotIn("init_error", hello)
        w.send({"type": "task", "id": 1}, call)
        reply, data = w.read()
        self.assertEqual(reply["type"], "result", reply)
        self.assertEqual(pickle.loads(data), 21)
        # From the payload prefix (a shared server's worker).
        w2, _ = self.start()
        w2.send({"type": "task", "id": 1}, call_with_prep)
        reply, data = w2.read()
        self.assertEqual(reply["type"], "result", reply)
        self.assertEqual(pickle.loads(data), 24)

    def test_not_started_by_cgpool(self):
        r = subprocess.run([sys.executable, "-m", "cgpool.worker"], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, timeout=30, pass_fds=(),
                           env=dict(os.environ))
        self.assertEqual(r.returncode, 2)
        self.assertIn("started by cgpool serve", r.stderr)


if __name__ == "__main__":
    unittest.main()
