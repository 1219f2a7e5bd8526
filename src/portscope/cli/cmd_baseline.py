"""`portscope baseline init|check`: seed 003's cron script ("compare the open ports with a predefined
list"), with the list written for you and reviewed once, and differences that are not false alarms.

init writes ./portscope.toml from what listens now; check compares now with it and exits 1 on a
difference (0 none, 2 an invalid file naming its line), so `portscope baseline check || mail ...`
is the whole cron job.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import tempfile
from datetime import datetime
from typing import TYPE_CHECKING

from portscope.cli import output
from portscope.errors import BadInput, CannotDo
from portscope.textsafe import clean

if TYPE_CHECKING:
    from portscope.policy.baseline import Difference


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION")
    init = sub.add_parser(
        "init",
        help="write a baseline from the listeners of this host now, for you to review",
        description="Write a baseline (portscope.toml) from what listens on this host now.",
    )
    init.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        default="portscope.toml",
        help="where to write it (default ./portscope.toml; - for stdout)",
    )
    init.add_argument("--force", action="store_true", help="replace FILE if it exists")
    init.add_argument(
        "--ports",
        metavar="PORTS",
        help="only listeners on these ports (written to [scope]): 22, 80,443, 8000-8100, ssh",
    )
    check = sub.add_parser(
        "check",
        help="compare this host now with its baseline: exit 0 as expected, 1 a difference, 2 bad file",
        description="Compare the listeners of this host now with the baseline file.",
    )
    check.add_argument(
        "-f",
        "--file",
        metavar="FILE",
        help="the baseline (default: ./portscope.toml, else /etc/portscope/portscope.toml)",
    )
    check.add_argument("--json", action="store_true", help="machine-readable JSON (fields in the README)")


def run(args: argparse.Namespace) -> int:
    if args.action == "init":
        return _init(args)
    if args.action == "check":
        return _check(args)
    raise BadInput("say what to do: `portscope baseline init` or `portscope baseline check`")


def _init(args: argparse.Namespace) -> int:
    from portscope.policy.listeners import Scope, current_listeners, take_snapshot
    from portscope.policy.template import render
    from portscope.registry import ephemeral_range, parse_ports

    scope = Scope(ports=parse_ports(args.ports) if args.ports else None)
    snap = take_snapshot(scope)
    listeners = current_listeners(scope, (), snap)
    hidden = snap.hidden_note()
    text = render(
        listeners,
        scope=scope,
        ephemeral=ephemeral_range(),
        host=socket.gethostname(),
        when=datetime.now().astimezone().isoformat(timespec="seconds"),
        notes=[hidden] if hidden else [],
    )
    if args.output == "-":
        sys.stdout.write(text)
    else:
        _write(args.output, text, args.force)
        option = "" if args.output == "portscope.toml" else f" --file {clean(args.output)}"
        sys.stdout.write(
            f"wrote {clean(args.output)}: {len(listeners)} listener(s). Review it, then run "
            f"`portscope baseline check{option}`\n"
        )
    if hidden:
        output.note(hidden)
    return 0


def _write(path: str, text: str, force: bool) -> None:
    """Never half a file, and never a reviewed file replaced by accident: the text goes to a
    temporary file that is then linked to PATH (which fails if PATH exists, with no window in which
    another writer could slip in) or, with FORCE, renamed over it."""
    shown = clean(path)
    if not force and os.path.lexists(path):
        raise BadInput(f"{shown} exists: review or rename it, or pass --force to replace it")
    directory = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(prefix=".portscope-", suffix=".toml", dir=directory)
    except FileNotFoundError as exc:
        raise BadInput(f"{shown}: directory {clean(directory)} does not exist") from exc
    except PermissionError as exc:
        raise CannotDo(f"{shown}: cannot write in {clean(directory)}: permission denied") from exc
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        if force:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)
    except FileExistsError as exc:
        raise BadInput(f"{shown} exists: review or rename it, or pass --force to replace it") from exc
    except OSError as exc:
        raise CannotDo(f"{shown}: cannot write: {os.strerror(exc.errno or 0)}") from exc
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)


def _check(args: argparse.Namespace) -> int:
    from portscope.policy.baseline import compare, find_file, load
    from portscope.policy.listeners import current_listeners, take_snapshot

    path = find_file(args.file)
    baseline = load(path)
    snap = take_snapshot(baseline.scope)
    listeners = current_listeners(baseline.scope, baseline.keep_ports(), snap)
    differences = compare(baseline, listeners)
    if args.json:
        output.emit_json({"file": path, "differences": differences, "listeners": listeners})
    else:
        _human(path, differences, len(listeners))
    hidden = snap.hidden_note()
    if hidden:
        output.note(hidden + "; their process, unit and container were not compared")
    return 1 if differences else 0


def _human(path: str, differences: list[Difference], checked: int) -> None:
    if not differences:
        sys.stdout.write(
            f"no difference from {clean(path)}: {checked} listener(s), each expected or allowed\n"
        )
        return
    rows = [[d.kind, d.summary] for d in differences]
    notes = [f"{len(differences)} difference(s) from {path}"]
    output.emit_table(
        [output.Column("DIFFERENCE"), output.Column("DETAIL", fit="wrap", min_width=30)], rows, notes
    )
