"""The IANA registry, from the compact file scripts/build_iana_registry.py makes of IANA's CSV."""

from __future__ import annotations

import functools
from importlib import resources


@functools.lru_cache(maxsize=1)
def load() -> dict[tuple[int, str], list[tuple[str, str]]]:
    """(port, proto) -> [(name, description), ...] in IANA's order (the first is the primary name)."""
    text = resources.files("portscope.registry").joinpath("data/iana.tsv").read_text(encoding="utf-8")
    out: dict[tuple[int, str], list[tuple[str, str]]] = {}
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        port, proto, name, desc = line.split("\t", 3)
        out.setdefault((int(port), proto), []).append((name, desc))
    return out
