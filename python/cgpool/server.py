"""Starting and stopping a private ``cgpool serve`` for one Executor.

The supervisor runs with ``--exit-with-stdin --ready``: it prints
``ready <socket>`` once its socket listens, and when its stdin reaches end
of file it kills every worker and removes its cgroups and socket. The
Executor keeps the write end of that pipe for its lifetime, so if the Python
process dies (even by SIGKILL) the kernel closes the pipe and nothing is
left behind.

The supervisor's stdout and stderr (and so the workers' output, which the
supervisor sends to its stderr) share one pipe that a thread copies to this
process's fd 2, keeping the last few kilobytes for error reports.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

from cgpool.errors import SupervisorError

_TAIL = 16 * 1024


def find_binary():
    """The cgpool binary: ``$CGPOOL_BIN``, else ``cgpool`` on PATH. Raises
    SupervisorError naming both when neither exists."""
    path = os.environ.get("CGPOOL_BIN")
    if path:
        if not os.access(path, os.X_OK):
            raise SupervisorError("CGPOOL_BIN=%s is not an executable file" % path)
        return path
    path = shutil.which("cgpool")
    if path is None:
        raise SupervisorError(
            "the cgpool binary was not found: put cgpool on PATH or set CGPOOL_BIN "
            "(build it with `go build -o cgpool ./cmd/cgpool`)")
    return path


def go_duration(seconds):
    """Seconds as a Go duration string ("250ms")."""
    ms = int(round(seconds * 1000))
    return "%dms" % ms


class PrivateServer:
    """One ``cgpool serve`` process owned by one Executor.

    ``start`` blocks until the supervisor is ready (or raises SupervisorError
    with its output); ``close`` ends it and waits for it. Not thread-safe:
    its owner serialises calls.
    """

    def __init__(self, pool_config, binary=None, ready_timeout=60.0, log_level="warn"):
        self.binary = binary or find_binary()
        _sweep_dead_dirs()
        self.dir = tempfile.mkdtemp(prefix="cgpool-py-%d-" % os.getpid())
        self.socket = os.path.join(self.dir, "cgpool.sock")
        self.config_path = os.path.join(self.dir, "config.json")
        self.config = {"socket": self.socket, "log_level": log_level, "pools": [pool_config]}
        self.ready_timeout = ready_timeout
        self.proc = None
        self._tail = bytearray()
        self._tail_lock = threading.Lock()
        self._ready = threading.Event()
        self._ready_line = ("ready %s\n" % self.socket).encode()
        self._drain = None

    def start(self):
        with open(self.config_path, "w") as f:
            json.dump(self.config, f)
        r, w = os.pipe()
        try:
            self.proc = subprocess.Popen(
                [self.binary, "serve", "--config", self.config_path, "--exit-with-stdin", "--ready",
                 "--private-dir", self.dir],
                stdin=subprocess.PIPE, stdout=w, stderr=w, close_fds=True,
                start_new_session=True)
        except OSError as e:
            os.close(r)
            os.close(w)
            self._cleanup_dir()
            raise SupervisorError("could not start %s: %s" % (self.binary, e)) from e
        os.close(w)
        self._drain = threading.Thread(target=self._copy_output, args=(r,), name="cgpool-serve-output", daemon=True)
        self._drain.start()
        deadline = time.monotonic() + self.ready_timeout
        while not self._ready.wait(0.05):
            if self.proc.poll() is not None:
                self._ready.wait(0.5)  # let the output thread collect its last words
                break
            if time.monotonic() > deadline:
                break
        if not self._is_ready:
            self._fail_start()

    _is_ready = False

    def _fail_start(self):
        try:
            code = self.proc.wait(timeout=0.5 if self.proc.poll() is not None else 0.01)
        except subprocess.TimeoutExpired:
            code = None
        self.close(timeout=2.0)
        if code is None:
            what = "did not say ready within %gs" % self.ready_timeout
        else:
            what = "exited with status %s before it was ready" % code
        raise SupervisorError("cgpool serve %s:\n%s" % (what, self.output().strip() or "(no output)"))

    def _copy_output(self, fd):
        """Copy the supervisor's output to our fd 2, watch for the ready line
        and keep a tail for error messages. Output before the ready line is
        held back: on a failed start it goes into the exception instead.
        Ends at end of file (when the supervisor and everything that
        inherited its stderr are gone)."""
        held = b""
        try:
            while True:
                try:
                    data = os.read(fd, 65536)
                except InterruptedError:
                    continue
                if not data:
                    break
                if not self._is_ready:
                    held += data
                    i = held.find(self._ready_line)
                    if i >= 0 and (i == 0 or held[i - 1:i] == b"\n"):
                        data = held[:i] + held[i + len(self._ready_line):]
                        held = b""
                        self._is_ready = True
                        self._ready.set()
                    elif len(held) > (1 << 20):
                        data, held = held, b""
                    else:
                        continue
                self._keep(data)
                if data:
                    try:
                        os.write(2, data)
                    except OSError:
                        pass
        finally:
            os.close(fd)
            if held:
                self._keep(held)
            self._ready.set()

    def _keep(self, data):
        with self._tail_lock:
            self._tail += data
            if len(self._tail) > _TAIL:
                del self._tail[: len(self._tail) - _TAIL]

    def output(self):
        """The last output of the supervisor (and its workers), as text."""
        with self._tail_lock:
            return self._tail.decode("utf-8", "replace")

    def close_stdin(self):
        """Tell the supervisor to end everything (end of file on its stdin)."""
        p = self.proc
        if p is not None and p.stdin is not None and not p.stdin.closed:
            try:
                p.stdin.close()
            except OSError:
                pass

    def close(self, timeout=10.0):
        """End the supervisor (stdin EOF; SIGKILL after *timeout*), reap it,
        and remove its directory. Returns its exit status. Idempotent."""
        code = None
        if self.proc is not None:
            self.close_stdin()
            try:
                code = self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                code = self.proc.wait()
        if self._drain is not None and self._drain is not threading.current_thread():
            self._drain.join(timeout=2.0)
        self._cleanup_dir()
        return code

    def _cleanup_dir(self):
        shutil.rmtree(self.dir, ignore_errors=True)


def _sweep_dead_dirs():
    """Remove the directories of private supervisors whose Python process
    is gone and whose supervisor could not remove them either (it was
    killed with the cgroup slot of a task that nested it): cgpool-py-<pid>-*
    in the temporary directory, ours, with no live <pid>."""
    tmp = tempfile.gettempdir()
    try:
        names = os.listdir(tmp)
    except OSError:
        return
    for name in names:
        parts = name.split("-")
        if len(parts) < 4 or parts[0] != "cgpool" or parts[1] != "py" or not parts[2].isdigit():
            continue
        path = os.path.join(tmp, name)
        try:
            if os.lstat(path).st_uid != os.getuid():
                continue
            os.kill(int(parts[2]), 0)
            continue  # its owner still runs
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
        except OSError:
            continue
