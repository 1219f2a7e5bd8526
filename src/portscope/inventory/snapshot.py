"""One consistent picture of this host's sockets, filtered as the user asked.

Filters are pushed down as far as they go: states into the kernel request, ports and exposure before
the owner pass, so a narrow question costs less than a full listing.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from portscope.errors import CannotDo
from portscope.inventory import netlink, owners, procnet
from portscope.inventory.netlink import RawSocket
from portscope.inventory.states import ALL_TCP_MASK, TCP_STATES, UDP_STATES, kernel_mask
from portscope.inventory.users import user_name
from portscope.model import ProcessRef, Socket
from portscope.registry import PortSpec, ephemeral_range, service_names

LISTENING = frozenset({"LISTEN", "UNCONN"})
FAMILIES = {"ipv4": socket.AF_INET, "ipv6": socket.AF_INET6}
_FAMILY_NAME: dict[int, str] = {socket.AF_INET: "ipv4", socket.AF_INET6: "ipv6"}


@dataclass(slots=True)
class Query:
    protos: tuple[str, ...] = ("tcp", "udp")
    families: tuple[str, ...] = ("ipv4", "ipv6")
    states: frozenset[str] | None = LISTENING  # None: every state (ls -a)
    ports: PortSpec | None = None  # matches the local port, or the remote port of a connection
    pids: frozenset[int] | None = None
    process: str | None = None  # case-insensitive substring of the process name
    exposed: bool = False  # only sockets reachable from outside this host
    owners: bool = True  # False skips the /proc/*/fd pass
    count_fds: bool = False  # stats: also count every process's open fds


@dataclass(slots=True)
class Snapshot:
    sockets: list[Socket]
    source: str  # netlink | proc | psutil
    denied: dict[int, int] = field(default_factory=dict)  # pid -> uid whose fds we could not read
    fd_counts: dict[int, int] = field(default_factory=dict)
    owners_checked: bool = True

    def hidden_owners(self) -> int:
        """Sockets whose owner may be among the processes we were not allowed to look into."""
        if not self.denied or not self.owners_checked:
            return 0
        return sum(1 for s in self.sockets if s.inode and not s.processes)

    def hidden_note(self) -> str | None:
        """One sentence saying what could not be seen and how to see it, as `ss` would not."""
        hidden = self.hidden_owners()
        if not hidden:
            return None
        users = sorted({user_name(uid) or str(uid) for uid in self.denied.values()})
        shown = ", ".join(users[:5]) + (f" and {len(users) - 5} more" if len(users) > 5 else "")
        return (
            f"owners of {hidden} socket(s) not shown: {len(self.denied)} processes of other users "
            f"({shown}) can only be inspected as root or with CAP_SYS_PTRACE"
        )


def _backend() -> str:
    forced = os.environ.get("PORTSCOPE_BACKEND")
    if forced in ("netlink", "proc", "psutil"):
        return forced
    return "netlink" if sys.platform.startswith("linux") else "psutil"


class _Decoder:
    """Turns RawSockets into model Sockets. 100k sockets share a few dozen addresses, ports and
    users, so every derived string is computed once and looked up after: the per-socket work is a
    handful of dict lookups and one constructor call."""

    def __init__(self) -> None:
        self.addr_cache: dict[tuple[int, bytes], tuple[str, str]] = {}
        eph = ephemeral_range()
        self.eph_low, self.eph_high = eph.low, eph.high
        self.if_names: dict[int, str | None] = {}
        self.names: dict[int, str] | None = None  # registry.service_names(), loaded at the first socket
        self.users: dict[int, str | None] = {}

    def address(self, family: int, raw: bytes) -> tuple[str, str]:
        """(text, exposure) for an address."""
        hit = self.addr_cache.get((family, raw))
        if hit is None:
            text = socket.inet_ntop(family, raw if family == socket.AF_INET6 else raw[:4])
            hit = self.addr_cache[(family, raw)] = (text, exposure_of(text))
        return hit

    def interface(self, index: int) -> str | None:
        if index not in self.if_names:
            try:
                self.if_names[index] = socket.if_indextoname(index)
            except OSError:
                self.if_names[index] = str(index)
        return self.if_names[index]

    def service(self, proto: str, lport: int, rport: int) -> str | None:
        """The server side's name: the local port unless it looks like a client's ephemeral port."""
        names = self.names
        if names is None:
            names = self.names = service_names()
        udp = proto == "udp"
        name = names.get(lport * 2 + udp)
        if name and (rport == 0 or not self.eph_low <= lport <= self.eph_high):
            return name
        return (names.get(rport * 2 + udp) if rport else None) or name

    def user(self, uid: int) -> str | None:
        try:
            return self.users[uid]
        except KeyError:
            name = self.users[uid] = user_name(uid)
            return name

    def decode(self, proto: str, r: RawSocket) -> Socket:
        family, state, sport, dport, src, dst, recv_q, send_q, uid, inode, ifindex, v6only = r
        laddr, exposure = self.address(family, src)
        return Socket(
            proto,
            _FAMILY_NAME[family],
            (TCP_STATES if proto == "tcp" else UDP_STATES).get(state) or str(state),
            laddr,
            sport,
            self.address(family, dst)[0],
            dport,
            recv_q,
            send_q,
            inode,
            uid,
            self.user(uid),
            self.service(proto, sport, dport),
            exposure,
            v6only,
            self.interface(ifindex) if ifindex else None,
        )


def exposure_of(address: str) -> str:
    """loopback (this host only), all (every interface: 0.0.0.0 or [::]) or address (one address)."""
    if address in ("0.0.0.0", "::"):
        return "all"
    if address.startswith("127.") or address == "::1" or address.startswith("::ffff:127."):
        return "loopback"
    return "address"


def _raw_sockets(backend: str, proto: str, family: int, states: frozenset[str] | None) -> Iterable[RawSocket]:
    """The dump's own generator, not a wrapper: each generator layer costs per socket."""
    mask = ALL_TCP_MASK if states is None else kernel_mask(set(states), proto)
    if not mask:
        return ()
    if backend == "netlink":
        return netlink.dump(proto, family, mask)
    return procnet.dump(proto, family, mask)


