"""`portscope who PORT`: fuser 22/tcp followed by ps aux | grep PID, in one command."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from portscope.cli import output, sockview

if TYPE_CHECKING:
    from portscope.inventory.snapshot import Snapshot
    from portscope.model import ProcessInfo, Socket


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("port", metavar="PORT", help="22, 22/tcp, 53/udp, ssh, 8000-8100")
    p.add_argument("-t", "--tcp", action="store_true", help="TCP only")
    p.add_argument("-u", "--udp", action="store_true", help="UDP only")
    output.add_format_options(p)


def run(args: argparse.Namespace) -> int:
    from portscope.inventory.holders import holders
    from portscope.registry import parse_ports

    spec = parse_ports(args.port)
    protos = tuple(p for p, on in (("tcp", args.tcp), ("udp", args.udp)) if on) or ("tcp", "udp")
    procs, snap = holders(spec, protos)
    unowned = [s for s in snap.sockets if not s.processes]
    if args.json:
        output.emit_json([p.to_dict() for p in procs])
    elif args.csv:
        header = (
            "pid",
            "name",
            "user",
            "unit",
            "container",
            "started",
            "exe",
            "cmdline",
            # the socket's owner may differ from the process's user (a socket passed by systemd or
            # inherited across setuid): one header, two names, or a CSV reader keeps only one
            *("socket_user" if k == "user" else k for k in sockview.CSV_HEADER),
        )
        output.emit_csv(
            header,
            (
                [
                    p.pid,
                    p.name,
                    p.user,
                    p.unit,
                    p.container,
                    p.started,
                    p.exe,
                    p.cmdline,
                    *sockview.csv_row(s),
                ]
                for p in procs
                for s in p.sockets
            ),
        )
    else:
        _human(procs, unowned, snap, args.port)
    hidden = snap.hidden_note()
    if hidden:
        output.note(hidden)
    return 0 if procs or unowned else 1


KERNEL_STATES = frozenset({"TIME_WAIT", "SYN_RECV", "FIN_WAIT2", "LAST_ACK", "CLOSING"})


def orphan_reason(s: Socket, snap: Snapshot) -> str:
    """Why no process is shown for a socket: the kernel's, hidden from us, or out of our sight."""
    if s.state in KERNEL_STATES and not s.inode:
        return "kept by the kernel after the process closed it"
    if snap.denied:
        return "owner hidden: run as root to see other users' processes"
    return "no process found: owned by another PID namespace (container)?"


def _human(procs: list[ProcessInfo], unowned: list[Socket], snap: Snapshot, port: str) -> None:
    if not procs and not unowned:
        output.emit_table([], [], [f"nothing holds {port}"])  # no rows: the sentence, no header
        return
    for i, p in enumerate(procs):
        user = p.user or (str(p.uid) if p.uid is not None else "?")
        if i:
            sys.stdout.write("\n")
        rows = [
            ["command", p.cmdline or p.name],
            ["exe", p.exe or "? (unreadable: another user's process needs root)"],
            ["started", p.started or "?"],
            ["unit", p.unit or "-"],
            ["container", p.container or "-"],
        ]
        # A command line may end in an ellipsis on a narrow terminal (--json has it whole); a
        # socket's line wraps instead, so its addresses are never cut.
        rows += [["socket", output.Whole(_describe(s))] for s in p.sockets]
        output.emit_table(
            [output.Column(p.name), output.Column(f"pid {p.pid}, user {user}", fit="cut", min_width=24)],
            rows,
        )
    if unowned:
        if procs:
            sys.stdout.write("\n")
        rows = [[_describe(s), orphan_reason(s, snap)] for s in unowned]
        output.emit_table(
            [
                output.Column("SOCKET WITHOUT PROCESS", fit="wrap", min_width=30),
                output.Column("WHY", fit="cut", min_width=20),
            ],
            rows,
        )


def _describe(s: Socket) -> str:
    local = sockview.endpoint(s.local_address, s.local_port, s.interface, s.family)
    return f"{s.proto} {s.state} {local} -> {sockview.peer(s)}"
