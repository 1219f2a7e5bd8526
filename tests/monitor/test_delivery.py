"""Alert delivery (monitor/delivery.py, monitor/sinks.py) against real receivers on loopback.

A real SMTP server (aiosmtpd: plain, STARTTLS with AUTH, implicit TLS) started and stopped on one port
while alerts wait in a real history store (SQLite, and PostgreSQL where it matters); a real HTTP server
for webhooks (JSON, Slack, apprise's json://); a real program for exec; a unix datagram socket bound in
tmp_path for syslog and the journal's native protocol. Crashes are real too: a subprocess running
deliver_due kills itself with SIGKILL between steps.

Time is passed in (`now`), never waited for: a 30 s backoff is a later `now`, not a sleep.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import logging
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import AuthResult, LoginPassword

from portscope.model import Event, Listener
from portscope.monitor.alerts import Alert, cycle_key
from portscope.monitor.delivery import (
    BACKOFF_FIRST,
    BACKOFF_MAX,
    abandon_orphans,
    backoff,
    deliver_due,
    queue_cycle,
)
from portscope.monitor.sinks import SendError, Sink, build_sink
from portscope.monitor.store import Store
from tests.monitor.servers import Receiver, SmtpServer, free_port

T0 = dt.datetime(2024, 5, 1, 23, 0, tzinfo=dt.UTC)
EVIL = "evil\r\nBcc: x@y"


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def event(ev_id: str, port: int = 4444, process: str = "nc", kind: str = "listener_added") -> Event:
    state = Listener("tcp", "0.0.0.0", port, process, "mallory", None, None, [4242]).to_dict()
    added = kind != "listener_removed"
    return Event(
        id=ev_id,
        kind=kind,
        host="alpha",
        at=T0.isoformat(),
        summary=f"{process} {'listens' if added else 'stopped listening'} on {port}/tcp",
        proto="tcp",
        address="0.0.0.0",
        port=port,
        before=None if added else state,
        after=state if added else None,
    )


@pytest.fixture
def any_store(db: str) -> Iterator[Store]:
    """The history store on both backends (the outbox's claims and sent times are SQL)."""
    with Store.open(db) as store:
        yield store


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store.open(str(tmp_path / "history.db")) as s:
        yield s


# -- a real SMTP server -------------------------------------------------------------------------------------


def mail_sink(port: int, **extra: Any) -> Sink:
    conf = {
        "type": "email",
        "host": "127.0.0.1",
        "port": port,
        "from": "portscope@example.net",
        "to": ["ops@example.net", "sec@example.net"],
        "timeout": 10,
        **extra,
    }
    return build_sink("mail", conf)


def make_cert(d: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (and its key): the mail server's, and the CA the
    sink is told to trust (ca_file)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "portscope test mail server")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = d / "smtp.pem", d / "smtp.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


def server_tls(d: Path) -> tuple[Any, Path]:
    import ssl

    cert, key = make_cert(d)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    return ctx, cert


def check_login(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (
        b"portscope",
        b"s3cret",
    )
    return AuthResult(success=ok, handled=False)  # handled=False: aiosmtpd answers 535 itself


# -- email ----------------------------------------------------------------------------------------------------


def test_one_mail_per_cycle_to_every_recipient_with_only_our_headers(store: Store, smtp: SmtpServer) -> None:
    sink = mail_sink(smtp.port)
    evs = [event("e-1", 4444, process=EVIL), event("e-2", 22, "sshd", "listener_removed")]
    queued = queue_cycle(store, "alpha", evs, [sink], T0)
    assert queued.queued == ["mail"] and queued.new_events == ["e-1", "e-2"]
    assert queued.keys == {"mail": cycle_key(evs)}

    report = deliver_due(store, [sink], T0)
    assert (report.sent, report.messages, report.retrying, report.errors) == (1, 1, 0, [])
    (got,) = smtp.box.received
    assert got.mail_from == "portscope@example.net"
    assert got.rcpt_tos == ["ops@example.net", "sec@example.net"]  # nothing the process name added
    msg = got.msg
    assert msg["Message-ID"] == f"<{cycle_key(evs)}@example.net>"
    assert msg["Subject"] == "[portscope] alpha: 2 changes (1 listener added, 1 listener removed)"
    assert "Bcc" not in msg and msg["To"] == "ops@example.net, sec@example.net"
    body = msg.get_content()
    assert (
        "process evil\\x0d\\x0aBcc: x@y, user mallory" in body and "sshd stopped listening on 22/tcp" in body
    )
    assert not got.tls and not got.authenticated

    assert deliver_due(store, [sink], at(3600)).sent == 0  # sent is sent
    (item,) = store.outbox_items(state="sent")
    assert item.sent_at == T0 and item.attempts == 1


def test_starttls_with_login_and_the_password_from_the_environment(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx, cert = server_tls(tmp_path)
    server = SmtpServer(
        tls_context=ctx,
        require_starttls=True,
        auth_required=True,
        auth_require_tls=True,
        authenticator=check_login,
    )
    server.start()
    try:
        sink = mail_sink(
            server.port,
            starttls=True,
            ca_file=str(cert),
            user="portscope",
            password_env="PORTSCOPE_TEST_SMTP_PASSWORD",
        )
        queue_cycle(store, "alpha", [event("e-1")], [sink], T0)
        monkeypatch.delenv("PORTSCOPE_TEST_SMTP_PASSWORD", raising=False)
        report = deliver_due(store, [sink], T0)
        assert report.retrying == 1
        assert report.errors == [
            "mail: the environment variable PORTSCOPE_TEST_SMTP_PASSWORD (the SMTP password) is not set"
        ]

        monkeypatch.setenv("PORTSCOPE_TEST_SMTP_PASSWORD", "wrong")
        report = deliver_due(store, [sink], at(60))
        assert report.retrying == 1 and "answered 535" in report.errors[0]

        monkeypatch.setenv("PORTSCOPE_TEST_SMTP_PASSWORD", "s3cret")
        assert deliver_due(store, [sink], at(600)).sent == 1
        (got,) = server.box.received
        assert got.tls and got.authenticated
        assert got.rcpt_tos == ["ops@example.net", "sec@example.net"]

        untrusting = mail_sink(
            server.port, starttls=True, user="portscope", password_env="PORTSCOPE_TEST_SMTP_PASSWORD"
        )
        with pytest.raises(SendError, match="CERTIFICATE_VERIFY_FAILED"):
            untrusting.send(Alert.from_payload("k", event("e-9").to_dict()), T0)
    finally:
        server.stop()


def test_implicit_tls(store: Store, tmp_path: Path) -> None:
    ctx, cert = server_tls(tmp_path)
    server = SmtpServer(ssl_context=ctx)
    server.start()
    try:
        sink = mail_sink(server.port, tls=True, ca_file=str(cert))
        queue_cycle(store, "alpha", [event("e-1")], [sink], T0)
        assert deliver_due(store, [sink], T0).sent == 1
        (got,) = server.box.received
        assert got.tls
        assert got.msg["Subject"] == "[portscope] alpha: listener_added tcp 0.0.0.0:4444 (nc)"
        with pytest.raises(SendError, match="CERTIFICATE_VERIFY_FAILED"):  # the system CAs: not ours
            mail_sink(server.port, tls=True).send(Alert.from_payload("k", event("e-9").to_dict()), T0)
    finally:
        server.stop()


def test_a_mail_server_that_is_down_gets_the_alert_once_when_it_is_back(any_store: Store) -> None:
    store = any_store
    server = SmtpServer()  # its port is known, nothing listens there yet
    sink = mail_sink(server.port)
    try:
        queue_cycle(store, "alpha", [event("e-1")], [sink], T0)
        report = deliver_due(store, [sink], T0)
        assert (report.sent, report.retrying) == (0, 1)
        assert "Connection refused" in report.errors[0]
        (item,) = store.outbox_items(state="pending")
        assert at(30 * 0.75) <= item.next_attempt_at <= at(30)  # first backoff, jittered
        assert item.last_error is not None and "Connection refused" in item.last_error
        assert deliver_due(store, [sink], at(10)).sent == 0  # not due yet: nothing is tried

        server.start()
        report = deliver_due(store, [sink], at(31))
        assert (report.sent, report.retrying) == (1, 0)
        for later in (60, 3600, 86400):
            assert deliver_due(store, [sink], at(later)).sent == 0
        assert len(server.box.received) == 1

        # Again, down for two attempts this time: the second waits longer, then it goes, once.
        server.stop()
        queue_cycle(store, "alpha", [event("e-2", 8080)], [sink], at(7200))
        assert deliver_due(store, [sink], at(7200)).retrying == 1
        assert deliver_due(store, [sink], at(7231)).retrying == 1
        (item,) = store.outbox_items(state="pending")
        assert item.attempts == 2 and at(7231 + 45) <= item.next_attempt_at <= at(7231 + 60)
        server.start()
        assert deliver_due(store, [sink], at(7300)).sent == 1
        assert len(server.box.received) == 2 and len(set(server.box.message_ids())) == 2
    finally:
        server.stop()


# -- crashes --------------------------------------------------------------------------------------------------

CRASH = r"""
import datetime as dt, os, signal, sys
from portscope.model import Event
from portscope.monitor.delivery import deliver_due, queue_cycle
from portscope.monitor.sinks import build_sink
from portscope.monitor.store import Store

db, port, when, step, events = sys.argv[1], int(sys.argv[2]), dt.datetime.fromisoformat(sys.argv[3]), sys.argv[4], sys.argv[5]
sink = build_sink("mail", {"type": "email", "host": "127.0.0.1", "port": port, "timeout": 10,
                           "from": "portscope@example.net", "to": ["ops@example.net"]})
real_send = sink.send

def send(alert, now):
    if step == "before-send":
        os.kill(os.getpid(), signal.SIGKILL)
    real_send(alert, now)
    if step == "after-send":  # the server said 250, mark_sent never happens
        os.kill(os.getpid(), signal.SIGKILL)

sink.send = send
with Store.open(db) as store:
    if events:
        queue_cycle(store, "alpha", [Event(**e) for e in __import__("json").loads(events)], [sink], when)
    deliver_due(store, [sink], when)
    if step == "after-deliver":  # watch killed after a failed attempt, before it comes round again
        os.kill(os.getpid(), signal.SIGKILL)
print("not killed")
"""


def run_crashing(db: Path, port: int, when: dt.datetime, step: str, events: Sequence[Event] = ()) -> None:
    payload = json.dumps([e.to_dict() for e in events]) if events else ""
    proc = subprocess.run(
        [sys.executable, "-c", CRASH, str(db), str(port), when.isoformat(), step, payload],
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]


def test_watch_killed_while_the_mail_server_is_down_loses_nothing(tmp_path: Path) -> None:
    db = tmp_path / "history.db"
    server = SmtpServer()
    evs = [event("e-1"), event("e-2", 8080)]
    try:
        run_crashing(db, server.port, T0, "after-deliver", evs)  # queued, tried, refused, SIGKILL
        with Store.open(str(db)) as store:
            (item,) = store.outbox_items(state="pending")
            assert item.attempts == 1 and "Connection refused" in str(item.last_error)
            sink = mail_sink(server.port)
            # watch restarts and redoes the cycle it was in: the same events, the same message.
            assert queue_cycle(store, "alpha", evs, [sink], at(20)).queued == []
            server.start()
            assert deliver_due(store, [sink], at(60)).sent == 1
            assert deliver_due(store, [sink], at(86400)).sent == 0
        assert len(server.box.received) == 1
        assert server.box.message_ids() == [f"<{cycle_key(evs)}@example.net>"]
    finally:
        server.stop()


@pytest.mark.parametrize(("step", "copies"), [("before-send", 1), ("after-send", 2)])
def test_killed_between_claim_and_mark_sent_is_at_least_once_with_one_message_id(
    tmp_path: Path, smtp: SmtpServer, step: str, copies: int
) -> None:
    """SIGKILL after the server took the mail but before mark_sent: it is sent again after the claim's
    lease, with the same Message-ID, so the receiver can drop the copy (exactly once needs that
    receiver-side dedup; the sender alone cannot tell "sent, then crashed" from "crashed")."""
    db = tmp_path / "history.db"
    evs = [event("e-1")]
    run_crashing(db, smtp.port, T0, step, evs)
    assert len(smtp.box.received) == copies - 1
    with Store.open(str(db)) as store:
        (item,) = store.outbox_items(state="pending")
        assert item.attempts == 1
        sink = mail_sink(smtp.port)
        assert deliver_due(store, [sink], at(60)).sent == 0  # still leased to the dead process
        assert deliver_due(store, [sink], at(3600)).sent == 1
        assert deliver_due(store, [sink], at(7200)).sent == 0
    assert len(smtp.box.received) == copies
    assert set(smtp.box.message_ids()) == {f"<{cycle_key(evs)}@example.net>"}  # a receiver keeps one


# -- webhooks ---------------------------------------------------------------------------------------------------


def test_webhook_json_is_retried_and_keyed_for_the_receiver(any_store: Store, receiver: Receiver) -> None:
    store = any_store
    sink = build_sink("hook", {"type": "webhook", "url": f"http://127.0.0.1:{receiver.port}/hook"})
    evs = [event("e-1", process=EVIL), event("e-2", 8080)]
    queue_cycle(store, "alpha", evs, [sink], T0)
    receiver.answers = [500]
    report = deliver_due(store, [sink], T0)
    assert report.retrying == 1
    assert report.errors[0].endswith("answered HTTP 500: busy\\x1b[2J, try later")  # cleaned
    assert "/hook" not in report.errors[0]  # the URL's path may be its secret
    assert deliver_due(store, [sink], at(31)).sent == 1

    first, second = receiver.requests
    key = cycle_key(evs)
    assert first.headers["idempotency-key"] == second.headers["idempotency-key"] == key
    assert second.path == "/hook" and second.headers["content-type"].startswith("application/json")
    data = second.json()
    assert (data["key"], data["host"], data["merged"]) == (key, "alpha", 1)
    assert [e["id"] for e in data["events"]] == ["e-1", "e-2"]
    assert data["events"][0]["after"]["process"] == "evil\\x0d\\x0aBcc: x@y"
    assert data["counts"] == {"listener_added": 2}
    assert data["subject"] == "[portscope] alpha: 2 changes (2 listener added)"
    assert len({r.headers["idempotency-key"] for r in receiver.requests}) == 1  # one alert for a deduper


def test_a_redirect_is_not_followed(receiver: Receiver) -> None:
    """urllib would turn a redirected POST into a GET without the alert: it is a failure instead."""
    sink = build_sink("hook", {"type": "webhook", "url": f"http://127.0.0.1:{receiver.port}/hook"})
    receiver.answers = [302]
    with pytest.raises(SendError, match="answered HTTP 302"):
        sink.send(Alert.from_payload("k", event("e-1").to_dict()), T0)
    assert [r.path for r in receiver.requests] == ["/hook"]


def test_slack_format_and_a_url_from_the_environment(
    store: Store, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    sink = build_sink("chat", {"type": "webhook", "format": "slack", "url_env": "PORTSCOPE_TEST_HOOK"})
    queue_cycle(store, "alpha", [event("e-1", process=EVIL)], [sink], T0)
    assert "PORTSCOPE_TEST_HOOK" in deliver_due(store, [sink], T0).errors[0]
    monkeypatch.setenv("PORTSCOPE_TEST_HOOK", f"http://127.0.0.1:{receiver.port}/services/T0/B0/secret")
    assert deliver_due(store, [sink], at(60)).sent == 1
    (req,) = receiver.requests
    text = req.json()["text"]
    assert text.startswith("[portscope] alpha: listener_added tcp 0.0.0.0:4444 (evil\\x0d\\x0aBcc: x@y)\n")
    assert "\r" not in text


def test_apprise_speaks_the_service_api(store: Store, receiver: Receiver) -> None:
    """format = "apprise": the URL picks a service (slack://, msteams://, tgram://, ...). Only
    loopback is reachable here, so apprise's generic json:// service stands in for them."""
    sink = build_sink(
        "chat", {"type": "webhook", "format": "apprise", "url": f"json://127.0.0.1:{receiver.port}/notify"}
    )
    queue_cycle(store, "alpha", [event("e-1"), event("e-2", 8080)], [sink], T0)
    receiver.answers = [503]
    report = deliver_due(store, [sink], T0)
    assert report.retrying == 1 and report.errors[0].startswith("chat: apprise")
    assert deliver_due(store, [sink], at(60)).sent == 1
    assert [r.path for r in receiver.requests] == ["/notify", "/notify"]
    data = receiver.requests[-1].json()
    assert data["title"] == "[portscope] alpha: 2 changes (2 listener added)"
    assert "portscope watch on alpha saw 2 changes" in data["message"]


# -- exec -----------------------------------------------------------------------------------------------------


def notify_script(tmp_path: Path) -> Path:
    prog = tmp_path / "notify"
    prog.write_text(
        f"#!{sys.executable}\n"
        "import json, os, sys, time\n"
        "mode, out = sys.argv[1], sys.argv[2]\n"
        "data = json.load(sys.stdin)\n"
        "open(out + '.pid', 'w').write(str(os.getpid()))\n"
        "if mode == 'fail':\n"
        "    print('no pager\\x1b[31m configured', file=sys.stderr); sys.exit(3)\n"
        "if mode == 'hang':\n"
        "    time.sleep(300)\n"
        "with open(out, 'a') as f:\n"
        "    env = {k: v for k, v in os.environ.items() if k.startswith('PORTSCOPE_')}\n"
        "    f.write(json.dumps({'stdin': data, 'env': env}) + '\\n')\n"
    )
    prog.chmod(0o755)
    return prog


def test_exec_runs_a_program_with_the_alert_on_stdin(store: Store, tmp_path: Path) -> None:
    prog, out = notify_script(tmp_path), tmp_path / "got.jsonl"
    ok = build_sink("run", {"type": "exec", "command": [str(prog), "ok", str(out)]})
    evs = [event("e-1", process=EVIL)]
    queue_cycle(store, "alpha", evs, [ok], T0)
    assert deliver_due(store, [ok], T0).sent == 1
    (line,) = out.read_text().splitlines()
    got = json.loads(line)
    assert got["stdin"]["key"] == cycle_key(evs) and got["stdin"]["events"][0]["id"] == "e-1"
    assert got["env"]["PORTSCOPE_ALERT_KEY"] == cycle_key(evs)
    assert got["env"]["PORTSCOPE_SINK"] == "run" and got["env"]["PORTSCOPE_EVENTS"] == "1"
    assert "\r" not in got["env"]["PORTSCOPE_SUBJECT"]


def test_exec_failure_and_timeout(tmp_path: Path) -> None:
    prog, out = notify_script(tmp_path), tmp_path / "got.jsonl"
    alert = Alert.from_payload("k", event("e-1").to_dict())
    fail = build_sink("run", {"type": "exec", "command": [str(prog), "fail", str(out)]})
    with pytest.raises(SendError) as caught:
        fail.send(alert, T0)
    assert str(caught.value).endswith("failed (exit status 3): no pager\\x1b[31m configured")

    hang = build_sink("run", {"type": "exec", "command": [str(prog), "hang", str(out)], "timeout": 1})
    with pytest.raises(SendError, match="did not finish within 1 s"):
        hang.send(alert, T0)
    pid = int((tmp_path / "got.jsonl.pid").read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # killed and reaped, not left behind
    assert not out.exists()


# -- syslog / journal ---------------------------------------------------------------------------------------------


@pytest.fixture
def log_socket(tmp_path: Path) -> Iterator[tuple[Path, socket.socket]]:
    path = tmp_path / "log.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(10)
    try:
        yield path, sock
    finally:
        sock.close()


def test_syslog_one_line_per_event(store: Store, log_socket: tuple[Path, socket.socket]) -> None:
    path, sock = log_socket
    sink = build_sink("log", {"type": "syslog", "address": str(path), "format": "syslog", "tag": "portscope"})
    queue_cycle(
        store, "alpha", [event("e-1", process=EVIL), event("e-2", 22, "sshd", "listener_removed")], [sink], T0
    )
    assert deliver_due(store, [sink], T0).sent == 1
    lines = [sock.recv(65536).decode() for _ in range(2)]
    for line in lines:
        assert line.startswith("<28>")  # daemon.warning
        assert f" portscope[{os.getpid()}]: alpha listener_" in line
        assert not any(ord(c) < 32 for c in line)
    assert "listener_added tcp 0.0.0.0:4444 (process evil\\x0d\\x0aBcc: x@y, user mallory" in lines[0]
    assert "listener_removed tcp 0.0.0.0:22 (process sshd" in lines[1]


def test_journal_native_fields(log_socket: tuple[Path, socket.socket]) -> None:
    path, sock = log_socket
    sink = build_sink(
        "log", {"type": "syslog", "address": str(path), "format": "journal", "facility": "local0"}
    )
    alert = Alert.from_payload("c-abc", {"host": "alpha", "events": [event("e-1", process=EVIL).to_dict()]})
    sink.send(alert, T0)
    raw = sock.recv(65536).decode()
    assert raw.endswith("\n")
    fields = dict(line.split("=", 1) for line in raw[:-1].split("\n"))
    assert fields["PRIORITY"] == "4" and fields["SYSLOG_FACILITY"] == "16"
    assert fields["SYSLOG_IDENTIFIER"] == "portscope" and fields["PORTSCOPE_ALERT"] == "c-abc"
    assert (fields["PORTSCOPE_EVENT_ID"], fields["PORTSCOPE_EVENT_PORT"]) == ("e-1", "4444")
    assert "evil\\x0d\\x0aBcc: x@y" in fields["MESSAGE"]


def test_no_syslog_listening_is_a_retry(store: Store, tmp_path: Path) -> None:
    sink = build_sink("log", {"type": "syslog", "address": str(tmp_path / "nobody.sock"), "format": "syslog"})
    queue_cycle(store, "alpha", [event("e-1")], [sink], T0)
    report = deliver_due(store, [sink], T0)
    assert report.retrying == 1 and "No such file or directory" in report.errors[0]


# -- rate limit, backoff, giving up -------------------------------------------------------------------------------


def test_past_the_rate_limit_alerts_are_merged_never_dropped(any_store: Store, receiver: Receiver) -> None:
    store = any_store
    sink = build_sink(
        "hook", {"type": "webhook", "url": f"http://127.0.0.1:{receiver.port}/h", "max_per_hour": 2}
    )
    for minute in range(5):  # a flapping port: a change every minute
        queue_cycle(store, "alpha", [event(f"e-{minute}", 9000 + minute)], [sink], at(60 * minute))
        report = deliver_due(store, [sink], at(60 * minute))
        if minute < 2:
            assert report.sent == 1
        else:
            assert report.sent == 0 and report.limited == {"hook": at(3600)}  # first send + 1 h
    assert len(receiver.requests) == 2
    assert len(store.outbox_items(state="pending")) == 3

    report = deliver_due(store, [sink], at(3601))  # one slot free, three waiting: one merged message
    assert (report.sent, report.messages, report.merged) == (3, 1, 3)
    merged = receiver.requests[-1].json()
    assert merged["merged"] == 3 and [e["id"] for e in merged["events"]] == ["e-2", "e-3", "e-4"]
    assert "3 alerts merged into one by the rate limit (at most 2 messages an hour)" in merged["text"]
    assert store.outbox_items(state="pending") == []
    assert deliver_due(store, [sink], at(3605)).sent == 0
    # Any hour held at most 2 messages: sends at 0, 60 and 3601 s.
    assert len(receiver.requests) == 3


def test_a_backlog_after_an_outage_is_one_merged_message(store: Store, receiver: Receiver) -> None:
    sink = build_sink(
        "hook", {"type": "webhook", "url": f"http://127.0.0.1:{receiver.port}/h", "max_per_hour": 3}
    )
    for n in range(5):
        queue_cycle(store, "alpha", [event(f"e-{n}", 9000 + n)], [sink], at(n))
    receiver.answers = [503]
    assert deliver_due(store, [sink], at(10)).retrying == 5  # tried once (merged), all rescheduled
    report = deliver_due(store, [sink], at(3600))
    assert (report.sent, report.messages) == (5, 1)
    assert receiver.requests[-1].json()["merged"] == 5


def test_backoff_doubles_to_an_hour_with_jitter() -> None:
    import random

    rng = random.Random(7)
    for attempt, plain in [(1, 30), (2, 60), (3, 120), (7, 1920), (8, 3600), (50, 3600)]:
        for _ in range(20):
            wait = backoff(attempt, rng).total_seconds()
            assert plain * 0.75 <= wait <= plain
    assert backoff(1, rng) <= BACKOFF_FIRST and backoff(10**6, rng) <= BACKOFF_MAX


def test_a_message_failing_for_a_week_is_given_up_and_logged(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    sink = mail_sink(free_port())  # nothing listens
    queue_cycle(store, "alpha", [event("e-1")], [sink], T0)
    assert deliver_due(store, [sink], T0).retrying == 1
    assert deliver_due(store, [sink], at(6 * 86400)).retrying == 1
    with caplog.at_level(logging.ERROR, logger="portscope.monitor.delivery"):
        report = deliver_due(store, [sink], at(7 * 86400 + 1))
    assert report.gave_up == 1
    assert "giving up alert" in caplog.text and "Connection refused" in caplog.text
    (item,) = store.outbox_items(state="failed")
    assert item.attempts == 3
    assert deliver_due(store, [sink], at(30 * 86400)).sent == 0


def test_unreadable_messages_and_orphans_are_given_up(store: Store, tmp_path: Path) -> None:
    sink = build_sink("log", {"type": "syslog", "address": str(tmp_path / "x.sock"), "format": "syslog"})
    store.enqueue("log", "garbage", ["not", "an", "alert"], host="alpha", now=T0)
    assert deliver_due(store, [sink], T0).gave_up == 1
    store.enqueue("renamed", "k", {"events": []}, host="alpha", now=T0)
    assert abandon_orphans(store, [sink], at(86400)) == 0  # young: the sink may come back
    assert abandon_orphans(store, [sink], at(8 * 86400)) == 1
    assert [i.dedup_key for i in store.outbox_items(state="failed")] == ["garbage", "k"]


class Broken(Sink):
    type = "broken"
    keys = ()
    default_timeout = 1.0

    def send(self, alert: Alert, now: dt.datetime) -> None:
        raise KeyError("a bug")


def test_a_sink_with_a_bug_does_not_stop_the_others(store: Store, tmp_path: Path, receiver: Receiver) -> None:
    from portscope.monitor.sinks import _Conf

    broken = Broken(_Conf("broken", "broken", {}, ()))
    hook = build_sink("hook", {"type": "webhook", "url": f"http://127.0.0.1:{receiver.port}/h"})
    queue_cycle(store, "alpha", [event("e-1")], [broken, hook], T0)
    report = deliver_due(store, [broken, hook], T0)
    assert (report.sent, report.retrying) == (1, 1)
    assert report.errors == ["broken: KeyError: 'a bug'"]


def test_a_sink_gets_only_the_kinds_it_asked_for(store: Store, receiver: Receiver) -> None:
    url = f"http://127.0.0.1:{receiver.port}/h"
    gone = build_sink("gone", {"type": "webhook", "url": url, "events": ["listener_removed"]})
    added = [event("e-1"), event("e-2", 8080)]
    assert queue_cycle(store, "alpha", added, [gone], T0).keys == {}
    removed = event("e-3", 22, "sshd", "listener_removed")
    queued = queue_cycle(store, "alpha", [*added, removed], [gone], at(5))
    assert queued.keys == {"gone": cycle_key([removed])}
    assert deliver_due(store, [gone], at(5)).sent == 1
    assert [e["id"] for e in receiver.requests[0].json()["events"]] == ["e-3"]


def test_syslog_over_udp_names_this_host(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.settimeout(10)
        port = listener.getsockname()[1]
        sink = build_sink("remote", {"type": "syslog", "address": f"127.0.0.1:{port}", "facility": "local7"})
        sink.send(Alert.from_payload("k", event("e-1").to_dict()), T0)
        line = listener.recv(65536).decode()
    assert line.startswith("<188>")  # local7.warning
    assert f" {socket.gethostname()} portscope[{os.getpid()}]: alpha listener_added tcp 0.0.0.0:4444" in line


def test_auto_picks_the_journal_when_its_socket_exists(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, log_socket: tuple[Path, socket.socket]
) -> None:
    from portscope.monitor import sinks

    path, sock = log_socket
    sink = build_sink("log", {"type": "syslog"})
    monkeypatch.setattr(sinks, "JOURNAL_SOCKET", str(tmp_path / "no-journal"))
    monkeypatch.setattr(sinks, "SYSLOG_SOCKET", str(path))
    alert = Alert.from_payload("k", event("e-1").to_dict())
    sink.send(alert, T0)
    assert sock.recv(65536).startswith(b"<28>")  # no journald: syslog on /dev/log
    monkeypatch.setattr(sinks, "JOURNAL_SOCKET", str(path))
    monkeypatch.setattr(sinks, "SYSLOG_SOCKET", str(tmp_path / "no-syslog"))
    sink.send(alert, T0)
    assert b"\nSYSLOG_IDENTIFIER=portscope\n" in sock.recv(65536)  # journald there: its own protocol
