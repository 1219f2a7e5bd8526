"""The history store (monitor/store.py) and `portscope history`, on SQLite and on a real PostgreSQL.

Both backends run the same tests (the `db` fixture): a file in tmp_path, and a fresh database on a
PostgreSQL server this module starts on 127.0.0.1 (initdb as the postgres user, trust on loopback).
Concurrency is tested with real processes writing to one database at once, as two watchers would.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import multiprocessing
import os
import sqlite3
import stat
import traceback
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import UniqueConstraint, create_engine, inspect, text

from portscope.errors import BadInput
from portscope.model import Event, Listener
from portscope.monitor import migrations, schema
from portscope.monitor.store import (
    EventRow,
    IntervalRow,
    NoHistory,
    Store,
    default_path,
    listener_ident,
    locate,
)
from tests.helpers import portscope
from tests.monitor.servers import free_port

T0 = dt.datetime(2024, 5, 1, 23, 0, tzinfo=dt.UTC)


def minutes(n: float) -> dt.datetime:
    return T0 + dt.timedelta(minutes=n)


def nc(port: int = 4444, process: str = "nc", pids: tuple[int, ...] = (4242,)) -> Listener:
    return Listener("tcp", "0.0.0.0", port, process, "mallory", None, None, list(pids))


def ev(
    ev_id: str,
    host: str = "alpha",
    kind: str = "listener_added",
    at: dt.datetime = T0,
    port: int = 4444,
    listener: Listener | None = None,
) -> Event:
    lst = listener or nc(port)
    state = lst.to_dict()
    added = kind != "listener_removed"
    return Event(
        id=ev_id,
        kind=kind,
        host=host,
        at=at.isoformat(),
        summary=f"{lst.process} {'listens' if added else 'stopped listening'} on {port}/tcp",
        proto="tcp",
        address="0.0.0.0",
        port=port,
        before=None if added else state,
        after=state if added else None,
    )


# -- PostgreSQL --------------------------------------------------------------------------------------------


# -- opening, files, URLs -------------------------------------------------------------------------------


def test_sqlite_file_is_created_on_first_use_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "state" / "portscope" / "history.db"
    with Store.open(str(path)) as store:
        assert store.backend == "sqlite" and store.schema_version() == migrations.LATEST
        with store._engine.connect() as conn:  # the connection's own settings, not the file's
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # it names processes and users
    with contextlib.closing(sqlite3.connect(path)) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)  # a property of the file
        versions = raw.execute("SELECT version FROM schema_version ORDER BY version").fetchall()
    assert versions == [(m.version,) for m in migrations.MIGRATIONS]


def test_reopening_keeps_the_data(tmp_path: Path) -> None:
    path = str(tmp_path / "h.db")
    with Store.open(f"sqlite:///{path}") as store:
        store.record_events([ev("e1")])
        store.record_listeners("alpha", [nc()], T0)
    with Store.open(path) as store:
        rows = store.history()
    assert [(type(r).__name__, r.host, r.port) for r in rows] == [
        ("EventRow", "alpha", 4444),
        ("IntervalRow", "alpha", 4444),
    ]


def test_a_reader_never_creates_a_database(tmp_path: Path) -> None:
    path = tmp_path / "absent" / "history.db"
    with pytest.raises(NoHistory, match="nothing recorded yet"):
        Store.open(str(path), create=False)
    assert not path.parent.exists()


def test_default_path_follows_xdg_and_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    assert default_path() == tmp_path / "portscope" / "history.db"
    monkeypatch.setenv("XDG_STATE_HOME", "relative/dir")  # invalid per the XDG spec: ignored
    assert default_path() == Path.home() / ".local" / "state" / "portscope" / "history.db"
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert default_path() == Path("/var/lib/portscope/history.db")


def test_locate_accepts_the_documented_forms_only() -> None:
    loc = locate("postgresql://watch:s3cret@db.example:5433/fleet")
    assert loc.url.drivername == "postgresql+psycopg" and loc.url.password == "s3cret"
    assert "s3cret" not in loc.display and loc.backend == "postgresql"
    assert locate("postgres://u@h/d").url.drivername == "postgresql+psycopg"
    assert locate("sqlite:////var/tmp/x.db").path == Path("/var/tmp/x.db")
    assert locate("~/h.db").path == Path.home() / "h.db"
    for bad in ("mysql://u@h/d", "postgresql+psycopg2://u@h/d", "sqlite://", "postgresql://u@h"):
        with pytest.raises(BadInput):
            locate(bad)


# -- events -------------------------------------------------------------------------------------------------


def test_an_event_is_stored_once_whatever_the_retries(db: str) -> None:
    with Store.open(db) as store:
        assert store.record_events([ev("e1"), ev("e2", at=minutes(1))], deliver_to=["mail"]) == ["e1", "e2"]
        # a retry after a crash, and a batch that repeats an id: nothing new
        assert store.record_events([ev("e1"), ev("e1")], deliver_to=["mail", "hook"]) == []
        rows = store.history()
        assert [r.id for r in rows if isinstance(r, EventRow)] == ["e2", "e1"]
        assert {(i.sink, i.dedup_key) for i in store.outbox_items()} == {
            ("mail", "e1"),
            ("mail", "e2"),
            ("hook", "e1"),  # a sink added later still gets the event, once
        }
        first = rows[-1]
        assert isinstance(first, EventRow)
        assert (first.process, first.user, first.at) == ("nc", "mallory", T0)
        assert first.after == nc().to_dict() and first.before is None
        assert store.hosts() == ["alpha"]


def test_times_are_utc_whatever_offset_they_came_with(db: str) -> None:
    at = dt.datetime(2024, 5, 1, 20, 0, tzinfo=dt.timezone(dt.timedelta(hours=-3)))  # 23:00 UTC
    with Store.open(db) as store:
        store.record_events([ev("e1", at=at)])
        (row,) = store.history()
        assert row.at == T0 and row.at.tzinfo == dt.UTC
        assert row.to_dict()["at"] == "2024-05-01T23:00:00+00:00"
        with pytest.raises(ValueError, match="aware"):
            store.record_listeners("alpha", [], dt.datetime(2024, 5, 1, 23, 0))


# -- listener intervals ------------------------------------------------------------------------------------


def test_a_listener_that_appears_stays_and_goes_is_one_interval(db: str) -> None:
    with Store.open(db) as store:
        ssh = Listener("tcp", "::", 22, "sshd", "root", "ssh.service", None, [1])
        assert store.record_listeners("alpha", [ssh], minutes(-60)).opened == 1
        c = store.record_listeners("alpha", [ssh, nc()], T0)
        assert (c.opened, c.extended, c.closed) == (1, 1, 0)
        c = store.record_listeners("alpha", [ssh, nc(pids=(4243,))], minutes(30))  # restarted: new PID
        assert (c.opened, c.extended, c.closed) == (0, 2, 0)
        c = store.record_listeners("alpha", [ssh], minutes(180))
        assert (c.opened, c.extended, c.closed) == (0, 1, 1)
        # An older snapshot (a late writer) must not reopen or re-close anything.
        c = store.record_listeners("alpha", [ssh], minutes(60))
        assert (c.opened, c.closed) == (0, 0)

        rows = store.history(port=4444)
        assert len(rows) == 1 and isinstance(rows[0], IntervalRow)
        r = rows[0]
        assert (r.process, r.user, r.first_seen, r.last_seen, r.gone_at) == (
            "nc",
            "mallory",
            T0,
            minutes(30),
            minutes(180),
        )
        assert r.pids == [4243]
        (sshd,) = store.history(port=22)
        assert isinstance(sshd, IntervalRow) and sshd.gone_at is None and sshd.last_seen == minutes(180)
        assert sshd.unit == "ssh.service" and sshd.address == "::"


def test_which_process_held_the_port_between_two_times(db: str) -> None:
    with Store.open(db) as store:
        store.record_listeners("alpha", [nc()], T0)
        store.record_listeners("alpha", [], minutes(60))
        store.record_listeners("alpha", [nc(process="socat")], minutes(120))  # same port, other process
        store.record_listeners("alpha", [nc(process="python3")], minutes(180))  # identity change
        store.record_listeners("alpha", [nc(process="python3")], minutes(240))

        def held(t1: float, t2: float) -> list[str | None]:
            rows = store.history(since=minutes(t1), until=minutes(t2), port=4444, kind="listening")
            return [r.process for r in rows]

        assert held(10, 20) == ["nc"]
        assert held(70, 80) == []
        assert held(30, 130) == ["socat", "nc"]  # newest first
        assert held(200, 10_000) == ["python3"]  # still open: overlaps any later window
        assert held(-100, -1) == []
        # A second watcher's host is a different slot altogether.
        store.record_listeners("beta", [nc()], minutes(15))
        assert [(r.host, r.process) for r in store.history(since=minutes(10), until=minutes(20))] == [
            ("beta", "nc"),
            ("alpha", "nc"),
        ]


def test_the_identity_ignores_pids() -> None:
    assert listener_ident(nc(pids=(1,))) == listener_ident(nc(pids=(2, 3)))
    assert listener_ident(nc()) != listener_ident(nc(process="socat"))
    assert listener_ident(nc()) != listener_ident(Listener("udp", "0.0.0.0", 4444, "nc", "mallory"))


# -- history queries ---------------------------------------------------------------------------------------


def test_history_filters(db: str) -> None:
    with Store.open(db) as store:
        store.record_events(
            [
                ev("a1", "alpha", at=T0),
                ev("a2", "alpha", "listener_removed", at=minutes(90)),
                ev("a3", "alpha", at=minutes(5), port=8080),
                ev("b1", "beta", at=minutes(10)),
            ]
        )
        store.record_listeners("alpha", [nc()], T0)

        def ids(**kw: Any) -> list[str]:
            return [r.id if isinstance(r, EventRow) else f"{r.host}:{r.port}" for r in store.history(**kw)]

        assert ids() == ["a2", "b1", "a3", "a1", "alpha:4444"]
        assert ids(host="beta") == ["b1"]
        assert ids(port=8080) == ["a3"]
        assert ids(kind="listener_removed") == ["a2"]
        assert ids(kind="listening") == ["alpha:4444"]
        assert ids(since=minutes(5), until=minutes(10)) == ["b1", "a3", "alpha:4444"]  # bounds included
        assert ids(since=minutes(91)) == ["alpha:4444"]  # still open
        assert ids(limit=2) == ["a2", "b1"]
        assert ids(port=4444, proto="udp") == []
        with pytest.raises(BadInput, match="unknown kind"):
            store.history(kind="nonsense")


# -- outbox -------------------------------------------------------------------------------------------------


def test_outbox_claims_retries_and_finishes(db: str) -> None:
    now = minutes(0)
    with Store.open(db) as store:
        first = store.enqueue("mail", "k1", {"text": "port 4444 opened"}, host="alpha", now=now)
        assert first is not None
        assert store.enqueue("mail", "k1", {"text": "again"}, host="alpha", now=now) is None
        second = store.enqueue("hook", "k1", ["same key, other sink"], now=minutes(1))
        assert second is not None and second != first

        (item,) = store.due(minutes(0.5), sink="mail", lease=dt.timedelta(minutes=5))
        assert (item.id, item.payload, item.attempts, item.host) == (
            first,
            {"text": "port 4444 opened"},
            1,
            "alpha",
        )
        (hook,) = store.due(minutes(1))  # no sink named: only the hook's is due, mail's is leased
        assert (hook.id, hook.sink, hook.host) == (second, "hook", None)
        assert store.due(minutes(2), sink="mail") == []  # leased to the first claimer
        (again,) = store.due(minutes(6), sink="mail")  # the claimer died: due after the lease
        assert again.id == first and again.attempts == 2

        assert store.mark_failed(first, "connection refused", minutes(10))
        assert store.due(minutes(9), sink="mail") == []
        (retry,) = store.due(minutes(10), sink="mail")
        assert retry.last_error == "connection refused" and retry.attempts == 3
        assert store.mark_sent(first, at=minutes(10.5))
        assert not store.mark_sent(first)  # already sent: a second sender learns it
        assert store.due(minutes(1000), sink="mail") == []
        assert store.mark_failed(second, "HTTP 400", None)  # give up
        (failed,) = store.outbox_items(state="failed")
        assert (failed.id, failed.sink, failed.last_error) == (second, "hook", "HTTP 400")
        (sent,) = store.outbox_items(state="sent")
        assert sent.sent_at == minutes(10.5)


def test_prune_keeps_what_is_still_going_on(db: str) -> None:
    with Store.open(db) as store:
        store.record_events([ev("old", at=T0), ev("new", at=minutes(100))])
        store.record_listeners("alpha", [nc(), nc(22, "sshd")], T0)
        store.record_listeners("alpha", [nc(22, "sshd")], minutes(10))
        store.enqueue("mail", "pending", {}, now=T0)
        done = store.enqueue("mail", "done", {}, now=T0)
        assert done is not None and store.mark_sent(done)
        counts = store.prune(minutes(50))
        assert counts == {"events": 1, "listener_intervals": 1, "outbox": 1}
        assert {r.id if isinstance(r, EventRow) else r.process for r in store.history()} == {"new", "sshd"}
        assert [i.dedup_key for i in store.outbox_items()] == ["pending"]


# -- two writers at once -------------------------------------------------------------------------------------


def _writer(db: str, me: str, barrier: Any, results: Any) -> None:
    """One watcher process: events (half of them shared with the other writer), its own listeners and
    those of a host both claim to watch, outbox messages with shared keys, then claims until empty."""
    try:
        store = Store.open(db)
        barrier.wait(60)
        for rnd in range(15):
            at = minutes(rnd)
            batch = [ev(f"shared-{rnd}-{i}", "shared", at=at) for i in range(8)]
            batch += [ev(f"{me}-{rnd}-{i}", me, at=at, port=5000 + i) for i in range(8)]
            store.record_events(batch, deliver_to=["hook"])
            store.record_listeners(me, [nc(5000 + rnd)], at)
            store.record_listeners("shared", [nc(), nc(22, "sshd")], at)
            store.enqueue("mail", f"digest-{rnd}", {"round": rnd, "by": me}, now=at)
        claimed: list[int] = []
        later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)  # everything enqueued is due by then
        while batch_claimed := store.due(later, limit=7, lease=dt.timedelta(days=1)):
            claimed += [i.id for i in batch_claimed]
        store.close()
        results.put((me, "ok", claimed))
    except BaseException:
        results.put((me, "error", traceback.format_exc()))


def test_two_processes_writing_at_once_neither_fail_nor_duplicate(db: str) -> None:
    # No Store.open() first: the two also race to create the file (or schema) and migrate it.
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    results = ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(db, name, barrier, results)) for name in ("alpha", "beta")]
    for p in procs:
        p.start()
    outcome = {}
    for _ in procs:
        me, status, data = results.get(timeout=300)
        assert status == "ok", data
        outcome[me] = data
    for p in procs:
        p.join(60)
        assert p.exitcode == 0

    with Store.open(db) as store:
        evs = [r for r in store.history() if isinstance(r, EventRow)]
        assert len(evs) == len({r.id for r in evs}) == 15 * 8 * 3
        items = store.outbox_items(limit=10_000)
        assert len(items) == 15 * 8 * 3 + 15  # one per event for "hook", one per digest for "mail"
        assert {i.state for i in items} == {"pending"} and all(i.attempts == 1 for i in items)
        # every message claimed by exactly one of the two writers
        alpha, beta = set(outcome["alpha"]), set(outcome["beta"])
        assert not alpha & beta
        assert len(outcome["alpha"]) + len(outcome["beta"]) == len(items)
        assert alpha | beta == {i.id for i in items}
        # the host both wrote for has one interval per listener, still open
        shared = store.history(host="shared", kind="listening")
        assert sorted((r.port, r.gone_at, r.first_seen) for r in shared if isinstance(r, IntervalRow)) == [
            (22, None, T0),
            (4444, None, T0),
        ]
        assert len(store.history(host="alpha", kind="listening")) == 15
        assert store.hosts() == ["alpha", "beta", "shared"]


# -- migrations ---------------------------------------------------------------------------------------------


def _engine_for(db: str) -> Any:
    loc = locate(db)
    if loc.path is not None:
        loc.path.parent.mkdir(parents=True, exist_ok=True)
    return create_engine(loc.url)


def test_an_older_database_is_upgraded_and_keeps_its_data(db: str) -> None:
    engine = _engine_for(db)
    try:
        with engine.begin() as conn:  # what portscope with schema version 1 left behind
            assert migrations.upgrade(conn, target=1) == [1]
            conn.execute(
                text("INSERT INTO hosts (name, first_seen, last_seen) VALUES ('alpha', :t, :t)"),
                {"t": T0.replace(tzinfo=None)},
            )
            conn.execute(
                text(
                    "INSERT INTO events (id, host, kind, at, port, summary, recorded_at) "
                    "VALUES ('v1', 'alpha', 'listener_added', :t, 4444, 'nc listens', :t)"
                ),
                {"t": T0.replace(tzinfo=None)},
            )
        with engine.connect() as conn:
            assert migrations.current_version(conn) == 1
            assert not inspect(conn).has_table("outbox")
    finally:
        engine.dispose()
    with Store.open(db) as store:
        assert store.schema_version() == migrations.LATEST == 3
        (row,) = store.history()
        assert isinstance(row, EventRow) and (row.id, row.at, row.port) == ("v1", T0, 4444)
        assert store.enqueue("mail", "v1", {"id": "v1"}, host="alpha") is not None  # v2's table
        assert store.alarms("alpha") == []  # v3's
    engine = _engine_for(db)
    try:
        with engine.connect() as conn:
            got = conn.execute(text("SELECT version, description FROM schema_version ORDER BY version"))
            assert [tuple(r) for r in got] == [(m.version, m.description) for m in migrations.MIGRATIONS]
    finally:
        engine.dispose()


def test_the_migrations_build_exactly_the_schema_the_code_uses(db: str) -> None:
    Store.open(db).close()
    engine = _engine_for(db)
    try:
        with engine.connect() as conn:
            insp = inspect(conn)
            assert set(insp.get_table_names()) == set(schema.metadata.tables)
            for table in schema.metadata.sorted_tables:
                cols = {c["name"]: c["nullable"] for c in insp.get_columns(table.name)}
                assert cols == {c.name: c.nullable for c in table.columns}, table.name
                indexes = {
                    (i["name"], tuple(i["column_names"]), bool(i["unique"]))
                    for i in insp.get_indexes(table.name)
                }
                declared = {(i.name, tuple(c.name for c in i.columns), i.unique) for i in table.indexes}
                assert declared <= indexes, table.name
                uniques = {tuple(u["column_names"]) for u in insp.get_unique_constraints(table.name)}
                expected = {
                    tuple(c.name for c in con.columns)
                    for con in table.constraints
                    if isinstance(con, UniqueConstraint)
                }
                assert expected <= uniques, table.name
    finally:
        engine.dispose()


def test_a_database_from_a_newer_portscope_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    Store.open(str(path)).close()
    with contextlib.closing(sqlite3.connect(path)) as raw:
        raw.execute("INSERT INTO schema_version VALUES (99, 'from the future', '2030-01-01 00:00:00')")
        raw.commit()
    with pytest.raises(migrations.SchemaTooNew, match="schema version 99"):
        Store.open(str(path))
    proc = portscope("history", "--db", str(path))
    assert proc.returncode == 3, proc.stderr
    assert proc.stderr.count("\n") == 1 and "newer portscope" in proc.stderr


def test_somebody_elses_database_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    with contextlib.closing(sqlite3.connect(path)) as raw:
        raw.execute("CREATE TABLE customers (id INTEGER)")
        raw.commit()
    with pytest.raises(migrations.NotAHistoryDatabase):
        Store.open(str(path))
    with contextlib.closing(sqlite3.connect(path)) as raw:
        names = [r[0] for r in raw.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    assert names == ["customers"]


# -- the CLI ------------------------------------------------------------------------------------------------


def _fill_last_night(store: Store, host: str, process: str) -> None:
    lst = nc(process=process)
    ssh = Listener("tcp", "::", 22, "sshd", "root", "ssh.service")
    store.record_listeners(host, [ssh], minutes(-600))
    store.record_events([ev(f"{host}-add", host, at=T0, listener=lst)])
    store.record_listeners(host, [ssh, lst], T0)
    store.record_listeners(host, [ssh, lst], minutes(60))
    store.record_events([ev(f"{host}-del", host, "listener_removed", at=minutes(180), listener=lst)])
    store.record_listeners(host, [ssh], minutes(180))


def test_history_cli_on_sqlite(tmp_path: Path) -> None:
    path = str(tmp_path / "h.db")
    with Store.open(path) as store:
        _fill_last_night(store, "alpha", "nc")

    proc = portscope("history", "--db", path, "--port", "4444", "--since", "2024-05-01T22:00Z")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("WHEN (")
    assert [line.split()[3] for line in lines[1:]] == ["listener_removed", "listener_added", "listening"]
    local_gone = minutes(180).astimezone().strftime("%Y-%m-%d %H:%M:%S")
    assert f"until {local_gone}" in lines[3] and "nc" in lines[3] and "0.0.0.0:4444" in lines[3]

    rows = json.loads(
        portscope("history", "--db", f"sqlite:///{path}", "--json", "--kind", "listening").stdout
    )
    assert [(r["port"], r["process"], r["gone_at"]) for r in rows] == [
        (4444, "nc", "2024-05-02T02:00:00+00:00"),
        (22, "sshd", None),
    ]

    nothing = portscope("history", "--db", path, "--port", "9999", "--json")
    assert (nothing.returncode, json.loads(nothing.stdout)) == (1, [])
    assert "nothing recorded matches" in nothing.stderr


def test_history_cli_input_errors_are_one_line(tmp_path: Path) -> None:
    path = str(tmp_path / "h.db")
    Store.open(path).close()
    for args, needle in (
        (["--since", "yesterday"], "--since 'yesterday'"),
        (["--until", "5x"], "--until '5x'"),
        (["--since", "1d", "--until", "2d"], "is after --until"),
        (["--port", "80-90"], "several ports"),
        (["--port", "70000"], "70000"),
        (["--limit", "0"], "--limit"),
        (["--kind", "opened"], "invalid choice"),
    ):
        proc = portscope("history", "--db", path, *args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert proc.stderr.count("\n") == 1 and needle in proc.stderr and "Traceback" not in proc.stderr
    bad_db = portscope("history", "--db", "mysql://u@localhost/x")
    assert bad_db.returncode == 2 and "postgresql://" in bad_db.stderr


def test_history_cli_without_a_database_says_so(tmp_path: Path) -> None:
    path = tmp_path / "never" / "history.db"
    proc = portscope("history", "--db", str(path))
    assert proc.returncode == 1 and proc.stdout == ""
    assert "nothing recorded yet" in proc.stderr and "Traceback" not in proc.stderr
    assert not path.parent.exists()
    proc = portscope("history", "--db", str(path), "--json")
    assert (proc.returncode, json.loads(proc.stdout)) == (1, [])


@pytest.mark.root
def test_history_cli_tells_two_watchers_apart_on_postgresql(pg_url: str) -> None:
    # Two watchers on two hosts, each with its own connections to the one database.
    with Store.open(pg_url) as alpha, Store.open(pg_url) as beta:
        _fill_last_night(alpha, "alpha", "nc")
        _fill_last_night(beta, "beta", "socat")

    def history(*args: str) -> list[dict[str, Any]]:
        proc = portscope("history", "--db", pg_url, "--json", *args)
        assert proc.returncode == 0, proc.stderr
        rows: list[dict[str, Any]] = json.loads(proc.stdout)
        return rows

    both = history("--port", "4444")
    assert {(r["host"], r["process"]) for r in both} == {("alpha", "nc"), ("beta", "socat")}
    only = history("--port", "4444", "--host", "beta")
    assert [(r["host"], r["kind"], r["process"]) for r in only] == [
        ("beta", "listener_removed", "socat"),
        ("beta", "listener_added", "socat"),
        ("beta", "listening", "socat"),
    ]
    assert only[2]["first_seen"] == "2024-05-01T23:00:00+00:00"
    assert only[2]["gone_at"] == "2024-05-02T02:00:00+00:00"
    assert {r["host"] for r in history("--host", "alpha")} == {"alpha"}
    # the database from the environment (keeps a password out of argv)
    proc = portscope(
        "history", "--json", "--host", "alpha", "--kind", "listening", env={"PORTSCOPE_DB": pg_url}
    )
    assert proc.returncode == 0, proc.stderr
    assert sorted(r["port"] for r in json.loads(proc.stdout)) == [22, 4444]


@pytest.mark.root
def test_history_cli_on_an_empty_or_unreachable_postgresql(pg_url: str) -> None:
    proc = portscope("history", "--db", pg_url)
    assert proc.returncode == 1 and "nothing recorded yet" in proc.stderr
    closed = free_port()
    proc = portscope("history", "--db", f"postgresql://postgres:hunter2@127.0.0.1:{closed}/x")
    assert proc.returncode == 3 and proc.stderr.count("\n") == 1
    assert "hunter2" not in proc.stderr and "127.0.0.1" in proc.stderr
