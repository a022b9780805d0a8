"""An out-of-memory kill caught as ProcessError, after Deadpool's README.

Each worker's cgroup gets memory.max = 64 MiB; a task that allocates 512 MiB
is OOM-killed by the kernel, its future raises OutOfMemoryError (a
ProcessError), and the next task runs on a fresh worker:

    task 1: OutOfMemoryError (reason oom)
    task 2: 3

Memory limits need the cgroup v2 memory controller. On a host where it is
not available (a hybrid cgroup v1/v2 layout, like the project's build
machines) the supervisor refuses the limit; the example then says so and
exits 0:

    memory limits are not available here: <the supervisor's reason>
"""

import sys

import cgpool
import cgpool.deadpool as deadpool


def hog(n):
    block = bytearray(n)
    for i in range(0, n, 4096):
        block[i] = 1
    return len(block)


def add(a, b):
    return a + b


def main():
    try:
        exe = deadpool.Deadpool(max_workers=1, memory_max=64 << 20)
    except cgpool.SupervisorError as e:
        reason = [line for line in str(e).splitlines() if line.strip()][-1]
        print("memory limits are not available here: %s" % reason)
        return 0
    with exe:
        try:
            exe.submit(hog, 512 << 20).result()
            print("task 1: no error?")
        except deadpool.ProcessError as e:
            print("task 1: %s (reason %s)" % (type(e).__name__, e.reason))
        print("task 2: %s" % exe.submit(add, 1, 2).result())
    return 0


if __name__ == "__main__":
    sys.exit(main())
