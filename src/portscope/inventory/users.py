"""uid -> user name, cached: a host has few users and many sockets."""

from __future__ import annotations

import functools


@functools.lru_cache(maxsize=1024)
def user_name(uid: int) -> str | None:
    try:
        import pwd
    except ImportError:  # Windows
        return None
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return None
