"""probe: DNS (UDP and TCP), NTP and SNMP.

DNS runs against the bed's real dnsmasq (both transports, both address families; it is started with
--no-resolv and answers only bed.test, so it refuses to recurse for `. NS`), and through a TLS
terminator for DNS over TLS. SNMP runs against a real Net-SNMP snmpd started privately on loopback
with its own config. NTP has no daemon in the project (and needs none: chrony is not used): a small
asyncio server answers per RFC 5905, the way ntpd and chrony do. Hostile peers (garbage, 64 KiB
datagrams, echoes, compression loops, stalls) and hypothesis fuzzing cover the parsers.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
import struct
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from portscope.model import CheckResult, ProbeResult
from portscope.probes import dns, ntp, snmp
from portscope.probes.base import Ident, Session, Settings
from portscope.probes.conn import Deadline
from portscope.probes.runner import probe_one
from tests.bed.bed import TestBed
from tests.helpers import portscope, portscope_json, ss
from tests.probes.support import (
    Handler,
    assert_clean,
    assert_ident_clean,
    probe_peer,
    self_signed,
    server_context,
    stop,
    tcp_peer,
)

FAST = Settings(read_timeout=0.5, timeout=10.0)
NTP_EPOCH = 2208988800
# The longest string a parser here may return, unless a call site knows a tighter bound.
PARSED = 600


def dnsmasq_version() -> str:
    out = subprocess.run(["dnsmasq", "--version"], capture_output=True, text=True, check=True).stdout
    m = re.match(r"Dnsmasq version (\S+)", out)
    assert m, out
    return m.group(1)


# -- loopback peers ------------------------------------------------------------------------------------


class _UdpPeer(asyncio.DatagramProtocol):
    def __init__(self, handle: Callable[[bytes], list[bytes]]) -> None:
        self.handle = handle
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        assert self.transport is not None
        for out in self.handle(data):
            self.transport.sendto(out, addr)


def probe_udp(
    handle: Callable[[bytes], list[bytes]], service: str | None, conf: Settings = FAST
) -> ProbeResult:
    """probe_one on a UDP port of 127.0.0.1 where `handle` answers (a list of datagrams per request)."""

    async def main() -> ProbeResult:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _UdpPeer(handle), local_addr=("127.0.0.1", 0)
        )
        port = transport.get_extra_info("sockname")[1]
        check = CheckResult(
            "127.0.0.1", "127.0.0.1", port, "udp", "open|filtered", "no-response", service=service
        )
        try:
            return await probe_one(check, conf)
        finally:
            transport.close()

    return asyncio.run(main())


def _dns_over_tcp(handler: Handler, conf: Settings = FAST) -> Ident | None:
    """dns.run() itself (not the runner) against `handler` on 127.0.0.1."""

    async def main() -> Ident | None:
        async with tcp_peer(handler) as port:
            session = Session("127.0.0.1", "127.0.0.1", port, conf, Deadline(conf.timeout))
            try:
                await session.connect()
                return await dns.run(session, b"")
            finally:
                await session.close()

    return asyncio.run(main())


# -- DNS against the bed's dnsmasq ---------------------------------------------------------------------


def _bed_target(bed: TestBed, family: str) -> str:
    return f"{bed.addr4}:53" if family == "ipv4" else f"[{bed.addr6}]:53"


@pytest.mark.root
@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_dns_on_the_bed(bed: TestBed, family: str, transport: str) -> None:
    args = ["probe", _bed_target(bed, family)] + (["--udp"] if transport == "udp" else [])
    (r,) = portscope_json(*args)
    assert (r["proto"], r["status"], r["identified"], r["protocol"]) == (transport, "open", "dns", "dns")
    version = dnsmasq_version()
    assert (r["product"], r["version"]) == ("dnsmasq", version)
    d = r["details"]
    assert d["transport"] == transport
    assert d["version_bind"] == f"dnsmasq-{version}"
    # --no-resolv and no upstream: dnsmasq refuses `. NS` (it will not recurse for anyone), while its
    # header still offers recursion (RA), as dnsmasq always does; it is not authoritative for the root.
    assert (d["rcode"], d["recursion_available"], d["authoritative"], d["answers"]) == (
        "REFUSED",
        True,
        False,
        0,
    )
    assert (r["expected"], r["matches"]) == ("dns", True)
    assert r["probes"][-1] == "dns"  # the expected probe went first and answered


@pytest.mark.root
def test_dns_table_output(bed: TestBed) -> None:
    proc = portscope("probe", f"{bed.addr4}:53", "--udp")
    assert proc.returncode == 0, proc.stderr
    assert "53/udp" in proc.stdout and "dnsmasq" in proc.stdout and dnsmasq_version() in proc.stdout


@pytest.mark.root
def test_dns_parser_on_the_beds_real_answers(bed: TestBed) -> None:
    """Our parser on dnsmasq's own bytes: a compressed answer for the name it serves (AA), version.bind."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(3)
        s.connect((bed.addr4, 53))
        s.send(_query("BED.test", 1, 1, b"\x42\x42"))
        msg = dns.parse_message(s.recv(4096))
        s.send(_query("version.bind", 16, 3, b"\x43\x43"))
        version = dns.parse_message(s.recv(4096))
    assert msg is not None and msg.complete and msg.id == 0x4242
    assert (msg.rcode_name, msg.aa, msg.counts[1]) == ("NOERROR", True, 1)
    assert msg.question == ("BED.test.", 1, 1)
    (rec,) = msg.answers
    assert rec.name.lower() == "bed.test." and rec.rtype == 1 and rec.rdata == socket.inet_aton(bed.addr4)
    assert version is not None and dns.version_text(version) == f"dnsmasq-{dnsmasq_version()}"


