"""SNMP (RFC 3416, 3412, 3414): does an agent answer, does it accept the community "public", what it
says it is (sysDescr.0), and which SNMP engine (vendor) runs it.

Two requests go out at once: an SNMPv2c GET of sysDescr.0 with community "public", and an SNMPv3
engine-discovery request (no user, no authentication, RFC 3414 4). An agent that does not know the
community stays silent (RFC 3584 says drop it), so v2c alone cannot tell "no SNMP" from "not
public"; every v3 agent answers the discovery with a Report and its engine ID, whose first four
bytes are the vendor's IANA enterprise number. Both fit in one read timeout.

Our BER decoder reads only what SNMP uses (definite lengths of at most 4 bytes, low tag numbers,
fixed nesting), and checks every length against the bytes that are there.

Fields in details: version ("2c" when the community answered, else "3"), community, community_accepted,
sys_descr (whitespace collapsed, cleaned), error_status (when not noError), and from v3: v3 (bool),
engine_id (hex), enterprise (number), vendor (when we know the number), engine_boots, engine_time
(seconds since the engine's last boot).
"""

from __future__ import annotations

import asyncio
import os
import re
from dataclasses import dataclass, field

from portscope.net.udp_payloads import ber, snmp_get
from portscope.probes.base import Ident, Probe, Session, clean_text

COMMUNITY = b"public"
SYS_DESCR = "1.3.6.1.2.1.1.1.0"
MAX_VARBINDS = 16
MAX_ARCS = 64
VALUE_CAP = 2048  # bytes of one value we keep
T_INTEGER, T_OCTETS, T_NULL, T_OID, T_SEQUENCE = 0x02, 0x04, 0x05, 0x06, 0x30
PDU_GET, PDU_RESPONSE, PDU_REPORT = 0xA0, 0xA2, 0xA8
EXCEPTIONS = {0x80: "noSuchObject", 0x81: "noSuchInstance", 0x82: "endOfMibView"}
ERRORS = (
    "noError",
    "tooBig",
    "noSuchName",
    "badValue",
    "readOnly",
    "genErr",
    "noAccess",
    "wrongType",
    "wrongLength",
    "wrongEncoding",
    "wrongValue",
    "noCreation",
    "inconsistentValue",
    "resourceUnavailable",
    "commitFailed",
    "undoFailed",
    "authorizationError",
    "notWritable",
    "inconsistentName",
)
# IANA Private Enterprise Numbers of common SNMP engines (from the public PEN registry)
VENDORS = {
    9: "Cisco",
    11: "HP",
    311: "Microsoft",
    674: "Dell",
    1991: "Brocade (Foundry)",
    2011: "Huawei",
    2636: "Juniper",
    4526: "Netgear",
    6876: "VMware",
    8072: "Net-SNMP",
    12356: "Fortinet",
    14988: "MikroTik",
    25461: "Palo Alto Networks",
    30065: "Arista",
    41112: "Ubiquiti",
}
_SPACE = re.compile(r"\s+")


class BerError(ValueError):
    """The bytes are not the BER we expect; the message is not (our kind of) SNMP."""


def tlv(data: bytes, pos: int, end: int) -> tuple[int, int, int]:
    """(tag, value start, value end) of the element at `pos`, inside data[:end]."""
    if pos + 2 > end or end > len(data):
        raise BerError("truncated")
    tag, n = data[pos], data[pos + 1]
    if tag & 0x1F == 0x1F:
        raise BerError("high tag number")
    pos += 2
    if n & 0x80:
        k = n & 0x7F
        if k == 0 or k > 4 or pos + k > end:
            raise BerError("bad length")
        n = int.from_bytes(data[pos : pos + k], "big")
        pos += k
    if pos + n > end:
        raise BerError("length past the end")
    return tag, pos, pos + n


def expect(data: bytes, pos: int, end: int, tag: int) -> tuple[int, int]:
    got, start, stop = tlv(data, pos, end)
    if got != tag:
        raise BerError(f"tag {got:#x}, wanted {tag:#x}")
    return start, stop


