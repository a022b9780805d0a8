"""Celery throughput and lost-worker latency: cgpool's pool beside prefork.

    /usr/bin/python3 python/bench/celery_throughput.py [--tasks 5000] [--rounds 3] [--kills 5] [--max-lost-ms 100] [--min-ratio 1]

Starts a private redis-server (broker and result backend) and, for each
pool in turn (prefork, cgpool, prefork, cgpool, ...), a real ``celery
worker -c 2`` of the test app (python/tests/celery_tasks.py):

- throughput: N trivial tasks (``trivial(i)``, results stored) are queued
  while the worker consumes another queue; then ``add_consumer`` points it
  at them, and the time from that command to the last result's
  ``date_done`` (the worker's own clock) gives tasks/s. Each worker first
  runs a warm-up batch, so that both pools start with warm workers;
- lost worker: a running task's process is SIGKILLed from outside, K times;
  the time from the kill to the client seeing FAILURE (WorkerLostError),
  median and range.

The machine is shared and noisy: compare within one run. The last lines
give the medians and the ratio cgpool / prefork. Needs Celery, redis-py
and redis-server (Debian: python3-celery python3-redis redis-server; run
with /usr/bin/python3) and the cgpool binary ($CGPOOL_BIN, or it is built).
"""

import argparse
import datetime
import os
import signal
import statistics
import sys
import tempfile
import time
import shutil

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))

import support  # noqa: E402

# Results are stored (the trivial task's return value), but not STARTED
# states: one write per task, as most deployments run.
BENCH_ENV = {"CGPOOL_TEST_CONF": '{"task_track_started": false}'}
import celery_support as cs  # noqa: E402


def wait_results(redis_client, ids, timeout):
    """Poll the backend until every result is stored; return the latest
    date_done (UTC datetime)."""
    import json
    keys = ["celery-task-meta-" + i for i in ids]
    deadline = time.monotonic() + timeout
    latest = None
    todo = list(keys)
    while todo:
        if time.monotonic() > deadline:
            raise SystemExit("only %d of %d results after %gs" % (len(keys) - len(todo), len(keys), timeout))
        left = []
        for start in range(0, len(todo), 1000):
            chunk = todo[start:start + 1000]
            for k, v in zip(chunk, redis_client.mget(chunk)):
                if v is None:
                    left.append(k)
                    continue
                meta = json.loads(v)
                if meta["status"] in ("PENDING", "STARTED", "RECEIVED"):
                    left.append(k)
                    continue
                if meta["status"] != "SUCCESS":
                    raise SystemExit("a task ended %s: %s" % (meta["status"], meta.get("result")))
                d = datetime.datetime.fromisoformat(meta["date_done"])
                if latest is None or d > latest:
                    latest = d
        todo = left
        if todo:
            time.sleep(0.2)
    return latest


def sender(url):
    """A client app without a result backend: it only publishes, so the
    client does not subscribe to thousands of result channels (the workers
    still store every result)."""
    from celery import Celery
    return Celery("bench-sender", broker=url, backend=None)


def throughput(t, redis, pool, n, workdir, rnd):
    idle_q = "idle-%s-%d" % (pool, rnd)
    bench_q = "bench-%s-%d" % (pool, rnd)
    w = cs.CeleryWorker(redis.url, pool, workdir, queues=idle_q, node="bench-%s-%d" % (pool, rnd),
                        args=["-l", "WARNING"], env=BENCH_ENV)
    app = sender(redis.url)
    name = t.trivial.name
    try:
        w.wait_ready()
        with app.producer_or_acquire() as producer:
            warm = [app.send_task(name, (i,), queue=idle_q, producer=producer).id for i in range(200)]
        wait_results(redis.client, warm, 120)
        ids = []
        with app.producer_or_acquire() as producer:
            for i in range(n):
                ids.append(app.send_task(name, (i,), queue=bench_q, producer=producer).id)
        t0 = time.time()
        replies = app.control.add_consumer(bench_q, destination=[w.hostname], reply=True, timeout=10)
        if not replies:
            raise SystemExit("the %s worker did not answer add_consumer" % pool)
        last = wait_results(redis.client, ids, 600)
        start = datetime.datetime.utcfromtimestamp(t0)
        secs = (last - start).total_seconds()
        return n / secs, secs
    finally:
        w.stop()
        app.close()