def _query(name: str, qtype: int, qclass: int, tid: bytes) -> bytes:
    """Our own encoding for the tests (RFC 1035 4.1), independent of the probe's."""
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".") if p)
    return (
        tid
        + b"\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00"
        + labels
        + b"\x00"
        + struct.pack(">HH", qtype, qclass)
    )


@pytest.mark.root
def test_dns_over_tls_through_a_terminator(bed: TestBed, tmp_path: Path) -> None:
    """What stunnel in front of a resolver looks like: TLS on 127.0.0.1, the bed's dnsmasq behind it."""
    ctx = server_context(*self_signed(tmp_path, "dot.test", ["127.0.0.1"]))

    async def relay(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        up_r, up_w = await asyncio.open_connection(bed.addr4, 53)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            while data := await src.read(4096):
                dst.write(data)
                await dst.drain()
            dst.close()

        await asyncio.gather(pipe(r, up_w), pipe(up_r, w), return_exceptions=True)

    r = probe_peer(relay, service="dns-over-tls", tls=ctx, read_timeout=2.0)
    assert (r.service, r.protocol, r.product, r.version) == (
        "dns-over-tls",
        "dns",
        "dnsmasq",
        dnsmasq_version(),
    )
    assert r.tls is not None and r.tls.version in ("TLSv1.2", "TLSv1.3") and r.tls.self_signed
    assert r.details["transport"] == "tcp" and r.matches is True


# -- DNS: hostile peers --------------------------------------------------------------------------------


def _echo_id(reply: bytes) -> Callable[[bytes], list[bytes]]:
    """A peer that answers with `reply` under the query's own ID (so only its content can be wrong)."""
    return lambda q: [q[:2] + reply[2:]] if len(q) >= 2 else []


_LOOP = b"\x00\x00\x81\x80\x00\x01\x00\x01\x00\x00\x00\x00" + b"\xc0\x0c\x00\x02\x00\x01" + b"\xc0\x0c"
_HUGE_COUNTS = b"\x00\x00\x85\x80\xff\xff\xff\xff\xff\xff\xff\xff" + b"\x03www" * 200


@pytest.mark.parametrize(
    "handle",
    [
        lambda q: [os.urandom(65507)],  # the largest IPv4 datagram
        lambda q: [b"\xff" * 11],
        lambda q: [q],  # an echo: our own query back (QR clear)
        lambda q: [bytes([q[0] ^ 0xFF]) + q[1:2] + b"\x81\x80" + q[4:]],  # an answer, not to our ID
        lambda q: [os.urandom(512) for _ in range(20)],
    ],
)
def test_udp_garbage_identifies_nothing_and_does_not_break(handle: Callable[[bytes], list[bytes]]) -> None:
    started = time.monotonic()
    r = probe_udp(handle, None)
    assert r.service == "unknown" and {"dns", "ntp", "snmp"} <= set(r.probes)
    assert time.monotonic() - started < FAST.timeout
    assert_clean(r.to_dict(), 2000)


_CUT = b"\x00\x00\x81\x80\x00\x00\x00\x01\x00\x00\x00\x00" + b"\xc0"


@pytest.mark.parametrize("reply", [_LOOP, _HUGE_COUNTS, _CUT])
def test_udp_dns_headers_with_hostile_bodies_stay_bounded(reply: bytes) -> None:
    """Our ID and QR set, then nonsense: a DNS server answered (badly); nothing past the header is used."""
    r = probe_udp(_echo_id(reply), "dns")
    assert r.service == "dns" and r.details["transport"] == "udp"
    assert "version_bind" not in r.details and r.product is None
    assert_clean(r.to_dict(), 2000)


async def _dns_flood(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    await r.read(512)
    w.write(b"\xff\xff" + os.urandom(65535) + b"\xff" * 65536)
    await w.drain()


async def _dns_stall(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    await r.read(512)
    w.write(b"\x40\x00\x00")  # a 16 KiB message that never comes
    await w.drain()
    await asyncio.sleep(30)


async def _dns_wrong_id(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    (n,) = struct.unpack(">H", await r.readexactly(2))
    q = await r.readexactly(n)
    reply = bytes([q[0] ^ 0xFF, q[1]]) + b"\x81\x80" + q[4:]
    w.write(struct.pack(">H", len(reply)) + reply)
    await w.drain()


async def _dns_pointer_loop(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    for _ in range(2):
        (n,) = struct.unpack(">H", await r.readexactly(2))
        q = await r.readexactly(n)
        reply = q[:2] + _LOOP[2:]
        w.write(struct.pack(">H", len(reply)) + reply)
        await w.drain()


@pytest.mark.parametrize(
    ("serve", "found"),
    [(_dns_flood, False), (_dns_stall, False), (_dns_wrong_id, False), (_dns_pointer_loop, True)],
)
def test_tcp_dns_hostile_peers(serve: Handler, found: bool) -> None:
    started = time.monotonic()
    ident = _dns_over_tcp(serve)
    assert time.monotonic() - started < FAST.timeout
    assert (ident is not None) == found
    assert_ident_clean(ident, PARSED)
    if ident is not None:
        assert ident.details["rcode"] == "NOERROR" and ident.details["answers"] == 1


def test_tcp_recognize_needs_a_real_response() -> None:
    body = bytes.fromhex("1234818500010000000000000000020001")  # dnsmasq's REFUSED to `. NS`
    ident = dns.recognize(struct.pack(">H", len(body)) + body)
    assert ident is not None and ident.confidence == "high" and ident.details["rcode"] == "REFUSED"
    partial = dns.recognize(struct.pack(">H", len(body)) + body[:14])
    assert partial is not None and partial.confidence == "low"
    query = bytes([body[0], body[1], 0x01]) + body[3:]
    assert dns.recognize(struct.pack(">H", len(query)) + query) is None  # QR clear: a query, not an answer
    for banner in (
        b"HTTP/1.1 400 Bad Request\r\n\r\n",
        b"SSH-2.0-OpenSSH_9.2\r\n",
        b"\x16\x03\x03\x00\x2a" + bytes(42),
    ):
        assert dns.recognize(banner) is None
    assert (
        dns.recognize(b"\x00\x0c" + b"\x00\x00\x80\x00" + b"\x00\x01" + b"\x00" * 6) is None
    )  # counts overflow


def test_version_bind_products() -> None:
    assert dns.product_of("dnsmasq-2.89") == ("dnsmasq", "2.89")
    assert dns.product_of("unbound 1.17.1") == ("Unbound", "1.17.1")
    assert dns.product_of("9.18.24-1-Debian") == ("BIND", "9.18.24-1-Debian")
    assert dns.product_of("PowerDNS Recursor 4.8.4 (built Mar 1 2023)") == ("PowerDNS Recursor", "4.8.4")
    assert dns.product_of("none of your business") == (None, None)


def test_names_with_escapes_and_forward_pointers() -> None:
    msg = b"\x00" * 12 + b"\x04a.b\x1b\x00"
    assert dns.read_name(msg, 12) == ("a\\046b\\027.", 18)
    assert dns.read_name(b"\x00" * 12 + b"\xc0\x0e\x00", 12) is None  # points forward
    assert dns.read_name(b"\x00" * 12 + b"\xc0\x0c", 12) is None  # points at itself
    long_name = b"".join(b"\x3f" + b"a" * 63 for _ in range(5)) + b"\x00"  # 321 octets > 255
    assert dns.read_name(long_name, 0) is None


# -- NTP -----------------------------------------------------------------------------------------------


def _ntp_ts(unix: float) -> int:
    return int((unix + NTP_EPOCH) * 2**32) & (2**64 - 1)


def ntp_server(
    stratum: int = 2,
    refid: bytes = bytes([192, 0, 2, 1]),
    skew: float = 0.0,
    leap: int = 0,
    variables: str | None = None,
    wrong_origin: bool = False,
) -> Callable[[bytes], list[bytes]]:
    """An NTP server per RFC 5905 7.3 and 8: mode 4, the client's version, origin = client's transmit.

    `variables`: also answer mode 6 READVAR (RFC 9327) with this text, as ntpd does; chrony does not.
    """

    def handle(req: bytes) -> list[bytes]:
        if len(req) >= 48 and req[0] & 7 == 3:
            vn = (req[0] >> 3) & 7
            now = _ntp_ts(time.time() + skew)
            (origin,) = struct.unpack_from(">Q", req, 40)
            if wrong_origin:
                origin ^= 1 << 40
            head = struct.pack(">BBbb", (leap << 6) | (vn << 3) | 4, stratum, 6, -20)
            head += struct.pack(">II", 0x00000A00, 0x00001400) + refid  # 39.0625 ms, 78.125 ms
            return [head + struct.pack(">QQQQ", now - (64 << 32), origin, now, now)]
        if variables is not None and len(req) >= 12 and req[0] & 7 == 6 and req[1] == 2:
            data = variables.encode()
            data += b"\x00" * (-len(data) % 4)
            seq = req[2:4]
            return [
                bytes([req[0], 0x82])
                + seq
                + b"\x06\x15\x00\x00\x00\x00"
                + struct.pack(">H", len(variables))
                + data
            ]
        return []

    return handle


NTPD_VARS = (
    'version="ntpd 4.2.8p15@1.3728-o Wed Sep 23 11:46:38 UTC 2020 (1)", processor="x86_64",\r\n'
    'system="Linux/6.1.0-18-amd64", leap=00, stratum=2, precision=-20, rootdelay=39.062'
)


def test_ntp_server_reply() -> None:
    r = probe_udp(ntp_server(), "ntp")
    assert (r.service, r.protocol, r.product, r.matches) == ("ntp", "ntp", None, True)
    d = r.details
    assert (d["version"], d["leap"], d["stratum"], d["synchronized"]) == (4, 0, 2, True)
    assert (d["reference"], d["precision"], d["poll"]) == ("192.0.2.1", -20, 6)
    assert (d["root_delay_ms"], d["root_dispersion_ms"]) == (39.062, 78.125)
    assert abs(d["offset_ms"]) < 5000  # the server reads our own clock
    assert "kiss_code" not in d and "daemon" not in d  # chrony-like: no mode 6 answer


def test_ntp_offset_of_a_server_an_hour_ahead() -> None:
    r = probe_udp(ntp_server(skew=3600.0), "ntp")
    assert abs(r.details["offset_ms"] - 3_600_000) < 5000


def test_ntp_stratum_one_and_kiss_of_death() -> None:
    primary = probe_udp(ntp_server(stratum=1, refid=b"GPS\x00"), "ntp").details
    assert (primary["stratum"], primary["reference"], primary["synchronized"]) == (1, "GPS", True)
    kod = probe_udp(ntp_server(stratum=0, refid=b"RATE", leap=3), "ntp").details
    assert (kod["stratum"], kod["kiss_code"], kod["reference"], kod["synchronized"]) == (
        0,
        "RATE",
        "RATE",
        False,
    )
    assert "offset_ms" not in kod
    unsync = probe_udp(ntp_server(stratum=16, refid=b"INIT", leap=3), "ntp").details
    assert (unsync["reference"], unsync["synchronized"]) == ("INIT", False)


def test_ntpd_names_itself_over_mode_6() -> None:
    r = probe_udp(ntp_server(variables=NTPD_VARS), "ntp")
    assert (r.product, r.version) == ("ntpd", "4.2.8p15")
    assert r.details["system"] == "Linux/6.1.0-18-amd64"
    assert r.details["daemon"].startswith("ntpd 4.2.8p15@")
    assert r.summary.endswith("answers ntp (ntpd 4.2.8p15), as expected")


def test_ntp_reply_that_is_not_for_us_is_ignored() -> None:
    r = probe_udp(ntp_server(wrong_origin=True), "ntp")
    assert r.service == "unknown"


def test_ntp_found_on_an_unknown_port_after_dns_silence() -> None:
    r = probe_udp(ntp_server(), None)
    assert r.service == "ntp" and r.probes[-1] == "ntp" and "dns" in r.probes and r.matches is None


def test_ntp_needs_no_daemon_of_ours() -> None:
    # the tests above speak to an in-process server only; nothing here may start or require chronyd
    assert ntp.PROBE.run_udp is not None and ntp.PROBE.udp_ports == frozenset({123})
    assert "chrony" in ntp.PROBE.names  # --expect chrony is confirmed by the NTP probe


# -- SNMP ----------------------------------------------------------------------------------------------


def _ber(tag: int, body: bytes) -> bytes:
    """Our own BER encoder for the test peers (X.690 definite lengths), independent of the probe's."""
    n = len(body)
    if n < 0x80:
        return bytes([tag, n]) + body
    size = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(size)]) + size + body


def _int(n: int) -> bytes:
    return _ber(0x02, n.to_bytes(max(1, (n.bit_length() + 8) // 8), "big", signed=True))


def _tlvs(data: bytes) -> list[tuple[int, bytes]]:
    out, pos = [], 0
    while pos + 2 <= len(data):
        tag, n = data[pos], data[pos + 1]
        pos += 2
        if n & 0x80:
            k = n & 0x7F
            n = int.from_bytes(data[pos : pos + k], "big")
            pos += k
        out.append((tag, data[pos : pos + n]))
        pos += n
    return out


SYS_DESCR_OID = _ber(0x06, bytes([0x2B, 6, 1, 2, 1, 1, 1, 0]))
NET_SNMP_ENGINE = bytes.fromhex("80001f8880") + os.urandom(8)


def snmp_agent(
    community: bytes | None = b"public",
    descr: bytes | None = b"Linux probe-test 6.1.0 #1 SMP\r\nx86_64",
    v3: bool = True,
    value_tag: int = 0x04,
) -> Callable[[bytes], list[bytes]]:
    """An agent per RFC 3416 (v2c GetResponse) and RFC 3414 4 (v3 discovery Report)."""

    def handle(req: bytes) -> list[bytes]:
        try:
            ((_, body),) = _tlvs(req)
            fields = _tlvs(body)
            version = int.from_bytes(fields[0][1], "big")
        except (ValueError, IndexError):
            return []
        if version == 1 and community is not None and fields[1][1] == community and descr is not None:
            request_id = _tlvs(fields[2][1])[0][1]
            value = _ber(value_tag, descr if value_tag == 0x04 else b"")
            varbinds = _ber(0x30, _ber(0x30, SYS_DESCR_OID + value))
            pdu = _ber(0xA2, _ber(0x02, request_id) + _int(0) + _int(0) + varbinds)
            return [_ber(0x30, _int(1) + _ber(0x04, community) + pdu)]
        if version == 3 and v3:
            msg_id = _tlvs(fields[1][1])[0][1]
            header = _ber(0x30, _ber(0x02, msg_id) + _int(65507) + _ber(0x04, b"\x00") + _int(3))
            usm = _ber(0x30, _ber(0x04, NET_SNMP_ENGINE) + _int(7) + _int(123456) + _ber(0x04, b"") * 3)
            report_oid = _ber(0x06, bytes([0x2B, 6, 1, 6, 3, 15, 1, 1, 4, 0]))
            varbinds = _ber(0x30, _ber(0x30, report_oid + _ber(0x41, b"\x01")))
            pdu = _ber(0xA8, _ber(0x02, msg_id) + _int(0) + _int(0) + varbinds)
            scoped = _ber(0x30, _ber(0x04, NET_SNMP_ENGINE) + _ber(0x04, b"") + pdu)
            return [_ber(0x30, _int(3) + header + _ber(0x04, usm) + scoped)]
        return []

    return handle


def test_snmp_v2c_and_v3_agent() -> None:
    r = probe_udp(snmp_agent(), "snmp")
    assert (r.service, r.product, r.matches) == ("snmp", "Net-SNMP", True)
    d = r.details
    assert (d["version"], d["community"], d["community_accepted"], d["v3"]) == ("2c", "public", True, True)
    assert d["sys_descr"] == "Linux probe-test 6.1.0 #1 SMP x86_64"  # CR LF collapsed, nothing escaped
    assert (d["enterprise"], d["vendor"], d["engine_boots"], d["engine_time"]) == (
        8072,
        "Net-SNMP",
        7,
        123456,
    )
    assert d["engine_id"] == NET_SNMP_ENGINE.hex()


def test_snmp_wrong_community_still_found_by_v3() -> None:
    r = probe_udp(snmp_agent(community=b"s3cret"), "snmp")
    assert r.service == "snmp"
    assert (r.details["version"], r.details["community_accepted"], r.details["v3"]) == ("3", False, True)
    assert "sys_descr" not in r.details


def test_snmp_v2c_only_agent_and_missing_object() -> None:
    r = probe_udp(snmp_agent(v3=False, descr=b"\x1b[2Jevil\x00agent"), "snmp")
    assert (r.details["v3"], r.product) == (False, None)
    assert r.details["sys_descr"] == "\\x1b[2Jevil\\x00agent"
    r = probe_udp(snmp_agent(v3=False, value_tag=0x80), "snmp")
    assert r.details["sys_descr_error"] == "noSuchObject" and "sys_descr" not in r.details


def test_snmp_silent_agent_is_not_snmp() -> None:
    r = probe_udp(snmp_agent(community=b"s3cret", v3=False), "snmp")
    assert r.service == "unknown"


@pytest.fixture
def snmpd(tmp_path: Path) -> Iterator[Callable[[str, str | None], int]]:
    """A private Net-SNMP agent on 127.0.0.1 (random UDP port, SMUX moved off 199): start(community, descr)."""
    exe = shutil.which("snmpd")
    if exe is None:
        pytest.skip("needs snmpd (Debian package snmpd, in scripts/apt-test-deps.sh)")
    procs: list[subprocess.Popen[bytes]] = []

    def start(community: str, descr: str | None) -> int:
        d = tmp_path / f"snmpd-{len(procs)}"
        d.mkdir()
        conf = d / "snmpd.conf"
        lines = [
            "agentAddress udp:127.0.0.1:0",
            f"rocommunity {community} 127.0.0.1",
            "smuxsocket 127.0.0.1:0",
        ]
        if descr is not None:
            lines.append(f"sysDescr {descr}")
        conf.write_text("\n".join(lines) + "\n")
        env = dict(os.environ, SNMP_PERSISTENT_DIR=str(d), MIBS="")
        argv = [exe, "-f", "-C", "-c", str(conf), "-Lf", str(d / "log"), "-p", str(d / "pid")]
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(proc)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and proc.poll() is None:
            for row in ss():
                if row["proto"] == "udp" and any(pid == proc.pid for pid, _, _ in row["processes"]):
                    assert row["local_address"] == "127.0.0.1"
                    return int(row["local_port"])
            time.sleep(0.05)
        log = (d / "log").read_text() if (d / "log").exists() else ""
        raise AssertionError(f"snmpd did not bind (exit {proc.poll()}):\n{log}")

    yield start
    for proc in procs:
        stop(proc)


def _probe_port(port: int, service: str | None = "snmp") -> ProbeResult:
    check = CheckResult(
        "127.0.0.1", "127.0.0.1", port, "udp", "open|filtered", "no-response", service=service
    )
    return asyncio.run(probe_one(check, FAST))


def test_real_snmpd_public(snmpd: Callable[[str, str | None], int]) -> None:
    r = _probe_port(snmpd("public", "portscope test agent"))
    assert (r.service, r.product, r.matches) == ("snmp", "Net-SNMP", True)
    d = r.details
    assert (d["version"], d["community_accepted"], d["sys_descr"], d["v3"]) == (
        "2c",
        True,
        "portscope test agent",
        True,
    )
    assert d["enterprise"] == 8072 and d["engine_id"].startswith("80001f88")
    assert isinstance(d["engine_time"], int) and d["engine_time"] >= 0 and d["engine_boots"] >= 1


def test_real_snmpd_default_sys_descr_is_uname(snmpd: Callable[[str, str | None], int]) -> None:
    r = _probe_port(snmpd("public", None))
    u = os.uname()
    assert r.details["sys_descr"].startswith(f"{u.sysname} {u.nodename} {u.release}")


def test_real_snmpd_other_community(snmpd: Callable[[str, str | None], int]) -> None:
    r = _probe_port(snmpd("n0tpublic", None))
    assert (r.service, r.details["community_accepted"], r.details["version"]) == ("snmp", False, "3")
    assert r.details["vendor"] == "Net-SNMP"


# -- fuzzing: every parser and recognizer on arbitrary and near-valid bytes -----------------------------


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=2048))
def test_dns_parsers_on_arbitrary_bytes(data: bytes) -> None:
    assert_ident_clean(dns.recognize(data), PARSED)
    msg = dns.parse_message(data)
    if msg is not None:
        assert len(msg.answers) <= dns.MAX_RECORDS
        assert_clean(msg.question, 300)
        assert_clean([a.name for a in msg.answers], 300)
        assert_ident_clean(dns.describe(msg, "udp", msg), PARSED)
    for pos in range(0, min(len(data), 40)):
        name = dns.read_name(data, pos)
        if name is not None:
            assert_clean(name[0], 4 * 255 + 2)
            assert pos < name[1] <= len(data)


_labels = st.lists(st.binary(min_size=1, max_size=63), max_size=6)


@st.composite
def dns_messages(draw: st.DrawFn) -> bytes:
    """Near-valid responses: a real header and question, records whose parts may lie."""
    flags = draw(st.integers(0, 0xFFFF)) | 0x8000
    counts = draw(st.tuples(st.integers(1, 40), *[st.integers(0, 40)] * 3))
    qname = b"".join(bytes([len(x)]) + x for x in draw(_labels)) + b"\x00"
    out = draw(st.binary(min_size=2, max_size=2)) + struct.pack(">HHHHH", flags, *counts)
    out += qname + struct.pack(">HH", draw(st.integers(0, 0xFFFF)), draw(st.integers(0, 0xFFFF)))
    for _ in range(draw(st.integers(0, 4))):
        owner = draw(st.sampled_from([b"\xc0\x0c", b"\x00", b"\xc0\xff", b"\xc0\x00", b"\x3f"]))
        rdata = draw(st.binary(max_size=300))
        rdlength = draw(st.sampled_from([len(rdata), len(rdata) + 1, 0xFFFF]))
        out += owner + struct.pack(">HHIH", 16, 3, 0, rdlength) + rdata
    return out


@settings(max_examples=500, deadline=None)
@given(dns_messages())
def test_dns_near_valid_messages(data: bytes) -> None:
    msg = dns.parse_message(data)
    assert msg is not None and msg.question is not None
    assert_clean(msg.question, 300)
    text = dns.version_text(msg)
    assert text is None or len(text) <= 201
    assert_ident_clean(dns.describe(msg, "tcp", msg), PARSED)
    assert_ident_clean(dns.recognize(struct.pack(">H", len(data)) + data), PARSED)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=600), st.integers(0, 0xFFFF))
def test_ntp_parsers_on_arbitrary_bytes(data: bytes, seq: int) -> None:
    pkt = ntp.parse_packet(data)
    assert (pkt is None) == (len(data) < 48)
    if pkt is not None:
        assert_ident_clean(ntp.describe(pkt, 0, 2**64 - 1), PARSED)
        assert ntp.answer_to(data, pkt.origin) is None or pkt.mode == 4
    variables = ntp.control_vars(data, seq)
    if variables is not None:
        assert len(variables) <= 64
        assert_clean(variables, 205)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=500), st.integers(0, 0xFFFF), st.integers(0, 0xFFFF))
