"""`portscope free PORT`: can a service bind this port now, and if not, who holds it and what to do.

The answer to "bind: address already in use" (seed 001) without lsof, ss -lntp and guesswork about
0.0.0.0 versus 127.0.0.1: a real test bind, the holder with its unit, and the ways out.
"""

from __future__ import annotations

import argparse

from portscope.cli import diagnosis_view
from portscope.errors import BadInput
from portscope.i18n import _


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("port", metavar="PORT", help="8080, 53/udp or a service name (http)")
    p.add_argument("-u", "--udp", action="store_true", help="UDP instead of TCP")
    p.add_argument(
        "-a",
        "--address",
        metavar="ADDR",
        help="the address the service would bind (127.0.0.1, ::1, 0.0.0.0, ::); default: every address",
    )
    p.add_argument("--lang", metavar="LANG", help="en or pt (default: LANG / LC_MESSAGES)")
    diagnosis_view.add_format_options(p)


def port_and_proto(text: str, udp: bool) -> tuple[int, str]:
    """One port, through the same port-spec parser as every command (so `free http` works)."""
    from portscope.registry import parse_ports

    proto = "udp" if udp else "tcp"
    spec = parse_ports(text, default_protos=(proto,))
    if spec.count("tcp") + spec.count("udp") > 2:
        raise BadInput(
            _("{text!r} names several ports: `free` checks one, as in 8080 or 53/udp").format(text=text)
        )
    pairs = [(port, p) for p in ("tcp", "udp") for port in spec.ports(p)]
    if len(pairs) > 1:
        pairs = [pair for pair in pairs if pair[1] == proto]
    if len(pairs) != 1:
        raise BadInput(
            _("{text!r} names several ports: `free` checks one, as in 8080 or 53/udp").format(text=text)
        )
    return pairs[0]


def run(args: argparse.Namespace) -> int:
    from portscope import i18n
    from portscope.diagnose.bind import check_bind

    i18n.setup(i18n.parse_lang(args.lang) if args.lang else None)

    port, proto = port_and_proto(args.port, args.udp)
    return diagnosis_view.render(check_bind(args.address, port, proto), args)
