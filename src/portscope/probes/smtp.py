"""SMTP (RFC 5321), submission (RFC 6409) and their TLS: the greeting, the EHLO extensions, STARTTLS.

Why EHLO twice: what a mail admin needs to know is whether TLS is offered, whether its certificate is
right, and whether AUTH is offered before the session is encrypted (passwords in clear) or only after
it (the safe setting, and the reason many servers list AUTH only then). So: EHLO, STARTTLS (RFC 3207),
EHLO again, QUIT. Never MAIL, never AUTH.

An SMTP greeting and an FTP greeting look alike ("220 text"). A greeting that names its protocol or a
known product decides at once; otherwise the active step does: SMTP answers EHLO with 250, FTP answers
FEAT with 211. Whichever of the two probes holds the connection asks, and hands the connection to the
other when the answer says so. The multi-line reply format (RFC 5321 4.2, RFC 959 4.2) is the same for
both, so ftp.py reads its replies with this module's reader.

Fields in details: banner_host (the domain the greeting names), esmtp (bool: EHLO accepted; False when
only HELO was), ehlo_host, extensions (EHLO keywords, in the server's order), size_limit (int, from
SIZE; 0 means no stated limit), auth_mechanisms (of the last EHLO: after TLS when upgraded),
auth_before_tls (bool: AUTH offered in plain text), starttls (bool: offered), extensions_after_tls,
starttls_error (the upgrade was offered but failed, and how), ehlo_error (EHLO and HELO refused or
unanswered), ehlo_truncated (the reply broke our limits: what was read is kept), greeting_truncated
(the greeting never ended), refused (a 421/554 greeting: the server turned us away).
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from portscope.probes.base import Ident, Probe, Session, clean_text
from portscope.probes.conn import Conn

REPLY_CAP = 16 * 1024  # bytes of one reply (a server's EHLO list is a few hundred bytes)
MAX_LINES = 128  # lines of one reply
MAX_ITEMS = 64  # extensions, mechanisms, features kept
QUIT_WAIT = 0.3
CLIENT_NAME = b"portscope.invalid"  # RFC 2606: a name that is no one's, so nothing is claimed

_CODE = re.compile(rb"^(\d{3})(?:([ -])|$)")
_HOST = re.compile(
    r"^(?:[A-Za-z0-9_](?:[A-Za-z0-9_\-]{0,62})(?:\.[A-Za-z0-9_\-]{1,63})*\.?|\[[0-9A-Za-z:.]+\])$"
)
_VERSION = r"v?(\d+(?:\.\d+)+[a-z]?)"
# Case-sensitive on purpose: host names are lower case ("smtp.example.com", "ftp.example.com"), while
# greetings write the protocol in capitals ("ESMTP Postfix", "vsFTPd", "Microsoft FTP Service").
_SMTP_WORD = re.compile(r"\bE?SMTP\b")
_FTP_WORD = re.compile(r"FTP|FileZilla|Serv-U")
_SMTP_PRODUCTS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(p), name)
    for p, name in (
        (r"\bPostfix\b", "Postfix"),
        (rf"\bExim(?: {_VERSION})?", "Exim"),
        (rf"\bSendmail(?: {_VERSION})?", "Sendmail"),
        (r"\bOpenSMTPD\b", "OpenSMTPD"),
        (rf"\bMicrosoft ESMTP MAIL Service(?:, Version: {_VERSION})?", "Microsoft ESMTP MAIL Service"),
        (r"\bDovecot\b", "Dovecot"),
        (rf"\bHaraka(?:/{_VERSION})?", "Haraka"),
        (r"\bqmail\b", "qmail"),
        (r"\bhMailServer\b", "hMailServer"),
        (r"\bMailEnable\b", "MailEnable"),
        (rf"\bMDaemon(?: {_VERSION})?", "MDaemon"),
        (rf"\bKerio Connect(?: {_VERSION})?", "Kerio Connect"),
        (rf"\bIceWarp(?: {_VERSION})?", "IceWarp"),
        (r"\bZimbra\b", "Zimbra"),
        (r"\bSmarterMail\b", "SmarterMail"),
        (r"\bMailpit\b", "Mailpit"),
        (r"\bMailHog\b", "MailHog"),
        (r"\bCourier\b", "Courier"),
    )
)


@dataclass(slots=True)
class Reply:
    """One reply: the code of its first line, the text of each line, and whether its last line came."""

    code: int | None  # None: not a reply at all (or nothing arrived)
    lines: list[bytes] = field(default_factory=list)  # text after "ddd " / "ddd-"; FTP's bare lines whole
    complete: bool = False  # the final line ("ddd text") was seen
    malformed: bool = False  # a line that no reply can start with: stop reading
    size: int = 0  # bytes of the input that belong to this reply

    @property
    def text(self) -> str:
        """The reply's text, lines joined by spaces, cleaned and bounded."""
        return clean_text(b" ".join(x.strip() for x in self.lines[:8]), 512)


