"""Pacing shared by the scan loops: per-host round-trip estimates, a probe-rate gate, fd budgets, polling.

Why adaptive: a fixed timeout is either too long on a LAN (a /24 of filtered ports takes minutes) or
too short across an ocean (filtered where the answer was merely slow). Each host's timeout follows
its measured round trips, as TCP's own RTO does (RFC 6298), clamped so that a noisy, busy machine
does not call a slow answer filtered.
"""

from __future__ import annotations

import os
import resource
import select
import time

# Before any answer from a host: a generous first guess, as nmap's initial RTT timeout.
INITIAL_TIMEOUT = 1.0
# Never below this, even on loopback: a loaded machine can stall a SYN-ACK for tens of ms.
MIN_TIMEOUT = 0.25
MAX_TIMEOUT = 5.0


class HostRtt:
    """Smoothed RTT and variance per host index (RFC 6298 weights), kept in flat lists for speed."""

    __slots__ = ("fixed", "rttvar", "srtt")

    def __init__(self, hosts: int, fixed: float | None) -> None:
        self.fixed = fixed
        self.srtt = [0.0] * hosts
        self.rttvar = [0.0] * hosts

    def sample(self, host: int, rtt: float) -> None:
        if self.srtt[host] == 0.0:
            self.srtt[host] = rtt
            self.rttvar[host] = rtt / 2
            return
        err = rtt - self.srtt[host]
        self.srtt[host] += err / 8
        self.rttvar[host] += (abs(err) - self.rttvar[host]) / 4

    def timeout(self, host: int) -> float:
        """How long a silent port of this host is waited for, across all its tries."""
        if self.fixed is not None:
            return self.fixed
        srtt = self.srtt[host]
        if srtt == 0.0:
            return INITIAL_TIMEOUT
        return min(MAX_TIMEOUT, max(MIN_TIMEOUT, 2 * (srtt + 4 * self.rttvar[host])))


class RateGate:
    """At most `rate` new probes per second, with no burst: probe k may leave at start + k/rate."""

    __slots__ = ("interval", "next_at")

    def __init__(self, rate: float | None) -> None:
        self.interval = 1.0 / rate if rate else 0.0
        self.next_at = 0.0

    def allow(self, now: float) -> bool:
        if not self.interval:
            return True
        if now < self.next_at:
            return False
        # Idle time does not bank credit: a pause followed by a burst is what the rate forbids.
        self.next_at = max(self.next_at, now) + self.interval
        return True

    def wait(self, now: float) -> float:
        """Seconds until the next probe may leave (0 when it may now)."""
        return max(0.0, self.next_at - now) if self.interval else 0.0


def fd_budget(reserve: int = 64) -> int:
    """Sockets this process may hold at once; raises the soft RLIMIT_NOFILE to the hard one first.

    Why: the default soft limit (1024) would cap a scan far below what the host allows, while the
    hard limit is the administrator's real ceiling, which we respect.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    limit = hard if soft == resource.RLIM_INFINITY else soft
    return max(16, limit - reserve)


class Poller:
    """epoll where there is one (Linux), poll elsewhere: the same three calls either way."""

    def __init__(self) -> None:
        self._epoll = hasattr(select, "epoll")
        self._p = select.epoll() if self._epoll else select.poll()
        self.WRITE = select.EPOLLOUT if self._epoll else select.POLLOUT
        self.READ = select.EPOLLIN if self._epoll else select.POLLIN

    def register(self, fd: int, events: int) -> None:
        self._p.register(fd, events)

    def unregister(self, fd: int) -> None:
        self._p.unregister(fd)

    def poll(self, timeout: float) -> list[tuple[int, int]]:
        """Ready fds; timeout in seconds (never negative)."""
        if self._epoll:
            return self._p.poll(max(0.0, timeout))
        return self._p.poll(max(0, int(timeout * 1000)))

    def close(self) -> None:
        if self._epoll:
            self._p.close()  # type: ignore[union-attr]


def monotonic() -> float:
    return time.monotonic()


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1
