"""POP3 (RFC 1939): the greeting, CAPA (RFC 2449) and STLS (RFC 2595).

Why CAPA twice: a POP3 server that offers USER/PASS or SASL PLAIN before STLS lets passwords cross in
clear, and most list different capabilities once TLS is up; an admin wants both lists. We never log in
(no USER, PASS, APOP or AUTH): CAPA, STLS, CAPA, QUIT.

Fields in details: capabilities (CAPA keywords, before TLS or inside implicit TLS), stls (bool: offered;
or accepted when the server has no CAPA), sasl_mechanisms, user_before_tls (bool: USER offered in plain
text), implementation (the IMPLEMENTATION capability's text), apop (bool: the greeting carries an APOP
timestamp, RFC 1939 7), capabilities_after_tls, capa_error (CAPA refused: an old server), starttls_error
(STLS offered but refused, or the handshake failed), capa_truncated, refused (a -ERR greeting).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

from portscope.probes.base import Ident, Probe, Session, clean_text
from portscope.probes.conn import Conn
from portscope.probes.smtp import MAX_ITEMS, first_wait, match_product, quit_politely

LINE_CAP = 1024  # RFC 2449: a response line is at most 512 octets; slack for sloppy servers
MULTI_CAP = 16 * 1024  # a multi-line CAPA response
MAX_LINES = 128

_APOP = re.compile(rb"<[^<>@\s]{1,200}@[^<>\s]{1,200}>")
_VERSION = r"v?(\d+(?:\.\d+)+[a-z]?)"
_POP3_PRODUCTS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(p), name)
    for p, name in (
        (r"\bDovecot\b", "Dovecot"),
        (rf"\bCyrus POP3(?: {_VERSION})?", "Cyrus"),
        (rf"\bQpopper(?: \(version {_VERSION}\))?", "Qpopper"),
        (r"\bMicrosoft Exchange\b", "Microsoft Exchange"),
        (r"\bZimbra\b", "Zimbra"),
        (r"\bCourier\b", "Courier"),
        (r"\bMailEnable\b", "MailEnable"),
        (r"\bhMailServer\b", "hMailServer"),
        (rf"\bKerio Connect(?: {_VERSION})?", "Kerio Connect"),
        (r"\bpopa3d\b", "popa3d"),
        (r"\bGpop\b", "Gmail"),
        (r"\bPOP3 \S+ v(\d{4}\.\d+) server ready", "UW POP3"),
    )
)


@dataclass(slots=True)
class Capa:
    """A parsed CAPA list."""

    keywords: list[str]
    sasl: list[str]
    implementation: str | None
    user: bool
    stls: bool


def greeting_ident(line: bytes) -> Ident | None:
    """ "+OK text" (RFC 1939 4); "-ERR" only when it says POP, since other protocols say -ERR too."""
    line = line[:LINE_CAP].rstrip(b"\r\n")
    ok = line.startswith(b"+OK") and (len(line) == 3 or line[3:4] in (b" ", b"\t"))
    err = line.startswith(b"-ERR") and b"POP" in line.upper()
    if not (ok or err):
        return None
    text = clean_text(line[3 if ok else 4 :], 300)
    product, version = match_product(text, _POP3_PRODUCTS)
    details: dict[str, object] = {"apop": bool(_APOP.search(line))} if ok else {"refused": text}
    confident = ok and (product is not None or "POP" in text.upper() or bool(details["apop"]))
    return Ident(
        "pop3", product=product, version=version, details=details, confidence="high" if confident else "low"
    )


def recognize(data: bytes) -> Ident | None:
    return greeting_ident(data.split(b"\n", 1)[0])


def parse_capa(lines: list[bytes]) -> Capa:
    """CAPA's lines (status line and terminating "." removed): a keyword, then its arguments."""
    keywords: list[str] = []
    sasl: list[str] = []
    implementation = None
    for raw in lines[:MAX_LINES]:
        words = raw.split()
        if not words:
            continue
        keyword = clean_text(words[0].upper(), 64)
        if keyword not in keywords and len(keywords) < MAX_ITEMS:
            keywords.append(keyword)
        if keyword == "SASL":
            for mech in words[1:]:
                name = clean_text(mech.upper(), 64)
                if name not in sasl and len(sasl) < MAX_ITEMS:
                    sasl.append(name)
        elif keyword == "IMPLEMENTATION" and implementation is None and len(words) > 1:
            implementation = clean_text(b" ".join(words[1:]), 128)
    return Capa(keywords, sasl, implementation, "USER" in keywords, "STLS" in keywords)


