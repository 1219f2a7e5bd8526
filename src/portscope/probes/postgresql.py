"""PostgreSQL: does it offer TLS, and how would it authenticate us (without ever sending a password).

Why SSLRequest first: it is the first thing every libpq client may send, every PostgreSQL since 7.1
answers it with a single byte ('S' TLS, 'N' no TLS) and nothing else does, so it identifies the
server and answers the sysadmin's first question (is the database reachable in clear text?). Then a
StartupMessage for user and database "portscope": the server answers with the authentication it
wants (trust, password, md5, SCRAM-SHA-256, ...) or with an error saying why not (no pg_hba.conf
entry, role does not exist). We stop there: no password is ever sent.

PostgreSQL does not announce its version before authentication; the version is known only when the
server let us in (trust for "portscope"), from its server_version parameter.

Fields in details: ssl (bool: TLS offered), auth_method (trust | password | md5 | scram-sha-256 |
gss | sspi | kerberos5 | cert | ident | reject), sasl_mechanisms, error_severity, error_code
(SQLSTATE), error_message, version_note.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field

from portscope.probes.base import Ident, Probe, Session, clean_text

SSL_REQUEST = struct.pack("!II", 8, 80877103)
TERMINATE = b"X\x00\x00\x00\x04"
MESSAGE_CAP = 8192  # an ErrorResponse or authentication request is well under 1 KiB
MAX_MESSAGES = 40  # after AuthenticationOk: ParameterStatus (~15), BackendKeyData, ReadyForQuery
USER = "portscope"
_SQLSTATE = re.compile(r"^[0-9A-Z]{5}$")
_VERSION = re.compile(r"^([0-9]+(?:\.[0-9]+)*)")
_AUTH = {0: "trust", 2: "kerberos5", 3: "password", 5: "md5", 6: "scm", 7: "gss", 9: "sspi", 10: "sasl"}
# English wording of the errors that say which pg_hba.conf method refused us before any password
_REFUSALS = (
    (
        f'role "{USER}" does not exist',
        "trust",
    ),  # trust lets anyone past authentication, then the role is checked
    ("no pg_hba.conf entry", "reject"),
    ("pg_hba.conf rejects connection", "reject"),
    ("requires a valid client certificate", "cert"),
    ("Ident authentication failed", "ident"),
)


def startup_message(user: str = USER, database: str = USER) -> bytes:
    """Protocol 3.0 StartupMessage (no password is part of it)."""
    params = f"user\0{user}\0database\0{database}\0application_name\0portscope\0\0".encode()
    return struct.pack("!II", 8 + len(params), 196608) + params


@dataclass(slots=True)
class Message:
    """One backend message: its type byte and what we understood of it."""

    kind: str
    fields: dict[str, str] = field(default_factory=dict)  # ErrorResponse / NoticeResponse fields
    auth_code: int | None = None  # AuthenticationRequest
    mechanisms: list[str] = field(default_factory=list)  # AuthenticationSASL
    parameter: tuple[str, str] | None = None  # ParameterStatus


def parse_message(data: bytes) -> tuple[Message, int] | None:
    """The first backend message in `data` and its length; None when incomplete or not PostgreSQL.

    Pure and bounded: fuzzed."""
    if len(data) < 5:
        return None
    kind = chr(data[0])
    (length,) = struct.unpack_from("!I", data, 1)
    if length < 4 or length > MESSAGE_CAP or len(data) < 1 + length:
        return None
    body = data[5 : 1 + length]
    msg = Message(kind)
    if kind in "EN":
        fields = _fields(body)
        if fields is None:
            return None
        msg.fields = fields
    elif kind == "R":
        if len(body) < 4:
            return None
        (msg.auth_code,) = struct.unpack_from("!I", body)
        if msg.auth_code == 10:
            msg.mechanisms = [clean_text(m, 64) for m in body[4:].split(b"\0") if m][:16]
    elif kind == "S":
        parts = body.split(b"\0")
        if len(parts) < 2:
            return None
        msg.parameter = (clean_text(parts[0], 64), clean_text(parts[1], 200))
    elif kind not in "KZv":
        return None
    return msg, 1 + length


def _fields(body: bytes) -> dict[str, str] | None:
    """ErrorResponse fields: a type byte then a NUL-terminated string each, a NUL at the end."""
    out: dict[str, str] = {}
    pos = 0
    while pos < len(body) and body[pos] != 0 and len(out) < 32:
        end = body.find(b"\0", pos + 1)
        if end < 0:
            return None
        key = chr(body[pos])
        if key.isalpha() and key not in out:
            out[key] = clean_text(body[pos + 1 : end], 300)
        pos = end + 1
    return out


def _error_ok(fields: dict[str, str]) -> bool:
    """An ErrorResponse as PostgreSQL sends it: a severity, a SQLSTATE, a message."""
    return ("S" in fields or "V" in fields) and bool(_SQLSTATE.match(fields.get("C", ""))) and "M" in fields


def recognize(data: bytes) -> Ident | None:
    """An ErrorResponse sent unprompted (e.g. "the database system is starting up")."""
    parsed = parse_message(data)
    if parsed is None or parsed[0].kind != "E" or not _error_ok(parsed[0].fields):
        return None
    ident = Ident("postgresql", product="PostgreSQL", details={})
    _error(ident.details, parsed[0].fields)
    return _finish(ident)


def _at_least(details: dict[str, object], version: tuple[int, ...], why: str) -> None:
    """Keep the highest lower bound on the server's version that its protocol behaviour proves."""
    floor = details.get("_floor")
    if not isinstance(floor, tuple) or version > floor:
        details["_floor"] = version
        details["version_evidence"] = why


