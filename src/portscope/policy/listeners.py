"""This host's servers as a baseline sees them: one Listener per (proto, address, port), never per PID.

What is left out, and why (each is a false alarm people met with home-made port-watch scripts):
- client sockets: TCP in any state but LISTEN, and connected UDP sockets;
- UDP sockets bound in the ephemeral range (ip_local_port_range): a resolver or NTP client binds one
  per query, so they come and go by the second; a UDP server lives on a fixed, lower port;
- loopback listeners on ephemeral ports: the random ports that editors, language servers and test
  runners open with bind(port 0), reachable from this host only.
A baseline entry that names such a port keeps it (the user asked for it), and `[scope]` can turn each
exclusion off. nginx's master and workers share one socket (and SO_REUSEPORT servers hold several on one
port): they are one Listener, named after the process that opened it.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, replace

from portscope.inventory import owners, procinfo, snapshot
from portscope.model import Listener, ProcessRef, Socket
from portscope.registry import EphemeralRange, PortSpec, ephemeral_range

WELL_KNOWN_MAX = 1023  # a port below 1024 is a server's even where the ephemeral range reaches down
MAX_DETAILS = 64  # processes examined per listener to find its opener (a server with 1000 workers)

Details = Callable[[int], procinfo.ProcDetails]


@dataclass(frozen=True, slots=True)
class Scope:
    """Which listeners a baseline is about (the `[scope]` table)."""

    ports: PortSpec | None = None  # None: every port
    loopback: bool = True  # False: only listeners other hosts can reach
    loopback_ephemeral: bool = False  # also loopback listeners on ephemeral ports
    udp_ephemeral: bool = False  # also UDP sockets bound in the ephemeral range (clients, usually)


def take_snapshot(scope: Scope | None = None, cache: owners.OwnerCache | None = None) -> snapshot.Snapshot:
    """The sockets current_listeners() needs: listening TCP and unconnected UDP, with their owners.
    CACHE: the owners found in the last cycle, confirmed instead of searched for (see OwnerCache)."""
    scope = scope or Scope()
    query = snapshot.Query(states=snapshot.LISTENING, ports=scope.ports, exposed=not scope.loopback)
    snap = snapshot.take(query, cache)
    orphans = {s.inode for s in snap.sockets if s.inode and not s.processes}
    if orphans and snap.owners_checked:
        # The socket list is read before the owners: a process exiting in between leaves its listener
        # in the list with no owner, which watch would record as a new, ownerless listener for one
        # cycle. A second look at the socket list alone (no owner pass: milliseconds) drops those.
        still = {s.inode for s in snapshot.take(replace(query, owners=False)).sockets if s.inode in orphans}
        snap.sockets = [s for s in snap.sockets if not (s.inode in orphans and s.inode not in still)]
    return snap


def current_listeners(
    scope: Scope | None = None,
    keep: Collection[tuple[str, int]] = (),
    snap: snapshot.Snapshot | None = None,
) -> list[Listener]:
    """This host's listeners now. KEEP: (proto, port) pairs reported even where an exclusion would
    drop them (the ports the baseline names). SNAP: a snapshot already taken (take_snapshot), so the
    caller can also report what it could not see (Snapshot.hidden_note)."""
    scope = scope or Scope()
    if snap is None:
        snap = take_snapshot(scope)
    return listeners_from(snap.sockets, scope, keep, ephemeral_range())


def is_server(s: Socket, scope: Scope, keep: Collection[tuple[str, int]], ephemeral: EphemeralRange) -> bool:
    """A socket a server listens on, within SCOPE (the exclusions are in the module's docstring)."""
    if s.local_port == 0:
        return False
    if s.proto == "tcp":
        if s.state != "LISTEN":
            return False
    elif s.proto != "udp" or s.state != "UNCONN" or s.remote_port:
        return False
    if scope.ports is not None and not scope.ports.contains(s.local_port, s.proto):
        return False
    if not scope.loopback and s.exposure == "loopback":
        return False
    if (s.proto, s.local_port) in keep:
        return True
    if s.local_port <= WELL_KNOWN_MAX or not ephemeral.contains(s.local_port):
        return True
    if s.exposure == "loopback" and not scope.loopback_ephemeral:
        return False
    return s.proto == "tcp" or scope.udp_ephemeral


def listeners_from(
    sockets: Iterable[Socket],
    scope: Scope,
    keep: Collection[tuple[str, int]],
    ephemeral: EphemeralRange,
    details: Details = procinfo.details,
) -> list[Listener]:
    keep = frozenset(keep)
    groups: dict[tuple[str, str, int], list[Socket]] = {}
    for s in sockets:
        if is_server(s, scope, keep, ephemeral):
            groups.setdefault((s.proto, s.local_address, s.local_port), []).append(s)
    cache: dict[int, procinfo.ProcDetails] = {}

    def cached(pid: int) -> procinfo.ProcDetails:
        hit = cache.get(pid)
        if hit is None:
            hit = cache[pid] = details(pid)
        return hit

    out = [_listener(key, group, cached) for key, group in groups.items()]
    out.sort(key=lambda item: (item.proto, item.port, item.address))
    return out


def _listener(key: tuple[str, str, int], group: list[Socket], details: Details) -> Listener:
    proto, address, port = key
    refs: dict[int, ProcessRef] = {}
    for s in group:
        for ref in s.processes:
            refs.setdefault(ref.pid, ref)
    first = group[0]
    user = first.user or (str(first.uid) if first.uid is not None else None)
    if not refs:  # owner hidden (another user's process, without root): the socket's uid still tells
        return Listener(proto, address, port, None, user)
    opener, info = _opener(sorted(refs.values(), key=lambda r: r.pid), first.uid, details)
    name = opener.name if opener.name != "?" else None  # "?": the process exited meanwhile
    if info is not None:
        user = info.user or (str(info.uid) if info.uid is not None else user)
    return Listener(
        proto,
        address,
        port,
        name,
        user,
        info.unit if info else None,
        info.container if info else None,
        sorted(refs),
    )


def _opener(
    refs: list[ProcessRef], socket_uid: int | None, details: Details
) -> tuple[ProcessRef, procinfo.ProcDetails | None]:
    """The process that opened the socket, whose name and user identify the listener: not systemd
    (pid 1 holds socket-activated sockets alongside the service), and of the socket's own user
    (nginx's master runs as root and its workers as www-data; after a PID wrap-around a worker may
    have the lowest pid), else the lowest pid."""
    candidates = [r for r in refs if r.pid != 1] or refs
    fallback: tuple[ProcessRef, procinfo.ProcDetails | None] | None = None
    for ref in candidates[:MAX_DETAILS]:
        info = details(ref.pid)
        if fallback is None:
            fallback = (ref, info)
        if socket_uid is None or info.uid == socket_uid:
            return ref, info
    return fallback or (candidates[0], None)