def parse_reply(data: bytes) -> Reply:
    """One SMTP/FTP reply from the start of `data` (blank lines before it skipped).

    A reply is one "ddd text" line, or "ddd-text" lines (FTP: any lines) up to a "ddd text" line with
    the same code, ended by its line feed. Incomplete input gives complete=False with what it had: a
    last line still missing its end is not taken as whole, so its rest cannot pose as the next reply.
    """
    data = data[:REPLY_CAP]
    reply = Reply(None)
    pos = 0
    while pos < len(data) and len(reply.lines) < MAX_LINES:
        end = data.find(b"\n", pos)
        line_end = len(data) if end < 0 else end + 1
        line = data[pos:line_end].rstrip(b"\r\n")
        pos = line_end
        if reply.code is None:
            if not line.strip():
                continue
            m = _CODE.match(line)
            if m is None:
                reply.malformed = True
                break
            reply.code = int(m.group(1))
            reply.lines.append(line[4:])
            if m.group(2) != b"-":
                reply.complete = end >= 0
                break
            continue
        m = _CODE.match(line)
        if m is not None and int(m.group(1)) == reply.code:
            reply.lines.append(line[4:])
            if m.group(2) != b"-":
                reply.complete = end >= 0
                break
        else:
            reply.lines.append(line)  # FTP: continuation lines need not carry the code (RFC 959 4.2)
    reply.size = pos
    return reply


async def read_reply(conn: Conn, timeout: float, head: bytes = b"") -> Reply:
    """A whole reply: `head` (bytes already read, e.g. the banner) first, then lines from `conn`, until
    the final line, REPLY_CAP, MAX_LINES, EOF or `timeout` for the whole reply (a dribbling server
    cannot stretch it). Bytes after the reply stay unread, except what `head` already held."""
    buf = head[:REPLY_CAP]
    end = time.monotonic() + timeout
    while True:
        reply = parse_reply(buf)
        if reply.complete or reply.malformed or len(buf) >= REPLY_CAP or len(reply.lines) >= MAX_LINES:
            return reply
        left = end - time.monotonic()
        if left <= 0:
            return reply
        chunk = await conn.read_until(b"\n", REPLY_CAP - len(buf), left)
        if not chunk:
            return reply
        buf += chunk


async def command(session: Session, conn: Conn, line: bytes) -> Reply:
    """Send one command line; its reply, or Reply(None) when the peer is gone or silent."""
    if not await conn.write(line):
        return Reply(None)
    return await read_reply(conn, session.deadline.left(session.settings.read_timeout))


async def quit_politely(conn: Conn, line: bytes = b"QUIT\r\n") -> None:
    """Say goodbye and give the server a moment to answer: a bare close shows up as an error in its log."""
    if not conn.eof and await conn.write(line):
        await conn.read_until(b"\n", 512, conn.deadline.left(QUIT_WAIT))


def first_wait(session: Session, ports: frozenset[int]) -> float:
    """How long to wait for a greeting the runner did not get: the full read timeout where the
    protocol is expected (its port, or inside TLS), a short one on an arbitrary port."""
    conn = session.conn
    known = session.port in ports or (conn is not None and conn.tls is not None)
    return session.settings.read_timeout if known else session.settings.banner_wait


