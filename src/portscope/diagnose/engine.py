"""`diagnose HOST PORT`: the seeds' checklist for "it doesn't connect", run in order, stopping at the cause.

1. Right name and address?            resolve                         -> dns_failure
2. Is it listening, on the right IP?  this host's sockets (local only) -> loopback_only, service_on_other_port
   Would this host's firewall let it in? (local only, when the ruleset is readable)
3. Does the path allow it?            connect / UDP request           -> refused, filtered, unreachable
   (DNS: UDP and TCP apart)                                           -> dns_tcp_blocked
4. Is the protocol right?             probe                            -> wrong_protocol
5. Does it fail after connecting?     TLS: expiry, name, trust, handshake -> tls_*
Otherwise ok. Each step adds evidence; the first step that explains the failure gives the verdict and
the next steps (the seeds' commands and configuration changes).

Why local knowledge matters: from outside, "refused" is all anyone sees; on the server itself the
inventory says whether the service listens on 127.0.0.1 only, or on 2222 instead of 22, which is the
answer the person asking needs.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from dataclasses import dataclass

from portscope.i18n import _, localize, ngettext
from portscope.model import CheckResult, Diagnosis, Evidence, ProbeResult, Socket
from portscope.registry import lookup_name, service_name

# Daemon process names that provide a service, for "is the expected service listening elsewhere?"
DAEMONS: dict[str, tuple[str, ...]] = {
    "ssh": ("sshd", "dropbear"),
    "http": ("nginx", "apache2", "httpd", "caddy", "lighttpd", "haproxy", "traefik", "envoy"),
    "https": ("nginx", "apache2", "httpd", "caddy", "lighttpd", "haproxy", "traefik", "envoy"),
    "postgresql": ("postgres", "postmaster"),
    "mysql": ("mysqld", "mariadbd"),
    "redis": ("redis-server", "valkey-server"),
    "dns": ("dnsmasq", "named", "unbound", "systemd-resolve", "pdns_server", "coredns"),
    "smtp": ("master", "smtpd", "exim4", "exim", "sendmail", "postfix"),
    "imap": ("dovecot", "imap-login"),
    "pop3": ("dovecot", "pop3-login"),
    "ftp": ("vsftpd", "proftpd", "pure-ftpd"),
    "mongodb": ("mongod",),
    "memcached": ("memcached",),
}
# Where people move a service when its port is taken or hidden: tried after a refusal (from outside:
# these ports; on this host: the ports it listens on, these first).
ALTERNATE_PORTS: dict[str, tuple[int, ...]] = {
    "ssh": (2222, 22222, 2022),
    "http": (8080, 8000, 8008, 8888),
    "https": (8443, 4443),
    "postgresql": (5433, 5434),
    "mysql": (3307,),
    "redis": (6380,),
    "smtp": (2525, 587),
}

# On this host, after a refusal: how many of its other listeners to probe for the expected service,
# and how long each probe may take (a local answer comes in milliseconds; silent listeners cost this).
LOCAL_CANDIDATES = 24
LOCAL_PROBE_TIME = 2.0


@dataclass(slots=True)
class Request:
    host: str
    port: int
    proto: str = "tcp"
    expect: str | None = None
    sni: str | None = None
    ca_file: str | None = None
    timeout: float = 10.0  # the whole diagnosis
    local: bool | None = None  # None: decide from the address
    family: str | None = None


class _Clock:
    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def left(self, cap: float, floor: float = 0.2) -> float:
        return max(floor, min(cap, self.end - time.monotonic()))


def diagnose(req: Request) -> Diagnosis:
    from portscope.net import targets

    clock = _Clock(req.timeout)
    diag = Diagnosis(verdict="ok", summary="", host=req.host, port=req.port, proto=req.proto)
    expected = req.expect or _registry_expectation(req.port, req.proto)
    where = f"{req.port}/{req.proto}"

    # 1. name and address
    found = targets.expand([req.host], req.family)
    usable = [t for t in found if t.address is not None]
    if not usable:
        error = found[0].error if found else None
        diag.evidence.append(
            Evidence(
                "resolve", _("{host} does not resolve: {error}").format(host=req.host, error=error), False
            )
        )
        return _verdict(
            diag,
            "dns_failure",
            _("the name {host} does not resolve, so there is nothing to connect to").format(host=req.host),
            [
                _("check the name for typos, and that it exists: getent hosts {host}; dig {host}").format(
                    host=req.host
                ),
                _("check the resolvers this host uses: /etc/resolv.conf, resolvectl status"),
            ],
        )
    address = usable[0].address
    assert address is not None
    diag.address = address
    if address != req.host:
        others = ", ".join(t.address for t in usable[1:4] if t.address)
        if others:
            text = _("{host} resolves to {address} (and to {others})").format(
                host=req.host, address=address, others=others
            )
        else:
            text = _("{host} resolves to {address}").format(host=req.host, address=address)
        diag.evidence.append(Evidence("resolve", text, True, {"addresses": [t.address for t in usable]}))

    # 2. local knowledge
    local = req.local if req.local is not None else is_local(address)
    listening: list[Socket] = []
    if local:
        listening = _listeners(req.proto)
        early = _local_checks(diag, req, address, expected, listening)
        if early is not None:
            return early

    # 3. the path
    reach = _reach(address, req, clock)
    diag.evidence.append(_reach_evidence(reach))
    dns_port = (expected or "") in ("dns", "domain") or req.port == 53
    if dns_port and req.proto == "tcp" and reach.status == "filtered":
        udp = _dns_udp(address, req, clock)
        if udp is not None:
            diag.evidence.append(
                Evidence(
                    "dns_udp",
                    _("a DNS query over UDP to {address}:{port} was answered").format(
                        address=address, port=req.port
                    ),
                    True,
                )
            )
            return _dns_tcp_blocked(diag, address, req.port)
    if reach.status == "unreachable":
        return _verdict(
            diag,
            "unreachable",
            _("{address} cannot be reached: {reason}").format(
                address=address, reason=reach.error or reach.reason
            ),
            [
                _("check the route: ip route get {address}").format(address=address),
                _("check the address is the right one (a typo, an old DNS record, a VPN that is down)"),
                _("test the path: ping {address}; traceroute {address}").format(address=address),
            ],
        )
    if reach.status == "closed":
        listens_elsewhere = any(
            e.check == "listening" and e.passed is False and e.data.get("sockets") for e in diag.evidence
        )
        extra = (
            [
                _(
                    "the service listens on another address of this host (see the evidence): make it listen on "
                    "{address} too, or connect to the address it uses"
                ).format(address=address)
            ]
            if listens_elsewhere
            else []
        )
        if expected and req.proto == "tcp":
            if not local:
                moved = _try_alternates(address, req, expected, clock)
            elif not _listens_here(diag):
                moved = _local_alternates(address, req, expected, clock, listening)
            else:  # it listens on the port and still refuses: the firewall evidence says why
                moved = None
            if moved is not None:
                return _service_elsewhere(diag, expected, req.port, moved, remote=True)
        if req.proto == "udp":
            return _verdict(
                diag,
                "refused",
                _(
                    "{where} on {address} refused the request: the host is reachable and answered ICMP port "
                    "unreachable, so nothing listens there (or a firewall rejects it with that ICMP error)"
                ).format(where=where, address=address),
                [
                    *extra,
                    _(
                        "on the server: portscope ls --udp --port {port} (or ss -lnup | grep ':{port}') to see "
                        "whether the service listens"
                    ).format(port=req.port),
                    _("check the service runs: systemctl status SERVICE; journalctl -u SERVICE"),
                    _(
                        "check the client uses the right port and protocol (the service may listen on TCP only)"
                    ),
                    _("check the service does not listen on 127.0.0.1 only (that refuses remote clients)"),
                ],
            )
        return _verdict(
            diag,
            "refused",
            _(
                "{where} on {address} refused the connection: the host is reachable, but nothing listens there "
                "(or a firewall rejects it with a reset)"
            ).format(where=where, address=address),
            [
                *extra,
                _(
                    "on the server: portscope ls --port {port} (or ss -lntup | grep ':{port}') to see whether the "
                    "service listens"
                ).format(port=req.port),
                _("check the service runs: systemctl status SERVICE; journalctl -u SERVICE"),
                _("check the client uses the right port (the service may listen on another one, e.g. 2222)"),
                _("check the service does not listen on 127.0.0.1 only (that refuses remote clients)"),
            ],
        )
    if reach.status in ("filtered", "open|filtered") and not (
        req.proto == "udp" and reach.status == "open|filtered"
    ):
        steps = [
            _(
                "from this client, test another port of the same host to compare: portscope check {address} 22"
            ).format(address=address),
            _("on the server: portscope ls --port {port} to confirm the service listens").format(
                port=req.port
            ),
            _(
                "check the firewalls on the way: the host's (nft list ruleset; iptables -L -n), the network's "
                "ACLs, cloud security groups"
            ),
            _(
                "on the server, test locally (curl -vk https://127.0.0.1 for a web server): working locally but not "
                "remotely points to a firewall, the bind address or the interface"
            ),
        ]
        if reach.reason == "admin-prohibited":
            summary = _(
                "{where} on {address} is blocked: a firewall answered 'administratively prohibited' "
                "(a REJECT rule)"
            ).format(where=where, address=address)
        else:
            summary = _(
                "{where} on {address} does not answer at all: something on the path drops the packets "
                "(a firewall, an ACL, a security group), or the host is down"
            ).format(where=where, address=address)
        return _verdict(diag, "filtered", summary, steps)

    # 4 and 5. the protocol, TLS
    if dns_port:
        return _dns_both(diag, address, req, clock, reach)
    probe = _probe(reach, req, expected, clock)
    return _judge_probe(diag, probe, expected, req)


# -- local knowledge -------------------------------------------------------------------------------------


def is_local(address: str) -> bool:
    """An address of this host (binding to it works), including loopback."""
    try:
        ip = ipaddress.ip_address(address.split("%")[0])
    except ValueError:
        return False
    if ip.is_loopback:
        return True
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        try:
            s.bind((address, 0))
        except OSError:
            return False
    return True


def _listeners(proto: str) -> list[Socket]:
    from portscope.inventory import snapshot

    return snapshot.take(snapshot.Query(protos=(proto,))).sockets


def _covers(sock: Socket, address: str) -> bool:
    """Would a connection to `address` reach this listener? (its address, or a wildcard of the family)."""
    target = ipaddress.ip_address(address)
    local = sock.local_address
    if local in ("0.0.0.0", "*"):
        return target.version == 4 or local == "*"
    if local == "::":
        return target.version == 6 or sock.v6only is False
    try:
        return ipaddress.ip_address(local.split("%")[0]) == target
    except ValueError:
        return False


def _local_checks(
    diag: Diagnosis, req: Request, address: str, expected: str | None, listening: list[Socket]
) -> Diagnosis | None:
    on_port = [s for s in listening if s.local_port == req.port]
    where = f"{req.port}/{req.proto}"
    data = {"sockets": [s.to_dict() for s in on_port[:8]]}
    if any(_covers(s, address) for s in on_port):
        desc = ", ".join(_socket_words(s) for s in on_port[:4])
        diag.evidence.append(
            Evidence(
                "listening",
                _("on this host, {where} listens on {sockets}").format(where=where, sockets=desc),
                True,
                data,
            )
        )
        _firewall_evidence(diag, req, address)
        return None
    if on_port:
        desc = ", ".join(_socket_words(s) for s in on_port[:4])
        text = _("on this host, {where} listens on {sockets}, not on {address}").format(
            where=where, sockets=desc, address=address
        )
    else:
        text = _("on this host, nothing listens on {where}").format(where=where)
    diag.evidence.append(Evidence("listening", text, False, data))
    if expected:
        other = _expected_elsewhere(listening, expected, req.port, address)
        if other is not None:
            return _service_elsewhere(diag, expected, req.port, other, remote=False)
    if on_port and all(_is_loopback(s.local_address) for s in on_port) and not _is_loopback(address):
        return _loopback_only(diag, req, address, on_port)
    _firewall_evidence(diag, req, address)
    return None


def _expected_elsewhere(listening: list[Socket], expected: str, port: int, address: str) -> Socket | None:
    """A listener of the expected service, on another port of the same address (sshd on 2222 when 22
    was tried): known by its process name, or by the registry's name for its port when the owner is
    hidden from us."""
    names = set(_daemon_names(expected))
    wanted = _canonical(expected)
    for s in listening:
        if s.local_port == port or not _covers(s, address):
            continue
        procs = {p.name for p in s.processes}
        if procs & names or (not procs and _canonical(s.service or "") == wanted):
            return s
    return None


def _firewall_evidence(diag: Diagnosis, req: Request, address: str) -> None:
    from portscope.diagnose import firewall

    answer = firewall.verdict_for(req.proto, req.port, dst=address)
    diag.evidence.append(firewall.evidence(answer))


def _loopback_only(diag: Diagnosis, req: Request, address: str, on_port: list[Socket]) -> Diagnosis:
    sock = on_port[0]
    who = _owner_words(sock)
    return _verdict(
        diag,
        "loopback_only",
        _(
            "{who} listens on {local}:{port} only, so it accepts connections from this host alone, not on "
            "{address}"
        ).format(who=who, local=sock.local_address, port=req.port, address=address),
        [
            _(
                "make the service listen on {address} (or 0.0.0.0 / [::] for every address), with care: then "
                "firewall it. PostgreSQL: listen_addresses in postgresql.conf (and a host line in pg_hba.conf); "
                "MySQL/MariaDB: bind-address; Redis: bind; most daemons: a listen or bind setting"
            ).format(address=address),
            _("restart it and check: portscope ls --port {port}").format(port=req.port),
            _(
                "or reach it through an SSH tunnel and keep it private: ssh -L {port}:127.0.0.1:{port} SERVER"
            ).format(port=req.port),
        ],
    )


def _service_elsewhere(
    diag: Diagnosis, expected: str, port: int, other: Socket | int, remote: bool
) -> Diagnosis:
    if isinstance(other, int):
        other_port, who = other, expected
        diag.evidence.append(
            Evidence(
                "alternate_port",
                _("{service} answers on port {other} of the same host").format(
                    service=expected, other=other_port
                ),
                True,
                {"port": other_port},
            )
        )
    else:
        other_port, who = other.local_port, _owner_words(other)
        diag.evidence.append(
            Evidence(
                "listening",
                _("{who} listens on {local}:{other}").format(
                    who=who, local=other.local_address, other=other_port
                ),
                True,
                {"socket": other.to_dict()},
            )
        )
    commands = {"ssh": "ssh -p {other} USER@HOST", "postgresql": "psql -h HOST -p {other}"}
    client = commands.get(_canonical(expected)) or _("connect to port {other}")
    return _verdict(
        diag,
        "service_on_other_port",
        _("{service} is not on port {port}: it runs on port {other}").format(
            service=expected, port=port, other=other_port
        ),
        [
            _("use port {other}: {client}").format(other=other_port, client=client.format(other=other_port)),
            _(
                "or move the service back to port {port} in its configuration (sshd: Port in /etc/ssh/sshd_config) "
                "and restart it"
            ).format(port=port),
        ],
    )


def _socket_words(s: Socket) -> str:
    addr = f"[{s.local_address}]" if ":" in s.local_address else s.local_address
    owner = ", ".join(sorted({f"{p.name} ({p.pid})" for p in s.processes})) or _("owner not visible")
    return f"{addr}:{s.local_port} ({owner})"


def _owner_words(s: Socket) -> str:
    names = sorted({p.name for p in s.processes})
    return ", ".join(names) if names else _("a process")


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address.split("%")[0]).is_loopback
    except ValueError:
        return False


def _canonical(name: str) -> str:
    found = lookup_name(name) if name else []
    return found[0].name if found else name


def _registry_expectation(port: int, proto: str) -> str | None:
    """The registry's name, where a probe can confirm it (probe does the same: runner.probe_one)."""
    from portscope.probes.runner import expected_probe

    name = service_name(port, proto)
    return name if name and expected_probe(name) else None


