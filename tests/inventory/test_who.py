"""portscope who: fuser + ps in one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import datetime

from tests.helpers import portscope, start_sockhost


def test_who_names_every_holder_with_details() -> None:
    started = time.time()
    host = start_sockhost([{"kind": "fork-listen", "addr": "127.0.0.1"}])
    try:
        port = host.report["sockets"][0]["port"]
        proc = portscope("who", f"{port}/tcp", "--json")
        assert proc.returncode == 0, proc.stderr
        holders = json.loads(proc.stdout)
        assert [h["pid"] for h in holders] == sorted([host.pid, *host.report["children"]])
        # fuser, the real tool, agrees on who holds it
        fuser = subprocess.run(["fuser", "-n", "tcp", str(port)], capture_output=True, text=True)
        assert {int(p) for p in fuser.stdout.split()} == {h["pid"] for h in holders}
        parent = next(h for h in holders if h["pid"] == host.pid)
        assert "sockhost.py" in parent["cmdline"]
        assert parent["exe"] == os.path.realpath(sys.executable)
        assert parent["user"] and parent["uid"] == os.geteuid()
        assert abs(datetime.fromisoformat(parent["started"]).timestamp() - started) < 30
        assert [(s["local_port"], s["state"]) for s in parent["sockets"]] == [(port, "LISTEN")]
    finally:
        host.stop()


def test_who_human_output_and_nothing_holds() -> None:
    host = start_sockhost([{"kind": "tcp-listen", "addr": "127.0.0.1"}])
    try:
        port = host.report["sockets"][0]["port"]
        proc = portscope("who", str(port))
        assert proc.returncode == 0
        assert f"pid {host.pid}, user " in proc.stdout and f"tcp LISTEN 127.0.0.1:{port} -> *" in proc.stdout
    finally:
        host.stop()
    gone = portscope("who", f"{port}/tcp")
    assert gone.returncode == 1
    assert f"nothing holds {port}/tcp" in gone.stdout
    assert portscope("who", f"{port}/tcp", "--json").stdout.strip() == "[]"


def test_who_udp_only_ignores_tcp() -> None:
    host = start_sockhost([{"kind": "tcp-listen", "addr": "127.0.0.1"}])
    try:
        port = host.report["sockets"][0]["port"]
        assert portscope("who", f"{port}/udp").returncode == 1
        assert portscope("who", str(port), "-t").returncode == 0
    finally:
        host.stop()
