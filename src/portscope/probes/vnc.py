"""VNC: the RFB ProtocolVersion greeting (RFC 6143 7.1.1) and the security types the server offers.

Why go past the greeting: the one thing an admin must know about a VNC port is whether it asks for
a password at all (security type "None" means anyone who reaches the port gets the desktop). The list
comes right after we echo a version, before any authentication; we read it and hang up without
choosing one.

Fields in details: protocol_version ("3.8", as the server sent it), security_types (words, the
server's order; for RFB 3.3 the one type the server imposes), no_auth (bool: "None" is offered),
error (the server's reason when it refuses the connection, e.g. too many failed attempts),
variant (a known implementation told by its odd version number, e.g. Apple's 3.889).
"""

from __future__ import annotations

import re

from portscope.probes.base import Ident, Probe, Session, clean_text

REASON_CAP = 1024
_GREETING = re.compile(rb"^RFB (\d{3})\.(\d{3})\n")

# IANA "Remote Framebuffer Security Types" registry, the names it uses.
SECURITY_TYPES = {
    0: "Invalid",
    1: "None",
    2: "VNC Authentication",
    5: "RA2",
    6: "RA2ne",
    16: "Tight",
    17: "Ultra",
    18: "TLS",
    19: "VeNCrypt",
    20: "GTK-VNC SASL",
    21: "MD5 hash authentication",
    22: "Colin Dean xvp",
    23: "Secure Tunnel",
    24: "Integrated SSH",
    30: "Apple (Diffie-Hellman)",
    **{n: "Apple" for n in range(31, 36)},
    **{n: "RealVNC" for n in (3, 4, *range(7, 16), *range(128, 256))},
}
_VARIANTS = {(3, 889): "Apple Remote Desktop", (3, 5): "old UltraVNC/TightVNC (3.5, spoken as 3.3)"}


def type_name(code: int) -> str:
    return SECURITY_TYPES.get(code, f"type-{code}")


def parse_greeting(data: bytes) -> tuple[int, int] | None:
    m = _GREETING.match(data[:12])
    if m is None:
        return None
    return int(m.group(1)), int(m.group(2))


def reply_version(major: int, minor: int) -> tuple[int, int]:
    """The version we answer: RFC 6143 7.1.1, anything from 3.8 up is spoken as 3.8, 3.7 as 3.7, and
    any other number as 3.3."""
    if (major, minor) >= (3, 8):
        return 3, 8
    if (major, minor) == (3, 7):
        return 3, 7
    return 3, 3


def greeting_ident(major: int, minor: int) -> Ident:
    details: dict[str, object] = {"protocol_version": f"{major}.{minor}"}
    if (major, minor) in _VARIANTS:
        details["variant"] = _VARIANTS[(major, minor)]
    return Ident("vnc", product="VNC (RFB)", version=f"{major}.{minor}", details=details)


def recognize(data: bytes) -> Ident | None:
    version = parse_greeting(data)
    return greeting_ident(*version) if version else None


def parse_security_types(data: bytes) -> list[int] | None:
    """RFB 3.7/3.8: count, then that many one-byte types; None when cut short. Count 0 is a refusal."""
    if not data:
        return None
    n = data[0]
    if len(data) < 1 + n:
        return None
    return list(data[1 : 1 + n])


def no_auth_problem(ident: Ident) -> None:
    """A VNC server offering security type None lets anyone take the screen."""
    if ident.details.get("no_auth"):
        ident.problems.append("VNC offers access without a password (security type None)")


def describe_types(types: list[int]) -> dict[str, object]:
    return {"security_types": [type_name(t) for t in dict.fromkeys(types)], "no_auth": 1 in types}


async def run(session: Session, banner: bytes) -> Ident | None:
    conn = session.conn
    if conn is None:
        return None
    if not banner:  # the runner heard nothing yet: a VNC server that is there greets at once
        banner = await conn.read_exactly(12, session.deadline.left(session.settings.banner_wait))
    version = parse_greeting(banner)
    if version is None:
        return None
    ident = greeting_ident(*version)
    major, minor = reply_version(*version)
    if not await conn.write(f"RFB {major:03d}.{minor:03d}\n".encode()):
        return ident
    wait = session.deadline.left(session.settings.read_timeout)
    if minor == 3:
        head = await conn.read_exactly(4, wait)
        if len(head) < 4:
            return ident
        code = int.from_bytes(head, "big")
        if code != 0:  # RFB 3.3: the server imposes one type
            ident.details.update(describe_types([code]))
            no_auth_problem(ident)
            return ident
    else:
        count = await conn.read_exactly(1, wait)
        if not count:
            return ident
        types = await conn.read_exactly(count[0], session.deadline.left(session.settings.read_timeout))
        parsed = parse_security_types(count + types)
        if parsed:
            ident.details.update(describe_types(parsed))
            no_auth_problem(ident)
            return ident
        if parsed is None:
            return ident
    ident.details["error"] = await _reason(session)  # RFC 6143 7.1.2: count 0, then why
    return ident


async def _reason(session: Session) -> str:
    assert session.conn is not None
    wait = session.deadline.left(session.settings.read_timeout)
    head = await session.conn.read_exactly(4, wait)
    if len(head) < 4:
        return "the server refused the connection (no reason given)"
    n = min(int.from_bytes(head, "big"), REASON_CAP)
    text = await session.conn.read_exactly(n, session.deadline.left(session.settings.read_timeout))
    return clean_text(text, 256) or "the server refused the connection (empty reason)"


PROBE = Probe(
    name="vnc",
    names=frozenset({"vnc", "rfb", "vnc-1", "vnc-server"}),
    ports=frozenset(range(5900, 5910)),
    server_first=True,
    recognize=recognize,
    run=run,
    rarity=6,
)
