"""DNS over UDP and TCP (and inside TLS on 853): is it a DNS server, does it recurse for us, is it
authoritative, and which product answers, from the `version.bind` CH TXT query that BIND, Unbound,
dnsmasq, NSD, Knot and PowerDNS answer unless told to hide it.

Two queries: `. IN NS` (every DNS server answers it, if only to refuse; the answer's flags and rcode
say how it treats a stranger: REFUSED from a server that will not recurse for us) and `version.bind
CH TXT`. Over UDP both go out at once, so a silent port costs one read timeout, not two.

The parser is our own and small on purpose (header, question, resource records, TXT rdata): every
count, length and compression pointer is checked against the bytes actually there, pointers must
point backwards and are capped in number, so a hostile answer can neither loop nor over-read.

Fields in details: transport ("udp"/"tcp"), rcode ("NOERROR", "REFUSED", ...), recursion_available,
authoritative, answers (the answer count; these four come from the `. NS` answer, or from the
version.bind one when only that was answered), truncated (only when TC was set), version_bind (the
cleaned TXT, when given).
"""

from __future__ import annotations

import asyncio
import os
import re
import struct
from dataclasses import dataclass, field

from portscope.net.udp_payloads import dns_query
from portscope.probes.base import Ident, Probe, Session, clean_text
from portscope.probes.conn import ConnectFailed

HEADER = 12
MAX_RECORDS = 32  # records parsed per section; the rest only counted
MAX_POINTERS = 16  # compression pointers followed in one name
MAX_NAME = 255  # wire octets of a name (RFC 1035 3.1)
TCP_CAP = 16 * 1024  # bytes of one TCP answer we read; ours are small, a flood is cut here
UDP_CAP = 4096
T_NS, T_TXT = 2, 16
C_CH = 3
RCODES = (
    "NOERROR",
    "FORMERR",
    "SERVFAIL",
    "NXDOMAIN",
    "NOTIMP",
    "REFUSED",
    "YXDOMAIN",
    "YXRRSET",
    "NXRRSET",
    "NOTAUTH",
    "NOTZONE",
)


@dataclass(slots=True)
class Record:
    name: str
    rtype: int
    rclass: int
    ttl: int
    rdata: bytes  # a slice of the message, at most its rdlength
    rdata_offset: int  # where rdata starts in the message (names inside rdata may point back)


@dataclass(slots=True)
class Message:
    """A parsed DNS message; sections past a malformed point are cut (`complete` False)."""

    id: int
    qr: bool
    opcode: int
    aa: bool
    tc: bool
    rd: bool
    ra: bool
    rcode: int
    counts: tuple[int, int, int, int]  # QD, AN, NS, AR as the header claims
    question: tuple[str, int, int] | None = None  # first question: name, type, class
    answers: list[Record] = field(default_factory=list)
    complete: bool = False

    @property
    def rcode_name(self) -> str:
        return RCODES[self.rcode] if self.rcode < len(RCODES) else f"RCODE{self.rcode}"


def read_name(data: bytes, offset: int) -> tuple[str, int] | None:
    """The name at `offset` (dotted, non-printable octets as \\DDD) and the offset after it.

    Why pointers must go strictly backwards: it makes a loop impossible whatever the bytes say,
    and MAX_POINTERS and MAX_NAME bound the work on top.
    """
    labels: list[str] = []
    pos, end, jumps, length = offset, None, 0, 0
    while True:
        if pos >= len(data):
            return None
        n = data[pos]
        if n == 0:
            if end is None:
                end = pos + 1
            break
        if n & 0xC0 == 0xC0:
            if pos + 1 >= len(data):
                return None
            target = ((n & 0x3F) << 8) | data[pos + 1]
            if end is None:
                end = pos + 2
            jumps += 1
            if target >= pos or jumps > MAX_POINTERS:
                return None
            pos = target
            continue
        if n & 0xC0:  # 0x40/0x80: extended label types (RFC 6891 deprecated them): not ours to read
            return None
        label = data[pos + 1 : pos + 1 + n]
        length += n + 1
        if len(label) < n or length > MAX_NAME:
            return None
        labels.append(
            "".join(chr(b) if 0x21 <= b < 0x7F and b not in b".\\" else f"\\{b:03d}" for b in label)
        )
        pos += n + 1
    return (".".join(labels) + ".") if labels else ".", end