def take(query: Query, cache: owners.OwnerCache | None = None) -> Snapshot:
    """The sockets QUERY asks for. CACHE: owners remembered from earlier calls (a long-running
    watcher asking about the same listeners each cycle), confirmed instead of found again."""
    backend = _backend()
    if backend == "psutil":
        return _take_psutil(query)
    try:
        return _take_linux(query, backend, cache)
    except netlink.NetlinkUnavailable:
        return _take_linux(query, "proc", cache)


def _decode_all(
    decoder: _Decoder, proto: str, family: int, raws: Iterable[RawSocket], query: Query
) -> list[Socket]:
    """decode() unrolled for a whole dump: the hot loop of `ls -a` on a host with 100k sockets, so
    every lookup is a local dict access and only the first socket of an address, port or user pays
    for computing its text."""
    ports = query.ports
    port_set = ports.as_set(proto) if ports is not None else None
    exposed = query.exposed
    states = TCP_STATES if proto == "tcp" else UDP_STATES
    fam_name = _FAMILY_NAME[family]
    addrs: dict[bytes, tuple[str, str]] = {}
    users = decoder.users
    service = decoder.service
    services: dict[tuple[int, int], str | None] = {}
    eph_low, eph_high = decoder.eph_low, decoder.eph_high
    out: list[Socket] = []
    append = out.append
    for _fam, state, sport, dport, src, dst, recv_q, send_q, uid, inode, ifindex, v6only in raws:
        if port_set is not None:  # a few ports: a set lookup, no call
            if sport not in port_set and (not dport or dport not in port_set):
                continue
        elif ports is not None and not (
            ports.contains(sport, proto) or (dport and ports.contains(dport, proto))
        ):
            continue
        local = addrs.get(src)
        if local is None:
            local = addrs[src] = decoder.address(family, src)
        if exposed and local[1] == "loopback":
            continue
        remote = addrs.get(dst)
        if remote is None:
            remote = addrs[dst] = decoder.address(family, dst)
        # a client's ephemeral port names nothing: key the cache on the server port only
        skey = (sport, dport) if eph_low <= sport <= eph_high else (sport, 0)
        try:
            name = services[skey]
        except KeyError:
            name = services[skey] = service(proto, sport, dport)
        try:
            user = users[uid]
        except KeyError:
            user = decoder.user(uid)
        append(
            Socket(
                proto,
                fam_name,
                states.get(state) or str(state),
                local[0],
                sport,
                remote[0],
                dport,
                recv_q,
                send_q,
                inode,
                uid,
                user,
                name,
                local[1],
                v6only,
                decoder.interface(ifindex) if ifindex else None,
            )
        )
    return out


BACKGROUND_ABOVE = 20_000  # sockets on the host; below, a fork costs more than the overlap saves


def _busy_host() -> bool:
    """Many sockets in use (the kernel's own count, one small read): worth a parallel fd pass."""
    try:
        with open("/proc/net/sockstat", "rb") as f:
            first = f.readline().split()  # b"sockets: used N"
        return int(first[2]) > BACKGROUND_ABOVE
    except (OSError, IndexError, ValueError):
        return False


