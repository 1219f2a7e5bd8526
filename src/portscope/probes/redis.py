"""Redis (and the servers that speak its RESP protocol: Valkey, Dragonfly, KeyDB).

Why PING first and INFO only after a PONG: PING is the one command every Redis answers, with or
without a password, and its refusal says why we may not look further (NOAUTH: a password is set;
DENIED: protected mode, no password and not bound to loopback). INFO is sent only when PING worked,
so a server that wants a password never sees more than one harmless command from us.

Redis answers bytes that are not its protocol with `-ERR` lines (it reads them as an inline command),
which is how a TLS ClientHello or an HTTP request sent to Redis gives it away: `recognize` reads those.

Fields in details: auth_required (bool), protected_mode (bool, only when DENIED), redis_version,
mode (standalone | cluster | sentinel), os, server (valkey, dragonfly, ... when INFO names another
implementation), info_error (INFO refused, e.g. an ACL without it), evidence (recognize: the line).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from portscope.probes.base import Ident, Probe, Session, clean_text

LINE_CAP = 4096  # one RESP line (simple string, error, bulk header)
BULK_CAP = 32 * 1024  # INFO server is ~1 KiB; a bulk string above this is read only this far
INFO_LINES = 200
_VERSION = re.compile(r"^[0-9][0-9A-Za-z.\-+~]{0,39}$")
# Errors only Redis (and its forks) send, in Redis's own words: (prefix, confidence)
_REDIS_ERRORS = (
    (b"-NOAUTH Authentication required", "high"),
    (b"-DENIED Redis is running in protected mode", "high"),
    (b"-WRONGPASS invalid username-password pair", "high"),
    (b"-ERR Protocol error: ", "high"),
    (b"-ERR wrong number of arguments for '", "high"),
    (b"-ERR unknown command '", "low"),
    (b"-ERR unknown command `", "low"),
)
# Error codes Redis uses for PING when something stops it from answering PONG
_PING_REFUSALS = frozenset({"NOAUTH", "DENIED", "LOADING", "BUSY", "MASTERDOWN", "NOPERM", "WRONGPASS"})


@dataclass(slots=True)
class Reply:
    """One RESP reply. `kind`: + (status), - (error), : (integer), $ (bulk), * (array: count only)."""

    kind: str
    text: str = ""  # status, error or bulk text (cleaned, bounded)
    number: int | None = None  # integer value, bulk or array length (-1: null)
    raw: bytes = b""  # bulk payload as received (bounded), for INFO parsing
    truncated: bool = False  # a bulk longer than BULK_CAP, or cut short by the peer


def parse_reply(data: bytes) -> Reply | None:
    """The first RESP reply in `data`; None when it is not RESP. Pure: fuzzed."""
    end = data.find(b"\r\n", 0, LINE_CAP)
    line = data[:end] if end >= 0 else data[:LINE_CAP]
    if not line:
        return None
    kind, rest = chr(line[0]), line[1:]
    if kind in "+-":
        return Reply(kind, clean_text(rest, 512))
    if kind in ":$*":
        number = _int(rest)
        if number is None:
            return None
        if kind != "$" or number < 0 or end < 0:
            return Reply(kind, number=number)
        body = data[end + 2 : end + 2 + min(number, BULK_CAP)]
        truncated = number > BULK_CAP or len(body) < number
        return Reply(kind, clean_text(body, 512), number, body, truncated)
    return None


def _int(raw: bytes) -> int | None:
    text = raw.strip()
    if not re.fullmatch(rb"-?[0-9]{1,19}", text):
        return None
    value = int(text)
    return value if -(2**63) <= value <= 2**63 - 1 else None


def parse_info(raw: bytes) -> dict[str, str]:
    """`key:value` lines of an INFO reply (sections and blanks skipped); bounded, cleaned. Fuzzed."""
    out: dict[str, str] = {}
    for line in raw[:BULK_CAP].split(b"\n")[:INFO_LINES]:
        key, sep, value = line.strip().partition(b":")
        if not sep or not key or key.startswith(b"#"):
            continue
        name = clean_text(key, 64)
        if name not in out:
            out[name] = clean_text(value, 200)
    return out


def recognize(data: bytes) -> Ident | None:
    """A Redis error sent in answer to something that was not Redis's protocol (or to nothing)."""
    for prefix, confidence in _REDIS_ERRORS:
        if data.startswith(prefix):
            line = data.split(b"\r\n", 1)[0]
            details: dict[str, object] = {"evidence": clean_text(line, 200)}
            if prefix.startswith(b"-NOAUTH"):
                details["auth_required"] = True
            elif prefix.startswith(b"-DENIED"):
                details["protected_mode"] = True
            return Ident("redis", product="Redis", details=details, confidence=confidence)
    return None


async def _reply(session: Session) -> Reply | None:
    """Read one reply: the line, then (for a bulk) its payload, each read capped in bytes and time."""
    conn = session.conn
    assert conn is not None
    line = await conn.read_until(b"\r\n", LINE_CAP, session.deadline.left(session.settings.read_timeout))
    reply = parse_reply(line)
    if reply is None or reply.kind != "$" or reply.number is None or reply.number < 0:
        return reply
    want = min(reply.number, BULK_CAP)
    body = await conn.read_exactly(want, session.deadline.left(session.settings.read_timeout))
    return parse_reply(line + body)


async def run(session: Session, banner: bytes) -> Ident | None:
    conn = session.conn
    if conn is None or not await conn.write(b"PING\r\n"):
        return None
    pong = await _reply(session)
    if pong is None:
        return None
    details: dict[str, object] = {}
    if pong.kind == "-":
        code = pong.text.split(" ", 1)[0]
        if code not in _PING_REFUSALS:
            return None  # a RESP speaker that does not know PING is not Redis
        details["auth_required"] = code in ("NOAUTH", "WRONGPASS", "NOPERM")
        if code == "DENIED":
            details["protected_mode"] = True
        details["evidence"] = pong.text[:200]
        return Ident("redis", product="Redis", details=details)
    if pong.kind != "+" or pong.text != "PONG":
        return None
    details["auth_required"] = False
    ident = Ident("redis", product="Redis", details=details)
    if not await conn.write(b"INFO server\r\n"):
        return ident
    info = await _reply(session)
    if info is None:
        return ident
    if info.kind == "-":
        details["info_error"] = info.text[:200]
        return ident
    if info.kind != "$":
        return ident
    fields = parse_info(info.raw)
    if info.truncated:
        details["info_truncated"] = True
    _describe(ident, fields)
    return ident


def _describe(ident: Ident, fields: dict[str, str]) -> None:
    """Product and version from INFO server: forks keep redis_version for clients and add their own."""
    details = ident.details
    for key, name in (("redis_version", "redis_version"), ("redis_mode", "mode"), ("os", "os")):
        if fields.get(key):
            details[name] = fields[key]
    version = fields.get("redis_version")
    for key, product in (("valkey_version", "Valkey"), ("dragonfly_version", "Dragonfly")):
        if fields.get(key):
            ident.product, version = product, fields[key]
            details["server"] = product.lower()
    if fields.get("server_name") and fields["server_name"].lower() not in ("redis", ""):
        details["server"] = fields["server_name"]
    if version is not None and version.lower().startswith(("df-v", "v")):
        version = version.split("v", 1)[1]
    ident.version = version if version and _VERSION.match(version) else None


PROBE = Probe(
    name="redis",
    names=frozenset({"redis", "redis-server"}),
    ports=frozenset({6379}),
    recognize=recognize,
    run=run,
    rarity=3,
)