def _daemon_names(expected: str) -> tuple[str, ...]:
    canon = _canonical(expected)
    return DAEMONS.get(canon, ()) or DAEMONS.get(expected, ())


# -- the path --------------------------------------------------------------------------------------------


def _reach(address: str, req: Request, clock: _Clock) -> CheckResult:
    from portscope.net.engine import ScanOptions
    from portscope.net.scan import run_scan
    from portscope.net.targets import Target

    target = Target(host=req.host, address=address, port=req.port)
    opts = ScanOptions(timeout=clock.left(3.0), retries=1, concurrency=4)
    (result,) = list(run_scan([target], [req.port], req.proto, opts))
    return result


def _reason_words(reason: str) -> str:
    words = {
        "syn-ack": _("the TCP handshake completed"),
        "conn-refused": _("the host answered with a reset: nothing listens there"),
        "no-response": _("nothing came back, retries included"),
        "host-unreach": _("no route to the host, or no neighbour answered"),
        "net-unreach": _("no route to that network"),
        "admin-prohibited": _("a firewall answered 'administratively prohibited'"),
        "icmp-port-unreach": _("ICMP port unreachable: nothing listens there"),
        "udp-response": _("the service answered our request"),
        "dns-failure": _("the name did not resolve"),
    }
    return words.get(reason, reason)


