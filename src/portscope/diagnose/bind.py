"""`free PORT` and `diagnose --bind ADDR:PORT`: can a service bind there now, and if not, who is in the way.

The answer comes from the kernel, not from reading the socket table: a throwaway socket is bound and
closed at once, set up as a server would set it up. Only then is the inventory asked who holds the port,
and the holders are filtered with the kernel's own conflict rules (seed 000: "two processes trying to
listen on the same IP/port/protocol combination"; the wildcard and dual-stack cases are where people
get it wrong), so the holder we name is the one that really blocks the bind.

Linux rules applied (net/ipv4/inet_connection_sock.c, udp.c, ipv6_rcv_saddr_equal):

- same family: the same address conflicts, and a wildcard (0.0.0.0, [::]) conflicts with every address
  of its family, in both directions;
- [::] with IPV6_V6ONLY off (dual-stack, the default) also takes every IPv4 address; a v4-mapped address
  (::ffff:a.b.c.d) behaves as that IPv4 address;
- TCP with SO_REUSEADDR on both sides: only a LISTEN socket conflicts (TIME_WAIT and other leftovers do
  not), which is why servers set it and why our test socket does too;
- UDP with SO_REUSEADDR on both sides: no conflict at all (multicast receivers share ports that way), so
  the UDP test socket does not set it: a DNS or syslog server does not either.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from portscope.errors import BadInput, CannotDo
from portscope.i18n import _, ngettext
from portscope.model import Diagnosis, Evidence, ProcessInfo, Socket

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

NEAREST_PER_SIDE = 5
NEAREST_WINDOW = 48  # candidate ports looked at per side: a bounded number of test binds
SHOWN_HOLDERS = 5
CMDLINE_SHOWN = 160
_UNPRIVILEGED_START = "/proc/sys/net/ipv4/ip_unprivileged_port_start"

# Where people move a web server whose port is taken (seed 000: "use different ports (8080/8443) or a
# reverse proxy in front"); tried with the same test bind so we only suggest what is free now.
HTTP_ALTERNATIVES = (8080, 8000, 8888)
HTTPS_ALTERNATIVES = (8443, 4443)
_HTTPS_NAMES = frozenset({"https", "https-alt"})
_HTTP_NAMES = frozenset({"http", "http-alt", "www", "www-http", "http-dev"})


@dataclass(slots=True)
class Target:
    """One address a test socket binds: a specific one, or a wildcard of one family."""

    ip: IPAddress
    scope: str | None = None  # IPv6 zone (fe80::1%eth0)
    v6only: bool | None = None  # requested IPV6_V6ONLY; None: the host's default (net.ipv6.bindv6only)
    effective_v6only: bool | None = None  # what the socket really had, once one was made

    @property
    def family(self) -> int:
        return socket.AF_INET if self.ip.version == 4 else socket.AF_INET6

    @property
    def text(self) -> str:
        return str(self.ip) + (f"%{self.scope}" if self.scope else "")

    def endpoint(self, port: int) -> str:
        return _endpoint(self.text, port, self.ip.version == 6)


@dataclass(slots=True)
class Holder:
    """A process (or an ownerless socket when pid is None) whose sockets block the bind."""

    sockets: list[Socket]
    info: ProcessInfo | None = None
    pids: list[int] = field(default_factory=list)  # every process sharing those sockets (forked workers)


# --- input ---------------------------------------------------------------------------------------------


def parse_address(text: str | None) -> Target | None:
    """An address of this host as the user typed it; None means the wildcard of every family.

    Only literals: a name would need a resolver, and a name with several addresses has no single
    answer to "can I bind here"; localhost is the one name everyone types, and means 127.0.0.1.
    """
    if text is None:
        return None
    raw = text.strip()
    if raw in ("", "*"):
        return None
    if raw.lower() == "localhost":
        raw = "127.0.0.1"
    if raw.startswith("[") and raw.endswith("]"):
        raw = raw[1:-1]
    scope = None
    if "%" in raw:
        raw, scope = raw.split("%", 1)
    try:
        ip = ipaddress.ip_address(raw)
    except ValueError:
        raise BadInput(
            _(
                "{text!r} is not an IP address: give one of this host's addresses (127.0.0.1, ::1, 0.0.0.0, ::)"
            ).format(text=text)
        ) from None
    if scope is not None and (ip.version == 4 or not scope):
        raise BadInput(_("{text!r}: a zone (%eth0) only goes with an IPv6 address").format(text=text))
    return Target(ip, scope)


def check_port(port: int) -> None:
    if not 1 <= port <= 65535:
        raise BadInput(
            _("port {port} is out of range: give 1-65535 (0 asks the kernel for any free port)").format(
                port=port
            )
        )


def parse_bind(text: str) -> tuple[str | None, int, str | None]:
    """`diagnose --bind`'s ADDR:PORT[/PROTO]: 8080, :8080, *:8080, 127.0.0.1:8080, [::1]:8080, 53/udp.

    Returns (address or None for the wildcard, port, proto or None when not given).
    """
    spec = text.strip()
    proto = None
    if "/" in spec:
        spec, proto = spec.rsplit("/", 1)
        proto = proto.lower()
        if proto not in ("tcp", "udp"):
            raise BadInput(_("{text!r}: the protocol after / is tcp or udp").format(text=text))
    address: str | None
    if spec.startswith("["):
        close = spec.find("]")
        if close < 0 or spec[close + 1 : close + 2] != ":":
            raise BadInput(_("{text!r}: write an IPv6 address with its port as [::1]:8080").format(text=text))
        address, port_text = spec[1:close], spec[close + 2 :]
    elif spec.count(":") == 1:
        address, port_text = spec.split(":")
    elif ":" in spec:
        raise BadInput(_("{text!r}: write an IPv6 address with its port as [::1]:8080").format(text=text))
    else:
        address, port_text = None, spec
    if not port_text.isdigit() or len(port_text) > 5:
        raise BadInput(
            _("{text!r} has no port: give ADDRESS:PORT, as in 127.0.0.1:8080, [::]:443 or :8080").format(
                text=text
            )
        )
    port = int(port_text)
    check_port(port)
    if address is not None:
        parse_address(address)  # says what is wrong now, not after the bind
        if address in ("", "*"):
            address = None
    return address, port, proto


# --- the kernel's answer ----------------------------------------------------------------------------------


def _endpoint(address: str, port: int, v6: bool) -> str:
    return f"[{address}]:{port}" if v6 else f"{address}:{port}"


def unprivileged_port_start() -> int:
    """Ports below this need root or CAP_NET_BIND_SERVICE (1024 unless the sysctl lowered it)."""
    try:
        with open(_UNPRIVILEGED_START) as fh:
            return int(fh.read().strip())
    except (OSError, ValueError):
        return 1024


def try_bind(target: Target, port: int, proto: str, reuseport: bool = False) -> int:
    """Bind a throwaway socket as a server would and close it at once: 0, or the errno of the failure.

    TCP sets SO_REUSEADDR (every server does, so TIME_WAIT leftovers do not count); UDP does not (see
    the module docstring). A TCP socket that never listens takes no connection and joins no
    SO_REUSEPORT group, so the test cannot disturb the holder.
    """
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    try:
        sock = socket.socket(target.family, kind)
    except OSError as exc:
        return exc.errno or errno.EINVAL
    try:
        if proto == "tcp":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuseport:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if target.family == socket.AF_INET6:
            if target.v6only is not None:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, int(target.v6only))
            target.effective_v6only = bool(sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY))
            sockaddr: tuple[Any, ...] = socket.getaddrinfo(
                target.text, port, socket.AF_INET6, kind, 0, socket.AI_NUMERICHOST
            )[0][4]
        else:
            sockaddr = (str(target.ip), port)
        sock.bind(sockaddr)
        return 0
    except socket.gaierror:
        return errno.EADDRNOTAVAIL  # an unknown zone: no such interface here
    except OSError as exc:
        return exc.errno or errno.EINVAL
    finally:
        sock.close()


def _has_ipv6() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        socket.socket(socket.AF_INET6, socket.SOCK_DGRAM).close()
    except OSError:
        return False
    return os.path.exists("/proc/net/if_inet6") or not os.path.exists("/proc/net")


def targets_for(address: Target | None) -> list[Target]:
    """What "bind on ADDRESS" means: the wildcard is 0.0.0.0 and, where the host has IPv6, [::] on its
    own (v6only): together they are what a dual-stack [::] server needs, each checked and named apart."""
    if address is not None:
        return [address]
    out = [Target(ipaddress.IPv4Address("0.0.0.0"))]
    if _has_ipv6():
        out.append(Target(ipaddress.IPv6Address("::"), v6only=True))
    return out


def _privileged_error(port: int, start: int) -> CannotDo:
    return CannotDo(
        _(
            "binding port {port} needs root or CAP_NET_BIND_SERVICE: ports below {start} are privileged "
            "(net.ipv4.ip_unprivileged_port_start); run the service as root, give it the capability "
            "(systemd AmbientCapabilities=CAP_NET_BIND_SERVICE, or setcap cap_net_bind_service=+ep BINARY), "
            "or use a port from {start} up"
        ).format(port=port, start=start)
    )


# --- the conflict rules -------------------------------------------------------------------------------------


def conflicts(requested: IPAddress, requested_v6only: bool | None, held: Socket) -> bool:
    """Would a socket bound to REQUESTED collide with HELD (same port and protocol) under Linux's rules?

    A dual-stack flag we do not know (None) counts as a possible conflict: better to name a suspect.
    """
    try:
        other = ipaddress.ip_address(held.local_address.split("%", 1)[0])
    except ValueError:
        return False
    if requested.version == 6 and requested.ipv4_mapped is not None:
        return conflicts(requested.ipv4_mapped, False, held)  # a mapped bind is an IPv4 bind
    if other.version == 6 and other.ipv4_mapped is not None:
        other_v4 = other.ipv4_mapped
        if requested.version == 4:
            return requested.is_unspecified or other_v4.is_unspecified or requested == other_v4
        return requested.is_unspecified and requested_v6only is not True
    if requested.version == 4:
        if other.version == 4:
            return requested.is_unspecified or other.is_unspecified or requested == other
        return other.is_unspecified and held.v6only is not True  # [::] dual-stack takes IPv4 too
    if other.version == 4:
        return requested.is_unspecified and requested_v6only is not True
    return requested.is_unspecified or other.is_unspecified or requested == other


def _blocking(sockets: Sequence[Socket], target: Target, proto: str) -> list[Socket]:
    """The sockets on the port that explain a refusal, listeners first.

    TCP: a listener is what blocks a bind with SO_REUSEADDR; without one, a connection bound to the
    port (an old worker's accepted connection, an outgoing one from the ephemeral range) is the suspect.
    TIME_WAIT never is. UDP: every socket on the port.
    """
    hits = [s for s in sockets if s.proto == proto and conflicts(target.ip, target.effective_v6only, s)]
    if proto == "udp":
        return hits
    listening = [s for s in hits if s.state == "LISTEN"]
    return listening or [s for s in hits if s.state != "TIME_WAIT"]


# --- the inventory --------------------------------------------------------------------------------------------


def _ppid(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            data = fh.read(4096)
        return int(data[data.rfind(b")") + 2 :].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def _group_holders(blocking: Sequence[Socket], procs: Sequence[ProcessInfo]) -> list[Holder]:
    """One Holder per process tree: nginx's master and workers share one listener and are one answer,
    named by the process whose parent is not among them (the one to stop)."""
    by_pid = {p.pid: p for p in procs}
    groups: dict[tuple[int, ...], Holder] = {}
    for s in blocking:
        pids = tuple(sorted({ref.pid for ref in s.processes}))
        holder = groups.get(pids)
        if holder is None:
            holder = groups[pids] = Holder(sockets=[], pids=list(pids))
            if pids:
                roots = [pid for pid in pids if _ppid(pid) not in pids]
                main = (roots or list(pids))[0]
                holder.info = by_pid.get(main)
        if s not in holder.sockets:
            holder.sockets.append(s)
    return sorted(groups.values(), key=lambda h: (h.info is None, h.pids))


def _snapshot(port: int, proto: str) -> tuple[list[ProcessInfo], list[Socket], str | None, bool]:
    """Every socket with local port PORT (any state), their processes, and what we could not see."""
    from portscope.inventory.holders import holders
    from portscope.registry import parse_ports

    try:
        procs, snap = holders(parse_ports(f"{port}/{proto}"), (proto,))
    except (OSError, CannotDo):
        return [], [], _("the socket table could not be read, so the holder cannot be named"), False
    return procs, snap.sockets, snap.hidden_note(), bool(snap.denied)


# --- nearest free ports --------------------------------------------------------------------------------------


def _free_everywhere(targets: Sequence[Target], port: int, proto: str) -> bool:
    return all(try_bind(Target(t.ip, t.scope, t.v6only), port, proto) == 0 for t in targets)


def nearest_free(
    targets: Sequence[Target], port: int, proto: str, per_side: int = NEAREST_PER_SIDE
) -> list[tuple[int, str | None]]:
    """Ports near PORT that bind now on the same address(es), with their registry name if any.

    Per side, the free ports among the next NEAREST_WINDOW candidates, unnamed ones first (a port
    nobody registered is less likely to be wanted by another program later), then by distance. The
    ephemeral range is jumped over (a server there collides with outgoing connections now and then)
    unless nothing is free outside it, and privileged ports are not offered for an unprivileged one.
    """
    from portscope.registry import ephemeral_range, service_name

    eph = ephemeral_range()
    low_limit = unprivileged_port_start() if port >= unprivileged_port_start() else 1
    chosen: list[tuple[int, str | None]] = []

    def side(step: int, skip_ephemeral: bool) -> list[tuple[int, str | None]]:
        found: list[tuple[int, int, str | None]] = []
        cand, looked = port + step, 0
        while low_limit <= cand <= 65535 and looked < NEAREST_WINDOW and len(found) < per_side * 3:
            if skip_ephemeral and eph.contains(cand):
                cand = eph.low - 1 if step < 0 else eph.high + 1
                continue
            looked += 1
            if _free_everywhere(targets, cand, proto):
                found.append((cand, abs(cand - port), service_name(cand, proto)))
            cand += step
        found.sort(key=lambda f: (f[2] is not None, f[1]))
        return [(p, name) for p, _d, name in found[:per_side]]

    for skip in (True, False):
        chosen = side(-1, skip) + side(1, skip)
        if chosen:
            break
    return sorted(chosen)


def _alternatives(port: int, proto: str) -> tuple[int, ...]:
    """8080/8443 for a web server (the seeds' advice), or nothing for other services."""
    from portscope.registry import service_name

    if proto != "tcp":
        return ()
    name = service_name(port, proto) or ""
    if port in (443, 8443) or name in _HTTPS_NAMES:
        return tuple(p for p in HTTPS_ALTERNATIVES if p != port)
    if port in (80, 8080) or name in _HTTP_NAMES:
        return tuple(p for p in HTTP_ALTERNATIVES if p != port)
    return ()


# --- sentences --------------------------------------------------------------------------------------------------


def _sock_text(s: Socket) -> str:
    local = _endpoint(
        s.local_address + (f"%{s.interface}" if s.interface else ""), s.local_port, s.family == "ipv6"
    )
    text = f"{s.proto} {s.state} {local}"
    if s.state not in ("LISTEN", "UNCONN") and s.remote_port:
        text += " -> " + _endpoint(s.remote_address, s.remote_port, s.family == "ipv6")
    if s.family == "ipv6" and s.local_address == "::" and s.v6only is False:
        # Translators: {socket} is as ss shows it (tcp LISTEN [::]:8080), not to translate.
        text = _("{socket} (dual-stack: IPv4 too)").format(socket=text)
    return text


def _short(cmdline: str | None) -> str | None:
    if cmdline is None:
        return None
    return cmdline if len(cmdline) <= CMDLINE_SHOWN else cmdline[:CMDLINE_SHOWN] + "…"


def _who(h: Holder) -> str:
    if h.info is None:
        return _("a socket with no visible process")
    return _("{name} (pid {pid})").format(name=h.info.name, pid=h.info.pid)


def _name(h: Holder) -> str:
    """The holder as the subject of an instruction ("bind X to ...")."""
    return _("the holder") if h.info is None else _who(h)


def _holder_evidence(h: Holder, port: int, denied: bool) -> Evidence:
    socks = ", ".join(_sock_text(s) for s in h.sockets[:4])
    if len(h.sockets) > 4:
        extra = len(h.sockets) - 4
        # Translators: {sockets} is a list of sockets as ss shows them; {n} more sockets are not shown.
        socks = ngettext("{sockets} and {n} more", "{sockets} and {n} more", extra).format(
            sockets=socks, n=extra
        )
    data: dict[str, Any] = {"sockets": [s.to_dict() for s in h.sockets], "pids": list(h.pids)}
    if h.info is None:
        uid = h.sockets[0].uid
        user = h.sockets[0].user or (str(uid) if uid is not None else "?")
        if denied:
            why = _("its owner is hidden: run as root to see other users' processes")
        elif any(s.state == "TIME_WAIT" or not s.inode for s in h.sockets):
            why = _("the kernel keeps it after its process closed it")
        else:
            why = _("no process here holds it: another PID namespace (a container) or the kernel")
        text = _("{sockets} (socket user {user}) blocks the port; {why}").format(
            sockets=socks, user=user, why=why
        )
        data.update({"pid": None, "uid": uid, "user": user})
        return Evidence("holder", text, False, data)
    p = h.info
    parts = [_("user {user}").format(user=p.user or (str(p.uid) if p.uid is not None else "?"))]
    if p.unit:
        parts.append(_("unit {unit}").format(unit=p.unit))
    if p.container:
        parts.append(_("container {container}").format(container=p.container))
    others = [pid for pid in h.pids if pid != p.pid]
    if others:
        parts.append(_("shared with pid {pids}").format(pids=", ".join(str(x) for x in others[:8])))
    if p.cmdline:
        text = _("{name} (pid {pid}, {details}) holds {sockets}; command: {cmdline}").format(
            name=p.name, pid=p.pid, details=", ".join(parts), sockets=socks, cmdline=_short(p.cmdline)
        )
    else:
        text = _("{name} (pid {pid}, {details}) holds {sockets}").format(
            name=p.name, pid=p.pid, details=", ".join(parts), sockets=socks
        )
    data.update(
        {
            "pid": p.pid,
            "name": p.name,
            "uid": p.uid,
            "user": p.user,
            "cmdline": p.cmdline,
            "exe": p.exe,
            "unit": p.unit,
            "container": p.container,
        }
    )
    return Evidence("holder", text, False, data)


def _stop_step(h: Holder, port: int) -> str | None:
    """The exact command that frees the port from this holder, the gentlest that works."""
    p = h.info
    if p is None:
        return None
    if p.pid == 1 or p.name == "systemd":
        return _(
            "a systemd socket unit holds port {port} for a service it starts on demand: find it with "
            "systemctl list-sockets | grep ':{port}' and stop it with systemctl stop NAME.socket "
            "(systemctl disable NAME.socket keeps it from coming back)"
        ).format(port=port)
    if p.name == "docker-proxy":
        return _(
            "a container publishes port {port} (docker-proxy): find it with docker ps --filter publish={port}, "
            "then stop it or publish it on another host port (-p OTHER:{port})"
        ).format(port=port)
    if p.container:
        runtime, _sep, cid = p.container.partition(":")
        if runtime in ("docker", "podman"):
            return _(
                "{name} runs in container {cid}: stop it with {runtime} stop {cid}, or change the port "
                "it publishes or listens on"
            ).format(name=p.name, cid=cid, runtime=runtime)
        return _(
            "{name} runs in a {runtime} container ({cid}): stop or reconfigure it through {runtime}"
        ).format(name=p.name, runtime=runtime, cid=cid)
    if p.unit and p.unit.endswith(".service") and not p.unit.startswith("user@"):
        return _(
            "stop the holder: systemctl stop {unit} (and systemctl disable {unit} so it does not take the "
            "port again at boot), or change the port or address it listens on in its configuration and "
            "systemctl restart {unit}"
        ).format(unit=p.unit)
    mine = p.uid is None or p.uid == os.geteuid() or os.geteuid() == 0
    return _(
        "stop the holder if nothing needs it: {sudo}kill {pid} ({name}; SIGTERM lets it close cleanly, "
        "kill -9 only if it ignores that), or change the port or address it listens on in its configuration"
    ).format(sudo="" if mine else "sudo ", pid=p.pid, name=p.name)


def _wildcard_notes(
    failed: Sequence[Target], port: int, holders: Sequence[Holder]
) -> tuple[list[Evidence], list[str]]:
    """The wildcard and dual-stack rules, said about the sockets actually involved (each socket only
    against the requested address it conflicts with)."""
    evidence: list[Evidence] = []
    steps: list[str] = []
    all_taken: list[tuple[Holder, str]] = []
    for target in failed:
        asked = target.endpoint(port)
        taken: list[tuple[Holder, str]] = []  # specific addresses held, when the wildcard was asked for
        for h in holders[:SHOWN_HOLDERS]:
            who, name = _who(h), _name(h)
            for s in h.sockets:
                if not conflicts(target.ip, target.effective_v6only, s):
                    continue
                held = _endpoint(s.local_address, s.local_port, s.family == "ipv6")
                held_wild = s.local_address in ("0.0.0.0", "::")
                if (
                    s.family == "ipv6"
                    and s.local_address == "::"
                    and s.v6only is not True
                    and target.ip.version == 4
                ):
                    text = _(
                        "{who} listens on {held} dual-stack (IPV6_V6ONLY off): an IPv6 wildcard that also takes "
                        "every IPv4 address, {asked} included"
                    ).format(who=who, held=held, asked=asked)
                    rule = "dual_stack_covers_ipv4"
                    step = _(
                        "make {who} IPv6-only (IPV6_V6ONLY=1, e.g. nginx listen [::]:{port} ipv6only=on) or bind "
                        "it to its specific addresses: {asked} becomes free for your service"
                    ).format(who=name, port=port, asked=asked)
                elif held_wild and not target.ip.is_unspecified:
                    text = _(
                        "{who} listens on {held}, the wildcard: it holds port {port} on every address of that "
                        "family, {asked} included, and Linux refuses a second socket on any of them"
                    ).format(who=who, held=held, port=port, asked=asked)
                    rule = "wildcard_covers_all"
                    step = _(
                        "bind {who} to the specific address it serves instead of {held} (e.g. its public address "
                        "only): the other addresses, {asked} among them, become free for port {port}"
                    ).format(who=name, held=held, asked=asked, port=port)
                elif target.ip.is_unspecified and not held_wild:
                    taken.append((h, held))
                    continue
                else:
                    continue
                evidence.append(
                    Evidence("wildcard", text, False, {"rule": rule, "held": [held], "requested": asked})
                )
                steps.append(step)
        if taken:
            held_text = "; ".join(
                _("{who} on {held}").format(who=_who(h), held=held) for h, held in taken[:SHOWN_HOLDERS]
            )
            evidence.append(
                Evidence(
                    "wildcard",
                    _(
                        "you asked for {asked}, every address: that needs port {port} free on all of them, and it "
                        "is taken on some: {held}"
                    ).format(asked=asked, port=port, held=held_text),
                    False,
                    {"rule": "wildcard_needs_all", "held": [held for _h, held in taken], "requested": asked},
                )
            )
            all_taken += taken
    if all_taken:
        names = ", ".join(dict.fromkeys(_name(h) for h, _held in all_taken))
        steps.append(
            _(
                "bind your service to specific addresses instead of the wildcard, leaving out the ones taken "
                "({held}), or move {who} off port {port}"
            ).format(held=", ".join(dict.fromkeys(held for _h, held in all_taken)), who=names, port=port)
        )
    return evidence, list(dict.fromkeys(steps))


def _reuse_line(proto: str) -> str:
    if proto == "udp":
        return _(
            "SO_REUSEADDR does not make this safe for UDP: if both sockets set it, both bind and datagrams are "
            "split between them unpredictably; SO_REUSEPORT (same user, all sockets set it) load-balances "
            "instances of one service, it does not let two different services share a port"
        )
    return _(
        "SO_REUSEADDR will not help: on Linux it lets a server rebind over connections left in TIME_WAIT, "
        "never over a live listener; SO_REUSEPORT lets several sockets of the same user that all set it "
        "share the port, with the kernel balancing connections between them: for instances of one service, "
        "not for two different services"
    )


# --- the diagnosis ------------------------------------------------------------------------------------------------


def check_bind(address: str | None, port: int, proto: str = "tcp") -> Diagnosis:
    """Can a service bind ADDRESS:PORT/PROTO now? ok, or port_in_use with the holder and the way out.

    Raises BadInput (bad port, not an address of this host) and CannotDo (a privileged port for an
    unprivileged user, IPv6 unavailable, a refusal by the security policy).
    """
    check_port(port)
    if proto not in ("tcp", "udp"):
        raise BadInput(_("protocol {proto!r}: give tcp or udp").format(proto=proto))
    target = parse_address(address)
    targets = targets_for(target)
    diag = Diagnosis(
        verdict="ok",
        summary="",
        address=None if target is None else target.text,
        port=port,
        proto=proto,
    )
    where = _("{port}/{proto}").format(port=port, proto=proto)

    failed: list[Target] = []
    for t in targets:
        err = try_bind(t, port, proto)
        ep = t.endpoint(port)
        data: dict[str, Any] = {
            "address": t.text,
            "port": port,
            "proto": proto,
            "family": f"ipv{t.ip.version}",
        }
        if t.family == socket.AF_INET6:
            data["v6only"] = t.effective_v6only
        if err == 0:
            if not (t.family == socket.AF_INET6 and t.ip.is_unspecified):
                text = _("{endpoint}/{proto} binds now (a test socket was bound and closed at once)")
            elif t.effective_v6only:
                text = _(
                    "{endpoint}/{proto} (IPv6 only) binds now (a test socket was bound and closed at once)"
                )
            else:
                text = _(
                    "{endpoint}/{proto} (dual-stack: IPV6_V6ONLY off, the default) binds now (a test socket was "
                    "bound and closed at once)"
                )
            text = text.format(endpoint=ep, proto=proto)
            diag.evidence.append(Evidence("bind", text, True, data | {"errno": None}))
            continue
        if err == errno.EADDRINUSE:
            data |= {"errno": "EADDRINUSE", "error": os.strerror(err)}
            diag.evidence.append(
                Evidence(
                    "bind",
                    _("binding {endpoint}/{proto} fails: address already in use (EADDRINUSE)").format(
                        endpoint=ep, proto=proto
                    ),
                    False,
                    data,
                )
            )
            failed.append(t)
            continue
        if err in (errno.EACCES, errno.EPERM):
            start = unprivileged_port_start()
            if port < start and err == errno.EACCES:
                raise _privileged_error(port, start)
            raise CannotDo(
                _(
                    "binding {endpoint}/{proto} is refused: {error} (a security policy: SELinux, AppArmor, seccomp?)"
                ).format(endpoint=ep, proto=proto, error=os.strerror(err))
            )
        if target is None and t.family == socket.AF_INET6:
            diag.evidence.append(
                Evidence(
                    "bind",
                    _("IPv6 could not be tried: {error}").format(error=os.strerror(err)),
                    None,
                    data | {"errno": errno.errorcode.get(err, str(err)), "error": os.strerror(err)},
                )
            )
            continue
        if err == errno.EADDRNOTAVAIL:
            raise BadInput(
                _(
                    "{address} is not an address of this host: give one it has (ip -br addr lists them), or omit --address"
                ).format(address=t.text)
            )
        if err == errno.EAFNOSUPPORT:
            raise CannotDo(
                _("IPv6 is not available on this host, so {endpoint} cannot be bound").format(endpoint=ep)
            )
        raise CannotDo(
            _("binding {endpoint}/{proto} fails: {error}").format(
                endpoint=ep, proto=proto, error=os.strerror(err)
            )
        )

    procs, sockets, hidden, denied = _snapshot(port, proto)
    if proto == "tcp":
        waiting = sum(1 for s in sockets if s.state == "TIME_WAIT")
        if waiting:
            text = ngettext(
                "the test socket set SO_REUSEADDR, as servers do, so connections lingering in TIME_WAIT on the "
                "port do not count as conflicts ({n} now; a server that does not set SO_REUSEADDR would fail "
                "until it expires)",
                "the test socket set SO_REUSEADDR, as servers do, so connections lingering in TIME_WAIT on the "
                "port do not count as conflicts ({n} now; a server that does not set SO_REUSEADDR would fail "
                "until they expire)",
                waiting,
            ).format(n=waiting)
        else:
            text = _(
                "the test socket set SO_REUSEADDR, as servers do, so connections lingering in TIME_WAIT on the "
                "port do not count as conflicts"
            )
        diag.evidence.append(Evidence("reuseaddr", text, None, {"time_wait": waiting}))
    else:
        diag.evidence.append(
            Evidence(
                "reuseaddr",
                _(
                    "the UDP test socket did not set SO_REUSEADDR, as DNS and syslog servers do not: "
                    "with it on both sides Linux lets two UDP sockets share a port"
                ),
                None,
            )
        )

    if not failed:
        diag.summary = _("port {where} is free on {address}: a service can bind there now").format(
            where=where, address=_scope_text(target)
        )
        _note_neighbours(diag, target, sockets, procs, port, proto)
        if hidden:
            diag.evidence.append(Evidence("owners", hidden, None))
        return diag

    return _in_use(diag, target, targets, failed, procs, sockets, hidden, denied, port, proto)


def _scope_text(target: Target | None) -> str:
    if target is None:
        return _("every address (0.0.0.0 and [::])")
    return target.endpoint(0).rsplit(":", 1)[0]


def _note_neighbours(
    diag: Diagnosis,
    target: Target | None,
    sockets: Sequence[Socket],
    procs: Sequence[ProcessInfo],
    port: int,
    proto: str,
) -> None:
    """Free here, but taken on another address: say so, since a wildcard bind would now fail."""
    if target is None or target.ip.is_unspecified:
        return
    others = [s for s in sockets if s.proto == proto and s.state in ("LISTEN", "UNCONN")]
    if not others:
        return
    holders = _group_holders(others, procs)
    held = ", ".join(
        _("{who} on {endpoint}").format(
            who=_who(h), endpoint=_endpoint(s.local_address, port, s.family == "ipv6")
        )
        for h in holders[:SHOWN_HOLDERS]
        for s in h.sockets[:2]
    )
    diag.evidence.append(
        Evidence(
            "neighbours",
            _(
                "port {port}/{proto} is held on other addresses ({held}): no conflict with {asked}, two specific "
                "addresses never collide, but a wildcard bind (0.0.0.0 or [::]) on this port would fail"
            ).format(port=port, proto=proto, held=held, asked=target.text),
            None,
            {"sockets": [s.to_dict() for s in others[:SHOWN_HOLDERS]]},
        )
    )


def _in_use(
    diag: Diagnosis,
    target: Target | None,
    targets: Sequence[Target],
    failed: Sequence[Target],
    procs: Sequence[ProcessInfo],
    sockets: Sequence[Socket],
    hidden: str | None,
    denied: bool,
    port: int,
    proto: str,
) -> Diagnosis:
    from portscope.registry import ephemeral_range

    diag.verdict = "port_in_use"
    blocking: list[Socket] = []
    for t in failed:
        blocking += [s for s in _blocking(sockets, t, proto) if s not in blocking]
    holders = _group_holders(blocking, procs)
    for h in holders[:SHOWN_HOLDERS]:
        diag.evidence.append(_holder_evidence(h, port, denied))
    if len(holders) > SHOWN_HOLDERS:
        diag.evidence.append(
            Evidence(
                "holder",
                ngettext(
                    "{n} more holder not shown", "{n} more holders not shown", len(holders) - SHOWN_HOLDERS
                ).format(n=len(holders) - SHOWN_HOLDERS),
                False,
            )
        )
    if not holders:
        diag.evidence.append(
            Evidence(
                "holder",
                _(
                    "no socket in the table explains it: a socket bound but not listening (ss does not show those), "
                    "one in another network namespace, or a holder that just went away"
                ),
                False,
            )
        )
    if hidden:
        diag.evidence.append(Evidence("owners", hidden, None))

    asked = _("{port}/{proto} on {addresses}").format(
        port=port, proto=proto, addresses=_and_list([t.endpoint(0).rsplit(":", 1)[0] for t in failed])
    )
    if holders:
        first = holders[0]
        held = _sock_text(first.sockets[0])
        if len(holders) > 1:
            # Translators: {n} more processes or sockets hold the port too.
            diag.summary = ngettext(
                "port {asked} is in use: {who} holds {held} (and {n} more)",
                "port {asked} is in use: {who} holds {held} (and {n} more)",
                len(holders) - 1,
            ).format(asked=asked, who=_who(first), held=held, n=len(holders) - 1)
        else:
            diag.summary = _("port {asked} is in use: {who} holds {held}").format(
                asked=asked, who=_who(first), held=held
            )
    else:
        diag.summary = _("port {asked} is in use, by a socket this host's table does not show").format(
            asked=asked
        )

    if proto == "tcp":
        _reuseport_evidence(diag, failed, port)

    steps: list[str] = []
    for h in holders[:3]:
        step = _stop_step(h, port)
        if step:
            steps.append(step)
    if not holders:
        steps.append(
            _(
                "look again with ss -lntupa 'sport = :{port}' (as root), and inside containers' namespaces"
            ).format(port=port)
        )
    notes, wild_steps = _wildcard_notes(failed, port, holders)
    diag.evidence += notes
    steps += wild_steps

    nearest = nearest_free(targets, port, proto)
    closest = sorted(nearest, key=lambda n: abs(n[0] - port))
    if nearest:
        diag.evidence.append(
            Evidence(
                "nearest_free",
                _("nearest ports free now on {address}: {ports}").format(
                    address=_scope_text(target), ports=_port_list(nearest)
                ),
                None,
                {"ports": [{"port": p, "service": name} for p, name in nearest]},
            )
        )
    alternatives = [(p, _free_everywhere(targets, p, proto)) for p in _alternatives(port, proto)]
    free_alts = [p for p, ok in alternatives if ok]
    if alternatives:
        states = ", ".join(
            _("{port} (free now)").format(port=p) if ok else _("{port} (in use too)").format(port=p)
            for p, ok in alternatives
        )
        steps.append(
            _(
                "move one of the two web servers to another port: {states}; clients then use http(s)://HOST:PORT"
            ).format(states=states)
        )
    elif nearest:
        steps.append(
            _("move one of the two services to another port, free now: {ports}").format(
                ports=_port_list(closest[:4])
            )
        )
    if proto == "tcp":
        steps.append(
            _(
                "or put a reverse proxy in front: one server (nginx, HAProxy, Caddy) listens on {port} and forwards "
                "to each service on its own loopback port (nginx: proxy_pass http://127.0.0.1:{other}; HAProxy or "
                "nginx stream for protocols other than HTTP)"
            ).format(port=port, other=(free_alts or [p for p, _n in closest] or [8080])[0])
        )
    eph = ephemeral_range()
    if eph.contains(port):
        steps.append(
            _(
                "port {port} lies in the ephemeral range {low}-{high} ({source}), where outgoing connections take "
                "their local ports: pick a server port outside it, or reserve it with sysctl -w "
                "net.ipv4.ip_local_reserved_ports={port}"
            ).format(port=port, low=eph.low, high=eph.high, source=eph.source)
        )
    steps.append(_reuse_line(proto))
    diag.next_steps = list(dict.fromkeys(steps))
    return diag


def _and_list(items: Sequence[str]) -> str:
    """A, "A and B", "A, B and C": the pattern comes from the catalog, so each language joins with its word."""
    if len(items) < 2:
        return "".join(items)
    # Translators: the end of a list of addresses, as in "0.0.0.0, 127.0.0.1 and [::]".
    return _("{items} and {last}").format(items=", ".join(items[:-1]), last=items[-1])


def _port_list(ports: Sequence[tuple[int, str | None]]) -> str:
    return ", ".join(
        str(p) if name is None else _("{port} ({name})").format(port=p, name=name) for p, name in ports
    )


def _reuseport_evidence(diag: Diagnosis, failed: Sequence[Target], port: int) -> None:
    """Does the holder share its port through SO_REUSEPORT? The table cannot say, the kernel can: a
    second bind with the option succeeds only when every holder set it and runs as our user."""
    shared = [
        t for t in failed if try_bind(Target(t.ip, t.scope, t.v6only), port, "tcp", reuseport=True) == 0
    ]
    if shared:
        diag.evidence.append(
            Evidence(
                "reuseport",
                _(
                    "the holder set SO_REUSEPORT and runs as this user: another instance of the same service "
                    "could share {endpoint} by setting it too (the kernel balances connections between them)"
                ).format(endpoint=shared[0].endpoint(port)),
                None,
                {"reuseport": True},
            )
        )
    else:
        diag.evidence.append(
            Evidence(
                "reuseport",
                _(
                    "a test bind with SO_REUSEPORT fails too: the holder did not set it, or runs as another user, "
                    "so the port cannot be shared"
                ),
                None,
                {"reuseport": False},
            )
        )