def _error(details: dict[str, object], fields: dict[str, str]) -> None:
    if "V" in fields:  # the non-localized severity field: added in PostgreSQL 9.6 (protocol docs)
        _at_least(details, (9, 6), "error messages carry the V (non-localized severity) field, new in 9.6")
    details["error_severity"] = fields.get("V") or fields.get("S")
    details["error_code"] = fields.get("C")
    details["error_message"] = fields.get("M")
    message = fields.get("M", "")
    for words, method in _REFUSALS:
        if words in message:
            details.setdefault("auth_method", method)
            break
    if fields.get("C") == "3D000":  # database does not exist: checked after authentication let us in
        details.setdefault("auth_method", "trust")


async def _message(session: Session) -> Message | None:
    conn = session.conn
    assert conn is not None
    timeout = session.settings.read_timeout
    head = await conn.read_exactly(5, session.deadline.left(timeout))
    if len(head) < 5:
        return None
    (length,) = struct.unpack_from("!I", head, 1)
    if length < 4 or length > MESSAGE_CAP:
        return None
    body = await conn.read_exactly(length - 4, session.deadline.left(timeout))
    parsed = parse_message(head + body)
    return parsed[0] if parsed else None


async def run(session: Session, banner: bytes) -> Ident | None:
    conn = session.conn
    if conn is None or not await conn.write(SSL_REQUEST):
        return None
    answer = await conn.read_exactly(1, session.deadline.left(session.settings.read_timeout))
    if answer in (b"S", b"N") and await conn.read(64, session.deadline.left(0.05)):
        return None  # PostgreSQL says one byte and waits: this was the start of something else (SSH-...)
    details: dict[str, object] = {}
    ident = Ident("postgresql", product="PostgreSQL", details=details)
    if answer == b"S":
        details["ssl"] = True
        info, _plain = await session.start_tls(conn)
        info.starttls = True
        ident.tls = info
        if conn.tls is None:
            if _plain:
                return None  # 'S' and then plain text: not PostgreSQL's yes to TLS
            return ident  # it said yes to TLS, then failed the handshake: the connection is spent
    elif answer == b"N":
        details["ssl"] = False
    elif answer == b"E":  # servers before 7.1 (and some poolers) refuse the request with an error
        rest = await conn.read_exactly(4, session.deadline.left(session.settings.read_timeout))
        (length,) = struct.unpack("!I", rest) if len(rest) == 4 else (0,)
        body = b""
        if 4 <= length <= MESSAGE_CAP:
            body = await conn.read_exactly(length - 4, session.deadline.left(session.settings.read_timeout))
        parsed = parse_message(b"E" + rest + body)
        if parsed is None or not _error_ok(parsed[0].fields):
            return None
        details["ssl"] = False
        _error(details, parsed[0].fields)
        return _finish(ident)
    else:
        return None
    if not await conn.write(startup_message()):
        ident.confidence = "low" if not details["ssl"] else "high"
        return ident
    confirmed = await _startup(session, ident)
    if not confirmed and not details["ssl"]:
        ident.confidence = "low"  # one 'N' byte and then nothing we understand
    return _finish(ident)


def _finish(ident: Ident) -> Ident:
    """The version: announced after authentication only; else the lower bound the protocol proved."""
    floor = ident.details.pop("_floor", None)
    if ident.version is None:
        ident.details["version_note"] = "PostgreSQL does not announce its version before authentication"
        if isinstance(floor, tuple):
            ident.version = ".".join(map(str, floor)) + " or later"
    return ident


async def _startup(session: Session, ident: Ident) -> bool:
    """Read what the server says to our StartupMessage; True when it was PostgreSQL's protocol."""
    details = ident.details
    for _ in range(MAX_MESSAGES):
        msg = await _message(session)
        if msg is None:
            return "auth_method" in details or "error_code" in details
        if msg.kind == "E":
            if not _error_ok(msg.fields):
                return False
            _error(details, msg.fields)
            return True
        if msg.kind == "R" and msg.auth_code is not None:
            if msg.auth_code != 0:
                method = _AUTH.get(msg.auth_code, f"unknown ({msg.auth_code})")
                if msg.auth_code == 10:
                    details["sasl_mechanisms"] = msg.mechanisms
                    scram = [m for m in msg.mechanisms if m.startswith("SCRAM-")]
                    if scram:
                        _at_least(details, (10,), "SCRAM-SHA-256 authentication, new in PostgreSQL 10")
                    method = scram[0].lower().removesuffix("-plus") if scram else "sasl"
                details["auth_method"] = method
                return True  # it wants a secret: we stop here
            details["auth_method"] = "trust"
        elif msg.kind == "S" and msg.parameter is not None and msg.parameter[0] == "server_version":
            m = _VERSION.match(msg.parameter[1])
            ident.version = m.group(1) if m else None
            details["server_version"] = msg.parameter[1]
        elif msg.kind == "Z":  # ReadyForQuery: we are in; leave politely
            assert session.conn is not None
            await session.conn.write(TERMINATE)
            return True
    return True


PROBE = Probe(
    name="postgresql",
    names=frozenset({"postgresql", "postgres", "pg", "pgsql"}),
    ports=frozenset({5432}),
    recognize=recognize,
    run=run,
    rarity=3,
)
