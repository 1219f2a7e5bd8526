"""How check and scan results read: the table, and the sentence that says what each answer means.

The seeds teach three readings of a connection attempt (success, refused, timeout); these sentences are
those lessons, so the user learns where to look next instead of guessing.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

from portscope.cli.output import Column
from portscope.model import CheckResult

CSV_HEADER = ("host", "address", "port", "proto", "status", "reason", "latency_ms", "service", "error")


def explain(r: CheckResult, timeout: float | None = None) -> str:
    """One sentence: what the answer means and where to look next."""
    where = f"{r.port}/{r.proto}"
    waited = f" within {timeout:g} s" if timeout else ""
    if r.status == "open":
        if r.proto == "udp":
            return f"{where}: the service answered our request: something listens and speaks the protocol"
        return f"{where}: the handshake completed: a process accepts connections here"
    if r.status == "closed":
        if r.proto == "udp":
            return f"{where}: ICMP port unreachable: the host is up and nothing listens on this port"
        return (
            f"{where}: connection refused (TCP reset): the host is reachable but nothing listens on this "
            "port, or a firewall rejects it; on the server check `portscope ls` and the service's bind address"
        )
    if r.status == "filtered":
        if r.reason == "admin-prohibited":
            return (
                f"{where}: a firewall answered 'administratively prohibited': a REJECT rule blocks this port"
            )
        return (
            f"{where}: no answer{waited}: something on the path drops the packets (a firewall DROP rule, "
            "a security group), or the host is down"
        )
    if r.status == "open|filtered":
        return (
            f"{where}: no answer{waited}: UDP services often ignore requests they do not understand, and "
            "firewalls drop silently; open, or filtered"
        )
    if r.status == "unreachable":
        kind = "network" if r.reason == "net-unreach" else "host"
        return (
            f"{where}: {kind} unreachable ({r.error or r.reason}): no route, or a router/this host's "
            "neighbour discovery says the address does not answer; check the address and routing (`ip route get`)"
        )
    if r.status == "unresolved":
        return f"{r.host}: the name did not resolve ({r.error or 'no address'}): check its spelling and DNS"
    return f"{where}: {r.status} ({r.reason})"


def latency(r: CheckResult) -> str:
    if r.latency_ms is None:
        return "-"
    return f"{r.latency_ms * 1000:.0f} µs" if r.latency_ms < 1 else f"{r.latency_ms:.1f} ms"


def columns(with_host: bool) -> list[Column]:
    """Address, port, status and reason stay whole; a long host name shrinks, and on a narrow
    terminal SERVICE goes first, then REASON (the notes under the table explain each status)."""
    cols = [Column("HOST", fit="cut", min_width=12), Column("ADDRESS")] if with_host else [Column("ADDRESS")]
    return [
        *cols,
        Column("PORT", "right"),
        Column("PROTO"),
        Column("STATUS"),
        Column("REASON", drop=1),
        Column("LATENCY", "right"),
        Column("SERVICE", max_width=16, fit="cut", drop=2, min_width=8),
    ]


def row(r: CheckResult, with_host: bool) -> list[str]:
    cells = [r.host, r.address or "-"] if with_host else [r.address or "-"]
    return [*cells, str(r.port), r.proto, r.status, r.reason, latency(r), r.service or "-"]


def csv_row(r: CheckResult) -> list[object]:
    d = r.to_dict()
    return [d[k] for k in CSV_HEADER]


def sort_key(r: CheckResult) -> tuple[object, ...]:
    return (r.host, *_address_key(r.address), r.proto, r.port)


@functools.lru_cache(maxsize=4096)
def _address_key(address: str | None) -> tuple[bool, int, int]:
    """Numeric order (10.0.0.9 before 10.0.0.10); cached because a scan has many ports per address."""
    import ipaddress

    if address is None:
        return (True, 0, 0)
    addr = ipaddress.ip_address(address.split("%", 1)[0])
    return (False, addr.version, int(addr))


def explanations(results: Sequence[CheckResult], timeout: float | None) -> list[str]:
    """One sentence per distinct (port, proto, status): the same lesson is not repeated per address."""
    seen: set[tuple[int, str, str, str]] = set()
    out = []
    for r in results:
        key = (r.port, r.proto, r.status, r.reason)
        if r.status == "unresolved":
            key = (0, r.host, r.status, "")
        if key not in seen:
            seen.add(key)
            out.append(explain(r, timeout))
    return out + icmp_rate_limit_notes(results)


def icmp_rate_limit_notes(results: Sequence[CheckResult]) -> list[str]:
    """Warn where silence may be ICMP rate limiting rather than a listening or filtered port.

    Why: a host that answers some UDP ports with ICMP port unreachable is not dropping ICMP; when
    many others stay silent, the likely cause is its ICMP rate limit (Linux: about one error per
    second per peer after a small burst), and those ports may well be closed.
    """
    counts: dict[str, list[int]] = {}
    for r in results:
        if r.proto == "udp" and r.address and r.status in ("closed", "open|filtered"):
            c = counts.setdefault(r.address, [0, 0])
            c[r.status == "open|filtered"] += 1
    return [
        f"udp on {addr}: {closed} port(s) answered ICMP port unreachable but {silent} stayed silent: "
        "the host probably rate-limits ICMP errors (Linux: about one per second), so some silent ports "
        f"may be closed; re-scan them slowly (`--rate 1`) to tell"
        for addr, (closed, silent) in counts.items()
        if closed and silent >= 10
    ]
