"""From "how this host differs from its baseline now" to the events watch alerts on.

Why a state machine of its own: the most common complaint about port-change alerting is noise. A
difference becomes an event only after it has lasted `persist` seconds (a daemon restart that drops
its listener for two seconds pages nobody), and an alerted difference that goes away is reported
once, after it has stayed away as long (the all-clear is as trustworthy as the alarm). Differences
are keyed on protocol, address, port and process identity (policy.baseline.compare never uses the
PID), so a restarted daemon is the same difference, not a new one.

Event ids are derived from the host, the difference and the moment it began, so the same change seen
again after a restart of watch (with `since` recovered from the history store) gets the same id and
the store's de-duplication keeps it from being alerted twice.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from portscope.model import Event
from portscope.policy.baseline import Difference

Key = tuple[object, ...]
# Resolution of an alerted difference: the event kind and the words for it.
_RESOLVED = {
    "unexpected": ("listener_removed", "{what} no longer listens"),
    "missing": ("listener_added", "{what} listens again, as the baseline expects"),
    "changed": ("listener_changed", "{what} is held by the expected process again"),
    "target": ("target_status_changed", "{what} is as the baseline expects again"),
    "certificate": (
        "certificate_expiring",
        "{what}: the TLS certificate no longer expires within the warning period",
    ),
}


def key_of(d: Difference) -> Key:
    """What makes two cycles' differences the same one: never the PID."""
    actual = d.actual.identity() if d.actual is not None else None
    line = d.expected.line if d.expected is not None else (d.target.line if d.target is not None else None)
    return (d.kind, d.proto, d.address, d.port, actual, line)


def digest_of(key: Key) -> str:
    """The key as text that survives a restart (and a database): its parts are strings, ints and None."""
    return hashlib.sha256(repr(key).encode()).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class Alarm:
    """An alerted difference, as the history store keeps it so a restarted watch still owes its all-clear.

    Without it, a listener alerted before a restart that went away while watch was down would never
    get its `listener_removed`: the new watch would simply not see a difference. `resolution` holds
    the all-clear's fields (kind, summary, proto, address, port, before, after) as they were when the
    difference was last seen."""

    key: str
    since: dt.datetime
    gone_since: dt.datetime | None
    resolution: dict[str, Any]


@dataclass(slots=True)
class _Condition:
    since: dt.datetime  # first seen present
    diff: Difference | None  # None: restored from the store and not seen again by this watch
    alerted: bool = False
    gone_since: dt.datetime | None = None  # alerted, then absent from this moment
    resolution: dict[str, Any] | None = None  # a restored condition's all-clear


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """The tracker's state before a cycle (Tracker.checkpoint)."""

    conditions: dict[str, _Condition]
    dirty: set[str]


