"""What travels inside frames and pool environments between the Python client
and the Python worker: pickled calls and results, and the start-up data a
generic worker needs (the caller's ``__main__`` module and ``sys.path``, the
initializer and the finalizer).

Task payload: ``pickle((fn, args, kwargs))``. When the worker cannot get the
caller's start-up data from its environment (a shared server), the payload
is prefixed with ``b"P" + uint32 length + pickle(prep)`` so the worker can
import the caller's ``__main__`` before it unpickles the call.

Pool environment (set by the Executor in the pool's ``env``):

- ``CGPOOL_PY_MAIN``: base64 pickle of the prep dict (``sys_path``,
  ``sys_argv``, ``cwd``, ``main_path`` or ``main_name``), as
  multiprocessing's spawn sends it;
- ``CGPOOL_PY_INIT`` / ``CGPOOL_PY_FINAL``: base64 pickle of
  ``(callable, args)``;
- ``CGPOOL_PY_STDIO``: a unix socket path where the worker receives the
  caller's fds 1 and 2 (private supervisors only; see cgpool.server).
"""

import base64
import os
import pickle
import struct
import sys

PICKLE_PROTOCOL = pickle.HIGHEST_PROTOCOL
ENV_MAIN = "CGPOOL_PY_MAIN"
ENV_INIT = "CGPOOL_PY_INIT"
ENV_FINAL = "CGPOOL_PY_FINAL"
ENV_STDIO = "CGPOOL_PY_STDIO"
ENV_KEYS = (ENV_MAIN, ENV_INIT, ENV_FINAL, ENV_STDIO)
_PREP_MARK = b"P"
_LEN = struct.Struct(">I")


def dumps(obj):
    return pickle.dumps(obj, protocol=PICKLE_PROTOCOL)


def encode_call(fn, args, kwargs, prep_blob=None):
    """Pickle one call. Raises whatever pickling raises (PicklingError,
    TypeError, AttributeError) for an unpicklable function or argument."""
    body = pickle.dumps((fn, args, kwargs), protocol=PICKLE_PROTOCOL)
    if prep_blob:
        return _PREP_MARK + _LEN.pack(len(prep_blob)) + prep_blob + body
    return body


def split_call(payload):
    """Return ``(prep_blob or None, call_pickle)`` of a task payload."""
    if payload[:1] == _PREP_MARK:
        n = _LEN.unpack_from(payload, 1)[0]
        return payload[5:5 + n], payload[5 + n:]
    return None, payload


def preparation_data():
    """What a fresh interpreter needs to run functions of this process, the
    way ``multiprocessing.spawn.get_preparation_data`` gathers it: the
    parent's ``sys.argv``, ``sys.path`` and working directory, and how to
    re-import ``__main__`` (by module name for ``python -m``, by path for a
    script). Interactive sessions and package ``__main__`` modules are not
    re-imported."""
    d = {"sys_path": list(sys.path), "sys_argv": list(sys.argv)}
    try:
        d["cwd"] = os.getcwd()
    except OSError:
        pass
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    name = getattr(spec, "name", None)
    if name is not None:
        if name != "__main__" and not name.endswith(".__main__"):
            d["main_name"] = name
    else:
        path = getattr(main, "__file__", None)
        if path and os.path.exists(path):
            d["main_path"] = os.path.abspath(path)
    return d


def affinity(prep):
    """A short hex digest of what identifies the caller's program: its
    preparation data (``sys.path``, working directory, main module or path,
    ``sys.argv``) and the size and modification time of its main file. A
    shared supervisor binds a worker to the (peer uid, affinity) of its
    first task, so a worker prepared for one program never runs another's
    (docs/protocol.md, ``submit.affinity``)."""
    import hashlib  # not at the top: the worker imports this module too
    import json
    key = [prep.get("sys_path"), prep.get("cwd"), prep.get("main_name"), prep.get("main_path"),
           prep.get("sys_argv")]
    main = sys.modules.get("__main__")
    path = prep.get("main_path") or getattr(main, "__file__", None)
    if path:
        try:
            st = os.stat(path)
            key.append([st.st_size, st.st_mtime_ns])
        except OSError:
            pass
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:32]


def call_chunk(fn, chunk, star=True):
    """Run one chunk of ``Executor.map(..., chunksize=N)`` in a worker: the
    results of ``fn(*args)`` for each argument tuple, in order (as
    concurrent.futures.process._process_chunk), or of ``fn(arg)`` for each
    argument when *star* is False (a map over one iterable)."""
    if star:
        import itertools
        return list(itertools.starmap(fn, chunk))
    return list(map(fn, chunk))


def encode_env_blob(obj):
    return base64.b64encode(dumps(obj)).decode("ascii")


def decode_env_blob(text):
    return pickle.loads(base64.b64decode(text.encode("ascii")))