def test_ntp_control_replies(data: bytes, seq: int, count: int) -> None:
    reply = bytes([0x16, 0x82]) + struct.pack(">HHHHH", seq, 0, 0, 0, count) + data
    variables = ntp.control_vars(reply, seq)
    assert variables is not None and len(variables) <= 64
    assert_clean(variables, 205)
    if "version" in variables:
        _, version = ntp.daemon_of(variables["version"])
        assert version is None or len(version) <= 40


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=1500))
def test_snmp_parser_on_arbitrary_bytes(data: bytes) -> None:
    msg = snmp.parse_message(data)
    if msg is not None:
        assert len(msg.varbinds) <= snmp.MAX_VARBINDS
        assert_ident_clean(snmp.describe(msg, msg), PARSED)


_good_values = st.one_of(
    st.binary(max_size=300).map(lambda b: _ber(0x04, b)),
    st.integers(-(2**80), 2**80).map(_int),  # values are kept raw: any length is fine
    st.sampled_from([b"\x80\x00", b"\x81\x00", b"\x05\x00", b"\x41\x01\x07"]),
)
_bad_values = st.sampled_from(  # lengths past the end, too long, indefinite; a high tag number
    [b"\x04\x84\xff\xff\xff\xff", b"\x04\x85\x01\x00\x00\x00\x00", b"\x04\x80", b"\x1f\x01\x00"]
)
_bad_names = st.one_of(
    st.binary(max_size=12).map(lambda b: _ber(0x06, b + b"\x80")),  # an OID cut inside an arc
    st.just(_ber(0x06, b"\x2b" + b"\xff" * 6 + b"\x01")),  # an arc past 2**35
    st.just(_ber(0x06, b"\x2b\x01" * 70)),  # more arcs than we read
)


