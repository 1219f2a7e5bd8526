"""Real servers on loopback for the watch tests: an SMTP server (aiosmtpd), a webhook receiver (an HTTP
server recording what it is sent) and a PostgreSQL server (initdb as the postgres user, trust on
127.0.0.1), shared by the store, delivery and watch tests. The fixtures are exported by conftest.py.
"""

from __future__ import annotations

import email
import email.policy
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- SMTP -----------------------------------------------------------------------------------------------------------


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    tls: bool
    authenticated: bool

    @property
    def msg(self) -> EmailMessage:
        parsed = email.message_from_bytes(self.data, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed


class Mailbox:
    """aiosmtpd handler: keeps what arrived, as a mailbox would."""

    def __init__(self) -> None:
        self.received: list[Received] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.received.append(
            Received(
                envelope.mail_from,
                list(envelope.rcpt_tos),
                envelope.original_content or envelope.content,
                session.ssl is not None or server.transport.get_extra_info("ssl_object") is not None,
                bool(session.authenticated),
            )
        )
        return "250 OK queued"

    def message_ids(self) -> list[str]:
        return [str(r.msg["Message-ID"]) for r in self.received]


class SmtpServer:
    """aiosmtpd on 127.0.0.1, on one port for its whole life: stopped and started again like a
    mail server being restarted."""

    def __init__(self, **smtp_options: Any) -> None:
        self.port = free_port()
        self.box = Mailbox()
        self.options = smtp_options
        self.controller: Controller | None = None

    def start(self) -> None:
        assert self.controller is None
        self.controller = Controller(self.box, hostname="127.0.0.1", port=self.port, **self.options)
        self.controller.start()

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    server = SmtpServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


# -- webhooks ---------------------------------------------------------------------------------------------------


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class Receiver:
    """A real HTTP server on 127.0.0.1 that records what it is sent and answers `answers` first."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.answers: list[int] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(min(length, 10_000_000))
                outer.requests.append(
                    Request(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                )
                status = outer.answers.pop(0) if outer.answers else 200
                self.send_response(status)
                if 300 <= status < 400:
                    self.send_header("Location", "/elsewhere")
                answer = b"busy\x1b[2J, try later" if status >= 300 else b"{}"
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    try:
        yield r
    finally:
        r.close()


# -- PostgreSQL --------------------------------------------------------------------------------------------


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()  # SIGTERM: PostgreSQL's "smart" shutdown is enough, nobody is connected
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[int]:
    """A real PostgreSQL on 127.0.0.1 (a free port), trust authentication, running as postgres."""
    bindir = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name))
    setpriv = shutil.which("setpriv")
    if not bindir or setpriv is None or os.geteuid() != 0:
        pytest.skip("needs PostgreSQL's server binaries, setpriv and root (initdb runs as postgres)")
    import pwd

    pw = pwd.getpwnam("postgres")
    # Not tmp_path: pytest's base dir is root-only, and the server runs as postgres.
    d = Path(tempfile.mkdtemp(prefix="portscope-history-pg-"))
    os.chown(d, pw.pw_uid, pw.pw_gid)
    as_postgres = [setpriv, "--reuid=postgres", "--regid=postgres", "--init-groups", "--"]
    proc: subprocess.Popen[bytes] | None = None
    try:
        initdb = [str(bindir[-1] / "initdb"), "-D", str(d / "data"), "-U", "postgres", "-A", "trust"]
        initdb += ["--no-sync", "--no-instructions", "-E", "UTF8", "--locale=C"]
        subprocess.run([*as_postgres, *initdb], check=True, capture_output=True, cwd=d, timeout=120)
        (d / "data" / "pg_hba.conf").write_text("local all all trust\nhost all all 127.0.0.1/32 trust\n")
        port = free_port()
        argv = [str(bindir[-1] / "postgres"), "-D", str(d / "data"), "-k", str(d), "-p", str(port)]
        argv += ["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "max_connections=60"]
        proc = subprocess.Popen(
            [*as_postgres, *argv], cwd=d, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        end = time.monotonic() + 30
        import psycopg

        while True:  # accepting TCP is not enough: the server refuses logins while it starts up
            if proc.poll() is not None:
                raise RuntimeError(f"postgres exited with {proc.returncode}")
            try:
                psycopg.connect(f"postgresql://postgres@127.0.0.1:{port}/postgres", connect_timeout=2).close()
                break
            except psycopg.OperationalError:
                if time.monotonic() > end:
                    raise
                time.sleep(0.1)
        yield port
    finally:
        if proc is not None:
            _stop(proc)
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def pg_url(pg_server: int) -> Iterator[str]:
    """A new, empty database on the test server: what a fleet's administrator gives watch."""
    import psycopg

    name = f"history_{uuid.uuid4().hex[:12]}"
    admin = f"postgresql://postgres@127.0.0.1:{pg_server}/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql://postgres@127.0.0.1:{pg_server}/{name}"
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
