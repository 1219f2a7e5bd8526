"""`portscope check HOST PORT...`: nc -vz and </dev/tcp, with the answer explained."""

from __future__ import annotations

import argparse

from portscope.cli import output, reach
from portscope.errors import BadInput


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("host", metavar="HOST", help="name, address, HOST:PORT, [v6]:PORT or URL (https://host)")
    p.add_argument(
        "ports", nargs="*", metavar="PORT", help="22, 80,443, 8000-8100, ssh (default: the port in HOST)"
    )
    p.add_argument("-u", "--udp", action="store_true", help="UDP: a protocol request where we know one")
    p.add_argument("-4", dest="ipv4", action="store_true", help="IPv4 addresses only")
    p.add_argument("-6", dest="ipv6", action="store_true", help="IPv6 addresses only")
    p.add_argument(
        "--timeout",
        type=float,
        default=3.0,
        metavar="SECONDS",
        help="how long a silent port is waited for, retries included (default 3)",
    )
    p.add_argument("--retries", type=int, default=1, metavar="N", help="tries after a silent one (default 1)")
    output.add_format_options(p)


def family(args: argparse.Namespace) -> str | None:
    if args.ipv4 and args.ipv6:
        raise BadInput("-4 and -6 together mean nothing: give one, or neither for both families")
    return "ipv4" if args.ipv4 else "ipv6" if args.ipv6 else None


def check_timing(timeout: float | None, retries: int) -> None:
    if timeout is not None and not 0 < timeout <= 600:
        raise BadInput(f"--timeout {timeout:g} is out of range: give seconds between 0.001 and 600, e.g. 3")
    if not 0 <= retries <= 10:
        raise BadInput(f"--retries {retries} is out of range: give 0-10")


def run(args: argparse.Namespace) -> int:
    from portscope.net import targets
    from portscope.net.engine import ScanOptions
    from portscope.net.scan import run_scan
    from portscope.registry import parse_ports

    check_timing(args.timeout, args.retries)
    proto = "udp" if args.udp else "tcp"
    found = targets.expand([args.host], family(args))
    explicit = parse_ports(",".join(args.ports), default_protos=(proto,)).ports(proto) if args.ports else []
    if not explicit and all(t.port is None for t in found):
        raise BadInput(f"no port to check: give one, as in `portscope check {args.host} 22`")
    if all(t.address is None for t in found):
        raise BadInput(f"cannot resolve {args.host!r}: {found[0].error}")
    opts = ScanOptions(timeout=args.timeout, retries=args.retries, concurrency=256)
    results = sorted(run_scan(found, explicit, proto, opts), key=reach.sort_key)
    if args.json:
        output.emit_json([r.to_dict() for r in results])
    elif args.csv:
        output.emit_csv(reach.CSV_HEADER, (reach.csv_row(r) for r in results))
    else:
        with_host = any(r.host != r.address for r in results)
        output.emit_table(
            reach.columns(with_host),
            [reach.row(r, with_host) for r in results],
            reach.explanations(results, args.timeout),
        )
    return 0 if results and all(r.status == "open" for r in results) else 1
