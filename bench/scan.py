#!/usr/bin/env python3
"""Port-scan benchmark: `portscope scan` against `nmap -sT -T4` and `nmap -sS -T4`, with correctness.

Why: portscope's scan claims to be as fast as nmap on full-range scans and to classify 1000
DROP-filtered ports in at most 1.5× its timeout. Speed without the right answers means nothing, so
every timed portscope run's --json is also counted (open/closed/filtered) and compared with the
ground truth of the target: the kernel's listeners for 127.0.0.1, and the test bed's `truth`
(tests/bed/bed.py: a network namespace behind a veth pair with real daemons and nftables
DROP/REJECT rules) for its address. nmap is only run and timed; its port results are not read.

Scenarios (one run covers all three, in the same host state):
  loopback  all 65535 TCP ports of 127.0.0.1
  bed       all 65535 TCP ports of the bed host (IPv4), ~10 dropped/rejected ports, 1000 DROPped
  filtered  the bed's 1000 DROPped ports alone; portscope with --timeout 1 and with its adaptive
            default, each row's best time divided by the timeout it used

Only 127.0.0.0/8 and the bed's namespace are scanned. Run as root (nmap -sS, the bed's namespace):
    /work/main/.venv/bin/python bench/scan.py [--scenarios loopback,bed,filtered] [--repeats 5]
The markdown report goes to stdout and bench/results/scan-<timestamp>.md, raw numbers to the .json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
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
    portscope_command,
    progress,
    result_json,
    save_report,
    src_digest,
    time_tools,
    utc_now,
    warm_up,
)

ALL_PORTS = "1-65535"
NMAP_ST = "nmap -sT -T4"
NMAP_SS = "nmap -sS -T4"
FILTERED_TARGET = 1.5  # "1000 filtered ports classified in at most 1.5× the timeout used"
EXAMPLES = 12  # mismatching ports listed per run in the .json (all are counted)

# Expected (status, reason) of one TCP port.
Truth = dict[int, tuple[str, str]]


# ---------------------------------------------------------------------------------------------
# Ground truth.
# ---------------------------------------------------------------------------------------------


def loopback_listeners() -> set[int]:
    """TCP ports a connect to 127.0.0.1 reaches, from `ss -Htln` (the kernel, not portscope).

    A listener takes 127.0.0.1 when bound to it, to 0.0.0.0, to `*` (an IPv6 wildcard that also
    takes IPv4), or to ::ffff:127.0.0.1; one bound to a device other than lo (`addr%eth0`) does not.
    """
    out = subprocess.run(["ss", "-Htln"], check=True, capture_output=True, text=True).stdout
    ports: set[int] = set()
    for line in out.splitlines():
        fields = line.split()
        if len(fields) < 4:
            continue
        addr, _, port = fields[3].rpartition(":")
        addr, _, dev = addr.partition("%")
        if dev not in ("", "lo"):
            continue
        if addr in ("127.0.0.1", "0.0.0.0", "*", "[::ffff:127.0.0.1]", "[::ffff:0.0.0.0]"):
            ports.add(int(port))
    return ports


def loopback_truth(ports: range) -> Truth:
    """Every port of 127.0.0.1: open where something listens, refused (RST) elsewhere; no firewall."""
    listening = loopback_listeners()
    return {p: ("open", "syn-ack") if p in listening else ("closed", "conn-refused") for p in ports}


def bed_truth(bed: Any, ports: range) -> Truth:
    """The bed's own answer key for TCP; ports it does not name are closed, or DROPped in its range."""
    key: dict[tuple[str, int], tuple[str, str]] = bed.truth
    filtered = bed.filtered_range
    out: Truth = {}
    for p in ports:
        default = ("filtered", "no-response") if p in filtered else ("closed", "conn-refused")
        out[p] = tuple(key.get(("tcp", p), default))  # type: ignore[assignment]
    return out


def tally(truth: Truth) -> dict[str, int]:
    """Ports per status, in the order of the report's columns."""
    return dict(Counter(status for status, _ in truth.values()).most_common())


# ---------------------------------------------------------------------------------------------
# Checking portscope's --json against the truth, once per timed run.
# ---------------------------------------------------------------------------------------------


