#!/usr/bin/env python3
"""Service-identification benchmark: `portscope probe` beside `nmap -sV` on the network test bed.

Why: the issue asks BENCHMARKS.md for a side-by-side table from one run on the test bed: for each
service what `nmap -sV` identified and what `portscope probe` identified, and the time each took.
portscope must identify every service nmap identifies, at least as specifically, in at most a
quarter of nmap's time. So both are timed in the same run (bench/harness.py, rounds interleaved),
and the last round's answers are put side by side with what the bed says it runs there.

nmap is an external command here, nothing more: its normal output (-oN) is kept verbatim, never
parsed. The report shows, per port, nmap's own line for that port as it printed it (found by its
"PORT/proto " prefix, not split into fields), and commits the whole text to bench/reference/ beside
portscope's raw output of the same round. The verdict column compares portscope's identification
with the bed's ground truth (tests/bed/bed.py `identities`: service names, product, TLS) and nothing
else; whether portscope is at least as specific as nmap is for a reader to see from the two raw
columns. No nmap data file is read.

Ports: the bed's open TCP ports from its `truth` (tests/bed/bed.py), all in one invocation of each
tool, as people use them; the bed's open UDP ports (DNS on 53) as a second, separate pair of rows.
Traffic goes only to the bed's namespace. Run as root (the bed's namespace needs it):
    /work/main/.venv/bin/python bench/probe.py [--repeats 3] [--no-udp]
The markdown report goes to stdout and bench/results/probe-<timestamp>.md, raw numbers to the .json,
and the round shown, verbatim, to bench/reference/: probe-nmap-sV.txt (and -udp.txt), nmap's -oN
text; probe-portscope.json (and -udp.json), portscope's --json; probe-portscope.txt, portscope's
table for the same ports from one untimed run after the timed ones.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
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
    results_table,
    save_report,
    src_digest,
    time_tools,
    utc_now,
    warm_up,
)
from scan import test_bed

TARGET_RATIO = 0.25  # "in at most a quarter of its time"
ISSUE_NMAP_S = 12.5  # the issue's own measurement: nmap -sV, 7 TCP ports of a similar bed

RULE = (
    "A row is **yes** when portscope's answer has, for that port, what the test bed declares runs "
    "there (tests/bed/bed.py `identities`): (1) `identified` or `protocol` is one of the bed's service "
    "names; (2) the product contains the bed's product, case-blind; (3) TLS as the bed speaks it: "
    "implicit (a TLS version, not STARTTLS), starttls (a TLS version after STARTTLS), none (no TLS "
    "version), or not judged. Otherwise **no**, naming what differs. nmap's answers play no part: its "
    "line for each port is shown verbatim, for a reader's eye."
)
REFERENCE = ROOT / "bench" / "reference"
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


# ---------------------------------------------------------------------------------------------
# Reading the outputs for display.
# ---------------------------------------------------------------------------------------------


def nmap_line(text: str, port: int, proto: str) -> str | None:
    """nmap's own line for PORT/PROTO in its normal output, verbatim (not split into fields)."""
    prefix = f"{port}/{proto} "
    return next((line.rstrip() for line in text.splitlines() if line.startswith(prefix)), None)


def portscope_records(text: str) -> tuple[dict[int, dict[str, Any]], str]:
    """portscope's --json by port, and an error message when it is not the expected list."""
    try:
        data = json.loads(text)
    except ValueError as e:
        return {}, f"--json output is not JSON: {e}"
    if not isinstance(data, list):
        return {}, "--json output is not a list"
    out: dict[int, dict[str, Any]] = {}
    for rec in data:
        if isinstance(rec, dict) and isinstance(rec.get("port"), int):
            out[rec["port"]] = rec
    return out, ""


def tls_version(rec: dict[str, Any]) -> str | None:
    tls = rec.get("tls")
    if isinstance(tls, dict) and isinstance(tls.get("version"), str):
        return str(tls["version"]) + (" (STARTTLS)" if tls.get("starttls") else "")
    return None


# ---------------------------------------------------------------------------------------------
# The verdict: portscope against the bed's ground truth.
# ---------------------------------------------------------------------------------------------