def match_product(text: str, table: Sequence[tuple[re.Pattern[str], str]]) -> tuple[str | None, str | None]:
    """(product, version) from the first pattern of `table` found in `text`; the version is the
    pattern's group when it has one and it matched."""
    for pattern, name in table:
        m = pattern.search(text)
        if m is not None:
            version = m.group(1) if pattern.groups and m.group(1) else None
            return name, clean_text(version, 32) if version else None
    return None, None


def classify_220(text: str) -> str | None:
    """ "smtp" or "ftp" when a 220 greeting names its protocol (or a product of one), else None."""
    if _SMTP_WORD.search(text):
        return "smtp"
    if _FTP_WORD.search(text):
        return "ftp"
    if match_product(text, _SMTP_PRODUCTS)[0] is not None:
        return "smtp"
    return None


# -- SMTP itself -----------------------------------------------------------------------------------------


@dataclass(slots=True)
class Ehlo:
    """A parsed 250 reply to EHLO."""

    host: str | None
    extensions: list[str]
    auth_mechanisms: list[str]
    size_limit: int | None
    starttls: bool


def parse_ehlo(reply: Reply) -> Ehlo:
    """The first line names the server; each other line is one extension keyword and its parameters.
    AUTH is also recognised in its pre-RFC form "AUTH=LOGIN PLAIN" that old Outlook clients needed."""
    first = reply.lines[0].split() if reply.lines else []
    host = clean_text(first[0], 255) if first else None
    extensions: list[str] = []
    mechanisms: list[str] = []
    size: int | None = None
    for raw in reply.lines[1:]:
        words = raw.replace(b"=", b" ", 1).split() if raw.upper().startswith(b"AUTH=") else raw.split()
        if not words:
            continue
        keyword = clean_text(words[0].upper(), 64)
        if keyword not in extensions and len(extensions) < MAX_ITEMS:
            extensions.append(keyword)
        if keyword == "AUTH":
            for mech in words[1:]:
                name = clean_text(mech.upper(), 64)
                if name not in mechanisms and len(mechanisms) < MAX_ITEMS:
                    mechanisms.append(name)
        elif keyword == "SIZE" and size is None:
            digits = words[1] if len(words) > 1 else b"0"
            size = int(digits) if digits.isdigit() and len(digits) <= 15 else None
    return Ehlo(host, extensions, mechanisms, size, "STARTTLS" in extensions)


def greeting_ident(reply: Reply) -> Ident | None:
    """An SMTP greeting: 220 (ready), or 421/554 (RFC 5321 3.1: busy, or no service for us) when the
    text says SMTP; None when it is not one, or names FTP."""
    if reply.code not in (220, 421, 554) or not reply.lines:
        return None
    text = reply.text
    kind = classify_220(text)
    if kind == "ftp" or (reply.code != 220 and kind is None):
        return None
    product, version = match_product(text, _SMTP_PRODUCTS)
    details: dict[str, object] = {}
    words = clean_text(reply.lines[0], 300).split()
    if words and _HOST.match(words[0]) and words[0].upper() not in ("ESMTP", "SMTP"):
        details["banner_host"] = words[0]
    if reply.code != 220:
        details["refused"] = f"{reply.code} {text}"
    confidence = "high" if kind == "smtp" else "low"
    return Ident("smtp", product=product, version=version, details=details, confidence=confidence)


def recognize(data: bytes) -> Ident | None:
    """A 220 greeting; "low" confidence when it names neither SMTP nor FTP (run() then asks)."""
    return greeting_ident(parse_reply(data))


async def run(session: Session, banner: bytes) -> Ident | None:
    conn = session.conn
    if conn is None:
        return None
    greeting = await read_reply(conn, session.deadline.left(first_wait(session, PROBE.ports)), banner)
    return await continue_from_greeting(session, conn, greeting)


