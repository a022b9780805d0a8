"""Per-task options of ``submit``, checked before anything is sent: a bad
value is a TypeError or ValueError at the call, never an error in the pool.
The wire's ranges are docs/protocol.md's (a timeout is carried in
milliseconds and kept by the supervisor as int64 nanoseconds)."""

import math
import numbers
from collections.abc import Mapping

__all__ = ["SUBMIT_OPTIONS", "seconds_ms", "check_priority", "check_bytes", "check_env"]

# The wire's ranges (ipc.MaxDurationMS, ipc.MaxPriority): a value beyond
# them is refused by the supervisor as invalid, so it is refused here first.
MAX_MS = 1 << 40          # about 34 years
MAX_PRIORITY = (1 << 31) - 1

def seconds_ms(value, name):
    """Seconds (None or 0: none) as whole milliseconds, rounded up. Raises
    TypeError for what is not a real number, ValueError for a negative,
    infinite or too large one."""
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError("%s must be a number of seconds (int or float) or None, not %s %r"
                        % (name, type(value).__name__, value))
    if math.isnan(value) or math.isinf(value):
        raise ValueError("%s must be a finite number of seconds, not %r" % (name, value))
    if value < 0:
        raise ValueError("%s must be >= 0, not %r" % (name, value))
    if value == 0:
        return 0
    ms = int(math.ceil(value * 1000))
    if ms > MAX_MS:
        raise ValueError("%s of %r seconds is too large (at most %d)" % (name, value, MAX_MS // 1000))
    return max(1, ms)


def check_priority(value, name):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError("%s must be an int, not %s %r" % (name, type(value).__name__, value))
    if value < 0:
        raise ValueError("Parameter %s must be >= 0, but was %s" % (name, value))
    if value > MAX_PRIORITY:
        raise ValueError("%s %d is too large (at most %d)" % (name, value, MAX_PRIORITY))
    return int(value)


def check_bytes(value, name):
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError("%s must be an int (bytes) or None, not %s %r" % (name, type(value).__name__, value))
    if value < 0 or value > (1 << 63) - 1:
        raise ValueError("%s must be in 0..2**63-1 bytes, not %d" % (name, value))
    return int(value)


def check_env(value, name):
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise TypeError("%s must be a mapping of str to str, not %s" % (name, type(value).__name__))
    env = {}
    for k, v in value.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise TypeError("%s must map str to str; %r: %r is not" % (name, k, v))
        if not k or "=" in k or "\0" in k or "\0" in v:
            raise ValueError("%s: %r is not a valid environment variable (name non-empty, without '=' or NUL; "
                             "value without NUL)" % (name, k))
        env[k] = v
    return env


SUBMIT_OPTIONS = ("cgpool_timeout", "cgpool_priority", "cgpool_queue_timeout", "cgpool_memory_max",
                   "cgpool_env")
