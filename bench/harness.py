"""Timing harness shared by the benchmarks in bench/ (inventory.py, scan.py, probe.py, watch.py).

Why one module: every benchmark must time commands the same way (forked by /bin/sh, reaped as a
grandchild for an honest ru_maxrss, bytecode caching on, portscope run from a snapshot of src/),
describe the machine the same way and print the same tables, or their numbers stop being
comparable. The scripts import it as `harness` (bench/ is their sys.path[0]).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import datetime as dt
import hashlib
import json
import os
import platform
import select
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
PR_SET_CHILD_SUBREAPER = 36


class BenchError(Exception):
    """A set-up step failed; the message says which and why."""


@dataclass
class Run:
    """One execution of a command: wall seconds, peak RSS of that child (KiB), exit code, CPU seconds."""

    seconds: float
    maxrss_kib: int
    rc: int
    stderr_tail: str = ""
    stdout: str = ""
    digest: Any = None  # what Tool.digest made of stdout (stdout itself is then dropped)
    # user + sys from wait4: the command's own CPU plus that of the children it reaped (a portscope
    # that forks helpers for its /proc fd pass is charged for them), none of the launching shell's.
    cpu_s: float = 0.0


# The timed command is started by a small shell that forks it and exits, leaving it parked on a
# read from our pipe; as child subreaper we inherit it, release it, and wait4 it ourselves.
_LAUNCH = 'out=$1; shift; exec 3<&0; ( read _ <&3 || exit 111; exec "$@" 3<&- </dev/null >"$out" ) & echo $!'


def become_subreaper() -> None:
    """Adopt orphaned descendants (PR_SET_CHILD_SUBREAPER), so run_once can wait4 a grandchild."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise BenchError(f"prctl(PR_SET_CHILD_SUBREAPER): {os.strerror(ctypes.get_errno())}")


def run_once(argv: list[str], env: dict[str, str], timeout: float, capture: bool = False) -> Run:
    """Run argv (stdin and stdout /dev/null), timing release to exit, with its own peak RSS from wait4.

    Why not Popen + wait4 directly: the kernel folds the pre-exec address space into the child's
    ru_maxrss, and a child forked (or vforked) from this ~20 MiB Python inherits that, so `ss` would
    "peak" at 20 MiB. Forking from /bin/sh lowers that floor to about 1 MiB (measured with
    /bin/true), so ru_maxrss is the tool's own peak. The clock starts when the parked process is
    released, so fork costs are outside the timing for every tool alike; exec, start-up and exit
    are inside. A pidfd lets a hung command be killed without any risk of hitting a reused pid.
    """
    with tempfile.TemporaryFile() as err, tempfile.NamedTemporaryFile() as out:
        go_r, go_w = os.pipe()
        try:
            sh = subprocess.Popen(
                ["/bin/sh", "-c", _LAUNCH, "sh", out.name if capture else os.devnull, *argv],
                stdin=go_r,
                stdout=subprocess.PIPE,
                stderr=err,
                env=env,
            )
            os.close(go_r)
            go_r = -1
            assert sh.stdout is not None
            pid = int(sh.stdout.readline())
            sh.stdout.close()
            if sh.wait() != 0:
                raise BenchError(f"launcher for {shlex.join(argv)} failed (rc={sh.returncode})")
            pidfd = os.pidfd_open(pid)
        except BaseException:
            for fd in (go_r, go_w):
                if fd >= 0:
                    os.close(fd)
            raise
        try:
            t0 = time.perf_counter()
            os.write(go_w, b"go\n")
            os.close(go_w)
            if not select.select([pidfd], [], [], timeout)[0]:
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            _, status, usage = os.wait4(pid, 0)
            seconds = time.perf_counter() - t0
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.wait4(pid, 0)
            raise
        finally:
            os.close(pidfd)
        rc = os.waitstatus_to_exitcode(status)
        err.seek(0)
        tail = err.read().decode(errors="replace").strip().splitlines()
        out.seek(0)
        # Whole stderr (a traceback is how a broken portscope shows), tail kept short for the report.
        text = " / ".join(line.strip() for line in tail[:1] + tail[-3:]) if tail else ""
        return Run(
            seconds,
            usage.ru_maxrss,
            rc,
            text,
            out.read().decode() if capture else "",
            cpu_s=usage.ru_utime + usage.ru_stime,
        )