def judge(identity: Any, rec: dict[str, Any] | None) -> tuple[str, str]:
    """("yes" | "no", why) for one port, by RULE; `identity` is the bed's Identity for it (or None)."""
    if identity is None:
        return "no", "the bed declares no identity for this port"
    if rec is None:
        return "no", "no record for this port in portscope's --json"
    names = {str(rec.get("identified") or ""), str(rec.get("protocol") or "")} - {"", "unknown"}
    wrong = []
    if not names & set(identity.services):
        wrong.append(
            f"named {'/'.join(sorted(names)) or 'nothing'}, the bed runs {'/'.join(identity.services)}"
        )
    product = str(rec.get("product") or "")
    if identity.product.lower() not in product.lower():
        wrong.append(f"product {product or 'none'}, the bed runs {identity.product}")
    tls = rec.get("tls") if isinstance(rec.get("tls"), dict) else None
    spoken = "none"
    if tls is not None and tls.get("version"):
        spoken = "starttls" if tls.get("starttls") else "implicit"
    if identity.tls is not None and spoken != identity.tls:
        wrong.append(f"TLS {spoken}, the bed speaks {identity.tls}")
    if wrong:
        return "no", "; ".join(wrong)
    return "yes", "service, product" + (
        ", TLS" if identity.tls not in (None, "none") else ""
    ) + " as the bed runs"


# ---------------------------------------------------------------------------------------------
# What is timed.
# ---------------------------------------------------------------------------------------------


@dataclass
class Pair:
    """One protocol's port set and the two commands run on it: portscope's and nmap's."""

    proto: str  # tcp | udp
    ports: list[int]
    portscope: Tool
    nmap: Tool
    nmap_out: Path  # nmap's -oN file (temporary; each run's text is kept by the digest)


def read_and_remove(path: Path) -> Callable[[str], dict[str, str]]:
    """Digest for an nmap run: the -oN file's text, removed so the next run cannot show a stale one."""

    def digest(_stdout: str) -> dict[str, str]:
        try:
            text = path.read_text(errors="replace")
        except OSError as e:
            return {"raw": "", "error": f"no -oN file: {e}"}
        path.unlink()
        return {"raw": text}

    return digest


def keep_stdout(stdout: str) -> dict[str, str]:
    """Digest for a portscope run: its --json as printed (a few kB), parsed only for the report."""
    return {"raw": stdout}


def build_pairs(bed: Any, ps: list[str], work: Path, udp: bool) -> list[Pair]:
    """The bed's open ports from its truth (not hard-coded: daemons are being added), one pair per protocol."""
    truth: dict[tuple[str, int], tuple[str, str]] = bed.truth
    addr = str(bed.addr4)
    pairs = []
    for proto in ("tcp", "udp") if udp else ("tcp",):
        ports = sorted(p for (pr, p), (status, _) in truth.items() if pr == proto and status == "open")
        if not ports:
            continue
        out = work / f"nmap-{proto}.txt"
        spec = ",".join(map(str, ports))
        if proto == "tcp":
            ps_argv = [*ps, "probe", addr, *map(str, ports), "--json"]
            ps_argv += ["--ca-file", str(bed.ca_pem), "--sni", str(bed.cert_hostname)]
            nmap_argv = ["nmap", "-sV", "-T4", "-Pn", "-n", "-p", spec, addr, "-oN", str(out)]
            ps_label, nmap_label = "portscope probe", "nmap -sV -T4"
        else:
            ps_argv = [*ps, "probe", "-u", addr, *map(str, ports), "--json"]
            nmap_argv = ["nmap", "-sV", "-sU", "-T4", "-Pn", "-n", "-p", spec, addr, "-oN", str(out)]
            ps_label, nmap_label = "portscope probe -u", "nmap -sV -sU -T4"
        pairs.append(
            Pair(
                proto,
                ports,
                # exit 1: some port is not what its registry entry expects; still a complete answer
                Tool(ps_label, ps_argv, baseline=nmap_label, ok_rcs=(0, 1), digest=keep_stdout),
                Tool(nmap_label, nmap_argv, digest=read_and_remove(out)),
                out,
            )
        )
    return pairs