@st.composite
def snmp_responses(draw: st.DrawFn) -> tuple[bytes, bool]:
    """GetResponses, sometimes with a hostile varbind or cut short; and whether it must parse."""
    values = draw(st.lists(st.tuples(_good_values, st.booleans()), max_size=6))
    bad = draw(st.booleans()) and bool(values)
    oids = [SYS_DESCR_OID, _ber(0x06, bytes([0x2B, 6, 1, 4, 1, 0x83, 0xFF, 0x7F, 0]))]
    bodies = [oids[i] + v for v, i in values]
    if bad:
        bodies[-1] = draw(
            st.one_of(_bad_names.map(lambda o: o + values[-1][0]), _bad_values.map(lambda v: oids[0] + v))
        )
    varbinds = _ber(0x30, b"".join(_ber(0x30, body) for body in bodies))
    pdu = _ber(0xA2, _int(1) + _int(draw(st.integers(-5, 40))) + _int(0) + varbinds)
    community = draw(st.sampled_from([b"public", b"\x00\x1b\x9b"]))
    message = _ber(0x30, _int(1) + _ber(0x04, community) + pdu)
    cut = draw(st.integers(0, len(message)))
    whole = draw(st.booleans()) or cut == len(message)
    return (message if whole else message[:cut]), whole and not bad and community == b"public"


