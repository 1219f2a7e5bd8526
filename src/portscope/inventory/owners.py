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


PARALLEL_ABOVE = 20_000  # fds; below this, starting threads costs more than it saves
CHUNK = 8192  # fds per task, so one process holding 100k sockets still spreads over both cores


def scan(wanted: set[int] | None = None, count_fds: bool = False, proc: str = "/proc") -> OwnerScan:
    """Walk every process's fd table once; keep only inodes in `wanted` (all sockets when None).

    The readlinks are the cost (one syscall per fd on the host). os.readlink releases the GIL, so on
    a big host two threads overlap one's syscalls with the other's Python: measured 0.45 s -> 0.28 s
    for 100k fds on two cores.
    """
    out = OwnerScan()
    o_flags = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
    tables: list[tuple[int, int, list[str]]] = []  # (pid, dir fd, fd names)
    total = 0
    try:
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
            except OSError:
                os.close(dfd)
                continue
            if count_fds:
                out.fd_counts[pid] = len(fds)
            tables.append((pid, dfd, fds))
            total += len(fds)
        # Compare whole link texts: one set lookup per fd, and no int() for fds we do not want.
        links = None if wanted is None else frozenset(f"socket:[{ino}]" for ino in wanted)
        tasks = [
            (pid, dfd, fds[i : i + CHUNK]) for pid, dfd, fds in tables for i in range(0, len(fds), CHUNK)
        ]
        if total > PARALLEL_ABOVE and (os.cpu_count() or 1) > 1:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(max_workers=2) as pool:
                found = list(pool.map(lambda t: _match(t, links), tasks))
        else:
            found = [_match(t, links) for t in tasks]
    finally:
        for _, dfd, _ in tables:
            os.close(dfd)
    by_inode = out.by_inode
    for matches in found:
        for link, pid, fd in matches:
            ino = int(link[8:-1])
            entry = by_inode.get(ino)
            if entry is None:
                by_inode[ino] = [(pid, int(fd))]
            else:
                entry.append((pid, int(fd)))
    return out


def _match(task: tuple[int, int, list[str]], links: frozenset[str] | None) -> list[tuple[str, int, str]]:
    """(link, pid, fd) for every fd of one chunk that is a wanted socket."""
    pid, dfd, fds = task
    readlink = os.readlink
    out = []
    for fd in fds:
        try:
            link = readlink(fd, dir_fd=dfd)
        except OSError:
            continue  # closed since we listed it
        if link in links if links is not None else link.startswith("socket:["):
            out.append((link, pid, fd))
    return out


def comm(pid: int, proc: str = "/proc") -> str:
    """The kernel's short process name (what ss -p shows); untrusted: the process chose it."""
    try:
        with open(f"{proc}/{pid}/comm", "rb") as f:
            return f.read(64).rstrip(b"\n").decode("utf-8", "replace")
    except OSError:
        return "?"
