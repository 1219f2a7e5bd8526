#!/usr/bin/env python3
"""Watch-cycle benchmark: the cost of one `portscope watch` cycle beside `ss -tlnp` and `ss -tanp`.

Why: the issue asks that watching a busy host (1,000 listening TCP sockets, 100,000 connections) cost
under 0.5 s of CPU per cycle and under 100 MB of memory, or a daemon that looks every 30 s becomes a
load of its own. A cycle (monitor/watch.py, `Watcher.cycle`) asks the kernel for listening sockets
only, but finding their owners means one pass over every process's /proc/PID/fd, so it pays for
every established socket too; that is what this benchmark loads the host with.

Host state, reusing bench/inventory.py's machinery (its Fleet, Layout and Worker): N established
TCP sockets on loopback (N/2 connections with both ends held, counted as inventory.py counts them),
plus idle listener processes that bring the host to exactly --listeners listening sockets on 127.0.2.k,
one port each, below the ephemeral range (portscope never counts loopback listeners on ephemeral ports).
`portscope baseline init` then writes a baseline listing all of them, so every cycle matches it and
measures the no-difference path a healthy host takes every time.

Measured, in one run on the same host state:
1. `portscope watch --once --file F --db DB --host bench --json` as a subprocess (wall, user + sys
   CPU and peak RSS from wait4, as harness.run_once does): with a fresh SQLite file each run (first
   cycle: schema created, every interval opened) and with one that already holds a cycle (steady
   state: intervals extended);
2. the steady-state cycle inside a long-running watcher: a child Python builds Watcher once, as
   cmd_watch.run does, without sinks, and runs --cycles cycles, measuring each one's CPU (its own,
   all threads, plus the fd-pass children it forks and reaps) and its peak RSS. This is the daemon's
   figure, the one the target is about;
3. `ss -tlnp` and `ss -tanp`, the manual equivalent of a cycle, for the ratios;
4. where a cycle's time goes: a second watcher with a timer around each step cycle() calls (wall,
   own CPU, children CPU), and a third under cProfile (--profile-cycles) for the top functions.

Only 127.0.0.0/8 is used. Run as root (owners of other processes, fd limits); --isolate as in
inventory.py:
    /work/main/.venv/bin/python bench/watch.py --isolate [--sizes 100000,200000]
Markdown report on stdout and in bench/results/watch-<UTC time>.md, raw numbers in the .json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pstats
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harness import (
    ROOT,
    BenchError,
    Result,
    Tool,
    become_subreaper,
    default_python,
    exit_on_sigterm,
    first_line,
    fmt,
    machine_info,
    measured_env,
    namespace_note,
    portscope_command,
    progress,
    reexec_isolated,
    result_json,
    run_once,
    save_report,
    src_digest,
    time_tools,
    utc_now,
)
from inventory import (
    FD_SLACK,
    Fleet,
    Layout,
    Worker,
    _sizes,
    add_fleet_options,
    check_fleet_options,
    count_tcp,
    fd_budget,
    wait_drained,
    wait_quiet,
)

CPU_TARGET_S = 0.5
RSS_TARGET_MB = 100.0  # the issue says MB: 10^6 bytes, so the limit is 95.4 MiB
RSS_TARGET_MIB = RSS_TARGET_MB * 1e6 / 2**20
HOST = "bench"  # --host: the history store's name for this host, the same in every run

L_FIRST = "portscope watch --once (first cycle: new database)"
L_STEADY = "portscope watch --once (steady state: database holds a cycle)"
L_DAEMON = "Watcher.cycle() in a long-running watcher"
L_SS_L = "ss -tlnp"
L_SS_A = "ss -tanp"


# ---------------------------------------------------------------------------------------------
# The listeners: inventory.py's `_server` workers, each listening on many ports at one address.
# ---------------------------------------------------------------------------------------------


class Listeners:
    """PROCS processes holding COUNT listening sockets between them; a context manager so they die.

    Why not more fleet servers: those accept the fleet's connections, and the issue's host has a
    thousand services of which most are idle. These listen and accept nothing, like those. Worker k
    listens at 127.0.2.(k+1) on its own block of ports from BASE up: one port per listener, as on a
    host running many services (many listeners sharing a port at many addresses cost baseline.compare
    more: it compares the addresses of every entry on the port).
    """

    def __init__(self, count: int, procs: int, base_port: int) -> None:
        self.count = count
        self.procs = max(1, min(procs, count)) if count else 0
        self.base_port = base_port
        self.workers: list[Worker] = []

    def __enter__(self) -> Listeners:
        try:
            share, extra = divmod(self.count, self.procs) if self.procs else (0, 0)
            first = self.base_port
            for k in range(self.procs):
                n = share + (1 if k < extra else 0)
                spec = {
                    "addrs": [f"127.0.2.{k + 1}"],
                    "port": first,
                    "ports": list(range(first, first + n)),
                    "nofile": n + FD_SLACK,
                }
                first += n
                self.workers.append(Worker(f"listener {k}", "_server", spec))
            for w in self.workers:
                w.read_line(60)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for w in self.workers:
            w.stop()
        for w in self.workers:
            w.reap(60)
        self.workers = []


def count_fds() -> int:
    """Open fds of every process: what the cycle's /proc/*/fd pass has to readlink, one by one."""
    total = 0
    for name in os.listdir("/proc"):
        if name.isdigit():
            with contextlib.suppress(OSError):
                total += len(os.listdir(f"/proc/{name}/fd"))
    return total