def _reach_evidence(r: CheckResult) -> Evidence:
    if r.latency_ms is not None:
        text = _("{port}/{proto} on {address}: {status}, {meaning} (in {ms:.1f} ms)").format(
            port=r.port,
            proto=r.proto,
            address=r.address,
            status=r.status,
            meaning=_reason_words(r.reason),
            ms=r.latency_ms,
        )
    else:
        text = _("{port}/{proto} on {address}: {status}, {meaning}").format(
            port=r.port, proto=r.proto, address=r.address, status=r.status, meaning=_reason_words(r.reason)
        )
    return Evidence("reach", text, r.status == "open", {"check": r.to_dict()})


def _try_alternates(address: str, req: Request, expected: str, clock: _Clock) -> int | None:
    """After a refusal seen from outside: is the expected service on one of the ports people move it to?"""
    ports = [p for p in ALTERNATE_PORTS.get(_canonical(expected), ()) if p != req.port]
    return _answers_as_expected(address, req, expected, ports, clock, cap=4.0)


def _listens_here(diag: Diagnosis) -> bool:
    return any(e.check == "listening" and e.passed is True for e in diag.evidence)


def _local_alternates(
    address: str, req: Request, expected: str, clock: _Clock, listening: list[Socket]
) -> int | None:
    """After a refusal on this host: does the expected service answer on another port it listens on?

    The process name (`_expected_elsewhere`) misses a daemon started under another name (a container's
    proxy, a Python or Go server, a renamed binary); what answers does not. Candidates are the listeners
    that a connection to `address` reaches: the usual alternate ports first, then those the registry
    names after the service, then the rest, minus those owned by a known daemon of another service;
    at most LOCAL_CANDIDATES of them, probed at once.
    """
    alternates = ALTERNATE_PORTS.get(_canonical(expected), ())
    wanted = _canonical(expected)
    others = {name for service, names in DAEMONS.items() if _canonical(service) != wanted for name in names}
    mine = set(_daemon_names(expected))
    ports: set[int] = set()
    for s in listening:
        if s.local_port == req.port or not _covers(s, address):
            continue
        procs = {p.name for p in s.processes}
        if procs and procs <= others - mine:
            continue
        ports.add(s.local_port)

    def rank(port: int) -> tuple[int, int]:
        if port in alternates:
            return (0, alternates.index(port))
        if _canonical(service_name(port, req.proto) or "") == wanted:
            return (1, port)
        return (2, port)

    candidates = sorted(ports, key=rank)[:LOCAL_CANDIDATES]
    return _answers_as_expected(address, req, expected, candidates, clock, cap=LOCAL_PROBE_TIME)


