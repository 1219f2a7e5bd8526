"""`portscope diagnose HOST PORT`: why it doesn't connect, as a verdict, the evidence and next steps.

`--bind ADDR:PORT` asks the other question of the seeds: why won't my service start ("address already
in use")? Both render the same Diagnosis object.
"""

from __future__ import annotations

import argparse

from portscope.cli import output
from portscope.cli.cmd_check import family
from portscope.errors import BadInput
from portscope.model import Diagnosis


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "host", metavar="HOST", nargs="?", help="name, address, HOST:PORT, [v6]:PORT or URL (https://host)"
    )
    p.add_argument("port", metavar="PORT", nargs="?", help="the port that fails (default: the one in HOST)")
    p.add_argument("-u", "--udp", action="store_true", help="a UDP service")
    p.add_argument("-4", dest="ipv4", action="store_true", help="IPv4 addresses only")
    p.add_argument("-6", dest="ipv6", action="store_true", help="IPv6 addresses only")
    p.add_argument(
        "--expect", metavar="SERVICE", help="the service that should answer (default: the registry's)"
    )
    p.add_argument("--sni", metavar="NAME", help="TLS server name (default: the host name given)")
    p.add_argument("--ca-file", metavar="PEM", help="trust these CA certificates instead of the system store")
    p.add_argument(
        "--timeout", type=float, default=10.0, metavar="SECONDS", help="the whole diagnosis (default 10)"
    )
    p.add_argument(
        "--local",
        action="store_true",
        help="HOST is this machine: also read its sockets and firewall (automatic for its own addresses)",
    )
    p.add_argument(
        "--bind",
        metavar="ADDR:PORT",
        help="instead: can a service bind ADDR:PORT here now? (address already in use)",
    )
    p.add_argument("--lang", metavar="LANG", help="en or pt (default: LANG / LC_MESSAGES)")
    output.add_format_options(p)


def run(args: argparse.Namespace) -> int:
    from portscope import i18n

    i18n.setup(i18n.parse_lang(args.lang) if args.lang else None)
    diagnosis = _bind(args) if args.bind else _connect(args)
    from portscope.cli import diagnosis_view

    return diagnosis_view.render(diagnosis, args)


def _connect(args: argparse.Namespace) -> Diagnosis:
    from portscope.diagnose.engine import Request, diagnose
    from portscope.net.targets import parse_target
    from portscope.registry import parse_ports

    if not args.host:
        raise BadInput("give HOST and PORT, as in `portscope diagnose db.example 5432`, or --bind ADDR:PORT")
    if not 0 < args.timeout <= 600:
        raise BadInput(f"--timeout {args.timeout:g} is out of range: give seconds between 0.1 and 600")
    proto = "udp" if args.udp else "tcp"
    spec = parse_target(args.host)
    if spec.network is not None or spec.span is not None:
        raise BadInput(f"diagnose takes one host, not the block {args.host!r}")
    port = spec.port
    if args.port is not None:
        ports = parse_ports(args.port, default_protos=(proto,)).ports(proto)
        if len(ports) != 1:
            raise BadInput(f"diagnose takes one port, not {args.port!r}: e.g. `portscope diagnose HOST 443`")
        port = ports[0]
    if port is None:
        raise BadInput(f"no port: give one, as in `portscope diagnose {args.host} 443`")
    if port == 0:
        raise BadInput("port 0 cannot be diagnosed (no service listens on it): give a port from 1 to 65535")
    from portscope.cli.cmd_probe import probe_settings

    args.probe_timeout = args.timeout
    conf = probe_settings(args)  # --sni, --ca-file and --expect, checked as probe checks them
    request = Request(
        host=spec.host,
        port=port,
        proto=proto,
        expect=args.expect,
        sni=getattr(conf, "sni", None),
        ca_file=args.ca_file,
        timeout=args.timeout,
        local=True if args.local else None,
        family=family(args),
    )
    return diagnose(request)


def _bind(args: argparse.Namespace) -> Diagnosis:
    from portscope.diagnose.bind import check_bind, parse_bind

    address, port, proto = parse_bind(args.bind)
    return check_bind(address, port, proto or ("udp" if args.udp else "tcp"))
