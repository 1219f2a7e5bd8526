#!/usr/bin/env python3
"""Socket-inventory benchmark: `portscope ls`/`who` against ss, netstat, lsof, fuser and psutil.

Why: portscope promises to list every socket with its owner faster than `ss -tanp` and psutil on
busy hosts, with bounded memory. That claim only means something at realistic socket counts, so
this script opens N real, established TCP sockets on loopback (N = 1k, 10k, 100k by default, as the
issue counts them: N/2 connections with both ends held),
held by several processes like a real server and its clients, and times each tool against the
same host state in the same run.

Layout: S server processes each listen on one port on k loopback addresses (127.0.0.2..) and
accept everything; C client processes connect from several source addresses (127.0.1.x) using
IP_BIND_ADDRESS_NO_PORT, so the ephemeral port is picked per 4-tuple and ~28k ports per
(source, destination, port) never run out. 100k connections are 200k socket fds, so workers raise
RLIMIT_NOFILE (up to fs.nr_open with CAP_SYS_RESOURCE; without it, as in many containers, more
workers share the load). Every socket gets SO_LINGER 0 so tearing a size down sends RSTs and leaves
no TIME_WAIT behind to skew the next size.

Measuring: see harness.run_once (why the timed command is forked by /bin/sh and reaped as a
grandchild) and harness.bench_env (why bytecode caching is on and portscope runs from a snapshot of
src/); bench/harness.py is shared with bench/scan.py.

Only 127.0.0.0/8 is used. Run as root (owner lookups and fd limits need it):
    /work/main/.venv/bin/python bench/inventory.py [--sizes 1000,10000,100000] [--skip-slow]
The markdown report goes to stdout and bench/results/inventory-<timestamp>.md, raw numbers to
bench/results/inventory-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import resource
import select
import shlex
import socket
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from harness import (
    ROOT,
    BenchError,
    Result,
    Run,
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
    results_table,
    run_once,
    save_report,
    src_digest,
    time_tools,
    utc_now,
    warm_up,
)

# Linux value; the socket module only exports the name from Python 3.12.
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)
# SO_LINGER on, 0 s: close() aborts with RST, so no TIME_WAIT is left behind between sizes.
LINGER_ABORT = struct.pack("ii", 1, 0)
# Capped by net.core.somaxconn; asking for more costs nothing.
BACKLOG = 65535
CAP_SYS_RESOURCE = 24
# fds a worker keeps for itself (stdio, epoll, listeners) on top of its connections.
FD_SLACK = 64


# ---------------------------------------------------------------------------------------------
# Workers: run as `python bench/inventory.py _server ...` / `_client ...` in their own process so
# the sockets belong to distinct pids, like on a real host. Protocol: one line per message on
# stdout ("ready", "count N", "error ..."), commands on stdin ("count", "exit"). EOF on stdin means
# the controller is gone, so the worker exits instead of lingering with 100k sockets.
# ---------------------------------------------------------------------------------------------


def _say(line: str) -> None:
    """Report to the controller; unbuffered so readiness is never stuck in a buffer."""
    os.write(1, (line + "\n").encode())


def fd_budget() -> int:
    """How many fds one worker may open: fs.nr_open with CAP_SYS_RESOURCE, else the inherited hard limit.

    Containers often run "root" without CAP_SYS_RESOURCE (hard limit stuck at e.g. 20000), so the
    controller spreads the connections over as many workers as that needs instead of failing.
    """
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    cap_eff = 0
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            cap_eff = int(line.split()[1], 16)
    if cap_eff & (1 << CAP_SYS_RESOURCE):
        return int(Path("/proc/sys/fs/nr_open").read_text())
    return int(hard)


def _raise_nofile(want: int) -> None:
    """Lift RLIMIT_NOFILE to `want` because one worker may hold tens of thousands of fds."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= want:
        return
    want = min(want, fd_budget())
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(want, hard)))


class _Stdin:
    """Line reader for the controller's commands on fd 0, fed from the worker's epoll loop."""

    def __init__(self) -> None:
        self.buf = b""

    def commands(self) -> list[str]:
        data = os.read(0, 4096)
        if not data:
            return ["exit"]
        self.buf += data
        *lines, self.buf = self.buf.split(b"\n")
        return [line.decode().strip() for line in lines]


