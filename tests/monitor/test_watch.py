"""portscope watch as a real subprocess: a listener that appears, lasts and goes gives exactly one
alert each way; a restart shorter than the persistence time gives none; a SIGKILLed watch restarted on
the same store sends nothing twice. Alerts go through a real exec sink (a script appending what it gets).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

PORTS = range(31100, 31200)  # below the ephemeral range: a server's port


def _free_port() -> int:
    for port in PORTS:
        with socket.socket() as s:
            try:
                s.bind(("0.0.0.0", port))
            except OSError:
                continue
            return port
    pytest.skip("no free port in 31100-31199")


def _listen(port: int) -> subprocess.Popen[bytes]:
    code = (
        "import socket,sys,time\n"
        "s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
        f"s.bind(('0.0.0.0',{port})); s.listen(); print('up', flush=True); time.sleep(120)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline() == b"up\n"
    return proc


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.kill()
    proc.wait()


Setup = tuple[Path, int, Callable[[], subprocess.Popen[bytes]]]


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    """(alerts file, the test's port, start a watch). The baseline covers that one port only, so other
    listeners on this shared machine cannot enter the test."""
    port = _free_port()
    alerts = tmp_path / "alerts.jsonl"
    hook = tmp_path / "hook.py"
    hook.write_text(
        f"import sys\nopen({str(alerts)!r}, 'a').write(sys.stdin.read().replace(chr(10), ' ') + chr(10))\n"
    )
    baseline = tmp_path / "portscope.toml"
    baseline.write_text(
        f"""
[scope]
ports = "{port}"

[watch]
interval = 1
persist = 2

[[sink]]
type = "exec"
name = "hook"
command = [{json.dumps(sys.executable)}, {json.dumps(str(hook))}]
"""
    )
    db = tmp_path / "history.db"
    procs: list[subprocess.Popen[bytes]] = []

    def start() -> subprocess.Popen[bytes]:
        env = dict(os.environ, NO_COLOR="1", LC_ALL="C.UTF-8")
        cmd = [
            sys.executable,
            "-m",
            "portscope",
            "watch",
            "--file",
            str(baseline),
            "--db",
            str(db),
            "--host",
            "t",
        ]
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        procs.append(proc)
        return proc

    yield alerts, port, start
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()


def _alerts(path: Path) -> list[dict[str, object]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _wait_for(path: Path, count: int, seconds: float = 15.0) -> list[dict[str, object]]:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        got = _alerts(path)
        if len(got) >= count:
            return got
        time.sleep(0.1)
    return _alerts(path)


def _kinds(alert: dict[str, object]) -> list[tuple[str, int]]:
    return [(str(e["kind"]), int(e["port"])) for e in alert["events"]]  # type: ignore[union-attr, index]


def test_appear_and_go_each_alert_once(
    setup: Setup,
) -> None:
    alerts, port, start = setup
    start()
    time.sleep(1.0)
    listener = _listen(port)
    got = _wait_for(alerts, 1)
    assert [_kinds(a) for a in got] == [[("listener_added", port)]]
    assert "python" in json.dumps(got[0]) and str(port) in str(got[0]["subject"])
    _stop(listener)
    got = _wait_for(alerts, 2)
    assert [_kinds(a) for a in got] == [[("listener_added", port)], [("listener_removed", port)]]
    time.sleep(2.0)
    assert len(_alerts(alerts)) == 2  # nothing more


def test_a_short_restart_is_not_an_alert(
    setup: Setup,
) -> None:
    alerts, port, start = setup
    listener = _listen(port)
    start()
    assert [_kinds(a) for a in _wait_for(alerts, 1)] == [[("listener_added", port)]]
    _stop(listener)
    listener = _listen(port)  # back within well under the 1.5 s persistence time, with a new PID
    time.sleep(3.0)
    _stop(listener)
    assert [_kinds(a) for a in _wait_for(alerts, 2)] == [
        [("listener_added", port)],
        [("listener_removed", port)],
    ]


def test_sigkill_and_restart_sends_nothing_twice(
    setup: Setup,
) -> None:
    alerts, port, start = setup
    listener = _listen(port)
    try:
        watch = start()
        assert len(_wait_for(alerts, 1)) == 1
        watch.kill()
        watch.wait()
        start()
        time.sleep(3.0)  # several cycles of the new watch, the listener still there
        assert [_kinds(a) for a in _alerts(alerts)] == [[("listener_added", port)]]
    finally:
        _stop(listener)
