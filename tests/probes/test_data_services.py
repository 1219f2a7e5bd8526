"""probe: Redis, PostgreSQL, MySQL/MariaDB, MongoDB, memcached, LDAP and AMQP.

Real daemons where this machine has them: the bed's redis-server and PostgreSQL, a redis-server with
a password, a memcached and a PostgreSQL with TLS and SCRAM started here on loopback. The others
(MySQL, MongoDB, LDAP, AMQP) are small asyncio servers below that send protocol bytes built from the
specs by encoders written here, apart from the probes' own (a shared bug cannot hide), and that
record what the probe sent them. They run through the runner (`probe_one`), so the probe order,
recognize() on a banner or on the answer to a TLS ClientHello, and the deadline all take part.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import socket
import ssl
import struct
import subprocess
import tempfile
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from portscope.model import ProbeResult
from portscope.probes import amqp, ldap, memcached, mongodb, mysql, postgresql, redis
from tests.bed.bed import TestBed
from tests.helpers import portscope
from tests.probes.support import (
    Handler,
    assert_clean,
    probe_peer,
    probe_port,
    self_signed,
    server_context,
    stop,
)

# The longest string a parser here may return, and one in a whole ProbeResult (summary included).
PARSED = 400
RESULT = 1000


# -- plumbing -------------------------------------------------------------------------------------------


def _size(value: Any) -> int:
    return len(json.dumps(value, default=repr))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_listening(port: int, proc: subprocess.Popen[bytes], what: str, seconds: float = 20) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on {port} within {seconds} s")


@contextlib.contextmanager
def _daemon(argv: list[str], port: int, what: str) -> Iterator[int]:
    """Run `argv`, a daemon told to listen on 127.0.0.1:`port`, for the with block; yields the port."""
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_listening(port, proc, what)
        yield port
    finally:
        stop(proc)


def _run_probe(handler: Handler, expect: str | None = None, timeout: float = 8.0) -> ProbeResult:
    """`handler` served on 127.0.0.1 and probed through the runner; a hang fails 20 s past the deadline."""
    return probe_peer(handler, expect, timeout=timeout, grace=20)


def _run_probe_port(port: int, expect: str | None, timeout: float = 8.0) -> ProbeResult:
    """A real daemon's port on 127.0.0.1 through the runner, with _run_probe's deadlines."""
    return asyncio.run(probe_port(port, expect, timeout=timeout, grace=20))


def _assert_result_clean(r: ProbeResult) -> None:
    assert_clean([r.service, r.protocol, r.product, r.version, r.details, r.summary], RESULT)
    assert _size(r.to_dict()) < 20000


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate and its key, for the fake servers' TLS and the real PostgreSQL's."""
    return self_signed(tmp_path_factory.mktemp("tls"), "db.test", ["db.test"])


@pytest.fixture(scope="module")
def server_tls(tls_files: tuple[Path, Path]) -> ssl.SSLContext:
    return server_context(*tls_files)


# -- Redis ----------------------------------------------------------------------------------------------


def _redis_server_version() -> str:
    """The oracle: what redis-server says of itself (`Redis server v=7.0.15 sha=...`)."""
    out = subprocess.run(["redis-server", "--version"], capture_output=True, text=True, check=True).stdout
    m = re.search(r"v=([0-9][\w.]*)", out)
    assert m, out
    return m.group(1)


@pytest.mark.root
def test_redis_on_the_bed(bed: TestBed) -> None:
    proc = portscope("probe", f"{bed.addr4}:6379", "--json")
    assert proc.returncode == 0, proc.stderr
    (r,) = json.loads(proc.stdout)
    assert (r["identified"], r["product"], r["matches"]) == ("redis", "Redis", True)
    assert r["version"] == _redis_server_version()
    d = r["details"]
    assert d["auth_required"] is False and d["mode"] == "standalone" and d["os"].startswith("Linux")
    assert r["probes"] == ["banner", "redis"]  # the expected probe went first and was enough


def _redis(directory: Path, password: str | None) -> contextlib.AbstractContextManager[int]:
    port = _free_port()
    argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    argv += ["--dir", str(directory), "--logfile", str(directory / "log")]
    argv += ["--requirepass", password] if password else []
    return _daemon(argv, port, "redis-server")


@pytest.fixture
def redis_with_password(tmp_path: Path) -> Iterator[int]:
    with _redis(tmp_path, "s3cret") as port:
        yield port


@pytest.fixture
def redis_open(tmp_path: Path) -> Iterator[int]:
    with _redis(tmp_path, None) as port:
        yield port


def test_redis_with_a_password_says_so_and_is_not_asked_more(redis_with_password: int) -> None:
    r = _run_probe_port(redis_with_password, "redis")
    assert (r.service, r.product, r.version, r.matches) == ("redis", "Redis", None, True)
    assert r.details["auth_required"] is True and "NOAUTH" in r.details["evidence"]
    assert "redis_version" not in r.details


