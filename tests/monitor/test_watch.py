"""`portscope watch` as a real subprocess, alerting through a real SMTP server (aiosmtpd) and a real
webhook receiver on loopback, with its history in SQLite and in a real PostgreSQL.

What the issue asks of it, each seen end to end: a listener opened in a child process is exactly one
email naming the port and the process (and one webhook call); its closing is one `listener_removed`;
a restart shorter than the persistence time is nothing at all; with the mail server down when the
change happens, and watch SIGKILLed and restarted meanwhile, the alert arrives once when the server is
back; two watchers (two host names) writing to one PostgreSQL are told apart by `history --host`.
"""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import portscope
from tests.monitor.servers import Receiver, SmtpServer
from tests.monitor.watchrun import (
    Watches,
    baseline,
    free_server_port,
    jsonl,
    kinds,
    listen,
    stop,
    wait_for,
)


def sinks(smtp: SmtpServer, hook: Receiver | None = None) -> str:
    text = f"""
[[sink]]
type = "email"
name = "mail"
host = "127.0.0.1"
port = {smtp.port}
from = "portscope@example.net"
to = ["ops@example.net", "sec@example.net"]
timeout = 5
"""
    if hook is not None:
        text += f"""
[[sink]]
type = "webhook"
name = "hook"
url = "http://127.0.0.1:{hook.port}/portscope"
timeout = 5
"""
    return text


def comm(proc: subprocess.Popen[bytes]) -> str:
    """The process name watch reports for a listener: the kernel's comm, as ps shows it."""
    return Path(f"/proc/{proc.pid}/comm").read_text().strip()


def cycles(watches: Watches, n: int = -1) -> list[dict[str, Any]]:
    """The JSON cycle reports watch number N has printed so far (it runs with --json)."""
    return jsonl(watches.logs / f"watch{n % len(watches.procs)}.out")


def started(watches: Watches, n: int = -1) -> None:
    """Wait for watch number N's first cycle: what happens after this, it sees happen."""
    proc = watches.procs[n]
    got = wait_for(lambda: cycles(watches, n), lambda c: len(c) >= 1 or proc.poll() is not None, 30)
    assert got, f"watch never finished a cycle: {watches.stderr(n)}"


def mails(smtp: SmtpServer, count: int, seconds: float = 20) -> list[Any]:
    return wait_for(lambda: list(smtp.box.received), lambda r: len(r) >= count, seconds)


def test_a_listener_that_comes_and_goes_is_one_email_and_one_webhook_each_way(
    tmp_path: Path, db: str, smtp: SmtpServer, receiver: Receiver, watches: Watches
) -> None:
    port = free_server_port()
    file = tmp_path / "portscope.toml"
    file.write_text(baseline(port, sinks(smtp, receiver), persist=1))
    watches.start(file, db, "alpha", "--json", "--interval", "0.4")
    started(watches)

    listener = listen(port)
    name = comm(listener)
    got = mails(smtp, 1)
    assert len(got) == 1, watches.stderr()
    msg = got[0].msg
    assert f"{port}" in msg["Subject"] and name in msg["Subject"] and "alpha" in msg["Subject"]
    body = msg.get_body(("plain",)).get_content()
    assert f"tcp 0.0.0.0:{port}" in body and name in body and "listener_added" in body
    assert sorted(got[0].rcpt_tos) == ["ops@example.net", "sec@example.net"]
    hooks = wait_for(lambda: list(receiver.requests), lambda r: len(r) >= 1)
    assert [kinds(r.json()) for r in hooks] == [[("listener_added", port)]]
    assert hooks[0].json()["events"][0]["after"]["process"] == name

    stop(listener)
    got = mails(smtp, 2)
    assert len(got) == 2
    assert "listener_removed" in got[1].msg["Subject"] and f"{port}" in got[1].msg["Subject"]
    hooks = wait_for(lambda: list(receiver.requests), lambda r: len(r) >= 2)
    assert [kinds(r.json()) for r in hooks] == [[("listener_added", port)], [("listener_removed", port)]]

    n = len(cycles(watches))
    wait_for(lambda: cycles(watches), lambda c: len(c) >= n + 4, 5)  # a few more cycles...
    assert len(smtp.box.received) == 2 and len(receiver.requests) == 2  # and nothing more
    assert len(set(smtp.box.message_ids())) == 2