class Tracker:
    """Feed it each cycle's differences; it returns the events that are due.

    The alerted conditions are what must outlive a restart: `changes()` hands over those that changed
    since the last call (for the store), `Tracker(alarms=...)` takes them back. `checkpoint()` and
    `rollback()` undo a cycle whose events could not be stored, so they are emitted again next cycle
    instead of being lost."""

    def __init__(
        self,
        host: str,
        persist: float,
        first_seen: Callable[[Difference], dt.datetime | None] | None = None,
        alarms: Sequence[Alarm] = (),
    ) -> None:
        self.host = host
        self.persist = dt.timedelta(seconds=persist)
        self._first_seen = first_seen  # recovers `since` after a restart (e.g. from the store's intervals)
        self._conditions: dict[str, _Condition] = {
            a.key: _Condition(a.since, None, True, a.gone_since, dict(a.resolution)) for a in alarms
        }
        self._dirty: set[str] = set()  # alerted conditions changed (or resolved) since changes()

    def observe(self, now: dt.datetime, differences: Sequence[Difference]) -> list[Event]:
        events: list[Event] = []
        present = {digest_of(key_of(d)): d for d in differences}
        for key, d in present.items():
            cond = self._conditions.get(key)
            if cond is None:
                since = (self._first_seen(d) if self._first_seen else None) or now
                cond = self._conditions[key] = _Condition(min(since, now), d)
            if cond.alerted and (cond.gone_since is not None or cond.diff is None):
                self._dirty.add(key)  # back before its all-clear, or seen again after a restart
            cond.diff, cond.gone_since, cond.resolution = d, None, None
            if not cond.alerted and now - cond.since >= self.persist:
                cond.alerted = True
                self._dirty.add(key)
                events.append(self._event(_alarm(d), cond.since, key, resolved=False))
        for key, cond in list(self._conditions.items()):
            if key in present:
                continue
            if not cond.alerted:
                del self._conditions[key]  # came and went within the persistence time: nothing to say
                continue
            if cond.gone_since is None:
                cond.gone_since = now
                self._dirty.add(key)
            if now - cond.gone_since >= self.persist:
                fields = cond.resolution if cond.diff is None else _resolution(cond.diff)
                assert fields is not None
                events.append(self._event(fields, cond.gone_since, key, resolved=True))
                del self._conditions[key]
                self._dirty.add(key)
        return events

    def pending(self) -> int:
        """Differences seen but not alerted yet (for metrics)."""
        return sum(1 for c in self._conditions.values() if not c.alerted)

    def changes(self) -> tuple[list[Alarm], list[str]]:
        """(alarms to store, keys of alarms resolved) since the last call."""
        keep: list[Alarm] = []
        gone: list[str] = []
        for key in sorted(self._dirty):
            cond = self._conditions.get(key)
            if cond is None or not cond.alerted:
                gone.append(key)
                continue
            fields = cond.resolution if cond.diff is None else _resolution(cond.diff)
            assert fields is not None
            keep.append(Alarm(key, cond.since, cond.gone_since, fields))
        self._dirty.clear()
        return keep, gone

    def checkpoint(self) -> Checkpoint:
        return Checkpoint({k: replace(c) for k, c in self._conditions.items()}, set(self._dirty))

    def rollback(self, saved: Checkpoint) -> None:
        self._conditions, self._dirty = saved.conditions, saved.dirty

    def _event(self, fields: dict[str, Any], at: dt.datetime, key: str, resolved: bool) -> Event:
        kind = str(fields["kind"])
        ident = hashlib.sha256(repr((self.host, kind, key, at.isoformat(), resolved)).encode()).hexdigest()
        return Event(
            id=ident[:32],
            kind=kind,
            host=self.host,
            at=at.astimezone(dt.UTC).isoformat(),
            summary=str(fields["summary"]),
            proto=fields.get("proto"),
            address=fields.get("address"),
            port=fields.get("port"),
            before=fields.get("before"),
            after=fields.get("after"),
        )


def _states(d: Difference) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """(what the baseline expects, what is there) for a difference, as the events carry them."""
    actual = d.actual.to_dict() if d.actual is not None else d.observed
    expected = d.expected.to_dict() if d.expected is not None else None
    if d.target is not None:
        expected = {"status": d.target.expect_status, "service": d.target.expect_service}
    if d.kind == "unexpected":
        expected = None
    return expected, actual


def _alarm(d: Difference) -> dict[str, Any]:
    expected, actual = _states(d)
    where = {"proto": d.proto, "address": d.address, "port": d.port}
    return {"kind": d.event, "summary": d.summary, **where, "before": expected, "after": actual}


def _resolution(d: Difference) -> dict[str, Any]:
    expected, actual = _states(d)
    kind, words = _RESOLVED[d.kind]
    where = {"proto": d.proto, "address": d.address, "port": d.port}
    return {
        "kind": kind,
        "summary": words.format(what=_what(d)),
        **where,
        "before": actual,
        "after": expected,
    }


def _what(d: Difference) -> str:
    if d.target is not None:
        t = d.target
        return "target " + (t.name or f"{d.address}:{d.port}/{d.proto}")
    where = f"{d.proto or 'tcp/udp'} {d.address or '*'}:{d.port if d.port is not None else '*'}"
    if d.actual is not None and d.actual.process:
        return f"{d.actual.process} on {where}"
    if d.expected is not None and d.expected.process:
        return f"{d.expected.process} on {where}"
    return where
