"""Targets x ports -> streamed CheckResults: the glue between target lists and the engine.

Shared by `check` and `scan`, so that one port checked by hand and the same port in a /24 scan are
classified by the same code.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from portscope.model import CheckResult
from portscope.net.engine import ScanOptions, scan_tcp, scan_udp
from portscope.net.targets import Target
from portscope.registry import service_name


def run_scan(
    targets: Sequence[Target], ports: Sequence[int], proto: str, opts: ScanOptions
) -> Iterator[CheckResult]:
    """Every (target, port): the -p list, or the port written with the target (HOST:PORT, a URL)."""
    groups: dict[tuple[int, ...], list[tuple[str, str]]] = {}
    for t in targets:
        wanted = tuple(ports) if ports else ((t.port,) if t.port is not None else ())
        if t.address is None:
            for port in wanted:
                yield CheckResult(
                    t.host,
                    None,
                    port,
                    proto,
                    "unresolved",
                    "dns-failure",
                    service=service_name(port, proto),
                    error=t.error,
                )
            continue
        groups.setdefault(wanted, []).append((t.host, t.address))
    for wanted, pairs in groups.items():
        if proto == "udp":
            from portscope.net.udp_payloads import payload_for

            stream = scan_udp(pairs, wanted, opts, payload_for)
        else:
            stream = scan_tcp(pairs, wanted, opts)
        names = {port: service_name(port, proto) for port in wanted}
        for r in stream:
            r.service = names[r.port]
            yield r


def probe_count(targets: Sequence[Target], ports: Sequence[int]) -> int:
    return sum(len(ports) if ports else int(t.port is not None) for t in targets if t.address is not None)
