#!/usr/bin/env python3
"""Service-identification benchmark: `portscope probe` beside `nmap -sV` on the network test bed.

Why: the issue asks BENCHMARKS.md for a side-by-side table from one run on the test bed: for each
service what `nmap -sV` identified and what `portscope probe` identified, and the time each took.
portscope must identify every service nmap identifies, at least as specifically, in at most a
quarter of nmap's time. So both are timed in the same run (bench/harness.py, rounds interleaved),
and the last round's answers are put side by side with what the bed says it runs there.

nmap is an external command here, nothing more: its normal output (-oN) is kept verbatim beside
ours in bench/results/, and the report copies its SERVICE and VERSION columns as text for display.
The per-row "at least as specific" mark is a simple rule over those texts and portscope's --json
(see RULE below and bench/README.md); where it cannot decide, it says "check by eye". Nothing in
portscope depends on it, and no nmap data file is read.

Ports: the bed's open TCP ports from its `truth` (tests/bed/bed.py), all in one invocation of each
tool, as people use them; the bed's open UDP ports (DNS on 53) as a second, separate pair of rows.
Traffic goes only to the bed's namespace. Run as root (the bed's namespace needs it):
    /work/main/.venv/bin/python bench/probe.py [--repeats 3] [--no-udp]
The markdown report goes to stdout and bench/results/probe-<timestamp>.md, raw numbers to the .json,
nmap's normal output to probe-<timestamp>-nmap-{tcp,udp}.txt and portscope's --json of the same round
to probe-<timestamp>-portscope-{tcp,udp}.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import (
    RESULTS,
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
    "A row is **yes** when nmap identified nothing (empty SERVICE, `unknown`, `tcpwrapped`, or a name "
    "ending in `?`, nmap's guess from the port number), or when all of these hold: (1) portscope names "
    "the same service family, comparing nmap's SERVICE without its `ssl/` prefix with portscope's "
    "`identified` and `protocol` after a small alias table written for this bench (domain = dns, "
    "postgres = postgresql, https/http-alt/http-proxy = http, imaps = imap, pop3s = pop3, "
    "smtps/submission = smtp, ftps = ftp; nmap's `ssl` or `ssl/unknown` = tls, met by any portscope "
    "answer with a TLS version); (2) when nmap's SERVICE starts with `ssl/`, portscope reports a TLS "
    "version; (3) when nmap's VERSION column is not empty, portscope reports a product; "
    "(4) when nmap's VERSION contains a dotted number, portscope reports a version, and the first "
    "dotted number of each is the same. A row is **no** when portscope found nothing, a different "
    "family (both names in the alias table), no TLS, no product, or no version where nmap had one. "
    "It is **check by eye** when the names are outside the alias table, when the version numbers "
    "differ, or when portscope has no version and nmap's is a range (`or later`, `or earlier`): the "
    "bench cannot tell which answer is more specific then."
)

# Service families for the rule above; hand-written for this bench from the names both tools use on the
# bed, not taken from any nmap file. A name outside KNOWN that differs from the other side's is
# undecidable here ("check by eye"), never a silent pass.
ALIASES = {
    "ssl": "tls",
    "domain": "dns",
    "postgres": "postgresql",
    "https": "http",
    "http-alt": "http",
    "https-alt": "http",
    "http-proxy": "http",
    "imaps": "imap",
    "pop3s": "pop3",
    "smtps": "smtp",
    "submission": "smtp",
    "submissions": "smtp",
    "ftps": "ftp",
}
KNOWN = frozenset(
    {"ssh", "dns", "http", "postgresql", "redis", "smtp", "imap", "pop3", "ftp", "mysql", "tls", "ssl"}
)
NOT_IDENTIFIED = frozenset({"", "unknown", "tcpwrapped"})
_VERSION_NUMBER = re.compile(r"\d+(?:\.\d+)+[a-z0-9]*", re.IGNORECASE)
_RANGE_WORDS = ("or later", "or earlier", "or newer", "or older")
_PORT_LINE = re.compile(r"^(\d+)/(tcp|udp)\s")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


# ---------------------------------------------------------------------------------------------
# Reading the two outputs for display.
# ---------------------------------------------------------------------------------------------


@dataclass
class NmapRow:
    """One port line of nmap's normal output, its columns kept as nmap printed them."""

    state: str
    service: str
    version: str


