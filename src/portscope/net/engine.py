"""The scan engine's face: options, and (targets x ports) -> CheckResults streamed as answers come.

Big TCP scans are split over forked worker processes, one per core (at most 4): on loopback the
kernel does a connect's whole handshake or refusal inside the call, so one process is CPU-bound at
about 25 µs a port and a full-range scan only beats nmap's C loop with both cores. Workers send
12-byte records over a pipe; the parent turns them into results. Small scans (a `check`, a few
hundred probes) run in-process: forking would cost more than it saves.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import signal
import socket
import struct
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from portscope.model import CheckResult
from portscope.net import probe_loop
from portscope.net import verdicts as V
from portscope.net.timing import cpu_count

# A worker earns its fork only above this many probes.
FORK_ABOVE = 4096
MAX_WORKERS = 4
_REC = struct.Struct("<IBxHi")  # index, verdict code, errno, latency µs (-1: none)
_ERROR_INDEX = 0xFFFFFFFF  # a worker's fatal OSError: the errno field says which
_FLUSH_EVERY = 0.05  # seconds a worker may hold results before sending them


@dataclass(slots=True)
class ScanOptions:
    """How hard and how long to probe. timeout=None: per host, from measured round trips."""

    timeout: float | None = None
    concurrency: int = 1000
    rate: float | None = None
    retries: int = 1
    workers: int = 0  # 0: decide from the scan's size and this machine's cores
    syn: bool = False  # raw half-open SYN scan (root / CAP_NET_RAW; see syn_scan)


def scan_tcp(
    targets: Sequence[tuple[str, str]], ports: Sequence[int], opts: ScanOptions
) -> Iterator[CheckResult]:
    """Connect scan of every (host, address) x port; results in the order they are decided."""
    return _scan(targets, ports, opts, udp=False, payload_for=None)


def scan_udp(
    targets: Sequence[tuple[str, str]],
    ports: Sequence[int],
    opts: ScanOptions,
    payload_for: Callable[[int], bytes],
) -> Iterator[CheckResult]:
    """A protocol-correct request per port (payload_for); answer: open, ICMP: closed, silence: open|filtered."""
    return _scan(targets, ports, opts, udp=True, payload_for=payload_for)


def _scan(
    targets: Sequence[tuple[str, str]],
    ports: Sequence[int],
    opts: ScanOptions,
    udp: bool,
    payload_for: Callable[[int], bytes] | None,
) -> Iterator[CheckResult]:
    addrs = [a for _, a in targets]
    families = [socket.AF_INET6 if ":" in a else socket.AF_INET for a in addrs]
    total = len(addrs) * len(ports)
    if not total:
        return
    workers = opts.workers or _auto_workers(total, udp)
    plans = [
        probe_loop.Plan(
            addrs,
            families,
            ports,
            range(w, total, workers),
            udp=udp,
            timeout=opts.timeout,
            retries=opts.retries,
            concurrency=max(1, opts.concurrency // workers),
            rate=opts.rate / workers if opts.rate else None,
            payload_for=payload_for,
        )
        for w in range(workers)
    ]
    proto = "udp" if udp else "tcp"
    nh = len(addrs)
    loop = probe_loop.run
    if opts.syn and not udp:
        from portscope.net import syn_scan

        loop = syn_scan.run
    stream = loop(plans[0]) if workers == 1 else _fan_out(plans, loop)
    for idx, code, err, lat in stream:
        status, reason = V.VERDICTS[code]
        host, address = targets[idx % nh]
        yield CheckResult(
            host,
            address,
            ports[idx // nh],
            proto,
            status,
            reason,
            lat / 1000 if lat >= 0 else None,
            error=os.strerror(err) if err and code != V.OPEN else None,
        )


def _auto_workers(total: int, udp: bool) -> int:
    if udp or total < FORK_ABOVE or not hasattr(os, "fork"):
        return 1
    return max(1, min(MAX_WORKERS, cpu_count(), total // FORK_ABOVE))


Loop = Callable[[probe_loop.Plan], Iterator[probe_loop.Result]]


def _fan_out(plans: list[probe_loop.Plan], loop: Loop) -> Iterator[probe_loop.Result]:
    """Run each plan in a forked child; merge their records as they arrive."""
    children: dict[int, int] = {}  # read fd -> pid
    try:
        for plan in plans:
            r, w = os.pipe()
            pid = os.fork()
            if pid == 0:  # pragma: no cover - the child's coverage is its records
                os.close(r)
                _child(plan, w, loop)
            os.close(w)
            children[r] = pid
        yield from _merge(children)
    finally:
        for r, pid in children.items():
            with contextlib.suppress(OSError):
                os.close(r)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)


def _merge(children: dict[int, int]) -> Iterator[probe_loop.Result]:
    poller = select.poll()
    pending: dict[int, bytes] = {}
    for r in children:
        poller.register(r, select.POLLIN)
        pending[r] = b""
    open_fds = set(children)
    fatal: OSError | None = None
    while open_fds:
        for fd, _ev in poller.poll():
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                poller.unregister(fd)
                open_fds.discard(fd)
                continue
            data = pending[fd] + chunk
            cut = len(data) - len(data) % _REC.size
            pending[fd] = data[cut:]
            for rec in _REC.iter_unpack(data[:cut]):
                if rec[0] == _ERROR_INDEX:
                    fatal = OSError(rec[2], os.strerror(rec[2]))
                    continue
                yield rec
    failed = []
    for r, pid in list(children.items()):
        _, status = os.waitpid(pid, 0)
        os.close(r)
        del children[r]
        if status:
            failed.append(status)
    if fatal is not None:
        raise fatal
    if failed:
        raise RuntimeError(f"a scan worker failed (wait status {failed[0]})")


def _child(plan: probe_loop.Plan, w: int, loop: Loop) -> None:
    """A worker's life: scan its share, stream records, never return into the parent's code."""
    code = 0
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    buf = bytearray()
    last = time.monotonic()

    def flush() -> None:
        view = memoryview(bytes(buf))
        buf.clear()
        while view:
            view = view[os.write(w, view) :]

    plan.idle = flush
    try:
        for rec in loop(plan):
            buf += _REC.pack(*rec)
            now = time.monotonic()
            if len(buf) >= 8192 or now - last > _FLUSH_EVERY:
                flush()
                last = now
        flush()
    except BrokenPipeError:
        code = 0  # the parent stopped reading: it has what it wanted
    except OSError as exc:
        with contextlib.suppress(OSError):
            buf.clear()
            buf += _REC.pack(_ERROR_INDEX, 0, exc.errno or 0, -1)
            flush()
        code = 3
    except BaseException:  # a bug: let the traceback reach stderr
        import traceback

        traceback.print_exc()
        code = 70
    finally:
        with contextlib.suppress(OSError):
            sys.stderr.flush()
        os._exit(code)


def _die_with_parent() -> None:
    """Linux: SIGKILL this worker if the parent dies first (a killed scan leaves no orphans)."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
