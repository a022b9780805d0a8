"""Helpers for the Celery tests and benchmark: a private redis-server and
real ``celery worker`` processes, each started by us and stopped by pid.

- ``celery_reason()``: why the Celery tier cannot run here (None if it can):
  it needs Celery and redis-py importable by this interpreter (Debian's
  python3-celery and python3-redis, for /usr/bin/python3) and redis-server;
- ``Redis``: ``redis-server`` on a free loopback port, no persistence, in a
  temporary directory; ``stop()`` ends it by pid;
- ``CeleryWorker``: ``python -m celery -A celery_tasks worker`` with a pool
  ("cgpool" or "prefork"), its output collected by a thread so that a test
  waits for a line (``wait_for``) instead of sleeping; ``stop()`` is a warm
  shutdown by SIGTERM (SIGKILL after a deadline), and ``descendants()``
  lists every process it started, so a test can check that none is left.
"""

import atexit
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import support

HERE = support.HERE


def celery_reason():
    if os.environ.get("CGPOOL_SKIP_CELERY"):
        return "CGPOOL_SKIP_CELERY is set (.ci/run runs the Celery tests in a tier of their own)"
    try:
        import celery  # noqa: F401
        import redis  # noqa: F401
    except ImportError as e:
        return ("the Celery tests need Celery and redis-py for %s (Debian: apt-get install python3-celery "
                "python3-redis redis-server, then run them with /usr/bin/python3): %s" % (sys.executable, e))
    if shutil.which("redis-server") is None:
        return "the Celery tests need redis-server (Debian: apt-get install redis-server)"
    return None


def free_port():
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
    finally:
        s.close()


def pid_alive(pid):
    return support.pid_alive(pid)


def children_of(pid):
    """Direct children of *pid* (from /proc, zombies included)."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d, "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(d))
    return out


def descendants(pid):
    seen, todo = [], [pid]
    while todo:
        p = todo.pop()
        for c in children_of(p):
            if c not in seen:
                seen.append(c)
                todo.append(c)
    return seen


def stop_pid(proc, timeout=10.0, sig=signal.SIGTERM):
    """Send *sig* to a Popen we started, wait up to *timeout*, then SIGKILL."""
    if proc.poll() is not None:
        return proc.returncode
    try:
        proc.send_signal(sig)
    except ProcessLookupError:
        pass
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


class Redis:
    """A private redis-server on 127.0.0.1:<free port>."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="cgpool-redis-")
        self.port = free_port()
        self.url = "redis://127.0.0.1:%d/0" % self.port
        self.proc = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
             "--appendonly", "no", "--dir", self.dir, "--logfile", os.path.join(self.dir, "redis.log"),
             "--daemonize", "no"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        import redis
        self.client = redis.Redis(host="127.0.0.1", port=self.port)

        def up():
            if self.proc.poll() is not None:
                raise AssertionError("redis-server exited with %s: %s" % (self.proc.returncode, self.log()))
            try:
                return self.client.ping()
            except Exception:
                return False
        support.wait_until(up, timeout=20, what="redis-server answering PING")

    def log(self):
        return support.read_text(os.path.join(self.dir, "redis.log")) or ""

    def stop(self):
        try:
            self.client.close()
        except Exception:
            pass
        stop_pid(self.proc, timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)


_SHARED = None


def setup_module(need_cgpool=True):
    """What every Celery test module's setUpModule does: skip (fail, where
    skips are failures) with celery_reason()'s reason, require the cgpool
    binary unless need_cgpool is false, and return the shared
    redis-server."""
    reason = celery_reason()
    if reason:
        support.skip_or_fail(reason)
    if need_cgpool:
        support.require_cgpool()
    return shared_redis()


def teardown_module():
    """What every Celery test module's tearDownModule does: collect the
    results still subscribed to redis while it is there."""
    import gc
    gc.collect()


def shared_redis():
    """The one redis-server of this test process (broker and backend of the
    test app, which reads $CGPOOL_TEST_BROKER once, when it is imported):
    every Celery test module uses it, each on queues of its own; stopped
    by pid at exit."""
    global _SHARED
    if _SHARED is None:
        _SHARED = Redis()
        os.environ["CGPOOL_TEST_BROKER"] = _SHARED.url
        atexit.register(_stop_shared)
    return _SHARED


