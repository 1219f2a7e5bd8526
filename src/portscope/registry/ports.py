"""Facts about a port number itself: its IANA range class and this host's ephemeral range.

The ephemeral range is read from the kernel, not assumed: Linux defaults to 32768-60999, not IANA's
49152-65535, and a server bound inside it can collide with outgoing connections ("address already in
use" that comes and goes), which is exactly what users need to be told.
"""

from __future__ import annotations

import functools
import sys
from dataclasses import dataclass

WELL_KNOWN_MAX = 1023
REGISTERED_MAX = 49151
_LINUX_RANGE = "/proc/sys/net/ipv4/ip_local_port_range"


def port_class(port: int) -> str:
    """'well-known' (0-1023, needs root to bind), 'registered' (1024-49151) or 'dynamic' (49152-65535)."""
    if port <= WELL_KNOWN_MAX:
        return "well-known"
    return "registered" if port <= REGISTERED_MAX else "dynamic"


@dataclass(frozen=True, slots=True)
class EphemeralRange:
    low: int
    high: int
    source: str  # where the numbers came from: the sysctl, or the default we assumed

    @property
    def size(self) -> int:
        return self.high - self.low + 1

    def contains(self, port: int) -> bool:
        return self.low <= port <= self.high

    def to_dict(self) -> dict[str, object]:
        return {"low": self.low, "high": self.high, "size": self.size, "source": self.source}


@functools.lru_cache(maxsize=1)
def ephemeral_range() -> EphemeralRange:
    if sys.platform.startswith("linux"):
        try:
            with open(_LINUX_RANGE) as fh:
                low, high = (int(x) for x in fh.read().split())
            return EphemeralRange(low, high, "net.ipv4.ip_local_port_range")
        except (OSError, ValueError):
            return EphemeralRange(32768, 60999, "Linux default (ip_local_port_range unreadable)")
    if sys.platform == "darwin":
        import subprocess

        try:
            out = subprocess.run(
                ["sysctl", "-n", "net.inet.ip.portrange.first", "net.inet.ip.portrange.last"],
                capture_output=True,
                text=True,
                timeout=2,
                check=True,
            ).stdout.split()
            return EphemeralRange(int(out[0]), int(out[1]), "net.inet.ip.portrange")
        except (OSError, ValueError, IndexError, subprocess.SubprocessError):
            pass
    return EphemeralRange(49152, 65535, "IANA default (49152-65535)")