@pytest.mark.parametrize("password", [False, True])
def test_redis_recognize_reads_what_a_real_redis_says_to_foreign_bytes(
    password: bool, redis_open: int, redis_with_password: int
) -> None:
    # What Redis answers to a TLS record header (no NUL: Redis would wait for the end of the line)
    # and to an HTTP request line, asked of a real one.
    port = redis_with_password if password else redis_open

    def ask(data: bytes) -> bytes:
        with socket.create_connection(("127.0.0.1", port), 5) as s:
            s.sendall(data)
            s.settimeout(5)
            return s.recv(4096)

    for foreign in (b"\x16\x03\x01\x02hello\r\n", b"GET / HTTP/1.1\r\n", b'"unbalanced\r\n'):
        answer = ask(foreign)
        ident = redis.recognize(answer)
        assert ident is not None and ident.service == "redis", answer
        assert_clean(ident, PARSED)
    # unknown commands and wrong arities are refused before authentication, a valid command after it
    ident = redis.recognize(ask(b"GET /\r\n"))
    if password:
        assert ident is not None and ident.details["auth_required"] is True and ident.confidence == "high"
    else:
        assert ident is None  # a nil reply ($-1): not an error, nothing to recognize


def test_redis_protected_mode_and_what_was_sent() -> None:
    seen: list[bytes] = []

    async def denied(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await reader.readline())
        writer.write(b"-DENIED Redis is running in protected mode because protected mode is enabled\r\n")
        await writer.drain()
        seen.append(await reader.read(100))  # EOF: nothing more comes after a refusal

    r = _run_probe(denied, "redis")
    assert (r.service, r.details["protected_mode"], r.details["auth_required"]) == ("redis", True, False)
    assert seen == [b"PING\r\n", b""]