def sockets_used() -> int:
    """The kernel's socket count (/proc/net/sockstat): portscope forks its fd pass above 20,000."""
    first = Path("/proc/net/sockstat").read_text().split()
    return int(first[2])


# ---------------------------------------------------------------------------------------------
# What is timed.
# ---------------------------------------------------------------------------------------------


def watch_digest(out: str) -> dict[str, Any]:
    """What a `watch --once --json` run said: the listener count, differences, its own cycle seconds."""
    try:
        d = json.loads(out.strip().splitlines()[-1])
        return {
            "listeners": d["listeners"],
            "differences": len(d["differences"]),
            "events": len(d["events"]),
            "seconds": d["seconds"],
        }
    except (IndexError, KeyError, TypeError, ValueError):
        return {"error": out[-300:]}


def remove_db(path: Path) -> Callable[[], None]:
    """A Tool.prepare that deletes the SQLite file and its WAL, so the next run is a first cycle."""

    def prepare() -> None:
        for suffix in ("", "-wal", "-shm", "-journal"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"{path}{suffix}")

    return prepare


def watch_argv(ps: list[str], toml: Path, db: Path) -> list[str]:
    """The CLI form of one cycle, as a cron job or a test of the file would run it."""
    return [*ps, "watch", "--once", "--file", str(toml), "--db", str(db), "--host", HOST, "--json"]


# The long-running watcher, as `python -c`: only portscope's own imports, so its RSS is the daemon's,
# not this benchmark's. It builds Watcher as cmd_watch.run does (load, build_sinks of the file's
# sinks: none, Store.open, Watcher) and calls cycle() as Watcher.run would, without the sleeps.
# RUSAGE_CHILDREN covers the fd-pass children the snapshot forks on a busy host: they are reaped
# (waitpid) inside the cycle, so each cycle's delta is exactly its children's CPU.
WATCHER_CODE = r"""
import json, resource, sys, time
t0 = time.perf_counter()
from portscope.monitor.sinks import build_sinks
from portscope.monitor.store import Store
from portscope.monitor.watch import Watcher
from portscope.policy.baseline import load
t1 = time.perf_counter()
path, db, host, cycles, mode, extra = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5], sys.argv[6]
baseline = load(path)
sinks = build_sinks([s.table for s in baseline.sinks])
assert not sinks, "the benchmark's baseline must have no sinks"
watcher = Watcher(baseline, Store.open(db), sinks, host=host)
t2 = time.perf_counter()
PAGE = resource.getpagesize()
usage = resource.getrusage
SELF, CHILDREN = resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN

def rss_kib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE // 1024

def cpu(u):
    return u.ru_utime + u.ru_stime

phases = {}  # mode "phases": name -> [wall, own CPU, children CPU] of the current cycle

def timed(name, fn):
    def wrapper(*args, **kwargs):
        s0, c0, w0 = usage(SELF), usage(CHILDREN), time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            w1, s1, c1 = time.perf_counter(), usage(SELF), usage(CHILDREN)
            acc = phases.setdefault(name, [0.0, 0.0, 0.0])
            acc[0] += w1 - w0
            acc[1] += cpu(s1) - cpu(s0)
            acc[2] += cpu(c1) - cpu(c0)
    return wrapper

if mode == "phases":  # wrap what cycle() calls, by the names it calls them through
    import portscope.inventory.snapshot as S
    import portscope.monitor.watch as W
    for name in ("take_snapshot", "current_listeners", "compare", "target_differences", "queue_cycle", "deliver_due"):
        setattr(W, name, timed(name, getattr(W, name)))
    for name in ("_decode_all", "_attach_owners"):
        setattr(S, name, timed("take_snapshot/" + name, getattr(S, name)))
    for obj, name in ((watcher.store, "record_listeners"), (watcher.checker, "check"), (watcher.tracker, "observe")):
        setattr(obj, name, timed(type(obj).__name__ + "." + name, getattr(obj, name)))

out = {"import_s": t1 - t0, "build_s": t2 - t1, "maxrss_built_kib": usage(SELF).ru_maxrss, "cycles": []}
prof = None
for i in range(cycles):
    if mode == "profile" and i == 1:  # the first cycle warms caches; profile the steady ones
        import cProfile
        prof = cProfile.Profile()
        prof.enable()
    phases.clear()
    s0, c0, w0 = usage(SELF), usage(CHILDREN), time.perf_counter()
    report = watcher.cycle()
    w1, s1, c1 = time.perf_counter(), usage(SELF), usage(CHILDREN)
    out["cycles"].append({
        "wall_s": w1 - w0,
        "cpu_self_s": cpu(s1) - cpu(s0),
        "cpu_children_s": cpu(c1) - cpu(c0),
        "maxrss_self_kib": s1.ru_maxrss,
        "maxrss_children_kib": c1.ru_maxrss,
        "rss_kib": rss_kib(),
        "listeners": len(report.listeners),
        "differences": len(report.differences),
        "events": len(report.events),
        "notes": report.notes,
        "phases": dict(phases),
    })
if prof is not None:
    prof.disable()
    prof.dump_stats(extra)
print(json.dumps(out))
"""