# ---------------------------------------------------------------------------------------------
# Report.
# ---------------------------------------------------------------------------------------------


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def md(text: object, limit: int = 120) -> str:
    """Text from a server (via either tool) made safe for one markdown table cell."""
    s = _CONTROL.sub(lambda m: f"\\x{ord(m.group(0)):02x}", str(text))
    if len(s) > limit:
        s = s[: limit - 1] + "…"
    return s.replace("|", "\\|").replace("`", "'") or "–"


@dataclass
class Side:
    """The round shown side by side for one pair: each tool's raw output, portscope's records and
    their verdicts against the bed."""

    round: int  # 1-based; 0 when no round has both
    nmap_raw: str
    ps_raw: str
    ps_recs: dict[int, dict[str, Any]]
    ps_error: str
    verdicts: dict[int, tuple[str, str]]


def side_by_side(pair: Pair, results: dict[str, Result], identities: dict[tuple[str, int], Any]) -> Side:
    """The last round in which both tools ran (the -oN text of that nmap run, portscope's --json of it)."""
    ps_runs = results[pair.portscope.label].runs
    nmap_runs = results[pair.nmap.label].runs
    n = min(len(ps_runs), len(nmap_runs))
    if n == 0:
        return Side(0, "", "", {}, "no round ran both tools", {})
    nmap_raw = str((nmap_runs[n - 1].digest or {}).get("raw", ""))
    ps_raw = str((ps_runs[n - 1].digest or {}).get("raw", ""))
    recs, err = portscope_records(ps_raw)
    verdicts = {p: judge(identities.get((pair.proto, p)), recs.get(p)) for p in pair.ports}
    return Side(n, nmap_raw, ps_raw, recs, err, verdicts)


def pair_table(pair: Pair, side: Side, services: dict[tuple[str, int], str]) -> list[str]:
    out = [
        "| port | the bed runs | portscope identified | product | version | TLS | portscope ms "
        "| as the bed runs? | nmap -sV's line for the port (verbatim) |",
        "|---|---|---|---|---|---|---:|---|---|",
    ]
    for port in pair.ports:
        rec = side.ps_recs.get(port) or {}
        line = nmap_line(side.nmap_raw, port, pair.proto)
        ident = rec.get("identified")
        if ident and rec.get("protocol") not in (None, ident):
            ident = f"{ident} ({rec['protocol']})"
        verdict, why = side.verdicts.get(port, ("no", "not judged"))
        mark = "yes" if verdict == "yes" else "**no**"
        elapsed = rec.get("elapsed_ms")
        out.append(
            f"| {port}/{pair.proto} | {md(services.get((pair.proto, port), '?'))} "
            f"| {md(ident or '–')} | {md(rec.get('product') or '–')} "
            f"| {md(rec.get('version') or '–')} | {md(tls_version(rec) or '–')} "
            f"| {fmt(elapsed, 0) if isinstance(elapsed, int | float) else '–'} | {mark}: {md(why)} "
            f"| {'`' + md(line, 160) + '`' if line else '(no line)'} |"
        )
    return out


def ratio_of(pair: Pair, results: dict[str, Result]) -> float | None:
    ps, nm = results[pair.portscope.label], results[pair.nmap.label]
    return ps.best / nm.best if ps.best is not None and nm.best else None