async def continue_from_greeting(session: Session, conn: Conn, greeting: Reply) -> Ident | None:
    """From a greeting already read: EHLO (HELO for a server that does not know it), then the rest;
    an FTP greeting, or an FTP answer to our commands, goes to the FTP probe."""
    ident = greeting_ident(greeting)
    if ident is None:
        if greeting.code == 220 and classify_220(greeting.text) == "ftp":
            from portscope.probes import ftp

            return await ftp.continue_from_greeting(session, conn, greeting)
        return None
    if not greeting.complete:  # a greeting that never ends: nothing to converse with
        ident.details["greeting_truncated"] = True
        return ident if ident.confidence == "high" else None
    if greeting.code != 220:
        await quit_politely(conn)
        return ident
    ehlo = await command(session, conn, b"EHLO " + CLIENT_NAME + b"\r\n")
    if ehlo.code == 250:
        return await continue_after_ehlo(session, conn, ident, ehlo)
    if ehlo.code is None:
        ident.details["ehlo_error"] = "no answer to EHLO"
        return ident if ident.confidence == "high" else None
    helo = await command(session, conn, b"HELO " + CLIENT_NAME + b"\r\n")
    if helo.code == 250:  # RFC 5321 3.2: a server that does not know EHLO
        ident.confidence = "high"
        ident.details["esmtp"] = False
        if helo.lines:
            ident.details["ehlo_host"] = clean_text(helo.lines[0].split(b" ", 1)[0], 255)
        await quit_politely(conn)
        return ident
    if ident.confidence != "high" and helo.code is not None:
        feat = await command(session, conn, b"FEAT\r\n")
        if feat.code == 211:  # FTP's answer (RFC 2389): the "220" was an FTP greeting
            from portscope.probes import ftp

            return await ftp.continue_after_feat(session, conn, greeting, feat)
    ident.details["ehlo_error"] = f"EHLO refused: {ehlo.code} {ehlo.text}"
    return ident if ident.confidence == "high" else None


async def continue_after_ehlo(session: Session, conn: Conn, ident: Ident, ehlo: Reply) -> Ident:
    """From an accepted EHLO: the extensions, STARTTLS and the extensions after it, QUIT."""
    ident.service = ident.protocol = "smtp"
    ident.confidence = "high"
    parsed = parse_ehlo(ehlo)
    d = ident.details
    d["esmtp"] = True
    if parsed.host:
        d["ehlo_host"] = parsed.host
    d["extensions"] = parsed.extensions
    d["size_limit"] = parsed.size_limit
    d["auth_mechanisms"] = parsed.auth_mechanisms
    d["auth_before_tls"] = conn.tls is None and bool(parsed.auth_mechanisms or "AUTH" in parsed.extensions)
    d["starttls"] = parsed.starttls
    if not ehlo.complete:
        d["ehlo_truncated"] = True
        return ident  # the rest of the stream is no longer in step with our commands
    if parsed.starttls and conn.tls is None:
        reply = await command(session, conn, b"STARTTLS\r\n")
        if reply.code != 220:
            d["starttls_error"] = (
                f"STARTTLS refused: {reply.code} {reply.text}" if reply.code else "no answer"
            )
        else:
            info, _plain = await session.start_tls(conn)
            info.starttls = True
            ident.tls = info
            if conn.tls is None:
                d["starttls_error"] = info.error
                return ident
            again = await command(session, conn, b"EHLO " + CLIENT_NAME + b"\r\n")
            if again.code == 250:
                after = parse_ehlo(again)
                d["extensions_after_tls"] = after.extensions
                d["auth_mechanisms"] = after.auth_mechanisms
                if after.size_limit is not None:
                    d["size_limit"] = after.size_limit
                if not again.complete:
                    d["ehlo_truncated"] = True
                    return ident
    await quit_politely(conn)
    return ident


PROBE = Probe(
    name="smtp",
    names=frozenset({"smtp", "smtps", "submission", "submissions", "mail", "smtp-alt", "esmtp", "ssmtp"}),
    ports=frozenset({25, 465, 587, 2525}),
    server_first=True,
    recognize=recognize,
    run=run,
    rarity=2,
)
