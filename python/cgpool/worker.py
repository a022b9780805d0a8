"""The Python worker program: ``python -m cgpool.worker``.

``cgpool serve`` starts it inside a worker slot's cgroup with the worker
protocol socket on fd 3 (docs/protocol.md section 4). It imports the caller's
``__main__`` (as multiprocessing's spawn does, under the name
``__mp_main__``), runs the initializer with the pool's environment (and so
the propagated environment) already in place, says hello, and then runs one
task at a time: a task's payload is ``pickle((fn, args, kwargs))`` and its
answer is the pickled result, or the pickled exception with the worker-side
traceback. Anything that cannot be pickled fails that task with a clear
message; the worker keeps serving.

It is not daemonic: tasks may start subprocesses and their own cgpool
Executor (the supervisor tells a nested one its slot through
``CGPOOL_SLOT_CGROUP``, which stays in the environment). Timeouts and kills
are the supervisor's: it kills the slot's cgroup, so nothing here watches the
clock.
"""

import atexit
import collections
import ctypes
import gc
import os
import pickle
import runpy
import select
import socket
import sys
import threading
import traceback
import types

from cgpool import payload as _payload
from cgpool import protocol as _proto

PROTOCOL_FD = 3
MAX_MESSAGE = 8 * 1024
MAX_TRACEBACK = 40 * 1024
_old_main_modules = []

# The caller's main module while this worker imports it (else None): a pool
# started then is refused (cgpool.executor._check_not_importing_main), so a
# script without an ``if __name__ == "__main__":`` guard can never start
# pools recursively.
importing_main = None


def _fixup_main_from_name(mod_name):
    current = sys.modules["__main__"]
    if mod_name == "__main__" or mod_name.endswith(".__main__"):
        return
    if getattr(getattr(current, "__spec__", None), "name", None) == mod_name:
        return
    import importlib.util
    spec = importlib.util.find_spec(mod_name)
    if spec is None or spec.loader is None or not hasattr(spec.loader, "get_code"):
        raise ImportError("cannot find the main module %s" % mod_name)
    code = spec.loader.get_code(mod_name)
    module = types.ModuleType("__mp_main__")
    module.__dict__.update(__spec__=spec, __file__=spec.origin, __cached__=spec.cached,
                           __loader__=spec.loader, __package__=spec.parent)
    _run_main(current, module, code)


def _fixup_main_from_path(main_path):
    current = sys.modules["__main__"]
    if getattr(current, "__file__", None) == main_path:
        return
    if not os.path.isfile(main_path):
        # A directory or zip application: runpy knows those.
        _old_main_modules.append(current)
        module = types.ModuleType("__mp_main__")
        module.__dict__.update(runpy.run_path(main_path, run_name="__mp_main__"))
        sys.modules["__main__"] = sys.modules["__mp_main__"] = module
        return
    with open(main_path, "rb") as f:
        source = f.read()
    code = compile(source, main_path, "exec")
    module = types.ModuleType("__mp_main__")
    module.__dict__.update(__file__=main_path, __cached__=None, __loader__=None, __package__=None,
                           __spec__=None)
    _run_main(current, module, code)


def _run_main(current, module, code):
    """Run the caller's main module's code as ``__mp_main__`` (as
    multiprocessing.spawn does) and make it ``__main__``. Unlike runpy, what
    the code defined before an exception stops it is kept: a script that
    starts its pool at the top level, without an ``if __name__ ==
    "__main__":`` guard, is stopped there (the pool is refused) and its
    functions defined above that line still run as tasks. The exception is
    raised on."""
    _old_main_modules.append(current)
    module.__dict__["__builtins__"] = __builtins__
    sys.modules["__main__"] = sys.modules["__mp_main__"] = module
    exec(code, module.__dict__)


class _State:
    prepared = False
    finalizer = None
    main_error = None  # what importing the caller's main module raised


def prepare(data):
    """Apply a caller's preparation data once, as multiprocessing.spawn's
    prepare does: its ``sys.argv``, ``sys.path`` (the caller's entries
    first, then this interpreter's own that it lacks) and working
    directory, then import its main module as ``__mp_main__``. If that
    import raises, the error is kept (``_State.main_error``): a task that
    then cannot be unpickled fails with it, the cause, rather than with
    "Can't get attribute"."""
    global importing_main
    if _State.prepared:
        return
    _State.prepared = True
    if "sys_argv" in data:
        sys.argv = list(data["sys_argv"])
    if "sys_path" in data:
        theirs = list(data["sys_path"])
        seen = set(theirs)
        sys.path[:] = theirs + [p for p in sys.path if p not in seen]
    cwd = data.get("cwd")
    if cwd and os.path.isdir(cwd):
        try:
            os.chdir(cwd)
        except OSError:
            pass
    main = data.get("main_name") or data.get("main_path")
    if not main:
        return
    importing_main = main
    try:
        if data.get("main_name"):
            _fixup_main_from_name(data["main_name"])
        else:
            _fixup_main_from_path(data["main_path"])
    except BaseException as e:
        # Kept: a task whose function cannot be found then fails with this,
        # the cause. A refused pool (no main guard) is said there, once, by
        # the caller's future; anything else is worth a line here too.
        _State.main_error = e
        from cgpool.errors import MainGuardError
        if not isinstance(e, MainGuardError):
            print("cgpool.worker %d: importing the main module %s failed: %s"
                  % (os.getpid(), main, describe(e)[0]), file=sys.stderr)
    finally:
        importing_main = None


