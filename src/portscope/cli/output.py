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
from dataclasses import dataclass, replace
from typing import Any, TextIO

from portscope.textsafe import clean


def add_format_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--json", action="store_true", help="machine-readable JSON (fields in the README)")
    group.add_argument("--csv", action="store_true", help="CSV with a header row")


@dataclass(frozen=True, slots=True)
class Column:
    """One column of a human table, and how it gives way on a narrow terminal.

    fit="keep": never cut or split (addresses, ports, states, short codes): a reader must be able to
    copy them whole. fit="cut": free text (process names, command lines, notes, uses, details) that
    shrinks to the terminal with an ellipsis at its end, down to min_width. fit="wrap": shrinks the
    same way but wraps at spaces, for sentences that carry addresses or numbers and would lose their
    point cut short (a difference from the baseline, a stats reading). drop: 0 = always shown;
    otherwise, when even the kept and shrunk columns do not fit, the column with the highest drop
    goes first (the least important). Piped output ignores all of this and keeps every cell whole.
    """

    title: str
    justify: str = "left"  # left | right
    max_width: int | None = None  # on a terminal only: cut text beyond this even when there is room
    fit: str = "keep"  # keep | cut | wrap
    drop: int = 0
    min_width: int = 10


class Whole(str):
    """A cell of a fit="cut" column that must not lose its end (a socket's addresses, in `who`):
    on a narrow terminal it wraps at its spaces instead of ending in an ellipsis."""

    __slots__ = ()


GAP = 2  # spaces between columns, in the plain table and in rich's (collapse_padding)