@dataclass
class DaemonRun:
    """One long-running watcher's cycles; cycle 1 is its warm-up (lazy imports, caches, statements)."""

    argv: list[str]
    cycles: list[dict[str, Any]] = field(default_factory=list)
    import_s: float = 0.0
    build_s: float = 0.0
    maxrss_built_kib: int = 0
    wait4_maxrss_kib: int = 0  # the whole child: max of its own peak and its children's
    wait4_cpu_s: float = 0.0
    failed: str = ""

    def steady(self) -> list[dict[str, Any]]:
        return self.cycles[1:] or self.cycles

    @staticmethod
    def cpu(c: dict[str, Any]) -> float:
        return float(c["cpu_self_s"] + c["cpu_children_s"])

    def summary(self) -> dict[str, Any]:
        st = self.steady()
        if self.failed or not st:
            return {}
        cpu = [self.cpu(c) for c in st]
        wall = [c["wall_s"] for c in st]
        return {
            "cycles_summarised": len(st),
            "wall_best_s": min(wall),
            "wall_median_s": statistics.median(wall),
            "cpu_best_s": min(cpu),
            "cpu_median_s": statistics.median(cpu),
            "cpu_children_median_s": statistics.median(c["cpu_children_s"] for c in st),
            "first_cycle_wall_s": self.cycles[0]["wall_s"],
            "first_cycle_cpu_s": self.cpu(self.cycles[0]),
            "maxrss_self_mib": max(c["maxrss_self_kib"] for c in self.cycles) / 1024,
            "maxrss_children_mib": max(c["maxrss_children_kib"] for c in self.cycles) / 1024,
            "rss_after_second_mib": st[0]["rss_kib"] / 1024,
            "rss_after_last_mib": self.cycles[-1]["rss_kib"] / 1024,
            "maxrss_built_mib": self.maxrss_built_kib / 1024,
        }


def run_daemon(
    python: str,
    toml: Path,
    db: Path,
    cycles: int,
    env: dict[str, str],
    timeout: float,
    mode: str = "plain",
    profile_out: str = "",
) -> DaemonRun:
    """Run WATCHER_CODE in a child started like every timed command (harness.run_once: honest RSS).

    MODE: "plain" (the measured run: nothing patched), "phases" (each step cycle() calls wrapped in
    a timer: wall, own CPU, children CPU) or "profile" (cProfile after cycle 1, written to PROFILE_OUT).
    """
    argv = [python, "-c", WATCHER_CODE, str(toml), str(db), HOST, str(cycles), mode, profile_out]
    res = DaemonRun([python, "-c", "<WATCHER_CODE>", *argv[3:]])
    run = run_once(argv, env, timeout * cycles, capture=True)
    res.wait4_maxrss_kib, res.wait4_cpu_s = run.maxrss_kib, run.cpu_s
    if run.rc != 0:
        res.failed = f"rc={run.rc}: {run.stderr_tail[-300:]}"
        return res
    data = json.loads(run.stdout)
    res.cycles = data["cycles"]
    res.import_s, res.build_s, res.maxrss_built_kib = (
        data["import_s"],
        data["build_s"],
        data["maxrss_built_kib"],
    )
    return res


# The steps of Watcher.cycle() as the "phases" run names them, in the order it calls them.
PHASES = [
    ("take_snapshot", "take_snapshot: listening sockets and their owners"),
    ("take_snapshot/_decode_all", "· netlink dump and decode (LISTEN only: the kernel filters)"),
    ("take_snapshot/_attach_owners", "· fd pass: wait for the forked children, merge, attach owners"),
    ("take_snapshot/rest", "· the rest (fork the fd-pass children, sockstat)"),
    ("current_listeners", "current_listeners: group into Listeners, /proc/PID details"),
    ("Store.record_listeners", "store.record_listeners (SQLite, one transaction, fsync)"),
    ("TargetChecker.check", "targets: check (none in this baseline)"),
    ("compare", "baseline.compare (every listener against every entry)"),
    ("target_differences", "targets: differences"),
    ("Tracker.observe", "tracker.observe"),
    ("queue_cycle", "queue alerts (only when a cycle has events)"),
    ("deliver_due", "deliver (only with sinks)"),
    ("rest", "the rest of cycle()"),
]


def phase_summary(run: DaemonRun) -> dict[str, Any]:
    """Median over the steady cycles of each step's wall, own CPU and children CPU (the "phases" run).

    Why a separate run with wrappers rather than cProfile: cProfile's per-call overhead inflates the
    Python-heavy steps (compare's million small calls) several times over and cannot see CPU in the
    forked children; a timer around each of a dozen calls per cycle costs microseconds.
    """
    if run.failed or not run.cycles:
        return {"failed": run.failed or "no cycles"}
    st = run.steady()
    per: dict[str, list[list[float]]] = {}
    for c in st:
        ph = {k: list(v) for k, v in c["phases"].items()}
        top = [v for k, v in ph.items() if "/" not in k]
        ph["rest"] = [
            c["wall_s"] - sum(v[0] for v in top),
            c["cpu_self_s"] - sum(v[1] for v in top),
            c["cpu_children_s"] - sum(v[2] for v in top),
        ]
        if "take_snapshot" in ph:
            subs = [v for k, v in ph.items() if k.startswith("take_snapshot/")]
            ph["take_snapshot/rest"] = [ph["take_snapshot"][i] - sum(v[i] for v in subs) for i in range(3)]
        ph["cycle"] = [c["wall_s"], c["cpu_self_s"], c["cpu_children_s"]]
        for k, v in ph.items():
            per.setdefault(k, []).append(v)
    med = {k: [statistics.median(x[i] for x in v) for i in range(3)] for k, v in per.items()}
    rows = [
        {"phase": label, "key": key, "wall_s": m[0], "cpu_self_s": m[1], "cpu_children_s": m[2]}
        for key, label in PHASES
        if (m := med.get(key)) is not None
    ]
    total = med["cycle"]
    return {
        "cycles": len(st),
        "rows": rows,
        "cycle": total,
        "maxrss_self_mib": run.summary()["maxrss_self_mib"],
    }