def _answers_as_expected(
    address: str, req: Request, expected: str, ports: list[int], clock: _Clock, cap: float
) -> int | None:
    """The first of PORTS (in their order) that is open and whose probe confirms EXPECTED."""
    from portscope.net.engine import ScanOptions
    from portscope.net.scan import run_scan
    from portscope.net.targets import Target

    if not ports or req.proto != "tcp":
        return None
    target = Target(host=req.host, address=address, port=None)
    opts = ScanOptions(timeout=clock.left(1.0), retries=0, concurrency=16)
    found = {r.port: r for r in run_scan([target], ports, "tcp", opts) if r.status == "open"}
    open_ports = [found[p] for p in ports if p in found]
    if not open_ports:
        return None
    return _first_match(open_ports, req, expected, clock, cap)


def _first_match(
    checks: list[CheckResult], req: Request, expected: str, clock: _Clock, cap: float
) -> int | None:
    """Probe CHECKS at once (16 at a time), each within CAP seconds; the port of the first probe to
    confirm EXPECTED, the others cancelled then (a silent listener costs nothing once one answered)."""
    from portscope.probes.base import Settings
    from portscope.probes.runner import probe_one

    async def run() -> int | None:
        gate = asyncio.Semaphore(16)

        async def one(check: CheckResult) -> ProbeResult | None:
            async with gate:
                timeout = clock.left(cap)
                settings = Settings(sni=req.sni, ca_file=req.ca_file, timeout=timeout)
                try:
                    return await asyncio.wait_for(probe_one(check, settings, expected), timeout + 0.5)
                except TimeoutError:
                    return None

        tasks = [asyncio.ensure_future(one(c)) for c in checks]
        try:
            for done in asyncio.as_completed(tasks):
                probe = await done
                if probe is not None and probe.matches:
                    return probe.check.port
            return None
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    return asyncio.run(run())


