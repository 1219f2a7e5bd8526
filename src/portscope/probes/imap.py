"""IMAP (RFC 9051, RFC 3501): the greeting, CAPABILITY, and STARTTLS (RFC 2595).

Why CAPABILITY before and after STARTTLS: LOGINDISABLED before TLS (RFC 3501 6.2.3) is how a server
says "no passwords in clear", and the AUTH= mechanisms usually change once TLS is up; the client must
ask again after the upgrade (RFC 3501 6.2.1), so we do. We never log in: CAPABILITY, STARTTLS,
CAPABILITY, LOGOUT.

Fields in details: greeting_status (OK, PREAUTH or BYE), capabilities (before TLS, or inside implicit
TLS), auth_mechanisms (the AUTH= capabilities, after TLS when upgraded), starttls (bool: offered),
login_disabled (bool: LOGINDISABLED before TLS), capabilities_after_tls, starttls_error (offered but
refused, or the handshake failed), refused (a BYE greeting: the server turned us away).
"""

from __future__ import annotations

import re
import time

from portscope.probes.base import Ident, Probe, Session, clean_text
from portscope.probes.conn import Conn
from portscope.probes.smtp import MAX_ITEMS, QUIT_WAIT, first_wait, match_product

LINE_CAP = 8192  # a greeting with a long [CAPABILITY ...] code, or one CAPABILITY line
REPLY_CAP = 32 * 1024  # all lines up to our tagged response
MAX_LINES = 64

_GREETING = re.compile(rb"^\* (OK|PREAUTH|BYE)(?:[ \t]+(.*))?$", re.I | re.S)
_CAP_CODE = re.compile(rb"\[CAPABILITY ([^\]]*)\]", re.I)
_VERSION = r"v?(\d+(?:\.\d+)+[a-z]?)"
_IMAP_PRODUCTS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(p), name)
    for p, name in (
        (r"\bDovecot\b", "Dovecot"),
        (r"\bCourier-IMAP\b", "Courier-IMAP"),
        (rf"\bCyrus IMAP4?(?: {_VERSION})?", "Cyrus IMAP"),
        (r"\bMicrosoft Exchange\b", "Microsoft Exchange"),
        (r"\bIMAP4rev1 (\d{4}[a-z]?\.\d+) at\b", "UW IMAP"),
        (r"\bZimbra\b", "Zimbra"),
        (r"\bGimap\b", "Gmail"),
        (r"\bhMailServer\b", "hMailServer"),
        (r"\bMailEnable\b", "MailEnable"),
        (rf"\bKerio Connect(?: {_VERSION})?", "Kerio Connect"),
        (r"\bCommuniGate Pro\b", "CommuniGate Pro"),
    )
)


def parse_capabilities(words: bytes) -> list[str]:
    """Space-separated capability atoms, kept as sent (they compare case-insensitively), deduplicated."""
    out: list[str] = []
    seen: set[str] = set()
    for w in words.split()[: MAX_ITEMS * 4]:
        cap = clean_text(w, 64)
        if cap and cap.upper() not in seen:
            seen.add(cap.upper())
            out.append(cap)
        if len(out) >= MAX_ITEMS:
            break
    return out


def _has(caps: list[str], name: str) -> bool:
    return any(c.upper() == name for c in caps)


def auth_mechanisms(caps: list[str]) -> list[str]:
    return [c[5:].upper() for c in caps if c.upper().startswith("AUTH=") and len(c) > 5]


def greeting_ident(line: bytes) -> Ident | None:
    """ "* OK", "* PREAUTH" or "* BYE" (RFC 9051 7.1), with capabilities when the greeting lists them."""
    m = _GREETING.match(line[:LINE_CAP].rstrip(b"\r\n"))
    if m is None:
        return None
    status = m.group(1).upper().decode()
    rest = m.group(2) or b""
    text = clean_text(_CAP_CODE.sub(b"", rest), 300)
    product, version = match_product(text, _IMAP_PRODUCTS)
    details: dict[str, object] = {"greeting_status": status}
    code = _CAP_CODE.search(rest)
    caps = parse_capabilities(code.group(1)) if code else []
    if caps:
        details["capabilities"] = caps
    if status == "BYE":
        details["refused"] = text
    confident = (
        product is not None or any(c.upper().startswith("IMAP4") for c in caps) or "IMAP" in text.upper()
    )
    return Ident(
        "imap", product=product, version=version, details=details, confidence="high" if confident else "low"
    )


