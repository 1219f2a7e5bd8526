"""`portscope ls`: ss -lntup / netstat -tulnp / lsof -i, answered in one clear table."""

from __future__ import annotations

import argparse
from operator import attrgetter
from typing import TYPE_CHECKING

from portscope.cli import output, sockview
from portscope.errors import BadInput

if TYPE_CHECKING:
    from portscope.inventory.snapshot import Query


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-a", "--all", action="store_true", help="every socket, not only listening ones")
    p.add_argument("-t", "--tcp", action="store_true", help="TCP only")
    p.add_argument("-u", "--udp", action="store_true", help="UDP only")
    p.add_argument("-4", dest="ipv4", action="store_true", help="IPv4 only")
    p.add_argument("-6", dest="ipv6", action="store_true", help="IPv6 only")
    p.add_argument(
        "--state",
        action="append",
        metavar="STATE",
        help="only these states (LISTEN, ESTABLISHED, TIME_WAIT, CLOSE_WAIT, UNCONN, ...); "
        "repeat or comma-separate",
    )
    p.add_argument("--port", metavar="PORTS", help="local or remote port: 22, 80,443, 8000-8100, ssh")
    p.add_argument("--pid", action="append", metavar="PID", help="only sockets held by this process")
    p.add_argument("--process", metavar="NAME", help="only sockets of processes whose name contains NAME")
    p.add_argument("--exposed", action="store_true", help="only sockets reachable from other hosts")
    p.add_argument("-n", "--numeric", action="store_true", help="no service or user names")
    p.add_argument(
        "--no-owners",
        action="store_true",
        help="skip finding owning processes (the /proc/*/fd pass): faster on huge hosts",
    )
    output.add_format_options(p)


def _pids(values: list[str] | None) -> frozenset[int] | None:
    if not values:
        return None
    pids = set()
    for value in values:
        for part in value.split(","):
            if not part.strip().isdigit() or int(part) <= 0:
                raise BadInput(f"bad pid {part!r}: a pid is a positive whole number, e.g. --pid 812")
            pids.add(int(part))
    return frozenset(pids)


def build_query(args: argparse.Namespace) -> Query:
    from portscope.inventory import snapshot
    from portscope.inventory.states import normalize_state
    from portscope.registry import parse_ports

    states: frozenset[str] | None = snapshot.LISTENING
    if args.state:
        states = frozenset(normalize_state(s) for v in args.state for s in v.split(",") if s.strip())
    elif args.all:
        states = None
    protos = tuple(p for p, on in (("tcp", args.tcp), ("udp", args.udp)) if on) or ("tcp", "udp")
    families = tuple(f for f, on in (("ipv4", args.ipv4), ("ipv6", args.ipv6)) if on) or ("ipv4", "ipv6")
    return snapshot.Query(
        protos=protos,
        families=families,
        states=states,
        ports=parse_ports(args.port) if args.port else None,
        pids=_pids(args.pid),
        process=args.process,
        exposed=args.exposed,
        owners=not args.no_owners,
    )


def run(args: argparse.Namespace) -> int:
    from portscope.inventory import snapshot

    query = build_query(args)
    snap = snapshot.take(query)
    # attrgetter builds the key in C (a lambda costs a Python call per socket); the sort is stable,
    # so sockets of one port keep the kernel's order, IPv4 before IPv6 as they were dumped
    sockets = sorted(snap.sockets, key=attrgetter("proto", "local_port"))
    if args.json:
        output.emit_json(sockets)
    elif args.csv:
        output.emit_csv(sockview.CSV_HEADER, (sockview.csv_row(s) for s in sockets))
    else:
        wide = query.states != snapshot.LISTENING
        rows = [sockview.row(s, wide, args.numeric) for s in sockets]
        notes = sockview.exposure_warnings(sockets)
        if not wide:
            notes = sockview.exposure_notes(sockets) + notes
        if not sockets:
            notes = ["no socket matches"]
        output.emit_table(sockview.columns(wide, args.numeric), rows, notes)
    hidden = snap.hidden_note()
    if hidden:
        output.note(hidden)
    return 0 if sockets else 1
