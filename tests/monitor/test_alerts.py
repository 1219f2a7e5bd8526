"""Alerts (monitor/alerts.py) and the sinks' configuration and rendering (monitor/sinks.py), no network.

What must hold whatever a hostile process calls itself: nothing it chose reaches a mail header, a log
line or a terminal as anything but visible text. What must hold for delivery: one message per cycle,
named by a key that a redone cycle reproduces, and a rate limit that merges instead of dropping.
Real servers and the outbox loop are in test_delivery.py.
"""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import json
import re
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from portscope.errors import BadInput
from portscope.model import Event, Listener
from portscope.monitor.alerts import (
    JSON_EVENTS_MAX,
    TEXT_EVENTS_MAX,
    Alert,
    RateLimit,
    cycle_key,
    cycle_payload,
    event_line,
    json_payload,
    merge,
    subject,
    text_body,
)
from portscope.monitor.sinks import EmailSink, ExecSink, SyslogSink, WebhookSink, build_sink, build_sinks

T0 = dt.datetime(2024, 5, 1, 23, 0, tzinfo=dt.UTC)
EVIL = "evil\r\nBcc: x@y"
CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def listener(port: int = 4444, process: str | None = "nc", user: str | None = "mallory") -> Listener:
    return Listener("tcp", "0.0.0.0", port, process, user, None, None, [4242])


def event(
    ev_id: str,
    port: int = 4444,
    process: str | None = "nc",
    kind: str = "listener_added",
    host: str = "alpha",
    summary: str | None = None,
) -> Event:
    state = listener(port, process).to_dict()
    added = kind != "listener_removed"
    return Event(
        id=ev_id,
        kind=kind,
        host=host,
        at=T0.isoformat(),
        summary=summary if summary is not None else f"{process} listens on {port}/tcp",
        proto="tcp",
        address="0.0.0.0",
        port=port,
        before=None if added else state,
        after=state if added else None,
    )


def alert_of(*events: Event, host: str = "alpha") -> Alert:
    return Alert.from_payload(cycle_key(events), cycle_payload(host, list(events), T0))


def mail_conf(**extra: Any) -> dict[str, Any]:
    return {
        "type": "email",
        "host": "127.0.0.1",
        "from": "portscope@example.net",
        "to": ["ops@example.net"],
        **extra,
    }


# -- grouping ---------------------------------------------------------------------------------------------


def test_one_cycle_is_one_message_named_by_its_events() -> None:
    a, b, c = event("e-a", 1), event("e-b", 2), event("e-c", 3)
    assert cycle_key([a, b, c]) == cycle_key([c, a, b]) == cycle_key([a, b, c, a])
    assert cycle_key([a, b]) != cycle_key([a, b, c])
    assert re.fullmatch(r"c-[0-9a-f]{40}", cycle_key([a]))

    payload = cycle_payload("alpha", [c, a, b, a], T0)
    assert json.loads(json.dumps(payload)) == payload  # what the outbox stores: plain JSON
    alert = Alert.from_payload(cycle_key([a, b, c]), payload)
    assert alert.event_ids == ["e-a", "e-b", "e-c"] and alert.host == "alpha" and alert.parts == 1
    assert subject(alert) == "[portscope] alpha: 3 changes (3 listener added)"


def test_a_per_event_outbox_row_is_read_too() -> None:
    """Store.record_events(deliver_to=...) queues Event.to_dict() per event: delivered as it is."""
    ev = event("e-1")
    alert = Alert.from_payload("e-1", ev.to_dict())
    assert alert.event_ids == ["e-1"] and alert.host == "alpha"
    assert subject(alert) == "[portscope] alpha: listener_added tcp 0.0.0.0:4444 (nc)"


@pytest.mark.parametrize("payload", [None, [], "text", {"events": "x"}, {"events": [1]}, {"other": 1}])
def test_an_unreadable_payload_is_refused(payload: Any) -> None:
    with pytest.raises(ValueError):
        Alert.from_payload("k", payload)