@dataclass
class Tool:
    """A command to time, what it is compared with, and whether it counts as a slow baseline."""

    label: str
    argv: list[str]
    baseline: str | None = None  # label of the Tool whose best time is the ratio's denominator
    slow: bool = False  # netstat/lsof: skipped by --skip-slow
    ok_rcs: tuple[int, ...] = (0,)
    # Checks the output of every timed run (e.g. counts a scan's results): stdout then goes to a
    # file instead of /dev/null, and only the digest is kept, so 5 runs of 10 MB JSON cost no memory.
    digest: Callable[[str], Any] | None = None
    # Called before every run, outside the timing: e.g. delete a database so each run is a first run.
    prepare: Callable[[], None] | None = None


@dataclass
class Result:
    """All runs of one Tool at one size, summarised for the report."""

    label: str
    argv: list[str]
    runs: list[Run] = field(default_factory=list)
    baseline: str | None = None
    failed: str = ""
    note: str = ""

    @property
    def times(self) -> list[float]:
        return [r.seconds for r in self.runs]

    @property
    def best(self) -> float | None:
        return min(self.times) if self.runs and not self.failed else None

    @property
    def median(self) -> float | None:
        return statistics.median(self.times) if self.runs and not self.failed else None

    @property
    def maxrss_mib(self) -> float | None:
        return max(r.maxrss_kib for r in self.runs) / 1024 if self.runs else None

    @property
    def best_cpu(self) -> float | None:
        """Least user + sys CPU of the runs (not necessarily the run with the best wall time)."""
        return min(r.cpu_s for r in self.runs) if self.runs and not self.failed else None

    @property
    def median_cpu(self) -> float | None:
        return statistics.median(r.cpu_s for r in self.runs) if self.runs and not self.failed else None


def time_tools(tools: list[Tool], env: dict[str, str], opts: argparse.Namespace) -> dict[str, Result]:
    """Best-of-R timing, round-robin so slow drift (page cache, other load) hits every tool alike.

    A tool whose first run took longer than --slow-threshold gets only --slow-repeats runs in
    total; a tool that fails is not repeated and is reported as failed.
    """
    results = {t.label: Result(t.label, t.argv, baseline=t.baseline) for t in tools}
    for rnd in range(opts.repeats):
        for t in tools:
            res = results[t.label]
            if res.failed:
                continue
            if (
                rnd > 0
                and res.runs
                and res.runs[0].seconds > opts.slow_threshold
                and rnd >= opts.slow_repeats
            ):
                continue
            if t.prepare is not None:
                t.prepare()
            run = run_once(t.argv, env, opts.timeout, capture=t.digest is not None)
            if t.digest is not None:
                run.digest = t.digest(run.stdout)
                run.stdout = ""
            res.runs.append(run)
            if run.rc not in t.ok_rcs or "Traceback (most recent call last)" in run.stderr_tail:
                res.failed = f"rc={run.rc}: {run.stderr_tail[-300:]}"
            progress(f"    {t.label}: {run.seconds:.3f} s, {run.maxrss_kib / 1024:.1f} MiB, rc={run.rc}")
    return results


def progress(msg: str) -> None:
    """Progress goes to stderr so stdout stays the clean report."""
    print(msg, file=sys.stderr, flush=True)


def first_line(argv: list[str], env: dict[str, str] | None = None) -> str:
    """First line a command prints (stdout, else stderr), "?" if it cannot run: for version strings."""
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=10, env=env)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    lines = (p.stdout + p.stderr).strip().splitlines()
    return lines[0].strip() if lines else "?"