def integer(data: bytes, pos: int, end: int) -> tuple[int, int]:
    """(value, next position); Counter64 needs 9 bytes, nothing in SNMP more."""
    start, stop = expect(data, pos, end, T_INTEGER)
    if not 0 < stop - start <= 9:
        raise BerError("bad integer")
    return int.from_bytes(data[start:stop], "big", signed=True), stop


def octets(data: bytes, pos: int, end: int) -> tuple[bytes, int]:
    start, stop = expect(data, pos, end, T_OCTETS)
    return data[start : min(stop, start + VALUE_CAP)], stop


def oid_text(body: bytes) -> str:
    arcs: list[int] = []
    value = 0
    for i, b in enumerate(body):
        value = (value << 7) | (b & 0x7F)
        if value >= 2**35 or len(arcs) >= MAX_ARCS:
            raise BerError("OID too long")
        if not b & 0x80:
            if not arcs:
                first = min(value // 40, 2)
                arcs += [first, value - 40 * first]
            else:
                arcs.append(value)
            value = 0
        elif i == len(body) - 1:
            raise BerError("OID cut")
    return ".".join(map(str, arcs))


@dataclass(slots=True)
class Message:
    version: int  # 0 = v1, 1 = v2c, 3 = v3
    community: bytes | None = None
    msg_id: int | None = None  # v3
    engine_id: bytes | None = None
    engine_boots: int | None = None
    engine_time: int | None = None
    pdu_type: int | None = None  # None: a v3 scoped PDU we cannot read (encrypted)
    request_id: int = 0
    error_status: int = 0
    varbinds: list[tuple[str, int, bytes]] = field(default_factory=list)  # oid, value tag, value


def parse_message(data: bytes) -> Message | None:
    """An SNMP v1/v2c/v3 message; None for anything that is not one."""
    try:
        return _parse(data)
    except BerError:
        return None


def _parse(data: bytes) -> Message:
    start, end = expect(data, 0, len(data), T_SEQUENCE)
    version, pos = integer(data, start, end)
    msg = Message(version=version)
    if version in (0, 1):
        msg.community, pos = octets(data, pos, end)
    elif version == 3:
        start, stop = expect(data, pos, end, T_SEQUENCE)  # msgGlobalData
        msg.msg_id, _ = integer(data, start, stop)
        params, pos = octets(data, stop, end)
        _usm(params, msg)
        tag, start, stop = tlv(data, pos, end)
        if tag != T_SEQUENCE:
            return msg  # encrypted scoped PDU
        _, after = octets(data, start, stop)  # contextEngineID
        _, pos = octets(data, after, stop)  # contextName
        end = stop
    else:
        raise BerError("unknown version")
    _pdu(data, pos, end, msg)
    return msg


def _usm(params: bytes, msg: Message) -> None:
    """UsmSecurityParameters (RFC 3414 2.4): the authoritative engine's ID, boots and time."""
    start, stop = expect(params, 0, len(params), T_SEQUENCE)
    msg.engine_id, pos = octets(params, start, stop)
    msg.engine_boots, pos = integer(params, pos, stop)
    msg.engine_time, pos = integer(params, pos, stop)


def _pdu(data: bytes, pos: int, end: int, msg: Message) -> None:
    tag, start, stop = tlv(data, pos, end)
    if not 0xA0 <= tag <= 0xA8:
        raise BerError("not a PDU")
    msg.pdu_type = tag
    msg.request_id, pos = integer(data, start, stop)
    msg.error_status, pos = integer(data, pos, stop)
    _, pos = integer(data, pos, stop)  # error-index
    pos, vend = expect(data, pos, stop, T_SEQUENCE)
    while pos < vend and len(msg.varbinds) < MAX_VARBINDS:
        vstart, vstop = expect(data, pos, vend, T_SEQUENCE)
        ostart, ostop = expect(data, vstart, vstop, T_OID)
        vtag, value_start, value_stop = tlv(data, ostop, vstop)
        value = data[value_start : min(value_stop, value_start + VALUE_CAP)]
        msg.varbinds.append((oid_text(data[ostart:ostop]), vtag, value))
        pos = vstop


def _int(n: int) -> bytes:
    return ber(T_INTEGER, n.to_bytes(max(1, (n.bit_length() + 8) // 8), "big", signed=True))


def discovery_request(msg_id: int) -> bytes:
    """SNMPv3 GET with no user and no security (reportable): any v3 agent answers with a Report."""
    header = ber(T_SEQUENCE, _int(msg_id) + _int(65507) + ber(T_OCTETS, b"\x04") + _int(3))
    usm = ber(T_SEQUENCE, ber(T_OCTETS, b"") + _int(0) + _int(0) + ber(T_OCTETS, b"") * 3)
    pdu = ber(PDU_GET, _int(msg_id) + _int(0) + _int(0) + ber(T_SEQUENCE, b""))
    scoped = ber(T_SEQUENCE, ber(T_OCTETS, b"") + ber(T_OCTETS, b"") + pdu)
    return ber(T_SEQUENCE, _int(3) + header + ber(T_OCTETS, usm) + scoped)


def clean_descr(value: bytes) -> str:
    """sysDescr as one line: Cisco and Windows put CR LF in it, which would show as escapes."""
    return clean_text(_SPACE.sub(" ", value.decode("utf-8", "replace")), 512)


def v2c_answer(data: bytes | None) -> Message | None:
    msg = parse_message(data or b"")
    if msg is None or msg.version != 1 or msg.pdu_type != PDU_RESPONSE or msg.community != COMMUNITY:
        return None
    return msg


def v3_answer(data: bytes | None, msg_id: int) -> Message | None:
    msg = parse_message(data or b"")
    if msg is None or msg.version != 3 or msg.msg_id != msg_id or not msg.engine_id:
        return None
    return msg


def describe(v2c: Message | None, v3: Message | None) -> Ident:
    details: dict[str, object] = {
        "version": "2c" if v2c is not None else "3",
        "community": COMMUNITY.decode(),
        "community_accepted": v2c is not None,
        "v3": v3 is not None,
    }
    ident = Ident("snmp", details=details)
    if v2c is not None:
        if v2c.error_status:
            s = v2c.error_status
            details["error_status"] = ERRORS[s] if 0 <= s < len(ERRORS) else str(s)
        for oid, tag, value in v2c.varbinds:
            if oid == SYS_DESCR and tag == T_OCTETS:
                details["sys_descr"] = clean_descr(value)
            elif oid == SYS_DESCR and tag in EXCEPTIONS:
                details["sys_descr_error"] = EXCEPTIONS[tag]
    if v3 is not None and v3.engine_id:
        engine = v3.engine_id[:32]
        details["engine_id"] = engine.hex()
        if len(engine) >= 4:  # RFC 3411 SnmpEngineID, either format: the enterprise number comes first
            enterprise = int.from_bytes(engine[:4], "big") & 0x7FFFFFFF
            details["enterprise"] = enterprise
            if vendor := VENDORS.get(enterprise):
                details["vendor"] = vendor
                ident.product = vendor
        details["engine_boots"] = v3.engine_boots
        details["engine_time"] = v3.engine_time
    return ident


async def run_udp(session: Session) -> Ident | None:
    msg_id = int.from_bytes(os.urandom(4), "big") & 0x7FFFFFFF or 1
    v2c_raw, v3_raw = await asyncio.gather(
        session.exchange(snmp_get(COMMUNITY)), session.exchange(discovery_request(msg_id))
    )
    v2c, v3 = v2c_answer(v2c_raw), v3_answer(v3_raw, msg_id)
    if v2c is None and v3 is None:
        return None
    return describe(v2c, v3)


PROBE = Probe(
    name="snmp",
    names=frozenset({"snmp"}),
    udp_ports=frozenset({161}),
    run_udp=run_udp,
    rarity=4,
)
