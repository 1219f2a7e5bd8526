"""Plain data shared by every layer; `to_dict()` is the documented --json form.

Kept free of behaviour and imports beyond the standard library so that any layer can use it without
pulling in another layer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class ProcessRef:
    """One process holding a socket through one file descriptor (a forked worker is another ref)."""

    pid: int
    name: str
    fd: int

    def to_dict(self) -> dict[str, Any]:
        return {"pid": self.pid, "name": self.name, "fd": self.fd}


@dataclass(slots=True)
class Socket:
    """One kernel socket as `ss` shows it, plus what the registry and the fd pass add."""

    proto: str  # tcp | udp
    family: str  # ipv4 | ipv6
    state: str  # LISTEN, ESTABLISHED, ..., UNCONN
    local_address: str
    local_port: int
    remote_address: str
    remote_port: int
    recv_q: int | None  # None where the backend cannot see queues (psutil)
    send_q: int | None
    inode: int
    uid: int | None
    user: str | None = None
    service: str | None = None
    exposure: str = "address"  # loopback | all | address
    # IPv6 sockets only: False means a [::] listener also accepts IPv4 (dual-stack); None when unknown.
    v6only: bool | None = None
    interface: str | None = None  # set when the socket is bound to a device or an IPv6 scope
    processes: list[ProcessRef] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "proto": self.proto,
            "family": self.family,
            "state": self.state,
            "local_address": self.local_address,
            "local_port": self.local_port,
            "remote_address": self.remote_address,
            "remote_port": self.remote_port,
            "recv_q": self.recv_q,
            "send_q": self.send_q,
            "inode": self.inode,
            "uid": self.uid,
            "user": self.user,
            "service": self.service,
            "exposure": self.exposure,
            "v6only": self.v6only,
            "interface": self.interface,
            "processes": [p.to_dict() for p in self.processes],
        }


@dataclass(slots=True)
class ProcessInfo:
    """What `who` tells about one process: the fuser + ps answer in one object."""

    pid: int
    name: str
    uid: int | None
    user: str | None
    cmdline: str | None
    exe: str | None
    started: str | None  # ISO 8601, local time with offset
    unit: str | None  # systemd unit from /proc/PID/cgroup
    container: str | None  # e.g. "docker:3f2a…" from /proc/PID/cgroup
    sockets: list[Socket] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "pid": self.pid,
            "name": self.name,
            "uid": self.uid,
            "user": self.user,
            "cmdline": self.cmdline,
            "exe": self.exe,
            "started": self.started,
            "unit": self.unit,
            "container": self.container,
            "sockets": [s.to_dict() for s in self.sockets],
        }


# Reachability vocabulary (DESIGN.md): what a check concluded, and the observation that decided it.
STATUSES = ("open", "closed", "filtered", "unreachable", "unresolved", "open|filtered")
REASONS = (
    "syn-ack",  # TCP handshake completed: something listens
    "conn-refused",  # TCP RST: host reached, nothing listening (or a REJECT with tcp reset)
    "no-response",  # nothing came back within the timeout, after every retry
    "host-unreach",  # ICMP host unreachable / no neighbour answered ARP/NDP
    "net-unreach",  # ICMP network unreachable, or no route here
    "admin-prohibited",  # ICMP communication administratively prohibited (a firewall REJECT)
    "icmp-port-unreach",  # UDP: ICMP port unreachable, the kernel's "nothing listens"
    "udp-response",  # UDP: the service answered our request
    "dns-failure",  # the name did not resolve
)


@dataclass(slots=True)
class CheckResult:
    """One port of one address, as `check` and `scan` report it."""

    host: str  # what the user typed (name or address)
    address: str | None  # the address tried; None when the name did not resolve
    port: int
    proto: str  # tcp | udp
    status: str  # one of STATUSES
    reason: str  # one of REASONS
    latency_ms: float | None = None  # time to the deciding answer; None when nothing answered
    service: str | None = None  # the registry's name for the port
    error: str | None = None  # the OS's words for a failure (strerror), when there was one

    def to_dict(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "address": self.address,
            "port": self.port,
            "proto": self.proto,
            "status": self.status,
            "reason": self.reason,
            "latency_ms": None if self.latency_ms is None else round(self.latency_ms, 3),
            "service": self.service,
            "error": self.error,
        }


@dataclass(slots=True)
class TlsInfo:
    """What a TLS handshake showed: the session, the server's certificate, and what we think of it."""

    version: str | None = None  # TLSv1.3, ...
    cipher: str | None = None
    alpn: str | None = None
    sni: str | None = None  # the server name we sent (None for an IP address: no SNI)
    starttls: bool = False  # upgraded from plain text (SMTP STARTTLS, IMAP STARTTLS, ...)
    subject: str | None = None
    san: list[str] = field(default_factory=list)
    issuer: str | None = None
    not_before: str | None = None  # ISO 8601 UTC
    not_after: str | None = None
    days_left: int | None = None  # negative once expired
    expired: bool | None = None
    self_signed: bool | None = None
    verified: bool | None = None  # the chain leads to a trusted root (system store or --ca-file)
    verify_error: str | None = None  # why not, in the verifier's words
    hostname_match: bool | None = None  # the certificate names the host we asked for
    fingerprint_sha256: str | None = None
    error: str | None = None  # the handshake failed: why

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "cipher": self.cipher,
            "alpn": self.alpn,
            "sni": self.sni,
            "starttls": self.starttls,
            "subject": self.subject,
            "san": list(self.san),
            "issuer": self.issuer,
            "not_before": self.not_before,
            "not_after": self.not_after,
            "days_left": self.days_left,
            "expired": self.expired,
            "self_signed": self.self_signed,
            "verified": self.verified,
            "verify_error": self.verify_error,
            "hostname_match": self.hostname_match,
            "fingerprint_sha256": self.fingerprint_sha256,
            "error": self.error,
        }