def _question(data: bytes, pos: int) -> tuple[tuple[str, int, int], int] | None:
    got = read_name(data, pos)
    if got is None or got[1] + 4 > len(data):
        return None
    name, pos = got
    qtype, qclass = struct.unpack_from(">HH", data, pos)
    return (clean_text(name, MAX_NAME), qtype, qclass), pos + 4


def parse_message(data: bytes) -> Message | None:
    """A DNS response (QR set); None when `data` is shorter than a header or is a query."""
    if len(data) < HEADER:
        return None
    tid, flags, qd, an, ns, ar = struct.unpack_from(">HHHHHH", data)
    if not flags & 0x8000:
        return None
    msg = Message(
        id=tid,
        qr=True,
        opcode=(flags >> 11) & 0xF,
        aa=bool(flags & 0x0400),
        tc=bool(flags & 0x0200),
        rd=bool(flags & 0x0100),
        ra=bool(flags & 0x0080),
        rcode=flags & 0xF,
        counts=(qd, an, ns, ar),
    )
    pos = HEADER
    for i in range(min(qd, MAX_RECORDS)):
        got = _question(data, pos)
        if got is None:
            return msg
        question, pos = got
        if i == 0:
            msg.question = question
    if qd > MAX_RECORDS:
        return msg
    for _ in range(min(an, MAX_RECORDS)):
        owner = read_name(data, pos)
        if owner is None or owner[1] + 10 > len(data):
            return msg
        name, pos = owner
        rtype, rclass, ttl, rdlength = struct.unpack_from(">HHIH", data, pos)
        pos += 10
        if pos + rdlength > len(data):
            return msg
        msg.answers.append(
            Record(clean_text(name, MAX_NAME), rtype, rclass, ttl, data[pos : pos + rdlength], pos)
        )
        pos += rdlength
    msg.complete = an <= MAX_RECORDS
    return msg


def txt_strings(rdata: bytes) -> list[bytes]:
    """The <character-string>s of TXT rdata (RFC 1035 3.3.14); a short last one is kept as it is."""
    out: list[bytes] = []
    pos = 0
    while pos < len(rdata) and len(out) < 64:
        n = rdata[pos]
        out.append(rdata[pos + 1 : pos + 1 + n])
        pos += 1 + n
    return out


def version_text(msg: Message) -> str | None:
    """The first TXT answer of a version.bind response, cleaned; None when there is none."""
    for rec in msg.answers:
        if rec.rtype == T_TXT:
            text = clean_text(b"".join(txt_strings(rec.rdata)), 200)
            return text or None
    return None


_PRODUCTS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"^dnsmasq-([\w.\-+~]+)"), "dnsmasq"),
    (re.compile(r"^unbound ([\w.\-+~]+)", re.I), "Unbound"),
    (re.compile(r"^NSD ([\w.\-+~]+)"), "NSD"),
    (re.compile(r"^Knot DNS ([\w.\-+~]+)"), "Knot DNS"),
    (re.compile(r"^Knot Resolver ([\w.\-+~]+)"), "Knot Resolver"),
    (re.compile(r"^PowerDNS Recursor ([\w.\-+~]+)"), "PowerDNS Recursor"),
    (re.compile(r"^PowerDNS Authoritative Server ([\w.\-+~]+)"), "PowerDNS Authoritative Server"),
    (re.compile(r"^CoreDNS-([\w.\-+~]+)"), "CoreDNS"),
    (re.compile(r"^(9\.\d+\.\d+[\w.\-+~]*)"), "BIND"),  # BIND answers its bare version number
)


def product_of(version_bind: str) -> tuple[str | None, str | None]:
    """(product, version) from a version.bind answer; (None, None) for a string we do not know."""
    for pattern, product in _PRODUCTS:
        m = pattern.match(version_bind)
        if m:
            return product, m.group(1)[:40]
    return None, None


