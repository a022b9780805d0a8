"""Throughput and latency of cgpool.Executor beside the standard library.

    python3 python/bench/throughput.py [--tasks 20000] [--latency 2000]

For each pool with 2 workers: the time to push N trivial tasks through
(submit them all, then wait for all; tasks/s), and the submit-to-result
latency of one task at a time (median and p99, in microseconds), for
cgpool.Executor (submit, and map which batches on the wire),
concurrent.futures.ProcessPoolExecutor(2) and multiprocessing.Pool(2)
(apply_async). The machines are shared and noisy: compare within one run;
the ratios at the end are cgpool's figures over ProcessPoolExecutor's.

Needs the cgpool binary ($CGPOOL_BIN or cgpool on PATH).
"""

import argparse
import concurrent.futures
import multiprocessing
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import cgpool  # noqa: E402


def trivial(x):
    return x


def percentile(values, p):
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100.0 * (len(s) - 1))))]


def throughput_executor(ex, n):
    t0 = time.perf_counter()
    futs = [ex.submit(trivial, i) for i in range(n)]
    concurrent.futures.wait(futs)
    dt = time.perf_counter() - t0
    assert futs[-1].result() == n - 1
    return n / dt


def throughput_map(ex, n):
    t0 = time.perf_counter()
    out = list(ex.map(trivial, range(n)))
    dt = time.perf_counter() - t0
    assert out[-1] == n - 1
    return n / dt


def throughput_mp(pool, n):
    t0 = time.perf_counter()
    rs = [pool.apply_async(trivial, (i,)) for i in range(n)]
    for r in rs:
        r.wait()
    dt = time.perf_counter() - t0
    assert rs[-1].get() == n - 1
    return n / dt


def latency_executor(ex, n):
    lat = []
    for i in range(n):
        t0 = time.perf_counter()
        ex.submit(trivial, i).result()
        lat.append(time.perf_counter() - t0)
    return lat


def latency_mp(pool, n):
    lat = []
    for i in range(n):
        t0 = time.perf_counter()
        pool.apply_async(trivial, (i,)).get()
        lat.append(time.perf_counter() - t0)
    return lat


def warm(fn, pool):
    fn(pool, 200)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, default=20000)
    ap.add_argument("--latency", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=1, help="repeat each measurement, keep the median")
    a = ap.parse_args()

    results = {}

    def measure(name, make, close, tput, lat):
        pool = make()
        try:
            warm(tput, pool)
            tps = statistics.median(tput(pool, a.tasks) for _ in range(a.rounds))
            ls = lat(pool, a.latency) if lat else None
        finally:
            close(pool)
        results[name] = (tps, ls)
        line = "%-32s %9.0f tasks/s" % (name, tps)
        if ls:
            line += "   latency p50 %6.0f us  p99 %6.0f us" % (statistics.median(ls) * 1e6, percentile(ls, 99) * 1e6)
        print(line, flush=True)

    print("%d trivial tasks, 2 workers, Python %s, %d CPUs" % (a.tasks, sys.version.split()[0], os.cpu_count()))
    measure("cgpool.Executor(2).submit", lambda: cgpool.Executor(max_workers=2),
            lambda p: p.shutdown(), throughput_executor, latency_executor)
    measure("cgpool.Executor(2).map", lambda: cgpool.Executor(max_workers=2),
            lambda p: p.shutdown(), throughput_map, None)
    measure("ProcessPoolExecutor(2).submit", lambda: concurrent.futures.ProcessPoolExecutor(2),
            lambda p: p.shutdown(), throughput_executor, latency_executor)
    measure("ProcessPoolExecutor(2).map", lambda: concurrent.futures.ProcessPoolExecutor(2),
            lambda p: p.shutdown(), throughput_map, None)
    measure("multiprocessing.Pool(2).apply_async", lambda: multiprocessing.Pool(2),
            lambda p: (p.close(), p.join()), throughput_mp, latency_mp)

    ppe_tps, ppe_lat = results["ProcessPoolExecutor(2).submit"]
    cg_tps, cg_lat = results["cgpool.Executor(2).submit"]
    print()
    print("cgpool/ProcessPoolExecutor throughput (submit): %.2fx  (target >= 1, aim 2)" % (cg_tps / ppe_tps))
    print("cgpool/ProcessPoolExecutor throughput (map):    %.2fx" % (
        results["cgpool.Executor(2).map"][0] / results["ProcessPoolExecutor(2).map"][0]))
    print("cgpool/ProcessPoolExecutor median latency:      %.2fx  (target <= 1.5)" % (
        statistics.median(cg_lat) / statistics.median(ppe_lat)))
    print("cgpool/ProcessPoolExecutor p99 latency:         %.2fx" % (
        percentile(cg_lat, 99) / percentile(ppe_lat, 99)))
    print("cgpool/multiprocessing.Pool throughput:         %.2fx" % (
        cg_tps / results["multiprocessing.Pool(2).apply_async"][0]))


if __name__ == "__main__":
    main()
