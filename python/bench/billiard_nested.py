"""Issue 10's nested billiard pool, the way it was reported, in three homes.

    /usr/bin/python3 python/bench/billiard_nested.py [--runs 100] [--only plain,cgpool,ppe]

Runs ``with billiard.Pool(2) as pool: pool.map(abs, range(-10, 0))`` (the
pattern of the report: ``with`` ends in ``terminate()``) --runs times

- plain:  each run in its own fresh interpreter (no pool around it);
- cgpool: each run a task of cgpool.Executor(2);
- ppe:    each run a task of concurrent.futures.ProcessPoolExecutor(2)
          (its default start method),

and sorts every run by how long it took: ``ok`` (under 5 s), ``drained``
(5-45 s: billiard's worker waits up to 300 x 0.1 s in
``_ensure_messages_consumed`` for a counter that ``map`` credits to one
worker only, then exits), ``hung`` (not done after 45 s: a worker blocked
for good, e.g. in ``sem_wait`` on a queue lock its SIGTERMed sibling held).
A watchdog SIGKILLs a hung run's billiard workers so that the run ends.
A home that reaps or signals a task's grandchildren would show more
``hung`` runs than ``plain``.

Needs Debian's python3-billiard (run it with /usr/bin/python3) and the
cgpool binary ($CGPOOL_BIN or cgpool on PATH).
"""

import argparse
import concurrent.futures
import os
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

HUNG_AFTER = 45.0
RUN = ("import billiard\n"
       "with billiard.Pool(2) as pool:\n"
       "    assert sum(pool.map(abs, range(-10, 0))) == 55\n")


def _children():
    pids = []
    for name in os.listdir("/proc/self/task"):
        try:
            with open("/proc/self/task/%s/children" % name) as f:
                pids += [int(x) for x in f.read().split()]
        except OSError:
            pass
    return pids


def one_run():
    """One nested billiard pool, the way the issue reports it. Returns its
    seconds, or None if it hung: after HUNG_AFTER seconds a watchdog
    SIGKILLs the billiard workers, so that the run ends (billiard's join
    returns) and leaves nothing behind."""
    import threading
    done = threading.Event()
    hung = []

    def watchdog():
        if not done.wait(HUNG_AFTER):
            hung.append(True)
            for pid in _children():
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
    threading.Thread(target=watchdog, daemon=True).start()
    t0 = time.monotonic()
    try:
        exec(RUN, {})
    except Exception:
        if not hung:
            raise
    finally:
        done.set()
    return None if hung else time.monotonic() - t0


def classify(seconds):
    if seconds is None or seconds >= HUNG_AFTER:
        return "hung"
    return "ok" if seconds < 5 else "drained"


def plain(n):
    """Each run in a fresh interpreter (running one_run, so that a hung
    run's billiard workers are killed too, not left orphaned)."""
    out = []
    code = "import sys; sys.path.insert(0, %r); import billiard_nested as b; print(b.one_run())" % HERE
    for _ in range(n):
        r = subprocess.run([sys.executable, "-c", code], check=True, stdout=subprocess.PIPE,
                           stderr=subprocess.DEVNULL, text=True)
        last = r.stdout.strip().splitlines()[-1]
        out.append(None if last == "None" else float(last))
    return out


def in_pool(ex, n):
    return [f.result() for f in [ex.submit(one_run) for _ in range(n)]]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--only", default="plain,cgpool,ppe")
    args = ap.parse_args()
    import billiard  # noqa: F401  (fail early without it)
    homes = args.only.split(",")
    results = {}
    for home in homes:
        t0 = time.monotonic()
        if home == "plain":
            secs = plain(args.runs)
        elif home == "cgpool":
            import cgpool
            with cgpool.Executor(max_workers=2) as ex:
                secs = in_pool(ex, args.runs)
        elif home == "ppe":
            with concurrent.futures.ProcessPoolExecutor(2) as ex:
                secs = in_pool(ex, args.runs)
        else:
            sys.exit("unknown home %r" % home)
        kinds = [classify(s) for s in secs]
        results[home] = kinds
        print("%-7s %3d runs in %5.1fs: ok %3d, drained %2d, hung %2d" % (
            home, len(kinds), time.monotonic() - t0, kinds.count("ok"), kinds.count("drained"),
            kinds.count("hung")), flush=True)


if __name__ == "__main__":
    main()