def recognize(data: bytes) -> Ident | None:
    return greeting_ident(data.split(b"\n", 1)[0])


async def _command(
    session: Session, conn: Conn, tag: bytes, command: bytes
) -> tuple[list[str], bytes | None]:
    """Send `tag command`; the capabilities of any untagged CAPABILITY line before the tagged answer,
    and that answer's status line (None: no tagged answer within our limits)."""
    if not await conn.write(tag + b" " + command + b"\r\n"):
        return [], None
    end = time.monotonic() + session.deadline.left(session.settings.read_timeout)
    caps: list[str] = []
    total = 0
    for _ in range(MAX_LINES):
        line = await conn.read_until(
            b"\n", min(LINE_CAP, REPLY_CAP - total), max(0.0, end - time.monotonic())
        )
        total += len(line)
        if not line.endswith(b"\n"):
            return caps, None
        line = line.rstrip(b"\r\n")
        if line[: len(tag) + 1].upper() == tag.upper() + b" ":
            return caps, line[len(tag) + 1 :]
        if line[:13].upper() == b"* CAPABILITY ":
            caps = parse_capabilities(line[13:])
        if total >= REPLY_CAP:
            break
    return caps, None


def _ok(status: bytes | None) -> bool:
    return status is not None and status.split(b" ", 1)[0].upper() == b"OK"


async def run(session: Session, banner: bytes) -> Ident | None:
    conn = session.conn
    if conn is None:
        return None
    line = banner.split(b"\n", 1)[0]
    if b"\n" not in banner:
        wait = session.deadline.left(first_wait(session, PROBE.ports))
        line = banner + await conn.read_until(b"\n", max(1, LINE_CAP - len(banner)), wait)
    ident = greeting_ident(line)
    if ident is None:
        return None
    d = ident.details
    status = d["greeting_status"]
    if status == "BYE":
        return ident
    caps, tagged = await _command(session, conn, b"a1", b"CAPABILITY")
    if tagged is None:
        return ident if ident.confidence == "high" else None
    ident.confidence = "high"  # a tagged answer to our tag: an IMAP server
    if not caps:
        caps = list(d.get("capabilities", []))
    d["capabilities"] = caps
    d["auth_mechanisms"] = auth_mechanisms(caps)
    d["starttls"] = _has(caps, "STARTTLS")
    if conn.tls is None:
        d["login_disabled"] = _has(caps, "LOGINDISABLED")
    if d["starttls"] and conn.tls is None and status == "OK":
        _, answer = await _command(session, conn, b"a2", b"STARTTLS")
        if not _ok(answer):
            d["starttls_error"] = f"STARTTLS refused: {clean_text(answer or b'no answer', 200)}"
        else:
            info, _plain = await session.start_tls(conn)
            info.starttls = True
            ident.tls = info
            if conn.tls is None:
                d["starttls_error"] = info.error
                return ident
            after, answer = await _command(session, conn, b"a3", b"CAPABILITY")
            if after:
                d["capabilities_after_tls"] = after
                d["auth_mechanisms"] = auth_mechanisms(after)
    if not conn.eof and await conn.write(b"a4 LOGOUT\r\n"):
        await conn.read_until(b"\n", 512, session.deadline.left(QUIT_WAIT))
    return ident


PROBE = Probe(
    name="imap",
    names=frozenset({"imap", "imaps", "imap4", "imap4-ssl"}),
    ports=frozenset({143, 993}),
    server_first=True,
    recognize=recognize,
    run=run,
    rarity=3,
)
