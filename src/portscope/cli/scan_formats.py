"""nmap-compatible XML (-oX) and grepable (-oG) output, so ndiff, Metasploit's importers, and the
scripts people already have keep working with portscope's scans.

Written from nmap's documented output formats (the DTD and the grepable-output chapter of its
manual), not from its code or data files.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from xml.sax.saxutils import quoteattr

from portscope import __version__
from portscope.model import CheckResult, ProbeResult

XML_HEADER = '<?xml version="1.0" encoding="UTF-8"?>\n<!DOCTYPE nmaprun>\n'


def _by_address(results: Sequence[CheckResult]) -> dict[tuple[str, str], list[CheckResult]]:
    hosts: dict[tuple[str, str], list[CheckResult]] = {}
    for r in results:
        if r.address is not None:
            hosts.setdefault((r.address, r.host), []).append(r)
    return hosts


def _up(rs: Sequence[CheckResult]) -> bool:
    """A host is up when anything answered: an open port, a reset, an ICMP port unreachable."""
    return any(r.status in ("open", "closed") for r in rs)


def _extra_state(rs: Sequence[CheckResult]) -> tuple[str, int] | None:
    """The most common non-open state, folded into <extraports> when it covers many ports (as nmap)."""
    counts: dict[str, int] = {}
    for r in rs:
        if r.status != "open":
            counts[r.status] = counts.get(r.status, 0) + 1
    if not counts:
        return None
    state, n = max(counts.items(), key=lambda kv: kv[1])
    return (state, n) if n > 25 else None


def to_xml(
    results: Sequence[CheckResult],
    args: str,
    started: float,
    finished: float,
    scan_type: str,
    protocol: str,
    ports: Sequence[int],
    probed: Mapping[tuple[str | None, int, str], ProbeResult] | None = None,
) -> str:
    a = quoteattr
    out = [XML_HEADER]
    out.append(
        f'<nmaprun scanner="portscope" args={a(args)} start="{int(started)}" '
        f'startstr={a(time.ctime(started))} version={a(__version__)} xmloutputversion="1.05">\n'
    )
    out.append(
        f'<scaninfo type="{scan_type}" protocol="{protocol}" numservices="{len(ports)}" '
        f"services={a(_ranges(ports))}/>\n"
    )
    hosts = _by_address(results)
    up = 0
    for (address, host), rs in hosts.items():
        is_up = _up(rs)
        up += is_up
        fam = "ipv6" if ":" in address else "ipv4"
        out.append(f'<host starttime="{int(started)}" endtime="{int(finished)}">')
        reason = "conn-refused" if not any(r.status == "open" for r in rs) else "syn-ack"
        out.append(
            f'<status state="{"up" if is_up else "down"}" reason="{reason if is_up else "no-response"}" reason_ttl="0"/>\n'
        )
        out.append(f'<address addr={a(address)} addrtype="{fam}"/>\n')
        if host != address:
            out.append(f'<hostnames>\n<hostname name={a(host)} type="user"/>\n</hostnames>\n')
        out.append("<ports>")
        extra = _extra_state(rs)
        if extra:
            state, n = extra
            reasons: dict[str, int] = {}
            for r in rs:
                if r.status == state:
                    reasons[r.reason] = reasons.get(r.reason, 0) + 1
            out.append(f'<extraports state={a(state)} count="{n}">\n')
            out.extend(f'<extrareasons reason={a(k)} count="{v}"/>\n' for k, v in reasons.items())
            out.append("</extraports>\n")
        for r in sorted(rs, key=lambda r: r.port):
            if extra and r.status == extra[0]:
                continue
            out.append(f'<port protocol="{r.proto}" portid="{r.port}">')
            out.append(f'<state state={a(r.status)} reason={a(r.reason)} reason_ttl="0"/>')
            p = probed.get((r.address, r.port, r.proto)) if probed else None
            if p is not None and p.service and p.service != "unknown":
                attrs = f"name={a(p.service)}"
                attrs += f" product={a(p.product)}" if p.product else ""
                attrs += f" version={a(p.version)}" if p.version else ""
                attrs += ' tunnel="ssl"' if p.tls and not p.tls.error and not p.tls.starttls else ""
                out.append(f'<service {attrs} method="probed" conf="10"/>')
            elif r.service:
                out.append(f'<service name={a(r.service)} method="table" conf="3"/>')
            out.append("</port>\n")
        out.append("</ports>\n")
        out.append("</host>\n")
    elapsed = finished - started
    out.append(
        f'<runstats><finished time="{int(finished)}" timestr={a(time.ctime(finished))} '
        f'elapsed="{elapsed:.2f}" summary={a(_summary(len(hosts), up, elapsed))} exit="success"/>'
        f'<hosts up="{up}" down="{len(hosts) - up}" total="{len(hosts)}"/>\n</runstats>\n</nmaprun>\n'
    )
    return "".join(out)


def to_grepable(
    results: Sequence[CheckResult],
    args: str,
    started: float,
    finished: float,
    probed: Mapping[tuple[str | None, int, str], ProbeResult] | None = None,
) -> str:
    out = [f"# portscope {__version__} scan initiated {time.ctime(started)} as: {args}\n"]
    hosts = _by_address(results)
    up = 0
    for (address, host), rs in hosts.items():
        label = f"Host: {address} ({host if host != address else ''})"
        is_up = _up(rs)
        up += is_up
        out.append(f"{label}\tStatus: {'Up' if is_up else 'Down'}\n")
        extra = _extra_state(rs)
        shown = [r for r in sorted(rs, key=lambda r: r.port) if not (extra and r.status == extra[0])]
        ports = ", ".join(_grepable_port(r, probed) for r in shown)
        line = f"{label}\tPorts: {ports}"
        if extra:
            line += f"\tIgnored State: {extra[0]} ({extra[1]})"
        out.append(line + "\n")
    elapsed = finished - started
    out.append(f"# portscope done at {time.ctime(finished)} -- {_summary(len(hosts), up, elapsed)}\n")
    return "".join(out)


def _grepable_port(r: CheckResult, probed: Mapping[tuple[str | None, int, str], ProbeResult] | None) -> str:
    """nmap's port/state/protocol/owner/service/rpc/version/ field, '/' and ',' kept out of the values."""
    p = probed.get((r.address, r.port, r.proto)) if probed else None
    service, version = r.service or "", ""
    if p is not None and p.service and p.service != "unknown":
        service = p.service
        version = " ".join(x for x in (p.product, p.version) if x)
    service, version = (v.replace("/", "|").replace(",", " ") for v in (service, version))
    return f"{r.port}/{r.status}/{r.proto}//{service}//{version}/"


def _summary(total: int, up: int, elapsed: float) -> str:
    return (
        f"{total} IP address{'es' if total != 1 else ''} ({up} host{'s' if up != 1 else ''} up) "
        f"scanned in {elapsed:.2f} seconds"
    )


def _ranges(ports: Sequence[int]) -> str:
    parts: list[str] = []
    run: list[int] = []
    for p in sorted(set(ports)):
        if run and p == run[-1] + 1:
            run.append(p)
            continue
        if run:
            parts.append(str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}")
        run = [p]
    if run:
        parts.append(str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}")
    return ",".join(parts)
