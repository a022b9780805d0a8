"""Replacement after a kill, and memory at rest, for cgpool.Executor.

A busy worker is SIGKILLed from outside while a trivial task waits in the
queue; the time from the kill to that task's result is the replacement
time (Deadpool: about 47 ms with its forkserver; the standard pool is
broken for good). Also prints the resident memory of the supervisor and
of each worker at rest.

    python3 python/bench/replace.py [--rounds 20]
"""

import argparse
import os
import signal
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import cgpool  # noqa: E402


def sleeper():
    time.sleep(60)


def noop():
    return None


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=20)
    args = ap.parse_args()
    times = []
    with cgpool.Executor(max_workers=1) as ex:
        ex.submit(noop).result()
        for _ in range(args.rounds):
            time.sleep(0.3)  # one kill at a time: the spare worker is ready again
            busy = ex.submit(sleeper)
            while busy.pid is None:
                time.sleep(0.001)
            queued = ex.submit(noop)
            t0 = time.perf_counter()
            os.kill(busy.pid, signal.SIGKILL)
            queued.result(timeout=30)
            times.append(time.perf_counter() - t0)
            try:
                busy.result(timeout=30)
            except Exception:
                pass
        time.sleep(0.5)
        sup = ex._server.proc.pid if ex._server is not None else None
        workers = [w["pid"] for p in [ex.status()] for w in p.get("workers", []) if w.get("pid")]
        times.sort()
        print("kill of a busy worker -> queued task done on its replacement, %d rounds:" % len(times))
        print("  p50 %.1f ms, p90 %.1f ms, max %.1f ms (target: 30 ms; Deadpool 47 ms)"
              % (statistics.median(times) * 1e3, times[int(len(times) * 0.9) - 1] * 1e3, times[-1] * 1e3))
        if sup:
            print("memory at rest: supervisor %d KiB RSS" % rss_kib(sup))
        for pid in workers:
            print("memory at rest: worker %d: %d KiB RSS" % (pid, rss_kib(pid)))


if __name__ == "__main__":
    main()