def nmap_port_lines(text: str) -> dict[int, NmapRow]:
    """The PORT STATE SERVICE VERSION lines of nmap's normal output, split into their columns as text.

    Only for the report: the columns are shown verbatim. nmap prints SERVICE as one word, so the
    line splits on the first three runs of blanks; VERSION is the rest of the line.
    """
    rows: dict[int, NmapRow] = {}
    in_table = False
    for line in text.splitlines():
        if line.startswith("PORT ") and "SERVICE" in line:
            in_table = True
            continue
        if not in_table:
            continue
        m = _PORT_LINE.match(line)
        if not m:
            if line.startswith("|"):  # script output under a port, not with -sV alone
                continue
            break
        fields = line.split(None, 3)
        rows[int(m.group(1))] = NmapRow(
            state=fields[1] if len(fields) > 1 else "",
            service=fields[2] if len(fields) > 2 else "",
            version=fields[3].strip() if len(fields) > 3 else "",
        )
    return rows


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
# The "at least as specific" rule.
# ---------------------------------------------------------------------------------------------


def family(name: str | None) -> str:
    """A service name reduced to its family for comparison; "" for nothing identified."""
    n = (name or "").strip().lower()
    if n.startswith("ssl/"):
        n = n[4:] if n[4:] not in NOT_IDENTIFIED else "tls"  # nmap's "ssl/unknown": TLS, nothing inside
    return ALIASES.get(n, n)


def nmap_identified(row: NmapRow) -> bool:
    """Did nmap name a service (not a guess from the port number, not a wrapped or unknown one)?"""
    service = row.service.strip().lower()
    return not (service.endswith("?") or family(service) in NOT_IDENTIFIED or row.state != "open")


def judge(nmap: NmapRow | None, rec: dict[str, Any] | None) -> tuple[str, str]:
    """("yes" | "no" | "check by eye", why) for one port, by RULE."""
    if nmap is None:
        return "check by eye", "no line for this port in nmap's output"
    if not nmap_identified(nmap):
        return "yes", "nmap identified nothing"
    if rec is None:
        return "no", "no record for this port in portscope's --json"
    ps_names = {family(rec.get("identified")), family(rec.get("protocol"))} - NOT_IDENTIFIED
    if not ps_names:
        return "no", "portscope identified nothing"
    want = family(nmap.service)
    if want == "tls" and tls_version(rec) is not None:
        ps_names.add("tls")  # nmap saw only TLS; portscope saw TLS and maybe more
    if want not in ps_names:
        if want in KNOWN and ps_names <= KNOWN:
            return "no", f"different service ({nmap.service} vs {'/'.join(sorted(ps_names))})"
        return (
            "check by eye",
            f"names outside the alias table ({nmap.service} vs {'/'.join(sorted(ps_names))})",
        )
    if nmap.service.lower().startswith("ssl/") and tls_version(rec) is None:
        return "no", "nmap saw TLS, portscope reports no TLS version"
    if nmap.version and not rec.get("product"):
        return "no", "nmap names a product, portscope does not"
    nmap_number = _VERSION_NUMBER.search(nmap.version)
    if nmap_number:
        ps_version = str(rec.get("version") or "")
        if not ps_version:
            if any(w in nmap.version.lower() for w in _RANGE_WORDS):
                return "check by eye", "nmap gives a version range, portscope no version"
            return "no", "nmap has a version number, portscope no version"
        ps_number = _VERSION_NUMBER.search(ps_version)
        if ps_number is None or ps_number.group(0).lower() != nmap_number.group(0).lower():
            return "check by eye", f"versions differ ({nmap_number.group(0)} vs {ps_version})"
    return "yes", "same family" + (", product" if nmap.version else "") + (", version" if nmap_number else "")


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
    """The round shown side by side for one pair: each tool's raw output and what was read from it."""

    round: int  # 1-based; 0 when no round has both
    nmap_raw: str
    ps_raw: str
    nmap_rows: dict[int, NmapRow]
    ps_recs: dict[int, dict[str, Any]]
    ps_error: str
    verdicts: dict[int, tuple[str, str]]


def side_by_side(pair: Pair, results: dict[str, Result]) -> Side:
    """The last round in which both tools ran (the -oN text of that nmap run, portscope's --json of it)."""
    ps_runs = results[pair.portscope.label].runs
    nmap_runs = results[pair.nmap.label].runs
    n = min(len(ps_runs), len(nmap_runs))
    if n == 0:
        return Side(0, "", "", {}, {}, "no round ran both tools", {})
    nmap_raw = str((nmap_runs[n - 1].digest or {}).get("raw", ""))
    ps_raw = str((ps_runs[n - 1].digest or {}).get("raw", ""))
    rows = nmap_port_lines(nmap_raw)
    recs, err = portscope_records(ps_raw)
    verdicts = {p: judge(rows.get(p), recs.get(p)) for p in pair.ports}
    return Side(n, nmap_raw, ps_raw, rows, recs, err, verdicts)


