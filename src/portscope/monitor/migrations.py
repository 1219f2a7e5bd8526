"""Schema migrations of the history store: an ordered list of steps, applied in one transaction on open.

Why not `metadata.create_all()`: a fleet's PostgreSQL database outlives any one portscope version, and
hosts are upgraded one at a time. Each step is frozen (its own table definitions, never schema.py's,
which follow the latest version), so a database created by version 1 and upgraded ends up identical to
one created today. `schema_version` records every step applied; a database newer than this portscope
is refused rather than written with a schema we do not know.

Adding a step: append a `Migration` with the next version whose DDL uses its own definitions (new
tables as Table objects; ALTER TABLE ... ADD COLUMN as text, which both backends accept), update
schema.py to match, and extend the upgrade test.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import (
    JSON,
    CheckConstraint,
    Column,
    Connection,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Table,
    Text,
    UniqueConstraint,
    func,
    inspect,
    select,
    text,
)

from portscope.errors import CannotDo
from portscope.monitor.schema import NAMING, UtcDateTime, id_column

# Any constant works; this one spells "psco" so a DBA reading pg_locks can tell whose lock it is.
PG_LOCK_KEY = 0x7073636F


class SchemaTooNew(CannotDo):
    """The database was written by a newer portscope: reading it with older code could misread it."""


class NotAHistoryDatabase(CannotDo):
    """The database has tables but no schema_version: somebody else's, and we will not write into it."""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    description: str
    apply: Callable[[Connection], None]


def _version_table(md: MetaData) -> Table:
    return Table(
        "schema_version",
        md,
        Column("version", Integer, primary_key=True, autoincrement=False),
        Column("description", Text, nullable=False),
        Column("applied_at", UtcDateTime, nullable=False),
    )


def _v1_history(conn: Connection) -> None:
    md = MetaData(naming_convention=NAMING)
    Table(
        "hosts",
        md,
        Column("name", Text, primary_key=True),
        Column("first_seen", UtcDateTime, nullable=False),
        Column("last_seen", UtcDateTime, nullable=False),
    )
    Table(
        "events",
        md,
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
    intervals = Table(
        "listener_intervals",
        md,
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
        intervals.c.host,
        intervals.c.ident,
        unique=True,
        sqlite_where=intervals.c.gone_at.is_(None),
        postgresql_where=intervals.c.gone_at.is_(None),
    )
    Index(None, intervals.c.port, intervals.c.first_seen)
    Index(None, intervals.c.host, intervals.c.first_seen)
    md.create_all(conn)


def _v2_outbox(conn: Connection) -> None:
    md = MetaData(naming_convention=NAMING)
    Table("hosts", md, Column("name", Text, primary_key=True))  # referred to, not created
    outbox = Table(
        "outbox",
        md,
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
    outbox.create(conn)


def _v3_alarms(conn: Connection) -> None:
    md = MetaData(naming_convention=NAMING)
    Table("hosts", md, Column("name", Text, primary_key=True))  # referred to, not created
    Table(
        "alarms",
        md,
        Column("host", Text, ForeignKey("hosts.name"), primary_key=True),
        Column("key", Text, primary_key=True),
        Column("since", UtcDateTime, nullable=False),
        Column("gone_since", UtcDateTime),
        Column("resolution", JSON, nullable=False),
        Column("updated_at", UtcDateTime, nullable=False),
    ).create(conn)


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "history: hosts, events, listener intervals", _v1_history),
    Migration(2, "alert outbox", _v2_outbox),
    Migration(3, "alerted differences awaiting their all-clear", _v3_alarms),
)
LATEST = MIGRATIONS[-1].version


def current_version(conn: Connection) -> int | None:
    """The database's schema version; None for a database without our schema_version table."""
    if not inspect(conn).has_table("schema_version"):
        return None
    table = _version_table(MetaData())
    version = conn.execute(select(func.max(table.c.version))).scalar()
    return int(version) if version is not None else 0


def too_new(version: int, where: str) -> SchemaTooNew:
    return SchemaTooNew(
        f"{where} is at schema version {version}, written by a newer portscope; this one knows "
        f"versions up to {LATEST}: upgrade portscope on this host"
    )


def upgrade(conn: Connection, *, target: int = LATEST, where: str = "the history database") -> list[int]:
    """Bring the database to `target` inside the caller's transaction; the versions applied.

    The caller's transaction must already exclude other writers on SQLite (BEGIN IMMEDIATE); on
    PostgreSQL a transaction-scoped advisory lock taken here makes a second watcher starting at the
    same moment wait, then find the work done. DDL is transactional on both, so a failed step leaves
    the database as it was.
    """
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": PG_LOCK_KEY})
    version = current_version(conn)
    if version is None:
        if inspect(conn).get_table_names():
            raise NotAHistoryDatabase(
                f"{where} has tables but no schema_version: not a portscope history database; "
                "give --db a new file or an empty database"
            )
        version = 0
    if version > LATEST:
        raise too_new(version, where)
    table = _version_table(MetaData())
    if version == 0:
        table.create(conn, checkfirst=True)
    applied = []
    for step in MIGRATIONS:
        if version < step.version <= target:
            step.apply(conn)
            conn.execute(
                table.insert().values(
                    version=step.version, description=step.description, applied_at=dt.datetime.now(dt.UTC)
                )
            )
            applied.append(step.version)
    return applied