@dataclass
class Checker:
    """Builds the digest of one run's --json: status counts and every disagreement with the truth.

    `truth_now` is asked again after each run: on a shared host listeners on 127.0.0.1 come and go
    (other people's tests), so a port whose truth changed between the start of the scenario and
    the end of the run is "in flux" and not counted against portscope.
    """

    ports: range
    truth_at_start: Truth
    truth_now: Callable[[], Truth] | None = None
    flux_seen: set[int] = field(default_factory=set)

    def __call__(self, stdout: str) -> dict[str, Any]:
        after = self.truth_now() if self.truth_now else self.truth_at_start
        flux = {p for p in self.ports if after[p][0] != self.truth_at_start[p][0]}
        self.flux_seen |= flux
        try:
            records = json.loads(stdout)
        except ValueError as e:
            return {"error": f"--json output is not JSON: {e}"}
        counts: Counter[str] = Counter()
        seen: Counter[int] = Counter()
        wrong: list[str] = []
        wrong_reason: list[str] = []
        n_wrong = n_reason = 0
        for r in records:
            port = int(r["port"])
            seen[port] += 1
            counts[r["status"]] += 1
            want = self.truth_at_start.get(port)
            if want is None or port in flux:
                continue
            if r["status"] != want[0]:
                n_wrong += 1
                if len(wrong) < EXAMPLES:
                    wrong.append(f"{port}: {r['status']}/{r['reason']}, expected {want[0]}/{want[1]}")
            elif r["reason"] != want[1]:
                n_reason += 1
                if len(wrong_reason) < EXAMPLES:
                    wrong_reason.append(f"{port}: {r['status']}/{r['reason']}, expected {want[0]}/{want[1]}")
        missing = [p for p in self.ports if p not in seen]
        return {
            "records": len(records),
            "counts": dict(counts.most_common()),
            "status_mismatches": n_wrong,
            "status_examples": wrong,
            "reason_mismatches": n_reason,
            "reason_examples": wrong_reason,
            "missing": len(missing),
            "missing_examples": missing[:EXAMPLES],
            "duplicates": sum(1 for n in seen.values() if n > 1),
            "unexpected_ports": sorted(p for p in seen if p not in self.truth_at_start)[:EXAMPLES],
            "in_flux": sorted(flux),
        }


# ---------------------------------------------------------------------------------------------
# Scenarios.
# ---------------------------------------------------------------------------------------------


@dataclass
class Scenario:
    """One target and port set, the commands timed against it and what the answers should be."""

    key: str
    title: str
    target: str
    ports: range
    tools: list[Tool]
    truth: Truth
    truth_source: str
    checkers: dict[str, Checker]
    timeouts: dict[str, tuple[float, str]]  # label -> (timeout used, how we know it)
    notes: list[str] = field(default_factory=list)


def _port_arg(ports: range) -> str:
    return f"{ports.start}-{ports.stop - 1}"


def build_scenario(
    key: str,
    title: str,
    target: str,
    ports: range,
    ps: list[str],
    syn: bool,
    truth: Truth,
    truth_source: str,
    truth_now: Callable[[], Truth] | None,
    ps_variants: list[tuple[str, list[str], float | None]],
    adaptive_timeout: float,
) -> Scenario:
    """The rows of one scenario: portscope variants (each checked against the truth), then nmap.

    ps_variants: (label suffix, extra args, fixed timeout or None for the adaptive default).
    """
    spec = _port_arg(ports)
    tools: list[Tool] = []
    checkers: dict[str, Checker] = {}
    timeouts: dict[str, tuple[float, str]] = {}
    modes = [("-sT", "")] + ([("-sS", "-sS")] if syn else [])
    for _mode, flag in modes:
        for suffix, extra, timeout in ps_variants:
            argv = [*ps, "scan", target, "-p", spec, *([flag] if flag else []), *extra, "--json"]
            label = " ".join(["portscope scan", *([flag] if flag else []), *([suffix] if suffix else [])])
            checker = Checker(ports, truth, truth_now)
            checkers[label] = checker
            tools.append(Tool(label, argv, ok_rcs=(0, 1), digest=checker))
            if timeout is not None:
                timeouts[label] = (timeout, "--timeout")
            elif key == "filtered":
                timeouts[label] = (
                    adaptive_timeout,
                    "adaptive: no port ever answers, so it stays at its initial value "
                    "(portscope.net.timing.INITIAL_TIMEOUT of the measured source)",
                )
    for label, scan_type in ((NMAP_ST, "-sT"), (NMAP_SS, "-sS")):
        argv = ["nmap", scan_type, "-T4", "-p", spec, "-n", "-Pn", target, "-oN", "/dev/null"]
        tools.append(Tool(label, argv))
    return Scenario(key, title, target, ports, tools, truth, truth_source, checkers, timeouts)


