"""Throughput and latency of cgpool.Executor beside its peers, in one run.

    python3 python/bench/throughput.py [--tasks 20000] [--latency 2000]
        [--deadpool PATH] [--deadpool-python /usr/bin/python3]

For each pool with 2 workers: the rate at which N trivial tasks go through
(submit them all, then wait for all; tasks/s), the submit-to-result latency
of one task at a time (median and p99, in microseconds), and map over the
same N inputs with multiprocessing.Pool.map's default chunksize (N / 8 for
2 workers) for every pool that has a chunksize. The peers:
concurrent.futures.ProcessPoolExecutor(2), multiprocessing.Pool(2)
(apply_async, map) and, with --deadpool (a checkout of
github.com/cjrh/deadpool; run by --deadpool-python, which needs psutil and
setproctitle: Debian's python3-psutil and python3-setproctitle),
Deadpool(2) with its default start method (forkserver). The machines are
shared and noisy: compare within one run; the ratios at the end are what
issue 10 sets targets for.

Needs the cgpool binary ($CGPOOL_BIN or cgpool on PATH).
"""

import argparse
import concurrent.futures
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))


def trivial(x):
    return x


def percentile(values, p):
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100.0 * (len(s) - 1))))]


def throughput_submit(ex, n):
    t0 = time.perf_counter()
    futs = [ex.submit(trivial, i) for i in range(n)]
    concurrent.futures.wait(futs)
    dt = time.perf_counter() - t0
    assert futs[-1].result() == n - 1
    return n / dt


def throughput_map(ex, n, chunksize):
    t0 = time.perf_counter()
    out = list(ex.map(trivial, range(n), chunksize=chunksize))
    dt = time.perf_counter() - t0
    assert out[-1] == n - 1 and len(out) == n
    return n / dt


def throughput_apply_async(pool, n):
    t0 = time.perf_counter()
    rs = [pool.apply_async(trivial, (i,)) for i in range(n)]
    for r in rs:
        r.wait()
    dt = time.perf_counter() - t0
    assert rs[-1].get() == n - 1
    return n / dt


def throughput_mp_map(pool, n, chunksize):
    t0 = time.perf_counter()
    out = pool.map(trivial, range(n), chunksize)
    dt = time.perf_counter() - t0
    assert out[-1] == n - 1 and len(out) == n
    return n / dt


def latency_submit(ex, n):
    lat = []
    for i in range(n):
        t0 = time.perf_counter()
        ex.submit(trivial, i).result()
        lat.append(time.perf_counter() - t0)
    return lat


def latency_apply_async(pool, n):
    lat = []
    for i in range(n):
        t0 = time.perf_counter()
        pool.apply_async(trivial, (i,)).get()
        lat.append(time.perf_counter() - t0)
    return lat


