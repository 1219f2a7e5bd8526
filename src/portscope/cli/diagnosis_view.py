"""How any Diagnosis reads: the verdict and its sentence first, then the evidence, then what to do.

Shared by `diagnose` and `free`, so a script or a person sees the same shape whatever the question.
Plain text on purpose: the lines are sentences and commands to copy, not a table. Process names and
command lines sit inside the sentences, so every line goes through textsafe.clean; --json relies on
json's ASCII escaping for the same guarantee.
"""

from __future__ import annotations

import argparse
import sys
from typing import TextIO

from portscope.cli import output
from portscope.i18n import _
from portscope.model import Diagnosis, Evidence
from portscope.textsafe import clean


def add_format_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--json", action="store_true", help="the diagnosis as JSON (verdict, summary, evidence, next_steps)"
    )


def mark(e: Evidence) -> str:
    """A fixed-width word, not a colour or a glyph: it survives pipes, logs and any terminal."""
    if e.passed is True:
        return _("ok")
    if e.passed is False:
        return _("FAIL")
    return _("info")


def exit_code(diagnosis: Diagnosis) -> int:
    return 0 if diagnosis.verdict == "ok" else 1


def render(diagnosis: Diagnosis, args: argparse.Namespace | None = None, stream: TextIO | None = None) -> int:
    """Write DIAGNOSIS as --json or as text; returns the exit code (0 for ok, 1 for any other verdict)."""
    stream = stream or sys.stdout
    if args is not None and getattr(args, "json", False):
        output.emit_json(diagnosis.to_dict(), stream)
        return exit_code(diagnosis)
    lines = [f"{clean(diagnosis.verdict)}: {clean(diagnosis.summary)}"]
    if diagnosis.evidence:
        marks = [mark(e) for e in diagnosis.evidence]
        width = max(len(m) for m in marks)
        lines.append(_("evidence:"))
        for m, e in zip(marks, diagnosis.evidence, strict=True):
            lines.append(f"  {m:<{width}}  {clean(e.check)}: {clean(e.observation)}")
    if diagnosis.next_steps:
        lines.append(_("next steps:"))
        lines += [f"  - {clean(step)}" for step in diagnosis.next_steps]
    stream.write("\n".join(lines) + "\n")
    return exit_code(diagnosis)
