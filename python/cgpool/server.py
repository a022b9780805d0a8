"""Starting and stopping a private ``cgpool serve`` for one Executor.

The supervisor runs with ``--exit-with-stdin --ready``: it prints
``ready <socket>`` once its socket listens, and when its stdin reaches end
of file it kills every worker and removes its cgroups and socket. The
Executor keeps the write end of that pipe for its lifetime, so if the Python
process dies (even by SIGKILL) the kernel closes the pipe and nothing is
left behind.

The supervisor's stdout and stderr share one pipe that a thread copies to
this process's fd 2, keeping the last few kilobytes for error reports.

The workers write to this process's own stdout and stderr, as the workers of
multiprocessing do: each worker, as it starts, connects to ``stdio.sock`` in
the supervisor's directory (``CGPOOL_PY_STDIO``) and receives this process's
fds 1 and 2 (SCM_RIGHTS), the same open files a forked child would inherit,
so that ``print`` in a task lands where the caller's output goes, in order
with it. A worker that cannot get them keeps the supervisor's stderr.

Fork: everything here belongs to the process that started it; ``abandon``
closes a forked child's copies of its descriptors, so that a child that
outlives its parent never keeps the supervisor alive.
"""

import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time

from cgpool.errors import SupervisorError
from cgpool.payload import ENV_STDIO

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
    """Seconds as a Go duration string ("250ms", "1500us"); a positive value
    is never rounded down to 0 (which the supervisor reads as "the
    default")."""
    us = int(round(seconds * 1e6))
    if seconds > 0:
        us = max(us, 1)
    if us % 1000 == 0:
        return "%dms" % (us // 1000)
    return "%dus" % us


class PrivateServer:
    """One ``cgpool serve`` process owned by one Executor.

    ``start`` blocks until the supervisor is ready (or raises SupervisorError
    with its output); ``close`` ends it and waits for it. Not thread-safe:
    its owner serialises calls.
    """

    def __init__(self, pool_config, binary=None, ready_timeout=60.0, log_level="warn", stdio=True):
        self.binary = binary or find_binary()
        _sweep_dead_dirs()
        self.pid = os.getpid()
        self.dir = tempfile.mkdtemp(prefix="cgpool-py-%d-" % os.getpid())
        self.socket = os.path.join(self.dir, "cgpool.sock")
        self.config_path = os.path.join(self.dir, "config.json")
        self._stdio = None
        # Variables the pool's environment must keep (the Executor adds
        # them to every set_env that replaces it).
        self.env = {ENV_STDIO: os.path.join(self.dir, "stdio.sock")} if stdio else {}
        pool_config = dict(pool_config, env=dict(pool_config.get("env") or {}, **self.env))
        self.config = {"socket": self.socket, "log_level": log_level, "pools": [pool_config]}
        self._stdin_w = -1
        self._out_r = -1
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
        env = self.config["pools"][0].get("env") or {}
        if ENV_STDIO in env:
            self._stdio = _StdioServer(env[ENV_STDIO])
        r, w = os.pipe()
        # Our end of the supervisor's stdin is a bare fd, not a file
        # object, so that a forked child can close its copy (abandon)
        # without a lock that another thread may have held at the fork.
        in_r, self._stdin_w = os.pipe()
        os.set_inheritable(self._stdin_w, False)
        try:
            self.proc = subprocess.Popen(
                [self.binary, "serve", "--config", self.config_path, "--exit-with-stdin", "--ready",
                 "--private-dir", self.dir],
                stdin=in_r, stdout=w, stderr=w, close_fds=True,
                start_new_session=True)
        except OSError as e:
            for fd in (r, w, in_r, self._stdin_w):
                os.close(fd)
            self._stdin_w = -1
            if self._stdio is not None:
                self._stdio.close()
            self._cleanup_dir()
            raise SupervisorError("could not start %s: %s" % (self.binary, e)) from e
        os.close(w)
        os.close(in_r)
        self._out_r = r
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
            self._out_r = -1
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
        fd, self._stdin_w = self._stdin_w, -1
        if fd >= 0:
            try:
                os.close(fd)
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
        if self._stdio is not None:
            self._stdio.close()
        self._cleanup_dir()
        return code

    def abandon(self):
        """In a forked child: close the child's copies of our descriptors
        (the supervisor's stdin, its output pipe, the stdio socket) and
        nothing else. Takes no lock."""
        for name in ("_stdin_w", "_out_r"):
            fd = getattr(self, name)
            setattr(self, name, -1)
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        if self._stdio is not None:
            self._stdio.abandon()
        if self.proc is not None:
            # Not this process's child: never wait for it here, nor warn
            # (Popen.__del__) that it still runs.
            self.proc.returncode = 0
        self._drain = None

    def _cleanup_dir(self):
        shutil.rmtree(self.dir, ignore_errors=True)


class _StdioServer:
    """Hands this process's stdout and stderr to each worker that asks
    (a unix socket in the private directory, mode 0700: only this user can
    connect). One daemon thread accepts; each answer is one sendmsg."""

    def __init__(self, path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(64)
        self._closed = False
        self._thread = threading.Thread(target=self._serve, name="cgpool-stdio", daemon=True)
        self._thread.start()

    def _serve(self):
        while not self._closed:
            try:
                conn, _ = self.sock.accept()
            except InterruptedError:
                continue
            except OSError:
                return
            try:
                fds = [fd for fd in (1, 2) if _fd_open(fd)]
                if len(fds) == 2:
                    socket.send_fds(conn, [b"12"], fds)
            except OSError:
                pass
            finally:
                conn.close()

    def close(self):
        self._closed = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes accept() (Linux)
        except OSError:
            pass
        self.sock.close()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=2.0)

    def abandon(self):
        self._closed = True
        try:
            os.close(self.sock.detach())
        except OSError:
            pass


def _fd_open(fd):
    try:
        os.fstat(fd)
        return True
    except OSError:
        return False


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