def lost_latency(t, redis, pool, kills, workdir):
    q = "lost-%s" % pool
    w = cs.CeleryWorker(redis.url, pool, workdir, queues=q, node="lost-%s" % pool, args=["-l", "WARNING"])
    times = []
    try:
        w.wait_ready()
        for i in range(kills):
            tag = "%s-%d" % (pool, i)
            res = t.sleepy.apply_async((60, tag), queue=q)
            pid = int(cs.wait_file(os.path.join(workdir, "pid-" + tag)))
            t0 = time.monotonic()
            os.kill(pid, signal.SIGKILL)
            try:
                res.get(timeout=60)
                raise SystemExit("the killed task succeeded?")
            except Exception as e:
                if type(e).__name__ != "WorkerLostError":
                    raise SystemExit("the killed task ended with %r, not WorkerLostError" % e)
            times.append(time.monotonic() - t0)
    finally:
        w.stop()
    return times


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", type=int, default=5000, help="trivial tasks per throughput run (default 5000)")
    ap.add_argument("--rounds", type=int, default=3, help="throughput runs per pool, alternating (default 3)")
    ap.add_argument("--kills", type=int, default=5, help="workers killed per pool for the latency (default 5)")
    ap.add_argument("--max-lost-ms", type=float, default=0,
                    help="exit 1 if cgpool's median lost-worker latency is not under this (.ci/run: 100)")
    ap.add_argument("--min-ratio", type=float, default=0,
                    help="exit 1 if the median throughput ratio cgpool / prefork is below this (.ci/run: 1)")
    args = ap.parse_args()
    reason = cs.celery_reason()
    if reason:
        raise SystemExit(reason)
    if support.cgpool_binary() is None:
        raise SystemExit("no cgpool binary: %s" % support.binary_reason())
    redis = cs.Redis()
    os.environ["CGPOOL_TEST_BROKER"] = redis.url
    workdir = tempfile.mkdtemp(prefix="cgpool-celery-bench-")
    os.environ["CGPOOL_TEST_DIR"] = workdir
    import celery_tasks as t
    rates = {"prefork": [], "cgpool": []}
    lost = {}
    try:
        print("%d trivial tasks through celery worker -c 2, redis broker and backend; %d rounds"
              % (args.tasks, args.rounds))
        for rnd in range(args.rounds):
            for pool in ("prefork", "cgpool"):
                rate, secs = throughput(t, redis, pool, args.tasks, workdir, rnd)
                rates[pool].append(rate)
                print("  round %d  %-8s %8.0f tasks/s  (%.2f s)" % (rnd + 1, pool, rate, secs), flush=True)
        for pool in ("prefork", "cgpool"):
            lost[pool] = lost_latency(t, redis, pool, args.kills, workdir)
            ms = [x * 1000 for x in lost[pool]]
            print("  lost worker %-8s median %7.1f ms  (min %.1f, max %.1f; %d kills)"
                  % (pool, statistics.median(ms), min(ms), max(ms), len(ms)), flush=True)
    finally:
        import gc
        gc.collect()
        redis.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    mp, mc = statistics.median(rates["prefork"]), statistics.median(rates["cgpool"])
    print()
    print("| pool | tasks/s (median of %d) | lost worker reported after (median of %d) |" % (args.rounds, args.kills))
    print("|---|---|---|")
    for pool, m in (("prefork", mp), ("cgpool", mc)):
        print("| %s | %.0f | %.1f ms |" % (pool, m, statistics.median(lost[pool]) * 1000))
    print()
    print("throughput ratio cgpool / prefork: %.2f" % (mc / mp))
    print("lost-worker latency: cgpool %.1f ms, prefork %.1f ms"
          % (statistics.median(lost["cgpool"]) * 1000, statistics.median(lost["prefork"]) * 1000))
    if args.max_lost_ms and statistics.median(lost["cgpool"]) * 1000 >= args.max_lost_ms:
        raise SystemExit("FAIL: cgpool's lost worker took %.1f ms (median), not under %g ms"
                         % (statistics.median(lost["cgpool"]) * 1000, args.max_lost_ms))
    if args.min_ratio and mc / mp < args.min_ratio:
        raise SystemExit("FAIL: cgpool's throughput is %.2f of prefork's (median of %d rounds), below %g"
                         % (mc / mp, args.rounds, args.min_ratio))


if __name__ == "__main__":
    main()
