"""Callbacks instead of a list of futures, after Deadpool's README: memory
stays flat however many tasks go through, because nothing holds on to the
futures. Marks are collected by task number, so the output is always:

    ..x..x..x..x..x..x..
    14 results, 6 timeouts
"""

import threading
import time

import cgpool.deadpool as deadpool

marks = {}
lock = threading.Lock()


def work(seconds):
    time.sleep(seconds)
    return 1


def callback_for(i):
    def cb(fut):
        try:
            assert fut.result() == 1
            mark = "."
        except deadpool.TimeoutError:
            mark = "x"
        with lock:
            marks[i] = mark
    return cb


def main():
    with deadpool.Deadpool(max_workers=4) as exe:
        for i in range(20):
            exe.submit(work, 10.0 if i % 3 == 2 else 0.05, deadpool_timeout=1.0).add_done_callback(callback_for(i))
    line = "".join(marks[i] for i in range(20))
    print(line)
    print("%d results, %d timeouts" % (line.count("."), line.count("x")))


if __name__ == "__main__":
    main()