# -- DNS -------------------------------------------------------------------------------------------------


def _dns_udp(address: str, req: Request, clock: _Clock) -> ProbeResult | None:
    check = CheckResult(req.host, address, req.port, "udp", "open|filtered", "no-response")
    r = _probe(check, req, "dns", clock, cap=2.0)
    return r if r.service == "dns" else None


def _dns_tcp_blocked(diag: Diagnosis, address: str, port: int) -> Diagnosis:
    return _verdict(
        diag,
        "dns_tcp_blocked",
        _(
            "DNS on {address} answers over UDP but TCP/{port} is blocked: small answers work, large ones fail"
        ).format(address=address, port=port),
        [
            _(
                "allow TCP {port} as well as UDP {port} in the firewalls on the way: answers larger than a UDP "
                "packet (DNSSEC, many records), truncated answers (TC bit) and zone transfers need TCP"
            ).format(port=port),
            _("test both: dig +notcp @{address} NAME; dig +tcp @{address} NAME").format(address=address),
        ],
    )


def _dns_both(diag: Diagnosis, address: str, req: Request, clock: _Clock, reach: CheckResult) -> Diagnosis:
    """Port 53 (or --expect dns) answered: ask over UDP and TCP apart, as the seeds' exercise 4 does."""
    tcp = _probe(reach, req, "dns", clock, cap=3.0) if req.proto == "tcp" else None
    udp = _dns_udp(address, req, clock)
    if tcp is not None:
        ok = tcp.service == "dns"
        diag.evidence.append(
            Evidence(
                "dns_tcp", _("a DNS query over TCP: {summary}").format(summary=localize(tcp.summary)), ok
            )
        )
    diag.evidence.append(
        Evidence(
            "dns_udp",
            _("a DNS query over UDP was answered") if udp else _("a DNS query over UDP got no answer"),
            udp is not None,
        )
    )
    if req.proto == "tcp" and udp is not None and (tcp is None or tcp.service != "dns"):
        return _dns_tcp_blocked(diag, address, req.port)
    if udp is None and (tcp is None or tcp.service != "dns"):
        probe = tcp or _probe(reach, req, "dns", clock)
        return _judge_probe(diag, probe, "dns", req)
    if tcp is None:
        return _verdict(diag, "ok", _("DNS on {address} answers over UDP").format(address=address), [])
    return _verdict(diag, "ok", _("DNS on {address} answers over UDP and TCP").format(address=address), [])


