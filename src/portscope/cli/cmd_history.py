"""`portscope history`: what watch recorded. "Which process opened port 4444 last night, and when did
it go away?" is `portscope history --since 1d --port 4444`.

Reads the same store watch writes (an SQLite file here, or the fleet's PostgreSQL with --db), never
creates one: an absent database means nothing was recorded yet, which is an answer (exit 1), not an
error. The store (SQLAlchemy) is imported only when the command runs.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
from typing import TYPE_CHECKING

from portscope.cli import output
from portscope.errors import BadInput
from portscope.model import EVENT_KINDS

if TYPE_CHECKING:
    from portscope.monitor.store import HistoryRow

KINDS = (*EVENT_KINDS, "listening")  # store.HISTORY_KINDS, without importing the store to build --help
DB_ENV = "PORTSCOPE_DB"  # keeps a PostgreSQL password out of argv (ps shows it); PGPASSWORD works too
_DURATION = re.compile(r"(\d{1,9})([smhdw])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
WHEN_FORMS = "a duration back from now (30m, 12h, 1d, 2w, 1h30m), now, or a date and time (2024-05-01, 2024-05-01T23:00; local time unless it carries an offset)"
CSV_HEADER = (
    "record",
    "at",
    "host",
    "kind",
    "proto",
    "address",
    "port",
    "process",
    "user",
    "unit",
    "container",
    "first_seen",
    "last_seen",
    "gone_at",
    "id",
    "summary",
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--since", metavar="WHEN", help="from then on: 30m, 12h, 1d, 2w, or 2024-05-01T23:00")
    p.add_argument("--until", metavar="WHEN", help="up to then (default: now); same forms as --since")
    p.add_argument("--port", metavar="PORT", help="one port: 4444, 53/udp or a service name (ssh)")
    p.add_argument("--host", metavar="NAME", help="only what the watcher of this host recorded")
    p.add_argument("--kind", choices=KINDS, help="one event kind, or listening for the listener intervals")
    p.add_argument(
        "--db",
        metavar="URL",
        help=f"a file, sqlite:///PATH or postgresql://USER@HOST/DB (default: ${DB_ENV}, else the "
        "file watch writes: $XDG_STATE_HOME/portscope/history.db, /var/lib/portscope/history.db as root)",
    )
    p.add_argument("--limit", metavar="N", type=int, default=1000, help="newest N rows (default 1000)")
    output.add_format_options(p)


def parse_when(text: str, now: dt.datetime, option: str = "--since") -> dt.datetime:
    """A point in time from the command line, as an aware UTC datetime."""
    raw = text.strip()
    lowered = raw.lower()
    if lowered == "now":
        return now
    try:
        if lowered and _DURATION.sub("", lowered) == "":
            delta = dt.timedelta()
            for amount, unit in _DURATION.findall(lowered):
                delta += dt.timedelta(**{_UNITS[unit]: int(amount)})
            return now - delta
        parsed = dt.datetime.fromisoformat(raw)
        # A naive time is the user's wall clock; astimezone() reads it as local time.
        return parsed.astimezone(dt.UTC)
    except (ValueError, OverflowError):
        raise BadInput(f"{option} {text!r}: give {WHEN_FORMS}") from None


def one_port(text: str) -> tuple[int, str | None]:
    """The port (and protocol, when the spec names only one) of --port, through the shared parser."""
    from portscope.registry import parse_ports

    spec = parse_ports(text)
    pairs = {(port, proto) for proto in ("tcp", "udp") for port in spec.ports(proto)[:2]}
    ports = {port for port, _ in pairs}
    if len(ports) != 1:
        raise BadInput(f"--port {text!r} names several ports: history takes one, as in 4444 or 53/udp")
    protos = {proto for _, proto in pairs}
    explicit = "/" in text
    return ports.pop(), protos.pop() if explicit and len(protos) == 1 else None


def _local(value: dt.datetime | None) -> str:
    return "" if value is None else value.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _endpoint(address: str | None, port: int | None) -> str:
    if address is None and port is None:
        return ""
    host = f"[{address}]" if address and ":" in address else (address or "*")
    return f"{host}:{'*' if port is None else port}"


def _row(r: HistoryRow) -> list[str]:
    from portscope.monitor.store import EventRow

    if isinstance(r, EventRow):
        detail = r.summary
    elif r.gone_at is not None:
        detail = f"until {_local(r.gone_at)} (last seen {_local(r.last_seen)})"
    else:
        detail = f"still listening when last seen, {_local(r.last_seen)}"
    if not isinstance(r, EventRow) and r.unit:
        detail += f"; unit {r.unit}"
    return [
        _local(r.at),
        r.host,
        r.kind,
        r.proto or "",
        _endpoint(r.address, r.port),
        r.process or "",
        r.user or "",
        detail,
    ]


def run(args: argparse.Namespace) -> int:
    from portscope.monitor.store import NoHistory, Store

    now = dt.datetime.now(dt.UTC)
    since = None if args.since is None else parse_when(args.since, now, "--since")
    until = None if args.until is None else parse_when(args.until, now, "--until")
    if since is not None and until is not None and since > until:
        raise BadInput(f"--since {args.since!r} is after --until {args.until!r}")
    port, proto = (None, None) if args.port is None else one_port(args.port)
    if args.limit < 1:
        raise BadInput(f"--limit {args.limit}: give a positive number of rows")
    try:
        store = Store.open(args.db or os.environ.get(DB_ENV) or None, create=False)
    except NoHistory as exc:
        output.note(f"{exc} (portscope watch records it)")
        if args.json:
            output.emit_json([])
        return 1
    with store:
        rows = store.history(
            since=since,
            until=until,
            port=port,
            proto=proto,
            host=args.host,
            kind=args.kind,
            limit=args.limit + 1,
        )
    more = len(rows) > args.limit
    rows = rows[: args.limit]
    if args.json:
        output.emit_json([r.to_dict() for r in rows])
    elif args.csv:
        output.emit_csv(CSV_HEADER, ([r.to_dict().get(k) for k in CSV_HEADER] for r in rows))
    elif rows:
        zone = now.astimezone().strftime("%Z") or "local"
        columns = [
            output.Column(f"WHEN ({zone})"),
            # narrow terminal: USER goes first, then HOST (one watcher: always the same), then PROTO
            output.Column("HOST", max_width=24, fit="cut", drop=3, min_width=8),
            output.Column("WHAT"),
            output.Column("PROTO", drop=2),
            output.Column("LOCAL"),
            output.Column("PROCESS", max_width=24, fit="cut", min_width=8),
            output.Column("USER", max_width=12, fit="cut", drop=4, min_width=6),
            output.Column("DETAIL", fit="cut", min_width=12),
        ]
        output.emit_table(columns, [_row(r) for r in rows])
    if more:
        output.note(f"showing the newest {args.limit} rows; more match (raise --limit or narrow --since)")
    if not rows:
        output.note("nothing recorded matches")
        return 1
    return 0
