"""Protocol probes: what really answers on a port. One module per protocol, each exporting PROBE.

Adding a protocol is one file: write the module (see base.py for the interface) and list it here.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil

from portscope.probes.base import Probe

_MACHINERY = frozenset({"base", "conn", "runner"})


@functools.cache
def all_probes() -> tuple[Probe, ...]:
    """Every module here that defines PROBE, common protocols first; imported on first use only
    (ls and scan without --probe never pay for them)."""
    found = []
    for info in pkgutil.iter_modules(__path__):
        if info.name not in _MACHINERY and not info.name.startswith("_"):
            probe = getattr(importlib.import_module(f"{__name__}.{info.name}"), "PROBE", None)
            if isinstance(probe, Probe):
                found.append(probe)
    return tuple(sorted(found, key=lambda p: (p.rarity, p.name)))


def by_name(name: str) -> Probe:
    for p in all_probes():
        if p.name == name:
            return p
    raise KeyError(name)
