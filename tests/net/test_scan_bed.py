"""check and scan against the network test bed: every status must equal the bed's ground truth.

The bed (tests/bed) is built from what is known to be there: which daemon listens where, which
nftables rule drops or rejects what, which address has no route. Nothing here is derived from a
scanner's own output.
"""

from __future__ import annotations

import json

import pytest

from portscope.net.engine import ScanOptions, scan_tcp, scan_udp
from portscope.net.udp_payloads import payload_for
from tests.bed.bed import TestBed
from tests.helpers import portscope

pytestmark = pytest.mark.root

# IPv6 admin-prohibited on the bed's veth: the first ICMPv6 error arrives while connect() still
# holds the socket lock and the kernel drops it (TcpExtLockDroppedIcmps); the kernel's own SYN
# retransmission at 1 s gets the error. A 2 s timeout lets that happen; real links are slower than
# the lock, so they do not need it.
TIMEOUT = 2.0


def _truth(bed: TestBed, proto: str, limit_filtered: int = 5) -> dict[int, tuple[str, str]]:
    """The bed's table for one protocol, with only a few of the 1000 dropped ports."""
    rows = {port: v for (p, port), v in bed.truth.items() if p == proto}
    extra = [p for p in bed.filtered_range if p in rows][limit_filtered:]
    for p in extra:
        del rows[p]
    return rows


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_tcp_engine_matches_the_bed(bed: TestBed, family: str) -> None:
    addr = bed.addr4 if family == "ipv4" else bed.addr6
    truth = _truth(bed, "tcp")
    results = list(scan_tcp([("bed", addr)], sorted(truth), ScanOptions(timeout=TIMEOUT)))
    got = {r.port: (r.status, r.reason) for r in results}
    assert got == truth
    for r in results:
        if r.status in ("open", "closed"):
            assert r.latency_ms is not None
        if r.reason == "no-response":
            assert r.latency_ms is None


def test_udp_engine_matches_the_bed(bed: TestBed) -> None:
    truth = _truth(bed, "udp")
    for addr in (bed.addr4, bed.addr6):
        results = list(scan_udp([("bed", addr)], sorted(truth), ScanOptions(timeout=1.0), payload_for))
        assert {r.port: (r.status, r.reason) for r in results} == truth


def test_unreachable_addresses(bed: TestBed) -> None:
    results = list(scan_tcp([("u4", bed.unreachable4), ("u6", bed.unreachable6)], [22, 80], ScanOptions()))
    assert len(results) == 4
    assert {(r.status, r.reason) for r in results} == {("unreachable", "host-unreach")}
    assert all(r.error for r in results)


def test_syn_scan_matches_the_bed(bed: TestBed) -> None:
    truth = _truth(bed, "tcp")
    for addr in (bed.addr4, bed.addr6):
        opts = ScanOptions(timeout=TIMEOUT, syn=True)
        got = {r.port: (r.status, r.reason) for r in scan_tcp([("bed", addr)], sorted(truth), opts)}
        assert got == truth


def test_full_range_scan_of_the_bed_host(bed: TestBed) -> None:
    """All 65535 ports through the CLI, in worker processes: every port as the bed says."""
    proc = portscope("scan", bed.addr4, "-p", "1-65535", "--timeout", str(TIMEOUT), "--json")
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert len(rows) == 65535
    wrong = [
        (r["port"], r["status"], r["reason"])
        for r in rows
        if (r["status"], r["reason"]) != bed.expected("tcp", r["port"])
    ]
    assert wrong == []


def test_dropped_ports_are_filtered_after_retries(bed: TestBed) -> None:
    ports = f"{bed.filtered_range.start}-{bed.filtered_range.stop - 1}"
    proc = portscope("scan", bed.addr4, "-p", ports, "--timeout", "1", "--retries", "2", "--json")
    rows = json.loads(proc.stdout)
    assert proc.returncode == 1  # nothing open
    assert len(rows) == 1000
    assert {(r["status"], r["reason"], r["latency_ms"]) for r in rows} == {("filtered", "no-response", None)}


@pytest.mark.parametrize(
    ("port", "status", "words"),
    [
        (80, "open", "handshake completed"),
        (81, "closed", "nothing listens"),
        (8082, "closed", "firewall rejects"),
        (8081, "filtered", "drops the packets"),
        (8083, "filtered", "administratively prohibited"),
    ],
)
def test_check_explains_each_status(bed: TestBed, port: int, status: str, words: str) -> None:
    proc = portscope("check", bed.addr4, str(port), "--timeout", str(TIMEOUT))
    assert proc.returncode == (0 if status == "open" else 1)
    line = next(x for x in proc.stdout.splitlines() if x.startswith(bed.addr4))
    assert status in line.split()
    assert words in proc.stdout


def test_check_udp_and_unreachable(bed: TestBed) -> None:
    proc = portscope("check", bed.addr4, "53", "54", "5353", "--udp", "--timeout", "1", "--json")
    got = {r["port"]: r["status"] for r in json.loads(proc.stdout)}
    assert got == {53: "open", 54: "closed", 5353: "open|filtered"}
    assert proc.returncode == 1
    proc = portscope("check", f"{bed.unreachable4}:22", "--json")
    (r,) = json.loads(proc.stdout)
    assert (r["status"], r["reason"]) == ("unreachable", "host-unreach") and proc.returncode == 1
    assert "unreachable" in portscope("check", f"{bed.unreachable4}:22").stdout


def test_scan_of_two_hosts_with_an_exclusion(bed: TestBed) -> None:
    """A block with the bed in it: only the bed's address answers; the excluded one is not probed."""
    proc = portscope(
        "scan",
        f"{bed.local4}-{bed.addr4.rsplit('.', 1)[1]}",
        "-p",
        "22,80,81",
        "--exclude",
        bed.local4,
        "--json",
    )
    rows = json.loads(proc.stdout)
    assert {r["address"] for r in rows} == {bed.addr4}
    assert {r["port"]: r["status"] for r in rows} == {22: "open", 80: "open", 81: "closed"}