# -- protocol and TLS ------------------------------------------------------------------------------------


def _probe(
    check: CheckResult, req: Request, expected: str | None, clock: _Clock, cap: float = 8.0
) -> ProbeResult:
    from portscope.probes.base import Settings
    from portscope.probes.runner import probe_one

    settings = Settings(sni=req.sni, ca_file=req.ca_file, timeout=clock.left(cap))
    return asyncio.run(probe_one(check, settings, expected))


def _judge_probe(diag: Diagnosis, probe: ProbeResult, expected: str | None, req: Request) -> Diagnosis:
    where = f"{req.port}/{req.proto}"
    unrecognised = probe.service in (None, "unknown")
    # passed: true when it answers as expected (or as something known, nothing expected); null when
    # nothing was expected and nothing recognised: information, not a check that passed
    passed = None if unrecognised and probe.matches is None else probe.matches is not False
    diag.evidence.append(Evidence("protocol", localize(probe.summary), passed, {"probe": probe.to_dict()}))
    host = req.sni or req.host
    tls = probe.tls
    if req.proto == "udp" and probe.check.status != "open" and unrecognised:
        return _udp_silent(diag, req, expected)
    if probe.matches is False and probe.service not in (None, "unknown") and not _tls_trouble_only(probe):
        tls_port = bool(probe.details.get("tls_error"))
        steps = [
            _(
                "check what the service on {where} is configured to speak (nginx: listen {port} ssl; for "
                "HTTPS)"
            ).format(where=where, port=req.port),
            _(
                "inspect it: openssl s_client -connect {host}:{port} -servername {host}; curl -v http://{host}:{port}/"
            ).format(host=host, port=req.port),
        ]
        if tls_port:
            steps.insert(
                0,
                _(
                    "the port answers in plain text where TLS was expected (what curl reports as "
                    "'wrong version number'): enable TLS on it, or use the plain-text URL"
                ),
            )
        return _verdict(diag, "wrong_protocol", localize(probe.summary), steps)
    if probe.matches is False and probe.service == "unknown" and expected:
        return _verdict(
            diag,
            "wrong_protocol",
            _("{where} accepts connections but does not answer as {expected}").format(
                where=where, expected=expected
            ),
            [
                _("check which program listens there: on the server, portscope who {port}").format(
                    port=req.port
                )
            ],
        )
    if tls is not None:
        verdict = _tls_verdict(diag, probe, host, req)
        if verdict is not None:
            return verdict
    if probe.matches:
        summary = _("{where} on {address} answers as expected: {summary}").format(
            where=where, address=diag.address, summary=localize(probe.summary)
        )
        return _verdict(diag, "ok", summary, [])
    # Nothing was expected (no --expect, and the registry's name for the port is not one a probe can
    # confirm): the connection works and no fault was found, so the verdict is ok; the sentence says
    # what was and was not checked, and how to check the service too.
    check = _(
        "to check that the right service answers, name it: portscope diagnose {host} {port} --expect SERVICE "
        "(ssh, https, postgresql, ...)"
    ).format(host=req.host, port=req.port)
    if probe.service in (None, "unknown"):
        summary = _(
            "{where} on {address} accepts connections, but nothing we know recognised what answers ({summary}); "
            "no service was expected, so none was checked"
        ).format(where=where, address=diag.address, summary=localize(probe.summary))
        steps = [
            check,
            _("on the server, see which program listens there: portscope who {port}").format(port=req.port),
        ]
    else:
        summary = _(
            "{where} on {address} accepts connections and answers: {summary}; no service was expected, so "
            "none was checked"
        ).format(where=where, address=diag.address, summary=localize(probe.summary))
        steps = [check]
    return _verdict(diag, "ok", summary, steps)


