"""The raw SYN scan against real sockets: the connect scan on the same Plan is the oracle.

Loopback gives open and closed (ports held by this test, so no other process can change the answer);
filtered, host/net unreachable and admin-prohibited need a firewall, so they are checked across a veth
pair into a network namespace this module creates (pssyn-*, 198.18.0.0/15) and always deletes. IPv6
ICMP answers are checked on the namespace's own ::1, so no rule ever touches the host's firewall.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import random
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from portscope.net import probe_loop, syn_scan
from portscope.net import verdicts as V
from portscope.net.probe_loop import Plan
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


def _plan(addr: str, ports: list[int], timeout: float = 2.0) -> Plan:
    n = len(ports)
    return Plan([addr], [_family(addr)], ports, range(n), timeout=timeout, retries=1)


def _verdicts(results: list[probe_loop.Result], plan: Plan) -> dict[int, int]:
    nh = len(plan.addrs)
    out = {plan.ports[idx // nh]: code for idx, code, _err, _lat in results}
    assert len(out) == len(results) == len(plan.share)  # every port decided exactly once
    return out


# --- checksum -----------------------------------------------------------------------------------


def test_checksum_rfc1071_example() -> None:
    """RFC 1071 section 3's worked example: these words sum to 0xddf2, so the checksum is 0x220d."""
    assert syn_scan.checksum(bytes.fromhex("0001f203f4f5f6f7")) == 0x220D