def verdict_lines(pairs: list[Pair], sides: dict[str, Side], results: dict[str, Result]) -> list[str]:
    """Identification against the bed, and time against nmap, each with its numbers."""
    judged = [(p.proto, port, *sides[p.proto].verdicts[port]) for p in pairs for port in p.ports]
    yes = [j for j in judged if j[2] == "yes"]
    no = [j for j in judged if j[2] != "yes"]
    lines = [
        f"- Identification: {len(yes)} of {len(judged)} ports named as the bed runs them"
        + (f"; **not** on {', '.join(f'{port}/{proto} ({why})' for proto, port, _, why in no)}" if no else "")
        + ". Against nmap: by eye, from its verbatim lines (the bench does not parse nmap's output)."
    ]
    time_ok: bool | None = None
    for p in pairs:
        r = ratio_of(p, results)
        ok = r is not None and r <= TARGET_RATIO
        if p.proto == "tcp":
            time_ok = ok
        ps, nm = results[p.portscope.label], results[p.nmap.label]
        lines.append(
            f"- Time, {p.proto.upper()} ({plural(len(p.ports), 'port')}): `{p.portscope.label}` {fmt(ps.best, 2)} s, "
            f"`{p.nmap.label}` {fmt(nm.best, 2)} s (best of each): ratio {fmt(r, 3)}, "
            + ("**≤ 0.25: yes**" if ok else "**≤ 0.25: no**")
            + ("" if p.proto == "tcp" else " (the issue's target is stated for TCP; shown for information)")
            + "."
        )
    overall = "**met**" if not no and time_ok else "**not met**"
    lines.append(f"- Every port as the bed runs it, in ≤ ¼ of nmap's time: {overall}.")
    return lines


def findings(pairs: list[Pair], sides: dict[str, Side], results: dict[str, Result]) -> list[str]:
    """Failures, unreadable output, and portscope answers that changed between rounds (the table
    shows only one; nmap's raw text differs every run by its timestamps, so it is not compared)."""
    out: list[str] = []
    for r in results.values():
        if r.failed:
            out.append(f"`{r.label}` failed: {r.failed}")
    for p in pairs:
        side = sides[p.proto]
        if side.ps_error:
            out.append(f"`{p.portscope.label}`: {side.ps_error}")
        shapes = []
        for run in results[p.portscope.label].runs:
            recs, _ = portscope_records(str((run.digest or {}).get("raw", "")))
            shapes.append(
                json.dumps(
                    {
                        k: [v.get("identified"), v.get("product"), v.get("version"), tls_version(v)]
                        for k, v in sorted(recs.items())
                    }
                )
            )
        if len(set(shapes)) > 1:
            out.append(
                f"`{p.portscope.label}`: the answers differ between rounds ({len(set(shapes))} variants in "
                f"{len(shapes)} runs); the table shows round {side.round}, every run's output is in the .json"
            )
        slow = sorted(
            (rec.get("elapsed_ms") or 0.0, port)
            for port, rec in side.ps_recs.items()
            if rec.get("elapsed_ms")
        )
        if len(slow) > 1:
            ms, port = slow[-1]
            out.append(
                f"(context) slowest port for `{p.portscope.label}` in round {side.round}: {port}/{p.proto}, "
                f"{ms:.0f} ms (probes tried: {', '.join(map(str, side.ps_recs[port].get('probes') or []))})"
            )
    return out


def probe_modules(src: Path) -> list[str]:
    """Probe modules present in the measured source: probes are being added while this runs."""
    skip = {"__init__", "base", "conn", "runner"}
    return sorted(p.stem for p in (src / "portscope" / "probes").glob("*.py") if p.stem not in skip)


