"""`portscope watch` as a real subprocess, and real listeners for it to notice: shared by the watch tests.

A listener is a child process (a python3 holding a TCP socket on 0.0.0.0), so it has an owner watch can
name and a PID that changes on restart, as a daemon's does. Each test watches one port of its own
(`[scope] ports`), so the other listeners of this shared machine never enter it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

PORTS = range(31100, 31400)  # below the ephemeral range: a server's port
T = TypeVar("T")


def free_server_port(exclude: set[int] | None = None) -> int:
    """A port in PORTS that nothing holds now, on any address."""
    for port in PORTS:
        if exclude and port in exclude:
            continue
        with socket.socket() as s:
            try:
                s.bind(("0.0.0.0", port))
            except OSError:
                continue
            return port
    pytest.fail("no free port in 31100-31399")


def listen(port: int) -> subprocess.Popen[bytes]:
    """A process listening on 0.0.0.0:PORT until killed."""
    code = (
        "import socket,sys,time\n"
        "s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
        f"s.bind(('0.0.0.0',{port})); s.listen(); print('up', flush=True); time.sleep(300)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline() == b"up\n"
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.kill()
    proc.wait()


def wait_for(get: Callable[[], T], done: Callable[[T], bool], seconds: float = 20.0) -> T:
    """Poll `get` until `done` holds of its answer, or `seconds` pass; the last answer either way."""
    end = time.monotonic() + seconds
    value = get()
    while not done(value) and time.monotonic() < end:
        time.sleep(0.1)
        value = get()
    return value


def baseline(port: int, sinks: str = "", *, interval: float = 1, persist: float = 2, extra: str = "") -> str:
    """A portscope.toml watching PORT alone, nothing expected there (a listener is `listener_added`)."""
    return (
        f'[scope]\nports = "{port}"\n\n[watch]\ninterval = {interval}\npersist = {persist}\n{extra}\n{sinks}'
    )


def jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def kinds(alert: dict[str, Any]) -> list[tuple[str, int]]:
    return [(str(e["kind"]), int(e["port"])) for e in alert["events"]]


class Watches:
    """Starts `portscope watch` subprocesses and makes sure none outlives the test."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs  # each watch's stdout and stderr go to files here (a pipe nobody reads fills up)
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, file: Path, db: str, host: str = "t", *extra: str) -> subprocess.Popen[bytes]:
        env = dict(os.environ, NO_COLOR="1", LC_ALL="C.UTF-8")
        env.pop("PORTSCOPE_DB", None)
        cmd = [sys.executable, "-m", "portscope", "watch", "--file", str(file), "--db", db, "--host", host]
        n = len(self.procs)
        with open(self.logs / f"watch{n}.out", "wb") as out, open(self.logs / f"watch{n}.err", "wb") as err:
            proc = subprocess.Popen([*cmd, *extra], env=env, stdout=out, stderr=err)
        self.procs.append(proc)
        return proc

    def stderr(self, n: int = -1) -> str:
        """What watch number N (default the last started) wrote to stderr so far."""
        return (self.logs / f"watch{n % len(self.procs)}.err").read_text(errors="replace")

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