def _take_linux(query: Query, backend: str, cache: owners.OwnerCache | None = None) -> Snapshot:
    decoder = _Decoder()
    wants_owners = query.owners or bool(query.pids) or bool(query.process)
    if query.count_fds:
        cache = None  # stats counts every process's fds: only a full pass does
    background = None
    if wants_owners and _busy_host() and (cache is None or cache.full_pass_due()):
        background = owners.scan_in_background(query.count_fds)
    sockets: list[Socket] = []
    for proto in query.protos:
        for fam_name in query.families:
            family = FAMILIES[fam_name]
            sockets += _decode_all(
                decoder, proto, family, _raw_sockets(backend, proto, family, query.states), query
            )
    snap = Snapshot(sockets=sockets, source=backend, owners_checked=query.owners)
    if wants_owners:
        _attach_owners(snap, query, background, cache)
    return snap


def _attach_owners(
    snap: Snapshot,
    query: Query,
    background: Callable[[set[int] | None], owners.OwnerScan] | None = None,
    cache: owners.OwnerCache | None = None,
) -> None:
    wanted = {s.inode for s in snap.sockets if s.inode}
    result = cache.lookup(wanted) if cache is not None and background is None else None
    if result is None:
        if background is not None:
            result = background(wanted)  # started: always collected (its children must be reaped)
        elif not wanted and not query.count_fds:
            return  # nothing to attribute: skip walking every fd on the host
        else:
            result = owners.scan(wanted, count_fds=query.count_fds)
        if cache is not None:
            cache.remember(wanted, result)
    snap.denied, snap.fd_counts, snap.owners_checked = result.denied, result.fd_counts, True
    names: dict[int, str] = {}
    for s in snap.sockets:
        holders = result.by_inode.get(s.inode) if s.inode else None
        if holders:
            refs = []
            for pid, fd in sorted(holders) if len(holders) > 1 else holders:
                name = names.get(pid)
                if name is None:
                    name = names[pid] = owners.comm(pid)
                refs.append(ProcessRef(pid, name, fd))
            s.processes = refs
    snap.sockets = list(_filter_owners(snap.sockets, query))


def _filter_owners(sockets: Iterable[Socket], query: Query) -> Iterator[Socket]:
    if not query.pids and not query.process:
        yield from sockets
        return
    needle = query.process.lower() if query.process else None
    for s in sockets:
        if query.pids and not any(p.pid in query.pids for p in s.processes):
            continue
        if needle and not any(needle in p.name.lower() for p in s.processes):
            continue
        yield s


def _take_psutil(query: Query) -> Snapshot:
    """macOS/Windows: psutil knows pids and states but not inodes, uids or queues."""
    try:
        import psutil
    except ImportError as exc:  # pragma: no cover - psutil is a dependency
        raise CannotDo("psutil is not installed: it is needed to list sockets on this OS") from exc
    decoder = _Decoder()
    kinds = {("tcp", socket.AF_INET): "tcp4", ("tcp", socket.AF_INET6): "tcp6"}
    kinds |= {("udp", socket.AF_INET): "udp4", ("udp", socket.AF_INET6): "udp6"}
    sockets: list[Socket] = []
    try:
        conns = [
            (p, f, c)
            for p in query.protos
            for f in query.families
            for c in psutil.net_connections(kind=kinds[(p, FAMILIES[f])])
        ]
    except psutil.AccessDenied as exc:
        raise CannotDo("listing sockets needs administrator rights on this OS") from exc
    names: dict[int, str] = {}
    for proto, fam, c in conns:
        # psutil says NONE for all UDP; ss says ESTAB for a connect()ed one
        state = ("ESTABLISHED" if c.raddr else "UNCONN") if proto == "udp" else c.status
        if query.states is not None and state not in query.states:
            continue
        lport = c.laddr.port if c.laddr else 0
        rport = c.raddr.port if c.raddr else 0
        if query.ports is not None and not (
            query.ports.contains(lport, proto) or (rport and query.ports.contains(rport, proto))
        ):
            continue
        laddr = c.laddr.ip if c.laddr else ("0.0.0.0" if fam == "ipv4" else "::")
        raddr = c.raddr.ip if c.raddr else ("0.0.0.0" if fam == "ipv4" else "::")
        exposure = exposure_of(laddr)
        if query.exposed and exposure == "loopback":
            continue
        procs = []
        if c.pid:
            if c.pid not in names:
                try:
                    names[c.pid] = psutil.Process(c.pid).name()
                except psutil.Error:
                    names[c.pid] = "?"
            procs.append(ProcessRef(c.pid, names[c.pid], c.fd))
        sockets.append(
            Socket(
                proto,
                fam,
                state,
                laddr,
                lport,
                raddr,
                rport,
                None,
                None,
                0,
                None,
                None,
                decoder.service(proto, lport, rport),
                exposure,
                None,
                None,
                procs,
            )
        )
    return Snapshot(sockets=list(_filter_owners(sockets, query)), source="psutil")