def render(
    report: dict[str, Any],
    pairs: list[Pair],
    sides: dict[str, Side],
    results: dict[str, Result],
    services: dict[tuple[str, int], str],
) -> str:
    m = report["machine"]
    o = report["options"]
    lines = [
        f"# portscope probe vs nmap -sV ({report['started']})",
        "",
        f"Command: `{report['command']}`",
        "",
        f"- Machine: {m['cpu']}, {m['cores']} cores ({m['cores_usable']} usable), {m['memory']} RAM, "
        f"Linux {m['kernel']}, {m['distro']}",
        f"- Python {m['python']}; portscope {m['portscope']}; measured {m['src_measured']}, "
        f"sha256 of its files: {m['src_digest']}; probe modules in it: {', '.join(report['probe_modules'])}",
        *(
            ["- src/ was edited while this ran; the figures are for the snapshot named above."]
            if report.get("src_edited_during_run")
            else []
        ),
        f"- {m['nmap']}",
        f"- Test bed: {report['bed']} (set up in {report['bed_setup_s']:.1f} s); load average "
        f"{report['load_before']} before, {report['load_after']} after.",
        f"- Timing: each command once per round, rounds interleaved, {plural(o['repeats'], 'round')}; wall clock from "
        "exec to exit (forked by /bin/sh and parked, so fork cost is outside), NO_COLOR=1, not a TTY; one "
        "untimed warm-up of each tool on port 80 (bytecode and page cache). Max RSS: ru_maxrss from wait4 "
        "(the largest single process). stdout of both goes to a file, as both are kept.",
        f"- All ports of one protocol in one invocation of each tool. The issue measured `nmap -sV` at "
        f"{ISSUE_NMAP_S:g} s for 7 TCP ports of a similar bed.",
    ]
    for p in pairs:
        side = sides[p.proto]
        lines += [
            "",
            f"## {p.proto.upper()}: {plural(len(p.ports), 'open port')} of the bed, side by side (round {side.round} "
            f"of {o['repeats']})",
            "",
            *pair_table(p, side, services),
        ]
    lines += [
        "",
        "## Time and memory",
        "",
        *results_table(list(results.values())),
        "",
        "## Verdict",
        "",
        *verdict_lines(pairs, sides, results),
        "",
        "How a row is judged: " + RULE,
        "",
        "nmap's column is its own line for the port, verbatim from its normal output (kept whole in the "
        "files named below); the bed's column is its own description of what it runs (tests/bed/bed.py).",
        "",
        "## Findings",
        "",
    ]
    lines += [f"- {x}" for x in findings(pairs, sides, results)] or ["- none"]
    lines += ["", "## Commands and raw output", ""]
    for p in pairs:
        lines.append(f"- `{shlex.join(p.portscope.argv)}`")
        lines.append(f"- `{shlex.join(p.nmap.argv)}` (-oN to a temporary file, one per run)")
    for name in report.get("raw_files", []):
        lines.append(f"- raw: `{name}`")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# Main.
# ---------------------------------------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--repeats", type=int, default=3, help="rounds; each tool runs once per round (default 3)")
    p.add_argument(
        "--slow-threshold",
        type=float,
        default=120.0,
        help="seconds; a command slower than this on its first run gets only --slow-repeats runs (default 120)",
    )
    p.add_argument("--slow-repeats", type=int, default=2, help="runs for commands over --slow-threshold")
    p.add_argument(
        "--timeout", type=float, default=600.0, help="kill a timed command after this many seconds"
    )
    p.add_argument(
        "--no-udp", action="store_true", help="skip the UDP pair (nmap -sV -sU, portscope probe -u)"
    )
    p.add_argument("--python", default=default_python(), help="interpreter portscope runs with")
    p.add_argument(
        "--portscope", default=None, help="command to run portscope (default: .venv/bin/portscope)"
    )
    p.add_argument("--live-src", action="store_true", help="run portscope from the live src/, not a snapshot")
    p.add_argument("--json", action="store_true", help="print the raw numbers as JSON instead of markdown")
    p.add_argument("--no-save", action="store_true", help="do not write bench/results/probe-*")
    opts = p.parse_args(argv)
    if opts.repeats < 1 or opts.slow_repeats < 1:
        p.error("--repeats and --slow-repeats must be ≥ 1")
    return opts


def _load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def main(argv: list[str]) -> int:
    opts = parse_args(argv)
    if os.geteuid() != 0:
        print("run as root: the test bed's network namespace needs it", file=sys.stderr)
        return 2
    if not first_line(["nmap", "--version"]).startswith("Nmap"):
        print("nmap is missing: apt-get install -y nmap", file=sys.stderr)
        return 2
    exit_on_sigterm()
    become_subreaper()
    ps = portscope_command(opts.python, opts.portscope)
    with tempfile.TemporaryDirectory(prefix="portscope-bench-") as tmp:
        env, src = measured_env(Path(tmp), opts.python, opts.live_src)
        work = Path(tmp) / "out"
        work.mkdir()
        return run_benchmark(opts, ps, env, src, work)


