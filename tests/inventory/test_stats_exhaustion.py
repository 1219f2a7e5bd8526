"""portscope stats: TIME_WAIT and ephemeral-port exhaustion, made real in a network namespace whose
net.ipv4.ip_local_port_range (a per-namespace sysctl) is narrowed to 64 ports, and the system-wide
file handle limit read from the real /proc."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from portscope.inventory.stats import Stats, findings
from portscope.registry import EphemeralRange
from tests.helpers import portscope, ss, start_sockhost

LOW, HIGH, SIZE = 40000, 40063, 64
SERVER = 8080  # outside the range: only the clients' sides take ephemeral ports


@pytest.fixture
def narrow() -> Iterator[str]:
    """A fresh namespace with lo up, 64 ephemeral ports and no TIME_WAIT reuse (so every closed client
    keeps its port, and the counts are exact); deleted even when the test fails."""
    name = f"pstest-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        run = ["ip", "netns", "exec", name]
        subprocess.run([*run, "ip", "link", "set", "lo", "up"], check=True)
        subprocess.run([*run, "sysctl", "-qw", f"net.ipv4.ip_local_port_range={LOW} {HIGH}"], check=True)
        subprocess.run([*run, "sysctl", "-qw", "net.ipv4.tcp_tw_reuse=0"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False)


def _settled(netns: str, state: str, local_port: int | None, want: int) -> list[dict[str, Any]]:
    """ss's sockets in STATE (on LOCAL_PORT), once there are WANT of them (closing takes a moment)."""
    deadline = time.monotonic() + 10
    while True:
        rows = [
            r
            for r in ss(netns=netns)
            if r["state"] == state and (local_port is None or r["local_port"] == local_port)
        ]
        if len(rows) >= want or time.monotonic() > deadline:
            return rows
        time.sleep(0.05)


def _stats(netns: str) -> tuple[int, dict[str, Any], dict[str, str]]:
    proc = portscope("stats", "--json", netns=netns)
    assert proc.returncode in (0, 1), proc.stderr
    st = json.loads(proc.stdout)
    assert st["ephemeral_range"] == {
        "low": LOW,
        "high": HIGH,
        "size": SIZE,
        "source": "net.ipv4.ip_local_port_range",
    }
    return proc.returncode, st, {f["code"]: f["message"] for f in st["findings"]}


@pytest.mark.root  # ip netns add
def test_time_wait_exhaustion(narrow: str) -> None:
    host = start_sockhost([{"kind": "time-wait", "count": 40, "port": SERVER}], netns=narrow)
    try:
        waiting = _settled(narrow, "TIME_WAIT", None, 40)
        assert len(waiting) == 40 and all(LOW <= r["local_port"] <= HIGH for r in waiting), waiting
        rc, st, found = _stats(narrow)
        assert rc == 1  # a finding
        assert st["time_wait"] == st["time_wait_ephemeral"] == 40
        assert st["ephemeral_ports_in_use"] == 40
        assert found["time_wait_exhaustion"].startswith("40 TIME_WAIT sockets against 64 ephemeral ports")
        # a TIME_WAIT still holds its 4-tuple: the one destination has used 40 of the 64 ports
        assert st["busiest_destination"] == {"address": "127.0.0.1", "port": SERVER, "connections": 40}
        assert found["ephemeral_exhaustion"] == (
            f"40 connections to 127.0.0.1:{SERVER} use 62% of the 64 ephemeral ports ({LOW}-{HIGH}) "
            "available per destination"
        )
    finally:
        host.stop()