def test_merging_keeps_every_event_once_and_says_so() -> None:
    a1 = alert_of(event("e-1", 1), event("e-2", 2))
    a2 = alert_of(event("e-2", 2), event("e-3", 3))
    a3 = alert_of(event("e-4", 4))
    merged = merge([a1, a2, a3], max_per_hour=20)
    assert merged.event_ids == ["e-1", "e-2", "e-3", "e-4"]
    assert merged.parts == 3
    assert merged.key == merge([a3, a1, a2], 20).key != a1.key  # the same backlog, the same key
    assert merged.key.startswith("m-")
    assert "[3 alerts merged]" in subject(merged)
    assert "3 alerts merged into one by the rate limit (at most 20 messages an hour)" in text_body(merged)
    assert json_payload(merged)["merged"] == 3
    assert merge([a1]) is a1


def test_long_lists_are_counted_not_dropped_nor_flooding() -> None:
    events = [event(f"e-{i:05d}", 1000 + i % 60000) for i in range(JSON_EVENTS_MAX + 5)]
    alert = alert_of(*events)
    body = text_body(alert)
    assert body.count("\n* ") == TEXT_EVENTS_MAX
    assert f"and {len(events) - TEXT_EVENTS_MAX} more changes" in body
    data = json_payload(alert)
    assert len(data["events"]) == JSON_EVENTS_MAX and data["events_omitted"] == 5
    assert data["counts"] == {"listener_added": len(events)}


# -- untrusted text ---------------------------------------------------------------------------------------


def test_a_hostile_process_name_stays_visible_text_everywhere() -> None:
    ev = event("e-1", process=EVIL + "\x1b]0;pwned\x07", summary=f"{EVIL} listens\x1b[2J on 4444/tcp")
    alert = alert_of(ev)
    subj = subject(alert)
    assert "\r" not in subj and "\n" not in subj and "\x1b" not in subj
    assert "evil\\x0d\\x0aBcc: x@y\\x1b]0;pwned\\x07" in subj
    for line in text_body(alert).splitlines():
        assert not CONTROL.search(line), line
    assert not CONTROL.search(event_line(ev.to_dict()))
    assert not CONTROL.search(json.dumps(json_payload(alert), ensure_ascii=False).replace("\n", ""))
    assert json_payload(alert)["events"][0]["after"]["process"] == "evil\\x0d\\x0aBcc: x@y\\x1b]0;pwned\\x07"


