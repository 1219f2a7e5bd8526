"""What an alert says: one message per watch cycle, rendered for a mail, a chat, a log line or a program.

watch notices changes in cycles. A cycle that sees ten new listeners owes each sink one message naming
ten events, not ten messages: `cycle_payload` is that message as the outbox keeps it, `cycle_key` its
name. The key is a digest of the cycle's event ids, and an event id is stable for the change (model.Event),
so a cycle redone after a crash names the same message and the outbox's (sink, dedup_key) uniqueness
keeps it owed once. The same key becomes the mail's Message-ID and the webhook's Idempotency-Key, which
is what lets a receiver drop the copy that at-least-once delivery may send after a crash.

Everything in an event that came from elsewhere (process names, users, units, banners, summaries built
from them) is untrusted: every string rendered here goes through textsafe.clean, so no control
character, escape sequence or line break reaches a mail header, a terminal, a log line or a chat.

The rate limit lives here too because it decides what a message is: past `max_per_hour` messages per
sink, the messages waiting are merged into the next one allowed, which says how many it carries.
Nothing is dropped.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from portscope.model import Event
from portscope.textsafe import clean

PAYLOAD_VERSION = 1
MAX_PER_HOUR = 20  # default rate limit, per sink
WINDOW = dt.timedelta(hours=1)
SUBJECT_MAX = 200  # characters of a subject, before the merged note
FIELD_MAX = 200  # characters of one value in a rendered line
SUMMARY_MAX = 500
TEXT_EVENTS_MAX = 200  # events spelled out in a text body; the rest are counted
JSON_EVENTS_MAX = 1000  # events carried in a JSON payload; the rest are counted

# The parts of a listener's (or a target's) state worth a word in a text alert, in this order.
_STATE_FIELDS = (
    "process",
    "user",
    "unit",
    "container",
    "pids",
    "status",
    "service",
    "days_left",
    "not_after",
)


def _digest(parts: Iterable[str]) -> str:
    return hashlib.sha256("\n".join(parts).encode("utf-8", "surrogatepass")).hexdigest()[:40]


def cycle_key(events: Iterable[Event]) -> str:
    """The outbox dedup key of one cycle's message: the same events give the same key, whatever order
    they came in and however often the cycle is redone."""
    return "c-" + _digest(sorted({e.id for e in events}))


def cycle_payload(host: str, events: Sequence[Event], now: dt.datetime) -> dict[str, Any]:
    """The message one cycle owes a sink, as the outbox stores it: raw event data (history keeps it
    raw too); cleaning happens when it is rendered."""
    ordered = sorted({e.id: e for e in events}.values(), key=lambda e: (e.at, e.id))
    return {
        "v": PAYLOAD_VERSION,
        "host": host,
        "queued_at": now.astimezone(dt.UTC).isoformat(),
        "events": [e.to_dict() for e in ordered],
    }


@dataclass(frozen=True, slots=True)
class Alert:
    """One message to one sink: the events of a cycle, or of several cycles merged by the rate limit."""

    key: str
    host: str
    events: tuple[Mapping[str, Any], ...]
    parts: int = 1  # outbox messages this one carries (>1: merged by the rate limit)
    max_per_hour: int | None = None  # the limit that merged it, for the note in the message

    @classmethod
    def from_payload(cls, key: str, payload: Any, host: str | None = None) -> Alert:
        """An outbox row's payload as an Alert. Two shapes are read: a cycle payload (cycle_payload)
        and a bare Event.to_dict(), what Store.record_events(deliver_to=...) queues per event.
        ValueError for anything else: the row cannot be delivered, retrying will not change that."""
        if not isinstance(payload, Mapping):
            raise ValueError(f"the outbox payload is a {type(payload).__name__}, not an object")
        if "events" in payload:
            raw = payload["events"]
            if not isinstance(raw, list) or not all(isinstance(e, Mapping) for e in raw):
                raise ValueError("the outbox payload's events are not a list of objects")
            events = tuple(raw)
            where = payload.get("host")
        elif "kind" in payload and "id" in payload:
            events = (payload,)
            where = payload.get("host")
        else:
            raise ValueError("the outbox payload is neither a cycle's message nor an event")
        name = where if isinstance(where, str) else host
        return cls(key=key, host=name if name is not None else "?", events=events)

    @property
    def event_ids(self) -> list[str]:
        return [str(e.get("id", "")) for e in self.events]


def merge(alerts: Sequence[Alert], max_per_hour: int | None = None) -> Alert:
    """One message carrying several: the events of all (each once), a key of its own derived from
    theirs (the same backlog merged again gets the same key)."""
    if not alerts:
        raise ValueError("nothing to merge")
    if len(alerts) == 1:
        return alerts[0]
    seen: dict[str, Mapping[str, Any]] = {}
    for alert in alerts:
        for ev in alert.events:
            seen.setdefault(str(ev.get("id", "")) or f"#{len(seen)}", ev)
    events = sorted(seen.values(), key=lambda e: (str(e.get("at", "")), str(e.get("id", ""))))
    hosts = sorted({a.host for a in alerts})
    return Alert(
        key="m-" + _digest(sorted(a.key for a in alerts)),
        host=hosts[0] if len(hosts) == 1 else ", ".join(hosts),
        events=tuple(events),
        parts=sum(a.parts for a in alerts),
        max_per_hour=max_per_hour,
    )


# -- rendering ------------------------------------------------------------------------------------------------


def _text(value: Any, limit: int = FIELD_MAX) -> str:
    return clean(str(value), limit)


def _where(ev: Mapping[str, Any]) -> str:
    proto, address, port = ev.get("proto"), ev.get("address"), ev.get("port")
    if address is None and port is None:
        return ""
    addr = _text(address) if address is not None else "*"
    if ":" in addr:
        addr = f"[{addr}]"
    spot = f"{addr}:{_text(port)}" if port is not None else addr
    return f"{_text(proto)} {spot}" if proto else spot


def _state(state: Any) -> str:
    """A before/after state as `process nc, user mallory, pids 4242`; untrusted, so cleaned."""
    if not isinstance(state, Mapping):
        return "" if state is None else _text(state)
    words = []
    for name in _STATE_FIELDS:
        value = state.get(name)
        if value is None or value == []:
            continue
        if isinstance(value, list):
            value = ",".join(_text(v, 20) for v in value[:20]) + ("…" if len(value) > 20 else "")
        words.append(f"{name} {_text(value)}")
    return ", ".join(words)


def _process(ev: Mapping[str, Any]) -> str:
    for state in (ev.get("after"), ev.get("before")):
        if isinstance(state, Mapping) and state.get("process") is not None:
            return _text(state["process"], 60)
    return ""


def kind_counts(alert: Alert) -> Counter[str]:
    return Counter(_text(e.get("kind", "?"), 40) for e in alert.events)


def subject(alert: Alert, prefix: str = "[portscope]") -> str:
    """One line, cleaned and bounded: safe as a mail Subject or a chat title."""
    host = _text(alert.host, 80)
    n = len(alert.events)
    if n == 1:
        ev = alert.events[0]
        process = _process(ev)
        what = " ".join(x for x in (_text(ev.get("kind", "?"), 40), _where(ev)) if x)
        line = f"{prefix} {host}: {what}" + (f" ({process})" if process else "")
    else:
        counts = ", ".join(f"{c} {k.replace('_', ' ')}" for k, c in sorted(kind_counts(alert).items()))
        line = f"{prefix} {host}: {n} changes ({counts})"
    line = clean(line, SUBJECT_MAX)
    if alert.parts > 1:
        line += f" [{alert.parts} alerts merged]"
    return line


def event_line(ev: Mapping[str, Any]) -> str:
    """One event on one line (syslog, chat): kind, where, who, and the summary, all cleaned."""
    parts = [_text(ev.get("kind", "?"), 40)]
    where = _where(ev)
    if where:
        parts.append(where)
    before, after = _state(ev.get("before")), _state(ev.get("after"))
    if before and after and before != after:
        parts.append(f"({before} -> {after})")
    elif after or before:
        parts.append(f"({after or before})")
    summary = ev.get("summary")
    line = " ".join(parts)
    if summary:
        line += ": " + _text(summary, SUMMARY_MAX)
    return line


def merged_note(alert: Alert) -> str | None:
    if alert.parts <= 1:
        return None
    limit = f" (at most {alert.max_per_hour} messages an hour)" if alert.max_per_hour else ""
    return f"This message carries {alert.parts} alerts merged into one by the rate limit{limit}."


def text_body(alert: Alert) -> str:
    """The plain-text body of a mail (or a chat message): every line cleaned, long lists counted."""
    n = len(alert.events)
    host = _text(alert.host, 80)
    counts = ", ".join(f"{c} {k}" for k, c in sorted(kind_counts(alert).items()))
    lines = [f"portscope watch on {host} saw {n} change{'s' if n != 1 else ''} ({counts})."]
    note = merged_note(alert)
    if note:
        lines.append(note)
    lines.append("")
    for ev in alert.events[:TEXT_EVENTS_MAX]:
        head = " ".join(x for x in (_text(ev.get("kind", "?"), 40), _where(ev)) if x)
        lines.append(f"* {head}  at {_text(ev.get('at', '?'), 40)}")
        if ev.get("summary"):
            lines.append(f"  {_text(ev['summary'], SUMMARY_MAX)}")
        before, after = _state(ev.get("before")), _state(ev.get("after"))
        if before:
            lines.append(f"  before: {before}")
        if after:
            lines.append(f"  now:    {after}")
        lines.append(f"  event:  {_text(ev.get('id', '?'), 80)}")
    if n > TEXT_EVENTS_MAX:
        lines.append(f"... and {n - TEXT_EVENTS_MAX} more changes: portscope history --host {host}")
    lines += [
        "",
        f"Alert {alert.key}: a copy with the same key is the same alert, and may be dropped.",
        "-- ",
        "portscope watch",
    ]
    return "\n".join(lines) + "\n"


def _cleaned(value: Any, depth: int = 0) -> Any:
    """A JSON value with every string cleaned and bounded (keys too), nesting cut at a sane depth."""
    if isinstance(value, str):
        return clean(value, SUMMARY_MAX)
    if value is None or isinstance(value, bool | int | float):
        return value
    if depth > 8:
        return _text(value)
    if isinstance(value, Mapping):
        return {clean(str(k), 80): _cleaned(v, depth + 1) for k, v in list(value.items())[:100]}
    if isinstance(value, list | tuple):
        return [_cleaned(v, depth + 1) for v in value[:1000]]
    return _text(value)


def json_payload(alert: Alert) -> dict[str, Any]:
    """What a webhook receives and an exec hook reads on stdin (documented in the README): the events
    as Event.to_dict() with every string cleaned, plus a subject and text ready to show."""
    events = [_cleaned(e) for e in alert.events[:JSON_EVENTS_MAX]]
    return {
        "version": PAYLOAD_VERSION,
        "key": alert.key,
        "host": _text(alert.host, 200),
        "subject": subject(alert),
        "text": text_body(alert),
        "counts": dict(sorted(kind_counts(alert).items())),
        "merged": alert.parts,
        "events": events,
        "events_omitted": max(0, len(alert.events) - JSON_EVENTS_MAX),
    }


# -- rate limit ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RateLimit:
    """At most `max_per_hour` messages per sink in any sliding hour."""

    max_per_hour: int = MAX_PER_HOUR

    def budget(self, sent: Sequence[dt.datetime], now: dt.datetime) -> int:
        """Messages that may still go out now, given when the recent ones went."""
        start = now - WINDOW
        return max(0, self.max_per_hour - sum(1 for t in sent if t > start))

    def next_slot(self, sent: Sequence[dt.datetime], now: dt.datetime) -> dt.datetime:
        """When the next message may go: now if the budget allows, else when the oldest send that
        fills the window leaves it."""
        start = now - WINDOW
        recent = sorted(t for t in sent if t > start)
        if len(recent) < self.max_per_hour:
            return now
        return recent[len(recent) - self.max_per_hour] + WINDOW

    def plan(self, waiting: int, budget: int) -> str:
        """send: each waiting message on its own; merge: all of them as one; wait: none now."""
        if budget <= 0 or waiting <= 0:
            return "wait"
        return "send" if waiting <= budget else "merge"


__all__ = [
    "MAX_PER_HOUR",
    "Alert",
    "RateLimit",
    "cycle_key",
    "cycle_payload",
    "event_line",
    "json_payload",
    "merge",
    "subject",
    "text_body",
]
