"""Timeouts, after Deadpool's README: '.' for a result, 'x' for a timeout.

Deadpool's version sleeps a random time and prints in completion order; here
the durations are fixed (every third task would take 10 s, the others 0.1 s)
and the marks are printed in submission order, so the output is always:

    ..x..x..x.
"""

import time

import cgpool.deadpool as deadpool


def work(seconds):
    time.sleep(seconds)
    return 1


def main():
    with deadpool.Deadpool(max_workers=4) as exe:
        futs = [exe.submit(work, 10.0 if i % 3 == 2 else 0.1, deadpool_timeout=1.0) for i in range(10)]
        marks = []
        for fut in futs:
            try:
                assert fut.result() == 1
                marks.append(".")
            except deadpool.TimeoutError:
                marks.append("x")
    print("".join(marks))


if __name__ == "__main__":
    main()