def layout(columns: Sequence[Column], natural: Sequence[int], width: int) -> list[int | None]:
    """Each column's width on a terminal WIDTH cells wide, None for a dropped column.

    Why here and not rich's own collapsing: rich shrinks every column when the table is too wide,
    which splits addresses over two lines (`127.0.` / `0.1:22`). Kept columns get their natural
    width; cut columns share what is left, fairly (water-filling), never below their minimum; when
    the minimums do not fit, whole columns are dropped, least important first.
    """
    nat = [
        min(n, c.max_width) if c.fit != "keep" and c.max_width else n
        for c, n in zip(columns, natural, strict=True)
    ]
    mins = [
        min(n, max(c.min_width, len(c.title))) if c.fit != "keep" else n
        for c, n in zip(columns, nat, strict=True)
    ]
    shown = [True] * len(columns)

    def needed() -> int:
        visible = [m for m, on in zip(mins, shown, strict=True) if on]
        return sum(visible) + GAP * (len(visible) - 1)

    while needed() > width:
        droppable = [(c.drop, i) for i, c in enumerate(columns) if shown[i] and c.drop]
        if not droppable:
            break  # only kept columns left: they stay whole, the terminal crops the line
        shown[max(droppable)[1]] = False
    widths: list[int | None] = [m if on else None for m, on in zip(mins, shown, strict=True)]
    spare = width - needed()
    growing = [i for i, c in enumerate(columns) if shown[i] and c.fit != "keep" and mins[i] < nat[i]]
    while spare > 0 and growing:
        share = max(1, spare // len(growing))
        for i in list(growing):
            w = widths[i]
            assert w is not None
            step = min(share, nat[i] - w, spare)
            widths[i] = w + step
            spare -= step
            if widths[i] == nat[i]:
                growing.remove(i)
            if spare == 0:
                break
    return widths


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
    """A table, then its notes. No rows: the notes alone, since a header over nothing reads as if
    the rows were lost (`who 47099`, `ls --process zzzz`)."""
    stream = stream or sys.stdout
    # Titles can carry data too (`who` titles each table with the process name).
    safe_cols = [replace(c, title=clean(c.title)) for c in columns]
    # Cleaned in place: a second copy of 100k rows would be ~30 MB for nothing.
    safe_rows: list[Sequence[str]] = rows if isinstance(rows, list) else list(rows)
    for i, row in enumerate(safe_rows):
        cleaned = [_clean_cell(cell) for cell in row]
        if cleaned != row:
            safe_rows[i] = cleaned
    safe_notes = [clean(n) for n in notes]
    if fancy(stream):
        _rich_table(safe_cols, safe_rows, safe_notes, stream)
        return
    _plain_table(safe_cols, safe_rows, safe_notes, stream)


def _clean_cell(cell: str) -> str:
    text = clean(cell)
    return Whole(text) if isinstance(cell, Whole) and not isinstance(text, Whole) else text


def _plain_table(
    columns: Sequence[Column], rows: Sequence[Sequence[str]], notes: Sequence[str], stream: TextIO
) -> None:
    """Every cell whole, one record per line: piped output is read by grep, awk and cut, and text
    cut off in a pipe cannot be widened afterwards (ps, ss and systemctl keep full lines when piped
    too). Lines are as wide as their data needs and no wider; --json/--csv are the complete forms."""
    if not rows:
        if notes:
            stream.write("\n".join(notes) + "\n")
        return
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
    line_fmt = (" " * GAP).join(fmts)
    stream.write(line_fmt.format(*[c.title for c in columns]).rstrip() + "\n")
    fmt = line_fmt.format
    for start in range(0, len(rows), 4096):  # bounded chunks: no 100k-line string in memory
        stream.write("".join(fmt(*row).rstrip() + "\n" for row in rows[start : start + 4096]))
    if notes:
        stream.write("\n".join(notes) + "\n")


def _rich_table(
    columns: Sequence[Column], rows: Sequence[Sequence[str]], notes: Sequence[str], stream: TextIO
) -> None:
    """The terminal's table: laid out by layout() for the console's width (COLUMNS, else the
    terminal's size, as rich reads it), one line per row except Whole cells, which wrap at spaces."""
    from rich import box
    from rich.cells import cell_len
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = Console(file=stream, highlight=False)
    if rows:
        natural = [cell_len(c.title) for c in columns]
        for row in rows:
            for i, cell in enumerate(row):
                n = cell_len(cell)
                if n > natural[i]:
                    natural[i] = n
        widths = layout(columns, natural, console.width)
        table = Table(
            box=box.SIMPLE_HEAD,
            header_style="bold",
            pad_edge=False,
            show_edge=False,
            collapse_padding=True,
        )
        shown = [i for i, w in enumerate(widths) if w is not None]
        for i in shown:
            c = columns[i]
            table.add_column(
                Text(c.title),
                justify="right" if c.justify == "right" else "left",
                width=widths[i],
                no_wrap=c.fit != "wrap",
                overflow="ellipsis" if c.fit == "cut" else "fold" if c.fit == "wrap" else "crop",
            )
        for row in rows:
            # Text(): never interpret [markup] in data
            table.add_row(
                *[
                    Text(row[i], no_wrap=False, overflow="fold")
                    if isinstance(row[i], Whole)
                    else Text(row[i])
                    for i in shown
                ]
            )
        used = [w for w in widths if w is not None]
        needed = sum(used) + GAP * (len(used) - 1)
        # Narrower than even the kept columns: rich would squeeze them (splitting addresses again);
        # draw the table at its least width and let the terminal wrap the lines instead.
        wider = console if needed <= console.width else Console(file=stream, highlight=False, width=needed)
        wider.print(table)
        dropped = [columns[i].title for i, w in enumerate(widths) if w is None]
        if dropped:
            notes = [
                f"hidden at {console.width} columns: {', '.join(dropped)} (a wider terminal or --json shows them)",
                *notes,
            ]
    for note in notes:
        console.print(Text(note, style="dim"))


def note(message: str) -> None:
    """A sentence about what the output could not include; stderr, so --json stays parseable."""
    sys.stderr.write(f"note: {clean(message)}\n")
