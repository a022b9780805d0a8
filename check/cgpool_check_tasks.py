"""The Python forms of `cgpool check`'s task rows (see check/matrix.go and
the task x pool matrix of the research notes). `cgpool check` writes this
file into a private directory, puts that directory on the Python workers'
PYTHONPATH, and sends pickled calls of run(row, stuck).

Each row's normal form returns 10; its stuck form starts the same things
and then blocks, so that only the supervisor's deadline (cgroup.kill of the
slot) can end it. Nothing here cleans up after itself: that is what the
check checks.
"""

import itertools
import os
import signal
import subprocess
import sys
import threading
import time

FOREVER = 3600


def _block():
    while True:
        time.sleep(FOREVER)


def cpu(stuck):
    if stuck:
        while True:
            pass
    i = 0
    while i < 100000:
        i += 1
    return 10


def subprocess_(stuck):
    if stuck:
        subprocess.check_call(["sleep", str(FOREVER)])
    return int(subprocess.check_output(["echo", "10"]))


def mp_process(stuck):
    import multiprocessing
    p = multiprocessing.Process(target=time.sleep, args=(FOREVER if stuck else 0,))
    p.start()
    p.join()
    return 10


def mp_pool(stuck):
    import multiprocessing
    with multiprocessing.Pool(2) as pool:
        if stuck:
            pool.map(time.sleep, [FOREVER])
        return sum(pool.map(abs, [-5, 5]))


def cf_pool(stuck):
    import concurrent.futures
    import multiprocessing
    total = 0
    for method in ("fork", "forkserver"):
        ctx = multiprocessing.get_context(method)
        with concurrent.futures.ProcessPoolExecutor(2, mp_context=ctx) as ex:
            if stuck:
                ex.submit(time.sleep, FOREVER).result()
            total += ex.submit(abs, -5).result()
    return total


def cgpool_nested(stuck):
    import cgpool
    with cgpool.Executor(max_workers=1) as ex:
        if stuck:
            ex.submit(time.sleep, FOREVER).result()
        return ex.submit(abs, -10).result()


def b_pool(stuck):
    # One apply_async per job and close() + join(), as Celery drives it;
    # billiard 4.1.0's own shortcuts hang by themselves, with no cgpool
    # involved (measured: /usr/bin/python3, 40 runs each, outside any pool):
    # - map() over two workers credits every chunk to the first worker's
    #   on_ready_counter (pool.py on_ready: next(iter(item.worker_pids()))),
    #   so the other one waits 30 s in _ensure_messages_consumed before it
    #   exits, and join() waits for it: 17 of 40 runs took over 10 s;
    # - terminate() (what `with` calls) SIGTERMs workers whose Python
    #   handler races their exit, and _terminate_pool's join() hung in 2
    #   of 100 runs.
    # The stuck form blocks in the pool: only cgpool's kill ends it.
    import billiard
    pool = billiard.Pool(2)
    if stuck:
        pool.apply_async(time.sleep, (FOREVER,)).get()
    total = sum(r.get() for r in [pool.apply_async(abs, (x,)) for x in (-5, 5)])
    pool.close()
    pool.join()
    return total


def detach(stuck):
    # Double fork and setsid: the grandchild is re-parented away from us.
    pid = os.fork()
    if pid == 0:
        os.setsid()
        if os.fork() == 0:
            os.execvp("sleep", ["sleep", str(FOREVER)])
        os._exit(0)
    os.waitpid(pid, 0)
    if stuck:
        _block()
    return 10


def bg_child(stuck):
    subprocess.Popen(["sleep", str(FOREVER)])
    if stuck:
        _block()
    return 10


def threads_fork(stuck):
    # Fork while another thread holds a lock: the child waits for it
    # forever.
    lock = threading.Lock()
    held = threading.Event()

    def holder():
        with lock:
            held.set()
            time.sleep(FOREVER)

    threading.Thread(target=holder, daemon=True).start()
    held.wait()
    pid = os.fork()
    if pid == 0:
        with lock:
            os._exit(0)
    if stuck:
        os.waitpid(pid, 0)
    return 10


def parent_threads(stuck):
    # The client (cgpool check, a Go program) has many threads; workers are
    # exec'd by the supervisor, never forked from it, so nothing here can be
    # deadlocked by them.
    if stuck:
        _block()
    return 10


def sigterm_ignore(stuck):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if stuck:
        _block()
    return 10


def gil_c(stuck):
    # A C loop that holds the GIL and never checks for signals.
    n = 10 ** 13 if stuck else 10 ** 6
    sum(itertools.repeat(1, n))
    return 10


def sigstop(stuck):
    if stuck:
        os.kill(os.getpid(), signal.SIGSTOP)
        _block()
    child = subprocess.Popen(["sleep", str(FOREVER)])
    os.kill(child.pid, signal.SIGSTOP)
    return 10


def cgroup_escape(stuck):
    # Try to leave the slot: its parents, then the top of the hierarchy.
    mount = os.environ["CGPOOL_CHECK_CGROUP_MOUNT"]
    with open("/proc/self/cgroup") as f:
        own = [l[3:].strip() for l in f if l.startswith("0::")][0]
    targets = []
    d = own
    while d not in ("", "/"):
        d = os.path.dirname(d)
        targets.append(os.path.join(mount + d, "cgroup.procs"))
    for t in targets:
        try:
            with open(t, "w") as f:
                f.write(str(os.getpid()))
        except OSError:
            continue
        return "escaped to %s" % t
    if stuck:
        _block()
    return 10


def oom(stuck):
    chunks = []
    while True:
        chunks.append(bytearray(1 << 20))  # touched: bytearray zero-fills
        if stuck and len(chunks) >= 8:
            _block()


def fork_bomb(stuck):
    # Fork past pids.max: fork fails with EAGAIN, the children stay.
    kids = 0
    for _ in range(1000):
        try:
            pid = os.fork()
        except OSError:
            break
        if pid == 0:
            time.sleep(FOREVER)
            os._exit(0)
        kids += 1
    if stuck:
        _block()
    return 10 if kids < 1000 else "no limit: forked %d" % kids


ROWS = {
    "cpu": cpu, "subprocess": subprocess_, "mp_process": mp_process, "mp_pool": mp_pool,
    "cf_pool": cf_pool, "cgpool_nested": cgpool_nested, "b_pool": b_pool, "detach": detach,
    "bg_child": bg_child, "threads_fork": threads_fork, "parent_threads": parent_threads,
    "sigterm_ignore": sigterm_ignore, "gil_c": gil_c, "sigstop": sigstop,
    "cgroup_escape": cgroup_escape, "oom": oom, "fork_bomb": fork_bomb,
}


def run(row, stuck):
    result = ROWS[row](stuck)
    sys.stdout.flush()
    return result


def daemon_flag():
    """The matrix's header line: whether this worker is daemonic."""
    import multiprocessing
    return multiprocessing.current_process().daemon
