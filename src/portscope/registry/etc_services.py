"""The host's /etc/services: the names `ss`, `netstat` and `getent services` print on this machine.

Read because a local admin may have added their own names, and because users compare our output with
`ss`; IANA's file is the fallback, not the override.
"""

from __future__ import annotations

import functools

PATH = "/etc/services"


@functools.lru_cache(maxsize=1)
def load(path: str = PATH) -> dict[tuple[int, str], tuple[str, tuple[str, ...]]]:
    """(port, proto) -> (name, aliases), first entry wins as with getservbyport(3)."""
    out: dict[tuple[int, str], tuple[str, tuple[str, ...]]] = {}
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            lines = fh.readlines()
    except OSError:
        return out
    for line in lines:
        words = line.split("#", 1)[0].split()
        if len(words) < 2:
            continue
        port_s, _, proto = words[1].partition("/")
        if not port_s.isdigit() or proto not in ("tcp", "udp"):
            continue
        key = (int(port_s), proto)
        if key not in out and int(port_s) <= 65535:
            out[key] = (words[0].lower(), tuple(w.lower() for w in words[2:]))
    return out
