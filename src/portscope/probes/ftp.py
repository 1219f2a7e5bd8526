"""FTP (RFC 959) and FTP over TLS (RFC 4217): the greeting, FEAT (RFC 2389), AUTH TLS.

Why AUTH TLS and not a login: the question an admin asks of an FTP server is whether passwords can
cross the network in clear, and AUTH TLS answers it without logging in. Anonymous login is never
tried: it is not identification, and on someone else's server it is not ours to try. FEAT lists what
the server supports, AUTH TLS among it; a server without FEAT (pre-1998) is still asked AUTH TLS.

A "220" greeting may be SMTP's: see smtp.py for how the two probes tell them apart and hand over.

Fields in details: features (FEAT lines, e.g. "AUTH TLS", "MDTM", "REST STREAM"), auth_tls (bool:
AUTH TLS accepted with 234; on an implicit-TLS port, whether FEAT lists it), auth_tls_reply (what a
server refusing AUTH TLS said), feat_error (FEAT refused: an old server), starttls_error (AUTH TLS
accepted but the handshake failed), feat_truncated (FEAT's reply broke our limits), greeting_truncated
(the greeting never ended), refused (a 120 or 421 greeting: not ready, or turned us away).
"""

from __future__ import annotations

import re

from portscope.probes.base import Ident, Probe, Session, clean_text
from portscope.probes.conn import Conn
from portscope.probes.smtp import (
    CLIENT_NAME,
    MAX_ITEMS,
    Reply,
    classify_220,
    command,
    first_wait,
    match_product,
    parse_reply,
    quit_politely,
    read_reply,
)

_VERSION = r"v?(\d+(?:\.\d+)+[a-z]?)"
_FTP_PRODUCTS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(p), name)
    for p, name in (
        (rf"\bvsFTPd(?: {_VERSION})?", "vsFTPd"),
        (rf"\bProFTPD(?: {_VERSION})?", "ProFTPD"),
        (r"\bPure-FTPd\b", "Pure-FTPd"),
        (rf"\bFileZilla Server(?: version)?(?: {_VERSION})?", "FileZilla Server"),
        (r"\bMicrosoft FTP Service\b", "Microsoft FTP Service"),
        (rf"\bServ-U FTP Server(?: {_VERSION})?", "Serv-U"),
        (rf"\bwu-{_VERSION}", "wu-ftpd"),
        (rf"\bbftpd(?: {_VERSION})?", "bftpd"),
        (rf"\bMikroTik(?: FTP server \(MikroTik {_VERSION}\))?", "MikroTik FTP"),
        (rf"\bGene6 FTP Server(?: {_VERSION})?", "Gene6 FTP Server"),
        (r"\bTwisted\b", "Twisted FTP"),
        (rf"\bglFTPd(?: {_VERSION})?", "glFTPd"),
    )
)


def greeting_ident(reply: Reply) -> Ident | None:
    """An FTP greeting: 220 (ready), or 120/421 (not ready yet, or turned away) when the text says
    FTP; None when it is not one, or names SMTP. "low" confidence when it names neither."""
    if reply.code not in (220, 120, 421) or not reply.lines:
        return None
    text = reply.text
    kind = classify_220(text)
    if kind == "smtp" or (reply.code != 220 and kind is None):
        return None
    product, version = match_product(text, _FTP_PRODUCTS)
    details: dict[str, object] = {}
    if reply.code != 220:
        details["refused"] = f"{reply.code} {text}"
    return Ident(
        "ftp",
        product=product,
        version=version,
        details=details,
        confidence="high" if kind == "ftp" else "low",
    )


def recognize(data: bytes) -> Ident | None:
    return greeting_ident(parse_reply(data))


def parse_feat(reply: Reply) -> list[str]:
    """The feature lines of a 211 reply to FEAT: between "211-Features:" and "211 End", one feature
    per line, each indented by a space (RFC 2389 3.2); a one-line 211 lists none."""
    if reply.code != 211 or len(reply.lines) < 2:
        return []
    body = reply.lines[1:-1] if reply.complete else reply.lines[1:]
    out: list[str] = []
    for line in body:
        feature = clean_text(b" ".join(line.split()), 128)
        if feature and feature not in out:
            out.append(feature)
        if len(out) >= MAX_ITEMS:
            break
    return out


