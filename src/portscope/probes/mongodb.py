"""MongoDB: the `hello` handshake every driver sends first, then `buildInfo` for the version.

Why these two commands: both are allowed before authentication (drivers need them to pick a
server), so they show the role (primary, secondary, mongos), the replica set and the wire version
on any MongoDB, and the exact version on all but the most locked-down. OP_MSG (MongoDB 3.6+) goes
first; a server that hangs up on it without a word is older, and gets the legacy OP_QUERY
`isMaster` on admin.$cmd on a second connection.

Replies are BSON, read by the small bounded reader below: a length a hostile peer chose is checked
against the bytes actually there and against MESSAGE_CAP before anything is read or allocated.

Fields in details: writable_primary (bool), secondary (bool), replica_set, mongos (bool),
min_wire_version, max_wire_version, release_from_wire (the release that introduced that wire
version), read_only, legacy_opquery (bool: only OP_QUERY worked), build_info_error.
"""

from __future__ import annotations

import math
import struct
from typing import Any

from portscope.probes.base import Ident, Probe, Session, clean_text

MESSAGE_CAP = 64 * 1024  # hello is ~300 bytes, buildInfo ~2 KiB
MAX_DEPTH = 8
MAX_ELEMENTS = 1024
OP_REPLY, OP_QUERY, OP_MSG = 1, 2004, 2013
# maxWireVersion -> the MongoDB release that introduced it (the drivers' published table)
WIRE_RELEASES = {
    2: "2.6",
    3: "3.0",
    4: "3.2",
    5: "3.4",
    6: "3.6",
    7: "4.0",
    8: "4.2",
    9: "4.4",
    10: "4.7",
    11: "4.8",
    12: "4.9",
    13: "5.0",
    14: "5.1",
    15: "5.2",
    16: "5.3",
    17: "6.0",
    18: "6.1",
    19: "6.2",
    20: "6.3",
    21: "7.0",
    22: "7.1",
    23: "7.2",
    24: "7.3",
    25: "8.0",
}


class _Budget:
    """Elements left to read in one document tree: a hostile document cannot make us build millions."""

    def __init__(self) -> None:
        self.left = MAX_ELEMENTS


# -- BSON -----------------------------------------------------------------------------------------------


def encode(doc: dict[str, int | str]) -> bytes:
    """The few BSON documents we send: int32 and string values only."""
    body = b""
    for key, value in doc.items():
        name = key.encode() + b"\0"
        if isinstance(value, int):
            body += b"\x10" + name + struct.pack("<i", value)
        else:
            raw = value.encode() + b"\0"
            body += b"\x02" + name + struct.pack("<i", len(raw)) + raw
    return struct.pack("<i", len(body) + 5) + body + b"\0"


def parse_bson(data: bytes) -> dict[str, Any] | None:
    """One BSON document at the start of `data`; None when malformed. Strings come back cleaned.

    Pure and bounded (depth, element count, every length checked against the buffer): fuzzed."""
    try:
        parsed = _document(data, 0, len(data), 0, _Budget())
    except (ValueError, struct.error, IndexError):
        return None
    return parsed[0] if parsed else None


def _document(
    data: bytes, pos: int, limit: int, depth: int, budget: _Budget
) -> tuple[dict[str, Any], int] | None:
    """The document at `pos`, which must end by `limit` (its parent's end)."""
    if depth > MAX_DEPTH or pos + 5 > limit:
        return None
    (length,) = struct.unpack_from("<i", data, pos)
    end = pos + length
    if length < 5 or end > limit or data[end - 1] != 0:
        return None
    out: dict[str, Any] = {}
    pos += 4
    while pos < end - 1:
        budget.left -= 1
        if budget.left < 0:
            return None
        kind = data[pos]
        nul = data.find(b"\0", pos + 1, end)
        if nul < 0:
            return None
        key = clean_text(data[pos + 1 : nul], 64)
        parsed = _value(data, kind, nul + 1, end, depth, budget)
        if parsed is None:
            return None
        value, pos = parsed
        if key not in out:
            out[key] = value
    return (out, end) if pos == end - 1 else None


def _value(data: bytes, kind: int, pos: int, end: int, depth: int, budget: _Budget) -> tuple[Any, int] | None:
    fixed = {0x01: 8, 0x07: 12, 0x08: 1, 0x09: 8, 0x10: 4, 0x11: 8, 0x12: 8, 0x13: 16}
    if kind in fixed:
        size = fixed[kind]
        if pos + size > end:
            return None
        raw = data[pos : pos + size]
        value: Any
        if kind == 0x01:
            number = struct.unpack("<d", raw)[0]
            value = number if math.isfinite(number) else None
        elif kind == 0x07:
            value = raw.hex()
        elif kind == 0x08:
            value = raw != b"\0"
        elif kind == 0x10:
            value = struct.unpack("<i", raw)[0]
        elif kind in (0x09, 0x12):
            value = struct.unpack("<q", raw)[0]
        elif kind == 0x11:
            value = struct.unpack("<Q", raw)[0]
        else:
            value = None  # decimal128: not needed, skipped
        return value, pos + size
    if kind in (0x06, 0x0A, 0x7F, 0xFF):  # undefined, null, max key, min key: no bytes
        return None, pos
    if kind in (0x02, 0x0D, 0x0E):  # string, JavaScript code, symbol
        if pos + 4 > end:
            return None
        (size,) = struct.unpack_from("<i", data, pos)
        stop = pos + 4 + size
        if size < 1 or stop > end or data[stop - 1] != 0:
            return None
        return clean_text(data[pos + 4 : stop - 1], 256), stop
    if kind in (0x03, 0x04):
        parsed = _document(data, pos, end, depth + 1, budget)
        if parsed is None:
            return None
        doc, stop = parsed
        return (list(doc.values()) if kind == 0x04 else doc), stop
    if kind == 0x05:  # binary: length, subtype, bytes (not shown)
        if pos + 5 > end:
            return None
        (size,) = struct.unpack_from("<i", data, pos)
        stop = pos + 5 + size
        if size < 0 or stop > end:
            return None
        return f"<{size} bytes of binary>", stop
    if kind == 0x0B:  # regex: two C strings
        first = data.find(b"\0", pos, end)
        second = data.find(b"\0", first + 1, end) if first >= 0 else -1
        return (None, second + 1) if second >= 0 else None
    return None  # DBPointer, code with scope, unknown: cannot know their size safely


