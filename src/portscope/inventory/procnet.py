"""/proc/net/{tcp,tcp6,udp,udp6}: the fallback when netlink sock_diag is unavailable.

Slower (the kernel formats text that we parse back) and it cannot say whether an IPv6 socket is
v6only, nor the listen backlog, but it exists on every Linux that has /proc.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

from portscope.inventory.netlink import RawSocket

_FILES: dict[tuple[str, int], str] = {
    ("tcp", socket.AF_INET): "/proc/net/tcp",
    ("tcp", socket.AF_INET6): "/proc/net/tcp6",
    ("udp", socket.AF_INET): "/proc/net/udp",
    ("udp", socket.AF_INET6): "/proc/net/udp6",
}


def _addr(hexaddr: str) -> bytes:
    """The kernel prints each 32-bit word of the address in host (little-endian) order."""
    raw = bytes.fromhex(hexaddr)
    return b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4)).ljust(16, b"\0")


def dump(proto: str, family: int, states: int, root: str = "") -> Iterator[RawSocket]:
    """Same contract as netlink.dump; `root` lets tests point at a copy of /proc/net."""
    path = root + _FILES[(proto, family)]
    try:
        handle = open(path, encoding="ascii")  # noqa: SIM115 - closed by the `with` below
    except FileNotFoundError:
        return  # e.g. IPv6 disabled: no sockets of that family
    with handle:
        next(handle, None)
        for line in handle:
            f = line.split()
            if len(f) < 10:
                continue
            state = int(f[3], 16)
            if not states & (1 << state):
                continue
            laddr, lport = f[1].split(":")
            raddr, rport = f[2].split(":")
            txq, rxq = f[4].split(":")
            yield (
                family,
                state,
                int(lport, 16),
                int(rport, 16),
                _addr(laddr),
                _addr(raddr),
                int(rxq, 16),
                int(txq, 16),
                int(f[7]),
                int(f[9]),
                0,
                None,
            )