def lists_auth_tls(features: list[str]) -> bool:
    """AUTH with TLS among its mechanisms ("AUTH TLS", "AUTH TLS;TLS-C;SSL" and the like)."""
    for f in features:
        words = re.split(r"[\s;,]+", f.upper())
        if words[0] == "AUTH" and any(w.startswith("TLS") for w in words[1:]):
            return True
    return False


async def run(session: Session, banner: bytes) -> Ident | None:
    conn = session.conn
    if conn is None:
        return None
    greeting = await read_reply(conn, session.deadline.left(first_wait(session, PROBE.ports)), banner)
    return await continue_from_greeting(session, conn, greeting)


async def continue_from_greeting(session: Session, conn: Conn, greeting: Reply) -> Ident | None:
    """From a greeting already read: FEAT; for a greeting that named no protocol and no FEAT, EHLO
    decides whether SMTP was talking (then the SMTP probe takes over)."""
    ident = greeting_ident(greeting)
    if ident is None:
        if greeting.code == 220 and classify_220(greeting.text) == "smtp":
            from portscope.probes import smtp

            return await smtp.continue_from_greeting(session, conn, greeting)
        return None
    if not greeting.complete:  # a greeting that never ends: nothing to converse with
        ident.details["greeting_truncated"] = True
        return ident if ident.confidence == "high" else None
    if greeting.code != 220:
        await quit_politely(conn)
        return ident
    feat = await command(session, conn, b"FEAT\r\n")
    if feat.code != 211 and ident.confidence != "high":
        ehlo = await command(session, conn, b"EHLO " + CLIENT_NAME + b"\r\n")
        if ehlo.code == 250:  # SMTP's answer: the "220" was an SMTP greeting
            from portscope.probes import smtp

            mail = smtp.greeting_ident(greeting) or Ident("smtp", confidence="low")
            return await smtp.continue_after_ehlo(session, conn, mail, ehlo)
        if feat.code is None or ehlo.code is None:
            return None
    return await continue_after_feat(session, conn, greeting, feat, ident)


async def continue_after_feat(
    session: Session, conn: Conn, greeting: Reply, feat: Reply, ident: Ident | None = None
) -> Ident:
    """From the reply to FEAT: the features, then AUTH TLS and the TLS upgrade, then QUIT."""
    if ident is None:
        ident = greeting_ident(greeting) or Ident("ftp", confidence="low")
    ident.service = ident.protocol = "ftp"
    d = ident.details
    listed: bool | None = None
    if feat.code == 211:
        ident.confidence = "high"
        d["features"] = parse_feat(feat)
        listed = lists_auth_tls(d["features"])
        if not feat.complete:
            d["feat_truncated"] = True
            return ident  # the stream is no longer in step with our commands
    else:
        d["features"] = []
        d["feat_error"] = f"{feat.code} {feat.text}" if feat.code else "no answer to FEAT"
    if conn.tls is not None:  # implicit TLS (990): nothing to upgrade
        d["auth_tls"] = bool(listed)
        await quit_politely(conn)
        return ident
    if listed is False:
        d["auth_tls"] = False
        await quit_politely(conn)
        return ident
    reply = await command(session, conn, b"AUTH TLS\r\n")
    d["auth_tls"] = reply.code == 234
    if reply.code != 234:
        d["auth_tls_reply"] = f"{reply.code} {reply.text}" if reply.code else "no answer to AUTH TLS"
        await quit_politely(conn)
        return ident
    ident.confidence = "high"
    info, _plain = await session.start_tls(conn)
    info.starttls = True
    ident.tls = info
    if conn.tls is None:
        d["starttls_error"] = info.error
        return ident
    await quit_politely(conn)
    return ident


PROBE = Probe(
    name="ftp",
    names=frozenset({"ftp", "ftps"}),
    ports=frozenset({21, 990, 2121}),
    server_first=True,
    recognize=recognize,
    run=run,
    rarity=2,
)
