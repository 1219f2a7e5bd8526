"""Port specs as every command takes them: 22, 22/tcp, 53/udp, 80,443, 8000-8100, ssh,https, - (all).

One parser for the whole tool, so `ls --port`, `who`, `services` and `scan -p` accept the same things
and reject bad input with the same one-line message.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from portscope.errors import BadInput

PROTOS = ("tcp", "udp")
MAX_PORT = 65535
SET_LIMIT = 4096  # ports; a bigger spec is tested against its ranges
VALID_FORMS = "22, 22/tcp, 53/udp, 80,443, 8000-8100, ssh,https or - for all"


def _merge(ranges: Iterable[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    out: list[list[int]] = []
    for low, high in sorted(ranges):
        if out and low <= out[-1][1] + 1:
            out[-1][1] = max(out[-1][1], high)
        else:
            out.append([low, high])
    return tuple((a, b) for a, b in out)


@dataclass(frozen=True)
class PortSpec:
    """A set of ports per protocol, held as merged ranges so `-` (all 65536 ports) costs nothing."""

    text: str
    tcp: tuple[tuple[int, int], ...] = ()
    udp: tuple[tuple[int, int], ...] = ()
    _lows: dict[str, list[int]] = field(default_factory=dict, compare=False, repr=False)
    _sets: dict[str, frozenset[int] | None] = field(default_factory=dict, compare=False, repr=False)

    def _ranges(self, proto: str) -> tuple[tuple[int, int], ...]:
        return self.tcp if proto == "tcp" else self.udp if proto == "udp" else ()

    def contains(self, port: int, proto: str = "tcp") -> bool:
        ranges = self._ranges(proto)
        if len(ranges) <= 4:
            return any(low <= port <= high for low, high in ranges)
        lows = self._lows.get(proto)
        if lows is None:
            lows = self._lows[proto] = [r[0] for r in ranges]
        i = bisect.bisect_right(lows, port) - 1
        return i >= 0 and port <= ranges[i][1]

    def as_set(self, proto: str = "tcp") -> frozenset[int] | None:
        """The ports as a set, for `port in s` in a hot loop; None when the spec is too big for one."""
        if proto not in self._sets:
            self._sets[proto] = frozenset(self.ports(proto)) if self.count(proto) <= SET_LIMIT else None
        return self._sets[proto]

    def ports(self, proto: str = "tcp") -> list[int]:
        return [p for low, high in self._ranges(proto) for p in range(low, high + 1)]

    def count(self, proto: str = "tcp") -> int:
        return sum(high - low + 1 for low, high in self._ranges(proto))

    @property
    def protos(self) -> tuple[str, ...]:
        return tuple(p for p in PROTOS if self._ranges(p))


def _port(text: str, whole: str) -> int:
    if not (text.isascii() and text.isdigit()):
        raise BadInput(f"bad port {text!r} in {whole!r}: give {VALID_FORMS}")
    n = int(text)
    if n > MAX_PORT:
        raise BadInput(f"port {n} is out of range 0-{MAX_PORT}: give {VALID_FORMS}")
    return n


def parse_ports(
    spec: str,
    resolve: Callable[[str], list[tuple[int, str]]] | None = None,
    default_protos: tuple[str, ...] = PROTOS,
) -> PortSpec:
    """Parse SPEC; `resolve(name)` turns a service name into (port, proto) pairs (the registry's)."""
    text = spec.strip()
    if not text:
        raise BadInput(f"empty port spec: give {VALID_FORMS}")
    acc: dict[str, list[tuple[int, int]]] = {"tcp": [], "udp": []}
    for raw in text.split(","):
        item = raw.strip().lower()
        if not item:
            raise BadInput(f"empty item in port spec {spec!r}: give {VALID_FORMS}")
        item, slash, proto = item.partition("/")
        if slash and proto not in PROTOS:
            raise BadInput(
                f"unknown protocol {proto!r} in {spec!r}: use /tcp or /udp, as in 22/tcp or 53/udp"
            )
        protos = (proto,) if slash else default_protos
        if item in ("-", "all", "*"):
            for p in protos:
                acc[p].append((0, MAX_PORT))
        elif (item[:1].isascii() and item[:1].isdigit()) or item.startswith("-"):
            low_s, dash, high_s = item.partition("-")
            if dash and not low_s:
                raise BadInput(f"bad port {item!r} in {spec!r}: ports are 0-{MAX_PORT}; give {VALID_FORMS}")
            low = _port(low_s, spec)
            high = _port(high_s, spec) if dash else low
            if high < low:
                raise BadInput(f"port range {item!r} runs backwards: write it low-high, as in 8000-8100")
            for p in protos:
                acc[p].append((low, high))
        else:
            found = resolve(item) if resolve else []
            hits = [(port, p) for port, p in found if p in protos]
            if not hits:
                raise BadInput(
                    f"unknown service name {item!r} in {spec!r}: give a port number or a known "
                    f"service (ssh, https, postgresql); `portscope services NAME` searches"
                )
            for port, p in hits:
                acc[p].append((port, port))
    return PortSpec(text=text, tcp=_merge(acc["tcp"]), udp=_merge(acc["udp"]))
