"""The fd pass, in-process and in forked children (busy hosts), must find the same owners."""

from __future__ import annotations

import os
import socket

from portscope.inventory import owners
from tests.helpers import start_sockhost


def _inode(s: socket.socket) -> int:
    return os.stat(f"/proc/self/fd/{s.fileno()}").st_ino


def test_background_children_find_what_the_serial_pass_finds() -> None:
    mine = [socket.socket() for _ in range(5)]
    host = start_sockhost(
        [{"kind": "tcp-listen", "addr": "127.0.0.1"}, {"kind": "fork-listen", "addr": "127.0.0.1"}]
    )
    try:
        wanted = {_inode(s) for s in mine}
        collect = owners.scan_in_background(count_fds=True, parts=2)
        serial = owners.scan(None, count_fds=True)
        parallel = collect(None)
        # Only our own processes' sockets are compared: on a busy host others open and close sockets
        # between the two passes.
        ours = {os.getpid(), *host.pids()}

        def mine_only(found: dict[int, list[tuple[int, int]]]) -> dict[int, list[tuple[int, int]]]:
            return {
                k: sorted(h for h in v if h[0] in ours)
                for k, v in found.items()
                if any(h[0] in ours for h in v)
            }

        assert mine_only(parallel.by_inode) == mine_only(serial.by_inode)
        # Our own sockets, with our pid and their fds (the scanning forks hold copies of them but
        # are not owners), and the sockhost's shared listener twice.
        for s in mine:
            assert parallel.by_inode[_inode(s)] == [(os.getpid(), s.fileno())]
        held = {pid for v in parallel.by_inode.values() for pid, _ in v}
        assert host.pids() <= held
        assert parallel.fd_counts[os.getpid()] >= len(mine)
        # Filtering to wanted inodes keeps exactly those.
        only = owners.scan_in_background(parts=3)(wanted)
        assert set(only.by_inode) == wanted
    finally:
        host.stop()
        for s in mine:
            s.close()