def profile_summary(path: Path, cycles: int) -> dict[str, Any]:
    """The top functions by own time per cycle, from cProfile: which code inside a step costs.

    cProfile measures wall time in the profiled (main) thread only, inflated by its own overhead on
    Python-heavy code; the fd-pass children it waits for show up as time in os.read. The step totals
    come from the "phases" run instead (phase_summary), the targets from the plain run.
    """
    st = pstats.Stats(str(path))
    raw: dict[tuple[str, int, str], tuple[int, int, float, float, Any]] = st.stats  # type: ignore[attr-defined]
    top = sorted(raw.items(), key=lambda kv: kv[1][2], reverse=True)[:25]
    rows = [
        {
            "function": f"{_short(f)}:{line}({name})",
            "calls_per_cycle": v[1] / cycles,
            "tottime_per_cycle_s": v[2] / cycles,
            "cumtime_per_cycle_s": v[3] / cycles,
        }
        for (f, line, name), v in top
    ]
    total = sum(v[2] for v in raw.values()) / cycles
    return {"cycles": cycles, "profiled_s_per_cycle": total, "top_tottime": rows}


def _short(path: str) -> str:
    """A profiled file's name relative to the portscope package or site-packages, for the table."""
    for marker in ("/portscope/", "/site-packages/"):
        if marker in path:
            return ("portscope/" if marker == "/portscope/" else "") + path.split(marker, 1)[1]
    return re.sub(r".*/lib/python3\.\d+/", "", path)


# ---------------------------------------------------------------------------------------------
# One size.
# ---------------------------------------------------------------------------------------------


