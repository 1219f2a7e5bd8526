"""Protocol-correct UDP requests, so that an open UDP port can prove itself by answering.

An empty datagram gets silence from most UDP services, which leaves `open|filtered`; a real DNS query,
NTP client packet or SNMP get-request gets an answer from a live service, which makes it `open`. All
of these are our own encodings of the public protocols (RFC 1035, RFC 5905, RFC 1157/3416, ...).
"""

from __future__ import annotations

import os
import struct


def dns_query(name: str = "", qtype: int = 2, tid: bytes | None = None, qclass: int = 1) -> bytes:
    """A standard query (RD set), default `. IN NS`: every DNS server answers it, even if to refuse."""
    header = (tid or os.urandom(2)) + struct.pack(">HHHHH", 0x0100, 1, 0, 0, 0)
    labels = b"".join(bytes([len(p)]) + p.encode("ascii") for p in name.strip(".").split(".") if p)
    return header + labels + b"\x00" + struct.pack(">HH", qtype, qclass)


def ber(tag: int, body: bytes) -> bytes:
    n = len(body)
    length = (
        bytes([n]) if n < 0x80 else bytes([0x81, n]) if n < 0x100 else bytes([0x82]) + n.to_bytes(2, "big")
    )
    return bytes([tag]) + length + body


def snmp_get(community: bytes = b"public") -> bytes:
    """SNMPv2c get-request for sysDescr.0 (1.3.6.1.2.1.1.1.0)."""
    oid = ber(0x06, bytes([0x2B, 6, 1, 2, 1, 1, 1, 0]))
    varbind = ber(0x30, oid + b"\x05\x00")
    pdu = ber(0xA0, ber(0x02, b"\x01") + ber(0x02, b"\x00") + ber(0x02, b"\x00") + ber(0x30, varbind))
    return ber(0x30, ber(0x02, b"\x01") + ber(0x04, community) + pdu)


_NTP_CLIENT = b"\x1b" + b"\x00" * 47  # LI 0, version 3, mode 3 (client)
_NETBIOS_NODE_STATUS = (
    os.urandom(2)
    + b"\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00"
    + b"\x20"
    + b"CKAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
    + b"\x00\x00\x21\x00\x01"
)
_SSDP = b'M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nMAN: "ssdp:discover"\r\nMX: 1\r\nST: ssdp:all\r\n\r\n'
_MEMCACHED_VERSION = b"\x00\x01\x00\x00\x00\x01\x00\x00version\r\n"
_RPC_NULL = struct.pack(">IIIIII", 0x50535343, 0, 2, 100000, 2, 0) + b"\x00" * 16  # portmapper NULL call

PAYLOADS: dict[int, bytes] = {
    53: dns_query(),
    5353: dns_query(),
    123: _NTP_CLIENT,
    161: snmp_get(),
    137: _NETBIOS_NODE_STATUS,
    1900: _SSDP,
    11211: _MEMCACHED_VERSION,
    111: _RPC_NULL,
}


def payload_for(port: int) -> bytes:
    """The request most likely to make PORT answer; an empty datagram where we know none."""
    return PAYLOADS.get(port, b"")
