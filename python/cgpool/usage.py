"""What a task cost, as the supervisor read it from the task's cgroup.

``future.usage`` is a :class:`Usage` once the future is done (whatever its
outcome: a result, a task error, a timeout, a process error, a cancel while
running), or None: before that, for a task that never started, and when the
supervisor sent none. docs/protocol.md §3.4 ("usage") says which figures
are exact.
"""

import dataclasses
import json
from typing import Optional

__all__ = ["Usage"]


@dataclasses.dataclass(frozen=True)
class Usage:
    """One task's cost, everything in its slot cgroup counted (children,
    grandchildren, daemons that detached with ``setsid``).

    - ``wall``: seconds on the worker (an exec command's start to exit, a
      task's start to its answer);
    - ``cpu_user``, ``cpu_system``: CPU seconds of the slot during the
      task (``cpu.stat``; ``cpu`` is their sum);
    - ``memory_peak``: bytes (``memory.peak``), None where the supervisor's
      kernel has no memory controller or no memory.peak; its
      ``memory_peak_scope`` is ``"task"`` (reached during this task) or
      ``"slot"`` (the slot's high-water mark from before it: an upper
      bound, on kernels that cannot reset the counter);
    - ``pids_peak`` / ``pids_peak_scope``: the same for ``pids.peak``
      (tasks, threads included);
    - ``io_read_bytes``, ``io_write_bytes``: bytes read and written on block
      devices (``io.stat``), None without the io controller.
    """

    wall: float
    cpu_user: float
    cpu_system: float
    memory_peak: Optional[int] = None
    memory_peak_scope: Optional[str] = None
    pids_peak: Optional[int] = None
    pids_peak_scope: Optional[str] = None
    io_read_bytes: Optional[int] = None
    io_write_bytes: Optional[int] = None

    @property
    def cpu(self):
        """CPU seconds, user plus system."""
        return self.cpu_user + self.cpu_system

    @classmethod
    def from_wire(cls, obj):
        """The Usage of a terminal outcome's ``usage`` member, or None if it
        is absent or not an object; *obj* may also be the object's raw JSON
        bytes (the frame parser's fast path keeps them so). A figure of the
        wrong type is read as absent (None), never raised: usage is a
        report, not a result."""
        if isinstance(obj, (bytes, bytearray)):
            try:
                obj = json.loads(obj)
            except ValueError:
                return None
        if not isinstance(obj, dict):
            return None

        def num(name):
            v = obj.get(name)
            if isinstance(v, bool) or not isinstance(v, int):
                return None
            return max(v, 0)

        def scope(name, value):
            if value is None:
                return None
            s = obj.get(name)
            return s if isinstance(s, str) and s else "slot"

        def seconds(name):
            v = num(name)
            return (v or 0) / 1e6

        mem, pids = num("memory_peak"), num("pids_peak")
        return cls(
            wall=seconds("wall_us"),
            cpu_user=seconds("cpu_user_us"),
            cpu_system=seconds("cpu_system_us"),
            memory_peak=mem,
            memory_peak_scope=scope("memory_peak_scope", mem),
            pids_peak=pids,
            pids_peak_scope=scope("pids_peak_scope", pids),
            io_read_bytes=num("io_read_bytes"),
            io_write_bytes=num("io_write_bytes"),
        )
