"""`portscope scan TARGETS -p PORTS`: nc -zv over ranges and nmap -sT/-sU, every answer explained."""

from __future__ import annotations

import argparse
import sys
import time
from typing import TYPE_CHECKING

from portscope.cli import output, reach
from portscope.cli.cmd_check import check_timing, family
from portscope.cli.cmd_probe import add_probe_options, probe_settings
from portscope.errors import BadInput, CannotDo
from portscope.model import CheckResult, ProbeResult

if TYPE_CHECKING:
    from collections.abc import Iterator

CONFIRM_ABOVE = 1_000_000  # probes; a bigger scan is more likely a typo (a /8) than a plan
DEFAULT_TOP = 1000


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "targets",
        nargs="*",
        metavar="TARGET",
        help="names, addresses, CIDR blocks (10.0.0.0/24), ranges (10.0.0.1-20), HOST:PORT, URLs",
    )
    p.add_argument("-p", "--ports", metavar="PORTS", help="22, 80,443, 1-1024, ssh,https, - for all")
    p.add_argument(
        "--top", type=int, metavar="N", help=f"the N most commonly used ports (default {DEFAULT_TOP})"
    )
    p.add_argument("-sT", dest="tcp", action="store_true", help="TCP connect scan (the default)")
    p.add_argument("-sU", dest="udp", action="store_true", help="UDP scan")
    p.add_argument(
        "-sS",
        dest="syn",
        action="store_true",
        help="half-open SYN scan over raw sockets (root or CAP_NET_RAW)",
    )
    p.add_argument("-4", dest="ipv4", action="store_true", help="IPv4 addresses only")
    p.add_argument("-6", dest="ipv6", action="store_true", help="IPv6 addresses only")
    p.add_argument("-iL", dest="input_list", metavar="FILE", help="read targets from FILE (- for stdin)")
    p.add_argument(
        "--exclude", action="append", metavar="TARGETS", help="addresses, blocks or ranges to skip"
    )
    p.add_argument(
        "--timeout",
        type=float,
        metavar="SECONDS",
        help="how long a silent port is waited for, retries included; default: per host, from measured round trips",
    )
    p.add_argument("--retries", type=int, default=1, metavar="N", help="tries after a silent one (default 1)")
    p.add_argument(
        "--concurrency", type=int, default=1000, metavar="N", help="probes in flight (default 1000)"
    )
    p.add_argument("--rate", type=float, metavar="N", help="at most N probes per second")
    p.add_argument("--open", action="store_true", help="show only open (and open|filtered) ports")
    p.add_argument("--yes", action="store_true", help=f"run scans of more than {CONFIRM_ABOVE} probes")
    p.add_argument(
        "--probe",
        "-sV",
        dest="probe",
        action="store_true",
        help="identify what answers on every open port (as `portscope probe`)",
    )
    add_probe_options(p)
    p.add_argument("-oX", dest="xml", metavar="FILE", help="also write nmap-compatible XML (- for stdout)")
    p.add_argument("-oG", dest="grepable", metavar="FILE", help="also write grepable output (- for stdout)")
    output.add_format_options(p)


def _ports(args: argparse.Namespace, proto: str) -> list[int]:
    from portscope.registry import parse_ports, top_ports

    # `is None`, not falsiness: --top 0 is bad input (top_ports says so), not "the default"
    if args.ports and args.top is not None:
        raise BadInput("give -p or --top, not both")
    if args.ports:
        return parse_ports(args.ports, default_protos=(proto,)).ports(proto)
    return top_ports(DEFAULT_TOP if args.top is None else args.top, proto)


def _validate(args: argparse.Namespace) -> None:
    check_timing(args.timeout, args.retries)
    if not 1 <= args.concurrency <= 100_000:
        raise BadInput(f"--concurrency {args.concurrency} is out of range: give 1-100000")
    if args.rate is not None and not 0 < args.rate <= 10_000_000:
        raise BadInput(
            f"--rate {args.rate:g} is out of range: give probes per second, above 0 and at most 10000000"
        )
    if args.tcp and args.udp:
        raise BadInput("-sT and -sU together: run one scan per protocol")
    if args.syn and (args.udp or args.tcp):
        raise BadInput("-sS is a TCP scan of its own: give it without -sT or -sU")
    if args.syn:
        from portscope.net import syn_scan

        if not syn_scan.available():
            raise CannotDo(
                "-sS sends raw packets: run as root or with CAP_NET_RAW, or drop -sS for a connect scan"
            )


