"""The shipped systemd unit (packaging/systemd/portscope-watch.service): systemd accepts it, its
ExecStart is a valid watch invocation, its store is where watch looks by default as root, and the
capabilities it leaves root are enough to name the owner of another user's listener.

systemd itself does not run in CI's container (no PID 1 systemd), so the unit is checked by
`systemd-analyze verify` and its command run as the unit would run it: through setpriv with the same
bounding set and no_new_privs.
"""

from __future__ import annotations

import configparser
import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from portscope.monitor.store import default_path
from tests.helpers import start_sockhost
from tests.monitor.watchrun import baseline, free_server_port

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "packaging" / "systemd" / "portscope-watch.service"
INSTALLED = "/opt/portscope/.venv/bin/portscope"  # where the README installs it
VENV_PORTSCOPE = str(Path(sys.executable).parent / "portscope")


def unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=True, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # systemd keys are case-sensitive
    parser.read_string(UNIT.read_text())
    return parser


def exec_start() -> list[str]:
    argv = shlex.split(unit()["Service"]["ExecStart"])
    assert argv[0] == INSTALLED, "README and unit must agree on the install path"
    return [VENV_PORTSCOPE, *argv[1:]]


def test_systemd_accepts_the_unit(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    assert analyze is not None, "systemd-analyze comes with the systemd package (scripts/apt-test-deps.sh)"
    copy = tmp_path / UNIT.name  # verify checks that ExecStart's program exists: point it at ours
    copy.write_text(UNIT.read_text().replace(INSTALLED, VENV_PORTSCOPE))
    proc = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == "", proc.stderr  # not even a warning


def test_the_units_store_is_the_default_one_for_root() -> None:
    service = unit()["Service"]
    env = dict(item.split("=", 1) for item in shlex.split(service["Environment"]))
    assert env["PORTSCOPE_DB"] == "/var/lib/" + service["StateDirectory"] + "/history.db"
    if os.geteuid() == 0:
        assert str(default_path()) == env["PORTSCOPE_DB"]


@pytest.mark.root
def test_exec_start_with_the_units_capabilities_sees_another_users_listener(tmp_path: Path) -> None:
    service = unit()["Service"]
    assert service["User"] == "root" and service["NoNewPrivileges"] == "yes"
    caps = [c.removeprefix("CAP_").lower() for c in service["CapabilityBoundingSet"].split()]
    setpriv = ["setpriv", "--no-new-privs", "--bounding-set", ",".join(["-all", *(f"+{c}" for c in caps)])]
    setpriv += ["--inh-caps", "-all", "--"]

    port = free_server_port()
    host = start_sockhost([{"kind": "tcp-listen", "addr": "0.0.0.0", "port": port}], user="nobody")
    try:
        file = tmp_path / "portscope.toml"
        file.write_text(baseline(port, persist=0))
        # The unit's command, plus what a test must change: one cycle, this file, a store in tmp_path.
        argv = [
            *setpriv,
            *exec_start(),
            "--once",
            "--json",
            "--file",
            str(file),
            "--db",
            str(tmp_path / "h.db"),
        ]
        env = dict(os.environ, NO_COLOR="1")
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env)
        assert proc.returncode == 1, proc.stderr  # the listener is not in the baseline
        report = json.loads(proc.stdout)
        (diff,) = report["differences"]
        assert diff["kind"] == "unexpected" and diff["port"] == port
        assert diff["actual"]["user"] == "nobody"
        assert diff["actual"]["process"] == "python3" or diff["actual"]["process"].startswith("python")
        assert diff["actual"]["pids"] == [host.pid]  # the owner was seen, not hidden
        assert "not shown" not in proc.stderr
    finally:
        host.stop()
