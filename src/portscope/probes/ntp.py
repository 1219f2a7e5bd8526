"""NTP (RFC 5905): is a time server answering, is it synchronised, to what, and how far is our clock
from it; plus, when the server allows control queries, which daemon it is (ntpd, NTPsec).

An NTPv4 client packet carries our clock in its transmit timestamp; a real server copies it into the
origin field of its reply, which both proves the reply answers us and gives the four timestamps of
the offset. A mode 6 "read variables" query (RFC 9327) goes out at the same time: ntpd and NTPsec
answer it with their version string unless `restrict ... noquery` forbids it; chrony never does.

Fields in details: version (the reply's NTP version), leap (0-3; 3 = clock not synchronised),
stratum (0 = kiss-o'-death, 1 = primary, 16 = unsynchronised), synchronized, reference (the refid:
4 ASCII characters such as GPS or PPS at stratum 0-1, else the upstream's IPv4 address, which for an
IPv6 upstream is a hash), kiss_code (stratum 0), precision (log2 seconds), poll, root_delay_ms,
root_dispersion_ms, offset_ms (server clock minus ours), and from mode 6: daemon (the version
string) and system.
"""

from __future__ import annotations

import asyncio
import os
import re
import struct
import time
from dataclasses import dataclass

from portscope.probes.base import Ident, Probe, Session, clean_text

PACKET = 48
NTP_EPOCH = 2208988800  # 1900-01-01 to 1970-01-01, seconds
CONTROL_DATA_CAP = 468  # RFC 9327: data field of one mode 6 fragment
MODE_CLIENT, MODE_SERVER, MODE_CONTROL = 3, 4, 6
READVAR = 2
_VAR = re.compile(r'([A-Za-z_][\w.\-]{0,31})=("[^"]{0,400}"|[^,\s]{0,64})')


@dataclass(slots=True)
class Packet:
    leap: int
    version: int
    mode: int
    stratum: int
    poll: int
    precision: int
    root_delay: float  # seconds
    root_dispersion: float
    refid: bytes
    reference: int  # timestamps: 64-bit NTP format (32.32 fixed point since 1900, era-relative)
    origin: int
    receive: int
    transmit: int


def parse_packet(data: bytes) -> Packet | None:
    """The 48-byte header of any NTP packet (extension fields and MAC after it are ignored)."""
    if len(data) < PACKET:
        return None
    first, stratum, poll, precision, delay, dispersion = struct.unpack_from(">BBbbII", data)
    refid = data[12:16]
    reference, origin, receive, transmit = struct.unpack_from(">QQQQ", data, 16)
    return Packet(
        leap=first >> 6,
        version=(first >> 3) & 7,
        mode=first & 7,
        stratum=stratum,
        poll=poll,
        precision=precision,
        root_delay=delay / 65536,
        root_dispersion=dispersion / 65536,
        refid=refid,
        reference=reference,
        origin=origin,
        receive=receive,
        transmit=transmit,
    )


def to_ntp(unix: float) -> int:
    return int((unix + NTP_EPOCH) * 2**32) & (2**64 - 1)


def _diff(a: int, b: int) -> float:
    """a - b in seconds, for timestamps within 68 years of each other: right across era rollovers."""
    d = (a - b) & (2**64 - 1)
    if d >= 2**63:
        d -= 2**64
    return d / 2**32


def client_request(transmit: int) -> bytes:
    """NTPv4, mode 3 (client), everything zero but our transmit timestamp."""
    return struct.pack(">B", (4 << 3) | MODE_CLIENT) + b"\x00" * 39 + struct.pack(">Q", transmit)


def control_request(sequence: int) -> bytes:
    """Mode 6 READVAR for the system variables (association 0); version 2, as ntpq sends."""
    return struct.pack(">BBHHHHH", (2 << 3) | MODE_CONTROL, READVAR, sequence, 0, 0, 0, 0)


