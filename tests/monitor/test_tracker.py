"""watch's change tracker: persistence before alerting, one all-clear, identities not PIDs, stable ids.

The differences come from the real comparison (policy.baseline.loads + compare) of a baseline file with
Listener objects, so what is tested is the chain watch runs each cycle, minus the socket snapshot.
"""

from __future__ import annotations

import datetime as dt

from portscope.model import Listener
from portscope.monitor.tracker import Tracker
from portscope.policy.baseline import compare, loads

T0 = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC)
BASELINE = loads(
    """
[[listener]]
proto = "tcp"
port = 22
address = "0.0.0.0"
process = "sshd"
""",
    "portscope.toml",
)


def _sshd(pid: int = 100, process: str = "sshd") -> Listener:
    return Listener("tcp", "0.0.0.0", 22, process=process, user="root", pids=[pid])


def _nc(pid: int = 200) -> Listener:
    return Listener("tcp", "0.0.0.0", 4444, process="nc", user="root", pids=[pid])


def _run(tracker: Tracker, timeline: list[tuple[int, list[Listener]]]) -> list[tuple[int, str, int | None]]:
    out = []
    for seconds, listeners in timeline:
        for e in tracker.observe(T0 + dt.timedelta(seconds=seconds), compare(BASELINE, listeners)):
            out.append((seconds, e.kind, e.port))
    return out


def test_a_new_listener_alerts_once_after_persisting_and_its_removal_once() -> None:
    t = Tracker("h", persist=60)
    events = _run(
        t,
        [
            (0, [_sshd()]),
            (30, [_sshd(), _nc()]),
            (60, [_sshd(), _nc()]),
            (90, [_sshd(), _nc()]),
            (120, [_sshd(), _nc()]),
            (150, [_sshd()]),
            (180, [_sshd()]),
            (210, [_sshd()]),
            (240, [_sshd()]),
        ],
    )
    assert events == [(90, "listener_added", 4444), (210, "listener_removed", 4444)]


def test_a_restart_shorter_than_the_persistence_time_says_nothing() -> None:
    t = Tracker("h", persist=60)
    # sshd drops its listener for 30 s and comes back with a new PID
    events = _run(
        t, [(0, [_sshd(100)]), (30, []), (60, [_sshd(101)]), (90, [_sshd(101)]), (300, [_sshd(101)])]
    )
    assert events == []


def test_a_new_pid_is_the_same_listener_but_another_process_is_a_change() -> None:
    t = Tracker("h", persist=0)
    assert _run(t, [(0, [_sshd(100)]), (10, [_sshd(555)])]) == []
    events = _run(t, [(20, [_sshd(556, process="dropbear")]), (30, [_sshd(556, process="dropbear")])])
    assert events == [(20, "listener_changed", 22)]
    assert _run(t, [(40, [_sshd(557)])]) == [(40, "listener_changed", 22)]  # back to the expected process


def test_a_missing_expected_listener_and_its_return() -> None:
    t = Tracker("h", persist=30)
    events = _run(t, [(0, []), (29, []), (30, []), (40, [_sshd()]), (70, [_sshd()])])
    assert events == [(30, "listener_removed", 22), (70, "listener_added", 22)]


def test_event_ids_survive_a_restart_of_watch_when_the_start_is_recovered() -> None:
    first = Tracker("h", persist=60)
    (event,) = first.observe(T0 + dt.timedelta(seconds=60), compare(BASELINE, [_sshd(), _nc()])) or [None]
    assert event is None  # first sight at 60 s: not yet persisted
    alerted = first.observe(T0 + dt.timedelta(seconds=120), compare(BASELINE, [_sshd(), _nc()]))
    # watch restarts; the store says nc was first seen at 60 s: the same event, the same id
    again = Tracker("h", persist=60, first_seen=lambda d: T0 + dt.timedelta(seconds=60))
    redo = again.observe(T0 + dt.timedelta(seconds=125), compare(BASELINE, [_sshd(), _nc(201)]))
    assert [e.id for e in redo] == [e.id for e in alerted] and len(alerted) == 1
    assert alerted[0].after is not None and alerted[0].after["process"] == "nc" and alerted[0].before is None
    other_host = Tracker("g", persist=60, first_seen=lambda d: T0 + dt.timedelta(seconds=60))
    assert (
        other_host.observe(T0 + dt.timedelta(seconds=125), compare(BASELINE, [_sshd(), _nc()]))[0].id
        != alerted[0].id
    )


def test_pending_counts_what_is_not_alerted_yet() -> None:
    t = Tracker("h", persist=60)
    t.observe(T0, compare(BASELINE, [_sshd(), _nc()]))
    assert t.pending() == 1
    t.observe(T0 + dt.timedelta(seconds=60), compare(BASELINE, [_sshd(), _nc()]))
    assert t.pending() == 0


def _at(seconds: int) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def test_an_alarm_handed_to_a_new_tracker_gets_its_all_clear_when_the_difference_ended_meanwhile() -> None:
    first = Tracker("h", persist=30)
    assert first.observe(_at(0), compare(BASELINE, [_sshd(), _nc()])) == []
    (alarm_event,) = first.observe(_at(30), compare(BASELINE, [_sshd(), _nc()]))
    keep, resolved = first.changes()
    assert [a.since for a in keep] == [_at(0)] and resolved == []
    assert (
        keep[0].resolution["kind"] == "listener_removed" and keep[0].resolution["before"]["process"] == "nc"
    )
    assert first.changes() == ([], [])  # handed over once

    # watch restarts with what the store kept; nc went away while it was down
    second = Tracker("h", persist=30, alarms=keep)
    assert second.pending() == 0
    assert second.observe(_at(100), compare(BASELINE, [_sshd()])) == []  # gone: must stay gone 30 s
    assert [a.gone_since for a in second.changes()[0]] == [_at(100)]
    (clear,) = second.observe(_at(130), compare(BASELINE, [_sshd()]))
    assert (clear.kind, clear.port, clear.at) == ("listener_removed", 4444, _at(100).isoformat())
    assert clear.before is not None and clear.before["process"] == "nc" and clear.after is None
    assert clear.id != alarm_event.id
    assert second.changes() == ([], [keep[0].key])  # the store forgets it
    assert second.observe(_at(160), compare(BASELINE, [_sshd()])) == []


def test_a_restored_alarm_still_present_is_not_alerted_again() -> None:
    first = Tracker("h", persist=0)
    assert len(first.observe(_at(0), compare(BASELINE, [_sshd(), _nc()]))) == 1
    keep, _ = first.changes()
    second = Tracker("h", persist=0, alarms=keep)
    assert second.observe(_at(50), compare(BASELINE, [_sshd(), _nc(999)])) == []
    assert [e.kind for e in second.observe(_at(60), compare(BASELINE, [_sshd()]))] == ["listener_removed"]


def test_a_rolled_back_cycle_emits_its_events_again() -> None:
    t = Tracker("h", persist=0)
    saved = t.checkpoint()
    lost = t.observe(_at(0), compare(BASELINE, [_sshd(), _nc()]))
    t.rollback(saved)  # the store refused them
    again = t.observe(_at(5), compare(BASELINE, [_sshd(), _nc()]))
    assert [e.kind for e in again] == [e.kind for e in lost] == ["listener_added"]
    assert [a.key for a in t.changes()[0]] != []
