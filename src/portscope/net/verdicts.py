"""What a socket error means for a port: the seeds' three readings (answered, refused, silence) and the
ICMP cases between them, as one small code per result so that scan workers can ship results as bytes.
"""

from __future__ import annotations

import errno
import socket
import struct

# code -> (status, reason); the index is what workers send over their pipe.
VERDICTS: tuple[tuple[str, str], ...] = (
    ("open", "syn-ack"),
    ("closed", "conn-refused"),
    ("filtered", "no-response"),
    ("unreachable", "host-unreach"),
    ("unreachable", "net-unreach"),
    ("filtered", "admin-prohibited"),
    ("closed", "icmp-port-unreach"),
    ("open", "udp-response"),
    ("open|filtered", "no-response"),
)
OPEN, CLOSED, FILTERED, HOST_UNREACH, NET_UNREACH, PROHIBITED, UDP_CLOSED, UDP_OPEN, UDP_SILENT = range(9)

# Errors that say nothing about the target, only that this host ran short (ports, fds, buffers):
# the probe is retried later at lower concurrency instead of being classified.
RESOURCE_ERRNOS = frozenset(
    {errno.EADDRNOTAVAIL, errno.EAGAIN, errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
)

_BY_ERRNO = {
    errno.ECONNREFUSED: CLOSED,
    errno.ECONNRESET: CLOSED,
    errno.EHOSTUNREACH: HOST_UNREACH,
    errno.EHOSTDOWN: HOST_UNREACH,
    errno.ENETUNREACH: NET_UNREACH,
    errno.ENETDOWN: NET_UNREACH,
    errno.ENONET: NET_UNREACH,
    # A local firewall (an nftables/iptables OUTPUT reject, a `prohibit` route) refused to send it.
    errno.EACCES: PROHIBITED,
    errno.EPERM: PROHIBITED,
    errno.ETIMEDOUT: FILTERED,
}

# Linux socket options not every Python names (values from <linux/in.h>, <linux/in6.h>).
IP_RECVERR = getattr(socket, "IP_RECVERR", 11)
IPV6_RECVERR = getattr(socket, "IPV6_RECVERR", 25)
MSG_ERRQUEUE = getattr(socket, "MSG_ERRQUEUE", 0x2000)
_EE = struct.Struct("=IBBBBII")  # struct sock_extended_err
_ORIGIN_ICMP, _ORIGIN_ICMP6 = 2, 3
# ICMP "administratively prohibited": net (9), host (10), communication (13); ICMPv6 type 1 code 1.
_PROHIBITED_V4 = frozenset({9, 10, 13})


def from_errno(err: int, sock: socket.socket | None = None, udp: bool = False) -> int:
    """The verdict for a failed connect/recv; `sock` lets ICMP details (IP_RECVERR) refine it."""
    if err == errno.ECONNREFUSED and udp:
        return UDP_CLOSED
    code = _BY_ERRNO.get(err, HOST_UNREACH)
    if code in (HOST_UNREACH, NET_UNREACH) and sock is not None and icmp_prohibited(sock):
        return PROHIBITED
    return code


def enable_icmp_details(sock: socket.socket, family: int) -> None:
    """Queue ICMP errors with their type and code, so admin-prohibited is told from host-unreach.

    Why: the kernel maps both to EHOSTUNREACH; only the error queue keeps the ICMP code.
    """
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVERR, 1)
    else:
        sock.setsockopt(socket.IPPROTO_IP, IP_RECVERR, 1)


def icmp_prohibited(sock: socket.socket) -> bool:
    """Did an ICMP 'administratively prohibited' (a firewall REJECT) end this socket?"""
    try:
        _, ancdata, _, _ = sock.recvmsg(64, 256, MSG_ERRQUEUE)
    except OSError:
        return False
    for _level, _type, data in ancdata:
        if len(data) < _EE.size:
            continue
        _errno, origin, icmp_type, icmp_code, _pad, _info, _data = _EE.unpack_from(data)
        if origin == _ORIGIN_ICMP and icmp_type == 3 and icmp_code in _PROHIBITED_V4:
            return True
        if origin == _ORIGIN_ICMP6 and icmp_type == 1 and icmp_code == 1:
            return True
    return False
