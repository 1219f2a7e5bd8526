"""One watch cycle, and the loop around it.

A cycle: take this host's listeners (policy.listeners: client and ephemeral sockets never count),
record them in the history store (intervals keyed on identity), check the remote targets
(monitor.targets), compare both with the baseline, let
the tracker turn lasting differences into events, queue one alert per sink for the cycle's events
(monitor.delivery: the outbox), and deliver what is due. Everything that must survive a crash is in
the store before anything is sent, so a SIGKILL loses no alert; the outbox's keys and the events' ids
make a redone cycle send nothing twice.
"""

from __future__ import annotations

import datetime as dt
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from portscope.inventory.owners import OwnerCache
from portscope.model import Event, Listener
from portscope.monitor.delivery import DeliveryReport, deliver_due, queue_cycle
from portscope.monitor.sinks import Sink
from portscope.monitor.store import EventRow, IntervalRow, Store
from portscope.monitor.targets import TargetChecker, TargetState
from portscope.monitor.targets import differences as target_differences
from portscope.monitor.tracker import Tracker
from portscope.policy.baseline import EVENT_OF_KIND, Baseline, Difference, compare
from portscope.policy.listeners import current_listeners, take_snapshot


@dataclass(slots=True)
class CycleReport:
    at: dt.datetime
    listeners: list[Listener]
    differences: list[Difference]
    events: list[Event]
    delivery: DeliveryReport | None
    seconds: float
    pending: int = 0
    notes: list[str] = field(default_factory=list)
    targets: list[TargetState] = field(default_factory=list)


class Watcher:
    def __init__(
        self,
        baseline: Baseline,
        store: Store,
        sinks: Sequence[Sink],
        host: str | None = None,
        persist: float | None = None,
    ) -> None:
        self.baseline = baseline
        self.store = store
        self.sinks = list(sinks)
        self.host = host or socket.gethostname()
        self.persist = baseline.watch.persist if persist is None else persist
        self.tracker = Tracker(
            self.host, self.persist, first_seen=self._first_seen, alarms=store.alarms(self.host)
        )
        self.checker = TargetChecker(baseline.targets)
        self.owners = OwnerCache()  # a cycle confirms last cycle's owners instead of reading every fd

    def cycle(self, now: dt.datetime | None = None) -> CycleReport:
        started = time.monotonic()
        now = now or dt.datetime.now(dt.UTC)
        b = self.baseline
        snap = take_snapshot(b.scope, self.owners)
        listeners = current_listeners(b.scope, b.keep_ports(), snap)
        self.store.record_listeners(self.host, listeners, now)
        states = self.checker.check(now)
        differences = compare(b, listeners) + target_differences(states)
        saved = self.tracker.checkpoint()
        try:
            events = self._track(now, differences)
        except Exception:
            self.tracker.rollback(saved)  # stored nothing: the next cycle emits them again
            raise
        delivery = deliver_due(self.store, self.sinks, now, host=self.host) if self.sinks else None
        notes = [n for n in (snap.hidden_note(),) if n]
        return CycleReport(
            now,
            listeners,
            differences,
            events,
            delivery,
            time.monotonic() - started,
            self.tracker.pending(),
            notes,
            states,
        )

    def _track(self, now: dt.datetime, differences: list[Difference]) -> list[Event]:
        """The tracker's events for this cycle, queued for the sinks and recorded, then its alarms
        stored: in that order, so a crash in between can repeat an alert (same key) but never owe
        an alarm whose alert was not queued."""
        events = self.tracker.observe(now, differences)
        if events:
            # A restarted watch sees again what it alerted before it stopped, with the same ids (the
            # tracker recovers when each difference began). A recorded event was queued for every sink
            # before it was recorded (queue_cycle), so it is dropped here: queued again in a cycle of
            # other events it would be a new message with a new key, sent twice. (Events are rare: one
            # small query per cycle that has any.)
            known = self.store.recorded(e.id for e in events)
            events = [e for e in events if e.id not in known]
        if events:
            queue_cycle(self.store, self.host, events, self.sinks, now)
        keep, resolved = self.tracker.changes()
        self.store.save_alarms(self.host, keep, resolved, now)
        return events

    def run(
        self,
        interval: float,
        stop: threading.Event,
        on_cycle: Callable[[CycleReport], None],
        cycles: int | None = None,
        on_error: Callable[[Exception], None] | None = None,
    ) -> None:
        """Cycle every `interval` seconds (measured start to start) until `stop` is set.

        A failed cycle (the database unreachable, /proc unreadable for a moment) is reported to
        `on_error` and the loop goes on: a watcher that dies on the first hiccup watches nothing. Without
        `on_error` the exception propagates (`--once`: the caller turns it into an exit code)."""
        done = 0
        while not stop.is_set():
            began = time.monotonic()
            try:
                report = self.cycle()
            except Exception as exc:
                if on_error is None:
                    raise
                on_error(exc)
            else:
                on_cycle(report)
            done += 1
            if cycles is not None and done >= cycles:
                return
            stop.wait(max(0.0, interval - (time.monotonic() - began)))

    def _first_seen(self, d: Difference) -> dt.datetime | None:
        """When this difference began, from the store: a restarted watch keeps the original moment, so
        the event it emits has the id the first watch gave it (and is not alerted twice)."""
        if d.port is None:
            return None
        if d.target is not None:
            return self._alerted_at(d)
        rows = [
            r
            for r in self.store.history(port=d.port, host=self.host, kind="listening", proto=d.proto)
            if isinstance(r, IntervalRow) and r.address == d.address
        ]
        if d.actual is not None:
            ident = d.actual.identity()
            mine = [
                r for r in rows if r.gone_at is None and (r.process, r.user, r.unit, r.container) == ident
            ]
            return min((r.first_seen for r in mine), default=None)
        gone = [r.gone_at for r in rows if r.gone_at is not None]
        return max(gone, default=None)

    def _alerted_at(self, d: Difference) -> dt.datetime | None:
        """A target's difference after a restart: when its alarm event went out, if the last event of
        that kind for the target is an alarm (not its all-clear). The recovered moment gives the alarm
        the id it had, so the store's de-duplication keeps it from going out twice."""
        rows = self.store.history(
            port=d.port, host=self.host, kind=EVENT_OF_KIND[d.kind], proto=d.proto, limit=50
        )
        for r in rows:  # newest first
            if isinstance(r, EventRow) and r.address == d.address:
                after = r.after or {}
                # An alarm's `after` is what was observed (TargetState.to_dict()); an all-clear's is
                # the expectation ({status, service}).
                alarm = after.get("as_expected") is False or (
                    d.kind == "certificate" and "days_left" in after
                )
                return r.at if alarm else None
        return None
