"""AMQP (RabbitMQ and other brokers): the protocol header, and the broker's Connection.Start.

Why the 0-9-1 header: it is what RabbitMQ clients send, and the broker answers with Connection.Start,
whose server-properties table names the product, version and platform before any login. A broker
that speaks another AMQP version (1.0: ActiveMQ Artemis, Qpid, Azure Service Bus) answers with its
own protocol header and closes: that header is the answer (RFC-style version negotiation of AMQP),
and it is also what RabbitMQ sends back to anything that is not AMQP (`recognize`).

Fields in details: amqp_version (0-9-1, 1.0, ...), product, version, platform, cluster_name,
mechanisms (list), locales (list), capabilities (list of those the broker sets true),
version_refused (bool: the broker answered with its own header instead of Connection.Start).
"""

from __future__ import annotations

import struct
from typing import Any

from portscope.probes.base import Ident, Probe, Session, clean_text

PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"
FRAME_CAP = 64 * 1024  # Connection.Start is ~500 bytes (RabbitMQ); frame_max is not negotiated yet
FRAME_END = 0xCE
MAX_DEPTH = 4
MAX_FIELDS = 256
# fixed-size field values: type -> (struct format, size). 0-9-1 as brokers implement it (RabbitMQ's
# errata: 's' is a short int, 'l' a long int), plus the spec's own 'U' and 'L'.
_FIXED = {
    "t": ("?", 1),
    "b": ("b", 1),
    "B": ("B", 1),
    "s": ("!h", 2),
    "U": ("!h", 2),
    "u": ("!H", 2),
    "I": ("!i", 4),
    "i": ("!I", 4),
    "l": ("!q", 8),
    "L": ("!q", 8),
    "f": ("!f", 4),
    "d": ("!d", 8),
    "T": ("!Q", 8),
}


class _Budget:
    """Fields left to read in one table tree: a hostile table cannot make us build millions."""

    def __init__(self) -> None:
        self.left = MAX_FIELDS


def parse_table(data: bytes, pos: int = 0, depth: int = 0) -> tuple[dict[str, Any], int] | None:
    """A field table at `pos` (u32 size, then name/value pairs): (fields, end). Strings cleaned.

    Pure and bounded (depth, field count, every size checked against the buffer): fuzzed."""
    return _table(data, pos, len(data), depth, _Budget())


def _table(
    data: bytes, pos: int, limit: int, depth: int, budget: _Budget
) -> tuple[dict[str, Any], int] | None:
    """The table at `pos`, which must end by `limit` (its parent's end)."""
    if depth > MAX_DEPTH or pos + 4 > limit:
        return None
    (size,) = struct.unpack_from("!I", data, pos)
    pos += 4
    end = pos + size
    if end > limit:
        return None
    out: dict[str, Any] = {}
    while pos < end:
        budget.left -= 1
        if budget.left < 0:
            return None
        name_len = data[pos]
        if pos + 1 + name_len + 1 > end:
            return None
        name = clean_text(data[pos + 1 : pos + 1 + name_len], 64)
        parsed = _value(data, pos + 1 + name_len, end, depth, budget)
        if parsed is None:
            return None
        value, pos = parsed
        out.setdefault(name, value)
    return out, end


def _value(data: bytes, pos: int, end: int, depth: int, budget: _Budget) -> tuple[Any, int] | None:
    kind = chr(data[pos])
    pos += 1
    if kind in _FIXED:
        fmt, size = _FIXED[kind]
        if pos + size > end:
            return None
        (value,) = struct.unpack_from(fmt, data, pos)
        if isinstance(value, float) and value != value:  # NaN: not a value we can show
            value = None
        return value, pos + size
    if kind == "D":  # decimal: scale, then a long
        return (None, pos + 5) if pos + 5 <= end else None
    if kind == "V":
        return None, pos
    if kind in "Sx":  # long string, byte array
        if pos + 4 > end:
            return None
        (size,) = struct.unpack_from("!I", data, pos)
        stop = pos + 4 + size
        if stop > end:
            return None
        text = clean_text(data[pos + 4 : stop], 256) if kind == "S" else f"<{size} bytes>"
        return text, stop
    if kind == "F":
        return _table(data, pos, end, depth + 1, budget)
    if kind == "A":
        if pos + 4 > end or depth >= MAX_DEPTH:
            return None
        (size,) = struct.unpack_from("!I", data, pos)
        stop = pos + 4 + size
        if stop > end:
            return None
        items: list[Any] = []
        pos += 4
        while pos < stop:
            budget.left -= 1
            if budget.left < 0:
                return None
            parsed_item = _value(data, pos, stop, depth + 1, budget)
            if parsed_item is None:
                return None
            item, pos = parsed_item
            items.append(item)
        return items, stop
    return None


