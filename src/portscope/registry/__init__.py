"""Port and service knowledge: IANA's registry, this host's /etc/services, and the curated facts the seeds
teach (category, TLS twin, plaintext, keep-on-loopback, the name people actually use).

Precedence for a port's name: curated (9200 is elasticsearch to everyone who runs it, though IANA says
wap-wsp), then /etc/services (what `ss` prints here), then IANA. Everything loads lazily: `portscope ls`
pays for a name table only when it has a socket to name.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

from portscope.errors import BadInput
from portscope.registry import etc_services, iana
from portscope.registry.curated import CATEGORIES, CURATED, TOP_TCP, TOP_UDP, Curated
from portscope.registry.ports import EphemeralRange, ephemeral_range, port_class
from portscope.registry.portspec import PROTOS, PortSpec
from portscope.registry.portspec import parse_ports as _parse_ports

__all__ = [
    "CATEGORIES",
    "EphemeralRange",
    "PortSpec",
    "ServiceInfo",
    "all_services",
    "by_category",
    "ephemeral_range",
    "lookup_name",
    "lookup_port",
    "name_key",
    "parse_ports",
    "port_class",
    "service_name",
    "service_names",
    "top_ports",
]


@dataclass(frozen=True, slots=True)
class ServiceInfo:
    port: int
    proto: str
    name: str
    iana_name: str | None = None
    description: str | None = None
    category: str | None = None
    tls_twin: int | None = None
    plaintext: bool = False
    loopback_only: bool = False
    use: str | None = None
    aliases: tuple[str, ...] = ()
    sources: tuple[str, ...] = field(default=())  # curated, etc-services, iana

    def to_dict(self) -> dict[str, object]:
        return {
            "port": self.port,
            "proto": self.proto,
            "name": self.name,
            "iana_name": self.iana_name,
            "description": self.description,
            "category": self.category,
            "tls_twin": self.tls_twin,
            "plaintext": self.plaintext,
            "loopback_only": self.loopback_only,
            "use": self.use,
            "aliases": list(self.aliases),
            "port_class": port_class(self.port),
            "sources": list(self.sources),
        }


@functools.lru_cache(maxsize=1)
def _curated() -> dict[tuple[int, str], Curated]:
    return {(c.port, p): c for c in CURATED for p in c.protos}


def name_key(port: int, proto: str) -> int:
    """The key of service_names(): port * 2, plus 1 for UDP (an int hashes faster than a tuple)."""
    return port * 2 + (proto == "udp")


@functools.lru_cache(maxsize=1)
def service_names() -> dict[int, str]:
    """The one name to print per port, keyed by name_key(): for callers naming 100k sockets."""
    names = dict(iana.primary_names())
    names.update((name_key(*key), v[0]) for key, v in etc_services.load().items())
    names.update((name_key(*key), c.name) for key, c in _curated().items())
    return names


def service_name(port: int, proto: str = "tcp") -> str | None:
    return service_names().get(name_key(port, proto))


def _info(port: int, proto: str) -> ServiceInfo | None:
    cur = _curated().get((port, proto))
    etc = etc_services.load().get((port, proto))
    ians = iana.load().get((port, proto), [])
    if not (cur or etc or ians):
        return None
    sources = tuple(s for s, on in (("curated", cur), ("etc-services", etc), ("iana", ians)) if on)
    aliases: list[str] = []
    for extra in (cur.aliases if cur else ()), (etc[1] if etc else ()), (n for n, _ in ians[1:]):
        aliases += [a for a in extra if a not in aliases]
    name = cur.name if cur else etc[0] if etc else ians[0][0]
    if etc and etc[0] != name and etc[0] not in aliases:
        aliases.insert(0, etc[0])
    if ians and ians[0][0] != name and ians[0][0] not in aliases:
        aliases.append(ians[0][0])
    return ServiceInfo(
        port=port,
        proto=proto,
        name=name,
        iana_name=ians[0][0] if ians else None,
        description=ians[0][1] if ians else None,
        category=cur.category if cur else None,
        tls_twin=cur.tls_twin if cur else None,
        plaintext=cur.plaintext if cur else False,
        loopback_only=cur.loopback_only if cur else False,
        use=cur.use if cur else None,
        aliases=tuple(a for a in aliases if a != name),
        sources=sources,
    )


def lookup_port(port: int, proto: str = "tcp") -> list[ServiceInfo]:
    info = _info(port, proto)
    return [info] if info else []


@functools.lru_cache(maxsize=1)
def _by_name() -> dict[str, list[tuple[int, str]]]:
    """Every name and alias -> (port, proto) pairs, ordered curated first so `postgres` finds 5432."""
    index: dict[str, list[tuple[int, str]]] = {}

    def add(name: str, key: tuple[int, str]) -> None:
        hits = index.setdefault(name.lower(), [])
        if key not in hits:
            hits.append(key)

    for c in CURATED:
        for p in c.protos:
            for n in (c.name, *c.aliases):
                add(n, (c.port, p))
    for key, (name, aliases) in etc_services.load().items():
        for n in (name, *aliases):
            add(n, key)
    for key, entries in iana.load().items():
        for n, _ in entries:
            add(n, key)
    return index


def lookup_name(name: str) -> list[ServiceInfo]:
    """Services called NAME (case-insensitive; curated aliases such as postgres, es, k8s-api count)."""
    hits = _by_name().get(name.strip().lower(), [])
    return [i for key in hits if (i := _info(*key)) is not None]


def _resolve(name: str) -> list[tuple[int, str]]:
    return list(_by_name().get(name, []))


def parse_ports(spec: str, default_protos: tuple[str, ...] = PROTOS) -> PortSpec:
    """A port spec as DESIGN.md defines it; service names resolve through this registry."""
    return _parse_ports(spec, _resolve, default_protos)


def _category_key(name: str) -> str:
    key = name.strip().lower().replace("_", "-").replace(" ", "-")
    if key in CATEGORIES:
        return key
    matches = [k for k in CATEGORIES if k.startswith(key) or key in k.split("-")]
    if len(matches) == 1:
        return matches[0]
    raise BadInput(f"unknown category {name!r}: choose one of {', '.join(CATEGORIES)}")


def by_category(name: str) -> list[ServiceInfo]:
    key = _category_key(name)
    return [i for c in CURATED if c.category == key for p in c.protos if (i := _info(c.port, p)) is not None]


def all_services() -> list[ServiceInfo]:
    keys = set(iana.load()) | set(etc_services.load()) | set(_curated())
    return [i for key in sorted(keys) if (i := _info(*key)) is not None]


def top_ports(n: int, proto: str = "tcp") -> list[int]:
    """The N most commonly used ports, by our own curated rank, then the rest in numeric order."""
    if not 1 <= n <= 65536:
        raise BadInput(f"--top takes 1-65536 ports, not {n}")
    ranked = list(TOP_TCP if proto == "tcp" else TOP_UDP)[:n]
    if len(ranked) < n:
        seen = set(ranked)
        ranked += [p for p in range(1, 65536) if p not in seen][: n - len(ranked)]
        if len(ranked) < n:
            ranked.append(0)
    return ranked
