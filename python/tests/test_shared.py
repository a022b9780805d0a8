"""Clients of a shared ``cgpool serve`` (``Executor(socket=..., pool=...)``):
what identifies a client's program travels with every submit (issue 9,
"A shared daemon's Python workers mix clients' programs")."""

import json
import os
import pickle
import re
import socket
import struct
import sys
import textwrap
import threading
import unittest

import support
import cgpool
from cgpool import payload
from cgpool.server import PrivateServer


class FakeSupervisor:
    """Just enough of the client protocol: welcome, a result of [None, None]
    for every submit (a chunk of two), stats; records the submit headers."""

    def __init__(self, path):
        self.path = path
        self.headers = []
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(1)
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def frame(self, h, p=b""):
        b = json.dumps(h).encode()
        return struct.pack(">II", len(b), len(p)) + b + p

    def serve(self):
        conn, _ = self.sock.accept()
        f = conn.makefile("rb")
        while True:
            prefix = f.read(8)
            if len(prefix) < 8:
                break
            hl, pl = struct.unpack(">II", prefix)
            h = json.loads(f.read(hl))
            f.read(pl)
            if h["type"] == "hello":
                conn.sendall(self.frame({"type": "welcome", "version": 1, "pools": ["py"]}))
            elif h["type"] == "submit":
                self.headers.append(h)
                conn.sendall(self.frame({"type": "result", "id": h["id"]}, pickle.dumps([None, None])))
            elif h["type"] == "stats":
                conn.sendall(self.frame({"type": "stats_reply", "id": h["id"], "stats": {}}))
        conn.close()
        self.sock.close()


class Affinity(unittest.TestCase):
    def test_every_submit_carries_the_programs_affinity(self):
        d = support.tmpdir(self)
        fake = FakeSupervisor(os.path.join(d, "s.sock"))
        with cgpool.Executor(socket=fake.path, pool="py") as ex:
            ex.submit(len, "x").result(timeout=10)
            ex.submit(len, "x", cgpool_timeout=2, cgpool_priority=1).result(timeout=10)
            list(ex.map(len, ["a", "b"]))
            list(ex.map(len, ["a", "b", "c"], chunksize=2))
        fake.thread.join(10)
        want = payload.affinity(payload.preparation_data())
        self.assertRegex(want, r"^[0-9a-f]{32}$")
        self.assertEqual(len(fake.headers), 6)
        for h in fake.headers:
            self.assertEqual(h.get("affinity"), want, h)
            self.assertEqual(h["pool"], "py")
            self.assertTrue(h["hold"])
        self.assertEqual((fake.headers[1]["timeout_ms"], fake.headers[1]["priority"]), (2000, 1))

    def test_affinity_tells_programs_apart(self):
        base = {"sys_path": ["/a"], "cwd": "/w", "main_path": __file__, "sys_argv": ["a.py"]}
        a = payload.affinity(base)
        self.assertEqual(a, payload.affinity(dict(base)))
        for change in ({"sys_argv": ["a.py", "1"]}, {"cwd": "/v"}, {"sys_path": ["/b"]},
                       {"main_path": os.path.join(os.path.dirname(__file__), "support.py")}):
            self.assertNotEqual(payload.affinity(dict(base, **change)), a, change)
        self.assertTrue(re.fullmatch(r"[\x21-\x7e]{1,256}", a))


PROGRAM = """
import sys, cgpool

def fb(i):
    return %r

if __name__ == "__main__":
    with cgpool.Executor(socket=sys.argv[1], pool="py") as ex:
        print(sorted(set(ex.map(fb, range(20)))))
"""


class SharedWorkerPool(unittest.TestCase):
    # The supervisor binds a worker to the (peer uid, affinity) of its
    # first task (issue 9): without that, the second program's tasks would
    # run in a worker that imported the first program, and read 'A'.
    def test_two_programs_share_a_worker_pool(self):
        support.require_cgpool()
        cfg = {"name": "py", "kind": "worker", "command": [sys.executable, "-m", "cgpool.worker"],
               "max_workers": 2, "env": {"PYTHONPATH": os.environ["PYTHONPATH"]}}
        if os.geteuid() == 0:
            cfg["allow_root"] = True  # a root daemon's worker pool needs it said
        server = PrivateServer(cfg, stdio=False)
        server.start()
        try:
            d = support.tmpdir(self)
            outs = []
            for name in ("a", "b"):
                os.mkdir(os.path.join(d, name))
                path = os.path.join(d, name, name + ".py")
                with open(path, "w") as f:
                    f.write(textwrap.dedent(PROGRAM % name.upper()))
                r = support.run_python(path, server.socket, timeout=120)
                self.assertEqual(r.returncode, 0, r.stderr)
                outs.append(r.stdout.strip())
            self.assertEqual(outs, ["['A']", "['B']"])
        finally:
            server.close()


if __name__ == "__main__":
    unittest.main()
