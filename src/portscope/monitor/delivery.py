"""Getting alerts out: the outbox loop between the history store and the sinks.

watch owes each sink one message per cycle (queue_cycle, alerts.py); the outbox in the history store
keeps it until a sink takes it. deliver_due(), called from watch's loop every few seconds, claims the
messages whose time has come, sends them, and marks each sent, or failed with its next attempt after an
exponential backoff (30 s doubling to 1 h, jittered so a fleet does not retry in step), or given up
(state failed, logged) once it is older than 7 days.

What survives what:
- a sink that is down: the message waits in the outbox and goes when the sink is back;
- watch killed at any point: the outbox is in the database, committed before anything is sent; a
  message claimed by a dead process is due again when its lease ends (Store.due);
- watch killed after the sink took a message but before mark_sent: the message is sent again. Delivery
  is at least once; the copy carries the same key (Message-ID, Idempotency-Key, PORTSCOPE_ALERT_KEY),
  so a receiver that keeps the keys it saw gets it exactly once. Nothing on the sending side alone can
  do better: the crash may fall between the receiver's "250 OK" and our commit.

Rate limit: each sink sends at most `max_per_hour` messages in any sliding hour, counted from the
outbox itself (so a restart does not reset it). When more messages wait than the hour still allows,
they all go as one merged message; at the limit they wait (they are not claimed) for the next slot.

Synchronous (smtplib, urllib, subprocess): an asyncio watch runs it in a thread.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select

from portscope.model import Event
from portscope.monitor.alerts import WINDOW, Alert, cycle_key, cycle_payload, merge
from portscope.monitor.schema import outbox
from portscope.monitor.sinks import SendError, Sink
from portscope.monitor.store import OutboxItem, Store
from portscope.textsafe import clean

log = logging.getLogger(__name__)

BACKOFF_FIRST = dt.timedelta(seconds=30)
BACKOFF_MAX = dt.timedelta(hours=1)
JITTER = 0.25  # a retry comes 0-25 % earlier than the plain doubling says
MAX_AGE = dt.timedelta(days=7)  # a message still failing at this age is given up
CLAIM_LIMIT = 500  # messages claimed per sink per call; a merged message carries at most this many
LEASE_MIN = dt.timedelta(minutes=10)
TICK = dt.timedelta(microseconds=1)


@dataclass(slots=True)
class QueuedCycle:
    """What queue_cycle did: which events were new to the history, which sinks owe a message."""

    new_events: list[str] = field(default_factory=list)  # Store.record_events' answer
    keys: dict[str, str] = field(default_factory=dict)  # sink -> this cycle's dedup key
    queued: list[str] = field(default_factory=list)  # sinks whose message is new (not a redone cycle's)


@dataclass(slots=True)
class DeliveryReport:
    """What one deliver_due() call did. Counts are outbox messages unless they say otherwise."""

    sent: int = 0  # outbox messages delivered
    messages: int = 0  # messages the sinks took (a merged one delivers several outbox messages)
    merged: int = 0  # outbox messages delivered inside a merged message
    retrying: int = 0  # failed this time, tried again later
    gave_up: int = 0  # failed past MAX_AGE, or unreadable: state failed
    limited: dict[str, dt.datetime] = field(default_factory=dict)  # sink at its rate limit -> next slot
    errors: list[str] = field(default_factory=list)  # "sink: why", one per failed sink
    sent_by_sink: dict[str, int] = field(default_factory=dict)  # outbox messages delivered, per sink
    failed_by_sink: dict[str, int] = field(default_factory=dict)  # failed deliveries (retried or given up)

    def to_dict(self) -> dict[str, Any]:
        return {
            "sent": self.sent,
            "messages": self.messages,
            "merged": self.merged,
            "retrying": self.retrying,
            "gave_up": self.gave_up,
            "limited": {name: at.isoformat() for name, at in self.limited.items()},
            "errors": list(self.errors),
        }


def backoff(attempts: int, rng: random.Random | None = None) -> dt.timedelta:
    """How long after its `attempts`-th failed delivery a message is tried again."""
    plain = min(BACKOFF_MAX, BACKOFF_FIRST * (1 << min(max(attempts, 1) - 1, 20)))
    draw = rng.random() if rng is not None else random.random()
    return plain * (1 - JITTER * draw)


def queue_cycle(
    store: Store, host: str, events: Iterable[Event], sinks: Iterable[Sink], now: dt.datetime
) -> QueuedCycle:
    """Record one cycle's events and owe each sink one message naming those it wants.

    Call it instead of record_events(events, deliver_to=...) (which queues a message per event).
    The messages are queued first, the events recorded second: a crash in between leaves an alert
    owed (and sent) whose events the redone cycle records, never an event recorded and its alert
    forgotten; a redone cycle has the same events, so the same keys, and queues nothing twice.
    One transaction for both would be better still: see the note at the end of this module.
    """
    evs = list({e.id: e for e in events}.values())
    done = QueuedCycle()
    if not evs:
        return done
    for sink in sinks:
        mine = [e for e in evs if sink.wants(e.kind)]
        if not mine:
            continue
        key = cycle_key(mine)
        done.keys[sink.name] = key
        if store.enqueue(sink.name, key, cycle_payload(host, mine, now), host=host, now=now) is not None:
            done.queued.append(sink.name)
    done.new_events = store.record_events(evs)
    return done


def deliver_due(
    store: Store,
    sinks: Iterable[Sink],
    now: dt.datetime,
    *,
    host: str | None = None,
    max_age: dt.timedelta = MAX_AGE,
    rng: random.Random | None = None,
) -> DeliveryReport:
    """Send what is due to each sink, within its rate limit; never raises for a sink's failure.

    host: deliver only this host's messages (a fleet's watchers share one database, each sends its
    own with its own sinks); None: every host's. Messages of sinks not in `sinks` are left alone
    (see abandon_orphans).
    """
    if now.tzinfo is None:
        raise ValueError("now must be an aware datetime (UTC)")
    report = DeliveryReport()
    for sink in sinks:
        _deliver_to(store, sink, now, host, max_age, rng, report)
    return report


def _deliver_to(
    store: Store,
    sink: Sink,
    now: dt.datetime,
    host: str | None,
    max_age: dt.timedelta,
    rng: random.Random | None,
    report: DeliveryReport,
) -> None:
    sent = sent_times(store, sink.name, now - WINDOW, host=host)
    budget = sink.limit.budget(sent, now)
    if budget <= 0:
        report.limited[sink.name] = sink.limit.next_slot(sent, now)
        return
    # Long enough for every send this call may make, each bounded by the sink's timeout.
    lease = max(LEASE_MIN, dt.timedelta(seconds=2 * sink.timeout * budget + 60))
    items = store.due(now, CLAIM_LIMIT, sink=sink.name, host=host, lease=lease)
    readable: list[tuple[OutboxItem, Alert]] = []
    for item in items:
        try:
            readable.append((item, Alert.from_payload(item.dedup_key, item.payload, item.host)))
        except ValueError as exc:
            store.mark_failed(item.id, f"cannot be delivered: {exc}", None)
            log.error("outbox message %s for sink %s given up: %s", item.id, sink.name, exc)
            report.gave_up += 1
    if not readable:
        return
    # One message each while the hour allows them all, else the lot as one.
    alone = sink.limit.plan(len(readable), budget) == "send"
    groups = [[pair] for pair in readable] if alone else [readable]
    # Each message's sent_at is distinct, and a merged message's parts share one: the rate limit
    # counts distinct sent_at values (sent_times).
    stamp = max([now, *(t + TICK for t in sent)])
    for rank, group in enumerate(groups):
        alerts = [alert for _, alert in group]
        alert = alerts[0] if len(alerts) == 1 else merge(alerts, sink.limit.max_per_hour)
        try:
            sink.send(alert, now)
        except Exception as exc:
            if isinstance(exc, SendError):
                error = str(exc)
            else:  # a bug in a sink: logged in full, and the message retried like any failure
                log.exception("%s failed on alert %s", sink.describe(), alert.key)
                error = clean(f"{type(exc).__name__}: {exc}", 500)
            report.errors.append(f"{sink.name}: {error}")
            report.failed_by_sink[sink.name] = report.failed_by_sink.get(sink.name, 0) + 1
            for i, later in enumerate(groups[rank:]):
                why = error if i == 0 else f"not tried, the sink had just failed: {error}"
                for item, _ in later:
                    _failed(store, sink, item, why, now, max_age, rng, report)
            return
        for item, _ in group:
            store.mark_sent(item.id, at=stamp)
        stamp += TICK
        report.messages += 1
        report.sent += len(group)
        report.sent_by_sink[sink.name] = report.sent_by_sink.get(sink.name, 0) + len(group)
        if len(group) > 1:
            report.merged += len(group)


def _failed(
    store: Store,
    sink: Sink,
    item: OutboxItem,
    error: str,
    now: dt.datetime,
    max_age: dt.timedelta,
    rng: random.Random | None,
    report: DeliveryReport,
) -> None:
    if now - item.created_at >= max_age:
        store.mark_failed(item.id, error, None)
        log.error(
            "giving up alert %s to %s after %d attempts since %s: %s",
            item.dedup_key,
            sink.describe(),
            item.attempts,
            item.created_at.isoformat(),
            error,
        )
        report.gave_up += 1
        return
    store.mark_failed(item.id, error, now + backoff(item.attempts, rng))
    report.retrying += 1


def sent_times(store: Store, sink: str, since: dt.datetime, *, host: str | None = None) -> list[dt.datetime]:
    """When `sink` sent its messages after `since` (one time per message, merged or not), oldest first.

    Read straight from the outbox table through the store's read transaction: the store has no
    public query for it yet (see the note at the end of this module).
    """
    q = (
        select(outbox.c.sent_at)
        .distinct()
        .where(outbox.c.sink == sink, outbox.c.state == "sent", outbox.c.sent_at > since)
    )
    if host is not None:
        q = q.where(outbox.c.host == host)
    return store._read(lambda conn: sorted(t for t in conn.execute(q).scalars() if t is not None))


def abandon_orphans(
    store: Store,
    sinks: Sequence[Sink],
    now: dt.datetime,
    *,
    host: str | None = None,
    max_age: dt.timedelta = MAX_AGE,
    limit: int = 1000,
) -> int:
    """Give up pending messages older than max_age whose sink is no longer configured (renamed or
    removed): nothing would ever send them, and pending messages are never pruned. Cheap enough for
    watch to call now and then (with prune), not every cycle."""
    names = {s.name for s in sinks}
    given_up = 0
    for item in store.outbox_items(state="pending", limit=limit):
        if now - item.created_at < max_age:
            break  # oldest first: the rest are younger
        if item.sink in names or (host is not None and item.host != host):
            continue
        if store.mark_failed(item.id, f"no sink named {item.sink!r} is configured any more", None):
            log.error("giving up alert %s: sink %s is not configured", item.dedup_key, item.sink)
            given_up += 1
    return given_up


# Two additions to store.py would make this module use the public API only (it does not edit store.py):
#
# 1. One transaction for a cycle's events and its messages: record_events() takes the messages too.
#        def record_events(self, evs, *, deliver_to=(), messages: Sequence[tuple[str, str, Any]] = ()):
#            ...inside work(), after the deliver_to loop:
#            for sink, key, payload in messages:
#                self._enqueue(conn, sink, key, payload, host_of_the_cycle, now)
#    and queue_cycle() passes messages=[(sink.name, key, payload), ...] instead of calling enqueue().
# 2. Store.sent_times(sink, since, host=None) -> list[datetime]: the query in sent_times() above,
#    run by Store._read; sent_times() then calls it.

__all__ = [
    "BACKOFF_FIRST",
    "BACKOFF_MAX",
    "MAX_AGE",
    "DeliveryReport",
    "QueuedCycle",
    "abandon_orphans",
    "backoff",
    "deliver_due",
    "queue_cycle",
    "sent_times",
]
