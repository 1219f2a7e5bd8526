"""Map socket inodes to the processes holding them with one pass over /proc/*/fd.

This is the same walk `ss -p`, `lsof` and `fuser` make. Doing it once for all sockets (instead of
per socket) keeps it linear in the number of fds on the host; `dir_fd` readlinks save the kernel a
path walk per fd. Processes whose fd table we may not read (other users' without root or
CAP_SYS_PTRACE) are recorded, so the caller can say what it could not see instead of showing less.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field


@dataclass(slots=True)
class OwnerScan:
    by_inode: dict[int, list[tuple[int, int]]] = field(default_factory=dict)  # inode -> [(pid, fd)]
    fd_counts: dict[int, int] = field(default_factory=dict)  # pid -> open fds (for stats)
    denied: dict[int, int] = field(default_factory=dict)  # pid -> uid, fd table unreadable


def scan(wanted: set[int] | None = None, count_fds: bool = False, proc: str = "/proc") -> OwnerScan:
    """Walk every process's fd table once; keep only inodes in `wanted` (all sockets when None)."""
    out = OwnerScan()
    by_inode = out.by_inode
    readlink = os.readlink
    o_flags = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
    for name in os.listdir(proc):
        if not name.isdigit():
            continue
        pid = int(name)
        try:
            dfd = os.open(f"{proc}/{name}/fd", o_flags)
        except PermissionError:
            with contextlib.suppress(OSError):
                out.denied[pid] = os.stat(f"{proc}/{name}").st_uid
            continue
        except OSError:
            continue  # exited, or a kernel thread without an fd table
        try:
            fds = os.listdir(dfd)
            if count_fds:
                out.fd_counts[pid] = len(fds)
            for fd in fds:
                try:
                    link = readlink(fd, dir_fd=dfd)
                except OSError:
                    continue
                if link.startswith("socket:["):
                    ino = int(link[8:-1])
                    if wanted is None or ino in wanted:
                        entry = by_inode.get(ino)
                        if entry is None:
                            by_inode[ino] = [(pid, int(fd))]
                        else:
                            entry.append((pid, int(fd)))
        except OSError:
            pass
        finally:
            os.close(dfd)
    return out


def comm(pid: int, proc: str = "/proc") -> str:
    """The kernel's short process name (what ss -p shows); untrusted: the process chose it."""
    try:
        with open(f"{proc}/{pid}/comm", "rb") as f:
            return f.read(64).rstrip(b"\n").decode("utf-8", "replace")
    except OSError:
        return "?"