def _udp_silent(diag: Diagnosis, req: Request, expected: str | None) -> Diagnosis:
    """UDP has no handshake: silence to every request is open|filtered, never a working service."""
    where = f"{req.port}/{req.proto}"
    steps = []
    if not expected:
        steps.append(
            _(
                "name the service, so that its own request is sent: portscope diagnose {host} {port} --udp "
                "--expect SERVICE (dns, ntp, snmp, ...)"
            ).format(host=req.host, port=req.port)
        )
    steps += [
        _("on the server: portscope ls --udp --port {port} to confirm the service listens").format(
            port=req.port
        ),
        _(
            "on the server, watch whether the requests arrive: tcpdump -ni any udp port {port} (arriving "
            "and unanswered: the service ignores them; not arriving: a firewall on the way)"
        ).format(port=req.port),
        _(
            "check the firewalls on the way: the host's (nft list ruleset; iptables -L -n), the network's "
            "ACLs, cloud security groups"
        ),
    ]
    return _verdict(
        diag,
        "filtered",
        _(
            "{where} on {address} gave no answer to any request (open|filtered): a firewall may drop the "
            "packets, or a service there ignores requests it does not understand; UDP cannot tell these apart"
        ).format(where=where, address=diag.address),
        steps,
    )


def _tls_trouble_only(probe: ProbeResult) -> bool:
    return probe.tls is not None and probe.tls.error is not None and "handshake failed" in probe.tls.error


