"""`portscope services`: what a port or a name means, from IANA, /etc/services and the seeds."""

from __future__ import annotations

import argparse
import re
from typing import TYPE_CHECKING

from portscope.cli import output

if TYPE_CHECKING:
    from portscope.registry import ServiceInfo

_PORTISH = re.compile(r"^[\d,\s/a-z-]*\d[\d,\s/a-z-]*$|^-$")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "query",
        nargs="?",
        metavar="PORTS|NAME",
        help="443, 8000-8100, 53/udp, postgresql, elasticsearch; none: the curated list",
    )
    p.add_argument("--category", metavar="NAME", help="web, mail, database, remote-access, ...")
    p.add_argument("-t", "--tcp", action="store_true", help="TCP only")
    p.add_argument("-u", "--udp", action="store_true", help="UDP only")
    output.add_format_options(p)


def _find(args: argparse.Namespace) -> tuple[list[ServiceInfo], list[str]]:
    from portscope import registry

    notes: list[str] = []
    if args.category:
        found = registry.by_category(args.category)
    elif args.query is None:
        found = [s for s in registry.all_services() if "curated" in s.sources]
    elif _PORTISH.match(args.query.strip().lower()) and not registry.lookup_name(args.query):
        spec = registry.parse_ports(args.query)
        found = []
        for proto in ("tcp", "udp"):
            for port in spec.ports(proto):
                found += registry.lookup_port(port, proto)
        ports = spec.ports("tcp") or spec.ports("udp")
        if len(ports) == 1:
            notes += _port_notes(ports[0])
    else:
        found = registry.lookup_name(args.query)
        if not found:
            from portscope.errors import BadInput

            raise BadInput(
                f"unknown service {args.query!r}: give a port (443, 8000-8100) or a name (https, postgresql)"
            )
    protos = {p for p, on in (("tcp", args.tcp), ("udp", args.udp)) if on} or {"tcp", "udp"}
    return sorted(
        {(s.port, s.proto, s.name): s for s in found if s.proto in protos}.values(),
        key=lambda s: (s.port, s.proto),
    ), notes


def _port_notes(port: int) -> list[str]:
    """The seeds' facts about a port number itself: its range class and this host's ephemeral range."""
    from portscope.registry import ephemeral_range, port_class

    if port == 0:
        # Port 0 is never bound as such: bind() with port 0 asks the kernel for a free ephemeral
        # port, so "binding it needs root" (true of 1-1023) would mislead.
        eph = ephemeral_range()
        return [
            "0 is not a service port: binding port 0 asks the kernel for a free ephemeral port "
            f"(this host: {eph.low}-{eph.high}), any user may do it"
        ]
    cls = port_class(port)
    notes = {
        "well-known": f"{port} is a well-known port (0-1023): binding it needs root or CAP_NET_BIND_SERVICE",
        "registered": f"{port} is a registered port (1024-49151): any user may bind it",
        "dynamic": f"{port} is in the dynamic/private range (49152-65535) that clients use as source ports",
    }
    out = [notes[cls]]
    eph = ephemeral_range()
    if eph.contains(port):
        out.append(
            f"{port} is inside this host's ephemeral range {eph.low}-{eph.high}: the kernel may give it "
            "to an outgoing connection, and a server binding it can then fail with 'address already in use'"
        )
    return out


def _flags(s: ServiceInfo) -> str:
    flags = []
    if s.plaintext:
        flags.append("plaintext" + (f", TLS on {s.tls_twin}" if s.tls_twin else ""))
    elif s.tls_twin:
        flags.append(f"plaintext twin {s.tls_twin}")
    if s.loopback_only:
        flags.append("keep on loopback")
    return "; ".join(flags)


def run(args: argparse.Namespace) -> int:
    found, notes = _find(args)
    if args.json:
        output.emit_json([s.to_dict() for s in found])
    elif args.csv:
        header = (
            "port",
            "proto",
            "name",
            "iana_name",
            "category",
            "tls_twin",
            "plaintext",
            "loopback_only",
            "use",
            "description",
        )
        output.emit_csv(
            header,
            (
                [
                    s.port,
                    s.proto,
                    s.name,
                    s.iana_name,
                    s.category,
                    s.tls_twin,
                    s.plaintext,
                    s.loopback_only,
                    s.use,
                    s.description,
                ]
                for s in found
            ),
        )
    else:
        rows = [
            [str(s.port), s.proto, s.name, s.category or "-", _flags(s) or "-", s.use or s.description or "-"]
            for s in found
        ]
        cols = [
            output.Column("PORT", "right"),
            output.Column("PROTO"),
            output.Column("NAME", max_width=18, fit="cut", min_width=16),
            # narrow terminal: CATEGORY goes first, then NOTES ("keep on loopback" matters more)
            output.Column("CATEGORY", fit="cut", drop=2, min_width=8),
            output.Column("NOTES", max_width=24, fit="cut", drop=1, min_width=16),
            output.Column("USE", max_width=40, fit="cut", min_width=30),
        ]
        renamed = [
            f"{s.port}/{s.proto}: IANA calls it {s.iana_name}; people running it mean {s.name}"
            for s in found
            if s.iana_name and s.iana_name != s.name and "curated" in s.sources
        ]
        output.emit_table(cols, rows, notes + renamed + ([] if found else ["no registered service"]))
    return 0 if found else 1
