"""MySQL and MariaDB (and what speaks their protocol: Percona, TiDB, ...): the server speaks first.

Why the handshake is enough: the very first packet a MySQL-protocol server sends carries its version
string, its capabilities (TLS or not) and its default authentication plugin. A server that refuses
us sends an error packet instead (0xff), e.g. 1130 "Host ... is not allowed to connect", which still
names the product. When TLS is offered we ask for it (SSLRequest, as clients do before logging in)
to report the certificate; we never log in.

Fields in details: protocol_version, server_version (the full string), connection_id, ssl (bool),
auth_plugin, error_code, error_message (error packet instead of a handshake).
"""

from __future__ import annotations

import re
import struct

from portscope.probes.base import Ident, Probe, Session, clean_text

PACKET_CAP = 16 * 1024  # a handshake is ~100 bytes
CLIENT_LONG_PASSWORD = 0x1
CLIENT_PROTOCOL_41 = 0x200
CLIENT_SSL = 0x800
CLIENT_SECURE_CONNECTION = 0x8000
CLIENT_PLUGIN_AUTH = 0x80000
_SERVER_VERSION = re.compile(rb"^[0-9][\x20-\x7e]{0,99}$")
_VERSION = re.compile(r"^([0-9]{1,3}\.[0-9]{1,3}(?:\.[0-9]{1,4})?)")
_PLUGIN = re.compile(rb"^[A-Za-z0-9_\-]{1,64}$")


def packet(data: bytes) -> tuple[int, bytes] | None:
    """(sequence id, payload) of the first complete packet in `data`."""
    if len(data) < 4:
        return None
    length = int.from_bytes(data[:3], "little")
    if length == 0 or length > PACKET_CAP or len(data) < 4 + length:
        return None
    return data[3], data[4 : 4 + length]


def parse_handshake(data: bytes) -> Ident | None:
    """The server's first packet: a v10 (or v9) handshake, or an error. Pure and bounded: fuzzed."""
    found = packet(data)
    if found is None or found[0] != 0:
        return None
    payload = found[1]
    if payload[0] == 0xFF:
        return _error(payload)
    if payload[0] not in (9, 10):
        return None
    end = payload.find(b"\0", 1, 102)
    if end < 0 or not _SERVER_VERSION.match(payload[1:end]):
        return None
    server_version = clean_text(payload[1:end], 100)
    details: dict[str, object] = {"protocol_version": payload[0], "server_version": server_version}
    rest = payload[end + 1 :]
    if len(rest) >= 4:
        (details["connection_id"],) = struct.unpack_from("<I", rest)
    if payload[0] == 10:
        if len(rest) < 15:  # connection id, 8 bytes of scramble, filler, capabilities
            return None
        (caps,) = struct.unpack_from("<H", rest, 13)
        plugin = None
        if len(rest) >= 31:
            (high,) = struct.unpack_from("<H", rest, 18)
            caps |= high << 16
            scramble_len = rest[20]
            if caps & CLIENT_PLUGIN_AUTH:
                start = 31 + max(13, scramble_len - 8)
                name = rest[start:].split(b"\0", 1)[0]
                plugin = clean_text(name, 64) if _PLUGIN.match(name) else None
        details["ssl"] = bool(caps & CLIENT_SSL)
        if plugin:
            details["auth_plugin"] = plugin
    product, version = _product(server_version)
    return Ident("mysql", product=product, version=version, details=details)


def _product(server_version: str) -> tuple[str, str | None]:
    text = server_version
    if "mariadb" in text.lower():
        product = "MariaDB"
        text = text.removeprefix("5.5.5-")  # MariaDB 10+ prefixes this for old clients that parse the major
    elif "tidb" in text.lower():
        m = re.search(r"TiDB-v?([0-9][0-9A-Za-z.\-]{0,30})", text)
        return "TiDB", m.group(1) if m else None
    else:
        product = "MySQL"
    m = _VERSION.match(text)
    return product, m.group(1) if m else None


def _error(payload: bytes) -> Ident | None:
    """ERR packet: 0xff, code (LE), optional '#' + SQLSTATE, message."""
    if len(payload) < 4:
        return None
    (code,) = struct.unpack_from("<H", payload, 1)
    message = payload[3:]
    if message.startswith(b"#") and len(message) >= 6:
        message = message[6:]
    if not 1000 <= code <= 9999 or not message or any(b < 0x20 and b not in (9, 10, 13) for b in message):
        return None
    text = clean_text(message, 300)
    product = "MariaDB" if "MariaDB" in text else "MySQL" if "MySQL" in text else None
    return Ident("mysql", product=product, details={"error_code": code, "error_message": text})


def recognize(data: bytes) -> Ident | None:
    try:
        return parse_handshake(data)
    except (IndexError, struct.error):  # a bound we forgot must cost this answer, not the probe
        return None


def ssl_request() -> bytes:
    """The 32-byte SSLRequest (a HandshakeResponse cut before the user name), sequence id 1."""
    caps = (
        CLIENT_LONG_PASSWORD | CLIENT_PROTOCOL_41 | CLIENT_SSL | CLIENT_SECURE_CONNECTION | CLIENT_PLUGIN_AUTH
    )
    payload = struct.pack("<IIB23x", caps, 16 * 1024 * 1024, 45)
    return len(payload).to_bytes(3, "little") + b"\x01" + payload


async def run(session: Session, banner: bytes) -> Ident | None:
    conn = session.conn
    if conn is None:
        return None
    timeout = session.settings.read_timeout
    data = banner
    if len(data) < 4:
        data += await conn.read_exactly(4 - len(data), session.deadline.left(timeout))
    if len(data) < 4:
        return None
    length = int.from_bytes(data[:3], "little")
    if length == 0 or length > PACKET_CAP:
        return None
    if len(data) < 4 + length:
        data += await conn.read_exactly(4 + length - len(data), session.deadline.left(timeout))
    ident = recognize(data)
    if ident is None or not ident.details.get("ssl") or conn.tls is not None:
        return ident
    if not await conn.write(ssl_request()):
        return ident
    info, _plain = await session.start_tls(conn)
    info.starttls = True
    ident.tls = info
    return ident


PROBE = Probe(
    name="mysql",
    names=frozenset({"mysql", "mariadb"}),
    ports=frozenset({3306}),
    server_first=True,
    recognize=recognize,
    run=run,
    rarity=4,
)