def _portscope_table(bed: Any, ps: list[str], pairs: list[Pair], env: dict[str, str], timeout: float) -> str:
    """portscope's human output for the same ports, from one untimed run after the timed ones: the
    form a reader compares with nmap's -oN text (the timed runs print --json)."""
    out = []
    for p in pairs:
        argv = [arg for arg in p.portscope.argv if arg != "--json"]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env)
        out.append(f"$ {shlex.join(['portscope', *argv[argv.index('probe') :]])}\n{proc.stdout}{proc.stderr}")
    del bed
    return "\n".join(out)


def run_benchmark(opts: argparse.Namespace, ps: list[str], env: dict[str, str], src: Path, work: Path) -> int:
    started = utc_now()
    machine = {**machine_info(opts.python, env, src), "nmap": first_line(["nmap", "--version"])}
    report: dict[str, Any] = {
        "started": started.strftime("%Y-%m-%d %H:%M:%S UTC"),
        "command": shlex.join([sys.executable, *sys.argv]),
        "machine": machine,
        "options": dict(vars(opts)),
        "portscope_command": ps,
        "probe_modules": probe_modules(src),
        "target_ratio": TARGET_RATIO,
        "rule": RULE,
    }
    with test_bed() as (bed, setup_s):
        addr = str(bed.addr4)
        services: dict[tuple[str, int], str] = dict(bed.services)
        pairs = build_pairs(bed, ps, work, not opts.no_udp)
        if not pairs:
            raise BenchError("the bed's truth names no open port")
        report["bed"] = f"namespace `{bed.name}`, {addr}; open per its truth: " + "; ".join(
            f"{p.proto.upper()} {', '.join(map(str, p.ports))}" for p in pairs
        )
        report["bed_setup_s"] = setup_s
        progress(f"test bed up in {setup_s:.1f} s: {report['bed']}")
        warm_up(
            [
                Tool("warm", [*ps, "probe", addr, "80", "--json"], ok_rcs=(0, 1)),
                Tool("warm-nmap", ["nmap", "-sV", "-T4", "-Pn", "-n", "-p", "80", addr, "-oN", os.devnull]),
            ],
            env,
            opts.timeout,
        )
        report["load_before"] = _load()
        t0 = time.perf_counter()
        results = time_tools([t for p in pairs for t in (p.portscope, p.nmap)], env, opts)
        report["seconds"] = time.perf_counter() - t0
        report["load_after"] = _load()
        table = _portscope_table(bed, ps, pairs, env, opts.timeout)
        identities = dict(bed.identities)
    report["src_edited_during_run"] = src_digest(ROOT / "src" / "portscope") != machine["src_digest"]
    sides = {p.proto: side_by_side(p, results, identities) for p in pairs}
    raw_files: dict[str, str] = {"probe-portscope.txt": table}
    for p in pairs:
        tail = "" if p.proto == "tcp" else f"-{p.proto}"
        raw_files[f"probe-nmap-sV{tail}.txt"] = sides[p.proto].nmap_raw
        raw_files[f"probe-portscope{tail}.json"] = sides[p.proto].ps_raw
    if not opts.no_save:
        report["raw_files"] = [f"bench/reference/{name}" for name in raw_files]
    text = render(report, pairs, sides, results, services)
    raw = dict(
        report,
        pairs=[
            {
                "proto": p.proto,
                "ports": p.ports,
                "shown_round": sides[p.proto].round,
                "verdicts": {str(k): list(v) for k, v in sides[p.proto].verdicts.items()},
                "ratio": ratio_of(p, results),
            }
            for p in pairs
        ],
        results={k: result_json(v) for k, v in results.items()},
        findings=findings(pairs, sides, results),
    )
    if not opts.no_save:
        save_report("probe", started, text, raw)
        REFERENCE.mkdir(exist_ok=True)
        for name, content in raw_files.items():
            (REFERENCE / name).write_text(content)
        progress(f"wrote {', '.join(raw_files)} in {REFERENCE}")
    print(json.dumps(raw, indent=2, default=str) if opts.json else text, end="" if not opts.json else "\n")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except BenchError as e:
        print(f"probe benchmark: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
