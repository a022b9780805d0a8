"""The Celery app of the Celery tests and benchmark (not a test module).

Configured from the environment that celery_support.CeleryWorker sets:

- CGPOOL_TEST_BROKER: the redis URL (broker and result backend);
- CGPOOL_TEST_POOL: "cgpool" (cgpool.celery:TaskPool) or "prefork";
- CGPOOL_TEST_DIR: a directory the tasks and the test share: tasks write
  their pids there, and the worker_process_init/_shutdown signal handlers
  leave ``init-<pid>`` / ``shutdown-<pid>`` files in it;
- CGPOOL_TEST_CONF: optional JSON of extra settings (cgpool_memory_max...).
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time

from celery import Celery, signals
from celery.exceptions import SoftTimeLimitExceeded

BROKER = os.environ.get("CGPOOL_TEST_BROKER", "redis://127.0.0.1:6379/0")
POOL = os.environ.get("CGPOOL_TEST_POOL", "cgpool")
DIR = os.environ.get("CGPOOL_TEST_DIR", "/tmp")

app = Celery("celery_tasks", broker=BROKER, backend=BROKER)
app.conf.update(
    worker_pool="cgpool.celery:TaskPool" if POOL == "cgpool" else POOL,
    broker_connection_retry_on_startup=True,
    worker_pool_restarts=True,
    task_track_started=True,
    result_expires=3600,
    worker_hijack_root_logger=False,
)
if os.environ.get("CGPOOL_TEST_CONF"):
    app.conf.update(json.loads(os.environ["CGPOOL_TEST_CONF"]))


def _mark(name, text=""):
    """Write DIR/name atomically (a reader never sees half a file)."""
    path = os.path.join(DIR, name)
    tmp = "%s.%d.tmp" % (path, os.getpid())
    with open(tmp, "w") as f:
        f.write(str(text))
    os.rename(tmp, path)


@signals.worker_process_init.connect
def _process_init(**_):
    _mark("init-%d" % os.getpid(), threading.current_thread().name)


@signals.worker_process_shutdown.connect
def _process_shutdown(pid=None, exitcode=None, **_):
    _mark("shutdown-%d" % os.getpid(), "%s %s" % (pid, exitcode))


@signals.worker_ready.connect
def _ready(sender=None, **_):
    _mark("ready-%s" % os.environ.get("CGPOOL_TEST_NODE", ""), os.getpid())


@signals.task_failure.connect
def _failure_seen(sender=None, task_id=None, exception=None, **_):
    # Sent in the Celery worker's main process for outcomes it learns from
    # the pool (a lost worker, a timeout, an OOM): which thread ran the
    # pool's callback?
    _mark("failure-%s" % task_id, "%d %s %s" % (os.getpid(), threading.current_thread().name,
                                                 type(exception).__name__))


@app.task
def add(a, b):
    return {"sum": a + b, "pid": os.getpid()}


@app.task
def boom():
    raise ValueError("boom from task")


@app.task
def whoami():
    return os.getpid()


@app.task
def sleepy(seconds, tag=""):
    if tag:
        _mark("pid-%s" % tag, os.getpid())
    time.sleep(seconds)
    return os.getpid()


@app.task
def daemon_then_sleep(tag, seconds):
    """Start a detached grandchild (its own session, as a daemon would),
    note its pid, then sleep past the time limit."""
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", "cgpool-test-daemon-" + tag],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
    _mark("daemon-%s" % tag, p.pid)
    _mark("pid-%s" % tag, os.getpid())
    time.sleep(seconds)
    return "not killed"


@app.task
def soft(seconds):
    try:
        time.sleep(seconds)
    except SoftTimeLimitExceeded:
        return "caught SoftTimeLimitExceeded"
    return "slept %s" % seconds


@app.task
def die(code):
    os._exit(code)


@app.task(acks_late=True, reject_on_worker_lost=True)
def die_once(tag):
    """Dies the first time (SIGKILL of its own process); the redelivered
    message then succeeds."""
    name = "died-%s" % tag
    if not os.path.exists(os.path.join(DIR, name)):
        _mark(name, os.getpid())
        os.kill(os.getpid(), signal.SIGKILL)
    return "second run"


@app.task
def hog(mb, hold=0.2):
    """Touch *mb* MiB, page by page, then hold it a moment."""
    block = bytearray(mb << 20)
    for i in range(0, len(block), 4096):
        block[i] = 1
    time.sleep(hold)
    return len(block) >> 20


@app.task(cgpool_memory_max="64M")
def hog_limited(mb):
    return hog(mb)


@app.task
def memerr():
    raise MemoryError("task raised MemoryError")


@app.task
def grow_rss(mb):
    """Leave the worker's peak memory raised (for max_memory_per_child)."""
    block = bytearray(mb << 20)
    for i in range(0, len(block), 4096):
        block[i] = 1
    del block
    return os.getpid()


def _where(tag):
    """Note that the task started (run-<tag>), and say where it ran: its
    pid and its cgroup (each node's cgpool has a subtree of its own)."""
    if tag:
        _mark("run-%s" % tag, os.getpid())
    with open("/proc/self/cgroup") as f:
        cgroup = [line.split(":", 2)[2].strip() for line in f if line.startswith("0::")][0]
    return {"tag": tag, "pid": os.getpid(), "cgroup": cgroup}


@app.task(acks_late=True, reject_on_worker_lost=True)
def slow_late(seconds, tag=""):
    """For the two-node test: acks_late, requeued if its worker is lost."""
    where = _where(tag)
    time.sleep(seconds)
    return where


@app.task
def slow_early(seconds, tag=""):
    """For the two-node test: acknowledged when it starts."""
    where = _where(tag)
    time.sleep(seconds)
    return where


@app.task
def trivial(x):
    return x


_kept = []


@app.task
def leak(mb):
    """Keep *mb* MiB for the rest of the worker's life (max_memory_per_child)."""
    block = bytearray(mb << 20)
    for i in range(0, len(block), 4096):
        block[i] = 1
    _kept.append(block)
    return os.getpid()


@app.task
def span(seconds):
    """(pid, start, end) on the wall clock, to see how many ran at once."""
    start = time.time()
    time.sleep(seconds)
    return [os.getpid(), start, time.time()]


@app.task
def mycgroup():
    with open("/proc/self/cgroup") as f:
        return [os.getpid(), f.read()]
