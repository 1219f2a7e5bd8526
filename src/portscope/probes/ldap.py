"""LDAP: an anonymous read of the root DSE, then StartTLS when the server offers it.

Why the root DSE: RFC 4512 makes it readable before any bind on purpose (clients discover the
server's capabilities there), so it names the vendor, the LDAP versions, the naming contexts (which
directory this is) and whether StartTLS is offered, without credentials. When StartTLS is offered
we do it (RFC 4511 extended operation), to report the certificate an `ldapsearch -ZZ` would see.

BER is read by the small reader below: definite lengths only (LDAP forbids the others), every
length checked against the bytes there, depth and counts bounded.

Fields in details: vendor, vendor_version, ldap_versions (list of int), naming_contexts (list),
sasl_mechanisms (list), starttls (bool: offered), starttls_refused (why it failed), result_code and diagnostic (the search failed or
the server sent a notice of disconnection).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from portscope.probes.base import Ident, Probe, Session, clean_text

MESSAGE_CAP = 64 * 1024  # a root DSE entry is a few KiB (Active Directory's ~4 KiB)
MAX_MESSAGES = 8
MAX_VALUES = 64
STARTTLS_OID = "1.3.6.1.4.1.1466.20037"
NOTICE_OF_DISCONNECTION = "1.3.6.1.4.1.1466.20036"
ATTRIBUTES = (
    "supportedLDAPVersion",
    "vendorName",
    "vendorVersion",
    "namingContexts",
    "supportedSASLMechanisms",
    "supportedExtension",
    "objectClass",
    "forestFunctionality",
)
# LDAP's response operations (RFC 4511 [APPLICATION n]): bind, search entry, search done, search
# reference, modify, add, delete, modDN, compare, extended, intermediate
_RESPONSES = frozenset({0x61, 0x64, 0x65, 0x67, 0x69, 0x6B, 0x6D, 0x6F, 0x73, 0x78, 0x79})
_VERSION = re.compile(r"([0-9]+(?:\.[0-9]+)+)")


# -- BER ------------------------------------------------------------------------------------------------


def tlv(tag: int, content: bytes) -> bytes:
    n = len(content)
    if n < 0x80:
        return bytes([tag, n]) + content
    size = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(size)]) + size + content


def _integer(tag: int, value: int) -> bytes:
    return tlv(tag, value.to_bytes(max(1, (value.bit_length() + 8) // 8), "big", signed=True))


def search_request(message_id: int = 1) -> bytes:
    """searchRequest: base "", scope baseObject, (objectClass=*), the root DSE attributes we report."""
    attrs = b"".join(tlv(0x04, a.encode()) for a in ATTRIBUTES)
    op = tlv(
        0x63,
        tlv(0x04, b"")
        + _integer(0x0A, 0)  # scope: baseObject
        + _integer(0x0A, 0)  # derefAliases: never
        + _integer(0x02, 0)  # sizeLimit
        + _integer(0x02, 10)  # timeLimit, seconds
        + tlv(0x01, b"\x00")  # typesOnly: false
        + tlv(0x87, b"objectClass")  # filter: present
        + tlv(0x30, attrs),
    )
    return tlv(0x30, _integer(0x02, message_id) + op)


def starttls_request(message_id: int = 2) -> bytes:
    return tlv(0x30, _integer(0x02, message_id) + tlv(0x77, tlv(0x80, STARTTLS_OID.encode())))


def read_tlv(data: bytes, pos: int, end: int) -> tuple[int, int, int] | None:
    """(tag, content start, content end) of the element at `pos`, which must fit before `end`."""
    if pos + 2 > end:
        return None
    tag, first = data[pos], data[pos + 1]
    if tag & 0x1F == 0x1F:  # multi-byte tags: LDAP has none
        return None
    pos += 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if count == 0 or count > 4 or pos + count > end:  # indefinite length, or > 4 GiB
            return None
        length = int.from_bytes(data[pos : pos + count], "big")
        pos += count
    if pos + length > end:
        return None
    return tag, pos, pos + length


def _children(
    data: bytes, start: int, end: int, limit: int = MAX_VALUES
) -> list[tuple[int, int, int]] | None:
    out: list[tuple[int, int, int]] = []
    pos = start
    while pos < end and len(out) < limit:
        element = read_tlv(data, pos, end)
        if element is None:
            return None
        out.append(element)
        pos = element[2]
    return out


def _int_value(data: bytes, start: int, end: int) -> int | None:
    if not 1 <= end - start <= 4:
        return None
    return int.from_bytes(data[start:end], "big", signed=True)


@dataclass(slots=True)
class Message:
    """One LDAPMessage from the server: its operation and what we read of it."""

    message_id: int
    op: int  # the [APPLICATION n] tag byte
    result_code: int | None = None
    diagnostic: str | None = None
    response_name: str | None = None  # extendedResp
    attributes: dict[str, list[str]] = field(default_factory=dict)  # searchResEntry


def message_length(data: bytes) -> int | None:
    """The whole size of the LDAPMessage starting `data` (header included), once the header is there."""
    if len(data) < 2 or data[0] != 0x30:
        return None
    first = data[1]
    if first < 0x80:
        return 2 + first
    count = first & 0x7F
    if count == 0 or count > 4 or len(data) < 2 + count:
        return None
    return 2 + count + int.from_bytes(data[2 : 2 + count], "big")


def parse_message(data: bytes) -> Message | None:
    """The first LDAPMessage in `data`, when it is a response LDAP servers send. Pure, bounded: fuzzed."""
    outer = read_tlv(data, 0, min(len(data), MESSAGE_CAP + 6))
    if outer is None or outer[0] != 0x30:
        return None
    parts = _children(data, outer[1], outer[2], 3)
    if not parts or len(parts) < 2 or parts[0][0] != 0x02:
        return None
    message_id = _int_value(data, parts[0][1], parts[0][2])
    tag, start, end = parts[1]
    if message_id is None or message_id < 0 or tag not in _RESPONSES:
        return None
    msg = Message(message_id, tag)
    if tag == 0x64:
        return msg if _entry(data, start, end, msg) else None
    if tag == 0x73:  # search result reference: URIs, nothing we report
        return msg
    fields = _children(data, start, end, 8)
    if not fields or len(fields) < 3 or fields[0][0] != 0x0A or fields[1][0] != 0x04 or fields[2][0] != 0x04:
        return None  # every LDAPResult: resultCode, matchedDN, diagnosticMessage
    msg.result_code = _int_value(data, fields[0][1], fields[0][2])
    if msg.result_code is None or not 0 <= msg.result_code <= 0xFFFF:
        return None
    msg.diagnostic = clean_text(data[fields[2][1] : fields[2][2]], 200)
    for f in fields[3:]:
        if f[0] == 0x8A:  # extendedResp responseName
            msg.response_name = clean_text(data[f[1] : f[2]], 64)
    return msg


def _entry(data: bytes, start: int, end: int, msg: Message) -> bool:
    parts = _children(data, start, end, 2)
    if not parts or len(parts) < 2 or parts[0][0] != 0x04 or parts[1][0] != 0x30:
        return False
    attributes = _children(data, parts[1][1], parts[1][2])
    if attributes is None:
        return False
    for a_tag, a_start, a_end in attributes:
        pair = _children(data, a_start, a_end, 2) if a_tag == 0x30 else None
        if not pair or len(pair) < 2 or pair[0][0] != 0x04 or pair[1][0] != 0x31:
            return False
        values = _children(data, pair[1][1], pair[1][2])
        if values is None:
            return False
        name = clean_text(data[pair[0][1] : pair[0][2]], 64)
        msg.attributes.setdefault(name, []).extend(clean_text(data[s:e], 256) for _, s, e in values)
        del msg.attributes[name][MAX_VALUES:]
    return True


def recognize(data: bytes) -> Ident | None:
    """An LDAP response sent unprompted: typically a notice of disconnection answering bytes that
    were not LDAP (Active Directory does this to a TLS ClientHello or an HTTP request)."""
    msg = parse_message(data)
    if msg is None or msg.result_code is None:
        return None
    details: dict[str, object] = {"result_code": msg.result_code}
    if msg.diagnostic:
        details["diagnostic"] = msg.diagnostic
    return Ident("ldap", details=details, confidence="high" if msg.response_name else "low")


# -- the probe ------------------------------------------------------------------------------------------


async def _read_message(session: Session) -> Message | None:
    conn = session.conn
    assert conn is not None
    timeout = session.settings.read_timeout
    head = await conn.read_exactly(2, session.deadline.left(timeout))
    if len(head) == 2 and head[0] == 0x30 and head[1] > 0x80:
        head += await conn.read_exactly(head[1] & 0x7F, session.deadline.left(timeout))
    total = message_length(head)
    if total is None or total > MESSAGE_CAP:
        return None
    body = await conn.read_exactly(total - len(head), session.deadline.left(timeout))
    return parse_message(head + body)


async def run(session: Session, banner: bytes) -> Ident | None:
    conn = session.conn
    if conn is None or not await conn.write(search_request(1)):
        return None
    details: dict[str, object] = {}
    ident = Ident("ldap", details=details)
    attributes: dict[str, list[str]] = {}
    seen = False
    for _ in range(MAX_MESSAGES):
        msg = await _read_message(session)
        if msg is None:
            break
        seen = True
        if msg.op == 0x64 and msg.message_id == 1:
            attributes.update({k.lower(): v for k, v in msg.attributes.items()})
        elif msg.op in (0x65, 0x78):
            if msg.result_code:
                details["result_code"] = msg.result_code
                if msg.diagnostic:
                    details["diagnostic"] = msg.diagnostic
            break
    if not seen:
        return None
    _describe(ident, attributes)
    if details.get("starttls") and conn.tls is None and not conn.eof:
        await _starttls(session, ident)
    return ident


def _describe(ident: Ident, attrs: dict[str, list[str]]) -> None:
    details = ident.details
    if vendor := attrs.get("vendorname"):
        details["vendor"] = ident.product = vendor[0]
    if vendor_version := attrs.get("vendorversion"):
        details["vendor_version"] = vendor_version[0]
        m = _VERSION.search(vendor_version[0])
        ident.version = m.group(1) if m else None
    if "openldaprootdse" in (c.lower() for c in attrs.get("objectclass", [])):
        ident.product = ident.product or "OpenLDAP"
    if "forestfunctionality" in attrs:
        ident.product = ident.product or "Active Directory"
    versions = [int(v) for v in attrs.get("supportedldapversion", []) if v.isdigit() and len(v) <= 2]
    if versions:
        details["ldap_versions"] = sorted(set(versions))
    if contexts := attrs.get("namingcontexts"):
        details["naming_contexts"] = contexts
    if mechanisms := attrs.get("supportedsaslmechanisms"):
        details["sasl_mechanisms"] = mechanisms
    if attrs:
        details["starttls"] = STARTTLS_OID in attrs.get("supportedextension", [])


async def _starttls(session: Session, ident: Ident) -> None:
    conn = session.conn
    assert conn is not None
    if not await conn.write(starttls_request(2)):
        return
    msg = await _read_message(session)
    if msg is None or msg.op != 0x78 or msg.result_code != 0:
        refused = msg.diagnostic if msg is not None and msg.diagnostic else "no answer we understood"
        ident.details["starttls_refused"] = refused
        return
    info, _plain = await session.start_tls(conn)
    info.starttls = True
    ident.tls = info


PROBE = Probe(
    name="ldap",
    names=frozenset({"ldap", "ldaps"}),
    ports=frozenset({389, 3268}),
    recognize=recognize,
    run=run,
    rarity=5,
)