def parse_start(payload: bytes) -> dict[str, Any] | None:
    """Connection.Start (class 10, method 10): versions, server properties, mechanisms, locales. Fuzzed."""
    if len(payload) < 6 or payload[:4] != b"\x00\x0a\x00\x0a":
        return None
    major, minor = payload[4], payload[5]
    table = parse_table(payload, 6)
    if table is None:
        return None
    props, pos = table
    lists: list[list[str]] = []
    for _ in range(2):  # mechanisms, locales: long strings of space-separated words
        if pos + 4 > len(payload):
            return None
        (size,) = struct.unpack_from("!I", payload, pos)
        if pos + 4 + size > len(payload):
            return None
        words = payload[pos + 4 : pos + 4 + size].split()[:32]
        lists.append([clean_text(w, 64) for w in words])
        pos += 4 + size
    return {"major": major, "minor": minor, "properties": props, "mechanisms": lists[0], "locales": lists[1]}


def parse_frame(data: bytes) -> dict[str, Any] | None:
    """A whole method frame on channel 0 holding Connection.Start. Fuzzed."""
    if len(data) < 8 or data[0] != 1:
        return None
    channel, size = struct.unpack_from("!HI", data, 1)
    if channel != 0 or size > FRAME_CAP or len(data) < 8 + size or data[7 + size] != FRAME_END:
        return None
    return parse_start(data[7 : 7 + size])


def header_version(data: bytes) -> str | None:
    """The AMQP version named by a protocol header (b"AMQP" + 4 bytes)."""
    if len(data) < 8 or not data.startswith(b"AMQP"):
        return None
    a, b, c, d = data[4:8]
    if a == 0 and (b, c, d) == (0, 9, 1):
        return "0-9-1"
    if a in (0, 2, 3) and (b, c, d) == (1, 0, 0):
        return "1.0" + {0: "", 2: " (TLS)", 3: " (SASL)"}[a]
    if a == 1 and b == 1:  # before 0-9-1: class 1, instance 1, then major and minor (0-8 is 8, 0)
        return "0-8" if (c, d) == (8, 0) else f"{c}-{d}"
    return f"{a}.{b}.{c}.{d}"


def recognize(data: bytes) -> Ident | None:
    """A protocol header (a broker refusing what we sent) or a Connection.Start frame."""
    version = header_version(data)
    if version is not None:
        return Ident("amqp", details={"amqp_version": version, "version_refused": True})
    start = parse_frame(data)
    return _ident(start) if start is not None else None


def _ident(start: dict[str, Any]) -> Ident:
    props: dict[str, Any] = start["properties"]
    major, minor = start["major"], start["minor"]
    details: dict[str, object] = {"amqp_version": "0-9-1" if (major, minor) == (0, 9) else f"{major}-{minor}"}
    for key in ("product", "version", "platform", "cluster_name"):
        if isinstance(props.get(key), str):
            details[key] = props[key]
    caps = props.get("capabilities")
    if isinstance(caps, dict):
        details["capabilities"] = sorted(k for k, v in caps.items() if v is True)[:32]
    details["mechanisms"] = start["mechanisms"]
    details["locales"] = start["locales"]
    product = props.get("product") if isinstance(props.get("product"), str) else None
    version = props.get("version") if isinstance(props.get("version"), str) else None
    return Ident("amqp", product=product or None, version=(version or "")[:40] or None, details=details)


async def run(session: Session, banner: bytes) -> Ident | None:
    conn = session.conn
    if conn is None or not await conn.write(PROTOCOL_HEADER):
        return None
    timeout = session.settings.read_timeout
    head = await conn.read_exactly(8, session.deadline.left(timeout))
    if head.startswith(b"AMQP"):
        return recognize(head)
    if len(head) < 8 or head[0] != 1:
        return None
    (size,) = struct.unpack_from("!I", head, 3)
    if size > FRAME_CAP:
        return None
    rest = await conn.read_exactly(size, session.deadline.left(timeout))  # payload minus 1, frame end
    start = parse_frame(head + rest)
    return _ident(start) if start is not None else None


PROBE = Probe(
    name="amqp",
    names=frozenset({"amqp", "amqps", "rabbitmq"}),
    ports=frozenset({5672}),
    recognize=recognize,
    run=run,
    rarity=5,
)
