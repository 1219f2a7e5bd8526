"""Rendering shared by every command: --json, --csv, and a table (rich on a TTY, plain otherwise).

rich costs ~100 ms to import, so it is loaded only to draw on a terminal; pipes, scripts and
NO_COLOR get a plain aligned table written directly. Every cell passes through textsafe.clean.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from portscope.textsafe import clean


def add_format_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--json", action="store_true", help="machine-readable JSON (fields in the README)")
    group.add_argument("--csv", action="store_true", help="CSV with a header row")


@dataclass(frozen=True, slots=True)
class Column:
    title: str
    justify: str = "left"  # left | right
    max_width: int | None = None


def fancy(stream: TextIO | None = None) -> bool:
    """A rich table only for a person at a terminal that accepts colour."""
    stream = stream or sys.stdout
    return stream.isatty() and "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb"


ORJSON_ABOVE = 500  # items


def _default(obj: Any) -> Any:
    to_dict = getattr(obj, "to_dict", None)
    if to_dict is None:
        raise TypeError(f"cannot serialise {type(obj).__name__}")
    return to_dict()


def emit_json(data: Any, stream: TextIO | None = None) -> None:
    """JSON on one line. Model dataclasses may be passed as they are: their fields are the JSON form.

    orjson writes 100k sockets about ten times faster than the json module, but it cannot escape
    non-ASCII; output that holds any (a process name with C1 or bidi characters) is re-encoded with
    ensure_ascii, which escapes every control and C1 character, so JSON is terminal-safe as written.
    """
    stream = stream or sys.stdout
    if not isinstance(data, list) or len(data) < ORJSON_ABOVE:
        stream.write(json.dumps(data, indent=None, separators=(",", ":"), default=_default))
        stream.write("\n")
        return
    import orjson  # 5 ms to import: worth it only for big outputs

    raw = orjson.dumps(data, default=_default)
    if raw.isascii():
        buffer = getattr(stream, "buffer", None)
        if buffer is not None:
            stream.flush()
            buffer.write(raw)
            buffer.write(b"\n")
            buffer.flush()
        else:
            stream.write(raw.decode("ascii") + "\n")
        return
    data = json.loads(raw)
    stream.write(json.dumps(data, indent=None, separators=(",", ":"), default=_default))
    stream.write("\n")


def emit_csv(header: Sequence[str], rows: Iterable[Sequence[Any]], stream: TextIO | None = None) -> None:
    writer = csv.writer(stream or sys.stdout, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow(["" if v is None else clean(str(v)) for v in row])


def emit_table(
    columns: Sequence[Column],
    rows: Sequence[Sequence[str]],
    notes: Sequence[str] = (),
    stream: TextIO | None = None,
) -> None:
    stream = stream or sys.stdout
    # Titles can carry data too (`who` titles each table with the process name).
    safe_cols = [Column(clean(c.title), c.justify, c.max_width) for c in columns]
    # Cleaned in place: a second copy of 100k rows would be ~30 MB for nothing.
    safe_rows: list[Sequence[str]] = rows if isinstance(rows, list) else list(rows)
    for i, row in enumerate(safe_rows):
        cleaned = [clean(cell) for cell in row]
        if cleaned != row:
            safe_rows[i] = cleaned
    safe_notes = [clean(n) for n in notes]
    if fancy(stream):
        _rich_table(safe_cols, safe_rows, safe_notes, stream)
        return
    _plain_table(safe_cols, safe_rows, safe_notes, stream)


def _plain_table(
    columns: Sequence[Column], rows: Sequence[Sequence[str]], notes: Sequence[str], stream: TextIO
) -> None:
    widths = [len(c.title) for c in columns]
    for row in rows:
        for i, cell in enumerate(row):
            if len(cell) > widths[i]:
                widths[i] = len(cell)
    last = len(columns) - 1
    fmts = []
    for i, c in enumerate(columns):
        if i == last and c.justify == "left":
            fmts.append("{}")
        else:
            fmts.append(f"{{:{'>' if c.justify == 'right' else '<'}{widths[i]}}}")
    line_fmt = "  ".join(fmts)
    stream.write(line_fmt.format(*[c.title for c in columns]).rstrip() + "\n")
    fmt = line_fmt.format
    for start in range(0, len(rows), 4096):  # bounded chunks: no 100k-line string in memory
        stream.write("".join(fmt(*row).rstrip() + "\n" for row in rows[start : start + 4096]))
    if notes:
        stream.write("\n".join(notes) + "\n")


def _rich_table(
    columns: Sequence[Column], rows: Sequence[Sequence[str]], notes: Sequence[str], stream: TextIO
) -> None:
    from rich import box
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = Console(file=stream, highlight=False)
    table = Table(box=box.SIMPLE_HEAD, header_style="bold", pad_edge=False, show_edge=False)
    for c in columns:
        table.add_column(
            Text(c.title),
            justify="right" if c.justify == "right" else "left",
            max_width=c.max_width,
            overflow="fold",
        )
    for row in rows:
        table.add_row(*[Text(cell) for cell in row])  # Text(): never interpret [markup] in data
    console.print(table)
    for note in notes:
        console.print(Text(note, style="dim"))


def note(message: str) -> None:
    """A sentence about what the output could not include; stderr, so --json stays parseable."""
    sys.stderr.write(f"note: {clean(message)}\n")