def _tls_verdict(diag: Diagnosis, probe: ProbeResult, host: str, req: Request) -> Diagnosis | None:
    tls = probe.tls
    assert tls is not None
    inspect = _("inspect it: openssl s_client -connect {host}:{port} -servername {host} -showcerts").format(
        host=host, port=req.port
    )
    if tls.error:
        diag.evidence.append(Evidence("tls", localize(tls.error), False))
        return _verdict(
            diag,
            "tls_handshake_failed",
            _("the TLS handshake with {host}:{port} fails: {error}").format(
                host=host, port=req.port, error=localize(tls.error)
            ),
            [
                _(
                    "the handshake broke off with: {error}; the server's log says why (journalctl -u SERVICE): "
                    "a certificate or key it cannot read, no protocol version or cipher in common, or not TLS "
                    "at all on this port"
                ).format(error=localize(tls.error)),
                inspect,
                _(
                    "check the TLS versions and ciphers both sides allow (openssl s_client -tls1_2 / -tls1_3), "
                    "whether the server needs SNI (--sni NAME) or a client certificate"
                ),
            ],
        )
    cert = _("certificate {subject}, issued by {issuer}, valid until {until}").format(
        subject=tls.subject, issuer=tls.issuer, until=tls.not_after
    )
    if tls.expired:
        diag.evidence.append(Evidence("tls", cert, False, {"tls": tls.to_dict()}))
        days = -tls.days_left if tls.days_left is not None and tls.days_left < 0 else 0
        return _verdict(
            diag,
            "tls_expired",
            ngettext(
                "the certificate of {host}:{port} expired {days} day ago ({until})",
                "the certificate of {host}:{port} expired {days} days ago ({until})",
                days,
            ).format(host=host, port=req.port, days=days, until=tls.not_after),
            [
                _("renew it (certbot renew, or your CA), install it and reload the service"),
                inspect,
                _("check expiry regularly: portscope probe {host}:{port} shows the days left").format(
                    host=host, port=req.port
                ),
            ],
        )
    if tls.hostname_match is False:
        diag.evidence.append(Evidence("tls", cert, False, {"tls": tls.to_dict()}))
        names = ", ".join(tls.san[:6]) or str(tls.subject)
        return _verdict(
            diag,
            "tls_hostname_mismatch",
            _("the certificate of {address}:{port} is not for {host}: it names {names}").format(
                address=diag.address, port=req.port, host=host, names=names
            ),
            [
                _(
                    "connect with a name the certificate has ({names}), or issue a certificate whose SAN includes "
                    "{host}"
                ).format(names=names, host=host),
                _(
                    "when reaching the server by IP or through another name, send the right SNI: --sni NAME "
                    "(servers with several sites choose the certificate by it)"
                ),
                inspect,
            ],
        )
    if tls.verified is False:
        diag.evidence.append(
            Evidence(
                "tls",
                _("{certificate}; {error}").format(certificate=cert, error=localize(tls.verify_error)),
                False,
                {"tls": tls.to_dict()},
            )
        )
        return _verdict(
            diag,
            "tls_untrusted",
            _("the certificate of {host}:{port} is not trusted here: {why}").format(
                host=host, port=req.port, why=localize(tls.verify_error)
            ),
            [
                _(
                    "if the server sends an incomplete chain, install the intermediate certificates "
                    "(fullchain.pem, not cert.pem)"
                ),
                _(
                    "if it comes from a private CA, trust that CA: --ca-file CA.pem here, or add it to the system "
                    "store (cp CA.crt /usr/local/share/ca-certificates/; update-ca-certificates)"
                )
                if not req.ca_file
                else _(
                    "{ca_file} does not hold the CA that signed it (nor the certificate itself): give the file "
                    "of the CA that issued it, or the server's own certificate to pin it"
                ).format(ca_file=req.ca_file),
                inspect,
            ],
        )
    diag.evidence.append(Evidence("tls", cert, True, {"tls": tls.to_dict()}))
    return None


# -- verdict ---------------------------------------------------------------------------------------------


def _verdict(diag: Diagnosis, code: str, summary: str, steps: list[str]) -> Diagnosis:
    """Set the verdict; a refusal or silence that this host's own firewall explains says so first."""
    if code in ("refused", "filtered"):
        blocking = [e for e in diag.evidence if e.check == "firewall" and e.passed is False]
        if blocking:
            data = blocking[0].data
            if data.get("rule"):
                summary = _("{summary}; this host's own firewall does it ({rule})").format(
                    summary=summary, rule=data["rule"]
                )
            else:
                summary = _(
                    "{summary}; this host's own firewall does it (the policy of table {table}, chain {chain}: "
                    "{policy})"
                ).format(
                    summary=summary,
                    table=data.get("table"),
                    chain=data.get("chain"),
                    policy=data.get("policy"),
                )
            step = blocking[0].data.get("next_step")
            if step:
                steps = [step, *steps]
    diag.verdict, diag.summary, diag.next_steps = code, summary, steps
    return diag
