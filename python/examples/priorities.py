"""Priorities, after Deadpool's README: lower deadpool_priority runs sooner.

One worker is kept busy while 5 tasks of priority 10 ('.') and 5 of priority
0 ('!') are queued, interleaved; they then run highest priority first, so
the completion order printed is always:

    !!!!!.....
"""

import threading
import time

import cgpool.deadpool as deadpool


def work(symbol):
    time.sleep(0.01)
    return symbol


def main():
    done = []
    lock = threading.Lock()

    def record(fut):
        with lock:
            done.append(fut.result())

    with deadpool.Deadpool(max_workers=1, max_backlog=100) as exe:
        busy = exe.submit(time.sleep, 0.5)
        while not busy.running():
            time.sleep(0.01)
        for _ in range(5):
            exe.submit(work, ".", deadpool_priority=10).add_done_callback(record)
            exe.submit(work, "!", deadpool_priority=0).add_done_callback(record)
    print("".join(done))


if __name__ == "__main__":
    main()