def run(args: argparse.Namespace) -> int:
    from portscope.net import targets
    from portscope.net.engine import ScanOptions
    from portscope.net.scan import probe_count, run_scan

    _validate(args)
    if args.probe:
        probe_settings(args)  # a bad --ca-file fails now, not after the scan
    proto = "udp" if args.udp else "tcp"
    items = list(args.targets)
    if args.input_list:
        items += targets.read_target_file(args.input_list)
    if not items:
        raise BadInput("no target: give names, addresses or blocks, as in `portscope scan 10.0.0.0/24 -p 22`")
    found = targets.expand(items, family(args), [e for v in args.exclude or [] for e in v.split(",")])
    wants_ports = args.ports or args.top is not None or any(t.port is None for t in found)
    ports = _ports(args, proto) if wants_ports else []
    total = probe_count(found, ports)
    if total > CONFIRM_ABOVE and not args.yes:
        raise BadInput(
            f"this scan sends {total} probes: add --yes if you mean it, or narrow the targets or ports"
        )
    opts = ScanOptions(
        timeout=args.timeout,
        concurrency=args.concurrency,
        rate=args.rate,
        retries=args.retries,
        syn=args.syn,
    )
    started = time.time()
    results = _collect(run_scan(found, ports, proto, opts), total, args)
    finished = time.time()
    results.sort(key=reach.sort_key)
    probed = _probe(args, results)
    finished = time.time()
    _write_files(args, results, started, finished, proto, ports, probed)
    _render(args, results, finished - started, opts.timeout, probed)
    return 0 if any(r.status == "open" for r in results) else 1


Probed = dict[tuple[str | None, int, str], ProbeResult]


def _probe(args: argparse.Namespace, results: list[CheckResult]) -> Probed:
    """--probe: identify every open port (and answering UDP one), keyed like the results."""
    if not args.probe:
        return {}
    from portscope.probes.base import Settings
    from portscope.probes.runner import probe_all

    conf = probe_settings(args)
    assert isinstance(conf, Settings)
    wanted = [r for r in results if r.status == "open" or (r.proto == "udp" and r.status == "open|filtered")]
    return {(p.check.address, p.check.port, p.check.proto): p for p in probe_all(wanted, conf)}


def _collect(stream: Iterator[CheckResult], total: int, args: argparse.Namespace) -> list[CheckResult]:
    """Drain the engine; on a terminal, a progress bar and open ports as they are found."""
    if args.json or args.csv or not output.fancy(sys.stderr) or total < 50:
        return list(stream)
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
    from rich.text import Text

    console = Console(file=sys.stderr)
    results: list[CheckResult] = []
    with Progress(
        TextColumn("scanning"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task("scan", total=total)
        for r in stream:
            results.append(r)
            bar.advance(task)
            if r.status == "open":
                console.print(Text(f"open {r.address} {r.port}/{r.proto} {r.service or ''}"))
    return results


def _write_files(
    args: argparse.Namespace,
    results: list[CheckResult],
    started: float,
    finished: float,
    proto: str,
    ports: list[int],
    probed: Probed,
) -> None:
    from portscope.cli import scan_formats

    cmdline = "portscope " + " ".join(sys.argv[1:])

    def xml() -> str:
        scan_type = "udp" if proto == "udp" else ("syn" if args.syn else "connect")
        return scan_formats.to_xml(results, cmdline, started, finished, scan_type, proto, ports, probed)

    def grepable() -> str:
        return scan_formats.to_grepable(results, cmdline, started, finished, probed)

    for path, text in ((args.xml, xml), (args.grepable, grepable)):
        if not path:
            continue
        if path == "-":
            sys.stdout.write(text())
            continue
        try:
            with open(path, "w", encoding="utf-8") as fh:
                fh.write(text())
        except OSError as exc:
            raise BadInput(f"cannot write {path!r}: {exc.strerror}") from None


def _render(
    args: argparse.Namespace,
    results: list[CheckResult],
    elapsed: float,
    timeout: float | None,
    probed: Probed,
) -> None:
    def key(r: CheckResult) -> tuple[str | None, int, str]:
        return (r.address, r.port, r.proto)

    if args.json:
        # A probed port's object is the check object plus the probe's fields (README: probe JSON).
        output.emit_json([probed.get(key(r), r).to_dict() for r in results])
        return
    if args.csv:
        output.emit_csv(reach.CSV_HEADER, (reach.csv_row(r) for r in results))
        return
    if "-" in (args.xml, args.grepable):
        return
    shown_states = ("open", "open|filtered") if args.open else None
    shown = [r for r in results if shown_states is None or r.status in shown_states]
    # Fold the common case: thousands of closed ports are one line, not thousands.
    counts: dict[str, int] = {}
    for r in shown:
        counts[r.status] = counts.get(r.status, 0) + 1
    folded = {s for s, n in counts.items() if s in ("closed", "filtered", "open|filtered") and n > 25}
    rows = [r for r in shown if r.status not in folded]
    with_host = any(r.host != r.address for r in rows)
    hosts = {r.address for r in results}
    notes = [f"{counts[s]} {s} ports not shown" for s in sorted(folded)]
    notes += reach.explanations([r for r in rows if r.status != "open"], timeout)
    notes.append(
        f"{len(hosts)} address(es), {len(results)} probes in {elapsed:.2f} s; "
        f"{sum(r.status == 'open' for r in results)} open"
    )
    if probed:
        from portscope.cli import probe_view

        shown_probes = [probed.get(key(r)) or ProbeResult(check=r) for r in rows]
        notes = probe_view.notes([p for p in shown_probes if p.check.status == "open"]) + notes
        output.emit_table(probe_view.COLUMNS, probe_view.rows(shown_probes, with_host), notes)
        return
    output.emit_table(reach.columns(with_host), [reach.row(r, with_host) for r in rows], notes)
