"""Plumbing the probe tests share: what "clean" output means, throwaway certificates, loopback peers.

Each test file used to carry its own copy of these; one copy means a fix (a stricter character class,
a server that cannot outlive its test) reaches every test at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ipaddress
import re
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from portscope.model import CheckResult, ProbeResult
from portscope.probes.base import Ident, Settings
from portscope.probes.runner import probe_one

# What clean_text escapes and so what must never reach a caller: C0, DEL and C1 (0x9b alone is a CSI
# on many terminals, so C1 matters as much as ESC).
UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f]")

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


# -- clean output ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bounds:
    """How large a clean value may be. Parsers of raw bytes return tuples, bytes and Idents, so by
    default only strings are judged; `json_only` is for what a probe hands to the JSON output, where
    any other type is itself a bug."""

    text: int  # longest string
    key: int | None = None  # longest dict key, when tighter than `text`
    list_items: int | None = None
    dict_items: int | None = None
    json_only: bool = False  # only str, list, dict, None, bool and int; tuples and Idents fail


def assert_clean(value: object, bounds: Bounds | int) -> None:
    """Every string in `value`, however deep: no control character, no longer than the bound.

    An int bound limits strings only; call sites pass the limit their parser promises."""
    b = Bounds(bounds) if isinstance(bounds, int) else bounds
    if isinstance(value, str):
        assert not UNSAFE.search(value), value
        assert len(value) <= b.text, len(value)
    elif isinstance(value, list) or (isinstance(value, tuple) and not b.json_only):
        assert b.list_items is None or len(value) <= b.list_items, len(value)
        for v in value:
            assert_clean(v, b)
    elif isinstance(value, dict):
        assert b.dict_items is None or len(value) <= b.dict_items, len(value)
        keys = b if b.key is None else Bounds(b.key, json_only=b.json_only)
        for k, v in value.items():
            assert_clean(k, keys)
            assert_clean(v, b)
    elif isinstance(value, Ident) and not b.json_only:
        assert_ident_clean(value, b)
    elif b.json_only:
        assert value is None or isinstance(value, bool | int), value


def assert_ident_clean(ident: Ident | None, bounds: Bounds | int, names: Bounds | int | None = None) -> None:
    """An Ident's text fields and details; `names` bounds service, protocol, product and version when
    they are held to less than the details."""
    if ident is None:
        return
    for value in (ident.service, ident.protocol, ident.product, ident.version):
        assert_clean(value, bounds if names is None else names)
    assert_clean(ident.details, bounds)


# -- certificates ----------------------------------------------------------------------------------------


def _san(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def self_signed_certificate(
    common_name: str, sans: Iterable[str] = (), serial: int | None = None, days: int = 30
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A certificate valid from yesterday for `days` days: fake servers need one, and its names are
    what a test asserts on. `sans` are DNS names or IP addresses (written as text); none: no SAN
    extension, as RDP hosts present theirs. `serial` None: a random one."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number() if serial is None else serial)
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=days))
    )
    alt_names = [_san(s) for s in sans]
    if alt_names:
        builder = builder.add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
    return builder.sign(key, hashes.SHA256()), key


def self_signed(
    directory: Path, common_name: str, sans: Iterable[str] = (), serial: int | None = None, days: int = 30
) -> tuple[Path, Path]:
    """self_signed_certificate() as PEM files (cert.pem, key.pem in `directory`), for ssl and for
    daemons that read their certificate from disk."""
    cert, key = self_signed_certificate(common_name, sans, serial, days)
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    """The server side of TLS for the fake peers: no client certificates, the ssl module's defaults."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    return ctx


# -- loopback TCP peers ----------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def tcp_peer(handler: Handler, tls: ssl.SSLContext | None = None) -> AsyncIterator[int]:
    """A TCP server on 127.0.0.1 (a free port) running `handler` per connection; yields the port.

    A peer that drops the connection or breaks TLS is what the tests want, so those errors end the
    handler quietly. On exit every handler still running (a flood, a stall) is cancelled, so no peer
    outlives its test or holds the event loop open."""
    tasks: set[asyncio.Task[Any]] = set()

    async def wrapped(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        try:
            await handler(reader, writer)
        except (OSError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(wrapped, "127.0.0.1", 0, ssl=tls)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        # a connection whose TLS shutdown the client never answered must not keep the test waiting
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(server.wait_closed(), 1)


async def probe_port(
    port: int, expect: str | None = None, *, service: str | None = None, grace: float = 10.0, **settings: Any
) -> ProbeResult:
    """One TCP port of 127.0.0.1 through the runner, as `portscope probe` does it (its order, deadline,
    verdict). `service` is what the port scan would have named; `grace` past the probe's own deadline
    turns a hang into a failure instead of a stuck test run."""
    check = CheckResult("127.0.0.1", "127.0.0.1", port, "tcp", "open", "syn-ack", service=service)
    conf = Settings(**settings)
    return await asyncio.wait_for(probe_one(check, conf, expect), conf.timeout + grace)


def probe_peer(
    handler: Handler,
    expect: str | None = None,
    *,
    service: str | None = None,
    tls: ssl.SSLContext | None = None,
    grace: float = 10.0,
    **settings: Any,
) -> ProbeResult:
    """probe_port() on a tcp_peer() running `handler`, in an event loop of its own."""

    async def main() -> ProbeResult:
        async with tcp_peer(handler, tls) as port:
            return await probe_port(port, expect, service=service, grace=grace, **settings)

    return asyncio.run(main())


# -- daemons ---------------------------------------------------------------------------------------------


def stop(proc: subprocess.Popen[bytes]) -> None:
    """End a daemon a test started: politely, then for certain, so none outlives the test run."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