def _sum32(data: bytes) -> int:
    """An independent checksum verification: 32-bit word sums folded to 16 (RFC 1071 section 2(B))."""
    data += b"\0" * (-len(data) % 4)
    total = sum(struct.unpack(f"!{len(data) // 4}I", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return int(total)


def test_known_syn_packet() -> None:
    """A SYN 192.0.2.1:40000 -> 198.51.100.7:443, seq 0x01020304, window 1024: its checksum is 0x1da5.

    Worked by hand: the 16-bit words of pseudo-header and header sum to 0x2e258, folded 0xe25a,
    complemented 0x1da5.
    """
    src, dst = socket.inet_aton("192.0.2.1"), socket.inet_aton("198.51.100.7")
    seg = syn_scan.syn_segment(src, dst, 40000, 443, 0x01020304)
    assert seg == bytes.fromhex("9c4001bb0102030400000000500204001da50000")
    # The receiver's test: pseudo-header + segment, checksum included, sums to all ones.
    assert _sum32(src + dst + b"\x00\x06\x00\x14" + seg) == 0xFFFF


@given(
    src=st.binary(min_size=4, max_size=4) | st.binary(min_size=16, max_size=16),
    dst=st.binary(min_size=16, max_size=16),
    sport=st.integers(0, 65535),
    dport=st.integers(0, 65535),
    seq=st.integers(0, 2**32 - 1),
)
def test_incremental_checksum_matches_the_reference(
    src: bytes, dst: bytes, sport: int, dport: int, seq: int
) -> None:
    """The per-port fast path (partial sum + port, folded) builds the same bytes as the slow reference."""
    dst = dst[: len(src)]
    total = syn_scan._partial_sum(src, dst, sport, seq) + dport
    total = (total & 0xFFFF) + (total >> 16)
    total = (total & 0xFFFF) + (total >> 16)
    fast = syn_scan._TCP.pack(sport, dport, seq, 0, 0x5002, syn_scan._WINDOW, ~total & 0xFFFF, 0)
    assert fast == syn_scan.syn_segment(src, dst, sport, dport, seq)
    pseudo = syn_scan._pseudo(src, dst)
    assert _sum32(pseudo + fast) == 0xFFFF


def test_udp_plans_are_refused() -> None:
    plan = Plan(["127.0.0.1"], [socket.AF_INET], [53], range(1), udp=True)
    with pytest.raises(ValueError, match="TCP only"):
        list(syn_scan.run(plan))


# --- loopback -----------------------------------------------------------------------------------


@dataclass
class _Block:
    ports: list[int]  # consecutive, all bound by this test
    listening: list[int]
    socks: dict[int, socket.socket]


@contextlib.contextmanager
def _held_block(addr: str, size: int, listening: int) -> Iterator[_Block]:
    """`size` consecutive ports below the ephemeral range, all bound by us; `listening` of them listen.

    Why hold the closed ones too: a bound, non-listening socket answers SYN with RST like a free port,
    but no other process can start listening there while the test runs.
    """
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(20000, 32000 - size)
        socks: list[socket.socket] = []
        try:
            for port in range(base, base + size):
                s = socket.socket(_family(addr), socket.SOCK_STREAM)
                socks.append(s)
                s.bind((addr, port))
        except OSError:
            for s in socks:
                s.close()
            continue
        try:
            picks = sorted(rng.sample(range(size), listening))
            for i in picks:
                socks[i].listen(16)
                socks[i].setblocking(False)
            ports = list(range(base, base + size))
            yield _Block(ports, [ports[i] for i in picks], dict(zip(ports, socks, strict=True)))
        finally:
            for s in socks:
                s.close()
        return
    pytest.fail("no free block of ports")


@pytest.mark.root
@pytest.mark.parametrize("addr", ADDRS)
def test_loopback_open_closed_and_same_as_connect(addr: str) -> None:
    with _held_block(addr, 64, 3) as b:
        plan = _plan(addr, b.ports)
        syn = _verdicts(list(syn_scan.run(plan)), plan)
        connect = _verdicts(list(probe_loop.run(_plan(addr, b.ports))), plan)
    assert {p for p, code in syn.items() if code == V.OPEN} == set(b.listening)
    assert {code for p, code in syn.items() if p not in b.listening} == {V.CLOSED}
    assert syn == connect


@pytest.mark.root
def test_results_carry_errno_and_latency() -> None:
    with _held_block("127.0.0.1", 8, 1) as b:
        results = list(syn_scan.run(_plan("127.0.0.1", b.ports)))
    for idx, code, err, lat in results:
        want = (V.OPEN, 0) if b.ports[idx] in b.listening else (V.CLOSED, errno.ECONNREFUSED)
        assert (code, err) == want
        assert lat >= 0


@pytest.mark.root
def test_several_hosts_and_a_port_listed_twice() -> None:
    """Index i is port i // hosts of host i % hosts; the same address listed twice is decided twice."""
    with _held_block("127.0.0.1", 6, 2) as b:
        ports = [*b.ports, b.ports[0]]
        addrs = ["127.0.0.1", "127.0.0.2", "127.0.0.1"]
        plan = Plan(addrs, [socket.AF_INET] * 3, ports, range(3 * len(ports)), timeout=2.0)
        results = list(syn_scan.run(plan))
    assert sorted(r[0] for r in results) == list(range(3 * len(ports)))
    opened = {(i % 3, ports[i // 3]) for i, code, _e, _l in results if code == V.OPEN}
    listed = [(i, p) for i, p in enumerate(ports) if p in b.listening]
    assert opened == {(h, p) for h in (0, 2) for _i, p in listed}  # bound to 127.0.0.1 only


@pytest.mark.root
def test_paced_one_port_at_a_time() -> None:
    """rate and concurrency only slow the scan down: every port is still decided, and the same way."""
    with _held_block("127.0.0.1", 12, 3) as b:
        plan = _plan("127.0.0.1", b.ports)
        plan.rate, plan.concurrency = 500.0, 1
        syn = _verdicts(list(syn_scan.run(plan)), plan)
    assert {p for p, c in syn.items() if c == V.OPEN} == set(b.listening)
    assert {c for p, c in syn.items() if p not in b.listening} == {V.CLOSED}


@pytest.mark.root
def test_a_share_is_all_a_loop_scans() -> None:
    with _held_block("127.0.0.1", 10, 2) as b:
        plan = Plan(["127.0.0.1"], [socket.AF_INET], b.ports, range(1, 10, 3), timeout=2.0)
        assert sorted(r[0] for r in syn_scan.run(plan)) == [1, 4, 7]


@pytest.mark.root
@pytest.mark.parametrize("addr", ADDRS)
def test_no_connection_is_left_behind(addr: str) -> None:
    """Our kernel answers the SYN-ACK with RST: nothing reaches accept(), nothing stays half open."""
    with _held_block(addr, 16, 4) as b:
        plan = _plan(addr, b.ports)
        syn = _verdicts(list(syn_scan.run(plan)), plan)
        assert {p for p, c in syn.items() if c == V.OPEN} == set(b.listening)
        stuck: list[dict[str, Any]] = []
        for _ in range(50):  # on a loaded machine the RST may still be on its way: look again briefly
            stuck = [
                s
                for s in ss()
                if s["proto"] == "tcp"
                and s["state"] in ("SYN_RECV", "ESTABLISHED")
                and s["local_port"] in b.listening
            ]
            if not stuck:
                break
            time.sleep(0.02)
        assert stuck == []
        for port in b.listening:
            with pytest.raises(BlockingIOError):
                b.socks[port].accept()  # the accept queue is empty: no handshake completed


# --- firewalled ports in a network namespace ----------------------------------------------------


def _sh(*argv: str, stdin: str | None = None) -> None:
    subprocess.run(argv, input=stdin, text=True, check=True, capture_output=True, timeout=30)


@dataclass
class _Bed:
    ns: str
    host_addr: str  # our end of the veth pair
    ns_addr: str  # the namespace's end


@pytest.fixture
def bed() -> Iterator[_Bed]:
    """A namespace behind a veth pair on a /30 of 198.18.0.0/15 that no interface here uses yet."""
    tag = f"{os.getpid() % 100000}{random.randrange(10)}"
    ns, veth, peer = f"pssyn-{tag}", f"pssynh{tag}", f"pssynn{tag}"
    used = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True, check=True).stdout
    while True:
        x, y = random.randrange(256), random.randrange(64) * 4
        if f"198.18.{x}." not in used:
            break
    bed = _Bed(ns, f"198.18.{x}.{y + 1}", f"198.18.{x}.{y + 2}")
    try:
        _sh("ip", "netns", "add", ns)
        _sh("ip", "link", "add", veth, "type", "veth", "peer", "name", peer, "netns", ns)
        _sh("ip", "addr", "add", f"{bed.host_addr}/30", "dev", veth)
        _sh("ip", "link", "set", veth, "up")
        _sh("ip", "-n", ns, "addr", "add", f"{bed.ns_addr}/30", "dev", peer)
        _sh("ip", "-n", ns, "link", "set", peer, "up")
        _sh("ip", "-n", ns, "link", "set", "lo", "up")
        # ICMP errors are rate limited per destination (a burst of 6): the test sends more than that.
        for knob in ("net.ipv4.icmp_ratelimit=0", "net.ipv6.icmp.ratelimit=0"):
            _sh("ip", "netns", "exec", ns, "sysctl", "-qw", knob)
        yield bed
    finally:
        subprocess.run(["ip", "link", "del", veth], capture_output=True)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def _rules(family: str, verdicts: dict[int, str]) -> str:
    chain = f"add chain {family} pssyn input {{ type filter hook input priority 0; }}\n"
    rules = "".join(f"add rule {family} pssyn input tcp dport {p} {v}\n" for p, v in verdicts.items())
    return f"add table {family} pssyn\n{chain}{rules}"


_LISTEN = """
import socket, sys
s = socket.socket(socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(8)
print("ready", flush=True)
sys.stdin.read()
"""

# ICMP type 3 codes and nft's names for them; what each must read as.
_V4_REJECTS = {
    "net-unreachable": V.NET_UNREACH,  # code 0
    "host-unreachable": V.HOST_UNREACH,  # code 1
    "net-prohibited": V.PROHIBITED,  # code 9
    "host-prohibited": V.PROHIBITED,  # code 10
    "admin-prohibited": V.PROHIBITED,  # code 13
}


@pytest.mark.root
def test_filtered_and_icmp_answers_across_a_veth(bed: _Bed) -> None:
    """Also the checksum's end-to-end oracle: unlike loopback, the namespace's kernel verifies it on
    veth and drops a bad one silently, so a wrong checksum would read as filtered here, not closed."""
    open_port, closed, dropped = 7000, [7001, 7002], [7003, 7004, 7005]
    rejected = dict(zip(range(7010, 7010 + len(_V4_REJECTS)), _V4_REJECTS.items(), strict=True))
    rules = {p: "drop" for p in dropped}
    rules |= {p: f"reject with icmp type {name}" for p, (name, _code) in rejected.items()}
    _sh("ip", "netns", "exec", bed.ns, "nft", "-f", "-", stdin=_rules("inet", rules))
    server = subprocess.Popen(
        ["ip", "netns", "exec", bed.ns, sys.executable, "-c", _LISTEN, bed.ns_addr, str(open_port)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        ports = [open_port, *closed, *dropped, *rejected]
        plan = _plan(bed.ns_addr, ports, timeout=0.3)
        syn = _verdicts(list(syn_scan.run(plan)), plan)
        connect = _verdicts(list(probe_loop.run(_plan(bed.ns_addr, ports, timeout=0.3))), plan)
    finally:
        server.kill()
        server.wait()
    want = {open_port: V.OPEN, **dict.fromkeys(closed, V.CLOSED), **dict.fromkeys(dropped, V.FILTERED)}
    want |= {p: code for p, (_name, code) in rejected.items()}
    assert syn == want
    assert connect == want


_V6_REJECTS = {
    "no-route": V.NET_UNREACH,  # code 0
    "admin-prohibited": V.PROHIBITED,  # code 1
    "addr-unreachable": V.HOST_UNREACH,  # code 3
}

_SCAN_INSIDE = """
import json, socket, sys
from portscope.net import probe_loop, syn_scan
addr, listen, ports = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
held = socket.socket(socket.AF_INET6)
held.bind((addr, listen))
held.listen(8)
def plan():
    return probe_loop.Plan([addr], [socket.AF_INET6], ports, range(len(ports)), timeout=0.3)
syn = {ports[i]: c for i, c, _e, _l in syn_scan.run(plan())}
connect = {ports[i]: c for i, c, _e, _l in probe_loop.run(plan())}
print(json.dumps([syn, connect]))
"""


@pytest.mark.root
@pytest.mark.skipif(not _has_ipv6(), reason="no IPv6 on this host")
def test_ipv6_filtered_and_icmpv6_inside_a_namespace(bed: _Bed) -> None:
    """On the namespace's own ::1, so ICMPv6 rules never touch this host's firewall."""
    open_port, closed, dropped = 7000, [7001], [7002, 7003]
    rejected = dict(zip(range(7010, 7010 + len(_V6_REJECTS)), _V6_REJECTS.items(), strict=True))
    rules = {p: "drop" for p in dropped}
    rules |= {p: f"reject with icmpv6 type {name}" for p, (name, _code) in rejected.items()}
    _sh("ip", "netns", "exec", bed.ns, "nft", "-f", "-", stdin=_rules("ip6", rules))
    ports = [open_port, *closed, *dropped, *rejected]
    out = subprocess.run(
        [
            "ip",
            "netns",
            "exec",
            bed.ns,
            sys.executable,
            "-c",
            _SCAN_INSIDE,
            "::1",
            str(open_port),
            json.dumps(ports),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    syn, connect = ({int(p): c for p, c in d.items()} for d in json.loads(out))
    want = {open_port: V.OPEN, **dict.fromkeys(closed, V.CLOSED), **dict.fromkeys(dropped, V.FILTERED)}
    want |= {p: code for p, (_name, code) in rejected.items()}
    assert syn == want
    assert connect == want


def test_available_says_what_root_can_do() -> None:
    assert syn_scan.available() == (os.geteuid() == 0 and sys.platform.startswith("linux"))
