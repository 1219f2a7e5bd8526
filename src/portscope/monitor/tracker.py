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
from dataclasses import dataclass

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


@dataclass(slots=True)
class _Condition:
    diff: Difference
    since: dt.datetime  # first seen present
    alerted: bool = False
    gone_since: dt.datetime | None = None  # alerted, then absent from this moment


class Tracker:
    """Feed it each cycle's differences; it returns the events that are due."""

    def __init__(
        self,
        host: str,
        persist: float,
        first_seen: Callable[[Difference], dt.datetime | None] | None = None,
    ) -> None:
        self.host = host
        self.persist = dt.timedelta(seconds=persist)
        self._first_seen = first_seen  # recovers `since` after a restart (e.g. from the store's intervals)
        self._conditions: dict[Key, _Condition] = {}

    def observe(self, now: dt.datetime, differences: Sequence[Difference]) -> list[Event]:
        events: list[Event] = []
        present = {key_of(d): d for d in differences}
        for key, d in present.items():
            cond = self._conditions.get(key)
            if cond is None:
                since = (self._first_seen(d) if self._first_seen else None) or now
                cond = self._conditions[key] = _Condition(d, min(since, now))
            cond.diff, cond.gone_since = d, None
            if not cond.alerted and now - cond.since >= self.persist:
                cond.alerted = True
                events.append(self._event(d.event, d, d.summary, cond.since, key))
        for key, cond in list(self._conditions.items()):
            if key in present:
                continue
            if not cond.alerted:
                del self._conditions[key]  # came and went within the persistence time: nothing to say
                continue
            if cond.gone_since is None:
                cond.gone_since = now
            if now - cond.gone_since >= self.persist:
                kind, words = _RESOLVED[cond.diff.kind]
                summary = words.format(what=_what(cond.diff))
                events.append(self._event(kind, cond.diff, summary, cond.gone_since, key, resolved=True))
                del self._conditions[key]
        return events

    def pending(self) -> int:
        """Differences seen but not alerted yet (for metrics)."""
        return sum(1 for c in self._conditions.values() if not c.alerted)

    def _event(
        self, kind: str, d: Difference, summary: str, at: dt.datetime, key: Key, resolved: bool = False
    ) -> Event:
        digest = hashlib.sha256(repr((self.host, kind, key, at.isoformat(), resolved)).encode()).hexdigest()
        actual = d.actual.to_dict() if d.actual is not None else d.observed
        expected = d.expected.to_dict() if d.expected is not None else None
        if d.target is not None:
            expected = {"status": d.target.expect_status, "service": d.target.expect_service}
        before, after = (expected, actual) if not resolved else (actual, expected)
        if d.kind == "unexpected":
            before, after = (None, actual) if not resolved else (actual, None)
        return Event(
            id=digest[:32],
            kind=kind,
            host=self.host,
            at=at.astimezone(dt.UTC).isoformat(),
            summary=summary,
            proto=d.proto,
            address=d.address,
            port=d.port,
            before=before,
            after=after,
        )


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