def _short(text, limit):
    if len(text) <= limit:
        return text
    half = limit // 2
    return text[:half] + "\n... (%d characters cut) ...\n" % (len(text) - 2 * half) + text[-half:]


def describe(exc):
    """``(message, traceback)`` texts of an exception, bounded in size."""
    try:
        message = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    except BaseException:
        message = type(exc).__name__
    try:
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    except BaseException:
        tb = message
    return _short(message, MAX_MESSAGE), _short(tb, MAX_TRACEBACK)


def error_frame(tid, exc):
    """The task_error frame for an exception a task raised. One that cannot
    be pickled travels as a TaskError (a ProcessError) with Deadpool's text,
    the original and why; one that pickles is sent as it is (whether the
    caller can unpickle it is the caller's to find out, as in Deadpool)."""
    from cgpool.errors import TaskError, unpicklable_exception_text
    message, tb = describe(exc)
    try:
        blob = _payload.dumps(exc)
    except BaseException as pe:
        why = describe(pe)[0]
        blob = _payload.dumps(TaskError(unpicklable_exception_text(message, tb, why), tb))
        message = "%s (the exception could not be pickled: %s)" % (message, why)
    if len(blob) > _proto.DEFAULT_MAX_PAYLOAD:
        blob = _payload.dumps(TaskError(message + " (the exception was too large to send back)", tb))
    return _encode({"type": "task_error", "id": tid, "message": message, "traceback": tb}, blob)


def _encode(h, blob=b""):
    try:
        return _proto.encode_frame(h, blob)
    except _proto.FrameError:
        # Only an oversized header can fail here: cut the texts harder.
        h = dict(h)
        for k in ("message", "traceback"):
            if k in h:
                h[k] = _short(h[k], 2048)
        return _proto.encode_frame(h, blob)


def run_task(h, data):
    """Run one task; return the reply frame's bytes."""
    tid = h.get("id", 0)
    env = h.get("env")
    saved = None
    if env:
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
    try:
        try:
            prep, body = _payload.split_call(data)
            if prep is not None and not _State.prepared:
                prepare(pickle.loads(prep))
            fn, args, kwargs = pickle.loads(body)
        except BaseException as e:
            # What the import of the caller's main raised explains why its
            # function cannot be found here: say that instead.
            return error_frame(tid, _State.main_error if _State.main_error is not None else e)
        del data, body
        result = fn(*args, **kwargs)
    except BaseException as e:
        return error_frame(tid, e)
    finally:
        if saved:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        _flush_stdio()
    try:
        blob = _payload.dumps(result)
    except BaseException as e:
        pe = pickle.PicklingError(
            "the result of %s (a %s) could not be pickled: %s"
            % (_name(fn), type(result).__qualname__, "".join(traceback.format_exception_only(type(e), e)).strip()))
        return error_frame(tid, pe)
    del result
    if len(blob) > _proto.DEFAULT_MAX_PAYLOAD:
        return error_frame(tid, pickle.PicklingError(
            "the result of %s is too large to send back (%d bytes > %d)"
            % (_name(fn), len(blob), _proto.DEFAULT_MAX_PAYLOAD)))
    head = b'{"type":"result","id":%d}' % tid
    return _proto.PREFIX.pack(len(head), len(blob)) + head + blob


def _name(fn):
    return getattr(fn, "__qualname__", None) or repr(fn)


def _flush_stdio():
    for f in (sys.stdout, sys.stderr):
        try:
            if f is not None:
                f.flush()
        except Exception:
            pass


def rss_bytes():
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def trim():
    """Give freed memory back to the system: gc, then glibc's malloc_trim(0)
    where it exists."""
    gc.collect()
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (AttributeError, OSError):
        pass


def _take_stdio(path):
    """Write to the caller's own stdout and stderr: it hands them over on a
    unix socket (cgpool.server's _StdioServer), the same open files a
    forked child inherits. Keeps the supervisor's on any failure."""
    try:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.settimeout(5.0)
            s.connect(path)
            _, fds, _, _ = socket.recv_fds(s, 16, 2)
        finally:
            s.close()
    except (OSError, AttributeError):
        return
    try:
        if len(fds) == 2:
            _flush_stdio()
            os.dup2(fds[0], 1)
            os.dup2(fds[1], 2)
    finally:
        for fd in fds:
            os.close(fd)


