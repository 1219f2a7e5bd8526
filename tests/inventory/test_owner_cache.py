"""OwnerCache (inventory/owners.py): a long-running watcher confirms last cycle's socket owners with one
readlink each instead of reading every fd on the host, and falls back to the full pass whenever memory
cannot be confirmed. Real sockets held by real child processes (tests/sockhost.py), one of them shared
with a forked child, as a server and its worker share a listener.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Iterator

import pytest

from portscope.inventory import owners, snapshot
from portscope.registry import parse_ports
from tests.helpers import SockHost, start_sockhost


@pytest.fixture
def host() -> Iterator[SockHost]:
    h = start_sockhost(
        [{"kind": "tcp-listen", "addr": "127.0.0.1"}, {"kind": "fork-listen", "addr": "127.0.0.1"}]
    )
    try:
        yield h
    finally:
        h.stop()


def query(host: SockHost) -> snapshot.Query:
    ports = ",".join(str(p) for p in sorted(host.ports()))
    return snapshot.Query(protos=("tcp",), states=snapshot.LISTENING, ports=parse_ports(ports))


def holders(snap: snapshot.Snapshot) -> dict[int, set[int]]:
    return {s.local_port: {p.pid for p in s.processes} for s in snap.sockets}


def test_remembered_owners_are_confirmed_and_match_a_full_pass(host: SockHost) -> None:
    q = query(host)
    cache = owners.OwnerCache()
    first = snapshot.take(q, cache)
    forked = next(s["port"] for s in host.report["sockets"] if s["kind"] == "fork-listen")
    plain = next(s["port"] for s in host.report["sockets"] if s["kind"] == "tcp-listen")
    assert holders(first) == {plain: {host.pid}, forked: {host.pid, *host.report["children"]}}
    wanted = {s.inode for s in first.sockets}
    remembered = cache.lookup(wanted)
    assert remembered is not None  # confirmed from memory: no full pass needed
    assert {i: {pid for pid, _ in h} for i, h in remembered.by_inode.items()} == {
        s.inode: {p.pid for p in s.processes} for s in first.sockets
    }
    again = snapshot.take(q, cache)
    assert holders(again) == holders(first) == holders(snapshot.take(q))
    assert [p.fd for s in again.sockets for p in s.processes] == [
        p.fd for s in first.sockets for p in s.processes
    ]


def test_a_holder_that_exits_sends_the_next_look_back_to_a_full_pass(host: SockHost) -> None:
    q = query(host)
    cache = owners.OwnerCache()
    first = snapshot.take(q, cache)
    wanted = {s.inode for s in first.sockets}
    (child,) = host.report["children"]
    os.kill(child, signal.SIGKILL)
    end = time.monotonic() + 10
    while cache.lookup(wanted) is not None and time.monotonic() < end:
        time.sleep(0.02)  # the kernel closes a killed process's fds as it dies, not at once
    assert cache.lookup(wanted) is None  # its remembered (pid, fd) no longer reads as that socket
    forked = next(s["port"] for s in host.report["sockets"] if s["kind"] == "fork-listen")
    assert holders(snapshot.take(q, cache))[forked] == {host.pid}  # the full pass's truth
    assert cache.lookup(wanted) is not None  # and that is remembered in turn


def test_a_new_socket_or_an_old_memory_needs_a_full_pass(host: SockHost) -> None:
    q = query(host)
    cache = owners.OwnerCache()
    first = snapshot.take(q, cache)
    wanted = {s.inode for s in first.sockets}
    with socket.create_server(("127.0.0.1", 0)) as extra:
        new = snapshot.take(
            snapshot.Query(
                protos=("tcp",), states=snapshot.LISTENING, ports=parse_ports(str(extra.getsockname()[1]))
            )
        )
        assert cache.lookup(wanted | {new.sockets[0].inode}) is None
    stale = owners.OwnerCache(refresh=0)  # every look is a full pass
    snapshot.take(q, stale)
    assert stale.full_pass_due() and stale.lookup(wanted) is None
    assert cache.lookup(wanted) is not None and not cache.full_pass_due()
