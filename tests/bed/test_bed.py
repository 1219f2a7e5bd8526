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
import time
from concurrent.futures import ThreadPoolExecutor
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
    for (proto, port), (status, reason) in bed.alt_truth.items():
        assert proto in ("tcp", "udp") and 0 < port < 65536
        assert status in STATUSES, (proto, port, status)
        assert reason in REASONS, (proto, port, reason)
    assert set(bed.alt_services) == set(bed.alt_truth)
    assert all(bed.alt_truth[("tcp", p)] == ("filtered", "no-response") for p in bed.filtered_range)
    assert bed.expected("tcp", 53, bed.alt4) == ("filtered", "no-response")
    assert bed.expected("tcp", 53, bed.addr4) == bed.expected("tcp", 53) == ("open", "syn-ack")
    assert bed.expected("tcp", bed.ssh_alt_port, bed.alt6) == ("open", "syn-ack")
    # every open port is identified, and nothing else is
    assert set(bed.identities) == {k for k, (status, _) in bed.truth.items() if status == "open"}
    assert all(i.tls in ("implicit", "starttls", "none", None) for i in bed.identities.values())
    assert bed.expected("tcp", 22, bed.alt6) == ("closed", "conn-refused")
    assert bed.expected("tcp", bed.loopback_only_port, bed.alt4) == ("closed", "conn-refused")
    assert bed.expected("tcp", bed.loopback_only_port) == ("closed", "conn-refused")


def _listening(bed: TestBed) -> set[tuple[str, str, int]]:
    """(proto, local address, port) of every TCP listener and UDP socket inside the bed."""
    out = bed.exec(["ss", "-Hltun"]).stdout
    found = set()
    for m in re.finditer(r"^(tcp|udp)\s+\S+\s+\d+\s+\d+\s+(\S+):(\d+)\s", out, re.M):
        found.add((m.group(1), m.group(2).split("%")[0].strip("[]"), int(m.group(3))))
    return found


def test_only_the_declared_ports_listen(bed: TestBed) -> None:
    """Ports outside the tables must really be closed, so `expected()` holds for a full-range scan.

    Each listener is checked against the table of the address it is bound to: addr4/addr6 against
    `truth`, alt4/alt6 against `alt_truth`, and loopback may hold `loopback_only_port` alone.
    """
    listening = _listening(bed)
    # Behind the firewall rules: a daemon listens there, so the answer we see comes from nft, not the kernel.
    hidden = {("tcp", a, p) for a in (bed.addr4, bed.addr6) for p in (6380, 8081, 8082, 8083)}
    hidden |= {("tcp", bed.alt4, 53), ("tcp", bed.alt6, 53)}
    loopback = {("tcp", "127.0.0.1", bed.loopback_only_port), ("tcp", "::1", bed.loopback_only_port)}
    assert hidden | loopback <= listening
    for proto, address, port in listening - hidden - loopback:
        if address in (bed.addr4, bed.addr6):
            assert bed.truth.get((proto, port), ("",))[0] == "open", (proto, address, port)
        else:
            assert address in (bed.alt4, bed.alt6), (proto, address, port)
            assert bed.alt_truth.get((proto, port), ("",))[0] == "open", (proto, address, port)
    # Every open entry of both tables has its listener, on both families.
    for table, addresses in ((bed.truth, (bed.addr4, bed.addr6)), (bed.alt_truth, (bed.alt4, bed.alt6))):
        for (proto, port), (status, _) in table.items():
            if status == "open":
                assert {(proto, a, port) for a in addresses} <= listening, (proto, port)


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
# The alt addresses and the loopback-only PostgreSQL: the seeds' troubleshooting exercises


@pytest.fixture(params=[4, 6], ids=["ipv4", "ipv6"])
def alt(request: pytest.FixtureRequest, bed: TestBed) -> str:
    return bed.alt4 if request.param == 4 else bed.alt6


def test_alt_addresses_are_on_the_bed_side(bed: TestBed) -> None:
    out = bed.exec(["ip", "-o", "addr", "show", "dev", f"{bed.name}b"]).stdout
    assert f" {bed.alt4}/24 " in out and f" {bed.alt6}/64 " in out
    assert len({bed.addr4, bed.alt4, bed.local4}) == 3 and len({bed.addr6, bed.alt6, bed.local6}) == 3


def test_alt_dns_answers_over_udp(alt: str, bed: TestBed) -> None:
    with socket.socket(_family(alt), socket.SOCK_DGRAM) as s:
        s.settimeout(3)
        s.connect((alt, 53))
        s.send(build_dns_query(bed.cert_hostname, txid=0x2468))
        reply = s.recv(512)
    assert parse_dns_answers(reply) == (0x2468, 0, [bed.addr4])
    # The question is echoed: the answer names bed.test.
    assert b"\x03bed\x04test\x00" in reply[12:]