def _stop_shared():
    import gc
    gc.collect()  # results still subscribed, before their redis goes
    _SHARED.stop()


class CeleryWorker:
    """One ``celery worker`` process (a node) of the test app."""

    def __init__(self, broker, pool, workdir, args=(), env=None, node="node1", queues="celery",
                 concurrency=2, python=None, app="celery_tasks", launcher=("-m", "celery")):
        self.pool = pool
        self.node = node
        self.workdir = workdir
        self.hostname = "%s@%s" % (node, socket.gethostname())
        e = dict(os.environ)
        e.update({"CGPOOL_TEST_BROKER": broker, "CGPOOL_TEST_POOL": pool, "CGPOOL_TEST_DIR": workdir,
                  "CGPOOL_TEST_NODE": node, "PYTHONUNBUFFERED": "1"})
        pp = [support.PYDIR, HERE] + [p for p in e.get("PYTHONPATH", "").split(os.pathsep) if p]
        e["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(pp))
        if env:
            e.update(env)
        self.argv = [python or sys.executable] + list(launcher) + ["-A", app, "worker", "-n", self.hostname,
                     "-c", str(concurrency), "-Q", queues, "--without-mingle", "--without-gossip",
                     "--without-heartbeat", "-l", "INFO"] + list(args)
        self._out = []
        self._cond = threading.Condition()
        self.started = time.monotonic()
        self.proc = subprocess.Popen(self.argv, cwd=workdir, env=e, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in iter(self.proc.stdout.readline, b""):
            with self._cond:
                self._out.append((time.monotonic(), line.decode("utf-8", "replace")))
                self._cond.notify_all()
        self.proc.stdout.close()
        with self._cond:
            self._out.append((time.monotonic(), None))
            self._cond.notify_all()

    def output(self):
        with self._cond:
            return "".join(t for _, t in self._out if t)

    def wait_for(self, pattern, timeout=60.0, since=0):
        """Wait for an output line matching *pattern* (a regex) from line
        number *since* on; return (line number, line). Raises
        AssertionError with the output on timeout or exit."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        i = since
        with self._cond:
            while True:
                while i < len(self._out):
                    t = self._out[i][1]
                    if t is None:
                        raise AssertionError("celery worker exited (%s) before printing %r:\n%s"
                                             % (self.proc.poll(), pattern, self.output()[-6000:]))
                    if rx.search(t):
                        return i, t
                    i += 1
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("celery worker did not print %r within %gs:\n%s"
                                         % (pattern, timeout, self.output()[-6000:]))
                self._cond.wait(left)

    def mark(self):
        """The current output line number (for wait_for(since=...))."""
        with self._cond:
            return len(self._out)

    def wait_ready(self, timeout=90.0):
        """Wait for the worker_ready signal (the test app leaves a file
        ready-<node> in the work directory), whatever the log level."""
        path = os.path.join(self.workdir, "ready-" + self.node)

        def ready():
            if self.proc.poll() is not None:
                raise AssertionError("celery worker exited (%s) before it was ready:\n%s"
                                     % (self.proc.returncode, self.output()[-6000:]))
            return os.path.exists(path)
        try:
            support.wait_until(ready, timeout=timeout, what="celery worker %s ready" % self.hostname)
        except AssertionError as e:
            raise AssertionError("%s\n%s" % (e, self.output()[-6000:])) from None
        return self

    def descendants(self):
        return descendants(self.proc.pid)

    def stop(self, timeout=30.0, sig=signal.SIGTERM):
        """Warm shutdown (SIGTERM); SIGKILL after *timeout*. Returns the
        exit status."""
        code = stop_pid(self.proc, timeout=timeout, sig=sig)
        self._reader.join(timeout=5)
        return code

    def kill(self):
        """SIGKILL the worker's main process and wait for it."""
        return self.stop(timeout=10, sig=signal.SIGKILL)


def wait_file(path, timeout=30.0):
    """The content of *path* once it exists (tasks write them atomically)."""
    return support.wait_until(lambda: support.read_text(path), timeout=timeout, interval=0.005,
                              what="file %s" % path)


def kill_leftover(pids):
    """SIGKILL processes a test left on purpose (prefork's surviving
    grandchild); only pids it started."""
    for p in pids:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass
