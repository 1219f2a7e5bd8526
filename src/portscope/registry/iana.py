"""The IANA registry, from the compact file scripts/build_iana_registry.py makes of IANA's CSV."""

from __future__ import annotations

import functools
import os


def _path(name: str) -> str:
    # a plain open(): importlib.resources costs more to import than the file costs to read
    return os.path.join(os.path.dirname(__file__), "data", name)


@functools.lru_cache(maxsize=1)
def primary_names() -> dict[int, str]:
    """key -> IANA's first name, key = port * 2 + (1 for udp): the hot path's table (names.txt)."""
    with open(_path("names.txt"), encoding="ascii") as fh:
        words = fh.read().rstrip("\n").replace("\n", "\t").split("\t")
    return dict(zip(map(int, words[0::2]), words[1::2], strict=True))


@functools.lru_cache(maxsize=1)
def load() -> dict[tuple[int, str], list[tuple[str, str]]]:
    """(port, proto) -> [(name, description), ...] in IANA's order (the first is the primary name)."""
    with open(_path("iana.tsv"), encoding="utf-8") as fh:
        text = fh.read()
    out: dict[tuple[int, str], list[tuple[str, str]]] = {}
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        port, proto, name, desc = line.split("\t", 3)
        out.setdefault((int(port), proto), []).append((name, desc))
    return out