def recognize(data: bytes) -> Ident | None:
    """DNS over TCP: a 2-byte length, then a response header whose counts fit in that length.

    Why so strict: this runs on every banner and every reply to other probes, and two length bytes
    plus a set bit are easy to hit by chance; a parsable question makes it a DNS message for sure.
    """
    if len(data) < 2 + HEADER:
        return None
    length = int.from_bytes(data[:2], "big")
    if length < HEADER:
        return None
    body = data[2 : 2 + length]
    msg = parse_message(body)
    if msg is None or msg.opcode not in (0, 1, 2, 4, 5) or msg.counts[0] > 1:
        return None
    qd, an, ns, ar = msg.counts
    if HEADER + qd * 5 + (an + ns + ar) * 11 > length:
        return None
    complete = len(body) == length and msg.complete and (qd == 0 or msg.question is not None)
    ident = describe(msg, "tcp")
    ident.confidence = "high" if complete else "low"
    return ident


def describe(msg: Message, transport: str, version_msg: Message | None = None) -> Ident:
    details: dict[str, object] = {
        "transport": transport,
        "rcode": msg.rcode_name,
        "recursion_available": msg.ra,
        "authoritative": msg.aa,
        "answers": msg.counts[1],
    }
    if msg.tc:
        details["truncated"] = True
    ident = Ident("dns", details=details)
    if version_msg is not None and version_msg.rcode == 0 and (text := version_text(version_msg)):
        details["version_bind"] = text
        ident.product, ident.version = product_of(text)
    return ident


def _tid() -> bytes:
    return os.urandom(2)


def _version_query(tid: bytes) -> bytes:
    return dns_query("version.bind", T_TXT, tid, qclass=C_CH)


def _answer_to(data: bytes | None, query: bytes) -> Message | None:
    """The response to `query` only: same ID, and the same question when the server echoes one."""
    if not data:
        return None
    msg = parse_message(data)
    if msg is None or msg.id != int.from_bytes(query[:2], "big"):
        return None
    asked = _question(query, HEADER)
    if msg.question is not None and asked is not None:
        name, qtype, qclass = msg.question
        if (name.lower(), qtype, qclass) != (asked[0][0].lower(), asked[0][1], asked[0][2]):
            return None
    return msg


async def run_udp(session: Session) -> Ident | None:
    ns_query, version_query = dns_query("", T_NS, _tid()), _version_query(_tid())
    ns_raw, version_raw = await asyncio.gather(
        session.exchange(ns_query, UDP_CAP), session.exchange(version_query, UDP_CAP)
    )
    main, version = _answer_to(ns_raw, ns_query), _answer_to(version_raw, version_query)
    first = main if main is not None else version
    return None if first is None else describe(first, "udp", version)


async def _tcp_ask(session: Session, query: bytes, tls: bool) -> Message | None:
    conn = session.conn
    if conn is None or conn.eof:
        if tls:  # a fresh connection would be plain TCP to a TLS port
            return None
        try:
            conn = await session.connect()
        except ConnectFailed:
            return None
    if not await conn.write(struct.pack(">H", len(query)) + query):
        return None
    head = await conn.read_exactly(2, session.deadline.left(session.settings.read_timeout))
    if len(head) < 2:
        return None
    length = int.from_bytes(head, "big")
    body = await conn.read_exactly(min(length, TCP_CAP), session.deadline.left(session.settings.read_timeout))
    if length > TCP_CAP:  # the rest of it is still coming: this connection cannot carry another query
        await session.close()
    return _answer_to(body, query)


async def run(session: Session, banner: bytes) -> Ident | None:
    """RFC 1035 4.2.2 (and RFC 7766): each message behind a 2-byte length; the client speaks first."""
    if session.conn is None:
        return None
    tls = session.conn.tls is not None
    main = await _tcp_ask(session, dns_query("", T_NS, _tid()), tls)
    if main is None:
        return None
    version = None
    if not session.deadline.expired:
        version = await _tcp_ask(session, _version_query(_tid()), tls)
    return describe(main, "tcp", version)


PROBE = Probe(
    name="dns",
    names=frozenset({"dns", "domain", "dns-over-tls", "dot", "domain-s"}),
    ports=frozenset({53, 853}),
    recognize=recognize,
    run=run,
    udp_ports=frozenset({53}),
    run_udp=run_udp,
    rarity=3,
)