def reference_text(pkt: Packet) -> str:
    """The refid as people read it: a code at stratum 0 and 1 (and when printable at 16), else an IPv4."""
    printable = all(0x20 <= b < 0x7F for b in pkt.refid.rstrip(b"\x00")) and pkt.refid.rstrip(b"\x00")
    if pkt.stratum <= 1 or (pkt.stratum >= 16 and printable):
        return clean_text(pkt.refid.rstrip(b"\x00").decode("latin-1"), 8)
    return ".".join(str(b) for b in pkt.refid)


def describe(pkt: Packet, sent: int | None = None, received: int | None = None) -> Ident:
    details: dict[str, object] = {
        "version": pkt.version,
        "leap": pkt.leap,
        "stratum": pkt.stratum,
        "synchronized": pkt.leap != 3 and 1 <= pkt.stratum <= 15,
        "reference": reference_text(pkt),
        "precision": pkt.precision,
        "poll": pkt.poll,
        "root_delay_ms": round(pkt.root_delay * 1000, 3),
        "root_dispersion_ms": round(pkt.root_dispersion * 1000, 3),
    }
    if pkt.stratum == 0:
        details["kiss_code"] = details["reference"]
    elif sent is not None and received is not None and pkt.receive and pkt.transmit:
        offset = (_diff(pkt.receive, sent) + _diff(pkt.transmit, received)) / 2
        details["offset_ms"] = round(offset * 1000, 3)
    return Ident("ntp", details=details)


def answer_to(data: bytes | None, transmit: int) -> Packet | None:
    """A server reply (mode 4) that echoes our transmit timestamp as its origin; None otherwise."""
    pkt = parse_packet(data or b"")
    if pkt is None or pkt.mode != MODE_SERVER or not 1 <= pkt.version <= 4 or pkt.origin != transmit:
        return None
    return pkt


def control_vars(data: bytes | None, sequence: int) -> dict[str, str] | None:
    """The variables of a mode 6 READVAR response to `sequence` (first fragment only), cleaned."""
    if not data or len(data) < 12:
        return None
    first, op, seq, _status, _assoc, offset, count = struct.unpack_from(">BBHHHHH", data)
    if first & 7 != MODE_CONTROL or op & 0x80 == 0 or op & 0x40 or op & 0x1F != READVAR or seq != sequence:
        return None
    if offset != 0:
        return None
    text = data[12 : 12 + min(count, CONTROL_DATA_CAP)].decode("latin-1")
    out: dict[str, str] = {}
    for m in _VAR.finditer(text):
        if len(out) >= 64:
            break
        out.setdefault(m.group(1).lower(), clean_text(m.group(2).strip('"'), 200))
    return out


_DAEMONS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"^ntpd ([\w.\-+~]+?)(?:@|\s|$)"), "ntpd"),
    (re.compile(r"^ntpsec-([\w.\-+~]+?)(?:\s|$)", re.I), "NTPsec"),
)


def daemon_of(version: str) -> tuple[str | None, str | None]:
    for pattern, product in _DAEMONS:
        m = pattern.match(version)
        if m:
            return product, m.group(1)[:40]
    return None, None


async def run_udp(session: Session) -> Ident | None:
    sequence = int.from_bytes(os.urandom(2), "big") or 1
    sent_at = time.time()
    transmit = to_ntp(sent_at) ^ (int.from_bytes(os.urandom(2), "big"))  # low bits: unguessable

    async def timed() -> tuple[bytes | None, int]:
        reply = await session.exchange(client_request(transmit), 1024)
        return reply, to_ntp(time.time())

    (reply, received), control = await asyncio.gather(
        timed(), session.exchange(control_request(sequence), 1024)
    )
    pkt = answer_to(reply, transmit)
    variables = control_vars(control, sequence)
    if pkt is None and not variables:
        return None
    ident = describe(pkt, transmit, received) if pkt is not None else Ident("ntp")
    if variables:
        if daemon := variables.get("version"):
            ident.details["daemon"] = daemon
            ident.product, ident.version = daemon_of(daemon)
        if system := variables.get("system"):
            ident.details["system"] = system
    return ident


PROBE = Probe(
    name="ntp",
    names=frozenset({"ntp", "chrony", "ntpd"}),
    udp_ports=frozenset({123}),
    run_udp=run_udp,
    rarity=4,
)