def test_a_restart_shorter_than_the_persistence_time_alerts_nobody(
    tmp_path: Path, db: str, smtp: SmtpServer, receiver: Receiver, watches: Watches
) -> None:
    port = free_server_port()
    listener = listen(port)
    expected = (
        f'[[listener]]\nproto = "tcp"\nport = {port}\naddress = "0.0.0.0"\nprocess = "{comm(listener)}"\n'
    )
    file = tmp_path / "portscope.toml"
    file.write_text(baseline(port, sinks(smtp, receiver), persist=4, extra=expected))
    watches.start(file, db, "alpha", "--json", "--interval", "0.4")
    started(watches)
    assert cycles(watches)[0]["differences"] == []  # as declared

    stop(listener)  # the daemon restarts: gone for a second, back with a new PID
    seen_gone = wait_for(
        lambda: cycles(watches), lambda c: any(d["kind"] == "missing" for x in c for d in x["differences"]), 5
    )
    listener = listen(port)
    try:
        n = len(seen_gone)
        after = wait_for(lambda: cycles(watches), lambda c: len(c) >= n + 15, 15)  # well past persist
        assert any(d["kind"] == "missing" for x in seen_gone for d in x["differences"])  # it was seen...
        assert after[-1]["differences"] == []  # ...and it is back
        assert all(x["events"] == [] for x in after)  # ...and nobody hears of it
        assert smtp.box.received == [] and receiver.requests == []
    finally:
        stop(listener)


def test_sigkill_and_restart_sends_nothing_twice(
    tmp_path: Path, db: str, smtp: SmtpServer, watches: Watches
) -> None:
    port = free_server_port()
    file = tmp_path / "portscope.toml"
    file.write_text(baseline(port, sinks(smtp), persist=1))
    listener = listen(port)
    try:
        watch = watches.start(file, db, "alpha", "--json", "--interval", "0.4")
        assert len(mails(smtp, 1)) == 1, watches.stderr()
        watch.send_signal(signal.SIGKILL)
        watch.wait()
        watches.start(file, db, "alpha", "--json", "--interval", "0.4")
        wait_for(lambda: cycles(watches), lambda c: len(c) >= 6, 20)  # the listener still there
        assert len(cycles(watches)) >= 6
        assert all(x["events"] == [] for x in cycles(watches))  # the restarted watch knew it already
        assert len(smtp.box.received) == 1
    finally:
        stop(listener)


def test_a_listener_that_went_away_while_watch_was_stopped_gets_its_removal_alert(
    tmp_path: Path, db: str, smtp: SmtpServer, watches: Watches
) -> None:
    port = free_server_port()
    file = tmp_path / "portscope.toml"
    file.write_text(baseline(port, sinks(smtp), persist=1))
    listener = listen(port)
    watch = watches.start(file, db, "alpha", "--json", "--interval", "0.4")
    assert len(mails(smtp, 1)) == 1, watches.stderr()
    watch.terminate()  # stopped for an upgrade...
    assert watch.wait(15) == 0
    stop(listener)  # ...and meanwhile the listener goes away
    watches.start(file, db, "alpha", "--json", "--interval", "0.4")
    got = mails(smtp, 2)
    assert len(got) == 2, watches.stderr()
    assert "listener_removed" in got[1].msg["Subject"] and f"{port}" in got[1].msg["Subject"]
    n = len(cycles(watches))
    wait_for(lambda: cycles(watches), lambda c: len(c) >= n + 4, 10)
    assert len(smtp.box.received) == 2