def has_syn_mode(ps: list[str], env: dict[str, str]) -> bool:
    """Does the measured portscope offer `scan -sS`? It is being added while this benchmark is written."""
    p = subprocess.run([*ps, "scan", "--help"], capture_output=True, text=True, env=env, timeout=30)
    return any(tok.strip("[],") == "-sS" for tok in p.stdout.split())


def timing_constants(python: str, env: dict[str, str]) -> dict[str, float]:
    """portscope's adaptive-timeout bounds, read from the measured source rather than assumed."""
    code = (
        "import json; from portscope.net import timing as t; "
        "print(json.dumps({k: getattr(t, k, None) for k in ('INITIAL_TIMEOUT', 'MIN_TIMEOUT', 'MAX_TIMEOUT')}))"
    )
    out = subprocess.run([python, "-c", code], capture_output=True, text=True, env=env, timeout=30)
    try:
        return {k: float(v) for k, v in json.loads(out.stdout).items() if v is not None}
    except ValueError:
        return {}


@contextlib.contextmanager
def test_bed() -> Iterator[tuple[Any, float]]:
    """Bring up tests/bed/bed.py's TestBed (not ours to edit); yields it and its set-up seconds."""
    sys.path.insert(0, str(ROOT))
    try:
        from tests.bed.bed import TestBed  # type: ignore[import-not-found,import-untyped,unused-ignore]
    except Exception as e:
        raise BenchError(f"cannot import tests.bed.bed.TestBed: {type(e).__name__}: {e}") from e
    t0 = time.perf_counter()
    try:
        bed = TestBed()
        entered = bed.__enter__()
    except Exception as e:
        raise BenchError(f"TestBed() failed to start: {type(e).__name__}: {e}") from e
    bed_obj = entered if entered is not None else bed
    try:
        yield bed_obj, time.perf_counter() - t0
    finally:
        bed.__exit__(None, None, None)


def describe_bed(bed: Any) -> str:
    """One line on the bed: its addresses and what its truth says is open, rejected and dropped."""
    truth: dict[tuple[str, int], tuple[str, str]] = bed.truth
    tcp = sorted((p, v) for (proto, p), v in truth.items() if proto == "tcp")
    opened = [str(p) for p, (s, _) in tcp if s == "open"]
    other = [f"{p} {s}/{r}" for p, (s, r) in tcp if s != "open" and p not in bed.filtered_range]
    fr = bed.filtered_range
    return (
        f"namespace `{getattr(bed, 'name', '?')}`, IPv4 {bed.addr4}, IPv6 {getattr(bed, 'addr6', '?')}; "
        f"truth names {len(tcp)} TCP ports: open {', '.join(opened) or 'none'}; "
        f"{'; '.join(other) or 'no other'}; DROP range {fr.start}-{fr.stop - 1}"
    )


# ---------------------------------------------------------------------------------------------
# Report.
# ---------------------------------------------------------------------------------------------


def _counts_cell(digests: list[dict[str, Any]]) -> str:
    if not digests:
        return "–"
    if any("error" in d for d in digests):
        return "**" + str(next(d["error"] for d in digests if "error" in d)) + "**"
    shapes = Counter(json.dumps(d["counts"], sort_keys=True) for d in digests)
    cells = []
    for shape, n in shapes.most_common():
        c = json.loads(shape)
        main = f"{c.get('open', 0)} / {c.get('closed', 0)} / {c.get('filtered', 0)}"
        rest = {k: v for k, v in c.items() if k not in ("open", "closed", "filtered")}
        if rest:
            main += " (+ " + ", ".join(f"{v} {k}" for k, v in rest.items()) + ")"
        cells.append(main + (f" ×{n}" if len(shapes) > 1 else ""))
    return ("**varies:** " if len(shapes) > 1 else "") + "; ".join(cells)


