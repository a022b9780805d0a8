"""Where the microseconds of a trivial task go, through cgpool.Executor.

    python3 python/bench/breakdown.py [--tasks 20000] [--top 12]

Pushes N trivial tasks through cgpool.Executor(2) (submit all, then wait)
and reports the CPU each party spent per task: the submitting thread, the
reader thread, the supervisor (cgpool serve) and the two workers, read from
/proc before and after; then the submitting and the reader thread's top
functions (cProfile, which slows them: read the shares, not the totals).

Needs the cgpool binary ($CGPOOL_BIN or cgpool on PATH).
"""

import argparse
import concurrent.futures
import cProfile
import io
import os
import pstats
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import cgpool  # noqa: E402
from cgpool import connection  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def trivial(x):
    return x


def cpu(path):
    with open(path) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


def children(pid):
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open("/proc/%s/stat" % d) as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(d))
            except OSError:
                pass
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, default=20000)
    ap.add_argument("--top", type=int, default=12)
    ap.add_argument("--no-cprofile", action="store_true")
    a = ap.parse_args()

    reader_prof = cProfile.Profile()
    reader_tid = []
    run = connection.Connection._run

    def profiled_run(self):
        reader_tid.append(threading.get_native_id())
        if a.no_cprofile:
            return run(self)
        reader_prof.enable()
        try:
            return run(self)
        finally:
            reader_prof.disable()
    connection.Connection._run = profiled_run

    ex = cgpool.Executor(max_workers=2)
    concurrent.futures.wait([ex.submit(trivial, i) for i in range(500)])
    sup = ex._server.proc.pid
    workers = children(sup)
    me = threading.get_native_id()
    paths = {"submitting thread": "/proc/self/task/%d/stat" % me,
             "reader thread": "/proc/self/task/%d/stat" % reader_tid[0],
             "supervisor (cgpool serve)": "/proc/%d/stat" % sup}
    for i, w in enumerate(workers):
        paths["worker %d" % (i + 1)] = "/proc/%d/stat" % w
    before = {k: cpu(p) for k, p in paths.items()}
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    if not a.no_cprofile:
        prof.enable()
    futs = [ex.submit(trivial, i) for i in range(a.tasks)]
    if not a.no_cprofile:
        prof.disable()
    concurrent.futures.wait(futs)
    wall = time.perf_counter() - t0
    after = {k: cpu(p) for k, p in paths.items()}
    ex.shutdown()

    print("%d tasks in %.2fs (%.0f tasks/s%s), Python %s" % (
        a.tasks, wall, a.tasks / wall, "" if a.no_cprofile else ", under cProfile", sys.version.split()[0]))
    total = 0
    for k in paths:
        us = (after[k] - before[k]) / a.tasks * 1e6
        total += us
        print("  %-28s %6.1f us CPU a task" % (k, us))
    print("  %-28s %6.1f us CPU a task (2 CPUs: the floor is half of it)" % ("all", total))
    if a.no_cprofile:
        return
    for name, p in (("submitting thread", prof), ("reader thread", reader_prof)):
        s = io.StringIO()
        pstats.Stats(p, stream=s).sort_stats("tottime").print_stats(a.top)
        print("\n== %s, by own time" % name)
        lines = s.getvalue().splitlines()
        start = next(i for i, line in enumerate(lines) if line.lstrip().startswith("ncalls"))
        print("\n".join(line for line in lines[start:] if line.strip()))


if __name__ == "__main__":
    main()
