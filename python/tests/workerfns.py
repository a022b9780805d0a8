"""Task functions for the tests (importable by workers through PYTHONPATH)."""

import atexit
import os
import re
import signal
import subprocess
import sys
import threading
import time

INIT_SEEN = None


def add(a, b):
    return a + b


def ident(x):
    return x


def boom(msg):
    raise ValueError(msg)


def getenv(name):
    return os.environ.get(name)


def getpid():
    return os.getpid()


def unpicklable_result():
    return threading.Lock()


class Unpicklable(Exception):
    def __reduce__(self):
        raise TypeError("this exception refuses to be pickled")


class BadUnpickle(Exception):
    def __init__(self, a, b, c):
        super().__init__(a, b, c)
        self.a = a

    def __setstate__(self, d):
        raise ValueError("I failed to unpickle")


def raise_unpicklable():
    raise Unpicklable("original text")


def raise_bad_unpickle():
    raise BadUnpickle(1, 2, 3)


def raise_base(cls):
    raise cls("base")


def init(tag):
    global INIT_SEEN
    INIT_SEEN = (tag, os.environ.get("PROP"), os.environ.get("PROP2"))


def init_seen():
    return INIT_SEEN


def failing_init():
    raise RuntimeError("init broke")


def final(path, text):
    with open(path, "w") as f:
        f.write(text)


def register_atexit(path):
    atexit.register(final, path, "atexit")
    return True


def big(n):
    return b"x" * n


def exit_now(code):
    sys.stdout.flush()
    os._exit(code)


def kill_self(sig):
    os.kill(os.getpid(), sig)
    time.sleep(10)


def catastrophic_regex():
    # Exponential backtracking inside the C regex engine: the GIL is held.
    return re.match(r"(a+)+$", "a" * 40 + "b")


def sleep_return(t, v):
    time.sleep(t)
    return v


def allocate(n):
    b = bytearray(n)
    for i in range(0, n, 4096):
        b[i] = 1
    return len(b)


def start_sleeper_and_report(path):
    """Start a `sleep` subprocess, write its pid and ours, and block."""
    p = subprocess.Popen(["sleep", "300"])
    with open(path + ".tmp", "w") as f:
        f.write("%d %d\n" % (os.getpid(), p.pid))
    os.rename(path + ".tmp", path)
    time.sleep(300)


def nested_executor(n):
    """Run tasks on a nested cgpool Executor and a subprocess."""
    import cgpool
    with cgpool.Executor(max_workers=1) as ex:
        nested = ex.submit(add, n, 1).result()
        nested_pid = ex.submit(getpid).result()
    out = subprocess.run(["echo", "sub"], stdout=subprocess.PIPE, text=True).stdout.strip()
    return nested, out, nested_pid != os.getpid()


def nested_blocking(path):
    """Start a nested Executor running a long task, and a subprocess; report
    the pids (outer worker, nested worker, sleep) in *path*, then block."""
    import cgpool
    ex = cgpool.Executor(max_workers=1)
    fut = ex.submit(sleep_return, 300, 0)
    deadline = time.monotonic() + 30
    while fut.pid is None and time.monotonic() < deadline:
        time.sleep(0.01)
    p = subprocess.Popen(["sleep", "300"])
    with open(path + ".tmp", "w") as f:
        f.write("%d %d %d\n" % (os.getpid(), fut.pid or 0, p.pid))
    os.rename(path + ".tmp", path)
    time.sleep(300)


def environ_item(name):
    return os.environ.get(name)


def record_pid_and_sleep(t):
    time.sleep(t)
    return os.getpid()


def signal_number(name):
    return int(getattr(signal, name))


# Deadpool's tests/test_deadpool.py exceptions (test_bad_exception), as
# they are there.
class MyBadException(Exception):
    def __init__(self, a, b, c):
        self.a = a
        self.b = b
        self.c = c


class MyBadExceptionSetState(Exception):
    def __init__(self, a, b, c):
        self.a = a
        self.b = b
        self.c = c

    def __setstate__(self, d):
        raise ValueError("I failed to unpickle")


class MyBadExceptionReduce(Exception):
    def __init__(self, a, b, c):
        self.a = a
        self.b = b
        self.c = c

    def __reduce__(self):
        return None


class MyBadExceptionReduceRaise(Exception):
    def __init__(self, a, b, c):
        self.a = a
        self.b = b
        self.c = c

    def __reduce__(self):
        raise ValueError("I failed to pickle")


def raise_custom_exception(exc_class):
    raise exc_class(1, 2, 3)


class BadResult:
    """Pickles in the worker, fails to unpickle in the caller."""

    def __reduce__(self):
        return (_refuse, ())


def _refuse():
    raise ValueError("this result refuses to be unpickled")


def bad_result():
    return BadResult()


def touch(path):
    """Create *path*: the task's proof that it ran."""
    with open(path, "w") as f:
        f.write(str(os.getpid()))
    return path


def nested_billiard(n):
    """A billiard pool (Celery's) inside a task: n tasks on 2 billiard
    workers, then close() and join().

    Not `with pool:` (terminate()) nor map(), whose two defects in billiard
    4.1 show the same in a plain interpreter and under ProcessPoolExecutor
    as under cgpool (python/bench/billiard_nested.py):
    - terminate() takes the inqueue's read lock in the parent
      (_help_stuff_finish) and never gives it back, then SIGTERMs the
      workers and relies on billiard's handler (sys.exit) to get a worker
      out of its blocking acquire of that lock. A SIGTERM that lands after
      CPython's signal check and before the sem_wait call only sets the
      flag: the worker sleeps in sem_wait for good and the parent's join()
      with it (gdb on one such worker under ProcessPoolExecutor: in
      sem_wait; made to run Python code, it ran the pending handler and
      exited at once with status 15, billiard's sys.exit(-(256-15)));
    - map() credits one worker with a job's results
      (next(iter(item.worker_pids()))), so the other waits 300 x 0.1 s in
      _ensure_messages_consumed before it exits."""
    import billiard
    pool = billiard.Pool(2)
    try:
        return sum(r.get(timeout=60) for r in [pool.apply_async(abs, (-i,)) for i in range(1, n + 1)])
    finally:
        pool.close()
        pool.join()
