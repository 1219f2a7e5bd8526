"""`ss -s` plus the readings the seeds teach: CLOSE_WAIT piling up, TIME_WAIT and ephemeral-port
exhaustion, processes near "Too many open files".
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from portscope.inventory import owners, procinfo, snapshot
from portscope.inventory.users import user_name
from portscope.registry import EphemeralRange, ephemeral_range

CLOSE_WAIT_WARN = 10  # per process: a handful is normal churn, tens mean a leak
FD_WARN_RATIO = 0.8
EPHEMERAL_WARN_RATIO = 0.5


@dataclass(slots=True)
class Finding:
    severity: str  # info | warning
    code: str
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {"severity": self.severity, "code": self.code, "message": self.message}


@dataclass(slots=True)
class Stats:
    counts: dict[str, dict[str, int]]  # proto -> state -> count
    families: dict[str, int]
    ephemeral: EphemeralRange
    ephemeral_ports_in_use: int
    time_wait: int
    time_wait_ephemeral: int  # the TIME_WAIT sockets holding an ephemeral port (a client's side)
    busiest_destination: tuple[str, int, int] | None  # address, port, connections from here
    close_wait: list[tuple[int, str, int]]  # pid, name, count; most first
    fd_pressure: list[tuple[int, str, str | None, int, int]]  # pid, name, user, open, soft limit
    system_fds: tuple[int, int] | None  # allocated, fs.file-max
    findings: list[Finding] = field(default_factory=list)
    owners_hidden: str | None = None

    def to_dict(self) -> dict[str, Any]:
        eph = self.ephemeral
        return {
            "sockets": {p: dict(c, total=sum(c.values())) for p, c in self.counts.items()},
            "families": self.families,
            "ephemeral_range": {"low": eph.low, "high": eph.high, "size": eph.size, "source": eph.source},
            "ephemeral_ports_in_use": self.ephemeral_ports_in_use,
            "time_wait": self.time_wait,
            "time_wait_ephemeral": self.time_wait_ephemeral,
            "busiest_destination": None
            if self.busiest_destination is None
            else dict(zip(("address", "port", "connections"), self.busiest_destination, strict=True)),
            "close_wait": [{"pid": p, "name": n, "count": c} for p, n, c in self.close_wait],
            "fd_pressure": [
                {"pid": p, "name": n, "user": u, "open": o, "limit": lim, "ratio": round(o / lim, 3)}
                for p, n, u, o, lim in self.fd_pressure
            ],
            "system_fds": None
            if self.system_fds is None
            else dict(zip(("allocated", "max"), self.system_fds, strict=True)),
            "findings": [f.to_dict() for f in self.findings],
        }


def _system_fds() -> tuple[int, int] | None:
    try:
        with open("/proc/sys/fs/file-nr") as f:
            allocated, _, maximum = f.read().split()
        return int(allocated), int(maximum)
    except (OSError, ValueError):
        return None


def collect() -> Stats:
    snap = snapshot.take(snapshot.Query(states=None, owners=True, count_fds=True))
    eph = ephemeral_range()
    counts: dict[str, dict[str, int]] = {"tcp": {}, "udp": {}}
    families: Counter[str] = Counter()
    ports_in_use: set[int] = set()
    time_wait_ephemeral = 0
    destinations: Counter[tuple[str, int]] = Counter()
    close_wait: Counter[int] = Counter()
    names: dict[int, str] = {}
    for s in snap.sockets:
        c = counts[s.proto]
        c[s.state] = c.get(s.state, 0) + 1
        families[s.family] += 1
        if s.state not in ("LISTEN", "UNCONN") and eph.contains(s.local_port):
            ports_in_use.add(s.local_port)
            time_wait_ephemeral += s.state == "TIME_WAIT"
            if s.proto == "tcp":
                destinations[(s.remote_address, s.remote_port)] += 1
        if s.state == "CLOSE_WAIT":
            for ref in {r.pid: r for r in s.processes}.values():
                close_wait[ref.pid] += 1
                names[ref.pid] = ref.name
    time_wait = counts["tcp"].get("TIME_WAIT", 0)
    busiest = destinations.most_common(1)
    fd_pressure = []
    for pid, open_fds in snap.fd_counts.items():
        limit = procinfo.open_file_limit(pid)
        if limit and open_fds >= FD_WARN_RATIO * limit:
            d = procinfo.details(pid)
            fd_pressure.append((pid, owners.comm(pid), d.user, open_fds, limit))
    fd_pressure.sort(key=lambda t: t[3] / t[4], reverse=True)
    stats = Stats(
        counts=counts,
        families=dict(families),
        ephemeral=eph,
        ephemeral_ports_in_use=len(ports_in_use),
        time_wait=time_wait,
        time_wait_ephemeral=time_wait_ephemeral,
        busiest_destination=(busiest[0][0][0], busiest[0][0][1], busiest[0][1]) if busiest else None,
        close_wait=[(pid, names[pid], n) for pid, n in close_wait.most_common()],
        fd_pressure=fd_pressure,
        system_fds=_system_fds(),
        owners_hidden=snap.hidden_note(),
    )
    stats.findings = findings(stats)
    return stats


def findings(st: Stats) -> list[Finding]:
    """What a person should notice in these numbers, in the seeds' words."""
    out: list[Finding] = []
    for pid, name, n in st.close_wait:
        if n >= CLOSE_WAIT_WARN:
            out.append(
                Finding(
                    "warning",
                    "close_wait_leak",
                    f"{name} (pid {pid}) has {n} sockets in CLOSE_WAIT: the peer closed them and the application "
                    "never did; it is leaking connections (check its connection pool / close() calls)",
                )
            )
    size = st.ephemeral.size
    # Only the side that holds an ephemeral port matters: a server closing first leaves its TIME_WAITs
    # on its own port (80, 443), which takes nothing from outgoing connections.
    tw = st.time_wait_ephemeral
    if tw and tw >= EPHEMERAL_WARN_RATIO * size:
        out.append(
            Finding(
                "warning",
                "time_wait_exhaustion",
                f"{tw} TIME_WAIT sockets against {size} ephemeral ports: new outgoing connections "
                "may fail; reuse connections (pooling, keep-alive), or consider net.ipv4.tcp_tw_reuse=1",
            )
        )
    if st.busiest_destination and st.busiest_destination[2] >= EPHEMERAL_WARN_RATIO * size:
        addr, port, n = st.busiest_destination
        out.append(
            Finding(
                "warning",
                "ephemeral_exhaustion",
                f"{n} connections to {addr}:{port} use {n * 100 // size}% of the {size} ephemeral ports "
                f"({st.ephemeral.low}-{st.ephemeral.high}) available per destination",
            )
        )
    for pid, name, user, open_fds, limit in st.fd_pressure:
        who = f"{name} (pid {pid}{', user ' + user if user else ''})"
        out.append(
            Finding(
                "warning",
                "fd_limit",
                f"{who} has {open_fds} of {limit} open files allowed: near 'Too many open files'; raise "
                "LimitNOFILE= in its unit or nofile in /etc/security/limits.conf",
            )
        )
    if st.system_fds and st.system_fds[0] >= FD_WARN_RATIO * st.system_fds[1]:
        out.append(
            Finding(
                "warning",
                "system_fd_limit",
                f"{st.system_fds[0]} of {st.system_fds[1]} file handles allocated system-wide (fs.file-max)",
            )
        )
    return out


__all__ = ["Finding", "Stats", "collect", "findings", "user_name"]