def machine_info(python: str, env: dict[str, str], src: Path) -> dict[str, str]:
    """What the numbers depend on: CPU, cores, kernel, distro, interpreter, portscope's source state.

    Each benchmark adds the versions of the tools it compares with.
    """
    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kib = next(
        int(x.split()[1]) for x in Path("/proc/meminfo").read_text().splitlines() if x.startswith("MemTotal")
    )
    distro = "?"
    with contextlib.suppress(OSError):
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                distro = line.split("=", 1)[1].strip('"')
    commit = first_line(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
    dirty = subprocess.run(
        ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "cores_usable": str(len(os.sched_getaffinity(0))),
        "memory": f"{mem_kib / 1024 / 1024:.1f} GiB",
        "kernel": platform.release(),
        "distro": distro,
        "python": first_line([python, "-c", "import sys; print(sys.version.split()[0], sys.executable)"]),
        "portscope": first_line(
            [python, "-c", "import portscope; print(getattr(portscope, '__version__', '?'))"], env
        )
        + f" @ {commit}"
        + (" (tracked files modified: work in progress)" if dirty else ""),
        "src_digest": src_digest(src / "portscope"),
        "src_measured": "a snapshot of src/ taken at start"
        if src != ROOT / "src"
        else "the live src/ (--live-src)",
    }


def src_digest(src: Path) -> str:
    """Fingerprint of the portscope source measured: the tree may hold uncommitted work."""
    h = hashlib.sha256()
    for path in sorted(p for p in src.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        h.update(str(path.relative_to(src)).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:12]


def fmt(x: float | None, digits: int = 3) -> str:
    """A number for a table, "–" where nothing was measured (a failed or skipped tool)."""
    return "–" if x is None else f"{x:.{digits}f}"


def results_table(results: list[Result]) -> list[str]:
    """Markdown table: best/median seconds, ratio to the named baseline's best, peak RSS."""
    by_label = {r.label: r for r in results}
    out = [
        "| tool | best s | median s | runs | ratio | ratio to | max RSS MiB |",
        "|---|---:|---:|---:|---:|---|---:|",
    ]
    for r in results:
        base = by_label.get(r.baseline) if r.baseline else None
        ratio = f"{r.best / base.best:.2f}×" if base and base.best and r.best is not None else "–"
        label = f"`{r.label}`" if not r.label.startswith("psutil") else r.label
        if r.failed:
            reason = r.failed.replace("|", "\\|")
            label += f" **failed** ({reason})"
        if r.note:
            label += f" ({r.note})"
        out.append(
            f"| {label} | {fmt(r.best)} | {fmt(r.median)} | {len(r.runs)} | {ratio} | "
            f"{f'`{r.baseline}`' if r.baseline else ''} | {fmt(r.maxrss_mib, 1)} |"
        )
    return out


def result_json(r: Result) -> dict[str, Any]:
    """A Result for the .json file: every run's numbers plus the summary the table shows."""
    d = asdict(r)
    for run in d["runs"]:
        run.pop("stdout", None)
    d.update(
        best=r.best, median=r.median, maxrss_mib=r.maxrss_mib, best_cpu=r.best_cpu, median_cpu=r.median_cpu
    )
    return d


def bench_env(pycache: str, src: str | None) -> dict[str, str]:
    """Environment for timed commands: plain output, bytecode caching on, the source snapshot first.

    PYTHONDONTWRITEBYTECODE (set in some shells and CI images) would make every portscope run
    compile its modules from source, tens of ms that no pip-installed copy pays; a private
    PYTHONPYCACHEPREFIX keeps the cache out of the source tree. `src` goes first on PYTHONPATH, ahead
    of the editable install's .pth entry, so every run of one benchmark measures the same code.
    """
    env = dict(os.environ, NO_COLOR="1", PYTHONPYCACHEPREFIX=pycache)
    for name in ("FORCE_COLOR", "PYTHONDONTWRITEBYTECODE", "PYTHONPROFILEIMPORTTIME", "PYTHONTRACEMALLOC"):
        env.pop(name, None)
    if src:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p)
    return env


def snapshot_src(dest: Path, rev: str | None = None) -> Path:
    """Copy src/portscope so that edits made while the benchmark runs (minutes) do not mix versions.

    REV: take it from that commit (`git archive`) instead of the working tree, for figures that name
    a commit while someone has uncommitted work in src/.
    """
    if rev is None:
        shutil.copytree(
            ROOT / "src" / "portscope", dest / "portscope", ignore=shutil.ignore_patterns("__pycache__")
        )
        return dest
    dest.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", rev, "src/portscope"], capture_output=True
    )
    if archive.returncode != 0:
        raise BenchError(f"git archive {rev}: {archive.stderr.decode(errors='replace').strip()}")
    subprocess.run(["tar", "-x", "-C", str(dest), "--strip-components=1"], input=archive.stdout, check=True)
    return dest


def portscope_command(python: str, override: str | None) -> list[str]:
    """How to start portscope: --portscope if given, else the venv's entry point, else `python -m`.

    The entry point is what users run, so its start-up (console-script shim) is part of the timing.
    """
    if override:
        return shlex.split(override)
    script = Path(python).parent / "portscope"
    return [str(script)] if script.exists() else [python, "-m", "portscope"]


