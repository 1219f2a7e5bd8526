"""SSH: the identification line (RFC 4253 section 4.2) and the server's KEXINIT (section 7.1).

Why read the KEXINIT: the banner names the software, but what an admin needs to know ("does it still
offer diffie-hellman-group1-sha1, ssh-dss, CBC ciphers?", what `ssh -vvv` shows as "peer server
KEXINIT proposal") is only in the algorithm lists, which the server sends in clear before any key
exchange. We send our identification, read that one packet and hang up: no key exchange, never any
authentication.

Fields in details: protocol_version, software, comment (when sent), preamble (lines sent before the
identification, when any), kex, host_key, ciphers, macs, compression (lists, both directions merged,
server's order), strict_kex (bool: the Terrapin countermeasure kex-strict-s-v00@openssh.com is offered),
weak (offered algorithms on our short list of broken or deprecated ones; "protocol 1" for SSH-1 only
servers), and kexinit_error when the packet could not be read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from portscope import __version__
from portscope.probes.base import Ident, Probe, Session, clean_text
from portscope.probes.conn import Conn

MAX_PACKET = 35000  # RFC 4253 6.1: the largest packet an implementation must accept
IDENT_CAP = 1024  # the RFC allows 255 bytes for the line; a little slack for sloppy servers
MAX_PRE_LINES = 16  # lines a server may send before its identification (RFC 4253 4.2)
PRE_CAP = 8192
MAX_NAMES = 100  # names kept per list
MAX_PACKETS = 4  # IGNORE/DEBUG packets tolerated before the KEXINIT
SSH_MSG_KEXINIT = 20
_SKIPPABLE = {2, 3, 4}  # IGNORE, UNIMPLEMENTED, DEBUG
CLIENT_IDENT = f"SSH-2.0-portscope_{__version__}\r\n".encode()

_IDENT = re.compile(rb"^SSH-(\d{1,3}\.\d{1,3})-([^\s]*)(?:[ \t]+([^\n]*?))?\r?$")
_SOFTWARE = re.compile(r"^(.+?)[_-]v?(\d[\w.+~\-]*)$")
_PRODUCTS = {"openssh": "OpenSSH", "dropbear": "Dropbear"}

# Our own short list: algorithms broken (MD5, RC4, DES, 1024-bit DH, DSA) or deprecated by OpenSSH for
# SHA-1 signatures, plus every CBC-mode cipher (the 2008 plaintext-recovery attack on SSH's CBC use).
_WEAK_EXACT = frozenset(
    {
        "diffie-hellman-group1-sha1",
        "diffie-hellman-group14-sha1",
        "diffie-hellman-group-exchange-sha1",
        "rsa1024-sha1",
        "ssh-dss",
        "ssh-dss-cert-v01@openssh.com",
        "ssh-rsa",
        "ssh-rsa-cert-v01@openssh.com",
        "none",
    }
)
_WEAK_PREFIX = ("arcfour", "hmac-md5", "hmac-sha1-96", "des-", "gss-group1-sha1-", "gss-gex-sha1-")
_WEAK_SUFFIX = ("-cbc", "-cbc@lysator.liu.se", "cbc@openssh.com")


@dataclass(slots=True)
class Banner:
    """The server's identification line."""

    protocol_version: str
    software: str
    comment: str | None
    preamble: list[str] = field(default_factory=list)


@dataclass(slots=True)
class Kexinit:
    """The server's algorithm proposal: name-lists in the order of RFC 4253 7.1 (languages dropped)."""

    kex: list[str]
    host_key: list[str]
    enc_c2s: list[str]
    enc_s2c: list[str]
    mac_c2s: list[str]
    mac_s2c: list[str]
    comp_c2s: list[str]
    comp_s2c: list[str]
    first_kex_follows: bool


def parse_ident_line(line: bytes) -> Banner | None:
    """One `SSH-protoversion-softwareversion [comments]` line (without its LF)."""
    m = _IDENT.match(line[:IDENT_CAP])
    if m is None:
        return None
    comment = clean_text(m.group(3), 128) if m.group(3) else None
    return Banner(clean_text(m.group(1), 16), clean_text(m.group(2), 128), comment or None)