def _server_main(addrs: list[str], ports: list[int], nofile: int) -> int:
    """Listen on every port at every address, accept everything and keep it open until told to exit.

    The fleet's servers take one port each; bench/watch.py's idle listeners take many.
    """
    _raise_nofile(nofile)
    ep = select.epoll()
    listeners: dict[int, socket.socket] = {}
    for addr in addrs:
        for port in ports:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((addr, port))
            except OSError as e:
                _say(f"error bind {addr}:{port}: {e.strerror} (choose another --base-port)")
                return 1
            s.listen(BACKLOG)
            s.setblocking(False)
            listeners[s.fileno()] = s
            ep.register(s.fileno(), select.EPOLLIN)
    ep.register(0, select.EPOLLIN)
    stdin = _Stdin()
    held: list[socket.socket] = []
    _say("ready")
    while True:
        for fd, _ in ep.poll():
            if fd == 0:
                for cmd in stdin.commands():
                    if cmd == "exit":
                        return 0
                    if cmd == "count":
                        _say(f"count {len(held)}")
                continue
            lst = listeners[fd]
            while True:
                try:
                    conn, _ = lst.accept()
                except (BlockingIOError, ConnectionAbortedError):
                    break
                except OSError as e:
                    _say(f"error accept: {e.strerror} after {len(held)} connections")
                    return 1
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_ABORT)
                held.append(conn)


