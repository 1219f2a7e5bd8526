"""`portscope watch`: this host's listeners against its baseline, every few seconds, with history and
alerts that are never lost (see monitor/watch.py). `--once` runs one cycle: for cron, or to try a file.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from types import FrameType

from portscope.errors import BadInput


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--file",
        metavar="FILE",
        help="the baseline (default ./portscope.toml, /etc/portscope/portscope.toml)",
    )
    p.add_argument(
        "--db", metavar="URL", help="history store: a path, sqlite:///..., postgresql://... ($PORTSCOPE_DB)"
    )
    p.add_argument(
        "--interval", type=float, metavar="SECONDS", help="between cycles (default: the file's [watch])"
    )
    p.add_argument(
        "--persist", type=float, metavar="SECONDS", help="how long a change must last before it alerts"
    )
    p.add_argument(
        "--host", metavar="NAME", help="this host's name in the history and alerts (default: hostname)"
    )
    p.add_argument("--once", action="store_true", help="one cycle, then exit (1 when the host differs)")
    p.add_argument(
        "--metrics",
        metavar="ADDR:PORT",
        help="serve Prometheus metrics there, e.g. 127.0.0.1:9310 ([::1]:9310; :9310 for every address)",
    )
    p.add_argument("--json", action="store_true", help="one JSON object per cycle on stdout")


def run(args: argparse.Namespace) -> int:
    import os

    from portscope.cli import output
    from portscope.monitor.metrics import WatchMetrics, parse_listen, serve
    from portscope.monitor.sinks import build_sinks
    from portscope.monitor.store import Store
    from portscope.monitor.watch import CycleReport, Watcher
    from portscope.policy.baseline import find_file, load

    for name in ("interval", "persist"):
        value = getattr(args, name)
        if (value is not None and not 0 <= value <= 604800) or (name == "interval" and value == 0):
            raise BadInput(f"--{name} {value:g} is out of range: give seconds, e.g. 30")
    if args.metrics:
        parse_listen(args.metrics)  # bad input is exit 2 before anything starts
    baseline = load(find_file(args.file))
    sinks = build_sinks([s.table for s in baseline.sinks])
    store = Store.open(args.db or os.environ.get("PORTSCOPE_DB"))
    watcher = Watcher(baseline, store, sinks, host=args.host, persist=args.persist)
    interval = args.interval or baseline.watch.interval
    stop = threading.Event()
    metrics = WatchMetrics(watcher.host) if args.metrics else None
    if metrics is not None:
        serve(metrics, args.metrics)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    last: list[CycleReport] = []

    def show(report: CycleReport) -> None:
        last[:] = [report]
        if metrics is not None:
            metrics.observe(report)
        _print(report, args.json)

    def failed(exc: Exception) -> None:
        if metrics is not None:
            metrics.failed()
        output.note(f"watch: this cycle failed, the next one runs as planned: {type(exc).__name__}: {exc}")

    watcher.run(interval, stop, show, cycles=1 if args.once else None, on_error=None if args.once else failed)
    if args.once and last:
        return 1 if last[0].differences else 0
    return 0


def _print(report: object, as_json: bool) -> None:
    from portscope.cli import output
    from portscope.monitor.watch import CycleReport
    from portscope.textsafe import clean

    assert isinstance(report, CycleReport)
    if as_json:
        output.emit_json(
            {
                "at": report.at.isoformat(),
                "listeners": len(report.listeners),
                "differences": [d.to_dict() for d in report.differences],
                "events": [e.to_dict() for e in report.events],
                "pending": report.pending,
                "targets": [t.to_dict() for t in report.targets],
                "sent": report.delivery.sent if report.delivery else 0,
                "seconds": round(report.seconds, 4),
            }
        )
    else:
        stamp = report.at.strftime("%Y-%m-%d %H:%M:%S")
        for e in report.events:
            sys.stdout.write(f"{stamp} {e.kind} {clean(e.summary)}\n")
    for note in report.notes:
        output.note(note)
    if report.delivery is not None:
        for err in report.delivery.errors:
            output.note(str(err))
    sys.stdout.flush()