def pair_table(pair: Pair, side: Side, services: dict[tuple[str, int], str]) -> list[str]:
    out = [
        "| port | the bed runs | nmap SERVICE | nmap VERSION | portscope identified | product | version "
        "| TLS | portscope ms | at least as specific? |",
        "|---|---|---|---|---|---|---|---|---:|---|",
    ]
    for port in pair.ports:
        row = side.nmap_rows.get(port)
        rec = side.ps_recs.get(port) or {}
        nmap_service = md(row.service) if row else "(no line)"
        if row and row.state != "open":
            nmap_service += f" ({md(row.state)})"
        ident = rec.get("identified")
        if ident and rec.get("protocol") not in (None, ident):
            ident = f"{ident} ({rec['protocol']})"
        verdict, why = side.verdicts.get(port, ("check by eye", "not judged"))
        mark = {"yes": "yes", "no": "**no**", "check by eye": "*check by eye*"}[verdict]
        elapsed = rec.get("elapsed_ms")
        out.append(
            f"| {port}/{pair.proto} | {md(services.get((pair.proto, port), '?'))} | {nmap_service} "
            f"| {md(row.version) if row else '–'} | {md(ident or '–')} | {md(rec.get('product') or '–')} "
            f"| {md(rec.get('version') or '–')} | {md(tls_version(rec) or '–')} "
            f"| {fmt(elapsed, 0) if isinstance(elapsed, int | float) else '–'} | {mark}: {md(why)} |"
        )
    return out


def ratio_of(pair: Pair, results: dict[str, Result]) -> float | None:
    ps, nm = results[pair.portscope.label], results[pair.nmap.label]
    return ps.best / nm.best if ps.best is not None and nm.best else None


def verdict_lines(pairs: list[Pair], sides: dict[str, Side], results: dict[str, Result]) -> list[str]:
    """The issue's two conditions, each stated with its numbers, then the overall answer."""
    judged = [(p.proto, port, *sides[p.proto].verdicts[port]) for p in pairs for port in p.ports]
    yes = [j for j in judged if j[2] == "yes"]
    no = [j for j in judged if j[2] == "no"]
    eye = [j for j in judged if j[2] == "check by eye"]
    lines = [
        f"- Identification: {len(yes)} of {len(judged)} ports at least as specific as nmap"
        + (f"; **not** on {', '.join(f'{port}/{proto} ({why})' for proto, port, _, why in no)}" if no else "")
        + (
            f"; *check by eye* {', '.join(f'{port}/{proto} ({why})' for proto, port, _, why in eye)}"
            if eye
            else ""
        )
        + "."
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
    if no or not time_ok:
        overall = "**not met**"
    elif eye:
        overall = "**met on time; identification pending the rows marked check by eye**"
    else:
        overall = "**met**"
    lines.append(
        f"- Target (every service nmap identifies, at least as specifically, in ≤ ¼ of its time): {overall}."
    )
    return lines


def findings(pairs: list[Pair], sides: dict[str, Side], results: dict[str, Result]) -> list[str]:
    """Failures, unreadable output, and answers that changed between rounds (the table shows only one)."""
    out: list[str] = []
    for r in results.values():
        if r.failed:
            out.append(f"`{r.label}` failed: {r.failed}")
    for p in pairs:
        side = sides[p.proto]
        if side.ps_error:
            out.append(f"`{p.portscope.label}`: {side.ps_error}")
        for label, kind in ((p.portscope.label, "ps"), (p.nmap.label, "nmap")):
            shapes = []
            for run in results[label].runs:
                raw = str((run.digest or {}).get("raw", ""))
                if kind == "ps":
                    recs, _ = portscope_records(raw)
                    shapes.append(
                        json.dumps(
                            {
                                k: [v.get("identified"), v.get("product"), v.get("version"), tls_version(v)]
                                for k, v in sorted(recs.items())
                            }
                        )
                    )
                else:
                    rows = nmap_port_lines(raw)
                    shapes.append(json.dumps({k: [v.service, v.version] for k, v in sorted(rows.items())}))
            if len(set(shapes)) > 1:
                out.append(
                    f"`{label}`: the answers differ between rounds ({len(set(shapes))} variants in "
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
        "nmap's SERVICE and VERSION columns are copied as text from its normal output (kept whole in the "
        "file named below); the bed's column is its own description of what it runs (tests/bed/bed.py).",
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
    report["src_edited_during_run"] = src_digest(ROOT / "src" / "portscope") != machine["src_digest"]
    sides = {p.proto: side_by_side(p, results) for p in pairs}
    stamp = f"probe-{started.strftime('%Y%m%dT%H%M%SZ')}"
    raw_files: dict[str, str] = {}
    for p in pairs:
        raw_files[f"{stamp}-nmap-{p.proto}.txt"] = sides[p.proto].nmap_raw
        raw_files[f"{stamp}-portscope-{p.proto}.json"] = sides[p.proto].ps_raw
    if not opts.no_save:
        report["raw_files"] = [f"bench/results/{name}" for name in raw_files]
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
        for name, content in raw_files.items():
            (RESULTS / name).write_text(content)
        progress(f"wrote {', '.join(raw_files)} in {RESULTS}")
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