def _client_main(
    targets: list[tuple[str, int]], sources: list[str], first: int, n: int, window: int, nofile: int
) -> int:
    """Open connections first..first+n-1 with at most `window` non-blocking connects in flight.

    Connection j goes to targets[j % T] from sources[(j // T) % S], so every (source, target)
    tuple gets an even share of the ephemeral range.
    """
    _raise_nofile(nofile)
    ep = select.epoll()
    ep.register(0, select.EPOLLIN)
    stdin = _Stdin()
    held: list[socket.socket] = []
    pending: dict[int, tuple[socket.socket, str, tuple[str, int]]] = {}
    nxt = first
    end = first + n
    while len(held) < n:
        while len(pending) < window and nxt < end:
            dst = targets[nxt % len(targets)]
            src = sources[(nxt // len(targets)) % len(sources)]
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            s.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_ABORT)
            s.bind((src, 0))
            rc = s.connect_ex(dst)
            if rc == 0:
                held.append(s)
            elif rc == errno.EINPROGRESS:
                pending[s.fileno()] = (s, src, dst)
                ep.register(s.fileno(), select.EPOLLOUT)
            else:
                _say(f"error connect {src} -> {dst[0]}:{dst[1]}: {os.strerror(rc)} after {len(held)}")
                return 1
            nxt += 1
        events = ep.poll(30.0)
        if not events:
            _say(f"error stalled: {len(pending)} connects pending for 30 s, {len(held)} done")
            return 1
        for fd, _ in events:
            if fd == 0:
                if "exit" in stdin.commands():
                    return 0
                continue
            s, src, dst = pending.pop(fd)
            ep.unregister(fd)
            err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                _say(f"error connect {src} -> {dst[0]}:{dst[1]}: {os.strerror(err)} after {len(held)}")
                return 1
            held.append(s)
    _say(f"ready {len(held)}")
    while True:
        ep.poll()
        if "exit" in stdin.commands():
            return 0


def _worker_main(argv: list[str]) -> int:
    """Entry point of a worker process; argv is what the controller built in Fleet."""
    role, spec = argv[0], json.loads(argv[1])
    if role == "_server":
        return _server_main(spec["addrs"], spec.get("ports") or [spec["port"]], spec["nofile"])
    targets = [(a, p) for a, p in spec["targets"]]
    return _client_main(targets, spec["sources"], spec["first"], spec["n"], spec["window"], spec["nofile"])


# ---------------------------------------------------------------------------------------------
# Controller side of the workers.
# ---------------------------------------------------------------------------------------------


class Worker:
    """One worker process and a line reader on its stdout pipe, with deadlines so a wedged worker fails loudly."""

    def __init__(self, name: str, role: str, spec: dict[str, Any]) -> None:
        self.name = name
        argv = [sys.executable, str(Path(__file__).resolve()), role, json.dumps(spec)]
        # Own session: Ctrl-C reaches only the controller, which then shuts the workers down in order.
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True
        )
        self._buf = b""

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            self.proc.stdin.write((line + "\n").encode())
            self.proc.stdin.flush()

    def read_line(self, timeout: float) -> str:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BenchError(f"{self.name}: no answer within {timeout:.0f} s")
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 4096)
                if not chunk:
                    raise BenchError(f"{self.name} exited (rc={self.proc.wait()}) before answering")
                self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        text = line.decode().strip()
        if text.startswith("error"):
            raise BenchError(f"{self.name}: {text}")
        return text

    def stop(self) -> None:
        """Ask politely (closing stdin also works if the worker is mid-connect)."""
        self.send("exit")
        if self.proc.stdin is not None:
            with contextlib.suppress(BrokenPipeError):
                self.proc.stdin.close()

    def reap(self, timeout: float) -> None:
        """Wait for exit; kill this worker (by its own pid) if it does not go in time."""
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@dataclass
class Layout:
    """Where the connections go; recorded in the report so a run can be reproduced."""

    servers: int
    clients: int
    listen_addrs: list[str]
    source_addrs: list[str]
    base_port: int
    window: int

    @classmethod
    def from_options(cls, opts: argparse.Namespace) -> Layout:
        """The layout add_fleet_options() describes."""
        return cls(
            servers=opts.servers,
            clients=opts.clients,
            listen_addrs=[f"127.0.0.{2 + i}" for i in range(opts.listen_addrs)],
            source_addrs=[f"127.0.1.{1 + i}" for i in range(opts.source_addrs)],
            base_port=opts.base_port,
            window=opts.window,
        )

    @property
    def ports(self) -> list[int]:
        return [self.base_port + i for i in range(self.servers)]

    def scaled(self, n: int, budget: int) -> Layout:
        """Enough servers and clients that none needs more than `budget` fds for its share of n."""
        per = max(budget - FD_SLACK - len(self.listen_addrs), 1)
        need = -(-n // per)
        return replace(self, servers=max(self.servers, need), clients=max(self.clients, need))


class Fleet:
    """Servers and clients holding N established connections; a context manager so they always die."""

    def __init__(self, layout: Layout, n: int) -> None:
        self.layout = layout
        self.n = n
        self.workers: list[Worker] = []
        self.setup_s = 0.0

    def __enter__(self) -> Fleet:
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _start(self) -> None:
        lay, n = self.layout, self.n
        nofile = -(-n // min(lay.servers, lay.clients)) + FD_SLACK + len(lay.listen_addrs)
        t0 = time.perf_counter()
        servers = [
            Worker(f"server {i}", "_server", {"addrs": lay.listen_addrs, "port": port, "nofile": nofile})
            for i, port in enumerate(lay.ports)
        ]
        self.workers += servers
        for w in servers:
            w.read_line(30)
        targets = [[a, p] for a in lay.listen_addrs for p in lay.ports]
        share, extra = divmod(n, lay.clients)
        clients: list[Worker] = []
        first = 0
        for c in range(lay.clients):
            count = share + (1 if c < extra else 0)
            if count == 0:
                continue
            spec = {
                "targets": targets,
                "sources": lay.source_addrs,
                "first": first,
                "n": count,
                "window": lay.window,
                "nofile": nofile,
            }
            clients.append(Worker(f"client {c}", "_client", spec))
            first += count
        self.workers += clients
        for w in clients:
            w.read_line(900)
        # Clients are done when the handshake completes; wait until servers accepted (and so own) all.
        deadline = time.monotonic() + 120
        while True:
            accepted = 0
            for w in servers:
                w.send("count")
                accepted += int(w.read_line(30).split()[1])
            if accepted >= n:
                break
            if time.monotonic() > deadline:
                raise BenchError(f"servers accepted only {accepted} of {n} connections within 120 s")
            time.sleep(0.2)
        self.setup_s = time.perf_counter() - t0

    def close(self) -> None:
        for w in self.workers:
            w.stop()
        for w in self.workers:
            w.reap(60)
        self.workers = []


def count_tcp(state: str | None = None) -> int:
    """Count TCP sockets the way the issue asks: `ss -Htan [state S] | wc -l`."""
    argv = ["ss", "-Htan"] + (["state", state] if state else [])
    out = subprocess.run(argv, check=True, capture_output=True).stdout
    return out.count(b"\n")


def wait_quiet(below: int, wait: float) -> int:
    """Wait (up to `wait` s) until fewer than `below` TCP sockets exist: someone else's load skews every tool."""
    deadline = time.monotonic() + wait
    warned = False
    while True:
        now = count_tcp()
        if now < below or time.monotonic() >= deadline:
            return now
        if not warned:
            progress(
                f"  host busy: {now} TCP sockets not opened by this benchmark; waiting up to {wait:.0f} s"
            )
            warned = True
        time.sleep(5)


def _noisy(count: int, report: dict[str, Any]) -> str:
    below = int(report["options"]["quiet_below"])
    return (
        f" **(host not quiet: ≥ {below:,} TCP sockets of others; figures are skewed)**"
        if count >= below
        else ""
    )


def wait_drained(established_before: int, timeout: float = 60) -> int:
    """After a teardown, wait until the kernel has dropped the connections so sizes do not overlap."""
    deadline = time.monotonic() + timeout
    while True:
        now = count_tcp("established")
        if now <= established_before + 16 or time.monotonic() > deadline:
            return now
        time.sleep(0.5)


# ---------------------------------------------------------------------------------------------
# Timing.
# ---------------------------------------------------------------------------------------------


def psutil_in_process(python: str, repeats: int, env: dict[str, str], timeout: float) -> Result:
    """Time psutil.net_connections('tcp') inside one interpreter: the call alone, without start-up."""
    code = (
        "import json, sys, time, psutil\n"
        "ts = []\n"
        "for _ in range(int(sys.argv[1])):\n"
        "    t = time.perf_counter(); psutil.net_connections('tcp'); ts.append(time.perf_counter() - t)\n"
        "print(json.dumps(ts))\n"
    )
    label = "psutil.net_connections('tcp') in-process call"
    res = Result(label, [python, "-c", "<timing loop>", str(repeats)], baseline="ss -tanp")
    run = run_once([python, "-c", code, str(repeats)], env, timeout * repeats, capture=True)
    if run.rc != 0:
        res.failed = f"rc={run.rc}: {run.stderr_tail[:300]}"
        res.runs.append(run)
        return res
    for t in json.loads(run.stdout):
        res.runs.append(Run(float(t), run.maxrss_kib, 0))
    res.note = "call only, no interpreter start-up; RSS is the whole timing process"
    return res


# ---------------------------------------------------------------------------------------------
# Report.
# ---------------------------------------------------------------------------------------------


def tool_versions(python: str) -> dict[str, str]:
    """Versions of what portscope is compared with here; harness.machine_info has the rest."""
    return {
        "psutil": first_line([python, "-c", "import psutil; print(psutil.__version__)"]),
        "ss": first_line(["ss", "-V"]),
        "netstat": first_line(["netstat", "-V"]),
        "lsof": f"lsof {_lsof_revision()}",
        "fuser": first_line(["fuser", "-V"]),
        "nr_open": Path("/proc/sys/fs/nr_open").read_text().strip(),
        "ip_local_port_range": " ".join(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()),
    }


def _lsof_revision() -> str:
    try:
        p = subprocess.run(["lsof", "-v"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    for line in (p.stdout + p.stderr).splitlines():
        if "revision:" in line and "latest" not in line:
            return line.split(":", 1)[1].strip()
    return ""


def _check(name: str, value: float | None, limit: float | None, unit: str = "×") -> str:
    if value is None or limit is None:
        return f"| {name} | – | ≤ {fmt(limit, 2)}{unit} | not measured |"
    ok = "yes" if value <= limit else "**NO**"
    return f"| {name} | {value:.2f}{unit} | ≤ {limit:g}{unit} | {ok} |"


def _ratio(a: Result | None, b: Result | None) -> float | None:
    if a is None or b is None or a.best is None or not b.best:
        return None
    return a.best / b.best


def target_rows(res: dict[str, Result], startup: dict[str, Result] | None) -> list[str]:
    """The issue's acceptance targets (defined at 100k) checked against this size's numbers."""
    own = res.get(L_JSON)
    psutil_sub = res.get(L_PSUTIL)
    ps = [r for k, r in res.items() if k.startswith("portscope") and not r.failed]
    peak = max((r.maxrss_mib for r in ps if r.maxrss_mib is not None), default=None)
    rows = [
        "| target | measured | limit | met |",
        "|---|---:|---:|---|",
        _check("with owners (`--json`) vs `ss -tanp`", _ratio(own, res.get("ss -tanp")), 0.5),
        _check("with owners (`--json`) vs psutil subprocess", _ratio(own, psutil_sub), 0.5),
        _check("`--no-owners` vs `ss -tan`", _ratio(res.get(L_NOOWN), res.get("ss -tan")), 1.5),
        _check("peak RSS of any portscope run", peak, 150.0, " MiB"),
        _check("`who` vs `fuser`", _ratio(res.get(L_WHO), res.get(L_FUSER)), 1.0),
    ]
    if startup:
        rows.append(
            _check("start-up vs `python -c pass`", _ratio(startup.get(L_START), startup.get(L_PASS)), 5.0)
        )
    return rows


L_JSON = "portscope ls -a -t --json"
L_TABLE = "portscope ls -a -t"
L_NOOWN = "portscope ls -a -t --no-owners --json"
L_PSUTIL = "python -c \"import psutil; psutil.net_connections('tcp')\""
L_WHO = "portscope who PORT/tcp"
L_FUSER = "fuser -n tcp PORT"
L_START = "portscope ls --json"
L_PASS = "python -c pass"


def inventory_tools(ps: list[str], python: str, port: int, skip_slow: bool) -> list[Tool]:
    """The commands compared at each size; `who` rows are labelled with the real port."""
    tools = [
        Tool(L_JSON, [*ps, "ls", "-a", "-t", "--json"], baseline="ss -tanp"),
        Tool(L_TABLE, [*ps, "ls", "-a", "-t"], baseline="ss -tanp"),
        Tool(L_NOOWN, [*ps, "ls", "-a", "-t", "--no-owners", "--json"], baseline="ss -tan"),
        Tool("ss -tanp", ["ss", "-tanp"]),
        Tool("ss -tan", ["ss", "-tan"]),
        Tool("netstat -tanp", ["netstat", "-tanp"], baseline="ss -tanp", slow=True),
        Tool("lsof -nP -iTCP", ["lsof", "-nP", "-iTCP"], baseline="ss -tanp", slow=True),
        Tool(L_PSUTIL, [python, "-c", "import psutil; psutil.net_connections('tcp')"], baseline="ss -tanp"),
        Tool(L_WHO, [*ps, "who", f"{port}/tcp"], baseline=L_FUSER),
        Tool(L_FUSER, ["fuser", "-n", "tcp", str(port)]),
    ]
    return [t for t in tools if not (skip_slow and t.slow)]


def render(report: dict[str, Any], startup: dict[str, Result], sizes: list[dict[str, Any]]) -> str:
    """The markdown report, in the order a reader needs it: where, how, then the numbers."""
    m = report["machine"]
    lay = report["layout"]
    o = report["options"]
    lines = [
        f"# portscope socket-inventory benchmark ({report['started']})",
        "",
        f"Command: `{report['command']}`",
        "",
        f"- Machine: {m['cpu']}, {m['cores']} cores ({m['cores_usable']} usable), {m['memory']} RAM, "
        f"Linux {m['kernel']}, {m['distro']}",
        f"- Python {m['python']}; psutil {m['psutil']}; portscope {m['portscope']}; "
        f"measured {m['src_measured']}, sha256 of its files: {m['src_digest']}",
        *(
            ["- src/ was edited while this ran; the figures are for the snapshot named above."]
            if report.get("src_edited_during_run")
            else []
        ),
        f"- Namespaces: {report['isolation']}",
        f"- Tools: {m['ss']}; {m['netstat']}; {m['lsof']}; {m['fuser']}",
        f"- Layout: {lay['servers']} server processes, each listening on one port "
        f"({lay['base_port']}–{lay['base_port'] + lay['servers'] - 1}) at {len(lay['listen_addrs'])} addresses "
        f"({lay['listen_addrs'][0]}–{lay['listen_addrs'][-1]}); {lay['clients']} client processes connecting from "
        f"{len(lay['source_addrs'])} source addresses ({lay['source_addrs'][0]}–{lay['source_addrs'][-1]}), "
        f"≤ {lay['window']} connects in flight each; more of both when a worker would need more than "
        f"{report['fd_budget']:,} fds (its RLIMIT_NOFILE ceiling). Every connection is 2 socket fds, both ends held.",
        f"- Timing: wall clock from exec to exit (each command is forked by /bin/sh and parked, so fork "
        f"cost is outside the timing), stdout to /dev/null, NO_COLOR=1, not a TTY; best of {o['repeats']} "
        f"(median shown), commands slower than {o['slow_threshold']:g} s: {o['slow_repeats']} runs. Max RSS is "
        "the peak `ru_maxrss` over the runs from os.wait4 on the command's pid (floor ≈ 1 MiB, the forking "
        "shell's). Python commands run with bytecode caching on (private PYTHONPYCACHEPREFIX, one untimed "
        "warm-up). Ratios divide best by best.",
        "",
        "## Start-up (before any benchmark connection is opened)",
        "",
        f"{report['startup_sockets']:,} TCP sockets visible (`ss -Htan | wc -l`).{_noisy(report['startup_sockets'], report)}",
        "",
        *results_table(list(startup.values())),
    ]
    for s in sizes:
        lines += [
            "",
            f"## N = {2 * s['n']:,} established sockets ({s['n']:,} connections, both ends held)",
            "",
            f"{s['established']:,} ESTABLISHED sockets counted by `ss -Htan state established | wc -l` before "
            f"timing (need ≥ {2 * s['n']:,}), {s['established_after']:,} after; {s['tcp_total']:,} TCP sockets "
            f"in all ({s['tcp_before']:,} before opening{_noisy(s['tcp_before'], report)}); held by "
            f"{s['servers']} server and {s['clients']} client processes, opened in "
            f"{s['setup_s']:.1f} s. `who` asks for port {s['who_port']}.",
            "",
            *results_table(list(s["results"].values())),
            "",
            "Targets (defined at 100k):",
            "",
            *target_rows(s["results"], startup),
        ]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# Main.
# ---------------------------------------------------------------------------------------------


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(x.replace("_", "").replace("k", "000")) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad --sizes {text!r}: use e.g. 1000,10000,100000") from None
    if not sizes or min(sizes) <= 0:
        raise argparse.ArgumentTypeError("--sizes needs positive numbers")
    return sizes


def add_fleet_options(p: argparse.ArgumentParser) -> None:
    """The options of the fleet (Layout.from_options) and of where it runs, shared with bench/watch.py."""
    p.add_argument("--servers", type=int, default=4, help="server processes (default 4)")
    p.add_argument("--clients", type=int, default=4, help="client processes (default 4)")
    p.add_argument("--listen-addrs", type=int, default=4, help="listener addresses 127.0.0.2.. (default 4)")
    p.add_argument(
        "--source-addrs", type=int, default=8, help="client source addresses 127.0.1.1.. (default 8)"
    )
    p.add_argument(
        "--base-port",
        type=int,
        default=24000,
        help="server i listens on BASE+i; keep it below the ephemeral range (default 24000)",
    )
    p.add_argument("--window", type=int, default=512, help="non-blocking connects in flight per client")
    p.add_argument(
        "--quiet-below",
        type=int,
        default=1000,
        help="a host with this many TCP sockets of others is busy (default 1000)",
    )
    p.add_argument(
        "--quiet-wait",
        type=float,
        default=600.0,
        help="seconds to wait for a busy host to calm down before each part; then go on, flagged",
    )
    p.add_argument(
        "--isolate",
        action="store_true",
        help="run in fresh network + PID namespaces: other sockets and processes on the host are unseen",
    )
    p.add_argument("--in-namespace", action="store_true", help=argparse.SUPPRESS)
    p.add_argument(
        "--live-src",
        action="store_true",
        help="run portscope from the live src/ instead of a snapshot taken at start",
    )


def check_fleet_options(p: argparse.ArgumentParser, opts: argparse.Namespace) -> None:
    if not 1 <= opts.listen_addrs <= 250 or not 1 <= opts.source_addrs <= 250:
        p.error("--listen-addrs and --source-addrs must be 1..250")


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument(
        "--sizes",
        type=_sizes,
        default=[1000, 10000, 100000],
        help="established TCP socket counts, both ends of each connection counted (default: %(default)s)",
    )
    p.add_argument(
        "--repeats", type=int, default=5, help="runs per tool, best and median reported (default 5)"
    )
    p.add_argument("--slow-repeats", type=int, default=2, help="runs for tools slower than --slow-threshold")
    p.add_argument("--slow-threshold", type=float, default=10.0, help="seconds (default 10)")
    p.add_argument(
        "--startup-repeats", type=int, default=10, help="runs of the start-up comparison (default 10)"
    )
    p.add_argument(
        "--skip-slow", action="store_true", help="skip netstat -tanp and lsof (tens of seconds at 100k)"
    )
    p.add_argument(
        "--timeout", type=float, default=600.0, help="kill a timed command after this many seconds"
    )
    p.add_argument(
        "--python",
        default=default_python(),
        help="interpreter for psutil and `python -c pass` (default: the project's .venv)",
    )
    p.add_argument(
        "--portscope",
        default=None,
        help="command to run portscope (default: .venv/bin/portscope, else PYTHON -m portscope)",
    )
    add_fleet_options(p)
    p.add_argument(
        "--hold",
        action="store_true",
        help="open the largest size, verify it and keep it open until Ctrl-C/SIGTERM (for profiling)",
    )
    p.add_argument("--json", action="store_true", help="print the raw numbers as JSON instead of markdown")
    p.add_argument("--no-save", action="store_true", help="do not write bench/results/inventory-*.{md,json}")
    opts = p.parse_args(argv)
    check_fleet_options(p, opts)
    if opts.repeats < 1 or opts.slow_repeats < 1:
        p.error("--repeats and --slow-repeats must be ≥ 1")
    return opts


def hold(layout: Layout, n: int) -> int:
    """Keep n connections open for manual work (cProfile, strace) until interrupted; then clean up."""
    with Fleet(layout, n) as fleet:
        established = count_tcp("established")
        if established < 2 * n:
            raise BenchError(f"only {established} ESTABLISHED sockets, need ≥ {2 * n}")
        progress(
            f"holding {n} connections ({established} ESTABLISHED, opened in {fleet.setup_s:.1f} s); "
            f"who port {layout.base_port}; Ctrl-C or SIGTERM to close"
        )
        while True:
            time.sleep(3600)


def main(argv: list[str]) -> int:
    if argv and argv[0] in ("_server", "_client"):
        return _worker_main(argv)
    opts = parse_args(argv)
    if os.geteuid() != 0:
        print("run as root: owner lookups, ss -p and fd limits of 200k need it", file=sys.stderr)
        return 2
    if opts.isolate and not opts.in_namespace:
        return reexec_isolated(Path(__file__), argv)
    isolation = namespace_note() if opts.in_namespace else "none: the host's own network and processes"
    exit_on_sigterm()
    become_subreaper()
    python = opts.python
    ps = portscope_command(python, opts.portscope)
    layout = Layout.from_options(opts)
    if opts.hold:
        held = max(1, max(opts.sizes) // 2)
        return hold(layout.scaled(held, fd_budget()), held)
    with tempfile.TemporaryDirectory(prefix="portscope-bench-") as tmp:
        env, src = measured_env(Path(tmp), python, opts.live_src)
        return run_benchmark(opts, python, ps, layout, env, src, isolation)


def run_benchmark(
    opts: argparse.Namespace,
    python: str,
    ps: list[str],
    layout: Layout,
    env: dict[str, str],
    src: Path,
    isolation: str,
) -> int:
    """Start-up first (a quiet host), then each size: open, verify, time every tool, close."""
    started = utc_now()
    report: dict[str, Any] = {
        "started": started.strftime("%Y-%m-%d %H:%M:%S UTC"),
        "command": shlex.join(
            [sys.executable, *(("--isolate" if a == "--in-namespace" else a) for a in sys.argv)]
        ),
        "isolation": isolation,
        "machine": {**machine_info(python, env, src), **tool_versions(python)},
        "layout": asdict(layout),
        "options": dict(vars(opts)),
        "portscope_command": ps,
        "caller_env_dont_write_bytecode": os.environ.get("PYTHONDONTWRITEBYTECODE"),
    }
    progress("start-up, few sockets on the host")
    report["startup_sockets"] = wait_quiet(opts.quiet_below, opts.quiet_wait)
    start_tools = [
        Tool(L_START, [*ps, "ls", "--json"], baseline=L_PASS, ok_rcs=(0, 1)),
        Tool(L_PASS, [python, "-c", "pass"]),
    ]
    warm_up(start_tools, env, opts.timeout)
    startup = time_tools(
        start_tools, env, argparse.Namespace(**{**vars(opts), "repeats": opts.startup_repeats})
    )

    budget = fd_budget()
    report["fd_budget"] = budget
    sizes: list[dict[str, Any]] = []
    for sockets in opts.sizes:
        n = max(1, sockets // 2)  # connections: both ends of each are held, so 2n sockets
        progress(f"N={sockets} sockets: opening {n} connections")
        before = wait_quiet(opts.quiet_below, opts.quiet_wait)
        est_before = count_tcp("established")
        size_layout = layout.scaled(n, budget)
        with Fleet(size_layout, n) as fleet:
            established = count_tcp("established")
            progress(f"  open in {fleet.setup_s:.1f} s; {established} ESTABLISHED")
            if established < 2 * n:
                raise BenchError(f"only {established} ESTABLISHED sockets, need ≥ {2 * n}")
            tcp_total = count_tcp()
            tools = inventory_tools(ps, python, layout.base_port, opts.skip_slow)
            results = time_tools(tools, env, opts)
            slow_psutil = (results[L_PSUTIL].best or 0) > opts.slow_threshold
            inproc = psutil_in_process(
                python, opts.slow_repeats if slow_psutil else opts.repeats, env, opts.timeout
            )
            results[inproc.label] = inproc
            established_after = count_tcp("established")
        left = wait_drained(est_before)
        progress(f"  closed; {left} ESTABLISHED left")
        sizes.append(
            {
                "n": n,
                "sockets": 2 * n,
                "established": established,
                "established_after": established_after,
                "tcp_total": tcp_total,
                "tcp_before": before,
                "setup_s": fleet.setup_s,
                "who_port": layout.base_port,
                "servers": size_layout.servers,
                "clients": size_layout.clients,
                "results": results,
            }
        )

    live = src_digest(ROOT / "src" / "portscope")
    report["src_edited_during_run"] = live != report["machine"]["src_digest"]
    text = render(report, startup, sizes)
    raw = dict(
        report,
        startup={k: result_json(v) for k, v in startup.items()},
        sizes=[dict(s, results={k: result_json(v) for k, v in s["results"].items()}) for s in sizes],
    )
    if not opts.no_save:
        save_report("inventory", started, text, raw)
    print(json.dumps(raw, indent=2, default=str) if opts.json else text, end="" if not opts.json else "\n")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except BenchError as e:
        print(f"inventory benchmark: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("interrupted; workers stopped", file=sys.stderr)
        sys.exit(130)
