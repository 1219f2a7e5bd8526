"""How a Socket looks in a table and a CSV row; shared by ls and who so both read the same."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from portscope.cli.output import Column
from portscope.model import ProcessRef, Socket

CSV_HEADER = (
    "proto",
    "family",
    "state",
    "local_address",
    "local_port",
    "remote_address",
    "remote_port",
    "recv_q",
    "send_q",
    "inode",
    "uid",
    "user",
    "service",
    "exposure",
    "v6only",
    "interface",
    "processes",
)

EXPOSURE_NOTES = {
    "all": "exposure all: 0.0.0.0 accepts connections on every IPv4 address of this host",
    "all6": "exposure all: [::] accepts every IPv6 address; marked +v4 it is dual-stack (v6only off) "
    "and takes IPv4 too, so it conflicts with a 0.0.0.0 listener on the same port",
    "loopback": "exposure loopback: 127.0.0.1/::1 only accept connections from this host itself",
    "address": "exposure address: bound to one address; reachable only through that interface",
}


def endpoint(address: str, port: int, interface: str | None = None, family: str = "ipv4") -> str:
    host = f"[{address}]" if family == "ipv6" else address
    if interface:
        host += f"%{interface}"
    return f"{host}:{port}"


def peer(s: Socket) -> str:
    if s.state in ("LISTEN", "UNCONN") and s.remote_port == 0:
        return "*"
    return endpoint(s.remote_address, s.remote_port, None, s.family)


def processes(refs: Sequence[ProcessRef], limit: int = 3) -> str:
    """nginx(812,813,+2): one name with its pids, all processes sharing the socket."""
    if not refs:
        return "-"
    by_name: dict[str, list[int]] = {}
    for r in refs:
        pids = by_name.setdefault(r.name, [])
        if r.pid not in pids:
            pids.append(r.pid)
    parts = []
    for name, pids in by_name.items():
        shown = ",".join(str(p) for p in pids[:limit])
        more = f",+{len(pids) - limit}" if len(pids) > limit else ""
        parts.append(f"{name}({shown}{more})")
    return " ".join(parts)


def exposure(s: Socket) -> str:
    if s.exposure == "all" and s.family == "ipv6" and s.v6only is False:
        return "all+v4"
    return s.exposure


def exposure_notes(sockets: Sequence[Socket]) -> list[str]:
    seen = []
    for s in sockets:
        key = "all6" if s.exposure == "all" and s.family == "ipv6" else s.exposure
        if key not in seen:
            seen.append(key)
    return [EXPOSURE_NOTES[k] for k in ("loopback", "all", "all6", "address") if k in seen]


def exposure_warnings(sockets: Sequence[Socket]) -> list[str]:
    """The seeds' rule: databases, caches and control APIs never listen beyond loopback or a private
    network. Warn for wildcard binds and public addresses of services the registry flags."""
    import ipaddress

    from portscope.registry import lookup_port

    out: list[str] = []
    seen: set[tuple[str, int, str]] = set()
    for s in sockets:
        if s.state not in ("LISTEN", "UNCONN") or s.exposure == "loopback":
            continue
        if s.exposure == "address" and ipaddress.ip_address(s.local_address).is_private:
            continue
        key = (s.proto, s.local_port, s.local_address)
        info = next(iter(lookup_port(s.local_port, s.proto)), None)
        if info is None or not info.loopback_only or key in seen:
            continue
        seen.add(key)
        where = "all interfaces" if s.exposure == "all" else f"public address {s.local_address}"
        out.append(
            f"warning: {s.local_port}/{s.proto} ({info.name}) listens on {where}: "
            "keep it on loopback or a private network"
        )
    return out


def columns(wide: bool, numeric: bool) -> list[Column]:
    """Addresses, states and exposure stay whole; on a narrow terminal SERVICE (the port's name, one
    `portscope services PORT` away) goes first, then USER, then the queues; PROCESS, the answer to
    "who owns it", shrinks and goes last (two IPv6 endpoints of `ls -a` alone can fill 80 columns)."""
    cols = [Column("PROTO")]
    if wide:
        cols.append(Column("STATE"))
    cols.append(Column("LOCAL"))
    if wide:
        cols += [Column("PEER"), Column("RECV-Q", "right", drop=2), Column("SEND-Q", "right", drop=3)]
    else:
        cols.append(Column("EXPOSURE"))
    if not numeric:
        cols.append(Column("SERVICE", max_width=16, fit="cut", drop=5, min_width=8))
    cols += [
        Column("USER", max_width=12, fit="cut", drop=4, min_width=6),
        Column("PROCESS", max_width=40, fit="cut", drop=1, min_width=12),
    ]
    return cols


def row(s: Socket, wide: bool, numeric: bool) -> list[str]:
    cells = [s.proto + ("6" if s.family == "ipv6" else "")]
    if wide:
        cells.append(s.state)
    cells.append(endpoint(s.local_address, s.local_port, s.interface, s.family))
    if wide:
        cells += [peer(s), _q(s.recv_q), _q(s.send_q)]
    else:
        cells.append(exposure(s))
    if not numeric:
        cells.append(s.service or "-")
    user = str(s.uid) if numeric or s.user is None else s.user
    cells += [user if s.uid is not None else "-", processes(s.processes)]
    return cells


def _q(value: int | None) -> str:
    return "-" if value is None else str(value)


def csv_row(s: Socket) -> list[Any]:
    d = s.to_dict()
    d["processes"] = ";".join(f"{p.name}/{p.pid}/{p.fd}" for p in s.processes)
    return [d[k] for k in CSV_HEADER]
