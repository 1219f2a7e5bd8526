"""What the user asked to reach, turned into (host, address, ports) targets.

Accepts what people paste from nc, curl, nmap and their own notes: names (every A and AAAA address),
IPv4/IPv6 literals, HOST:PORT, [v6]:PORT, URLs (https://host means 443), CIDR blocks, last-octet and
full ranges, files of targets, exclusions. A name that does not resolve is a per-target result, not a
crash: one dead name in a list of fifty must not hide the other forty-nine.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import urlsplit

from portscope.errors import BadInput

MAX_V6_HOSTS = 65536  # an IPv6 /64 is 2**64 addresses: refuse blocks no one can scan
MAX_HOSTS = 1 << 20  # a /12: beyond that, a target list no longer fits comfortably in memory
_NAME = re.compile(
    r"^(?=.{1,253}$)([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)(\.[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)*\.?$",
    re.I,
)
_FORMS = (
    "a name, an address, HOST:PORT, [v6]:PORT, a URL, a CIDR block (10.0.0.0/24) or a range (10.0.0.1-20)"
)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class Target:
    """One address to probe. `address` is None when `host` did not resolve (`error` says why)."""

    host: str  # as the user wrote it (name or address), for the report
    address: str | None
    port: int | None = None  # a port given with the target (HOST:PORT, URL); None: use the -p list
    error: str | None = None

    @property
    def family(self) -> str | None:
        if self.address is None:
            return None
        return "ipv6" if ":" in self.address else "ipv4"


@dataclass(frozen=True, slots=True)
class _Spec:
    """One parsed item before name resolution."""

    host: str
    port: int | None
    addresses: tuple[str, ...] | None = None  # literal addresses; None: `host` is a name to resolve
    network: ipaddress.IPv4Network | ipaddress.IPv6Network | None = None
    span: tuple[IPAddress, IPAddress] | None = None


def _port(text: str, item: str) -> int:
    if not text.isdigit() or int(text) > 65535:
        raise BadInput(f"bad port {text!r} in target {item!r}: ports are 0-65535")
    return int(text)


def _url(item: str) -> _Spec:
    from portscope.registry import lookup_name

    parts = urlsplit(item)
    host = parts.hostname
    if not host:
        raise BadInput(f"no host in URL {item!r}: write it as scheme://host[:port]/")
    try:
        port = parts.port
    except ValueError as exc:
        raise BadInput(f"bad port in URL {item!r}: ports are 0-65535") from exc
    if port is None:
        scheme = parts.scheme.lower()
        known = [s.port for s in lookup_name(scheme) if s.proto == "tcp"]
        if not known:
            raise BadInput(
                f"no default port for scheme {scheme!r} in {item!r}: add one, as in {scheme}://{host}:8080"
            )
        port = known[0]
    return _literal_or_name(host, port, item)


def _literal_or_name(host: str, port: int | None, item: str) -> _Spec:
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        if not _NAME.match(host):
            raise BadInput(f"bad target {item!r}: give {_FORMS}") from None
        return _Spec(host, port)
    return _Spec(host, port, (str(addr),))


def _range(item: str, low_s: str, high_s: str) -> _Spec:
    try:
        low = ipaddress.ip_address(low_s)
    except ValueError:
        raise BadInput(f"bad range {item!r}: write 10.0.0.1-20 or 10.0.0.1-10.0.0.20") from None
    high: IPAddress
    if high_s.isdigit() and low.version == 4:
        last = int(high_s)
        if last > 255:
            raise BadInput(f"bad range {item!r}: the last octet runs 0-255")
        high = ipaddress.IPv4Address(int(low) & 0xFFFFFF00 | last)
    else:
        try:
            high = ipaddress.ip_address(high_s)
        except ValueError:
            raise BadInput(f"bad range {item!r}: write 10.0.0.1-20 or 10.0.0.1-10.0.0.20") from None
    if high.version != low.version or int(high) < int(low):
        raise BadInput(f"bad range {item!r}: it must run from the lower to the higher address of one family")
    if int(high) - int(low) >= (MAX_V6_HOSTS if low.version == 6 else MAX_HOSTS):
        raise BadInput(f"range {item!r} holds too many addresses: scan a smaller one")
    return _Spec(item, None, span=(low, high))


def parse_target(item: str) -> _Spec:
    text = item.strip()
    if not text:
        raise BadInput(f"empty target: give {_FORMS}")
    if "://" in text:
        return _url(text)
    if text.startswith("["):
        m = re.fullmatch(r"\[([^\]]+)\](?::(\d*))?", text)
        if not m:
            raise BadInput(f"bad target {item!r}: write an IPv6 address with a port as [2001:db8::1]:443")
        return _literal_or_name(m.group(1), _port(m.group(2), item) if m.group(2) is not None else None, item)
    if "/" in text:
        try:
            net = ipaddress.ip_network(text, strict=False)
        except ValueError:
            prefix = text.partition("/")[2]
            raise BadInput(
                f"bad CIDR block {item!r}: the prefix after / runs 0-32 for IPv4, 0-128 for IPv6 "
                f"(as in 10.0.0.0/24)"
                if prefix.isdigit()
                else f"bad CIDR block {item!r}: write 10.0.0.0/24"
            ) from None
        if net.version == 6 and net.num_addresses > MAX_V6_HOSTS:
            raise BadInput(f"{item!r} holds {net.num_addresses} addresses: scan a /112 or smaller")
        if net.num_addresses > MAX_HOSTS:
            raise BadInput(f"{item!r} holds {net.num_addresses} addresses: scan a /12 or smaller at a time")
        return _Spec(text, None, network=net)
    if text.count(":") > 1:  # a bare IPv6 literal (a port needs the [v6]:PORT form)
        return _literal_or_name(text, None, item)
    host, colon, port = text.partition(":")
    if "-" in host and re.fullmatch(r"[\d.]+-[\d.]+", host):
        if colon:
            raise BadInput(f"bad target {item!r}: give ports with -p, not on a range")
        low_s, _, high_s = host.partition("-")
        return _range(item, low_s, high_s)
    return _literal_or_name(host, _port(port, item) if colon else None, item)


def _addresses(spec: _Spec) -> Iterator[str]:
    if spec.addresses is not None:
        yield from spec.addresses
    elif spec.network is not None:
        for addr in spec.network:  # every address, network and broadcast included (as nmap)
            yield str(addr)
    elif spec.span is not None:
        low, high = spec.span
        cls = type(low)
        for n in range(int(low), int(high) + 1):
            yield str(cls(n))


def resolve(name: str, family: str | None = None) -> tuple[list[str], str | None]:
    """Every address of NAME (A and AAAA, in the resolver's order), or ([], why it failed)."""
    fam = {"ipv4": socket.AF_INET, "ipv6": socket.AF_INET6}.get(family or "", socket.AF_UNSPEC)
    try:
        infos = socket.getaddrinfo(name, None, fam, socket.SOCK_STREAM)
    except socket.gaierror as exc:
        return [], exc.strerror or str(exc)
    except UnicodeError:
        return [], "not a valid host name"
    seen: dict[str, None] = {}
    for info in infos:
        seen[str(info[4][0])] = None
    return list(seen), None


_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _excluded(
    excludes: Sequence[_Spec],
) -> tuple[set[str], list[_Network], list[tuple[IPAddress, IPAddress]]]:
    singles: set[str] = set()
    nets: list[_Network] = []
    spans: list[tuple[IPAddress, IPAddress]] = []
    for spec in excludes:
        if spec.network is not None:
            nets.append(spec.network)
        elif spec.span is not None:
            spans.append(spec.span)
        elif spec.addresses is not None:
            singles.update(spec.addresses)
        else:
            singles.update(resolve(spec.host)[0])
    return singles, nets, spans


def expand(
    items: Iterable[str],
    family: str | None = None,
    exclude: Iterable[str] = (),
) -> list[Target]:
    """All targets in the order given, names resolved concurrently, exclusions removed.

    `family` ('ipv4' or 'ipv6') keeps one address family; literals of the other family are dropped.
    """
    specs = [parse_target(i) for i in items]
    if not specs:
        raise BadInput(f"no target given: give {_FORMS}")
    singles, nets, spans = _excluded([parse_target(e) for e in exclude])
    names = sorted({s.host for s in specs if s.addresses is None and s.network is None and s.span is None})
    with ThreadPoolExecutor(max_workers=min(16, max(1, len(names)))) as pool:
        resolved = dict(zip(names, pool.map(lambda n: resolve(n, family), names), strict=True))

    def keep(addr: str) -> bool:
        ip = ipaddress.ip_address(addr)
        if family and ("ipv6" if ip.version == 6 else "ipv4") != family:
            return False
        if addr in singles or any(ip in n for n in nets):
            return False
        return not any(low.version == ip.version and int(low) <= int(ip) <= int(high) for low, high in spans)

    out: list[Target] = []
    seen: set[tuple[str, int | None]] = set()
    for spec in specs:
        if spec.host in resolved:
            addrs, why = resolved[spec.host]
            if not addrs:
                out.append(Target(spec.host, None, spec.port, why or "no address"))
                continue
            candidates: Iterable[str] = addrs
        else:
            candidates = _addresses(spec)
        for addr in candidates:
            if keep(addr) and (addr, spec.port) not in seen:
                seen.add((addr, spec.port))
                out.append(Target(spec.host, addr, spec.port))
    return out


def read_target_file(path: str) -> list[str]:
    """-iL: one or more targets per line, # comments, '-' for stdin (as nmap)."""
    import sys
    from pathlib import Path

    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise BadInput(f"cannot read target file {path!r}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise BadInput(f"target file {path!r} is not text") from None
    return [word for line in text.splitlines() for word in line.split("#", 1)[0].split()]