def test_an_alert_made_while_the_mail_server_is_down_arrives_once_across_a_sigkill(
    tmp_path: Path, db: str, smtp: SmtpServer, watches: Watches
) -> None:
    port = free_server_port()
    file = tmp_path / "portscope.toml"
    file.write_text(baseline(port, sinks(smtp), persist=1))
    smtp.stop()  # the mail server is down when the change happens
    watch = watches.start(file, db, "alpha", "--json", "--interval", "0.4")
    started(watches)
    listener = listen(port)
    try:
        emitted = wait_for(lambda: cycles(watches), lambda c: any(x["events"] for x in c), 20)
        assert [e["kind"] for x in emitted for e in x["events"]] == ["listener_added"]
        wait_for(watches.stderr, lambda err: "mail" in err, 10)
        assert "mail" in watches.stderr()  # the failed send is said, and retried later
        watch.send_signal(signal.SIGKILL)  # the queued alert exists only in the store now
        watch.wait()

        smtp.start()
        watches.start(file, db, "alpha", "--json", "--interval", "0.4")
        # The first retry is due 22.5-30 s after the failed try (backoff with jitter).
        got = mails(smtp, 1, 45)
        assert len(got) == 1, watches.stderr()
        assert f"{port}" in got[0].msg["Subject"] and "listener_added" in got[0].msg["Subject"]
        n = len(cycles(watches))
        wait_for(lambda: cycles(watches), lambda c: len(c) >= n + 4, 10)
        assert len(smtp.box.received) == 1  # once, not once per watch
        assert all(x["events"] == [] for x in cycles(watches))
    finally:
        stop(listener)


@pytest.mark.root
def test_two_watchers_share_one_postgresql_and_history_tells_them_apart(
    tmp_path: Path, pg_url: str, smtp: SmtpServer, watches: Watches
) -> None:
    pa = free_server_port()
    pb = free_server_port(exclude={pa})
    for host, port in (("alpha", pa), ("beta", pb)):
        (tmp_path / f"{host}.toml").write_text(baseline(port, sinks(smtp), persist=1))
        watches.start(tmp_path / f"{host}.toml", pg_url, host, "--json", "--interval", "0.4")
        started(watches)
    la, lb = listen(pa), listen(pb)
    try:
        got = mails(smtp, 2)
        assert sorted(r.msg["Subject"].split(": ", 1)[0] for r in got) == [
            "[portscope] alpha",
            "[portscope] beta",
        ]
        for r in got:
            want = pa if "alpha" in r.msg["Subject"] else pb
            assert f"{want}" in r.msg["Subject"]
        stop(la)
        assert len(mails(smtp, 3)) == 3
        assert "alpha" in smtp.box.received[2].msg["Subject"]
        assert "listener_removed" in smtp.box.received[2].msg["Subject"]

        def rows(host: str) -> list[dict[str, Any]]:
            proc = portscope("history", "--db", pg_url, "--host", host, "--json")
            assert proc.returncode == 0, proc.stderr
            return list(json.loads(proc.stdout))

        alpha, beta = rows("alpha"), rows("beta")
        assert {r["host"] for r in alpha} == {"alpha"} and {r["host"] for r in beta} == {"beta"}
        assert {r["port"] for r in alpha} == {pa} and {r["port"] for r in beta} == {pb}
        assert sorted(r["kind"] for r in alpha if r["record"] == "event") == [
            "listener_added",
            "listener_removed",
        ]
        assert [r["kind"] for r in beta if r["record"] == "event"] == ["listener_added"]
        gone = [r for r in alpha if r["record"] == "listener"]
        assert len(gone) == 1, json.dumps(gone)
        assert gone[0]["gone_at"] is not None  # alpha's listener went away...
        assert [r["gone_at"] for r in beta if r["record"] == "listener"] == [None]  # ...beta's did not
    finally:
        stop(la)
        stop(lb)