async def _line(session: Session, conn: Conn, head: bytes = b"", wait: float | None = None) -> bytes:
    """One response line: `head` (what the runner already read) completed from the wire."""
    if b"\n" in head:
        return head.split(b"\n", 1)[0]
    timeout = session.deadline.left(session.settings.read_timeout if wait is None else wait)
    return head + await conn.read_until(b"\n", max(1, LINE_CAP - len(head)), timeout)


async def _multiline(session: Session, conn: Conn) -> tuple[list[bytes], bool]:
    """The lines of a multi-line response up to its "." line (dot-stuffing undone), and whether the
    "." came; bounded in bytes, lines and time."""
    end = time.monotonic() + session.deadline.left(session.settings.read_timeout)
    lines: list[bytes] = []
    total = 0
    while total < MULTI_CAP and len(lines) < MAX_LINES:
        line = await conn.read_until(
            b"\n", min(LINE_CAP, MULTI_CAP - total), max(0.0, end - time.monotonic())
        )
        total += len(line)
        if not line.endswith(b"\n"):
            return lines, False
        line = line.rstrip(b"\r\n")
        if line == b".":
            return lines, True
        lines.append(line[1:] if line.startswith(b"..") else line)
    return lines, False


async def _capa(session: Session, conn: Conn) -> tuple[bytes, list[bytes], bool]:
    """CAPA: (status line, capability lines, complete)."""
    if not await conn.write(b"CAPA\r\n"):
        return b"", [], False
    status = await _line(session, conn)
    if not status.startswith(b"+OK"):
        return status, [], True
    lines, complete = await _multiline(session, conn)
    return status, lines, complete


async def run(session: Session, banner: bytes) -> Ident | None:
    conn = session.conn
    if conn is None:
        return None
    greeting = await _line(session, conn, banner, first_wait(session, PROBE.ports))
    ident = greeting_ident(greeting)
    if ident is None:
        return None
    d = ident.details
    if not greeting.startswith(b"+OK"):
        return ident
    status, lines, complete = await _capa(session, conn)
    if not status:
        return ident if ident.confidence == "high" else None
    ident.confidence = "high"  # +OK or -ERR to CAPA: a POP3 server answered
    capa = parse_capa(lines)
    if status.startswith(b"+OK"):
        d["capabilities"] = capa.keywords
        d["sasl_mechanisms"] = capa.sasl
        if capa.implementation:
            d["implementation"] = capa.implementation
        if conn.tls is None:
            d["user_before_tls"] = capa.user
    else:
        d["capa_error"] = clean_text(status, 200)
    if not complete:
        d["capa_truncated"] = True
        return ident
    d["stls"] = capa.stls
    if conn.tls is None and (capa.stls or not status.startswith(b"+OK")):
        await _stls(session, conn, ident, offered=capa.stls)
        if conn.eof or (ident.tls is not None and conn.tls is None):
            return ident
    await quit_politely(conn)
    return ident


async def _stls(session: Session, conn: Conn, ident: Ident, offered: bool) -> None:
    """STLS, the handshake, and CAPA again inside TLS."""
    d = ident.details
    if not await conn.write(b"STLS\r\n"):
        return
    reply = await _line(session, conn)
    if not reply.startswith(b"+OK"):
        if offered:
            d["starttls_error"] = f"STLS refused: {clean_text(reply, 200)}" if reply else "no answer to STLS"
        return
    d["stls"] = True
    info, _plain = await session.start_tls(conn)
    info.starttls = True
    ident.tls = info
    if conn.tls is None:
        d["starttls_error"] = info.error
        return
    status, lines, complete = await _capa(session, conn)
    if status.startswith(b"+OK"):
        after = parse_capa(lines)
        d["capabilities_after_tls"] = after.keywords
        d["sasl_mechanisms"] = after.sasl
        if not complete:
            d["capa_truncated"] = True


PROBE = Probe(
    name="pop3",
    names=frozenset({"pop3", "pop3s", "pop", "spop3"}),
    ports=frozenset({110, 995}),
    server_first=True,
    recognize=recognize,
    run=run,
    rarity=3,
)
