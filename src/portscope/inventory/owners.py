"""Map socket inodes to the processes holding them with one pass over /proc/*/fd.

This is the same walk `ss -p`, `lsof` and `fuser` make. Doing it once for all sockets (instead of
per socket) keeps it linear in the number of fds on the host; `dir_fd` readlinks save the kernel a
path walk per fd. Processes whose fd table we may not read (other users' without root or
CAP_SYS_PTRACE) are recorded, so the caller can say what it could not see instead of showing less.
"""

from __future__ import annotations

import contextlib
import marshal
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(slots=True)
class OwnerScan:
    by_inode: dict[int, list[tuple[int, int]]] = field(default_factory=dict)  # inode -> [(pid, fd)]
    fd_counts: dict[int, int] = field(default_factory=dict)  # pid -> open fds (for stats)
    denied: dict[int, int] = field(default_factory=dict)  # pid -> uid, fd table unreadable


PARALLEL_ABOVE = 20_000  # fds; below this, starting threads costs more than it saves
CHUNK = 8192  # fds per task, so one process holding 100k sockets still spreads over both cores


def scan(
    wanted: set[int] | None = None,
    count_fds: bool = False,
    proc: str = "/proc",
    threads: bool = True,
    share: tuple[int, int] = (0, 1),
) -> OwnerScan:
    """Walk every process's fd table once; keep only inodes in `wanted` (all sockets when None).

    The readlinks are the cost (one syscall per fd on the host). os.readlink releases the GIL, so on
    a big host two threads overlap one's syscalls with the other's Python: measured 0.45 s -> 0.28 s
    for 100k fds on two cores. share=(k, n): only the processes whose pid % n == k.
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
            if pid % share[1] != share[0]:
                continue
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
        if threads and total > PARALLEL_ABOVE and (os.cpu_count() or 1) > 1:
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


def scan_in_background(count_fds: bool = False, parts: int = 2) -> Callable[[set[int] | None], OwnerScan]:
    """Start the fd pass in `parts` forked children now; call the result later to collect it.

    Why: on a busy host the socket dump and the fd pass each take about half a second of one core.
    Side by side they cost about half the sum on two cores; threads cannot do that, because the
    decoding on both sides holds the GIL. Children ship flat int lists (marshal: C speed).
    """
    children = [_fork_share(count_fds, (k, parts)) for k in range(parts)]

    def collect(wanted: set[int] | None) -> OwnerScan:
        out = OwnerScan()
        by_inode = out.by_inode
        ours = {pid for _, pid in children}  # forks hold copies of our fds: not owners
        for r, pid in children:
            chunks = []
            try:
                while chunk := os.read(r, 1 << 20):
                    chunks.append(chunk)
            finally:
                os.close(r)
                _, status = os.waitpid(pid, 0)
            if status:
                return scan(wanted, count_fds)  # a child failed: do it all here, the slow way
            inodes, pids, fds, denied, fd_counts = marshal.loads(b"".join(chunks))
            out.denied.update(denied)
            out.fd_counts.update({p: n for p, n in fd_counts.items() if p not in ours})
            for ino, p, fd in zip(inodes, pids, fds, strict=True):
                if p in ours or (wanted is not None and ino not in wanted):
                    continue
                entry = by_inode.get(ino)
                if entry is None:
                    by_inode[ino] = [(p, fd)]
                else:
                    entry.append((p, fd))
        return out

    return collect


class OwnerCache:
    """Where each socket's holders were found last time, for a process that asks about the same
    sockets every few seconds (watch).

    Why: a full pass reads every fd on the host (about 0.5 s of CPU at 100k connections) to find the
    owners of a few hundred listening sockets that rarely change. Confirming each remembered
    (pid, fd) costs one readlink per holder. A full pass still runs when a socket is new, when a holder
    closed it or exited, when a socket had no owner we could explain, and every `refresh` seconds, so a
    process that joined a socket later (a worker inheriting a listener) is named within that time.
    PIDs are not reused while the old process still holds the fd, so a confirmed link is that socket.
    """

    def __init__(self, refresh: float = 300.0, proc: str = "/proc") -> None:
        self.refresh = refresh
        self.proc = proc
        self._known: dict[int, list[tuple[int, int]]] = {}
        self._denied: dict[int, int] = {}
        self._full_at: float | None = None

    def full_pass_due(self) -> bool:
        return self._full_at is None or time.monotonic() - self._full_at >= self.refresh

    def lookup(self, wanted: set[int]) -> OwnerScan | None:
        """The owners of `wanted` from memory, each confirmed; None when a full pass is needed."""
        if self.full_pass_due():
            return None
        out = OwnerScan(denied=dict(self._denied))
        for ino in wanted:
            holders = self._known.get(ino)
            if holders is None:
                return None  # a socket the last pass did not see
            if not holders and not self._denied:
                return None  # no owner though every fd table was readable: it was being handed over
            link = f"socket:[{ino}]"
            for pid, fd in holders:
                try:
                    if os.readlink(f"{self.proc}/{pid}/fd/{fd}") != link:
                        return None
                except OSError:
                    return None
            if holders:
                out.by_inode[ino] = list(holders)
        return out

    def remember(self, wanted: set[int], result: OwnerScan) -> None:
        """What a full pass found for `wanted`."""
        self._known = {ino: list(result.by_inode.get(ino, ())) for ino in wanted}
        self._denied = dict(result.denied)
        self._full_at = time.monotonic()


def _fork_share(count_fds: bool, share: tuple[int, int]) -> tuple[int, int]:
    """(read end, pid) of a child scanning one share of the processes."""
    r, w = os.pipe()
    pid = os.fork()
    if pid:
        os.close(w)
        return r, pid
    code = 0  # pragma: no cover - the child's work is checked through its result
    try:
        os.close(r)
        found = scan(None, count_fds, threads=False, share=share)
        inodes, pids, fds = [], [], []
        for ino, holders in found.by_inode.items():
            for p, fd in holders:
                inodes.append(ino)
                pids.append(p)
                fds.append(fd)
        data = memoryview(marshal.dumps((inodes, pids, fds, found.denied, found.fd_counts)))
        while data:
            data = data[os.write(w, data) :]
    except BaseException:
        code = 1
    finally:
        os._exit(code)


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
