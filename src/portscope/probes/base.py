"""The one small interface every protocol probe implements, and what a probe gets to work with.

A probe module defines one `Probe` (module attribute PROBE) and is listed in probes/__init__.py.
It can identify a protocol two ways:

- `recognize(data)`: pure, from bytes the server sent on its own (a banner) or in answer to some
  other probe's request. Cheap, never raises, never does I/O: this is what fuzz tests hammer.
- `run(session, banner)`: active; speaks the protocol on `session.conn` (a fresh connection, or the
  one whose banner `recognize` just claimed) and returns what it learnt, or None when the peer does
  not speak it. UDP probes implement `run_udp(session)` instead, with `session.exchange`.

Everything a server says is untrusted: probes only return text through `clean_text` (bounded, control
characters escaped) and numbers they parsed within bounds.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from portscope.model import TlsInfo
from portscope.probes.conn import Conn, Deadline
from portscope.textsafe import clean


def clean_text(data: bytes | str, limit: int = 256) -> str:
    """Server bytes made safe to show: decoded leniently, control characters escaped, bounded."""
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    return clean(text.strip(), limit)


@dataclass(slots=True)
class Ident:
    """What a probe identified. `service` is the most specific name, `protocol` the wire protocol."""

    service: str
    protocol: str | None = None  # defaults to service
    product: str | None = None
    version: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    tls: TlsInfo | None = None  # set by probes that upgraded with STARTTLS
    confidence: str = "high"  # high: the protocol's own handshake; low: a guess from a banner's shape
    # Security findings in words ("weak key exchange: diffie-hellman-group1-sha1", "no password"):
    # they go into the one-line summary, where a reader sees them without reading details.
    problems: list[str] = field(default_factory=list)
    banner: str | None = None  # the text line to show as the banner, when the first bytes were binary

    def __post_init__(self) -> None:
        if self.protocol is None:
            self.protocol = self.service


@dataclass(slots=True)
class Settings:
    """What the user asked for, for every probe of one run."""

    sni: str | None = None  # server name for TLS; None: the host name given, no SNI for an address
    ca_file: str | None = None  # PEM bundle to verify against instead of the system store
    timeout: float = 10.0  # the whole probe of one port
    connect_timeout: float = 3.0
    read_timeout: float = 2.0  # one read's wait, once a request was sent
    banner_wait: float = 0.6  # silence after connect before we speak first (ports not known as banner ports)
    banner_wait_known: float = 3.0  # when the port's service is one that speaks first (SMTP on 25, ...)


RunFn = Callable[["Session", bytes], Awaitable[Ident | None]]
RunUdpFn = Callable[["Session"], Awaitable[Ident | None]]
RecognizeFn = Callable[[bytes], Ident | None]


@dataclass(frozen=True, slots=True)
class Probe:
    """One protocol. `names` are the registry names (and aliases) this probe confirms when expected."""

    name: str
    names: frozenset[str]
    ports: frozenset[int] = frozenset()  # tried first on these ports
    server_first: bool = False  # the server speaks first (a banner): recognize() gets the banner
    recognize: RecognizeFn | None = None
    run: RunFn | None = None
    udp_ports: frozenset[int] = frozenset()
    run_udp: RunUdpFn | None = None
    rarity: int = 5  # order among the "rest" on unknown ports: common protocols (low) first
    # Specific services this probe tells apart (http: docker, etcd, ...): an expectation of one of
    # them runs this probe first, but only that service itself, not the generic protocol, matches it.
    identifies: frozenset[str] = frozenset()


class Session:
    """One probe of one port: target, settings, deadline, and connections opened on demand."""

    def __init__(self, host: str, address: str, port: int, settings: Settings, deadline: Deadline) -> None:
        self.host = host
        self.address = address
        self.port = port
        self.settings = settings
        self.deadline = deadline
        self.conn: Conn | None = None
        self.connections = 0

    @property
    def sni(self) -> str | None:
        """The TLS server name: --sni, else the host as typed when it is a name (SNI carries no IPs)."""
        name = self.settings.sni or self.host
        try:
            socket.inet_pton(socket.AF_INET6 if ":" in name else socket.AF_INET, name.strip("[]"))
        except OSError:
            return name
        return self.settings.sni  # an address was given: only an explicit --sni is sent

    async def connect(self) -> Conn:
        """A fresh connection (closing the previous one); raises ConnectFailed."""
        await self.close()
        self.conn = await Conn.open(self.address, self.port, self.deadline, self.settings.connect_timeout)
        self.connections += 1
        return self.conn

    async def close(self) -> None:
        if self.conn is not None:
            conn, self.conn = self.conn, None
            await conn.close()

    async def start_tls(self, conn: Conn, alpn: list[str] | None = None) -> tuple[TlsInfo, bytes]:
        """Upgrade `conn` (STARTTLS or implicit TLS) and describe the session and certificate.

        Returns (info, non-TLS bytes): on success the bytes are b""; when the peer answered in plain
        text they are what it said and info.error says so. Never raises for the peer's behaviour.
        """
        from portscope.probes import tls

        return await tls.handshake(self, conn, alpn)

    async def exchange(self, payload: bytes, limit: int = 4096, timeout: float | None = None) -> bytes | None:
        """UDP: send one datagram, return the first answer from the target (None on silence or refusal)."""
        wait = self.deadline.left(timeout if timeout is not None else self.settings.read_timeout)
        family = socket.AF_INET6 if ":" in self.address else socket.AF_INET
        loop = asyncio.get_running_loop()
        sock = socket.socket(family, socket.SOCK_DGRAM)
        sock.setblocking(False)
        try:
            sock.connect((self.address, self.port))  # connected: only the target's answers, ICMP errors seen
            sock.send(payload)
            end = time.monotonic() + wait
            while True:
                try:
                    return (
                        await asyncio.wait_for(loop.sock_recv(sock, limit), max(0.0, end - time.monotonic()))
                    )[:limit]
                except TimeoutError:
                    return None
                except OSError:
                    return None
        except OSError:
            return None
        finally:
            sock.close()


def tls_context(settings: Settings, alpn: list[str] | None = None) -> ssl.SSLContext:
    """A client context that accepts any certificate: we judge the certificate ourselves (tls.py), so the
    handshake completes and shows what is there even when it is expired, self-signed or misnamed."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    with contextlib.suppress(ssl.SSLError):  # old servers too: we report weak crypto, not refuse it
        ctx.set_ciphers("ALL:@SECLEVEL=0")
    if alpn:
        ctx.set_alpn_protocols(alpn)
    return ctx