def find_ident(data: bytes) -> tuple[Banner, int] | None:
    """The identification in what the server sent first, and where the bytes after its line start
    (-1 while the line has not ended). Lines before it are kept as the preamble (RFC 4253 4.2)."""
    pos = 0
    pre: list[str] = []
    for _ in range(MAX_PRE_LINES + 1):
        end = data.find(b"\n", pos, pos + IDENT_CAP)
        line = data[pos : end if end >= 0 else pos + IDENT_CAP]
        if line.startswith(b"SSH-"):
            banner = parse_ident_line(line)
            if banner is None:
                return None
            banner.preamble = pre[:3]
            return banner, (end + 1 if end >= 0 else -1)
        if end < 0:
            return None
        if line.strip():
            pre.append(clean_text(line, 120))
        pos = end + 1
    return None


def split_software(software: str) -> tuple[str | None, str | None]:
    """`OpenSSH_9.2p1` -> (OpenSSH, 9.2p1); `OpenSSH_for_Windows_8.1` -> (OpenSSH_for_Windows, 8.1)."""
    if not software:
        return None, None
    m = _SOFTWARE.match(software)
    if m is None:
        return software[:64], None
    name = _PRODUCTS.get(m.group(1).lower(), m.group(1))
    return name[:64], m.group(2)[:64]


def banner_ident(banner: Banner) -> Ident:
    product, version = split_software(banner.software)
    details: dict[str, object] = {"protocol_version": banner.protocol_version, "software": banner.software}
    if banner.comment:
        details["comment"] = banner.comment
    if banner.preamble:
        details["preamble"] = banner.preamble
    if not speaks_v2(banner):
        details["weak"] = ["protocol 1"]
    problems = ["speaks only SSH protocol 1 (broken since 2001)"] if not speaks_v2(banner) else []
    line = f"SSH-{banner.protocol_version}-{banner.software}" + (
        f" {banner.comment}" if banner.comment else ""
    )
    return Ident("ssh", product=product, version=version, details=details, problems=problems, banner=line)


def speaks_v2(banner: Banner) -> bool:
    return banner.protocol_version in ("2.0", "1.99")


def recognize(data: bytes) -> Ident | None:
    try:
        found = find_ident(data[: PRE_CAP + IDENT_CAP])
    except (ValueError, IndexError):
        return None
    return banner_ident(found[0]) if found else None


# -- binary packets ------------------------------------------------------------------------------------


def packet_length(head: bytes) -> int | None:
    """The packet_length field (bytes after it), when sane: room for padding_length and a message
    type, within what RFC 4253 obliges anyone to accept."""
    if len(head) < 4:
        return None
    n = int.from_bytes(head[:4], "big")
    return n if 2 <= n <= MAX_PACKET else None


def packet_payload(body: bytes) -> bytes | None:
    """The payload of an unencrypted packet, given the packet_length bytes after the length field."""
    if len(body) < 2:
        return None
    padding = body[0]
    end = len(body) - padding
    if end <= 1:
        return None
    return body[1:end]


def _name_list(payload: bytes, pos: int) -> tuple[list[str], int] | None:
    if pos + 4 > len(payload):
        return None
    n = int.from_bytes(payload[pos : pos + 4], "big")
    start = pos + 4
    if n > len(payload) - start:
        return None
    raw = payload[start : start + n]
    names = [clean_text(x.decode("ascii", "replace"), 64) for x in raw.split(b",")[:MAX_NAMES] if x]
    return [x for x in names if x], start + n


def parse_kexinit(payload: bytes) -> Kexinit | None:
    """SSH_MSG_KEXINIT: byte 20, 16-byte cookie, ten name-lists, first_kex_packet_follows, reserved."""
    if len(payload) < 17 or payload[0] != SSH_MSG_KEXINIT:
        return None
    pos = 17
    lists: list[list[str]] = []
    for _ in range(10):
        got = _name_list(payload, pos)
        if got is None:
            return None
        names, pos = got
        lists.append(names)
    follows = pos < len(payload) and payload[pos] != 0
    kex, host_key, enc_c2s, enc_s2c, mac_c2s, mac_s2c, comp_c2s, comp_s2c = lists[:8]
    return Kexinit(kex, host_key, enc_c2s, enc_s2c, mac_c2s, mac_s2c, comp_c2s, comp_s2c, follows)


def _merged(a: list[str], b: list[str]) -> list[str]:
    return list(dict.fromkeys([*a, *b]))