@dataclass(slots=True)
class ProbeResult:
    """What answers on one port (`probe`, `scan --probe`): the check, then the protocol it speaks."""

    check: CheckResult
    service: str | None = None  # most specific name found: "elasticsearch", "http", "ssh"; None: not open
    protocol: str | None = None  # the wire protocol: "http" for elasticsearch; "unknown" when unrecognised
    product: str | None = None
    version: str | None = None
    tls: TlsInfo | None = None  # set when TLS was spoken (implicit, or after STARTTLS)
    details: dict[str, Any] = field(default_factory=dict)  # protocol-specific, documented per probe
    banner: str | None = None  # first bytes the server sent, cleaned (control characters escaped)
    expected: str | None = None  # the service the port should have (--expect, else the registry)
    matches: bool | None = None  # None when nothing was expected or the port is not open
    summary: str = ""  # one sentence
    elapsed_ms: float | None = None
    probes: list[str] = field(default_factory=list)  # the probes tried, in order

    def to_dict(self) -> dict[str, Any]:
        out = self.check.to_dict()
        out.update(
            {
                "protocol": self.protocol,
                "identified": self.service,
                "product": self.product,
                "version": self.version,
                "tls": self.tls.to_dict() if self.tls else None,
                "details": self.details,
                "banner": self.banner,
                "expected": self.expected,
                "matches": self.matches,
                "summary": self.summary,
                "elapsed_ms": None if self.elapsed_ms is None else round(self.elapsed_ms, 3),
                "probes": list(self.probes),
            }
        )
        return out


# Diagnosis verdicts (DESIGN.md, README): stable codes scripts may depend on.
VERDICTS = (
    "ok",
    "dns_failure",
    "unreachable",
    "refused",
    "filtered",
    "loopback_only",
    "service_on_other_port",
    "wrong_protocol",
    "tls_expired",
    "tls_hostname_mismatch",
    "tls_untrusted",
    "tls_handshake_failed",
    "dns_tcp_blocked",
    "port_in_use",
)


@dataclass(slots=True)
class Evidence:
    """One check of the checklist and what it observed."""

    check: str  # stable id: resolve, listening, firewall, reach, dns_udp, dns_tcp, protocol, tls, bind, ...
    observation: str  # one sentence, in the user's language
    passed: bool | None = None  # True: fine; False: this is (part of) the problem; None: for information
    data: dict[str, Any] = field(default_factory=dict)  # machine-readable facts behind the sentence

    def to_dict(self) -> dict[str, Any]:
        return {
            "check": self.check,
            "observation": self.observation,
            "passed": self.passed,
            "data": self.data,
        }


@dataclass(slots=True)
class Diagnosis:
    """The answer to "why doesn't it connect?": a verdict, the evidence, and what to do next."""

    verdict: str  # one of VERDICTS
    summary: str  # one sentence
    host: str | None = None
    address: str | None = None
    port: int | None = None
    proto: str = "tcp"
    evidence: list[Evidence] = field(default_factory=list)
    next_steps: list[str] = field(default_factory=list)  # commands and configuration changes

    def to_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "summary": self.summary,
            "host": self.host,
            "address": self.address,
            "port": self.port,
            "proto": self.proto,
            "evidence": [e.to_dict() for e in self.evidence],
            "next_steps": list(self.next_steps),
        }


# watch's event kinds (README): stable codes for history queries, alert routing and scripts.
EVENT_KINDS = (
    "listener_added",
    "listener_removed",
    "listener_changed",
    "target_status_changed",
    "certificate_expiring",
)


@dataclass(slots=True)
class Listener:
    """A listening socket as watch keys it: protocol, address, port and process identity, never the PID
    (a restart changes the PID, not the service), so a restarted daemon is the same listener."""

    proto: str
    address: str  # as bound: 0.0.0.0, ::, 127.0.0.1, ...
    port: int
    process: str | None = None  # process name (comm), None when the owner is hidden
    user: str | None = None
    unit: str | None = None  # systemd unit
    container: str | None = None
    pids: list[int] = field(default_factory=list)  # informational only: not part of the identity

    def key(self) -> tuple[str, str, int]:
        """Where it listens: the identity of the slot a listener occupies."""
        return (self.proto, self.address, self.port)

    def identity(self) -> tuple[str | None, str | None, str | None, str | None]:
        """Who listens there: a change of it on the same slot is listener_changed."""
        return (self.process, self.user, self.unit, self.container)

    def to_dict(self) -> dict[str, Any]:
        return {
            "proto": self.proto,
            "address": self.address,
            "port": self.port,
            "process": self.process,
            "user": self.user,
            "unit": self.unit,
            "container": self.container,
            "pids": list(self.pids),
        }


@dataclass(slots=True)
class Event:
    """One change watch noticed. `id` is stable for the change (not for the cycle that saw it), so an
    alert retried after a crash is recognised and sent once."""

    id: str
    kind: str  # one of EVENT_KINDS
    host: str  # the watching host's name
    at: str  # ISO 8601 UTC, when the change was first seen
    summary: str  # one sentence
    proto: str | None = None
    address: str | None = None
    port: int | None = None
    before: dict[str, Any] | None = None  # Listener.to_dict(), target status, ... before the change
    after: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "host": self.host,
            "at": self.at,
            "summary": self.summary,
            "proto": self.proto,
            "address": self.address,
            "port": self.port,
            "before": self.before,
            "after": self.after,
        }
