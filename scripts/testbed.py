#!/usr/bin/env python3
"""Run the network test bed by hand: `up` keeps one until Ctrl-C/SIGTERM, `down` removes leftovers.

Why: the bed that the test suite builds (tests/bed/bed.py) is also the quickest way for a person to try
portscope against real daemons and a real firewall, and to clean up after a crashed test run:

    sudo .venv/bin/python scripts/testbed.py up
    sudo .venv/bin/portscope scan 198.18.1.2 -p 1-1000      # in another terminal
    sudo .venv/bin/portscope check 198.18.1.3 53 2222       # the alt address: DNS TCP dropped, ssh on 2222
    sudo .venv/bin/python scripts/testbed.py down            # beds whose owner died; --all: every bed
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.bed.bed import BedError, BedUnavailable, TestBed, clean_stale  # noqa: E402


def _print_table(
    truth: dict[tuple[str, int], tuple[str, str]], services: dict[tuple[str, int], str], rng: range
) -> None:
    for (proto, port), (status, reason) in truth.items():
        if port in rng and proto == "tcp":
            if port == rng.start:
                print(
                    f"  {f'{port}-{rng.stop - 1}/tcp':<15} {status:<14} {reason:<18} {services[(proto, port)]}"
                )
            continue
        print(f"  {f'{port}/{proto}':<15} {status:<14} {reason:<18} {services[(proto, port)]}")


def _print_bed(bed: TestBed) -> None:
    print(
        f"bed {bed.name} is up in {bed.timings['up']:.2f} s (daemons {bed.timings['daemons']:.2f} s,"
        f" initdb {bed.timings['initdb']:.2f} s)"
    )
    print(f"  bed address       {bed.addr4}  {bed.addr6}")
    print(f"  alt address       {bed.alt4}  {bed.alt6}  (tcp 53 dropped, udp 53 answers; sshd on", end="")
    print(f" {bed.ssh_alt_port} only)")
    print(f"  root side         {bed.local4}  {bed.local6}")
    print(f"  unreachable       {bed.unreachable4}  {bed.unreachable6}  (connect: EHOSTUNREACH)")
    port = bed.loopback_only_port
    print(f"  loopback only     PostgreSQL on 127.0.0.1:{port} and [::1]:{port} inside the namespace")
    print(f"  TLS CA            {bed.ca_pem}  (certificate name {bed.cert_hostname})")
    print(f"  files and logs    {bed.tmpdir}")
    print(f"  inside            ip netns exec {bed.name} <command>")
    print(
        "truth of the bed address (any port not listed is closed: tcp conn-refused, udp icmp-port-unreach):"
    )
    _print_table(bed.truth, bed.services, bed.filtered_range)
    print("truth of the alt address (same rule for ports not listed):")
    _print_table(bed.alt_truth, bed.alt_services, bed.filtered_range)


def _up() -> int:
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    bed = TestBed()
    try:
        bed.up()
    except BedUnavailable as exc:
        print(f"testbed: {exc}", file=sys.stderr)
        return 3
    except BedError as exc:
        print(f"testbed: {exc}", file=sys.stderr)
        return 1
    try:
        _print_bed(bed)
        print("Ctrl-C or SIGTERM tears it down.", flush=True)
        while not stop.wait(3600):
            pass
    finally:
        bed.down()
        print(f"bed {bed.name} removed in {bed.timings['down']:.2f} s")
    return 0


def _down(include_live: bool) -> int:
    removed = clean_stale(include_live=include_live)
    print(f"removed: {', '.join(removed)}" if removed else "no stale beds")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("up", help="start a bed and keep it until Ctrl-C/SIGTERM")
    down = sub.add_parser("down", help="remove beds left by dead owners")
    down.add_argument(
        "--all", action="store_true", help="also remove beds whose owner is alive (breaks their runs)"
    )
    args = parser.parse_args(argv)
    if args.command == "up":
        return _up()
    return _down(args.all)


if __name__ == "__main__":
    sys.exit(main())
