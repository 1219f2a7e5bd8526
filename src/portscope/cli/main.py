"""`portscope` entry point: argparse (cheap to import), lazy command modules, errors as exit codes."""

from __future__ import annotations

import argparse
import importlib
import os
import re
import sys
from collections.abc import Sequence
from typing import NoReturn

from portscope import __version__
from portscope.errors import BadInput, CannotDo

# command name -> module under portscope.cli; imported only when that command runs (start-up time)
COMMANDS = {
    "ls": "Sockets on this host and the processes that own them (listening by default).",
    "who": "Every process holding a port: fuser + ps in one.",
    "services": "What a port or service name means: IANA, /etc/services, and what people run there.",
    "stats": "Socket counts per state, CLOSE_WAIT and TIME_WAIT trouble, ephemeral ports, fd limits.",
    "check": "Can I reach HOST on PORT? open, closed (refused), filtered (timeout), unreachable, explained.",
    "probe": "What really answers on a port: protocol, product, version, TLS and certificate, as expected?",
    "diagnose": "Why doesn't it connect? The troubleshooting checklist, run: a verdict, evidence, next steps.",
    "scan": "Connect (or UDP) scan of many ports and hosts; nmap-compatible XML and grepable output.",
    "free": "Can a service bind PORT now? If not: who holds it (process, unit), free ports nearby, what to do.",
    "baseline": "Write this host's expected listeners to portscope.toml (init); compare now with it (check).",
    "watch": "Watch this host's listeners against portscope.toml: events after they persist, history, alerts.",
    "history": "What watch recorded: which process held a port when, events per host (SQLite or PostgreSQL).",
}


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit 2 (DESIGN.md), never a usage dump."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: error: {message} (see {self.prog} --help)\n")
        raise SystemExit(2)


def build_parser(argv: Sequence[str] | None = None) -> Parser:
    """The full parser for the command in ARGV only: importing every command module and building
    every option table would double `portscope ls`'s start-up time. Without ARGV, all of them."""
    parser = Parser(
        prog="portscope",
        description="See what listens and who owns it; test, identify and explain ports.",
    )
    parser.add_argument("--version", action="version", version=f"portscope {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    chosen = next((a for a in argv if not a.startswith("-")), None) if argv is not None else None
    for name, help_text in COMMANDS.items():
        if chosen in COMMANDS and name != chosen:
            # Never parsed, never listed (the chosen command's --help shows only its own options):
            # each parser argparse builds costs ~0.4 ms of start-up.
            continue
        module = importlib.import_module(f"portscope.cli.cmd_{name}")
        cmd = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(cmd)
        cmd.set_defaults(_run=module.run)
    return parser


_NEGATIVE = re.compile(r"^-\d+$|^-\d*\.\d+$")


def numeric_options(parser: argparse.ArgumentParser) -> set[str]:
    """Option strings (every command's) that take one int or float value."""
    found: set[str] = set()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found |= numeric_options(sub)
        elif action.type in (int, float) and action.option_strings:
            found.update(action.option_strings)
    return found


def join_negative_values(argv: Sequence[str], numeric: set[str]) -> list[str]:
    """`--timeout -1` becomes `--timeout=-1`, so the command's own range check answers it.

    Why: a command with options that look like negative numbers (-4, -6) makes argparse take "-1"
    for an option, and `scan --timeout -1` died with "expected one argument" instead of naming the
    valid range. Every numeric option goes through this one rewrite, so all read the same.
    """
    out: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            out += argv[i:]
            break
        if arg in numeric and i + 1 < len(argv) and _NEGATIVE.match(argv[i + 1]):
            out.append(f"{arg}={argv[i + 1]}" if arg.startswith("--") else arg + argv[i + 1])
            i += 2
            continue
        out.append(arg)
        i += 1
    return out


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    parser = build_parser(argv)
    argv = join_negative_values(argv, numeric_options(parser))
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        code: int = args._run(args)
        sys.stdout.flush()
        return code
    except BadInput as exc:
        sys.stderr.write(f"portscope {args.command}: {exc}\n")
        return 2
    except CannotDo as exc:
        sys.stderr.write(f"portscope {args.command}: {exc}\n")
        return 3
    except BrokenPipeError:
        # `portscope ls | head`: the reader left; say nothing, as ss and grep do.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        return 130