async def _endless_bulk(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readline()
    writer.write(b"+PONG\r\n")
    await reader.readline()
    writer.write(b"$2147483647\r\n")
    chunk = b"redis_version:9.9.9\r\n" + b"x" * 65000
    for _ in range(100000):
        writer.write(chunk)
        await writer.drain()


async def _endless_line(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readline()
    writer.write(b"+PONG")
    for _ in range(100000):
        writer.write(b"G" * 65536)
        await writer.drain()


async def _dribble_info(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readline()
    writer.write(b"+PONG\r\n")
    await reader.readline()
    writer.write(b"$100000\r\n# Server\r\nredis_version:7.2.4\r\n")
    for _ in range(10000):
        writer.write(b"y")
        await writer.drain()
        await asyncio.sleep(0.05)


async def _huge_bson(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read(1024)
    writer.write(struct.pack("<iiii", 0x7FFFFFFF, 7, 1, 2013) + b"\0\0\0\0\0")
    for _ in range(100000):
        writer.write(b"\x02" * 65536)
        await writer.drain()


async def _bson_lies_inside(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read(1024)
    doc = struct.pack("<i", 0x7FFFFFFF) + b"\x10ok\0\x01\0\0\0" + b"\0"
    body = b"\0\0\0\0\0" + doc
    writer.write(struct.pack("<iiii", 16 + len(body), 7, 1, 2013) + body)
    await writer.drain()
    await reader.read(1024)


@pytest.mark.parametrize(
    ("handler", "expect"),
    [
        (_endless_bulk, "redis"),
        (_endless_line, "redis"),
        (_dribble_info, "redis"),
        (_huge_bson, "mongodb"),
        (_bson_lies_inside, "mongodb"),
    ],
)
def test_hostile_peers_end_in_time_with_bounded_memory(handler: Handler, expect: str) -> None:
    tracemalloc.start()
    try:
        started = time.monotonic()
        r = _run_probe(handler, expect, timeout=3)
        elapsed = time.monotonic() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert elapsed < 3 + 3  # the probe's deadline plus closing; a hang would be far longer
    assert peak < 16 * 1024 * 1024, peak  # the peer offered gigabytes
    _assert_result_clean(r)
    if handler is _endless_bulk:
        assert (r.service, r.version, r.details["info_truncated"]) == ("redis", "9.9.9", True)
    if handler is _dribble_info:
        assert (r.service, r.version) == ("redis", "7.2.4")
    if handler is _endless_line:
        assert r.service != "redis"  # "+PONGGGG..." is not PONG
    if expect == "mongodb":
        assert r.service != "mongodb"


# -- PostgreSQL -----------------------------------------------------------------------------------------


@pytest.mark.root
def test_postgresql_on_the_bed(bed: TestBed) -> None:
    proc = portscope("probe", f"{bed.addr4}:5432", "--json")
    assert proc.returncode == 0, proc.stderr
    (r,) = json.loads(proc.stdout)
    assert (r["identified"], r["product"], r["version"], r["matches"], r["tls"]) == (
        "postgresql",
        "PostgreSQL",
        "9.6 or later",  # the bed's server is newer; its errors carry the V field (9.6+): a proven floor
        True,
        None,
    )
    d = r["details"]
    assert d["ssl"] is False  # the bed runs ssl=off
    # initdb's pg_hba.conf has host lines for loopback only: the bed's peer address has no entry
    assert (d["error_severity"], d["error_code"], d["auth_method"]) == ("FATAL", "28000", "reject")
    assert "pg_hba.conf" in d["error_message"] and "portscope" in d["error_message"]
    assert "before authentication" in d["version_note"] and "9.6" in d["version_evidence"]

    table = portscope("probe", f"{bed.addr4}:5432")
    assert "5432/tcp answers postgresql (PostgreSQL 9.6 or later), as expected" in table.stdout


@pytest.fixture
def postgres_tls_scram(tls_files: tuple[Path, Path]) -> Iterator[int]:
    """A real PostgreSQL on 127.0.0.1: TLS on, SCRAM-SHA-256 for every TCP client, runs as postgres."""
    bindir = sorted(Path("/usr/lib/postgresql").glob("*/bin"))
    setpriv = shutil.which("setpriv")
    if not bindir or setpriv is None or os.geteuid() != 0:
        pytest.skip("needs PostgreSQL's server binaries, setpriv and root (initdb runs as postgres)")
    import pwd

    pw = pwd.getpwnam("postgres")
    d = Path(tempfile.mkdtemp(prefix="portscope-pg-"))
    as_postgres = [setpriv, "--reuid=postgres", "--regid=postgres", "--init-groups", "--"]
    proc: subprocess.Popen[bytes] | None = None
    try:
        for name in ("cert.pem", "key.pem"):
            shutil.copy(tls_files[0 if name == "cert.pem" else 1], d / name)
        for path in (d, d / "cert.pem", d / "key.pem"):
            os.chown(path, pw.pw_uid, pw.pw_gid)
        os.chmod(d / "key.pem", 0o600)
        initdb = [str(bindir[-1] / "initdb"), "-D", str(d / "data"), "-U", "postgres", "-A", "trust"]
        initdb += ["--no-sync", "--no-instructions", "-E", "UTF8", "--locale=C"]
        subprocess.run([*as_postgres, *initdb], check=True, capture_output=True, cwd=d, timeout=120)
        (d / "data" / "pg_hba.conf").write_text("hostssl all all 127.0.0.1/32 scram-sha-256\n")
        port = _free_port()
        argv = [str(bindir[-1] / "postgres"), "-D", str(d / "data"), "-k", str(d), "-p", str(port)]
        argv += ["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "ssl=on"]
        argv += ["-c", f"ssl_cert_file={d / 'cert.pem'}", "-c", f"ssl_key_file={d / 'key.pem'}"]
        proc = subprocess.Popen(
            [*as_postgres, *argv], cwd=d, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        _wait_listening(port, proc, "postgres")
        yield port
    finally:
        if proc is not None:
            stop(proc)
        shutil.rmtree(d, ignore_errors=True)


@pytest.mark.root
def test_postgresql_with_tls_and_scram(postgres_tls_scram: int) -> None:
    r = _run_probe_port(postgres_tls_scram, "postgres")
    # SCRAM proves PostgreSQL 10 or later; the exact version is only announced after authentication
    assert (r.service, r.product, r.version, r.matches) == ("postgresql", "PostgreSQL", "10 or later", True)
    assert r.details["ssl"] is True and r.details["auth_method"] == "scram-sha-256"
    assert "SCRAM-SHA-256" in r.details["sasl_mechanisms"]
    assert r.tls is not None and r.tls.starttls and r.tls.error is None
    assert r.tls.version in ("TLSv1.2", "TLSv1.3") and r.tls.subject == "CN=db.test"
    assert "postgresql with STARTTLS (PostgreSQL 10 or later)" in r.summary


def _pg(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack("!I", 4 + len(body)) + body


def _pg_server(auth: bytes, after: list[bytes], seen: list[bytes]) -> Handler:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await reader.readexactly(8))
        writer.write(b"N")
        (length,) = struct.unpack("!I", await reader.readexactly(4))
        seen.append(await reader.readexactly(length - 4))
        writer.write(auth + b"".join(after))
        await writer.drain()
        seen.append(await reader.read(100))  # what the client says after: Terminate, or nothing

    return serve


def test_postgresql_trust_reveals_the_version_and_we_leave_politely() -> None:
    seen: list[bytes] = []
    after = [
        _pg(b"S", b"server_version\x0016.4 (Debian 16.4-1.pgdg120+1)\x00"),
        _pg(b"S", b"client_encoding\x00UTF8\x00"),
        _pg(b"K", struct.pack("!II", 42, 7)),
        _pg(b"Z", b"I"),
    ]
    r = _run_probe(_pg_server(_pg(b"R", struct.pack("!I", 0)), after, seen), "postgresql")
    assert (r.service, r.version, r.details["auth_method"], r.details["ssl"]) == (
        "postgresql",
        "16.4",
        "trust",
        False,
    )
    assert "version_note" not in r.details
    assert seen[0] == struct.pack("!II", 8, 80877103)
    assert struct.unpack("!I", seen[1][:4])[0] == 196608 and b"user\0portscope\0" in seen[1]
    assert seen[2] == b"X\x00\x00\x00\x04"


@pytest.mark.parametrize(
    ("auth", "method"),
    [
        (_pg(b"R", struct.pack("!I", 5) + b"salt"), "md5"),
        (_pg(b"R", struct.pack("!I", 3)), "password"),
        (_pg(b"R", struct.pack("!I", 10) + b"SCRAM-SHA-256\0\0"), "scram-sha-256"),
    ],
)
def test_postgresql_never_sends_a_password(auth: bytes, method: str) -> None:
    seen: list[bytes] = []
    r = _run_probe(_pg_server(auth, [], seen), "postgresql")
    floor = "10 or later" if method.startswith("scram") else None  # SCRAM is new in PostgreSQL 10
    assert (r.service, r.details["auth_method"], r.version) == ("postgresql", method, floor)
    assert seen[2] == b""  # the connection closed without a password message ('p')


def test_a_late_ssh_banner_is_not_postgresql_saying_s() -> None:
    async def late_ssh(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(0.3)  # after the runner's short wait on a client-first port
        writer.write(b"SSH-2.0-OpenSSH_9.6p1 Debian-3\r\n")
        await writer.drain()
        await reader.read(4096)

    r = _run_probe(late_ssh, "postgresql")
    assert r.service != "postgresql" and r.matches is False
    assert "postgresql" in r.probes


# -- MySQL / MariaDB ------------------------------------------------------------------------------------


def _mysql_handshake(version: bytes, caps: int, plugin: bytes, conn_id: int = 77) -> bytes:
    """Protocol::HandshakeV10, built from the MySQL client/server protocol documentation."""
    scramble = b"abcdefghijklmnopqrst"
    payload = b"\x0a" + version + b"\0" + struct.pack("<I", conn_id) + scramble[:8] + b"\0"
    payload += struct.pack("<HBHH", caps & 0xFFFF, 45, 2, caps >> 16)
    payload += bytes([len(scramble) + 1]) + b"\0" * 10 + scramble[8:] + b"\0" + plugin + b"\0"
    return len(payload).to_bytes(3, "little") + b"\0" + payload


def _mysql_server(greeting: bytes, seen: list[bytes], tls: ssl.SSLContext | None) -> Handler:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(greeting)
        await writer.drain()
        head = await reader.readexactly(4)
        seen.append(head + await reader.readexactly(int.from_bytes(head[:3], "little")))
        if tls is not None:
            await writer.start_tls(tls)
            seen.append(await reader.read(100))  # nothing: the probe never logs in

    return serve


def test_mariadb_handshake_then_tls(server_tls: ssl.SSLContext) -> None:
    caps = 0x800 | 0x200 | 0x8000 | 0x80000 | 0xF7FF
    greeting = _mysql_handshake(b"5.5.5-10.11.6-MariaDB-0+deb12u1", caps, b"mysql_native_password")
    seen: list[bytes] = []
    r = _run_probe(_mysql_server(greeting, seen, server_tls))  # unknown port, nothing expected: the banner
    assert (r.service, r.product, r.version) == ("mysql", "MariaDB", "10.11.6")
    d = r.details
    assert (d["ssl"], d["auth_plugin"], d["connection_id"], d["protocol_version"]) == (
        True,
        "mysql_native_password",
        77,
        10,
    )
    assert d["server_version"] == "5.5.5-10.11.6-MariaDB-0+deb12u1"
    assert (
        r.tls is not None and r.tls.starttls and r.tls.version == "TLSv1.3" and r.tls.subject == "CN=db.test"
    )
    # the SSLRequest: 32 bytes, sequence 1, CLIENT_SSL set; then the TLS session carried nothing
    request = seen[0]
    assert len(request) == 36 and request[3] == 1 and struct.unpack_from("<I", request, 4)[0] & 0x800
    assert seen[1] == b""
    assert "mysql with STARTTLS (MariaDB 10.11.6)" in r.summary


def test_mysql8_without_tls_as_expected() -> None:
    greeting = _mysql_handshake(
        b"8.0.36-0ubuntu0.22.04.1", 0x200 | 0x8000 | 0x80000, b"caching_sha2_password"
    )

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(greeting)
        await writer.drain()
        await reader.read(100)

    r = _run_probe(serve, "mysql")
    assert (r.service, r.product, r.version, r.matches, r.tls) == ("mysql", "MySQL", "8.0.36", True, None)
    assert (r.details["ssl"], r.details["auth_plugin"]) == (False, "caching_sha2_password")


def test_mysql_host_not_allowed() -> None:
    message = b"Host '127.0.0.1' is not allowed to connect to this MariaDB server"
    payload = b"\xff" + struct.pack("<H", 1130) + message

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(len(payload).to_bytes(3, "little") + b"\0" + payload)
        await writer.drain()

    r = _run_probe(serve, "mariadb")
    assert (r.service, r.product, r.matches) == ("mysql", "MariaDB", True)
    assert (r.details["error_code"], r.details["error_message"]) == (1130, message.decode())


# -- MongoDB --------------------------------------------------------------------------------------------


def _bson(doc: dict[str, Any]) -> bytes:
    """A BSON encoder per bsonspec.org, apart from the probe's (which only writes int32 and strings)."""
    out = b""
    for key, value in doc.items():
        name = key.encode() + b"\0"
        if isinstance(value, bool):
            out += b"\x08" + name + (b"\x01" if value else b"\x00")
        elif isinstance(value, int):
            if -(2**31) <= value < 2**31:
                out += b"\x10" + name + struct.pack("<i", value)
            else:
                out += b"\x12" + name + struct.pack("<q", value)
        elif isinstance(value, float):
            out += b"\x01" + name + struct.pack("<d", value)
        elif isinstance(value, str):
            raw = value.encode() + b"\0"
            out += b"\x02" + name + struct.pack("<i", len(raw)) + raw
        elif isinstance(value, dict):
            out += b"\x03" + name + _bson(value)
        elif isinstance(value, list):
            out += b"\x04" + name + _bson({str(i): v for i, v in enumerate(value)})
        elif value is None:
            out += b"\x0a" + name
        else:
            raise TypeError(value)
    return struct.pack("<i", len(out) + 5) + out + b"\0"


def _op_msg(request_id: int, response_to: int, doc: dict[str, Any]) -> bytes:
    body = b"\0\0\0\0\0" + _bson(doc)
    return struct.pack("<iiii", 16 + len(body), request_id, response_to, 2013) + body


def _op_reply(request_id: int, response_to: int, doc: dict[str, Any]) -> bytes:
    body = struct.pack("<iqii", 8, 0, 0, 1) + _bson(doc)
    return struct.pack("<iiii", 16 + len(body), request_id, response_to, 1) + body


HELLO_7 = {
    "topologyVersion": {"processId": "65f0c0ffee", "counter": 6},
    "hosts": ["db1:27017", "db2:27017"],
    "setName": "rs0",
    "setVersion": 3,
    "isWritablePrimary": True,
    "secondary": False,
    "maxBsonObjectSize": 16777216,
    "maxMessageSizeBytes": 48000000,
    "localTime": 1700000000000,
    "logicalSessionTimeoutMinutes": 30,
    "minWireVersion": 0,
    "maxWireVersion": 21,
    "readOnly": False,
    "ok": 1.0,
}


def _mongo_server(seen: list[tuple[int, bytes]], legacy: bool) -> Handler:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for _ in range(4):
            head = await reader.readexactly(16)
            length, request_id, _, opcode = struct.unpack("<iiii", head)
            body = await reader.readexactly(length - 16)
            seen.append((opcode, body))
            if opcode == 2013 and legacy:
                return  # a 3.4 server: OP_MSG is an unknown opcode, it hangs up
            asking_build = b"buildInfo" in body
            if opcode == 2013:
                doc = {"version": "7.0.14", "gitVersion": "abc", "ok": 1.0} if asking_build else HELLO_7
                writer.write(_op_msg(99, request_id, doc))
            else:
                doc = (
                    {"version": "3.4.24", "ok": 1.0}
                    if asking_build
                    else {"ismaster": True, "maxWireVersion": 5, "minWireVersion": 0, "ok": 1.0}
                )
                writer.write(_op_reply(99, request_id, doc))
            await writer.drain()

    return serve


def test_mongodb_hello_and_build_info() -> None:
    seen: list[tuple[int, bytes]] = []
    r = _run_probe(_mongo_server(seen, legacy=False), "mongodb")
    assert (r.service, r.product, r.version, r.matches) == ("mongodb", "MongoDB", "7.0.14", True)
    d = r.details
    assert (d["writable_primary"], d["secondary"], d["replica_set"], d["read_only"]) == (
        True,
        False,
        "rs0",
        False,
    )
    assert (d["min_wire_version"], d["max_wire_version"], d["release_from_wire"]) == (0, 21, "7.0")
    assert [op for op, _ in seen] == [2013, 2013]
    assert b"hello\0" in seen[0][1] and b"admin\0" in seen[0][1]


def test_mongodb_legacy_server_gets_op_query() -> None:
    seen: list[tuple[int, bytes]] = []
    r = _run_probe(_mongo_server(seen, legacy=True), "mongo")
    assert (r.service, r.version, r.details["legacy_opquery"]) == ("mongodb", "3.4.24", True)
    assert (r.details["writable_primary"], r.details["release_from_wire"]) == (True, "3.4")
    assert [op for op, _ in seen] == [2013, 2004, 2004]
    assert b"admin.$cmd\0" in seen[1][1] and b"isMaster\0" in seen[1][1]


# -- memcached ------------------------------------------------------------------------------------------


@pytest.fixture
def memcached_port() -> Iterator[int]:
    if shutil.which("memcached") is None:
        pytest.skip("needs memcached (scripts/apt-test-deps.sh installs it)")
    port = _free_port()
    argv = ["memcached", "-l", "127.0.0.1", "-p", str(port), "-U", "0"]
    argv += ["-u", "nobody"] if os.geteuid() == 0 else []
    with _daemon(argv, port, "memcached"):
        yield port


def test_memcached_real_daemon(memcached_port: int) -> None:
    oracle = subprocess.run(["memcached", "-V"], capture_output=True, text=True, check=True).stdout.split()
    r = _run_probe_port(memcached_port, "memcached")
    assert (r.service, r.product, r.version, r.matches) == ("memcached", "memcached", oracle[-1], True)
    assert r.details["uptime_s"] >= 0 and r.details["curr_connections"] >= 1 and r.details["threads"] >= 1
    assert r.details["max_connections"] == 1024  # memcached's default -c


def test_memcached_answers_a_tls_hello_with_error_lines(memcached_port: int) -> None:
    # Nothing expected, a port no probe lists: TLS goes first and memcached's "ERROR" lines name it;
    # the runner then asks it properly (`version`) on a fresh connection.
    oracle = subprocess.run(["memcached", "-V"], capture_output=True, text=True, check=True).stdout.split()
    r = _run_probe_port(memcached_port, None)
    assert (r.service, r.version, r.details.get("confidence")) == ("memcached", oracle[-1], None), r.to_dict()
    assert r.probes[:3] == ["banner", "tls", "memcached (recognised its answer)"]


# -- LDAP -----------------------------------------------------------------------------------------------


def _ber(tag: int, content: bytes) -> bytes:
    """BER TLV (X.690), long-form lengths always two bytes when needed: unlike the probe's encoder."""
    if len(content) < 0x80:
        return bytes([tag, len(content)]) + content
    return bytes([tag, 0x82]) + struct.pack("!H", len(content)) + content


def _ldap_msg(message_id: int, op: bytes) -> bytes:
    return _ber(0x30, _ber(0x02, bytes([message_id])) + op)


def _ldap_result(tag: int, code: int, diagnostic: bytes = b"", extra: bytes = b"") -> bytes:
    return _ber(tag, _ber(0x0A, bytes([code])) + _ber(0x04, b"") + _ber(0x04, diagnostic) + extra)


def _ldap_entry(attrs: dict[str, list[str]]) -> bytes:
    body = b"".join(
        _ber(0x30, _ber(0x04, k.encode()) + _ber(0x31, b"".join(_ber(0x04, v.encode()) for v in vals)))
        for k, vals in attrs.items()
    )
    return _ber(0x64, _ber(0x04, b"") + _ber(0x30, body))


def _ldap_server(
    attrs: dict[str, list[str]] | None, seen: list[bytes], tls: ssl.SSLContext | None
) -> Handler:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.read(4096)
        seen.append(request)
        if attrs is None:  # anonymous reads refused
            writer.write(_ldap_msg(1, _ldap_result(0x65, 50, b"anonymous access denied")))
            await writer.drain()
            await reader.read(100)
            return
        writer.write(_ldap_msg(1, _ldap_entry(attrs)) + _ldap_msg(1, _ldap_result(0x65, 0)))
        await writer.drain()
        request = await reader.read(4096)
        seen.append(request)
        if request and tls is not None:
            writer.write(_ldap_msg(2, _ldap_result(0x78, 0)))
            await writer.drain()
            await writer.start_tls(tls)
            seen.append(await reader.read(100))

    return serve


def test_ldap_root_dse_then_starttls(server_tls: ssl.SSLContext) -> None:
    attrs = {
        "vendorName": ["389 Project"],
        "vendorVersion": ["389-Directory/2.4.4 B2024.010.0000"],
        "supportedLDAPVersion": ["2", "3"],
        "namingContexts": ["dc=example,dc=com", "o=netscaperoot"],
        "supportedExtension": ["1.3.6.1.4.1.4203.1.11.1", "1.3.6.1.4.1.1466.20037"],
        "supportedSASLMechanisms": ["EXTERNAL", "GSSAPI"],
        "objectClass": ["top"],
    }
    seen: list[bytes] = []
    r = _run_probe(_ldap_server(attrs, seen, server_tls), "ldap")
    assert (r.service, r.product, r.version, r.matches) == ("ldap", "389 Project", "2.4.4", True)
    d = r.details
    assert (d["vendor"], d["ldap_versions"], d["starttls"]) == ("389 Project", [2, 3], True)
    assert d["naming_contexts"] == ["dc=example,dc=com", "o=netscaperoot"]
    assert d["sasl_mechanisms"] == ["EXTERNAL", "GSSAPI"]
    assert r.tls is not None and r.tls.starttls and r.tls.version == "TLSv1.3"
    # what we sent: a searchRequest for the root DSE (base "", baseObject, present filter objectClass)
    assert seen[0][0] == 0x30 and b"\x63" in seen[0][:8] and b"\x87\x0bobjectClass" in seen[0]
    assert b"1.3.6.1.4.1.1466.20037" in seen[1] and b"\x77" in seen[1][:8]
    assert seen[2] == b""  # no bind, nothing inside TLS
    assert "ldap with STARTTLS (389 Project 2.4.4)" in r.summary


def test_ldap_openldap_without_starttls() -> None:
    attrs = {
        "objectClass": ["top", "OpenLDAProotDSE"],
        "namingContexts": ["dc=bed,dc=test"],
        "supportedLDAPVersion": ["3"],
    }
    seen: list[bytes] = []
    r = _run_probe(_ldap_server(attrs, seen, None), "ldap")
    assert (r.service, r.product, r.version, r.tls) == ("ldap", "OpenLDAP", None, None)
    assert (r.details["starttls"], r.details["ldap_versions"]) == (False, [3])
    assert seen[1] == b""  # StartTLS was not offered, so not asked for


def test_ldap_anonymous_refused() -> None:
    r = _run_probe(_ldap_server(None, [], None), "ldap")
    assert (r.service, r.details["result_code"], r.details["diagnostic"]) == (
        "ldap",
        50,
        "anonymous access denied",
    )


def test_ldap_notice_of_disconnection_names_it_on_an_unknown_port() -> None:
    notice = _ldap_msg(
        0,
        _ldap_result(
            0x78,
            2,
            b"00000057: LdapErr: DSID-0C090E26, comment: Error decoding ldap message",
            _ber(0x8A, b"1.3.6.1.4.1.1466.20036"),
        ),
    )

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(4096)
        writer.write(notice)
        await writer.drain()

    r = _run_probe(serve)
    assert (r.service, r.details["result_code"]) == ("ldap", 2)
    assert r.probes[:2] == ["banner", "tls"]


# -- AMQP -----------------------------------------------------------------------------------------------


def _amqp_value(value: Any) -> bytes:
    if isinstance(value, bool):
        return b"t" + bytes([value])
    if isinstance(value, int):
        return b"I" + struct.pack("!i", value)
    if isinstance(value, str):
        raw = value.encode()
        return b"S" + struct.pack("!I", len(raw)) + raw
    if isinstance(value, dict):
        return b"F" + _amqp_table(value)
    if isinstance(value, list):
        items = b"".join(_amqp_value(v) for v in value)
        return b"A" + struct.pack("!I", len(items)) + items
    raise TypeError(value)


def _amqp_table(table: dict[str, Any]) -> bytes:
    """An AMQP 0-9-1 field table (the spec plus RabbitMQ's errata), apart from the probe's parser."""
    body = b"".join(bytes([len(k)]) + k.encode() + _amqp_value(v) for k, v in table.items())
    return struct.pack("!I", len(body)) + body


RABBIT = {
    "capabilities": {
        "publisher_confirms": True,
        "basic.nack": True,
        "per_consumer_qos": True,
        "direct_reply_to": False,
    },
    "cluster_name": "rabbit@mq1",
    "copyright": "Copyright (c) 2007-2024 Broadcom Inc and/or its subsidiaries",
    "information": "Licensed under the MPL 2.0. Website: https://rabbitmq.com",
    "platform": "Erlang/OTP 26.2.5",
    "product": "RabbitMQ",
    "version": "3.13.7",
}


def _connection_start(props: dict[str, Any]) -> bytes:
    payload = struct.pack("!HHBB", 10, 10, 0, 9) + _amqp_table(props)
    # mechanisms with a trailing space (as some brokers send it), then locales
    payload += struct.pack("!I", 15) + b"AMQPLAIN PLAIN " + struct.pack("!I", 5) + b"en_US"
    return struct.pack("!BHI", 1, 0, len(payload)) + payload + b"\xce"


def _rabbit(seen: list[bytes]) -> Handler:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        header = await reader.read(8)
        seen.append(header)
        if header != b"AMQP\x00\x00\x09\x01":
            writer.write(b"AMQP\x00\x00\x09\x01")  # RabbitMQ's answer to anything but its header
            await writer.drain()
            return
        writer.write(_connection_start(RABBIT))
        await writer.drain()
        seen.append(await reader.read(100))

    return serve


def test_amqp_connection_start() -> None:
    seen: list[bytes] = []
    r = _run_probe(_rabbit(seen), "amqp")
    assert (r.service, r.product, r.version, r.matches) == ("amqp", "RabbitMQ", "3.13.7", True)
    d = r.details
    assert (d["amqp_version"], d["platform"], d["cluster_name"]) == (
        "0-9-1",
        "Erlang/OTP 26.2.5",
        "rabbit@mq1",
    )
    assert d["capabilities"] == ["basic.nack", "per_consumer_qos", "publisher_confirms"]
    assert (d["mechanisms"], d["locales"]) == (["AMQPLAIN", "PLAIN"], ["en_US"])
    assert seen == [b"AMQP\x00\x00\x09\x01", b""]  # the header, then nothing (no login)


def test_amqp_recognized_from_its_answer_to_tls() -> None:
    seen: list[bytes] = []
    r = _run_probe(_rabbit(seen))
    # The broker's answer to a TLS hello (its own protocol header) names it; the runner then sends
    # the AMQP header on a fresh connection and reads Connection.Start.
    assert (r.service, r.product, r.details["amqp_version"]) == ("amqp", "RabbitMQ", "0-9-1")
    assert r.probes[:3] == ["banner", "tls", "amqp (recognised its answer)"] and seen[0][:1] == b"\x16"


def test_amqp_1_0_broker_answers_with_its_own_header() -> None:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(8)
        writer.write(b"AMQP\x03\x01\x00\x00")
        await writer.drain()

    r = _run_probe(serve, "amqp")
    assert (r.service, r.product, r.details["amqp_version"], r.matches) == ("amqp", None, "1.0 (SASL)", True)


# -- parsers: structured inputs round-trip --------------------------------------------------------------

# clean_text strips: values that round-trip have no outer blanks
_clean_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40).map(str.strip)
_keys = st.text(st.characters(min_codepoint=0x61, max_codepoint=0x7A), min_size=1, max_size=12)
_scalars = st.one_of(
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    _clean_text,
    st.floats(allow_nan=False, allow_infinity=False),
)
_docs = st.recursive(
    st.dictionaries(_keys, _scalars, max_size=6),
    lambda inner: st.dictionaries(
        _keys, st.one_of(_scalars, inner, st.lists(_scalars, max_size=4)), max_size=5
    ),
    max_leaves=30,
)


def _nesting(value: Any) -> int:
    """Container levels: the parsers refuse more than their MAX_DEPTH + 1 (the top one)."""
    if isinstance(value, dict):
        return 1 + max(map(_nesting, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(_nesting, value), default=0)
    return 0


@settings(max_examples=200, deadline=None)
@given(_docs)
def test_bson_round_trip(doc: dict[str, Any]) -> None:
    if _nesting(doc) > mongodb.MAX_DEPTH + 1:
        assert mongodb.parse_bson(_bson(doc)) is None
        return
    assert mongodb.parse_bson(_bson(doc)) == {k: v for k, v in doc.items()}


def test_bson_encoder_matches_the_spec_examples() -> None:
    # bsonspec.org's examples: {"hello": "world"} and {"BSON": ["awesome", 5.05, 1986]}
    assert mongodb.encode({"hello": "world"}) == (
        b"\x16\x00\x00\x00\x02hello\x00\x06\x00\x00\x00world\x00\x00"
    )
    spec = b"1\x00\x00\x00\x04BSON\x00&\x00\x00\x00\x020\x00\x08\x00\x00\x00awesome\x00\x011\x00333333\x14@\x102\x00\xc2\x07\x00\x00\x00\x00"
    assert mongodb.parse_bson(spec) == {"BSON": ["awesome", 5.05, 1986]}


_amqp_values = st.recursive(
    st.one_of(st.booleans(), st.integers(-(2**31), 2**31 - 1), _clean_text),
    lambda inner: st.one_of(st.dictionaries(_keys, inner, max_size=4), st.lists(inner, max_size=4)),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(_keys, _amqp_values, max_size=8))
def test_amqp_table_round_trip(table: dict[str, Any]) -> None:
    raw = _amqp_table(table)
    if _nesting(table) > amqp.MAX_DEPTH + 1:
        assert amqp.parse_table(raw) is None
    else:
        assert amqp.parse_table(raw) == (table, len(raw))


def test_ber_long_lengths_and_the_probe_request() -> None:
    values = [f"dc=x{i},dc=test" for i in range(20)]  # > 127 bytes: long-form lengths
    msg = ldap.parse_message(_ldap_msg(1, _ldap_entry({"namingContexts": values})))
    assert msg is not None and msg.attributes == {"namingContexts": values}
    request = ldap.search_request(1)
    outer = ldap.read_tlv(request, 0, len(request))
    assert outer is not None and outer[2] == len(request)


# -- parsers: arbitrary and mutated bytes never raise, stay clean and bounded ---------------------------

RECOGNIZERS = [redis.recognize, postgresql.recognize, mysql.recognize, memcached.recognize, ldap.recognize]
RECOGNIZERS.append(amqp.recognize)

SAMPLES = {
    "mysql": _mysql_handshake(b"8.0.36", 0x80A00 | 0xFFFF, b"caching_sha2_password"),
    "mongodb": _op_msg(1, 1, HELLO_7),
    "ldap": _ldap_msg(1, _ldap_entry({"vendorName": ["x"], "namingContexts": ["dc=a", "dc=b"]})),
    "ldap_done": _ldap_msg(0, _ldap_result(0x78, 2, b"bye", _ber(0x8A, b"1.3.6.1.4.1.1466.20036"))),
    "amqp": _connection_start(RABBIT),
    "pg": _pg(b"E", b"SFATAL\0VFATAL\0C28000\0Mno pg_hba.conf entry\0\0"),
    "redis": b"$30\r\n# Server\r\nredis_version:7.0.15\r\n",
}


def _parse_everything(data: bytes) -> list[Any]:
    out: list[Any] = [r(data) for r in RECOGNIZERS]
    out += [redis.parse_reply(data), redis.parse_info(data), postgresql.parse_message(data)]
    out += [mysql.parse_handshake(data), mongodb.parse_bson(data), mongodb.parse_reply(data)]
    out.append(mongodb._document(data, 0, len(data), 0, mongodb._Budget()))  # without parse_bson's guard
    out += [memcached.parse_version(data), memcached.parse_stats(data.split(b"\n"))]
    out += [ldap.parse_message(data), amqp.parse_table(data), amqp.parse_frame(data), amqp.parse_start(data)]
    out += [amqp.header_version(data), ldap.message_length(data), mysql.packet(data)]
    return out


def _check_all(data: bytes) -> None:
    parsed = _parse_everything(data)
    assert_clean(parsed, PARSED)
    assert _size(parsed) < 64 * len(data) + 20000


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=4096))
def test_parsers_on_arbitrary_bytes(data: bytes) -> None:
    _check_all(data)


@settings(max_examples=500, deadline=None)
@given(
    st.sampled_from(sorted(SAMPLES)),
    st.lists(st.tuples(st.integers(0, 4095), st.integers(0, 255)), max_size=6),
    st.integers(0, 4096),
    st.binary(max_size=64),
)
def test_parsers_on_mutated_protocol_messages(
    name: str, flips: list[tuple[int, int]], cut: int, tail: bytes
) -> None:
    data = bytearray(SAMPLES[name])
    for pos, value in flips:
        data[pos % len(data)] = value
    _check_all(bytes(data[:cut]) + tail)
    _check_all(bytes(data))


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from([b"+", b"-", b":", b"$", b"*", b"-ERR ", b"-NOAUTH ", b"$-1", b"$99999999999"]),
    st.binary(max_size=512),
)
def test_resp_prefixes(prefix: bytes, rest: bytes) -> None:
    _check_all(prefix + rest)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200).filter(lambda b: b"\x00" not in b))
def test_mysql_versions_in_a_valid_handshake(version: bytes) -> None:
    ident = mysql.parse_handshake(_mysql_handshake(version, 0x80A00, b"mysql_native_password"))
    assert_clean(ident, PARSED)
    if ident is not None:
        assert ident.product in ("MySQL", "MariaDB", "TiDB")
        assert ident.version is None or re.fullmatch(r"[0-9][0-9A-Za-z.\-]*", ident.version)


def test_known_answers() -> None:
    assert redis.recognize(b"-NOAUTH Authentication required.\r\n") is not None
    assert redis.recognize(b"-ERR Invalid command\r\n") is None  # POP3-like wording is not Redis's
    assert postgresql.recognize(SAMPLES["pg"]) is not None
    assert postgresql.recognize(b"E" + b"\x00" * 8) is None
    pg = postgresql.parse_message(SAMPLES["pg"])
    assert pg is not None and pg[0].fields["C"] == "28000"
    assert mysql.recognize(SAMPLES["mysql"]) is not None and mysql.recognize(b"SSH-2.0-x\r\n") is None
    assert (
        amqp.header_version(b"AMQP\x01\x01\x00\x09") == "0-9"
        and amqp.header_version(b"AMQP\x01\x01\x08\x00") == "0-8"
    )
    assert (
        memcached.parse_version(b"VERSION 1.6.18\r\n") == "1.6.18"
        and memcached.parse_version(b"VERSION \x1b\r\n") is None
    )
    reply = mongodb.parse_reply(SAMPLES["mongodb"], 1)
    assert reply is not None and reply["maxWireVersion"] == 21
    assert mongodb.parse_reply(SAMPLES["mongodb"], 2) is None  # not an answer to our request