def test_alt_dns_over_tcp_times_out(bed: TestBed) -> None:
    """The firewall drops TCP/53 to alt only: a connect() gets nothing back, neither RST nor ICMP.

    Both families at once, so the suite waits 1.5 s instead of 3.
    """
    with ThreadPoolExecutor(max_workers=2) as pool:
        got = list(pool.map(lambda a: _connect_errno(a, 53, timeout=1.5), (bed.alt4, bed.alt6)))
    assert got == ["timeout", "timeout"]


def test_alt_ssh_on_the_alternative_port_only(alt: str, bed: TestBed) -> None:
    with _connect(alt, bed.ssh_alt_port) as s:
        banner = s.recv(256)
    assert banner.startswith(b"SSH-2.0-OpenSSH"), banner
    assert _connect_errno(alt, 22) == errno.ECONNREFUSED
    assert _connect_errno(alt, bed.ssh_alt_port - 1) == errno.ECONNREFUSED


def test_alt_truth_holds_for_tcp(bed: TestBed) -> None:
    """Every tcp entry of alt_truth (five of filtered_range), by non-blocking connects and one wait.

    2.5 s: the IPv6 admin-prohibited error may need the kernel's SYN retransmission at 1 s.
    """
    ports = [p for (proto, p) in bed.alt_truth if proto == "tcp" and p not in bed.filtered_range]
    ports += [20000, 20999]
    socks: dict[socket.socket, tuple[str, int]] = {}
    got: dict[tuple[str, int], tuple[str, str]] = {}
    try:
        for address in (bed.alt4, bed.alt6):
            for port in ports:
                s = socket.socket(_family(address), socket.SOCK_STREAM)
                s.setblocking(False)
                socks[s] = (address, port)
                assert s.connect_ex((address, port)) == errno.EINPROGRESS
        pending = list(socks)
        deadline = time.monotonic() + 2.5
        while pending and (left := deadline - time.monotonic()) > 0:
            _, writable, _ = select.select([], pending, [], left)
            for s in writable:
                address, port = socks[s]
                err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err == 0:
                    got[(address, port)] = ("open", "syn-ack")
                elif err == errno.ECONNREFUSED:
                    got[(address, port)] = ("closed", "conn-refused")
                elif err == ADMIN_PROHIBITED_ERRNO[6 if ":" in address else 4]:
                    got[(address, port)] = ("filtered", "admin-prohibited")
                else:
                    got[(address, port)] = ("error", errno.errorcode.get(err, str(err)))
                pending.remove(s)
        for s in pending:
            got[socks[s]] = ("filtered", "no-response")
    finally:
        for s in socks:
            s.close()
    want = {(a, p): bed.expected("tcp", p, a) for a in (bed.alt4, bed.alt6) for p in ports}
    assert got == want


def _inside(bed: TestBed, script: str, *args: str) -> str:
    return bed.exec([sys.executable, "-c", script, *args]).stdout


_SSLREQUEST_INSIDE = """
import socket, struct, sys
port = int(sys.argv[1])
for address in sys.argv[2:]:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(3)
        try:
            s.connect((address, port))
        except ConnectionRefusedError:
            print(address, "refused")
            continue
        s.sendall(struct.pack("!II", 8, 80877103))
        print(address, repr(s.recv(1)))
"""


def test_postgres_listens_on_loopback_only(bed: TestBed) -> None:
    """Inside the namespace 127.0.0.1:5433 and [::1]:5433 answer an SSLRequest; every bed address refuses.

    The seed's exercise: the service runs and `ss` shows it, yet nothing from outside can connect.
    """
    port = bed.loopback_only_port
    lines = _inside(bed, _SSLREQUEST_INSIDE, str(port), "127.0.0.1", "::1", bed.addr4, bed.alt4).splitlines()
    got = dict(line.split(" ", 1) for line in lines)
    assert got["127.0.0.1"] in ("b'N'", "b'S'"), got
    assert got["::1"] in ("b'N'", "b'S'"), got
    assert got[bed.addr4] == got[bed.alt4] == "refused", got
    for address in (bed.addr4, bed.addr6, bed.alt4, bed.alt6):
        assert _connect_errno(address, port) == errno.ECONNREFUSED, address
    listeners = {(a, p) for proto, a, p in _listening(bed) if p == port}
    assert listeners == {("127.0.0.1", port), ("::1", port)}


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