def measure(kind, a):
    """One pool's figures: {"submit": tasks/s, "lat": [...], "map": tasks/s}."""
    n, chunk = a.tasks, max(1, a.tasks // 8)
    r = {}
    if kind == "cgpool":
        import cgpool
        pool = cgpool.Executor(max_workers=2)
        close = pool.shutdown
    elif kind == "ppe":
        pool = concurrent.futures.ProcessPoolExecutor(2)
        close = pool.shutdown
    elif kind == "mp":
        pool = multiprocessing.Pool(2)

        def close():
            pool.close()
            pool.join()
    elif kind == "deadpool":
        import deadpool
        pool = deadpool.Deadpool(max_workers=2)
        close = pool.shutdown
    else:
        raise ValueError(kind)
    try:
        if kind == "mp":
            throughput_apply_async(pool, 200)
            r["submit"] = statistics.median(throughput_apply_async(pool, n) for _ in range(a.rounds))
            r["lat"] = latency_apply_async(pool, a.latency)
            r["map"] = statistics.median(throughput_mp_map(pool, n, chunk) for _ in range(a.rounds))
        else:
            throughput_submit(pool, 200)
            r["submit"] = statistics.median(throughput_submit(pool, n) for _ in range(a.rounds))
            r["lat"] = latency_submit(pool, a.latency)
            if kind != "deadpool":  # Deadpool's map is Executor.map: no chunks
                r["map"] = statistics.median(throughput_map(pool, n, chunk) for _ in range(a.rounds))
    finally:
        close()
    return r


NAMES = {"cgpool": "cgpool.Executor(2)", "ppe": "ProcessPoolExecutor(2)", "mp": "multiprocessing.Pool(2)",
         "deadpool": "Deadpool(2) (forkserver)"}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, default=20000)
    ap.add_argument("--latency", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=1, help="repeat each throughput measurement, keep the median")
    ap.add_argument("--deadpool", metavar="PATH", default=os.environ.get("CGPOOL_BENCH_DEADPOOL"),
                    help="a checkout of Deadpool's source (default $CGPOOL_BENCH_DEADPOOL)")
    ap.add_argument("--deadpool-python", default="/usr/bin/python3")
    ap.add_argument("--only", help=argparse.SUPPRESS)  # one pool, figures as JSON (for Deadpool's run)
    a = ap.parse_args()

    if a.only:
        if a.only == "deadpool":
            sys.path.insert(0, a.deadpool)
        print(json.dumps(measure(a.only, a)))
        return

    print("%d trivial tasks, 2 workers, Python %s, %d CPUs; map chunksize %d (multiprocessing.Pool.map's default)"
          % (a.tasks, sys.version.split()[0], os.cpu_count(), max(1, a.tasks // 8)), flush=True)
    results = {}
    kinds = ["cgpool", "ppe", "mp"] + (["deadpool"] if a.deadpool else [])
    for kind in kinds:
        if kind == "deadpool":
            argv = [a.deadpool_python, os.path.abspath(__file__), "--only", "deadpool", "--deadpool", a.deadpool,
                    "--tasks", str(a.tasks), "--latency", str(a.latency), "--rounds", str(a.rounds)]
            out = subprocess.run(argv, stdout=subprocess.PIPE, text=True, check=True).stdout
            r = json.loads(out.strip().splitlines()[-1])
        else:
            r = measure(kind, a)
        results[kind] = r
        line = "%-26s submit %7.0f tasks/s   latency p50 %6.0f us  p99 %6.0f us" % (
            NAMES[kind], r["submit"], statistics.median(r["lat"]) * 1e6, percentile(r["lat"], 99) * 1e6)
        if "map" in r:
            line += "   map %8.0f tasks/s" % r["map"]
        print(line, flush=True)

    cg, ppe, mp = results["cgpool"], results["ppe"], results["mp"]
    p50 = {k: statistics.median(v["lat"]) for k, v in results.items()}
    print()
    print("cgpool/ProcessPoolExecutor submit throughput: %5.2fx  (target >= 2)" % (cg["submit"] / ppe["submit"]))
    print("cgpool/multiprocessing apply_async throughput: %5.2fx  (target >= 1)" % (cg["submit"] / mp["submit"]))
    print("cgpool/ProcessPoolExecutor median latency:    %5.2fx  (target <= 1)" % (p50["cgpool"] / p50["ppe"]))
    print("cgpool/multiprocessing median latency:         %5.2fx  (aim <= 2)" % (p50["cgpool"] / p50["mp"]))
    print("cgpool/multiprocessing.Pool.map (same chunks): %5.2fx  (target > 1)" % (cg["map"] / mp["map"]))
    print("cgpool/ProcessPoolExecutor map (same chunks):  %5.2fx" % (cg["map"] / ppe["map"]))
    if "deadpool" in results:
        dp = results["deadpool"]
        print("cgpool/Deadpool submit throughput:            %5.2fx" % (cg["submit"] / dp["submit"]))
        print("cgpool/Deadpool median latency:               %5.2fx" % (p50["cgpool"] / p50["deadpool"]))


if __name__ == "__main__":
    main()