def _check_cell(digests: list[dict[str, Any]]) -> str:
    if not digests or any("error" in d for d in digests):
        return "–"
    bad = [d for d in digests if d["status_mismatches"] or d["missing"] or d["duplicates"]]
    reason = [d for d in digests if d["reason_mismatches"]]
    if not bad:
        cell = f"ok ({len(digests)}/{len(digests)} runs)"
    else:
        worst = max(d["status_mismatches"] + d["missing"] + d["duplicates"] for d in bad)
        cell = f"**wrong in {len(bad)}/{len(digests)} runs** (up to {worst} ports)"
    if reason:
        cell += (
            f"; reason differs in {len(reason)} runs (up to {max(d['reason_mismatches'] for d in reason)})"
        )
    return cell


def scenario_table(sc: Scenario, results: dict[str, Result]) -> list[str]:
    """Best/median, ratios to both nmap modes, best ÷ timeout, peak RSS, counts and the check."""
    nst, nss = results.get(NMAP_ST), results.get(NMAP_SS)
    out = [
        "| tool | best s | median s | runs | ÷ nmap -sT | ÷ nmap -sS | best ÷ timeout | max RSS MiB "
        "| open / closed / filtered | vs truth |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in results.values():
        is_ps = r.label.startswith("portscope")

        def ratio(base: Result | None, r: Result = r, is_ps: bool = is_ps) -> str:
            if not is_ps or base is None or not base.best or r.best is None:
                return "–"
            return f"{r.best / base.best:.2f}×"

        tmo = sc.timeouts.get(r.label)
        per_tmo = "–"
        if tmo and r.best is not None:
            per_tmo = f"{r.best / tmo[0]:.2f} (of {tmo[0]:g} s)"
        digests = [run.digest for run in r.runs if run.digest is not None]
        label = f"`{r.label}`"
        if r.failed:
            label += " **failed** (" + r.failed.replace("|", "\\|") + ")"
        out.append(
            f"| {label} | {fmt(r.best)} | {fmt(r.median)} | {len(r.runs)} | {ratio(nst)} | {ratio(nss)} | "
            f"{per_tmo} | {fmt(r.maxrss_mib, 1)} | {_counts_cell(digests) if is_ps else '–'} | "
            f"{_check_cell(digests) if is_ps else 'not read (timing only)'} |"
        )
    t = tally(sc.truth)
    out.append(
        f"| ground truth ({sc.truth_source}) | | | | | | | | "
        f"{t.get('open', 0)} / {t.get('closed', 0)} / {t.get('filtered', 0)}"
        + (
            " (+ "
            + ", ".join(f"{v} {k}" for k, v in t.items() if k not in ("open", "closed", "filtered"))
            + ")"
            if set(t) - {"open", "closed", "filtered"}
            else ""
        )
        + " | |"
    )
    return out


def findings(sc: Scenario, results: dict[str, Result]) -> list[str]:
    """Everything wrong or missed in this scenario, stated precisely: mismatches, failures, targets."""
    out: list[str] = []
    for r in results.values():
        if r.failed:
            out.append(f"`{r.label}` failed: {r.failed}")
        digests = [run.digest for run in r.runs if run.digest is not None]
        for i, d in enumerate(digests, 1):
            if "error" in d:
                out.append(f"`{r.label}` run {i}: {d['error']}")
                continue
            if d["status_mismatches"]:
                out.append(
                    f"`{r.label}` run {i}: {d['status_mismatches']} ports with the wrong status, e.g. "
                    + "; ".join(d["status_examples"][:6])
                )
            if d["reason_mismatches"]:
                out.append(
                    f"`{r.label}` run {i}: {d['reason_mismatches']} ports with the right status but "
                    "another reason, e.g. " + "; ".join(d["reason_examples"][:6])
                )
            if d["missing"]:
                out.append(
                    f"`{r.label}` run {i}: {d['missing']} ports missing from --json, e.g. {d['missing_examples']}"
                )
            if d["duplicates"]:
                out.append(f"`{r.label}` run {i}: {d['duplicates']} ports reported more than once")
            if d["unexpected_ports"]:
                out.append(f"`{r.label}` run {i}: ports outside the range: {d['unexpected_ports']}")
    for label, (tmo, _how) in sc.timeouts.items():
        timed = results.get(label)
        if timed is not None and timed.best is not None and timed.best > FILTERED_TARGET * tmo:
            out.append(
                f"`{label}`: {timed.best:.2f} s for {len(sc.ports)} filtered ports is {timed.best / tmo:.2f}× its "
                f"{tmo:g} s timeout, over the {FILTERED_TARGET:g}× target"
            )
    flux = sorted(set().union(*(c.flux_seen for c in sc.checkers.values())))
    if flux:
        out.append(
            f"(not a finding) listeners on {sc.target} changed during the scenario, not checked: ports {flux[:20]}"
        )
    return out


def render(
    report: dict[str, Any], scenarios: list[tuple[Scenario, dict[str, Result], dict[str, Any]]]
) -> str:
    """The markdown report: where and how, then one table per scenario, then the findings."""
    m = report["machine"]
    o = report["options"]
    tc = report["timing_constants"]
    lines = [
        f"# portscope scan benchmark ({report['started']})",
        "",
        f"Command: `{report['command']}`",
        "",
        f"- Machine: {m['cpu']}, {m['cores']} cores ({m['cores_usable']} usable), {m['memory']} RAM, "
        f"Linux {m['kernel']}, {m['distro']} (debian_version {m['debian_version']})",
        f"- Python {m['python']}; portscope {m['portscope']}; measured {m['src_measured']}, "
        f"sha256 of its files: {m['src_digest']}",
        *(
            ["- src/ was edited while this ran; the figures are for the snapshot named above."]
            if report.get("src_edited_during_run")
            else []
        ),
        f"- {m['nmap']}",
        f"- portscope `scan -sS`: {report['syn_note']}",
        "- portscope forks one scan worker per usable core (at most 4) for scans of more than 4096 probes, "
        "so on this machine it uses the same cores nmap has; nmap is one process.",
        f"- portscope's adaptive timeout (from the measured source): initial {tc.get('INITIAL_TIMEOUT', '?')} s, "
        f"clamped to {tc.get('MIN_TIMEOUT', '?')}–{tc.get('MAX_TIMEOUT', '?')} s per host from measured round trips.",
        f"- Timing: wall clock from exec to exit (each command forked by /bin/sh and parked, so fork cost is "
        f"outside the timing), NO_COLOR=1, not a TTY; nmap's stdout and -oN go to /dev/null; portscope's "
        f"--json goes to a temporary file (instead of /dev/null) so every timed run is checked against the truth. "
        f"Best of {o['repeats']} (median shown), commands slower than {o['slow_threshold']:g} s: "
        f"{o['slow_repeats']} runs; rounds are interleaved (each tool once per round). Bytecode caching on, "
        "one untimed warm-up of each tool. Ratios divide best by best. Max RSS: ru_maxrss from wait4, i.e. the largest "
        "single process of the command's tree (portscope's parent or one of the workers it reaped), not their sum.",
        "- Status counts and the check are portscope's own --json of every timed run; nmap's results are not read.",
    ]
    if report.get("bed"):
        lines.append(f"- Test bed: {report['bed']} (set up in {report['bed_setup_s']:.1f} s)")
    if report.get("bed_error"):
        lines.append(f"- **Test bed not available: {report['bed_error']}**")
    all_findings: list[str] = []
    for sc, results, meta in scenarios:
        lines += [
            "",
            f"## {sc.title}",
            "",
            f"Target {sc.target}, ports {_port_arg(sc.ports)} ({len(sc.ports):,}); load average "
            f"{meta['load_before']} before, {meta['load_after']} after; {meta['seconds']:.0f} s for the scenario.",
            *(["", *sc.notes] if sc.notes else []),
            "",
            *scenario_table(sc, results),
            "",
            "Commands:",
            "",
            *(f"- `{shlex.join(r.argv)}`" for r in results.values()),
        ]
        f = findings(sc, results)
        all_findings += [f"{sc.key}: {x}" for x in f]
    lines += ["", "## Findings", ""]
    lines += [f"- {x}" for x in all_findings] or ["- none: every portscope run matched the ground truth."]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# Main.
# ---------------------------------------------------------------------------------------------

SCENARIOS = ("loopback", "bed", "filtered")


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument(
        "--scenarios",
        default=",".join(SCENARIOS),
        help="comma-separated subset of loopback,bed,filtered (default: all)",
    )
    p.add_argument("--repeats", type=int, default=5, help="runs per tool (default 5)")
    p.add_argument("--slow-repeats", type=int, default=2, help="runs for tools slower than --slow-threshold")
    p.add_argument("--slow-threshold", type=float, default=10.0, help="seconds (default 10)")
    p.add_argument(
        "--timeout", type=float, default=900.0, help="kill a timed command after this many seconds"
    )
    p.add_argument(
        "--filtered-timeout",
        type=float,
        default=1.0,
        help="portscope --timeout for the filtered scenario (default 1)",
    )
    p.add_argument("--python", default=default_python(), help="interpreter portscope runs with")
    p.add_argument(
        "--portscope", default=None, help="command to run portscope (default: .venv/bin/portscope)"
    )
    p.add_argument("--live-src", action="store_true", help="run portscope from the live src/, not a snapshot")
    p.add_argument("--json", action="store_true", help="print the raw numbers as JSON instead of markdown")
    p.add_argument("--no-save", action="store_true", help="do not write bench/results/scan-*.{md,json}")
    opts = p.parse_args(argv)
    opts.scenarios = [s.strip() for s in opts.scenarios.split(",") if s.strip()]
    if bad := [s for s in opts.scenarios if s not in SCENARIOS]:
        p.error(f"unknown scenario(s) {bad}: choose from {', '.join(SCENARIOS)}")
    if opts.repeats < 1 or opts.slow_repeats < 1:
        p.error("--repeats and --slow-repeats must be ≥ 1")
    return opts


def _load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def run_scenario(
    sc: Scenario, env: dict[str, str], opts: argparse.Namespace
) -> tuple[Scenario, dict[str, Result], dict[str, Any]]:
    """Time every row of one scenario (rounds interleaved), with load before and after for context."""
    progress(f"{sc.key}: {sc.title}")
    meta: dict[str, Any] = {"load_before": _load()}
    t0 = time.perf_counter()
    results = time_tools(sc.tools, env, opts)
    meta.update(load_after=_load(), seconds=time.perf_counter() - t0)
    return sc, results, meta


def main(argv: list[str]) -> int:
    opts = parse_args(argv)
    if os.geteuid() != 0:
        print("run as root: nmap -sS and the test bed's network namespace need it", file=sys.stderr)
        return 2
    if not first_line(["nmap", "--version"]).startswith("Nmap"):
        print("nmap is missing: apt-get install -y nmap", file=sys.stderr)
        return 2
    exit_on_sigterm()
    become_subreaper()
    python = opts.python
    ps = portscope_command(python, opts.portscope)
    with tempfile.TemporaryDirectory(prefix="portscope-bench-") as tmp:
        env, src = measured_env(Path(tmp), python, opts.live_src)
        return run_benchmark(opts, python, ps, env, src)


def run_benchmark(
    opts: argparse.Namespace, python: str, ps: list[str], env: dict[str, str], src: Path
) -> int:
    """Loopback first (no bed needed), then bring the bed up once for the bed and filtered scenarios."""
    started = utc_now()
    syn = has_syn_mode(ps, env)
    tc = timing_constants(python, env)
    machine = {
        **machine_info(python, env, src),
        "nmap": first_line(["nmap", "--version"]),
        "debian_version": Path("/etc/debian_version").read_text().strip(),
    }
    report: dict[str, Any] = {
        "started": started.strftime("%Y-%m-%d %H:%M:%S UTC"),
        "command": shlex.join([sys.executable, *sys.argv]),
        "machine": machine,
        "options": dict(vars(opts)),
        "portscope_command": ps,
        "timing_constants": tc,
        "syn_note": "row included (`scan --help` lists -sS)"
        if syn
        else "row skipped: `portscope scan --help` of the measured source has no -sS yet",
    }
    warm = [
        Tool("warm", [*ps, "scan", "127.0.0.1", "-p", "1", "--json"], ok_rcs=(0, 1)),
        Tool("warm-nmap", ["nmap", "-sT", "-p", "1", "-n", "-Pn", "127.0.0.1", "-oN", "/dev/null"]),
    ]
    if syn:
        warm.append(Tool("warm-syn", [*ps, "scan", "127.0.0.1", "-p", "1", "-sS", "--json"], ok_rcs=(0, 1)))
    warm_up(warm, env, opts.timeout)
    done: list[tuple[Scenario, dict[str, Result], dict[str, Any]]] = []
    adaptive = tc.get("INITIAL_TIMEOUT", 1.0)
    if "loopback" in opts.scenarios:
        ports = range(1, 65536)
        truth = loopback_truth(ports)
        sc = build_scenario(
            "loopback",
            "1. All 65,535 TCP ports of 127.0.0.1",
            "127.0.0.1",
            ports,
            ps,
            syn,
            truth,
            "`ss -Htln` at the start; re-read after every run",
            lambda: loopback_truth(range(1, 65536)),
            [("", [], None)],
            adaptive,
        )
        done.append(run_scenario(sc, env, opts))
    if {"bed", "filtered"} & set(opts.scenarios):
        try:
            with test_bed() as (bed, setup_s):
                report["bed"] = describe_bed(bed)
                report["bed_setup_s"] = setup_s
                progress(f"test bed up in {setup_s:.1f} s: {report['bed']}")
                done += bed_scenarios(bed, opts, ps, syn, env, adaptive)
        except BenchError as e:
            report["bed_error"] = str(e)
            progress(f"test bed: {e}")
    live = src_digest(ROOT / "src" / "portscope")
    report["src_edited_during_run"] = live != machine["src_digest"]
    text = render(report, done)
    raw = dict(
        report,
        scenarios=[
            {
                "key": sc.key,
                "title": sc.title,
                "target": sc.target,
                "ports": _port_arg(sc.ports),
                "truth_counts": tally(sc.truth),
                "timeouts": sc.timeouts,
                **meta,
                "results": {k: result_json(v) for k, v in results.items()},
                "findings": findings(sc, results),
            }
            for sc, results, meta in done
        ],
    )
    if not opts.no_save:
        save_report("scan", started, text, raw)
    print(json.dumps(raw, indent=2, default=str) if opts.json else text, end="" if not opts.json else "\n")
    return 0


def bed_scenarios(
    bed: Any, opts: argparse.Namespace, ps: list[str], syn: bool, env: dict[str, str], adaptive: float
) -> list[tuple[Scenario, dict[str, Result], dict[str, Any]]]:
    """Scenarios 2 and 3 against the bed host's IPv4 address, with the bed's truth."""
    out = []
    addr = str(bed.addr4)
    if "bed" in opts.scenarios:
        ports = range(1, 65536)
        sc = build_scenario(
            "bed",
            "2. All 65,535 TCP ports of the test bed host",
            addr,
            ports,
            ps,
            syn,
            bed_truth(bed, ports),
            "the bed's `truth`; unnamed ports closed, its DROP range filtered",
            None,
            [("", [], None)],
            adaptive,
        )
        out.append(run_scenario(sc, env, opts))
    if "filtered" in opts.scenarios:
        fr = bed.filtered_range
        ports = range(fr.start, fr.stop)
        t = opts.filtered_timeout
        sc = build_scenario(
            "filtered",
            f"3. The bed's {len(ports):,} DROP-filtered ports alone",
            addr,
            ports,
            ps,
            syn,
            bed_truth(bed, ports),
            "the bed's `truth` / filtered_range",
            None,
            [(f"--timeout {t:g}", ["--timeout", f"{t:g}"], t), ("(adaptive timeout)", [], None)],
            adaptive,
        )
        sc.notes.append(
            f"Target: {len(ports):,} filtered ports classified in at most {FILTERED_TARGET:g}× the timeout used "
            "(column best ÷ timeout; whole command, start-up included). "
            + "; ".join(f"`{k}`: {how}" for k, (_, how) in sc.timeouts.items() if how != "--timeout")
        )
        out.append(run_scenario(sc, env, opts))
    return out


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except BenchError as e:
        print(f"scan benchmark: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
