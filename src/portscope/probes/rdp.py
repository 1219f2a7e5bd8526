"""RDP: the X.224 connection request with an RDP negotiation request, and what the server selects
(MS-RDPBCGR 2.2.1.1 and 2.2.1.2), then the TLS certificate when it selected a TLS-based security.

Why this is enough: the first exchange of RDP already answers the admin's question "does this server
require Network Level Authentication (CredSSP), or does it show a login screen to anyone (standard
RDP security: RC4, no server authentication)?". We offer TLS and CredSSP; the server picks one or
says why it will not. When it picks one we run the TLS handshake it expects next, to report the
certificate (its subject usually names the machine), and hang up before CredSSP starts.

Fields in details: security (what the server selected: "standard RDP", "TLS", "CredSSP (NLA)", ...),
nla (bool: CredSSP before any session is built), selected_protocol (the raw number), server_flags
(words from the RDP_NEG_RSP flags), negotiation_failure and failure_reason (RDP_NEG_FAILURE), and
negotiation=False for a server too old to negotiate (standard RDP security only).
"""

from __future__ import annotations

from dataclasses import dataclass

from portscope.probes.base import Ident, Probe, Session

PROTOCOL_RDP, PROTOCOL_SSL, PROTOCOL_HYBRID = 0, 1, 2
PROTOCOL_RDSTLS, PROTOCOL_HYBRID_EX, PROTOCOL_RDSAAD = 4, 8, 0x10
TYPE_RDP_NEG_REQ, TYPE_RDP_NEG_RSP, TYPE_RDP_NEG_FAILURE = 1, 2, 3
X224_CR, X224_CC = 0xE0, 0xD0
TPKT_CAP = 512  # a Connection Confirm is 11 or 19 bytes; anything past this is not one

SECURITY = {
    PROTOCOL_RDP: "standard RDP",
    PROTOCOL_SSL: "TLS",
    PROTOCOL_HYBRID: "CredSSP (NLA)",
    PROTOCOL_RDSTLS: "RDSTLS",
    PROTOCOL_HYBRID_EX: "CredSSP (NLA) with early user authorization",
    PROTOCOL_RDSAAD: "RDS AAD",
}
FAILURES = {
    1: ("SSL_REQUIRED_BY_SERVER", "the server requires TLS"),
    2: ("SSL_NOT_ALLOWED_BY_SERVER", "the server allows only standard RDP security"),
    3: ("SSL_CERT_NOT_ON_SERVER", "the server has no certificate for TLS"),
    4: ("INCONSISTENT_FLAGS", "the server found our request inconsistent"),
    5: ("HYBRID_REQUIRED_BY_SERVER", "the server requires CredSSP (NLA)"),
    6: ("SSL_WITH_USER_AUTH_REQUIRED_BY_SERVER", "the server requires TLS with user authentication"),
}
RSP_FLAGS = {
    0x01: "extended client data",
    0x02: "graphics pipeline",
    0x08: "restricted admin mode",
    0x10: "redirected authentication mode",
}


def connection_request(protocols: int = PROTOCOL_SSL | PROTOCOL_HYBRID) -> bytes:
    """TPKT + X.224 CR TPDU (no cookie) + RDP_NEG_REQ asking for `protocols` (MS-RDPBCGR 2.2.1.1)."""
    neg = bytes((TYPE_RDP_NEG_REQ, 0)) + (8).to_bytes(2, "little") + protocols.to_bytes(4, "little")
    x224 = bytes((6 + len(neg), X224_CR, 0, 0, 0, 0, 0)) + neg
    return bytes((3, 0)) + (4 + len(x224)).to_bytes(2, "big") + x224


@dataclass(slots=True)
class Confirm:
    """An X.224 Connection Confirm; at most one of selected / failure is set (neither: no negotiation)."""

    selected: int | None = None
    flags: int = 0
    failure: int | None = None


def tpkt_length(head: bytes) -> int | None:
    """The TPKT length (whole packet, header included) when `head` starts a plausible TPKT."""
    if len(head) < 4 or head[0] != 3 or head[1] != 0:
        return None
    n = int.from_bytes(head[2:4], "big")
    return n if 11 <= n <= TPKT_CAP else None


def parse_confirm(data: bytes) -> Confirm | None:
    """TPKT + X.224 CC TPDU, with the RDP_NEG_RSP or RDP_NEG_FAILURE that follows it when present."""
    n = tpkt_length(data)
    if n is None or len(data) < 11:
        return None
    li, code = data[4], data[5]
    if li < 6 or (code & 0xF0) != X224_CC or 5 + li > n:
        return None
    out = Confirm()
    if li >= 14 and n >= 19 and len(data) >= 19:
        kind, flags, length = data[11], data[12], int.from_bytes(data[13:15], "little")
        value = int.from_bytes(data[15:19], "little")
        if length != 8:
            return out
        if kind == TYPE_RDP_NEG_RSP:
            out.selected, out.flags = value, flags
        elif kind == TYPE_RDP_NEG_FAILURE:
            out.failure = value
    return out


def describe(cc: Confirm) -> Ident:
    details: dict[str, object] = {}
    if cc.selected is not None:
        details["security"] = SECURITY.get(cc.selected, f"unknown (0x{cc.selected:x})")
        details["selected_protocol"] = cc.selected
        details["nla"] = cc.selected in (PROTOCOL_HYBRID, PROTOCOL_HYBRID_EX)
        flags = [word for bit, word in RSP_FLAGS.items() if cc.flags & bit]
        if flags:
            details["server_flags"] = flags
    elif cc.failure is not None:
        name, words = FAILURES.get(cc.failure, (f"code {cc.failure}", "unknown failure code"))
        details["negotiation_failure"] = name
        details["failure_reason"] = words
        details["nla"] = False
        if cc.failure == 2:
            details["security"] = SECURITY[PROTOCOL_RDP]
    else:
        details["negotiation"] = False
        details["security"] = SECURITY[PROTOCOL_RDP]
        details["nla"] = False
    problems = []
    if details.get("security") == SECURITY[PROTOCOL_RDP]:
        problems.append("RDP with legacy RDP security: no TLS, no network-level authentication")
    elif details.get("nla") is False and cc.selected is not None:
        problems.append("RDP without network-level authentication (NLA): the login screen is open to anyone")
    return Ident("rdp", details=details, problems=problems)


def recognize(data: bytes) -> Ident | None:
    cc = parse_confirm(data[:TPKT_CAP])
    return describe(cc) if cc is not None else None


async def run(session: Session, banner: bytes) -> Ident | None:
    conn = session.conn
    if conn is None or banner:  # RDP servers never speak first
        return None
    if not await conn.write(connection_request()):
        return None
    head = await conn.read_exactly(4, session.deadline.left(session.settings.read_timeout))
    n = tpkt_length(head)
    if n is None:
        return None
    rest = await conn.read_exactly(n - 4, session.deadline.left(session.settings.read_timeout))
    cc = parse_confirm(head + rest)
    if cc is None:
        return None
    ident = describe(cc)
    if cc.selected not in (None, PROTOCOL_RDP) and not conn.eof:
        info, _ = await session.start_tls(conn)  # every security but standard RDP starts with TLS
        info.starttls = True
        ident.tls = info
    return ident


PROBE = Probe(
    name="rdp",
    names=frozenset({"rdp", "ms-wbt-server", "remote-desktop", "mstsc", "terminal-services"}),
    ports=frozenset({3389}),
    recognize=recognize,
    run=run,
    rarity=5,
)