# -- wire messages ------------------------------------------------------------------------------------


def op_msg(request_id: int, doc: dict[str, int | str]) -> bytes:
    body = struct.pack("<I", 0) + b"\0" + encode(doc)
    return struct.pack("<iiii", 16 + len(body), request_id, 0, OP_MSG) + body


def op_query(request_id: int, doc: dict[str, int | str]) -> bytes:
    body = struct.pack("<i", 0) + b"admin.$cmd\0" + struct.pack("<ii", 0, -1) + encode(doc)
    return struct.pack("<iiii", 16 + len(body), request_id, 0, OP_QUERY) + body


def parse_reply(data: bytes, request_id: int | None = None) -> dict[str, Any] | None:
    """The document of an OP_MSG or OP_REPLY answer (to `request_id` when given). Fuzzed."""
    if len(data) < 16:
        return None
    length, _rid, response_to, opcode = struct.unpack_from("<iiii", data)
    if length < 21 or length > MESSAGE_CAP or len(data) < length:
        return None
    if request_id is not None and response_to != request_id:
        return None
    body = data[16:length]
    if opcode == OP_MSG:
        if len(body) < 5 or body[4] != 0:  # flag bits, then a kind-0 section: the reply document
            return None
        return parse_bson(body[5:])
    if opcode == OP_REPLY:
        if len(body) < 20:
            return None
        (returned,) = struct.unpack_from("<i", body, 16)
        return parse_bson(body[20:]) if returned >= 1 else None
    return None


async def _exchange(session: Session, message: bytes, request_id: int) -> tuple[dict[str, Any] | None, bool]:
    """Send one command; (reply document, the peer hung up without a byte)."""
    conn = session.conn
    if conn is None or not await conn.write(message):
        return None, True
    timeout = session.settings.read_timeout
    head = await conn.read_exactly(16, session.deadline.left(timeout))
    if len(head) < 16:
        return None, not head and conn.eof
    (length,) = struct.unpack_from("<i", head)
    if length < 21 or length > MESSAGE_CAP:
        return None, False  # a length no hello reply has (a hostile 2 GiB claim): read nothing more
    body = await conn.read_exactly(length - 16, session.deadline.left(timeout))
    return parse_reply(head + body, request_id), False


def _is_hello(doc: dict[str, Any]) -> bool:
    return any(k in doc for k in ("isWritablePrimary", "ismaster", "maxWireVersion", "helloOk"))


def _int(value: Any, low: int = 0, high: int = 1000) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and low <= value <= high else None


async def run(session: Session, banner: bytes) -> Ident | None:
    hello, closed = await _exchange(session, op_msg(1, {"hello": 1, "$db": "admin"}), 1)
    legacy = False
    if hello is None and closed and not session.deadline.expired:
        try:
            await session.connect()
        except OSError:
            return None
        hello, _ = await _exchange(session, op_query(1, {"isMaster": 1}), 1)
        legacy = True
    if hello is None or not _is_hello(hello):
        return None
    details: dict[str, object] = {}
    primary = hello.get("isWritablePrimary", hello.get("ismaster"))
    if isinstance(primary, bool):
        details["writable_primary"] = primary
    if isinstance(hello.get("secondary"), bool):
        details["secondary"] = hello["secondary"]
    if isinstance(hello.get("setName"), str):
        details["replica_set"] = hello["setName"]
    if hello.get("msg") == "isdbgrid":
        details["mongos"] = True
    if isinstance(hello.get("readOnly"), bool):
        details["read_only"] = hello["readOnly"]
    low, high = _int(hello.get("minWireVersion")), _int(hello.get("maxWireVersion"))
    if low is not None:
        details["min_wire_version"] = low
    if high is not None:
        details["max_wire_version"] = high
        release = WIRE_RELEASES.get(high) or (f"newer than {WIRE_RELEASES[25]}" if high > 25 else None)
        if release:
            details["release_from_wire"] = release
    if legacy:
        details["legacy_opquery"] = True
    ident = Ident("mongodb", product="MongoDB", details=details)
    request = op_query(2, {"buildInfo": 1}) if legacy else op_msg(2, {"buildInfo": 1, "$db": "admin"})
    build, _ = await _exchange(session, request, 2)
    if build is not None:
        version = build.get("version")
        if isinstance(version, str) and version[:1].isdigit():
            ident.version = version[:40]
        elif isinstance(build.get("errmsg"), str):
            details["build_info_error"] = build["errmsg"][:200]
    return ident


PROBE = Probe(
    name="mongodb",
    names=frozenset({"mongodb", "mongo", "mongod"}),
    ports=frozenset({27017, 27018, 27019}),
    run=run,
    rarity=4,
)