def baseline_init(ps: list[str], toml: Path, env: dict[str, str]) -> int:
    """`portscope baseline init` on the host as it is now; returns the listeners it wrote."""
    p = subprocess.run(
        [*ps, "baseline", "init", "--output", str(toml), "--force"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    if p.returncode != 0:
        raise BenchError(f"baseline init failed (rc={p.returncode}): {p.stderr.strip()[-500:]}")
    return sum(1 for line in toml.read_text().splitlines() if line.strip() == "[[listener]]")


def run_size(
    opts: argparse.Namespace,
    sockets: int,
    layout: Layout,
    python: str,
    ps: list[str],
    env: dict[str, str],
    work: Path,
) -> dict[str, Any]:
    """Open the fleet and the listeners, write the baseline, time every form of a cycle, close."""
    n = max(1, sockets // 2)  # connections: both ends of each are held, so 2n sockets
    size_layout = layout.scaled(n, fd_budget())
    fleet_listeners = size_layout.servers * len(size_layout.listen_addrs)
    extra = opts.listeners - fleet_listeners
    if extra < 0:
        raise BenchError(f"the fleet alone has {fleet_listeners} listeners, more than --listeners")
    d = work / f"n{sockets}"
    d.mkdir()
    toml, first_db, steady_db = d / "portscope.toml", d / "first.db", d / "steady.db"
    progress(f"N={sockets} sockets: opening {n} connections and {extra} more listeners")
    before = wait_quiet(opts.quiet_below, opts.quiet_wait)
    est_before = count_tcp("established")
    load_before = os.getloadavg()
    out: dict[str, Any] = {"sockets": 2 * n, "n": n, "tcp_before": before}
    with Fleet(size_layout, n) as fleet, Listeners(extra, opts.listener_procs, opts.listen_base_port):
        established, listening = count_tcp("established"), count_tcp("listening")
        progress(f"  open in {fleet.setup_s:.1f} s; {established} ESTABLISHED, {listening} LISTEN")
        if established < 2 * n:
            raise BenchError(f"only {established} ESTABLISHED sockets, need ≥ {2 * n}")
        if listening < opts.listeners:
            raise BenchError(f"only {listening} listening TCP sockets, need ≥ {opts.listeners}")
        in_baseline = baseline_init(ps, toml, env)
        progress(f"  baseline init: {in_baseline} listeners")
        out.update(
            established=established,
            listening=listening,
            in_baseline=in_baseline,
            fds=count_fds(),
            sockets_used=sockets_used(),
            setup_s=fleet.setup_s,
            servers=size_layout.servers,
            clients=size_layout.clients,
            fleet_listeners=fleet_listeners,
            extra_listeners=extra,
        )
        # Cycle 1 into the steady-state database, checked: a difference here means the baseline does
        # not match and every figure after would time the wrong path.
        prime = run_once(watch_argv(ps, toml, steady_db), env, opts.timeout, capture=True)
        primed = watch_digest(prime.stdout)
        if prime.rc != 0 or primed.get("differences") or primed.get("listeners") != in_baseline:
            raise BenchError(
                f"first watch cycle: rc={prime.rc}, {primed} (want {in_baseline} listeners, no "
                f"difference); stderr: {prime.stderr_tail[-300:]}"
            )
        tools = [
            Tool(L_FIRST, watch_argv(ps, toml, first_db), digest=watch_digest, prepare=remove_db(first_db)),
            Tool(L_STEADY, watch_argv(ps, toml, steady_db), digest=watch_digest),
            Tool(L_SS_L, ["ss", "-tlnp"]),
            Tool(L_SS_A, ["ss", "-tanp"]),
        ]
        # One untimed run of each: bytecode and page caches warm, as on a host that runs it every 30 s.
        for t in (t for t in tools if t.label != L_STEADY):  # the steady one is primed above
            if t.prepare is not None:
                t.prepare()
            run_once(t.argv, env, opts.timeout)
        results = time_tools(tools, env, opts)
        progress(f"  long-running watcher: {opts.cycles} cycles")
        daemon_db = d / "daemon.db"
        shutil.copy(steady_db, daemon_db)  # holds cycles already: every cycle of it is a steady one
        daemon = run_daemon(python, toml, daemon_db, opts.cycles, env, opts.timeout)
        for i, c in enumerate(daemon.cycles, 1):
            progress(
                f"    cycle {i}: {c['wall_s']:.3f} s wall, {DaemonRun.cpu(c):.3f} s CPU "
                f"({c['cpu_children_s']:.3f} in children), RSS {c['rss_kib'] / 1024:.1f} MiB"
            )
        progress(f"  long-running watcher, each step timed: {opts.cycles} cycles")
        phased_db = d / "phases.db"
        shutil.copy(steady_db, phased_db)
        phased = run_daemon(python, toml, phased_db, opts.cycles, env, opts.timeout, "phases")
        profile: dict[str, Any] = {}
        if opts.profile_cycles > 0:
            progress(f"  cProfile: 1 + {opts.profile_cycles} cycles")
            prof_db, prof_out = d / "profile.db", d / "cycle.prof"
            shutil.copy(steady_db, prof_db)
            prof = run_daemon(
                python, toml, prof_db, 1 + opts.profile_cycles, env, opts.timeout, "profile", str(prof_out)
            )
            if prof.failed:
                profile = {"failed": prof.failed}
            else:
                profile = profile_summary(prof_out, opts.profile_cycles)
                keep = work / f"cycle-{sockets}.prof"
                shutil.copy(prof_out, keep)
                profile["file"] = str(keep)
        established_after = count_tcp("established")
    load_after = os.getloadavg()
    left = wait_drained(est_before)
    progress(f"  closed; {left} ESTABLISHED left")
    out.update(
        established_after=established_after,
        load_before=load_before,
        load_after=load_after,
        results=results,
        daemon=daemon,
        phases=phase_summary(phased),
        profile=profile,
        findings=findings(results, daemon, in_baseline),
    )
    return out


def findings(results: dict[str, Result], daemon: DaemonRun, expected: int) -> list[str]:
    """Every timed cycle must have seen the baseline's listeners and no difference; say where not."""
    out = []
    for label in (L_FIRST, L_STEADY):
        for i, run in enumerate(results[label].runs, 1):
            dg = run.digest or {}
            if dg.get("listeners") != expected or dg.get("differences"):
                out.append(f"`{label}` run {i}: {dg} (expected {expected} listeners, no difference)")
    if daemon.failed:
        out.append(f"long-running watcher failed: {daemon.failed}")
    for i, c in enumerate(daemon.cycles, 1):
        if c["listeners"] != expected or c["differences"]:
            out.append(f"watcher cycle {i}: {c['listeners']} listeners, {c['differences']} differences")
        for note in c["notes"]:
            out.append(f"watcher cycle {i} noted: {note}")
    return out


# ---------------------------------------------------------------------------------------------
# Report.
# ---------------------------------------------------------------------------------------------


def _x(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}×" if a is not None and b else "–"


def _mb(mib: float | None) -> str:
    return "–" if mib is None else f"{mib:.1f} MiB ({mib * 2**20 / 1e6:.1f} MB)"


def _met(value: float | None, limit: float) -> str:
    return "not measured" if value is None else ("yes" if value < limit else "**NO**")


def size_section(s: dict[str, Any], cycles: int) -> list[str]:
    """Tables for one size: every form of a cycle beside ss, the targets, the profile."""
    res: dict[str, Result] = s["results"]
    daemon: DaemonRun = s["daemon"]
    ds = daemon.summary()
    ss_l, ss_a = res[L_SS_L], res[L_SS_A]

    def ratios(wall: float | None, cpu: float | None) -> str:
        return f"{_x(wall, ss_l.best)} / {_x(cpu, ss_l.best_cpu)} | {_x(wall, ss_a.best)} / {_x(cpu, ss_a.best_cpu)}"

    rows = [
        "| what | wall best s | wall median s | CPU best s | CPU median s | runs | peak RSS MiB | "
        "÷ `ss -tlnp` wall / CPU | ÷ `ss -tanp` wall / CPU |",
        "|---|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in res.values():
        label = f"`{r.label}`"
        if r.failed:
            label += f" **failed** ({r.failed.replace('|', '/')})"
        own = [float(dg["seconds"]) for dg in (run.digest or {} for run in r.runs) if dg.get("seconds")]
        if own:
            label += f"; the cycle inside: {statistics.median(own):.3f} s median (its own `seconds`)"
        rows.append(
            f"| {label} | {fmt(r.best)} | {fmt(r.median)} | {fmt(r.best_cpu)} | {fmt(r.median_cpu)} | "
            f"{len(r.runs)} | {fmt(r.maxrss_mib, 1)} | "
            + (ratios(r.best, r.best_cpu) if r.label.startswith("portscope") else "– | –")
            + " |"
        )
    if ds:
        rows.append(
            f"| `{L_DAEMON}`, cycles 2–{len(daemon.cycles)} | {fmt(ds['wall_best_s'])} | "
            f"{fmt(ds['wall_median_s'])} | {fmt(ds['cpu_best_s'])} | {fmt(ds['cpu_median_s'])} | "
            f"{ds['cycles_summarised']} | {fmt(ds['maxrss_self_mib'], 1)} | "
            f"{ratios(ds['wall_best_s'], ds['cpu_best_s'])} |"
        )
    else:
        rows.append(f"| `{L_DAEMON}` **failed** ({daemon.failed.replace('|', '/')}) | | | | | | | | |")
    steady = res[L_STEADY]
    cli_peak = max((r.maxrss_mib or 0 for k, r in res.items() if k.startswith("portscope")), default=None)
    targets = [
        "| target | measured | limit | met |",
        "|---|---:|---:|---|",
        f"| CPU per cycle, long-running watcher (median of cycles 2–{len(daemon.cycles)}; own + fd-pass "
        f"children) | {fmt(ds.get('cpu_median_s'))} s (best {fmt(ds.get('cpu_best_s'))}) | < {CPU_TARGET_S:g} s | "
        f"{_met(ds.get('cpu_median_s'), CPU_TARGET_S)} |",
        f"| peak RSS, long-running watcher (its own ru_maxrss after {len(daemon.cycles)} cycles) | "
        f"{_mb(ds.get('maxrss_self_mib'))} | < {RSS_TARGET_MB:g} MB | {_met(ds.get('maxrss_self_mib'), RSS_TARGET_MIB)} |",
        f"| CPU, `watch --once` steady state (median; start-up and imports included) | "
        f"{fmt(steady.median_cpu)} s (best {fmt(steady.best_cpu)}) | < {CPU_TARGET_S:g} s | "
        f"{_met(steady.median_cpu, CPU_TARGET_S)} |",
        f"| peak RSS, any `watch --once` run | {_mb(cli_peak)} | < {RSS_TARGET_MB:g} MB | "
        f"{_met(cli_peak, RSS_TARGET_MIB)} |",
    ]
    lines = [
        f"## {s['sockets']:,} established sockets ({s['n']:,} connections, both ends held), "
        f"{s['listening']:,} listeners",
        "",
        f"{s['established']:,} ESTABLISHED and {s['listening']:,} LISTEN sockets counted by `ss -Htan state …` "
        f"before timing ({s['established_after']:,} ESTABLISHED after); {s['fds']:,} open fds on the host, "
        f"{s['sockets_used']:,} sockets in /proc/net/sockstat; {s['tcp_before']:,} TCP sockets before opening. "
        f"Held by {s['servers']} server and {s['clients']} client processes ({s['fleet_listeners']} of the "
        f"listeners: {s['servers']} ports × the listen addresses) and {s['extra_listeners']:,} more listeners "
        f"in the listener processes; opened in {s['setup_s']:.1f} s. `baseline init` wrote "
        f"{s['in_baseline']:,} `[[listener]]` entries. Load average {_load(s['load_before'])} before, "
        f"{_load(s['load_after'])} after.",
        "",
        *rows,
        "",
    ]
    if ds:
        lines += [
            f"Long-running watcher: imports {daemon.import_s:.3f} s, building Watcher {daemon.build_s:.3f} s "
            f"(RSS {ds['maxrss_built_mib']:.1f} MiB then); cycle 1 (warm-up, not in the row above) "
            f"{ds['first_cycle_wall_s']:.3f} s wall, {ds['first_cycle_cpu_s']:.3f} s CPU; of the steady "
            f"cycles' CPU, {ds['cpu_children_median_s']:.3f} s (median) was in the forked fd-pass children. "
            f"RSS {ds['rss_after_second_mib']:.1f} MiB after cycle 2, {ds['rss_after_last_mib']:.1f} MiB "
            f"after cycle {len(daemon.cycles)}; "
            + (
                f"largest fd-pass child {ds['maxrss_children_mib']:.1f} MiB (ru_maxrss, counting the pages "
                "it shares with the watcher it was forked from)."
                if ds["maxrss_children_mib"]
                else "no fd-pass children (below 20,000 sockets the pass runs in the watcher itself)."
            ),
            "",
            "Per cycle: "
            + ", ".join(f"{DaemonRun.cpu(c):.3f}" for c in daemon.cycles)
            + " s CPU; "
            + ", ".join(f"{c['wall_s']:.3f}" for c in daemon.cycles)
            + " s wall.",
            "",
        ]
    lines += ["Targets (issue: 1,000 listeners and 100,000 connections):", "", *targets, ""]
    ph = s["phases"]
    if ph.get("rows"):
        wall, own, kids = ph["cycle"]
        lines += [
            f"Where a steady cycle's time goes: a second watcher process with a timer around each step "
            f"`Watcher.cycle()` calls (median of {ph['cycles']} cycles after a warm-up; this run's cycle: "
            f"{wall:.3f} s wall, {own + kids:.3f} s CPU of which {kids:.3f} s in the fd-pass children). "
            "Children CPU is charged to the step that reaps them; · rows are parts of take_snapshot.",
            "",
            "| step | wall s | own CPU s | children CPU s | share of CPU |",
            "|---|---:|---:|---:|---:|",
            *(
                f"| {r['phase']} | {r['wall_s']:.3f} | {r['cpu_self_s']:.3f} | {r['cpu_children_s']:.3f} | "
                f"{(r['cpu_self_s'] + r['cpu_children_s']) / (own + kids) if own + kids else 0:.0%} |"
                for r in ph["rows"]
            ),
            "",
        ]
    elif ph.get("failed"):
        lines += [f"Phase-timing run failed: {ph['failed']}", ""]
    prof = s["profile"]
    if prof.get("top_tottime"):
        lines += [
            f"cProfile of {prof['cycles']} steady cycles (main thread, wall clock, inflated by cProfile: "
            f"{prof['profiled_s_per_cycle']:.3f} s per cycle profiled; saved beside the report as "
            f"`…-{Path(prof['file']).name}`), top functions by own time:",
            "",
            "| function | calls per cycle | own s per cycle | cumulative s per cycle |",
            "|---|---:|---:|---:|",
            *(
                f"| `{r['function']}` | {r['calls_per_cycle']:,.0f} | {r['tottime_per_cycle_s']:.4f} | "
                f"{r['cumtime_per_cycle_s']:.4f} |"
                for r in prof["top_tottime"][:15]
            ),
            "",
        ]
    elif prof.get("failed"):
        lines += [f"Profile run failed: {prof['failed']}", ""]
    if s["findings"]:
        lines += ["Findings:", "", *(f"- {f}" for f in s["findings"]), ""]
    else:
        lines += [
            "Check: every timed cycle (CLI and watcher) saw the baseline's listeners and no difference.",
            "",
        ]
    return lines


def _load(avg: tuple[float, float, float]) -> str:
    return " ".join(f"{x:.2f}" for x in avg)


def render(report: dict[str, Any], sizes: list[dict[str, Any]]) -> str:
    """The markdown report: where and how, then one section per size."""
    m = report["machine"]
    o = report["options"]
    lay = report["layout"]
    lines = [
        f"# portscope watch-cycle benchmark ({report['started']})",
        "",
        f"Command: `{report['command']}`",
        "",
        f"- Machine: {m['cpu']}, {m['cores']} cores ({m['cores_usable']} usable), {m['memory']} RAM, "
        f"Linux {m['kernel']}, {m['distro']}",
        f"- Python {m['python']}; portscope {m['portscope']}; measured {m['src_measured']}, sha256 of its "
        f"files: {m['src_digest']}",
        *(
            ["- src/ was edited while this ran; the figures are for the snapshot named above."]
            if report.get("src_edited_during_run")
            else []
        ),
        f"- Namespaces: {report['isolation']}",
        f"- Tools: {m['ss']}; ephemeral range {m['ip_local_port_range']}; SQLite files on {m['db_fs']} "
        "(the store commits with `synchronous = FULL`, so wall time includes fsyncs)",
        f"- Host state: inventory.py's fleet ({lay['servers']}+ server processes listening on ports "
        f"{lay['base_port']}+ at {len(lay['listen_addrs'])} addresses {lay['listen_addrs'][0]}–"
        f"{lay['listen_addrs'][-1]}, {lay['clients']}+ client processes from {len(lay['source_addrs'])} source "
        f"addresses), plus {o['listener_procs']} idle listener processes, one address each (127.0.2.1–"
        f"127.0.2.{o['listener_procs']}), one port per listener from {o['listen_base_port']} up, bringing the "
        f"host to {o['listeners']:,} listening TCP sockets, all below the ephemeral range. N established sockets = N/2 loopback connections with "
        "both ends held (inventory.py's count): a host serving N/2 remote clients holds N/2 sockets, so the "
        "fd pass here walks twice the fds of such a host with the same number of connections.",
        f"- Baseline: `portscope baseline init` on that state (every listener listed, so each cycle "
        f"matches it); `--host {HOST}`; no sinks, no targets.",
        f"- CLI timing: harness.run_once (forked by /bin/sh, reaped through PR_SET_CHILD_SUBREAPER), wall "
        f"from release to exit, CPU = user + sys from wait4 (includes children portscope reaps), peak RSS "
        f"= wait4's ru_maxrss; stdout to a file (its JSON is checked), NO_COLOR=1; one untimed warm-up each; "
        f"best of {o['repeats']} rounds, tools interleaved, median shown. First-cycle runs start with no "
        f"database file; steady-state runs reuse one file that held a cycle before the first timed run.",
        f"- Watcher timing: one child process (started the same way) builds Watcher once and runs "
        f"{o['cycles']} cycles back to back; per-cycle CPU is getrusage(SELF) + getrusage(CHILDREN) deltas, "
        "so threads and the forked fd-pass children are counted; peak RSS is its own ru_maxrss. Cycle 1 is "
        "reported apart (warm-up).",
        f"- Targets: CPU < {CPU_TARGET_S:g} s per cycle, RSS < {RSS_TARGET_MB:g} MB (= {RSS_TARGET_MIB:.1f} "
        "MiB), judged on the long-running watcher's median; the CLI rows are for information (each pays "
        "for interpreter start-up and imports, which a daemon pays once).",
        "",
    ]
    for s in sizes:
        lines += size_section(s, o["cycles"])
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Main.
# ---------------------------------------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument(
        "--sizes",
        type=_sizes,
        default=[100000, 200000],
        help="established TCP socket counts, both ends of each loopback connection counted "
        "(default: %(default)s, i.e. 50k and 100k connections)",
    )
    p.add_argument("--listeners", type=int, default=1000, help="listening TCP sockets in all (default 1000)")
    p.add_argument(
        "--listener-procs", type=int, default=4, help="processes holding the extra listeners (default 4)"
    )
    p.add_argument(
        "--listen-base-port",
        type=int,
        default=25000,
        help="the listener processes take ports BASE.. BASE+listeners; below the ephemeral range (default 25000)",
    )
    p.add_argument("--repeats", type=int, default=5, help="rounds of the CLI and ss runs (default 5)")
    p.add_argument(
        "--slow-repeats", type=int, default=3, help="runs for commands slower than --slow-threshold"
    )
    p.add_argument("--slow-threshold", type=float, default=10.0, help="seconds (default 10)")
    p.add_argument("--cycles", type=int, default=10, help="cycles of the long-running watcher (default 10)")
    p.add_argument(
        "--profile-cycles",
        type=int,
        default=5,
        help="cycles profiled with cProfile after a warm-up one (default 5; 0: no profile)",
    )
    p.add_argument(
        "--timeout", type=float, default=600.0, help="kill a timed command after this many seconds"
    )
    p.add_argument("--python", default=default_python(), help="interpreter for the watcher (default: .venv)")
    p.add_argument(
        "--portscope",
        default=None,
        help="command to run portscope (default: .venv/bin/portscope, else PYTHON -m portscope)",
    )
    add_fleet_options(p)
    p.add_argument(
        "--rev",
        metavar="COMMIT",
        help="measure src/ as committed there (git archive) instead of a copy of the working tree",
    )
    p.add_argument("--json", action="store_true", help="print the raw numbers as JSON instead of markdown")
    p.add_argument("--no-save", action="store_true", help="do not write bench/results/watch-*.{md,json}")
    opts = p.parse_args(argv)
    if opts.repeats < 1 or opts.slow_repeats < 1 or opts.cycles < 2:
        p.error("--repeats and --slow-repeats must be ≥ 1, --cycles ≥ 2 (cycle 1 is the warm-up)")
    check_fleet_options(p, opts)
    if opts.listeners < 1 or opts.listener_procs < 1:
        p.error("--listeners and --listener-procs must be ≥ 1")
    if opts.rev and opts.live_src:
        p.error("--rev and --live-src exclude each other")
    if opts.listener_procs > 250:
        p.error("--listener-procs must be ≤ 250 (one address 127.0.2.k each)")
    return opts


def main(argv: list[str]) -> int:
    opts = parse_args(argv)
    if os.geteuid() != 0:
        print("run as root: owner lookups, ss -p and fd limits of 200k need it", file=sys.stderr)
        return 2
    if opts.isolate and not opts.in_namespace:
        return reexec_isolated(Path(__file__), argv)
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    if opts.listen_base_port + opts.listeners > low or opts.base_port + 64 > opts.listen_base_port:
        raise BenchError(
            f"listener ports must be below the ephemeral range ({low}..), where portscope does not count "
            "loopback listeners, and the fleet's ports (--base-port) below --listen-base-port"
        )
    isolation = namespace_note() if opts.in_namespace else "none: the host's own network and processes"
    exit_on_sigterm()
    become_subreaper()
    python = opts.python
    ps = portscope_command(python, opts.portscope)
    layout = Layout.from_options(opts)
    with tempfile.TemporaryDirectory(prefix="portscope-bench-watch-") as tmp:
        rev = None
        if opts.rev:
            rev = first_line(
                ["git", "-C", str(ROOT), "rev-parse", "--verify", "--short", f"{opts.rev}^{{commit}}"]
            )
            if not re.fullmatch(r"[0-9a-f]{4,40}", rev):
                raise BenchError(f"--rev {opts.rev}: not a commit ({rev})")
        env, src = measured_env(Path(tmp), python, opts.live_src, rev)
        work = Path(tmp) / "work"
        work.mkdir()
        started = utc_now()
        machine = machine_info(python, env, src)
        if rev:  # the working tree's state says nothing about what was measured then
            machine["portscope"] = machine["portscope"].split(" @ ")[0] + f" @ {rev}"
            machine["src_measured"] = f"commit {rev} exactly (`git archive`, not the working tree)"
        report: dict[str, Any] = {
            "started": started.strftime("%Y-%m-%d %H:%M:%S UTC"),
            "command": shlex.join(
                [sys.executable, *(("--isolate" if a == "--in-namespace" else a) for a in sys.argv)]
            ),
            "isolation": isolation,
            "machine": {
                **machine,
                "ss": first_line(["ss", "-V"]),
                "ip_local_port_range": " ".join(
                    Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
                ),
                "db_fs": first_line(["stat", "-f", "-c", "%T", str(work)]),
            },
            "layout": asdict(layout),
            "options": dict(vars(opts)),
            "portscope_command": ps,
            "fd_budget": fd_budget(),
        }
        sizes = [run_size(opts, sockets, layout, python, ps, env, work) for sockets in opts.sizes]
        # With --rev the snapshot is a commit, so edits to the working tree meanwhile do not matter.
        report["src_edited_during_run"] = (
            not rev and src_digest(ROOT / "src" / "portscope") != report["machine"]["src_digest"]
        )
        text = render(report, sizes)
        raw = dict(
            report,
            sizes=[
                dict(
                    s,
                    results={k: result_json(v) for k, v in s["results"].items()},
                    daemon=dict(asdict(s["daemon"]), summary=s["daemon"].summary()),
                )
                for s in sizes
            ],
        )
        if not opts.no_save:
            stem = save_report("watch", started, text, raw)
            for s in sizes:  # the .prof files live in the temporary directory: keep them
                prof = s["profile"].get("file")
                if prof:
                    shutil.copy(prof, stem.parent / f"{stem.name}-{Path(prof).name}")
    print(json.dumps(raw, indent=2, default=str) if opts.json else text, end="" if not opts.json else "\n")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except BenchError as e:
        print(f"watch benchmark: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("interrupted; workers stopped", file=sys.stderr)
        sys.exit(130)