def _startup():
    """Take the caller's stdio, import its main, run the initializer;
    return the initializer's error text ("" if none). Start-up data leaves
    the environment, so that a nested Executor started by a task does not
    inherit this pool's initializer."""
    errors = []
    blobs = {k: os.environ.pop(k, None) for k in _payload.ENV_KEYS}
    if blobs[_payload.ENV_STDIO]:
        _take_stdio(blobs[_payload.ENV_STDIO])
    try:
        if blobs[_payload.ENV_MAIN]:
            prepare(_payload.decode_env_blob(blobs[_payload.ENV_MAIN]))
    except BaseException as e:
        errors.append("reading the preparation data: %s" % describe(e)[0])
        traceback.print_exc()
    try:
        if blobs[_payload.ENV_FINAL]:
            _State.finalizer = _payload.decode_env_blob(blobs[_payload.ENV_FINAL])
    except BaseException as e:
        errors.append("loading the finalizer: %s" % describe(e)[0])
        traceback.print_exc()
    try:
        if blobs[_payload.ENV_INIT]:
            fn, args = _payload.decode_env_blob(blobs[_payload.ENV_INIT])
            fn(*(args or ()))
    except BaseException as e:
        errors.append("initializer: %s" % describe(e)[0])
        print("cgpool.worker %d: initializer failed:" % os.getpid(), file=sys.stderr)
        traceback.print_exc()
    _flush_stdio()
    return "; ".join(errors)


def _finish():
    """Graceful exit: finalizer, atexit handlers, then leave at once (threads
    a task left behind must not keep the slot alive)."""
    if _State.finalizer is not None:
        try:
            fn, args = _State.finalizer
            fn(*(args or ()))
        except BaseException:
            print("cgpool.worker %d: finalizer failed:" % os.getpid(), file=sys.stderr)
            traceback.print_exc()
    try:
        atexit._run_exitfuncs()
    except BaseException:
        traceback.print_exc()
    _flush_stdio()
    os._exit(0)


def _watch_supervisor(fd):
    """Exit at once when the supervisor goes away, even in the middle of a
    task that never reads the socket (the supervisor died without killing
    our cgroup). POLLRDHUP fires on the peer's close only, not on data."""
    rdhup = getattr(select, "POLLRDHUP", 0x2000)

    def watch():
        p = select.poll()
        p.register(fd, rdhup)
        while True:
            try:
                events = p.poll()
            except InterruptedError:
                continue
            except OSError:
                return
            if any(ev & (rdhup | select.POLLHUP | select.POLLERR | select.POLLNVAL) for _, ev in events):
                _flush_stdio()
                os._exit(0)

    threading.Thread(target=watch, name="cgpool-supervisor-watch", daemon=True).start()


def serve(sock):
    """Speak the worker protocol on *sock* until exit or end of stream."""
    init_error = _startup()
    hello = {"type": "hello", "version": _proto.PROTOCOL_VERSION, "pid": os.getpid()}
    if init_error:
        hello["init_error"] = _short(init_error, MAX_MESSAGE)
    sock.sendall(_encode(hello))
    _watch_supervisor(sock.fileno())
    # One recv usually holds the whole task; FrameBuffer parses the Go
    # encoder's task header without the JSON parser. 64 KiB reads stay
    # below malloc's mmap threshold.
    buf = _proto.FrameBuffer()
    pending = collections.deque()
    recv = sock.recv
    while True:
        while not pending:
            chunk = recv(65536)
            if not chunk:
                _flush_stdio()
                os._exit(0)  # the supervisor is gone
            buf.feed(chunk)
            pending.extend(buf.frames())
            buf.compact()
        h, data = pending.popleft()
        t = h["type"]
        if t == "task":
            reply = run_task(h, data)
            del data
            sock.sendall(reply)
            del reply
        elif t == "trim":
            trim()
            sock.sendall(_encode({"type": "trimmed", "rss": rss_bytes()}))
        elif t == "exit":
            _finish()
        else:
            print("cgpool.worker %d: unexpected message %r" % (os.getpid(), t), file=sys.stderr)
            _flush_stdio()
            os._exit(2)


def main(fd=PROTOCOL_FD):
    try:
        sock = socket.socket(fileno=fd)
    except OSError as e:
        print("cgpool.worker: fd %d is not a socket (%s): this program is started by cgpool serve"
              % (fd, e), file=sys.stderr)
        return 2
    os.set_inheritable(sock.fileno(), False)
    try:
        serve(sock)
    except (OSError, EOFError, _proto.FrameError) as e:
        print("cgpool.worker %d: protocol socket failed: %s" % (os.getpid(), e), file=sys.stderr)
        _flush_stdio()
        os._exit(3)
    return 0


if __name__ == "__main__":
    # Run the imported module's main, so that its names live in cgpool.worker
    # and not in a second copy called __main__ (which the caller's main
    # module is about to replace).
    import cgpool.worker as _worker
    sys.exit(_worker.main())
