"""`portscope probe HOST:PORT`: curl -v, openssl s_client, ssh -v and nc banner grabbing in one answer.

Reachability is decided first by the same engine as `check` (so a port reads the same everywhere),
then every open port is probed: what protocol really answers, product and version, TLS and
certificate, and whether that is what the port should have.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from portscope.cli import output
from portscope.cli.cmd_check import check_timing, family
from portscope.errors import BadInput
from portscope.model import CheckResult, ProbeResult


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("host", metavar="HOST", help="name, address, HOST:PORT, [v6]:PORT or URL (https://host)")
    p.add_argument(
        "ports", nargs="*", metavar="PORT", help="22, 80,443, 8000-8100, ssh (default: the port in HOST)"
    )
    p.add_argument("-u", "--udp", action="store_true", help="UDP ports (DNS, NTP, SNMP)")
    p.add_argument("-4", dest="ipv4", action="store_true", help="IPv4 addresses only")
    p.add_argument("-6", dest="ipv6", action="store_true", help="IPv6 addresses only")
    add_probe_options(p)
    p.add_argument(
        "--expect",
        metavar="SERVICE",
        help="the service that should answer (default: the registry's for the port), e.g. https, ssh",
    )
    output.add_format_options(p)


def add_probe_options(p: argparse.ArgumentParser) -> None:
    """Options shared with `scan --probe`."""
    p.add_argument(
        "--sni", metavar="NAME", help="TLS server name to send and to check the certificate against"
    )
    p.add_argument("--ca-file", metavar="PEM", help="trust these CA certificates instead of the system store")
    p.add_argument(
        "--probe-timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="the most one port's identification may take (default 10)",
    )


def probe_settings(args: argparse.Namespace) -> object:
    """The one place probe, scan --probe and diagnose check --sni, --ca-file, --expect and the timeout
    (diagnose's --timeout arrives as probe_timeout); --sni and --expect come back normalized."""
    from portscope.probes.base import Settings
    from portscope.probes.runner import check_expect
    from portscope.probes.tls import check_sni

    if not 0 < args.probe_timeout <= 600:
        raise BadInput(
            f"--probe-timeout {args.probe_timeout:g} is out of range: give seconds between 0.1 and 600"
        )
    if args.ca_file:
        try:
            with open(args.ca_file, "rb") as f:
                pem = f.read(4 << 20)
        except OSError as e:
            raise BadInput(f"--ca-file {args.ca_file}: {e.strerror}") from None
        if b"-----BEGIN CERTIFICATE-----" not in pem:
            raise BadInput(
                f"--ca-file {args.ca_file}: no PEM certificate in it (-----BEGIN CERTIFICATE-----)"
            )
    if getattr(args, "expect", None) is not None:
        args.expect = check_expect(args.expect)
    sni = check_sni(args.sni) if args.sni is not None else None
    return Settings(sni=sni, ca_file=args.ca_file, timeout=args.probe_timeout)


def run(args: argparse.Namespace) -> int:
    from portscope.net import targets
    from portscope.net.engine import ScanOptions
    from portscope.net.scan import run_scan
    from portscope.probes.base import Settings
    from portscope.probes.runner import probe_all
    from portscope.registry import parse_ports

    check_timing(3.0, 1)
    conf = probe_settings(args)
    assert isinstance(conf, Settings)
    proto = "udp" if args.udp else "tcp"
    found = targets.expand([args.host], family(args))
    explicit = parse_ports(",".join(args.ports), default_protos=(proto,)).ports(proto) if args.ports else []
    every = any(item.strip().split("/")[0] in ("-", "all", "*") for item in ",".join(args.ports).split(","))
    if every:
        explicit = [p for p in explicit if p]  # "every port": the ones a service can listen on
    if 0 in explicit or any(t.port == 0 for t in found):
        raise BadInput("port 0 cannot be probed (no service listens on it): give a port from 1 to 65535")
    if not explicit and all(t.port is None for t in found):
        raise BadInput(f"no port to probe: give one, as in `portscope probe {args.host}:443`")
    if all(t.address is None for t in found):
        raise BadInput(f"cannot resolve {args.host!r}: {found[0].error}")
    opts = ScanOptions(timeout=3.0, retries=1, concurrency=256)
    checks: list[CheckResult] = list(run_scan(found, explicit, proto, opts))
    results = probe_all(checks, conf, args.expect)
    results.sort(key=lambda r: (r.check.address or "", r.check.port))
    render(results, args)
    ok = all(r.check.status == "open" and r.matches is not False for r in results)
    return 0 if results and ok else 1


def render(results: Sequence[ProbeResult], args: argparse.Namespace) -> None:
    if args.json:
        output.emit_json([r.to_dict() for r in results])
        return
    if args.csv:
        output.emit_csv(
            [
                "host",
                "address",
                "port",
                "proto",
                "status",
                "identified",
                "product",
                "version",
                "tls",
                "matches",
            ],
            (
                [
                    r.check.host,
                    r.check.address,
                    r.check.port,
                    r.check.proto,
                    r.check.status,
                    r.service,
                    r.product,
                    r.version,
                    r.tls.version if r.tls else None,
                    r.matches,
                ]
                for r in results
            ),
        )
        return
    from portscope.cli import probe_view

    with_host = (
        any(r.check.host != r.check.address for r in results) or len({r.check.address for r in results}) > 1
    )
    output.emit_table(probe_view.COLUMNS, probe_view.rows(results, with_host), probe_view.notes(results))