def weak_algorithms(kex: Kexinit) -> list[str]:
    offered = [
        *kex.kex,
        *kex.host_key,
        *_merged(kex.enc_c2s, kex.enc_s2c),
        *_merged(kex.mac_c2s, kex.mac_s2c),
    ]
    weak = [a for a in offered if a in _WEAK_EXACT or a.startswith(_WEAK_PREFIX) or a.endswith(_WEAK_SUFFIX)]
    return list(dict.fromkeys(weak))


def describe_kexinit(kex: Kexinit) -> dict[str, object]:
    return {
        "kex": kex.kex,
        "host_key": kex.host_key,
        "ciphers": _merged(kex.enc_c2s, kex.enc_s2c),
        "macs": _merged(kex.mac_c2s, kex.mac_s2c),
        "compression": _merged(kex.comp_c2s, kex.comp_s2c),
        "strict_kex": "kex-strict-s-v00@openssh.com" in kex.kex,
        "weak": weak_algorithms(kex),
    }


# -- the conversation ------------------------------------------------------------------------------------


class _Stream:
    """Bytes already received (after the identification line) first, then the connection."""

    def __init__(self, conn: Conn, session: Session, leftover: bytes) -> None:
        self.conn = conn
        self.session = session
        self.buf = leftover

    async def exactly(self, n: int) -> bytes:
        out, self.buf = self.buf[:n], self.buf[n:]
        if len(out) < n:
            wait = self.session.deadline.left(self.session.settings.read_timeout)
            out += await self.conn.read_exactly(n - len(out), wait)
        return out


async def _read_ident(conn: Conn, session: Session, banner: bytes) -> tuple[Banner, bytes] | None:
    """The identification (from the banner the runner already read, else from the wire) and the bytes
    the server sent after it."""
    data = banner
    for _ in range(MAX_PRE_LINES + 2):
        found = find_ident(data)
        if found is not None and found[1] >= 0:
            return found[0], data[found[1] :]
        if len(data) >= PRE_CAP or conn.eof:
            break
        chunk = await conn.read_until(b"\n", IDENT_CAP, session.deadline.left(session.settings.read_timeout))
        if not chunk:
            break
        data += chunk
    found = find_ident(data)
    return (found[0], b"") if found is not None else None


async def run(session: Session, banner: bytes) -> Ident | None:
    conn = session.conn
    if conn is None:
        return None
    if not banner and not await conn.write(CLIENT_IDENT):  # RFC 4253 4.2: either side may speak first
        return None
    got = await _read_ident(conn, session, banner)
    if got is None:
        return None
    parsed, leftover = got
    ident = banner_ident(parsed)
    if not speaks_v2(parsed):
        return ident
    if banner and not await conn.write(CLIENT_IDENT):
        ident.details["kexinit_error"] = "the server closed the connection after its identification"
        return ident
    kex, error = await _read_kexinit(_Stream(conn, session, leftover))
    if kex is None:
        ident.details["kexinit_error"] = error
        return ident
    ident.details.update(describe_kexinit(kex))
    weak = ident.details["weak"]
    if weak:
        ident.problems.append(f"weak SSH algorithms offered: {', '.join(weak[:6])}")
    return ident


async def _read_kexinit(stream: _Stream) -> tuple[Kexinit | None, str]:
    for _ in range(MAX_PACKETS):
        head = await stream.exactly(4)
        if len(head) < 4:
            return None, "no KEXINIT: the server went quiet or closed the connection"
        length = packet_length(head)
        if length is None:
            n = int.from_bytes(head, "big")
            return None, f"no KEXINIT: a packet length of {n} bytes is outside 2..{MAX_PACKET}"
        body = await stream.exactly(length)
        if len(body) < length:
            return None, "no KEXINIT: the packet was cut short"
        payload = packet_payload(body)
        if payload is None:
            return None, "no KEXINIT: malformed packet padding"
        if payload[0] in _SKIPPABLE:
            continue
        if payload[0] != SSH_MSG_KEXINIT:
            return None, f"no KEXINIT: the server sent message type {payload[0]} instead"
        kex = parse_kexinit(payload)
        return (
            (kex, "")
            if kex is not None
            else (None, "no KEXINIT: a malformed one (its name-lists overrun the packet)")
        )
    return None, "no KEXINIT among the first packets"


PROBE = Probe(
    name="ssh",
    names=frozenset({"ssh", "sftp", "sshd", "openssh"}),
    ports=frozenset({22, 2222}),
    server_first=True,
    recognize=recognize,
    run=run,
    rarity=2,
)
