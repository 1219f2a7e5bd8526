"""The history store's tables as the current schema version has them: what the queries in store.py use.

The database gets them through the ordered steps in migrations.py, never from here (`create_all` would
build a new database that an upgraded one does not match). tests/monitor/test_store.py checks that a
database built by the migrations has exactly these tables, columns and indexes.

Column types are the portable subset of SQLAlchemy Core: the same tables on SQLite (one host) and
PostgreSQL (a fleet). Times are UTC everywhere (`UtcDateTime`); free text is TEXT without a length, so
a long process name from another host can never make an insert fail on PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

# Deterministic constraint names: a later migration can drop or alter them by name on both backends.
NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

OUTBOX_STATES = ("pending", "sent", "failed")


class UtcDateTime(TypeDecorator[dt.datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out, on both backends.

    PostgreSQL stores TIMESTAMP WITH TIME ZONE and answers in the session's time zone; SQLite stores
    text and drops the offset. Converting to UTC on the way in and tagging UTC on the way out makes the
    two agree, and keeps SQLite's fixed-width text comparable as text (so `at >= :since` is correct).
    A naive datetime is refused: its meaning depends on the machine that wrote it.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("the history store takes aware datetimes (UTC); got a naive one")
        value = value.astimezone(dt.UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        assert isinstance(value, dt.datetime)
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def id_column() -> Column[int]:
    """An auto-increment key: BIGINT on PostgreSQL; on SQLite INTEGER, the only type that is the rowid."""
    return Column("id", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True)


metadata = MetaData(naming_convention=NAMING)

schema_version = Table(
    "schema_version",
    metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("description", Text, nullable=False),
    Column("applied_at", UtcDateTime, nullable=False),
)

hosts = Table(
    "hosts",
    metadata,
    Column("name", Text, primary_key=True),
    Column("first_seen", UtcDateTime, nullable=False),
    Column("last_seen", UtcDateTime, nullable=False),
)

# One row per change watch noticed; the primary key is Event.id, so recording an event twice (a retry
# after a crash, two watchers on one host) stores it once.
events = Table(
    "events",
    metadata,
    Column("id", Text, primary_key=True),
    Column("host", Text, ForeignKey("hosts.name"), nullable=False),
    Column("kind", Text, nullable=False),
    Column("at", UtcDateTime, nullable=False),
    Column("proto", Text),
    Column("address", Text),
    Column("port", Integer),
    Column("process", Text),
    Column("username", Text),
    Column("summary", Text, nullable=False),
    Column("before_data", JSON),
    Column("after_data", JSON),
    Column("recorded_at", UtcDateTime, nullable=False),
    Index(None, "at"),
    Index(None, "port", "at"),
    Index(None, "host", "at"),
)

# Who held which slot when: one row per uninterrupted stretch of one listener identity (protocol,
# address, port, process, user, unit, container: model.Listener, never the PID) on one host. Open while
# gone_at is NULL; `ident` is a digest of that identity, unique among a host's open intervals.
listener_intervals = Table(
    "listener_intervals",
    metadata,
    id_column(),
    Column("host", Text, ForeignKey("hosts.name"), nullable=False),
    Column("ident", Text, nullable=False),
    Column("proto", Text, nullable=False),
    Column("address", Text, nullable=False),
    Column("port", Integer, nullable=False),
    Column("process", Text),
    Column("username", Text),
    Column("unit", Text),
    Column("container", Text),
    Column("pids", JSON),
    Column("first_seen", UtcDateTime, nullable=False),
    Column("last_seen", UtcDateTime, nullable=False),
    Column("gone_at", UtcDateTime),
)
Index(
    "uq_listener_intervals_open",
    listener_intervals.c.host,
    listener_intervals.c.ident,
    unique=True,
    sqlite_where=listener_intervals.c.gone_at.is_(None),
    postgresql_where=listener_intervals.c.gone_at.is_(None),
)
Index(None, listener_intervals.c.port, listener_intervals.c.first_seen)
Index(None, listener_intervals.c.host, listener_intervals.c.first_seen)

# Durable alert delivery (transactional outbox): a row per message per sink, written in the transaction
# that records its events; (sink, dedup_key) is unique, so a retried enqueue is a no-op and a message
# is sent at least once and, as far as the sink can tell from dedup_key, once.
outbox = Table(
    "outbox",
    metadata,
    id_column(),
    Column("sink", Text, nullable=False),
    Column("dedup_key", Text, nullable=False),
    Column("host", Text, ForeignKey("hosts.name")),
    Column("payload", JSON, nullable=False),
    Column("state", Text, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", UtcDateTime, nullable=False),
    Column("last_error", Text),
    Column("created_at", UtcDateTime, nullable=False),
    Column("sent_at", UtcDateTime),
    UniqueConstraint("sink", "dedup_key"),
    CheckConstraint("state IN ('pending', 'sent', 'failed')", name="state"),
    Index(None, "state", "next_attempt_at"),
)


# What watch has alerted and still owes an all-clear for (monitor/tracker.Alarm), per host: without it a
# restarted watch would never report the end of a difference that ended while it was down.
alarms = Table(
    "alarms",
    metadata,
    Column("host", Text, ForeignKey("hosts.name"), primary_key=True),
    Column("key", Text, primary_key=True),
    Column("since", UtcDateTime, nullable=False),
    Column("gone_since", UtcDateTime),
    Column("resolution", JSON, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
)