@pytest.mark.root  # ip netns add
def test_server_side_time_wait_takes_no_ephemeral_port(narrow: str) -> None:
    # A server that closes first (HTTP/1.0, an idle timeout) keeps its TIME_WAITs on its own port. Its
    # 40 clients come from 40 addresses: from one, a client reusing a port would recycle the server's
    # TIME_WAIT for that 4-tuple, and fewer than the 32 that used to raise the warning would remain.
    spec = {"kind": "time-wait", "count": 40, "port": SERVER, "server_first": True, "many_clients": True}
    host = start_sockhost([spec], netns=narrow)
    try:
        waiting = _settled(narrow, "TIME_WAIT", SERVER, 40)
        assert len(waiting) == 40 and len({r["remote_address"] for r in waiting}) == 40
        _, st, found = _stats(narrow)
        assert st["time_wait"] == 40 and st["time_wait_ephemeral"] == 0
        assert "time_wait_exhaustion" not in found and "ephemeral_exhaustion" not in found
    finally:
        host.stop()


@pytest.mark.root  # ip netns add
@pytest.mark.parametrize(("count", "fires"), [(31, False), (32, True), (48, True)])
def test_ephemeral_exhaustion_by_established_connections(narrow: str, count: int, fires: bool) -> None:
    host = start_sockhost([{"kind": "connections", "count": count, "port": SERVER}], netns=narrow)
    try:
        theirs = [r for r in ss(netns=narrow) if r["state"] == "ESTABLISHED"]
        assert len(theirs) == 2 * count  # each connection's two ends
        rc, st, found = _stats(narrow)
        assert st["sockets"]["tcp"]["ESTABLISHED"] == 2 * count
        assert st["ephemeral_ports_in_use"] == count
        assert st["busiest_destination"] == {"address": "127.0.0.1", "port": SERVER, "connections": count}
        assert st["time_wait"] == 0 and "time_wait_exhaustion" not in found
        if fires:
            assert rc == 1
            assert found["ephemeral_exhaustion"].startswith(
                f"{count} connections to 127.0.0.1:{SERVER} use {count * 100 // SIZE}% of the 64 ephemeral ports"
            )
        else:
            assert "ephemeral_exhaustion" not in found
    finally:
        host.stop()


# fs.file-max is one number for the whole machine (no namespace has its own): provoking the finding
# means lowering it under what every other user of this shared machine has open, and their next
# open() without CAP_SYS_ADMIN fails with ENFILE. So: the decision on this machine's real numbers.


def _file_nr() -> tuple[int, int]:
    allocated, _unused, maximum = Path("/proc/sys/fs/file-nr").read_text().split()
    return int(allocated), int(maximum)


def _bare(system_fds: tuple[int, int]) -> Stats:
    return Stats(
        counts={"tcp": {}, "udp": {}},
        families={},
        ephemeral=EphemeralRange(LOW, HIGH, "test"),
        ephemeral_ports_in_use=0,
        time_wait=0,
        time_wait_ephemeral=0,
        busiest_destination=None,
        close_wait=[],
        fd_pressure=[],
        system_fds=system_fds,
    )


def test_system_fd_limit_decision_on_this_machines_numbers() -> None:
    allocated, maximum = _file_nr()
    assert maximum == int(Path("/proc/sys/fs/file-max").read_text())
    codes = [f.code for f in findings(_bare((allocated, maximum)))]
    assert ("system_fd_limit" in codes) == (allocated >= 0.8 * maximum)
    # the same allocation against a file-max it fills to 80% (warn) and to just under (no warning)
    at = allocated * 5 // 4
    msg = [f.message for f in findings(_bare((allocated, at))) if f.code == "system_fd_limit"]
    assert msg == [f"{allocated} of {at} file handles allocated system-wide (fs.file-max)"]
    assert not [f for f in findings(_bare((allocated, at + 2))) if f.code == "system_fd_limit"]


def test_stats_reports_the_system_file_handles() -> None:
    before = _file_nr()
    proc = portscope("stats", "--json")
    after = _file_nr()
    st = json.loads(proc.stdout)
    assert st["system_fds"]["max"] == before[1] == after[1]
    low, high = sorted((before[0], after[0]))
    slack = max(200, high // 10)  # other programs open and close files meanwhile
    assert low - slack <= st["system_fds"]["allocated"] <= high + slack
    fired = any(f["code"] == "system_fd_limit" for f in st["findings"])
    assert fired == (st["system_fds"]["allocated"] >= 0.8 * st["system_fds"]["max"])