def test_the_mail_has_exactly_our_headers_whatever_the_process_is_called() -> None:
    sink = build_sink("mail", mail_conf(to=["ops@example.net", "sec@example.net"]))
    assert isinstance(sink, EmailSink)
    alert = alert_of(event("e-1", process=EVIL))
    msg = sink.message(alert, T0)
    parsed = email.message_from_bytes(msg.as_bytes(), policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    assert sorted(parsed.keys()) == sorted(
        [
            *("Subject", "From", "To", "Date", "Message-ID", "Auto-Submitted", "X-Portscope-Alert"),
            *("Content-Type", "Content-Transfer-Encoding", "MIME-Version"),
        ]
    )
    assert parsed["Message-ID"] == f"<{alert.key}@example.net>"
    assert parsed["To"] == "ops@example.net, sec@example.net"
    assert "Bcc" not in parsed and "evil\\x0d\\x0aBcc: x@y" in str(parsed["Subject"])
    body = parsed.get_content()
    assert "evil\\x0d\\x0aBcc: x@y" in body and "\r\nBcc:" not in body


_nasty = st.text(alphabet=st.characters(codec="utf-8"), max_size=300) | st.sampled_from(
    [EVIL, "\x1b[31mred\x1b[0m", "\u202eevil", "a\x00b", "x" * 5000, "\x85\x9b2J"]
)


@settings(max_examples=200, deadline=None)
@given(process=_nasty, user=_nasty, summary=_nasty, host=_nasty)
def test_rendering_never_lets_a_control_character_through(
    process: str, user: str, summary: str, host: str
) -> None:
    ev = Event(
        id="e-1",
        kind="listener_changed",
        host=host,
        at=T0.isoformat(),
        summary=summary,
        proto="tcp",
        address="::",
        port=22,
        before=Listener("tcp", "::", 22, process, user).to_dict(),
        after={"process": summary, "pids": [1, 2], "junk": {"deep": [process]}},
    )
    alert = alert_of(ev, host=host)
    subj = subject(alert)
    assert not CONTROL.search(subj) and len(subj) < 400
    body = text_body(alert)
    assert all(not CONTROL.search(line) for line in body.split("\n"))
    assert len(body) < 10_000
    assert not CONTROL.search(event_line(ev.to_dict()))
    assert not CONTROL.search(json.dumps(json_payload(alert), ensure_ascii=False).replace("\n", ""))
    mail = build_sink("mail", mail_conf())
    assert isinstance(mail, EmailSink)
    mail.message(alert, T0)  # EmailMessage itself refuses CR/LF in a header: this would raise


# -- rate limit -------------------------------------------------------------------------------------------


def test_rate_limit_budget_slots_and_plan() -> None:
    limit = RateLimit(3)
    sent = [T0, T0 + dt.timedelta(minutes=10), T0 + dt.timedelta(minutes=20)]
    now = T0 + dt.timedelta(minutes=30)
    assert limit.budget([], now) == 3 and limit.next_slot([], now) == now
    assert limit.budget(sent[:2], now) == 1
    assert limit.budget(sent, now) == 0
    assert limit.next_slot(sent, now) == T0 + dt.timedelta(hours=1)  # when the oldest leaves the hour
    assert limit.budget(sent, T0 + dt.timedelta(minutes=61)) == 1
    assert limit.budget(sent, T0 + dt.timedelta(minutes=81)) == 3
    assert limit.plan(2, 3) == "send"
    assert limit.plan(4, 3) == "merge"
    assert limit.plan(4, 0) == "wait" and limit.plan(0, 3) == "wait"


# -- configuration ----------------------------------------------------------------------------------------


def test_sinks_are_built_from_plain_tables(tmp_path: Path) -> None:
    prog = tmp_path / "notify"
    prog.write_text("#!/bin/sh\nexit 0\n")
    prog.chmod(0o755)
    sinks = build_sinks(
        [
            mail_conf(starttls=True, user="portscope", password_env="SMTP_PASSWORD", max_per_hour=5),
            {"type": "webhook", "url": "https://hooks.example.net/x", "events": ["listener_added"]},
            {"type": "webhook", "name": "chat", "url_env": "CHAT_URL", "format": "slack"},
            {"type": "syslog", "facility": "local3", "address": "/run/other.sock", "format": "syslog"},
            {"type": "exec", "command": [str(prog), "--flag"], "timeout": 5},
        ]
    )
    assert [s.name for s in sinks] == ["email-1", "webhook-1", "chat", "syslog-1", "exec-1"]
    mail, hook, chat, log, run = sinks
    assert isinstance(mail, EmailSink) and (mail.port, mail.starttls, mail.limit.max_per_hour) == (
        587,
        True,
        5,
    )
    assert "SMTP_PASSWORD" not in mail.describe()
    assert (
        isinstance(hook, WebhookSink) and hook.wants("listener_added") and not hook.wants("listener_removed")
    )
    assert hook.limit.max_per_hour == 20 and hook.timeout == 10
    assert "/x" not in hook.describe()  # a webhook's path is often its secret
    assert isinstance(chat, WebhookSink) and chat.url_env == "CHAT_URL"
    assert isinstance(log, SyslogSink) and log.facility == "local3"
    assert isinstance(run, ExecSink) and run.command == (str(prog), "--flag") and run.timeout == 5
    smtps = build_sink("smtps", mail_conf(tls=True))
    assert isinstance(smtps, EmailSink) and smtps.port == 465


@pytest.mark.parametrize(
    ("conf", "says"),
    [
        ({"type": "pager"}, "type must be one of email, webhook, syslog, exec"),
        (mail_conf(hots="x"), "hots is not a key of an email sink"),
        ({"type": "email", "from": "a@example.net", "to": ["b@example.net"]}, "host is required"),
        (mail_conf(to=["ops@example.net\r\nBcc: x@y"]), "to must be mail addresses"),
        (mail_conf(to=[]), "to must be mail addresses"),
        (mail_conf(**{"from": "me"}), "from must be a mail address"),
        (mail_conf(starttls=True, tls=True), "exclude each other"),
        (mail_conf(port=70000), "port must be a whole number from 1 to 65535"),
        (mail_conf(starttls="yes"), "starttls must be true or false"),
        (mail_conf(user="u"), "password_env is missing"),
        (
            mail_conf(user="u", password_env="X", host="mail.example.net"),
            "would send its password unencrypted",
        ),
        (
            mail_conf(password_env="not a name", user="u", starttls=True),
            "password_env must be an environment variable",
        ),
        (mail_conf(max_per_hour=0), "max_per_hour must be a whole number from 1 to 3600"),
        (mail_conf(events=["listener_exploded"]), "names unknown kinds"),
        (mail_conf(ca_file="/nonexistent/ca.pem"), "is not a file"),
        ({"type": "webhook"}, "url or url_env: give one of them"),
        ({"type": "webhook", "url": "ftp://x/y"}, "must be an http:// or https:// URL"),
        (
            {"type": "webhook", "url": "https://x/y", "format": "xml"},
            "format must be one of json, slack, apprise",
        ),
        ({"type": "webhook", "url": "nosuchservice://x", "format": "apprise"}, "is not a URL apprise knows"),
        ({"type": "syslog", "address": "nowhere"}, "address must be a socket path or HOST:PORT"),
        ({"type": "syslog", "facility": "mars"}, "facility must be one of"),
        ({"type": "syslog", "address": "127.0.0.1:514", "format": "journal"}, "journal is a local socket"),
        ({"type": "exec"}, "command is required"),
        ({"type": "exec", "command": "/bin/echo hello"}, "must be a list of strings (no shell)"),
        ({"type": "exec", "command": ["/nonexistent/notify"]}, "is not an executable program"),
        ({"type": "exec", "command": ["/bin/true"], "timeout": 0}, "timeout must be a number from 1 to 3600"),
    ],
)
def test_a_bad_sink_table_is_one_clear_line(conf: dict[str, Any], says: str) -> None:
    with pytest.raises(BadInput) as caught:
        build_sink("mine", conf)
    message = str(caught.value)
    assert message.startswith("sink 'mine'") and says in message and "\n" not in message


def test_sink_names_are_checked() -> None:
    with pytest.raises(BadInput, match="sink name"):
        build_sink("bad name\n", mail_conf())
    with pytest.raises(BadInput, match="two sinks are named 'x'"):
        build_sinks([mail_conf(name="x"), mail_conf(name="x")])


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | _nasty,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(_nasty, inner, max_size=5),
    max_leaves=30,
)
_event_like = st.fixed_dictionaries(
    {"id": _json, "kind": _json},
    optional={"host": _json, "at": _json, "summary": _json, "port": _json, "before": _json, "after": _json},
)


@settings(max_examples=200, deadline=None)
@given(payload=_json | _event_like | st.fixed_dictionaries({"events": st.lists(_event_like, max_size=4)}))
def test_any_outbox_payload_is_refused_or_rendered_cleanly(payload: Any) -> None:
    """The outbox is a shared database: whatever a row holds is either refused (ValueError, given up)
    or rendered without raising and without a control character."""
    try:
        alert = Alert.from_payload("k", payload)
    except ValueError:
        return
    assert not CONTROL.search(subject(alert))
    assert all(not CONTROL.search(line) for line in text_body(alert).split("\n"))
    assert not CONTROL.search(json.dumps(json_payload(alert), ensure_ascii=False).replace("\n", ""))