@settings(max_examples=500, deadline=None)
@given(snmp_responses())
def test_snmp_near_valid_responses(case: tuple[bytes, bool]) -> None:
    data, valid = case
    msg = snmp.v2c_answer(data)
    assert (msg is not None) == valid
    if msg is not None:
        ident = snmp.describe(msg, None)
        assert_ident_clean(ident, PARSED)
        descr = ident.details.get("sys_descr")
        assert descr is None or len(descr) <= 513
    any_msg = snmp.parse_message(data)
    if any_msg is not None:
        assert_ident_clean(snmp.describe(any_msg, any_msg), PARSED)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64), st.integers(-(2**40), 2**40), st.integers(-(2**40), 2**40))
def test_snmp_v3_engine_fields(engine: bytes, boots: int, uptime: int) -> None:
    usm = _ber(0x30, _ber(0x04, engine) + _int(boots) + _int(uptime) + _ber(0x04, b"") * 3)
    header = _ber(0x30, _int(99) + _int(65507) + _ber(0x04, b"\x00") + _int(3))
    scoped = _ber(
        0x30, _ber(0x04, b"") + _ber(0x04, b"") + _ber(0xA8, _int(99) + _int(0) + _int(0) + _ber(0x30, b""))
    )
    msg = snmp.v3_answer(_ber(0x30, _int(3) + header + _ber(0x04, usm) + scoped), 99)
    assert (msg is not None) == bool(engine)
    if msg is not None:
        ident = snmp.describe(None, msg)
        assert_ident_clean(ident, PARSED)
        assert len(ident.details["engine_id"]) <= 64
