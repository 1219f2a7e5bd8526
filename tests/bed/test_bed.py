"""The bed is what it claims: checked with plain sockets, never with portscope's code.

Why: the bed is the oracle for portscope's reachability, probe and diagnosis tests. If it were checked
with the code under test, a shared mistake (say, misreading an ICMP error) would pass both.
"""

from __future__ import annotations

import errno
import re
import select
import signal
import socket
import ssl
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from tests.bed.bed import (
    ADMIN_PROHIBITED_ERRNO,
    PREFIX,
    REASONS,
    STATE_DIR,
    STATUSES,
    UNREACHABLE_ERRNO,
    TestBed,
    build_dns_query,
    clean_stale,
    parse_dns_answers,
)

pytestmark = pytest.mark.root
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(params=[4, 6], ids=["ipv4", "ipv6"])
def addr(request: pytest.FixtureRequest, bed: TestBed) -> str:
    return bed.addr4 if request.param == 4 else bed.addr6


def _family(address: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in address else socket.AF_INET


def _connect(address: str, port: int, timeout: float = 3.0) -> socket.socket:
    s = socket.socket(_family(address), socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect((address, port))
    except BaseException:
        s.close()
        raise
    return s


def _connect_errno(address: str, port: int, timeout: float = 3.0) -> int | str:
    try:
        _connect(address, port, timeout).close()
    except TimeoutError:
        return "timeout"
    except OSError as exc:
        assert exc.errno is not None
        return exc.errno
    return 0


def _recv_all(s: socket.socket, limit: int = 65536) -> bytes:
    data = bytearray()
    while len(data) < limit and (chunk := s.recv(4096)):
        data += chunk
    return bytes(data)


# ------------------------------------------------------------------------------------------------------
# The table itself


def test_truth_uses_the_shared_vocabulary(bed: TestBed) -> None:
    for (proto, port), (status, reason) in bed.truth.items():
        assert proto in ("tcp", "udp") and 0 < port < 65536
        assert status in STATUSES, (proto, port, status)
        assert reason in REASONS, (proto, port, reason)
    assert all(bed.truth[("tcp", p)] == ("filtered", "no-response") for p in bed.filtered_range)
    assert len(bed.filtered_range) == 1000
    assert bed.expected("tcp", 12345) == ("closed", "conn-refused")
    assert bed.expected("udp", 12345) == ("closed", "icmp-port-unreach")


def test_only_the_declared_ports_listen(bed: TestBed) -> None:
    """Ports outside the table must really be closed, so `expected()` holds for a full-range scan."""
    out = bed.exec(["ss", "-Hltun"]).stdout
    listening = {(m.group(1), int(m.group(2))) for m in re.finditer(r"^(tcp|udp)\s.*?:(\d+)\s", out, re.M)}
    # Behind the firewall rules: nginx listens there, so the answer we see comes from nft, not the kernel.
    hidden = {("tcp", 6380), ("tcp", 8081), ("tcp", 8082), ("tcp", 8083)}
    assert hidden <= listening
    for key in listening - hidden:
        assert bed.truth.get(key, ("",))[0] == "open", key


# ------------------------------------------------------------------------------------------------------
# Open ports: the real daemons answer


def test_http(addr: str, bed: TestBed) -> None:
    with _connect(addr, 80) as s:
        s.sendall(f"GET / HTTP/1.1\r\nHost: {bed.cert_hostname}\r\nConnection: close\r\n\r\n".encode())
        reply = _recv_all(s)
    head = reply.split(b"\r\n\r\n", 1)[0].decode()
    assert head.startswith("HTTP/1.1 200"), head
    assert re.search(r"^Server: nginx\b", head, re.M | re.I), head


def test_tls_verifies_against_the_bed_ca(addr: str, bed: TestBed) -> None:
    ctx = ssl.create_default_context(cafile=str(bed.ca_pem))
    with _connect(addr, 443) as raw, ctx.wrap_socket(raw, server_hostname=bed.cert_hostname) as s:
        cert = s.getpeercert()
        assert cert is not None
        s.sendall(f"GET / HTTP/1.1\r\nHost: {bed.cert_hostname}\r\nConnection: close\r\n\r\n".encode())
        assert _recv_all(s).startswith(b"HTTP/1.1 200")
    assert ("DNS", bed.cert_hostname) in cert["subjectAltName"]


@pytest.mark.parametrize(
    ("port", "expected"),
    [
        (8443, "certificate has expired"),
        (9443, "Hostname mismatch"),
        (8444, "wrong version number"),  # plain HTTP where TLS should be
    ],
)
def test_tls_misconfigurations(bed: TestBed, port: int, expected: str) -> None:
    ctx = ssl.create_default_context(cafile=str(bed.ca_pem))
    with _connect(bed.addr4, port) as raw, pytest.raises(ssl.SSLError, match=expected):
        ctx.wrap_socket(raw, server_hostname=bed.cert_hostname)


def test_ssh_banner(addr: str) -> None:
    with _connect(addr, 22) as s:
        banner = s.recv(256)
    assert banner.startswith(b"SSH-2.0-OpenSSH"), banner


def test_dns_over_udp(addr: str, bed: TestBed) -> None:
    with socket.socket(_family(addr), socket.SOCK_DGRAM) as s:
        s.settimeout(3)
        s.connect((addr, 53))
        s.send(build_dns_query(bed.cert_hostname, txid=0x1234))
        txid, rcode, answers = parse_dns_answers(s.recv(512))
    assert (txid, rcode, answers) == (0x1234, 0, [bed.addr4])


def test_dns_over_tcp(addr: str, bed: TestBed) -> None:
    query = build_dns_query(bed.cert_hostname, qtype=28, txid=0x4321)
    with _connect(addr, 53) as s:
        s.sendall(struct.pack("!H", len(query)) + query)
        (length,) = struct.unpack("!H", s.recv(2, socket.MSG_WAITALL))
        txid, rcode, answers = parse_dns_answers(s.recv(length, socket.MSG_WAITALL))
    assert (txid, rcode, answers) == (0x4321, 0, [bed.addr6])


def test_redis_ping(addr: str) -> None:
    with _connect(addr, 6379) as s:
        s.sendall(b"*1\r\n$4\r\nPING\r\n")
        assert s.recv(64) == b"+PONG\r\n"


def test_postgres_answers_sslrequest(addr: str) -> None:
    with _connect(addr, 5432) as s:
        s.sendall(struct.pack("!II", 8, 80877103))
        assert s.recv(1) in (b"N", b"S")


# ------------------------------------------------------------------------------------------------------
# Closed, filtered, rejected, unreachable: the errno a plain connect() gets


def test_closed_port_refuses(addr: str) -> None:
    assert _connect_errno(addr, 81) == errno.ECONNREFUSED


def test_reject_with_reset_refuses(addr: str) -> None:
    assert _connect_errno(addr, 8082) == errno.ECONNREFUSED


def test_reject_admin_prohibited(addr: str) -> None:
    """IPv4: EHOSTUNREACH at once. IPv6: EACCES, but only after one SYN retransmission (~1 s).

    Why IPv6 is late: over a veth the ICMPv6 error comes back while connect() still holds the socket
    lock, and tcp_v6_err drops it (TcpExtLockDroppedIcmps); the retransmitted SYN's error lands. Hence
    the 3 s timeout here; a scanner with a 1 s timeout and no retry sees no-response on IPv6.
    """
    assert _connect_errno(addr, 8083, timeout=3.0) == ADMIN_PROHIBITED_ERRNO[6 if ":" in addr else 4]


def test_dropped_ports_and_udp_silence(bed: TestBed) -> None:
    """All silent ports at once, so the suite waits one second instead of one per port."""
    tcp_targets = [(a, p) for a in (bed.addr4, bed.addr6) for p in (8081, 6380, 20000, 20500, 20999)]
    socks: dict[socket.socket, tuple[str, str, int]] = {}
    try:
        for address, port in tcp_targets:
            s = socket.socket(_family(address), socket.SOCK_STREAM)
            s.setblocking(False)
            socks[s] = ("tcp", address, port)
            assert s.connect_ex((address, port)) == errno.EINPROGRESS
        for address in (bed.addr4, bed.addr6):
            u = socket.socket(_family(address), socket.SOCK_DGRAM)
            u.connect((address, 5353))
            u.send(build_dns_query(bed.cert_hostname))
            socks[u] = ("udp", address, 5353)
        tcp = [s for s, t in socks.items() if t[0] == "tcp"]
        udp = [s for s, t in socks.items() if t[0] == "udp"]
        readable, writable, failed = select.select(udp, tcp, list(socks), 1.0)
        answered = {socks[s] for s in (*readable, *writable, *failed)}
        assert not answered, f"expected silence within 1 s, got an answer from {sorted(answered)}"
    finally:
        for s in socks:
            s.close()


def test_closed_udp_port_gets_icmp_port_unreachable(addr: str) -> None:
    with socket.socket(_family(addr), socket.SOCK_DGRAM) as s:
        s.settimeout(1.0)
        s.connect((addr, 54))
        s.send(b"portscope bed")
        with pytest.raises(ConnectionRefusedError):
            s.recv(64)


def test_unreachable_address(bed: TestBed) -> None:
    for address in (bed.unreachable4, bed.unreachable6):
        assert _connect_errno(address, 80, timeout=1.0) == UNREACHABLE_ERRNO, address


# ------------------------------------------------------------------------------------------------------
# Teardown leaves nothing behind


def _traces(bed: TestBed, pids: list[int]) -> list[str]:
    """Everything of `bed` still present on the machine, each as a one-line description."""
    found = []
    if bed.name in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split():
        found.append(f"namespace {bed.name}")
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    found += [f"link {m}" for m in re.findall(rf"\d+: ({bed.name}[rb])\b", links)]
    for args, prefix in ((["-4"], f"198.19.{bed.index}.0/24"), (["-6"], f"{bed.unreachable6[:-1]}/64")):
        routes = subprocess.run(
            ["ip", *args, "route", "show", "table", "all"], capture_output=True, text=True
        ).stdout
        found += [f"route {line}" for line in routes.splitlines() if prefix in line or bed.local4 in line]
    found += [
        f"process {pid}" for pid in pids if Path(f"/proc/{pid}").exists() and not _zombie_reaped_later(pid)
    ]
    if bed.tmpdir.exists():
        found.append(f"directory {bed.tmpdir}")
    if (STATE_DIR / f"{bed.name}.json").exists():
        found.append(f"record {STATE_DIR / bed.name}.json")
    return found


def _zombie_reaped_later(pid: int) -> bool:
    # A daemon orphaned by a SIGKILLed owner is reparented to pid 1, which reaps it on its own schedule.
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def _namespace_pids(bed: TestBed) -> list[int]:
    out = subprocess.run(["ip", "netns", "pids", bed.name], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def test_teardown_removes_everything_even_after_an_exception(bed: TestBed) -> None:
    second = TestBed()
    pids: list[int] = []
    with pytest.raises(RuntimeError, match="inside the bed"), second:
        assert second.index != bed.index and second.addr4 != bed.addr4
        pids = _namespace_pids(second)
        assert len(pids) >= 6  # nginx x2, sshd, dnsmasq, redis, postgres and its helpers
        raise RuntimeError("a test failed inside the bed")
    assert _traces(second, pids) == []
    # The session bed is untouched.
    assert _connect_errno(bed.addr4, 80) == 0


_OWNER = """
import sys, time
sys.path.insert(0, sys.argv[1])
from tests.bed.bed import TestBed
bed = TestBed().up()
print(bed.index, bed.tmpdir, flush=True)
sys.stdin.readline()  # "exit" ends here without down(): atexit must clean up
"""


@pytest.mark.parametrize("end", ["sigkill", "sigterm", "exit"])
def test_owner_ending_leaves_nothing(bed: TestBed, end: str) -> None:
    """SIGKILL: the next up() (clean_stale) removes the bed. SIGTERM and exit: the owner itself does."""
    owner = subprocess.Popen(
        [sys.executable, "-c", _OWNER, str(ROOT)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert owner.stdout is not None and owner.stdin is not None
    index_text, tmpdir = owner.stdout.readline().split()
    index = int(index_text)
    orphan = TestBed()
    orphan.index, orphan.name, orphan.tmpdir = index, f"{PREFIX}{index}", Path(tmpdir)
    orphan.local4, orphan.unreachable6 = f"198.18.{index}.1", f"fd70:7073:6265:{0x8000 + index:x}::1"
    pids = _namespace_pids(orphan)
    assert pids
    if end == "exit":
        owner.stdin.close()
    else:
        owner.send_signal(signal.SIGKILL if end == "sigkill" else signal.SIGTERM)
    owner.wait(timeout=20)
    if end == "sigkill":  # no atexit, no handler: the crash clean_stale exists for
        assert orphan.name in _traces(orphan, pids)[0]
        assert orphan.name in clean_stale()
    else:
        assert owner.returncode == (-signal.SIGTERM if end == "sigterm" else 0)
    assert _traces(orphan, pids) == []
    assert _connect_errno(bed.addr4, 80) == 0
