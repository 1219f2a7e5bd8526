"""The scan engine against real loopback sockets: TCP open/closed, UDP answered/refused/silent, workers.

Filtered and unreachable need a firewall and routes: those are checked against the network test bed
(tests/net/test_scan_bed.py). Here the ground truth is the sockets the test itself opens.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from portscope.net.engine import ScanOptions, scan_tcp, scan_udp
from portscope.net.timing import INITIAL_TIMEOUT, MIN_TIMEOUT, HostRtt, RateGate
from portscope.net.udp_payloads import payload_for
from tests.helpers import ss


def _has_ipv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


ADDRS = ["127.0.0.1", *(["::1"] if _has_ipv6() else [])]


def _family(addr: str) -> int:
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


def _listeners(addr: str, n: int) -> list[socket.socket]:
    out = []
    for _ in range(n):
        s = socket.socket(_family(addr), socket.SOCK_STREAM)
        s.bind((addr, 0))
        s.listen(64)
        out.append(s)
    return out


def _free_ports(addr: str, n: int, kind: int = socket.SOCK_STREAM) -> list[int]:
    """Ports nothing holds right now: bound by the kernel's choice, then released."""
    socks = [socket.socket(_family(addr), kind) for _ in range(n)]
    for s in socks:
        s.bind((addr, 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


@pytest.mark.parametrize("addr", ADDRS)
def test_tcp_open_and_closed(addr: str) -> None:
    held = _listeners(addr, 3)
    try:
        open_ports = [s.getsockname()[1] for s in held]
        closed_ports = _free_ports(addr, 3)
        results = list(scan_tcp([("h", addr)], open_ports + closed_ports, ScanOptions(timeout=2)))
    finally:
        for s in held:
            s.close()
    got = {r.port: (r.status, r.reason) for r in results}
    assert got == {
        **{p: ("open", "syn-ack") for p in open_ports},
        **{p: ("closed", "conn-refused") for p in closed_ports},
    }
    for r in results:
        assert (r.host, r.address, r.proto) == ("h", addr, "tcp")
        assert r.latency_ms is not None and r.latency_ms >= 0
        assert (r.error is None) == (r.status == "open")


def test_open_ports_are_closed_with_a_reset_not_left_half_open() -> None:
    """The scanner aborts what it opened: the listener's accepted socket sees RST, no TIME_WAIT on our side."""
    (srv,) = _listeners("127.0.0.1", 1)
    port = srv.getsockname()[1]
    with srv:
        (r,) = scan_tcp([("h", "127.0.0.1")], [port], ScanOptions(timeout=2))
        assert r.status == "open"
        conn, _ = srv.accept()
        with conn, pytest.raises(ConnectionResetError):
            conn.recv(1)
    lingering = [s for s in ss() if s["proto"] == "tcp" and port in (s["local_port"], s["remote_port"])]
    assert [s for s in lingering if s["state"] == "TIME_WAIT" and s["remote_port"] == port] == []


def _listening_on_loopback(low: int, high: int) -> set[int]:
    """What the kernel says listens on 127.0.0.1 (or a wildcard) in [low, high]: other processes count."""
    out = set()
    for s in ss():
        listening = s["proto"] == "tcp" and s["state"] == "LISTEN" and low <= s["local_port"] <= high
        if listening and s["local_address"] in ("127.0.0.1", "0.0.0.0", "*", "::", "::ffff:127.0.0.1"):
            out.add(s["local_port"])
    return out


@pytest.mark.parametrize("workers", [1, 2])
def test_a_block_of_ports_in_process_and_in_workers(workers: int) -> None:
    held = _listeners("127.0.0.1", 8)
    try:
        mine = {s.getsockname()[1] for s in held}
        low, high = min(mine) - 3000, max(mine) + 3000
        low, high = max(1, low), min(65535, high)
        ports = list(range(low, high + 1))
        before = _listening_on_loopback(low, high)
        results = list(scan_tcp([("h", "127.0.0.1")], ports, ScanOptions(timeout=2, workers=workers)))
        # Other processes' listeners (a shared machine: other test runs) seen before or after the scan.
        others = before | _listening_on_loopback(low, high)
    finally:
        for s in held:
            s.close()
    assert sorted(r.port for r in results) == ports  # every port exactly once
    opened = {r.port for r in results if r.status == "open"}
    assert mine <= opened
    assert opened - mine <= others  # anything else open is a real listener of another process
    assert {r.status for r in results} <= {"open", "closed"}


def test_several_hosts_and_ports_each_once() -> None:
    (srv,) = _listeners("127.0.0.1", 1)
    port = srv.getsockname()[1]
    with srv:
        hosts = [("a", "127.0.0.1"), ("b", "127.0.0.2"), ("c", "127.0.0.3")]
        results = list(scan_tcp(hosts, [port, *_free_ports("127.0.0.1", 2)], ScanOptions(timeout=2)))
    assert len(results) == 9
    assert len({(r.host, r.port) for r in results}) == 9
    assert {r.host for r in results if r.status == "open"} == {"a"}  # bound to 127.0.0.1 only


class _UdpServer:
    """A UDP socket that answers every datagram (answer=True) or swallows it silently."""

    def __init__(self, addr: str, answer: bool) -> None:
        self.sock = socket.socket(_family(addr), socket.SOCK_DGRAM)
        self.sock.bind((addr, 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.answer = answer
        self.got: list[bytes] = []
        self.stop = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop:
            try:
                data, peer = self.sock.recvfrom(4096)
            except TimeoutError:
                continue
            self.got.append(data)
            if self.answer:
                self.sock.sendto(b"pong:" + data[:16], peer)

    def close(self) -> None:
        self.stop = True
        self.thread.join()
        self.sock.close()


@pytest.fixture
def udp_servers(request: pytest.FixtureRequest) -> Iterator[tuple[_UdpServer, _UdpServer]]:
    addr = request.param
    talker, mute = _UdpServer(addr, True), _UdpServer(addr, False)
    yield talker, mute
    talker.close()
    mute.close()


@pytest.mark.parametrize("udp_servers", ADDRS, indirect=True)
def test_udp_answered_refused_and_silent(udp_servers: tuple[_UdpServer, _UdpServer]) -> None:
    talker, mute = udp_servers
    addr = talker.sock.getsockname()[0]
    (closed,) = _free_ports(addr, 1, socket.SOCK_DGRAM)
    results = list(
        scan_udp(
            [("h", addr)],
            [talker.port, mute.port, closed],
            ScanOptions(timeout=0.6, retries=1),
            lambda port: b"hello",
        )
    )
    got = {r.port: (r.status, r.reason) for r in results}
    assert got == {
        talker.port: ("open", "udp-response"),
        mute.port: ("open|filtered", "no-response"),
        closed: ("closed", "icmp-port-unreach"),
    }
    assert talker.got[:1] == [b"hello"]
    assert mute.got == [b"hello", b"hello"]  # the retry was sent, within the timeout
    silent = next(r for r in results if r.port == mute.port)
    assert silent.latency_ms is None


def test_udp_payloads_are_protocol_requests() -> None:
    # A DNS query for the root and an NTP client packet: what makes real servers answer.
    dns = payload_for(53)
    assert len(dns) >= 12 and dns[4:6] == b"\x00\x01"  # one question
    ntp = payload_for(123)
    assert len(ntp) == 48 and ntp[0] & 0x07 == 3  # mode 3: client


def test_adaptive_timeout_follows_round_trips() -> None:
    rtt = HostRtt(2, None)
    assert rtt.timeout(0) == INITIAL_TIMEOUT
    for _ in range(20):
        rtt.sample(0, 0.0001)
    assert rtt.timeout(0) == MIN_TIMEOUT  # loopback-fast, clamped
    for _ in range(20):
        rtt.sample(1, 0.4)
    assert 0.8 <= rtt.timeout(1) <= 2.0
    assert HostRtt(1, 7.0).timeout(0) == 7.0  # --timeout wins


def test_rate_gate_spaces_probes_without_bursts() -> None:
    gate = RateGate(100)  # one per 10 ms
    assert gate.allow(10.0)
    assert not gate.allow(10.005)
    assert gate.allow(10.0101)
    # After a long pause the gate does not let a burst through.
    assert gate.allow(20.0)
    assert not gate.allow(20.001)
    assert RateGate(None).allow(0.0) and RateGate(None).wait(0.0) == 0.0
