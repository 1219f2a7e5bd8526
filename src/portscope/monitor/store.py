"""The history store: what watch saw (events, listener intervals) and the alerts it owes (outbox).

One storage layer over two backends (DESIGN.md, "Scaling past one host"): an SQLite file on one host,
created on first use, or one PostgreSQL database that every host's watcher writes to, each row tagged
with its host. SQLAlchemy Core, no ORM: the statements are few and explicit, and the same ones run on
both backends (INSERT ... ON CONFLICT is spelled alike by the two dialects).

Safe with several writers on one database (two watchers, or a watcher and `history`):
- every write is one transaction; on SQLite it begins IMMEDIATE, so writers queue on the busy timeout
  instead of failing when a read lock cannot be upgraded, and WAL lets readers go on meanwhile;
- a write first upserts its host's row, which on PostgreSQL serialises writers of one host (the
  listener intervals are read-modify-write per host) and leaves other hosts' writers alone;
- duplicates are refused by keys, not by checks: events by Event.id, an open interval by (host,
  identity), an outbox message by (sink, dedup_key), all with ON CONFLICT DO NOTHING;
- a deadlock or serialisation failure (PostgreSQL) or a lock wait past the timeout (SQLite) is retried.

Imported only by watch and history: SQLAlchemy costs ~200 ms that `ls` must not pay.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import random
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Self, TypeVar

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    Table,
    create_engine,
    delete,
    event,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError

from portscope.errors import BadInput, CannotDo
from portscope.model import EVENT_KINDS, Event, Listener
from portscope.monitor import migrations
from portscope.monitor.schema import alarms, events, hosts, listener_intervals, outbox

if TYPE_CHECKING:
    from sqlalchemy.dialects import postgresql as pg_dialect
    from sqlalchemy.dialects import sqlite as sqlite_dialect

    from portscope.monitor.tracker import Alarm

T = TypeVar("T")

BUSY_TIMEOUT_S = 30  # SQLite: how long a writer waits for another one before the attempt fails
WRITE_ATTEMPTS = 5  # a transaction that lost a deadlock or timed out on a lock is tried this often
CHUNK = 500  # rows per multi-row statement: far below SQLite's 32766 bound parameters
ERROR_MAX = 2000  # characters of a delivery error kept in the outbox
LISTENING = "listening"  # the `kind` of a listener interval in history rows (not an event kind)
HISTORY_KINDS = (*EVENT_KINDS, LISTENING)


class StoreError(CannotDo):
    """The history database cannot be used (unreachable, refused us, corrupt): exit 3 in the CLI."""


class NoHistory(LookupError):
    """Nothing was ever recorded at that place: `history` says so and exits 1, it is not an error."""


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# -- where the database is ------------------------------------------------------------------------------


def default_path() -> Path:
    """/var/lib/portscope/history.db for root (a system watcher), else under $XDG_STATE_HOME."""
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return Path("/var/lib/portscope/history.db")
    state = os.environ.get("XDG_STATE_HOME", "")
    base = Path(state) if os.path.isabs(state) else Path.home() / ".local" / "state"
    return base / "portscope" / "history.db"


@dataclass(frozen=True, slots=True)
class Location:
    """A resolved --db: the SQLAlchemy URL, the file for SQLite, and a name safe to show."""

    url: URL
    path: Path | None  # SQLite only
    display: str  # the password, if any, masked

    @property
    def backend(self) -> str:
        return "sqlite" if self.path is not None else "postgresql"


_DB_FORMS = "a file path, sqlite:///PATH or postgresql://USER@HOST[:PORT]/DBNAME"


def locate(db: str | None) -> Location:
    """Turn what the user gave --db (or nothing) into a Location; BadInput names the valid forms."""
    if not db:
        path = default_path()
        return Location(URL.create("sqlite+pysqlite", database=str(path)), path, str(path))
    scheme = db.split("://", 1)[0].lower() if "://" in db else None
    if scheme is None:
        path = Path(db).expanduser()
        return Location(URL.create("sqlite+pysqlite", database=str(path)), path, str(path))
    try:
        url = make_url(db)
    except (ArgumentError, ValueError) as exc:
        raise BadInput(f"--db {db!r} is not a database URL ({exc}); give {_DB_FORMS}") from None
    if scheme in ("postgresql", "postgres", "postgresql+psycopg"):
        url = url.set(drivername="postgresql+psycopg")
        if not url.database:
            raise BadInput(f"--db: the PostgreSQL URL names no database; give {_DB_FORMS}")
        shown = url.set(drivername="postgresql").render_as_string(hide_password=True)
        return Location(url, None, shown)
    if scheme in ("sqlite", "sqlite+pysqlite"):
        if not url.database or url.database == ":memory:":
            raise BadInput(f"--db: an in-memory SQLite database would keep nothing; give {_DB_FORMS}")
        path = Path(url.database).expanduser()
        return Location(URL.create("sqlite+pysqlite", database=str(path)), path, str(path))
    if scheme.startswith("postgresql+"):
        raise BadInput(f"--db: PostgreSQL is reached through psycopg 3; write postgresql://... ({_DB_FORMS})")
    raise BadInput(f"--db: unsupported database {scheme!r}; give {_DB_FORMS}")


# -- rows ---------------------------------------------------------------------------------------------------


def _iso(value: dt.datetime | None) -> str | None:
    return None if value is None else value.isoformat()


@dataclass(slots=True)
class EventRow:
    """One recorded event (model.Event), as history returns it."""

    record: ClassVar[str] = "event"
    id: str
    host: str
    kind: str
    at: dt.datetime
    summary: str
    proto: str | None = None
    address: str | None = None
    port: int | None = None
    process: str | None = None
    user: str | None = None
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "record": self.record,
            "id": self.id,
            "host": self.host,
            "kind": self.kind,
            "at": _iso(self.at),
            "proto": self.proto,
            "address": self.address,
            "port": self.port,
            "process": self.process,
            "user": self.user,
            "summary": self.summary,
            "before": self.before,
            "after": self.after,
        }


@dataclass(slots=True)
class IntervalRow:
    """One listener identity holding one slot from first_seen until gone_at (None: still there, as of
    last_seen). The answer to "which process held port P between t1 and t2"."""

    record: ClassVar[str] = "listener"
    kind: ClassVar[str] = LISTENING
    host: str
    proto: str
    address: str
    port: int
    first_seen: dt.datetime
    last_seen: dt.datetime
    gone_at: dt.datetime | None = None
    process: str | None = None
    user: str | None = None
    unit: str | None = None
    container: str | None = None
    pids: list[int] = field(default_factory=list)

    @property
    def at(self) -> dt.datetime:
        return self.first_seen

    def to_dict(self) -> dict[str, Any]:
        return {
            "record": self.record,
            "host": self.host,
            "kind": self.kind,
            "at": _iso(self.first_seen),
            "proto": self.proto,
            "address": self.address,
            "port": self.port,
            "process": self.process,
            "user": self.user,
            "unit": self.unit,
            "container": self.container,
            "pids": list(self.pids),
            "first_seen": _iso(self.first_seen),
            "last_seen": _iso(self.last_seen),
            "gone_at": _iso(self.gone_at),
        }


HistoryRow = EventRow | IntervalRow


@dataclass(slots=True)
class IntervalChanges:
    """What one record_listeners() call did: intervals opened, still open (extended), closed."""

    opened: int = 0
    extended: int = 0
    closed: int = 0


@dataclass(slots=True)
class OutboxItem:
    """One message owed to one sink."""

    id: int
    sink: str
    dedup_key: str
    host: str | None
    payload: Any
    state: str  # pending | sent | failed (given up)
    attempts: int  # deliveries started (claims by due())
    next_attempt_at: dt.datetime
    last_error: str | None
    created_at: dt.datetime
    sent_at: dt.datetime | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "sink": self.sink,
            "dedup_key": self.dedup_key,
            "host": self.host,
            "payload": self.payload,
            "state": self.state,
            "attempts": self.attempts,
            "next_attempt_at": _iso(self.next_attempt_at),
            "last_error": self.last_error,
            "created_at": _iso(self.created_at),
            "sent_at": _iso(self.sent_at),
        }


def listener_ident(listener: Listener) -> str:
    """A digest of the listener's slot and identity (model.Listener.key + identity, never PIDs): the
    same daemon restarted keeps its interval; another process on the same port starts a new one."""
    raw = json.dumps([*listener.key(), *listener.identity()], separators=(",", ":"))
    return hashlib.sha256(raw.encode()).hexdigest()[:32]


def parse_at(value: str) -> dt.datetime:
    """Event.at (ISO 8601, UTC) as an aware datetime; a naive one is taken as UTC, as documented."""
    parsed = dt.datetime.fromisoformat(value)
    return parsed.replace(tzinfo=dt.UTC) if parsed.tzinfo is None else parsed.astimezone(dt.UTC)


def _aware(value: dt.datetime, what: str) -> dt.datetime:
    if value.tzinfo is None:
        raise ValueError(f"{what} must be an aware datetime (UTC), not a naive one")
    return value.astimezone(dt.UTC)


def _who(ev: Event) -> tuple[str | None, str | None]:
    """The process and user of a listener event, from its after (or, when removed, before) state."""
    for state in (ev.after, ev.before):
        if isinstance(state, Mapping):
            process, user = state.get("process"), state.get("user")
            return (
                None if process is None else str(process),
                None if user is None else str(user),
            )
    return None, None


def _chunks(items: Sequence[T], size: int = CHUNK) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _transient(exc: DBAPIError) -> bool:
    """Worth trying the whole transaction again: it lost a race, nothing is wrong with it."""
    sqlstate = getattr(exc.orig, "sqlstate", None)
    if sqlstate in ("40001", "40P01"):  # serialization_failure, deadlock_detected
        return True
    message = str(exc.orig).lower()
    return "database is locked" in message or "database is busy" in message


# -- the store ------------------------------------------------------------------------------------------------


class Store:
    """The history database. Open with Store.open(); close() (or a with block) when done.

    Every time taken or returned is an aware UTC datetime. Not for sharing across fork(): open one
    Store per process.
    """

    def __init__(self, engine: Engine, location: Location) -> None:
        self._engine = engine
        self.location = location
        self.backend = engine.dialect.name  # sqlite | postgresql

    # -- opening --

    @classmethod
    def open(cls, db: str | Location | None = None, *, create: bool = True) -> Store:
        """Open (and, with create, make) the database at `db` (see locate()) and bring its schema up
        to date. create=False is for readers: a database that does not exist yet, or holds no
        portscope schema, raises NoHistory instead of being made."""
        location = db if isinstance(db, Location) else locate(db)
        if location.path is not None:
            _prepare_file(location.path, create)
        engine = _engine(location)
        store = cls(engine, location)
        try:
            store._migrate(create)
        except BaseException:
            engine.dispose()
            raise
        return store

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _migrate(self, create: bool) -> None:
        where = f"the history database {self.location.display}"
        version = self._read(migrations.current_version)
        if version == migrations.LATEST:
            return
        if version is None and not create and not self._read(_has_tables):
            raise NoHistory(f"nothing recorded yet in {self.location.display}")
        if version is not None and version > migrations.LATEST:
            raise migrations.too_new(version, where)
        self._write(lambda c: migrations.upgrade(c, where=where))

    def schema_version(self) -> int | None:
        return self._read(migrations.current_version)

    # -- transactions --

    def _read(self, work: Callable[[Connection], T]) -> T:
        try:
            with self._engine.connect() as conn:
                if self.backend == "postgresql":
                    # One snapshot for the events and the intervals of one history() answer.
                    conn.execution_options(isolation_level="REPEATABLE READ")
                with conn.begin():
                    return work(conn)
        except DBAPIError as exc:
            raise self._error(exc) from exc

    def _write(self, work: Callable[[Connection], T]) -> T:
        for attempt in range(1, WRITE_ATTEMPTS + 1):
            try:
                with self._engine.connect() as conn:
                    conn.execution_options(portscope_write=True)
                    with conn.begin():
                        return work(conn)
            except DBAPIError as exc:
                if attempt == WRITE_ATTEMPTS or not _transient(exc):
                    raise self._error(exc) from exc
                time.sleep(random.uniform(0.01, 0.05) * attempt)  # desynchronise the racing writers
        raise AssertionError("unreachable")

    def _error(self, exc: DBAPIError) -> StoreError:
        reason = " ".join(str(exc.orig).split())[:500]
        return StoreError(f"the history database {self.location.display}: {reason}")

    def _insert(self, table: Table) -> pg_dialect.Insert | sqlite_dialect.Insert:
        """INSERT with ON CONFLICT: each dialect has its own construct, with the same methods. Imported
        here: a host on SQLite need not load the PostgreSQL dialect (~35 ms)."""
        if self.backend == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            return pg_insert(table)
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(table)

    def _greatest(self, a: ColumnElement[Any], b: ColumnElement[Any]) -> ColumnElement[Any]:
        return func.greatest(a, b) if self.backend == "postgresql" else func.max(a, b)

    def _least(self, a: ColumnElement[Any], b: ColumnElement[Any]) -> ColumnElement[Any]:
        return func.least(a, b) if self.backend == "postgresql" else func.min(a, b)

    def _touch_hosts(self, conn: Connection, seen: Mapping[str, dt.datetime]) -> None:
        """Upsert the hosts first, in name order: the row lock orders writers of one host."""
        for name in sorted(seen):
            stmt = self._insert(hosts).values(name=name, first_seen=seen[name], last_seen=seen[name])
            stmt = stmt.on_conflict_do_update(
                index_elements=[hosts.c.name],
                set_={
                    "first_seen": self._least(hosts.c.first_seen, stmt.excluded.first_seen),
                    "last_seen": self._greatest(hosts.c.last_seen, stmt.excluded.last_seen),
                },
            )
            conn.execute(stmt)

    # -- events --

    def record_events(self, evs: Iterable[Event], *, deliver_to: Sequence[str] = ()) -> list[str]:
        """Store events, once each (by Event.id); the ids that were new.

        deliver_to: sinks that must receive each event. Their outbox messages (dedup_key = the event
        id, payload = Event.to_dict()) are written in the same transaction, so no crash can leave an
        event recorded and its alert forgotten, or the other way round.
        """
        unique = {e.id: e for e in evs}
        if not unique:
            return []
        now = utcnow()
        rows = []
        seen: dict[str, dt.datetime] = {}
        for ev_id in sorted(unique):  # one order for every writer: no deadlock between two of them
            ev = unique[ev_id]
            at = parse_at(ev.at)
            process, user = _who(ev)
            rows.append(
                {
                    "id": ev.id,
                    "host": ev.host,
                    "kind": ev.kind,
                    "at": at,
                    "proto": ev.proto,
                    "address": ev.address,
                    "port": ev.port,
                    "process": process,
                    "username": user,
                    "summary": ev.summary,
                    "before_data": ev.before,
                    "after_data": ev.after,
                    "recorded_at": now,
                }
            )
            seen[ev.host] = max(at, seen.get(ev.host, at))

        def work(conn: Connection) -> list[str]:
            self._touch_hosts(conn, seen)
            new: list[str] = []
            for chunk in _chunks(rows):
                stmt = self._insert(events).values(list(chunk)).on_conflict_do_nothing()
                new += conn.execute(stmt.returning(events.c.id)).scalars().all()
            for sink in deliver_to:
                for ev_id in sorted(unique):
                    ev = unique[ev_id]
                    self._enqueue(conn, sink, ev.id, ev.to_dict(), ev.host, now)
            return sorted(new)

        return self._write(work)

    # -- listener intervals --

    def record_listeners(self, host: str, listeners: Iterable[Listener], at: dt.datetime) -> IntervalChanges:
        """Everything listening on `host` at `at` (a full snapshot, not a change): extends the intervals
        of listeners still there, opens one for each new listener identity and closes (gone_at = at)
        those no longer listed. A snapshot older than what an interval already saw changes nothing
        of that interval."""
        at = _aware(at, "at")
        current = {listener_ident(lst): lst for lst in listeners}
        li = listener_intervals

        def work(conn: Connection) -> IntervalChanges:
            changes = IntervalChanges()
            self._touch_hosts(conn, {host: at})
            open_rows = conn.execute(
                select(li.c.id, li.c.ident, li.c.pids).where(li.c.host == host, li.c.gone_at.is_(None))
            ).all()
            held = {row.ident: row for row in open_rows}
            gone = sorted(row.id for row in open_rows if row.ident not in current)
            still = sorted(row.id for row in open_rows if row.ident in current)
            for ids in _chunks(gone):
                result = conn.execute(
                    update(li).where(li.c.id.in_(ids), li.c.last_seen <= at).values(gone_at=at)
                )
                changes.closed += result.rowcount
            for ids in _chunks(still):
                conn.execute(update(li).where(li.c.id.in_(ids), li.c.last_seen < at).values(last_seen=at))
            changes.extended = len(still)
            for ident in sorted(current.keys() & held.keys()):
                pids = sorted(current[ident].pids)
                if pids != (held[ident].pids or []):
                    conn.execute(update(li).where(li.c.id == held[ident].id).values(pids=pids))
            fresh = [
                {
                    "host": host,
                    "ident": ident,
                    "proto": lst.proto,
                    "address": lst.address,
                    "port": lst.port,
                    "process": lst.process,
                    "username": lst.user,
                    "unit": lst.unit,
                    "container": lst.container,
                    "pids": sorted(lst.pids),
                    "first_seen": at,
                    "last_seen": at,
                    "gone_at": None,
                }
                for ident, lst in sorted(current.items())
                if ident not in held
            ]
            for chunk in _chunks(fresh):
                # Another writer for the same host may have opened it meanwhile: the partial unique
                # index on open intervals turns the second insert into nothing.
                stmt = self._insert(li).values(list(chunk)).on_conflict_do_nothing()
                changes.opened += len(conn.execute(stmt.returning(li.c.id)).all())
            return changes

        return self._write(work)

    # -- history --

    def history(
        self,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
        port: int | None = None,
        host: str | None = None,
        kind: str | None = None,
        limit: int | None = None,
        proto: str | None = None,
    ) -> list[HistoryRow]:
        """Events in [since, until] and listener intervals overlapping it, newest first (an interval
        dates from its first_seen). kind: an event kind, or "listening" for the intervals alone."""
        if kind is not None and kind not in HISTORY_KINDS:
            raise BadInput(f"unknown kind {kind!r}; one of: {', '.join(HISTORY_KINDS)}")
        since = None if since is None else _aware(since, "since")
        until = None if until is None else _aware(until, "until")
        li = listener_intervals

        def work(conn: Connection) -> list[HistoryRow]:
            out: list[HistoryRow] = []
            if kind != LISTENING:
                conds: list[ColumnElement[bool]] = []
                if since is not None:
                    conds.append(events.c.at >= since)
                if until is not None:
                    conds.append(events.c.at <= until)
                if port is not None:
                    conds.append(events.c.port == port)
                if proto is not None:
                    conds.append(events.c.proto == proto)
                if host is not None:
                    conds.append(events.c.host == host)
                if kind is not None:
                    conds.append(events.c.kind == kind)
                q = select(events).where(*conds).order_by(events.c.at.desc())
                for r in conn.execute(q if limit is None else q.limit(limit)):
                    out.append(
                        EventRow(
                            id=r.id,
                            host=r.host,
                            kind=r.kind,
                            at=r.at,
                            summary=r.summary,
                            proto=r.proto,
                            address=r.address,
                            port=r.port,
                            process=r.process,
                            user=r.username,
                            before=r.before_data,
                            after=r.after_data,
                        )
                    )
            if kind is None or kind == LISTENING:
                conds = []
                if since is not None:
                    conds.append(or_(li.c.gone_at.is_(None), li.c.gone_at >= since))
                if until is not None:
                    conds.append(li.c.first_seen <= until)
                if port is not None:
                    conds.append(li.c.port == port)
                if proto is not None:
                    conds.append(li.c.proto == proto)
                if host is not None:
                    conds.append(li.c.host == host)
                q = select(li).where(*conds).order_by(li.c.first_seen.desc())
                for r in conn.execute(q if limit is None else q.limit(limit)):
                    out.append(
                        IntervalRow(
                            host=r.host,
                            proto=r.proto,
                            address=r.address,
                            port=r.port,
                            first_seen=r.first_seen,
                            last_seen=r.last_seen,
                            gone_at=r.gone_at,
                            process=r.process,
                            user=r.username,
                            unit=r.unit,
                            container=r.container,
                            pids=list(r.pids or []),
                        )
                    )
            out.sort(key=lambda row: row.at, reverse=True)  # stable: events before intervals on a tie
            return out if limit is None else out[:limit]

        return self._read(work)

    def recorded(self, ids: Iterable[str]) -> set[str]:
        """Which of these event ids the store already holds."""
        wanted = sorted(set(ids))

        def work(conn: Connection) -> set[str]:
            found: set[str] = set()
            for chunk in _chunks(wanted):
                found |= set(conn.execute(select(events.c.id).where(events.c.id.in_(chunk))).scalars())
            return found

        return self._read(work) if wanted else set()

    # -- alarms (watch's alerted differences, tracker.Alarm) --

    def alarms(self, host: str) -> list[Alarm]:
        """What watch on HOST has alerted and not yet cleared."""
        from portscope.monitor.tracker import Alarm

        def work(conn: Connection) -> list[Alarm]:
            rows = conn.execute(select(alarms).where(alarms.c.host == host).order_by(alarms.c.key))
            return [Alarm(r.key, r.since, r.gone_since, dict(r.resolution)) for r in rows]

        return self._read(work)

    def save_alarms(
        self, host: str, keep: Sequence[Alarm], resolved: Sequence[str], now: dt.datetime
    ) -> None:
        """Store the alarms that changed and forget the resolved ones, in one transaction."""
        if not keep and not resolved:
            return

        def work(conn: Connection) -> None:
            self._touch_hosts(conn, {host: now})
            for ids in _chunks(sorted(resolved)):
                conn.execute(delete(alarms).where(alarms.c.host == host, alarms.c.key.in_(ids)))
            for a in keep:
                values = {
                    "since": a.since,
                    "gone_since": a.gone_since,
                    "resolution": a.resolution,
                    "updated_at": now,
                }
                stmt = self._insert(alarms).values(host=host, key=a.key, **values)
                conn.execute(
                    stmt.on_conflict_do_update(index_elements=[alarms.c.host, alarms.c.key], set_=values)
                )

        self._write(work)

    def hosts(self) -> list[str]:
        """The hosts that ever wrote here."""
        return self._read(lambda c: list(c.execute(select(hosts.c.name).order_by(hosts.c.name)).scalars()))

    # -- outbox --

    def _enqueue(
        self, conn: Connection, sink: str, key: str, payload: Any, host: str | None, now: dt.datetime
    ) -> int | None:
        stmt = (
            self._insert(outbox)
            .values(
                sink=sink,
                dedup_key=key,
                host=host,
                payload=payload,
                state="pending",
                attempts=0,
                next_attempt_at=now,
                created_at=now,
            )
            .on_conflict_do_nothing()
            .returning(outbox.c.id)
        )
        new: int | None = conn.execute(stmt).scalar()
        return new

    def enqueue(
        self,
        sink: str,
        dedup_key: str,
        payload: Any,
        *,
        host: str | None = None,
        now: dt.datetime | None = None,
    ) -> int | None:
        """Owe `sink` one message; its id, or None when (sink, dedup_key) is already owed or sent.
        payload: anything JSON can hold."""
        at = utcnow() if now is None else _aware(now, "now")

        def work(conn: Connection) -> int | None:
            if host is not None:
                self._touch_hosts(conn, {host: at})
            return self._enqueue(conn, sink, dedup_key, payload, host, at)

        return self._write(work)

    def due(
        self,
        now: dt.datetime,
        limit: int = 100,
        *,
        sink: str | None = None,
        host: str | None = None,
        lease: dt.timedelta = dt.timedelta(minutes=5),
    ) -> list[OutboxItem]:
        """Claim up to `limit` pending messages whose time has come, oldest first.

        Claiming pushes next_attempt_at to now + lease and counts an attempt, in one statement
        (FOR UPDATE SKIP LOCKED on PostgreSQL; SQLite has one writer at a time), so two watchers
        never send the same message at once. A claimer that dies without mark_sent/mark_failed
        leaves the message due again after the lease: delivery is at least once.
        """
        now = _aware(now, "now")
        conds = [outbox.c.state == "pending", outbox.c.next_attempt_at <= now]
        if sink is not None:
            conds.append(outbox.c.sink == sink)
        if host is not None:
            conds.append(outbox.c.host == host)
        pick = (
            select(outbox.c.id)
            .where(*conds)
            .order_by(outbox.c.next_attempt_at, outbox.c.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        claim = (
            update(outbox)
            .where(outbox.c.id.in_(pick.scalar_subquery()))
            .values(next_attempt_at=now + lease, attempts=outbox.c.attempts + 1)
            .returning(*outbox.c)
        )

        def work(conn: Connection) -> list[OutboxItem]:
            items = [_item(r) for r in conn.execute(claim)]
            items.sort(key=lambda i: (i.created_at, i.id))
            return items

        return self._write(work)

    def mark_sent(self, item_id: int, *, at: dt.datetime | None = None) -> bool:
        """The message was delivered; False if it was not pending (already marked by someone)."""
        when = utcnow() if at is None else _aware(at, "at")
        stmt = (
            update(outbox)
            .where(outbox.c.id == item_id, outbox.c.state == "pending")
            .values(state="sent", sent_at=when)
        )
        return self._write(lambda c: c.execute(stmt).rowcount == 1)

    def mark_failed(self, item_id: int, error: str, next_attempt_at: dt.datetime | None) -> bool:
        """A delivery failed: retry at next_attempt_at (the caller's backoff), or, with None, give up
        (state failed). False if the message was not pending."""
        values: dict[str, Any] = {"last_error": error[:ERROR_MAX]}
        if next_attempt_at is None:
            values["state"] = "failed"
        else:
            values["next_attempt_at"] = _aware(next_attempt_at, "next_attempt_at")
        stmt = update(outbox).where(outbox.c.id == item_id, outbox.c.state == "pending").values(**values)
        return self._write(lambda c: c.execute(stmt).rowcount == 1)

    def outbox_items(
        self, *, state: str | None = None, sink: str | None = None, limit: int = 1000
    ) -> list[OutboxItem]:
        """The outbox as it stands, oldest first (for status views and tests); claims nothing."""
        conds: list[ColumnElement[bool]] = []
        if state is not None:
            conds.append(outbox.c.state == state)
        if sink is not None:
            conds.append(outbox.c.sink == sink)
        q = select(outbox).where(*conds).order_by(outbox.c.created_at, outbox.c.id).limit(limit)
        return self._read(lambda c: [_item(r) for r in c.execute(q)])

    # -- retention --

    def prune(self, before: dt.datetime) -> dict[str, int]:
        """Forget what ended before `before`: events, closed intervals, delivered or abandoned
        messages. Open intervals, pending messages and alarms are kept whatever their age."""
        before = _aware(before, "before")

        def work(conn: Connection) -> dict[str, int]:
            li = listener_intervals
            return {
                "events": conn.execute(delete(events).where(events.c.at < before)).rowcount,
                "listener_intervals": conn.execute(
                    delete(li).where(li.c.gone_at.is_not(None), li.c.gone_at < before)
                ).rowcount,
                "outbox": conn.execute(
                    delete(outbox).where(outbox.c.state != "pending", outbox.c.created_at < before)
                ).rowcount,
            }

        return self._write(work)


def _item(r: Any) -> OutboxItem:
    return OutboxItem(
        id=r.id,
        sink=r.sink,
        dedup_key=r.dedup_key,
        host=r.host,
        payload=r.payload,
        state=r.state,
        attempts=r.attempts,
        next_attempt_at=r.next_attempt_at,
        last_error=r.last_error,
        created_at=r.created_at,
        sent_at=r.sent_at,
    )


def _has_tables(conn: Connection) -> bool:
    from sqlalchemy import inspect

    return bool(inspect(conn).get_table_names())


def _prepare_file(path: Path, create: bool) -> None:
    """The SQLite file: made on first use (owner-only: it names processes and users), never by a
    reader. Permission problems become one line, not a traceback from deep in sqlite3."""
    if path.exists():
        if path.is_dir():
            raise BadInput(f"--db {path} is a directory; give a file path")
        return
    if not create:
        raise NoHistory(f"nothing recorded yet: no history database at {path}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    except OSError as exc:
        raise StoreError(f"cannot create the history database {path}: {exc.strerror}") from None


def _wal(cur: Any) -> None:
    """Switch the file to WAL, which persists in the file: once one process has done it, the others
    see `wal` and need no lock. The switch itself takes an exclusive lock and SQLite does not wait
    for it through busy_timeout, so two watchers creating one file at once would make one of them fail
    with "database is locked": retry it within the busy timeout instead."""
    import sqlite3

    end = time.monotonic() + BUSY_TIMEOUT_S
    delay = 0.01
    while True:
        cur.execute("PRAGMA journal_mode")
        if str(cur.fetchone()[0]).lower() == "wal":
            return
        try:
            cur.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > end:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.2)


def _engine(location: Location) -> Engine:
    if location.path is None:
        try:
            import psycopg  # noqa: F401
        except ImportError:
            raise CannotDo(
                "PostgreSQL needs psycopg 3: pip install 'portscope[postgresql]' (or psycopg[binary])"
            ) from None
        return create_engine(
            location.url,
            pool_pre_ping=True,  # a watcher outlives database restarts
            pool_size=2,
            connect_args={"connect_timeout": 10, "application_name": "portscope"},
        )
    engine = create_engine(location.url, connect_args={"timeout": BUSY_TIMEOUT_S})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # sqlite3 must not BEGIN on its own: _on_begin does
        cur = dbapi_conn.cursor()
        try:
            cur.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_S * 1000}")
            _wal(cur)  # readers never block the watcher, nor it them
            # Every commit on disk before it returns: an alert in the outbox survives a power cut too.
            cur.execute("PRAGMA synchronous = FULL")
            cur.execute("PRAGMA foreign_keys = ON")
        finally:
            cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # A writer takes the write lock up front: upgrading a read lock later fails at once under
        # contention instead of waiting out the busy timeout.
        write = conn.get_execution_options().get("portscope_write")
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine


__all__ = [
    "HISTORY_KINDS",
    "LISTENING",
    "EventRow",
    "HistoryRow",
    "IntervalChanges",
    "IntervalRow",
    "Location",
    "NoHistory",
    "OutboxItem",
    "Store",
    "StoreError",
    "default_path",
    "listener_ident",
    "locate",
]
