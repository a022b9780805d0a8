"""Shared helpers for cgpool's Python tests.

- puts ``python/`` and this folder on sys.path (and PYTHONPATH, for child
  processes), so the tests run without installing the package;
- ``cgpool_binary()`` finds or builds the Go binary (``$CGPOOL_BIN``, else
  ``go build -o <tmp>/cgpool ./cmd/cgpool`` in the repository root) and
  exports CGPOOL_BIN for Executors and child processes;
- ``skip_or_fail(reason)``: skip with a printed reason, except inside the VM
  (CGPOOL_VM=1), where a skip is a failure;
- ``wait_until(pred, timeout)``: poll with a deadline and report the last
  state seen, never sleep and hope.
"""

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
PYDIR = os.path.dirname(HERE)
REPO = os.path.dirname(PYDIR)
IN_VM = os.environ.get("CGPOOL_VM") == "1"

for p in (HERE, PYDIR):
    if p not in sys.path:
        sys.path.insert(0, p)
_pp = os.environ.get("PYTHONPATH", "")
if PYDIR not in _pp.split(os.pathsep):
    os.environ["PYTHONPATH"] = os.pathsep.join(x for x in (PYDIR, HERE, _pp) if x)

_binary = None
_reason = None
_tried = False


def cgpool_binary():
    """Path of a cgpool binary, or None (then ``binary_reason()`` says why)."""
    global _binary, _reason, _tried
    if _tried:
        return _binary
    _tried = True
    env = os.environ.get("CGPOOL_BIN")
    if env:
        if os.access(env, os.X_OK):
            _binary = env
        else:
            _reason = "CGPOOL_BIN=%s is not executable" % env
        return _binary
    if not os.path.isdir(os.path.join(REPO, "cmd", "cgpool")):
        _reason = "cmd/cgpool does not exist yet in %s: nothing to build" % REPO
        return None
    go = shutil.which("go")
    if go is None:
        _reason = "go is not on PATH: cannot build cmd/cgpool (set CGPOOL_BIN)"
        return None
    tmp = tempfile.mkdtemp(prefix="cgpool-test-bin-")
    atexit.register(shutil.rmtree, tmp, True)
    out = os.path.join(tmp, "cgpool")
    try:
        r = subprocess.run([go, "build", "-o", out, "./cmd/cgpool"], cwd=REPO,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=900)
    except subprocess.TimeoutExpired:
        _reason = "go build ./cmd/cgpool timed out"
        return None
    if r.returncode != 0:
        _reason = "go build ./cmd/cgpool failed:\n" + r.stdout.decode(errors="replace")[-3000:]
        return None
    _binary = out
    os.environ["CGPOOL_BIN"] = out
    return _binary


def binary_reason():
    return _reason


def skip_or_fail(reason):
    """Skip the current test (or class, from setUpClass) with a printed
    reason; inside the VM (CGPOOL_VM=1) fail instead."""
    if IN_VM:
        raise AssertionError("a skip inside the VM (CGPOOL_VM=1) is a failure: " + reason)
    print("\nSKIP: " + reason, file=sys.stderr)
    raise unittest.SkipTest(reason)


def require_cgpool():
    if cgpool_binary() is None:
        skip_or_fail("integration test needs the cgpool binary: " + (_reason or "unknown reason"))
    return _binary


def wait_until(pred, timeout=10.0, interval=0.02, what="condition"):
    """Poll pred() until it returns a truthy value; return it. On timeout
    raise AssertionError with the last value seen."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        last = pred()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError("%s not reached within %gs; last seen: %r" % (what, timeout, last))
        time.sleep(interval)


def cgroup2_mount():
    """Where the cgroup v2 hierarchy is mounted (None if nowhere)."""
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                parts = line.split()
                sep = parts.index("-")
                if parts[sep + 1] == "cgroup2":
                    return parts[4]
    except (OSError, ValueError, IndexError):
        pass
    return None


def leaf_dir(leaf):
    """The directory of a task's cgroup as reported in ``running.leaf``."""
    if not leaf:
        return None
    if leaf.startswith("/sys/fs/cgroup"):
        return leaf
    mount = cgroup2_mount() or "/sys/fs/cgroup"
    return os.path.join(mount, leaf.lstrip("/"))


def pids_with_env(marker):
    """Pids of live processes whose environment contains *marker*
    (``NAME=value``), zombies excluded."""
    want = marker.encode() + b"\0"
    found = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/environ" % d, "rb") as f:
                env = f.read() + b"\0"
            with open("/proc/%s/stat" % d, "rb") as f:
                state = f.read().rsplit(b")", 1)[1].split()[0]
        except OSError:
            continue
        if state != b"Z" and (b"\0" + want in b"\0" + env):
            found.append(int(d))
    return found


def pid_alive(pid):
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
    except OSError:
        return False
    return state != b"Z"


def run_python(code_or_path, *args, timeout=60, env=None, input=None):
    """Run a Python script file (or code with ``-c``) in a fresh interpreter;
    return the CompletedProcess (text)."""
    e = dict(os.environ)
    if env:
        e.update(env)
    argv = [sys.executable, code_or_path] if os.path.exists(code_or_path) else [sys.executable, "-c", code_or_path]
    return subprocess.run(argv + list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, timeout=timeout, env=e, input=input)


def read_text(path):
    """The file's text, or None if it does not exist (yet)."""
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError:
        return None


def remove_cgroup_tree(path, timeout=10.0):
    """Remove a cgroup directory tree (deepest first) once no process is
    left in it. Only for groups a test itself caused to exist."""
    if not path or not os.path.isdir(path):
        return

    def empty():
        for d, _, files in os.walk(path):
            if "cgroup.procs" in files:
                if read_text(os.path.join(d, "cgroup.procs")).strip():
                    return False
        return True
    wait_until(empty, timeout=timeout, what="cgroup %s empty" % path)
    for d, _, _ in sorted(os.walk(path), key=lambda t: -t[0].count(os.sep)):
        os.rmdir(d)


def tmpdir(testcase):
    """A temporary directory removed when *testcase* ends."""
    d = tempfile.mkdtemp(prefix="cgpool-test-")
    testcase.addCleanup(shutil.rmtree, d, True)
    return d