def default_python() -> str:
    """The project's .venv interpreter if there is one: that is where portscope and psutil live."""
    venv_python = ROOT / ".venv" / "bin" / "python"
    return str(venv_python if venv_python.exists() else sys.executable)


def measured_env(
    tmp: Path, python: str, live_src: bool, rev: str | None = None
) -> tuple[dict[str, str], Path]:
    """Environment and source tree every timed portscope run uses; checks the snapshot is what imports.

    Why check: an editable install or a stray PYTHONPATH could make portscope import the live tree,
    which other people edit while a benchmark runs, and the figures would mix versions silently.
    """
    src = None if live_src else snapshot_src(tmp / "src", rev)
    env = bench_env(str(tmp / "pycache"), str(src) if src else None)
    where = first_line([python, "-c", "import portscope; print(portscope.__file__)"], env)
    if src and not where.startswith(str(src)):
        raise BenchError(f"the source snapshot is not what runs: portscope imports from {where}")
    return env, src or ROOT / "src"


def warm_up(tools: list[Tool], env: dict[str, str], timeout: float) -> None:
    """One untimed run each: fills the bytecode cache (as an installed package has it) and the page cache."""
    for t in tools:
        if t.prepare is not None:
            t.prepare()
        run_once(t.argv, env, timeout)


def utc_now() -> dt.datetime:
    """Start time of a benchmark: names the result files and heads the report."""
    return dt.datetime.now(dt.UTC)


def save_report(kind: str, started: dt.datetime, text: str, raw: dict[str, Any]) -> Path:
    """Write bench/results/<kind>-<UTC time>.md and .json (gitignored); returns the path stem."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = RESULTS / f"{kind}-{started.strftime('%Y%m%dT%H%M%SZ')}"
    stem.with_suffix(".md").write_text(text)
    stem.with_suffix(".json").write_text(json.dumps(raw, indent=2, default=str) + "\n")
    progress(f"wrote {stem}.md and {stem}.json")
    return stem


# Outer namespace: give namespaces created from here a private TCP hash (kernel >= 6.1), then make the
# inner one. Nothing on the host changes: the sysctl is set in a throwaway network namespace.
_ISOLATE = (
    'f=/proc/sys/net/ipv4/tcp_child_ehash_entries; if [ -w "$f" ]; then echo "$1" > "$f"; fi; shift; '
    'exec unshare --net --pid --fork --mount-proc --kill-child "$@"'
)


def reexec_isolated(script: Path, argv: list[str]) -> int:
    """Re-run SCRIPT with ARGV in fresh network + PID namespaces (--isolate); does not return.

    Why: a host where someone else holds sockets skews every tool, because the socket dumps and
    the /proc/*/fd walks cover them too. In its own network namespace with a private TCP hash, and
    its own PID namespace and /proc, every tool sees only the benchmark's sockets and processes.
    As PID 1 of that namespace the controller's exit also takes every worker with it. The script
    gets `--in-namespace` instead of `--isolate`, so it knows not to re-execute again.
    """
    buckets = abs(int(Path("/proc/sys/net/ipv4/tcp_ehash_entries").read_text()))
    inner = [
        sys.executable,
        str(script.resolve()),
        "--in-namespace",
        *(a for a in argv if a != "--isolate"),
    ]
    os.execvp("unshare", ["unshare", "--net", "/bin/sh", "-c", _ISOLATE, "sh", str(buckets), *inner])


def namespace_note() -> str:
    """Describe the isolation for the report, after bringing loopback up (it starts down)."""
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    ehash = int(Path("/proc/sys/net/ipv4/tcp_ehash_entries").read_text())
    return (
        "fresh network and PID namespaces (`--isolate`): the tools see only this benchmark's sockets and "
        + (
            "processes; private TCP hash"
            if ehash > 0
            else "processes; TCP hash shared with the host (kernel < 6.1)"
        )
    )


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def exit_on_sigterm() -> None:
    """Turn SIGTERM/SIGHUP into SystemExit so `finally` and `with` blocks tear down what was set up.

    Why: a benchmark holds workers, sockets or a network namespace; dying on a plain signal would
    leave them behind on a machine other people use.
    """
    signal.signal(signal.SIGTERM, _on_sigterm)
    signal.signal(signal.SIGHUP, _on_sigterm)
