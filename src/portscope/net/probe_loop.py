"""The scan loop: non-blocking connects (TCP) or connected datagrams (UDP) over one poller.

Why a bare loop and not asyncio: a full-range scan of loopback is 65535 probes whose answers arrive
before connect() returns; at that scale asyncio's per-connection futures and transports cost more
than the kernel's own work (8 s against 2.5 s for the same loop on bare epoll). Here a probe is a
socket, a dict entry and, only when the answer is not immediate, a poller registration and a heap
entry. Results are plain tuples (index, verdict code, errno, latency in µs or -1).

Tries: a port silent for timeout/(retries+1) gets another try while the first stays open; the port
is filtered when every try has been silent for the whole timeout. So `timeout` bounds how long a
silent port is waited for, retries included, and 1000 dropped ports take about one timeout.
"""

from __future__ import annotations

import errno
import heapq
import socket
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from portscope.net import verdicts as V
from portscope.net.timing import HostRtt, Poller, RateGate, fd_budget

Result = tuple[int, int, int, int]  # index, verdict code, errno, latency µs (-1: no answer)

_SOL, _SO_ERROR, _SO_LINGER = socket.SOL_SOCKET, socket.SO_ERROR, socket.SO_LINGER
_LINGER_RST = b"\x01\x00\x00\x00\x00\x00\x00\x00"  # struct linger {1, 0}: close() sends RST
_NONBLOCK = getattr(socket, "SOCK_NONBLOCK", 0)
_LAUNCH_BATCH = 256  # new probes between two polls, so answers are read while launching
_UDP_READ = 2048  # a UDP answer only needs to exist; never read more than this


@dataclass(slots=True)
class Plan:
    """What one loop scans: index i is port ports[i // len(addrs)] of addrs[i % len(addrs)].

    Port-major order spreads consecutive probes over hosts, so no host takes a burst and each
    host's RTT estimate fills in early.
    """

    addrs: Sequence[str]
    families: Sequence[int]
    ports: Sequence[int]
    share: range  # the indexes this loop (this worker) owns
    udp: bool = False
    timeout: float | None = None
    retries: int = 1
    concurrency: int = 1000
    rate: float | None = None
    payload_for: Callable[[int], bytes] | None = None
    idle: Callable[[], None] | None = None  # called before the loop blocks (a worker flushes results)


@dataclass(slots=True)
class _Flight:
    """One port being probed: when it started, how many tries left, its open sockets."""

    t0: float
    host: int
    sent: int
    socks: list[socket.socket]


def run(plan: Plan) -> Iterator[Result]:
    loop = _Loop(plan)
    try:
        yield from loop.run()
    finally:
        loop.close()


class _Loop:
    def __init__(self, plan: Plan) -> None:
        self.p = plan
        self.nh = len(plan.addrs)
        self.rtt = HostRtt(self.nh, plan.timeout)
        self.gate = RateGate(plan.rate)
        self.poller = Poller()
        self.tries = plan.retries + 1
        # TCP tries each hold a socket until the port is decided; a UDP port holds one socket.
        per_port = 1 if plan.udp else self.tries
        self.max_cap = max(1, min(plan.concurrency, fd_budget() // per_port))
        self.cap = self.max_cap  # lowered while local ports or fds run short, regrown per answer
        self.by_fd: dict[int, int] = {}  # fd -> index
        self.live: dict[int, _Flight] = {}  # index -> flight
        self.heap: list[tuple[float, int]] = []  # (when the next try or the verdict is due, index)
        self.due: deque[int] = deque()  # indexes whose next try is due, before any new port
        self.deferred: deque[int] = deque()  # new ports that hit a local resource limit
        self.starved = 0  # consecutive launches refused for lack of local resources

    def close(self) -> None:
        for flight in self.live.values():
            for s in flight.socks:
                s.close()
        self.live.clear()
        self.poller.close()

    def run(self) -> Iterator[Result]:
        jobs = iter(self.p.share)
        more = True
        while True:
            # 1. Launch: due tries first, then ports that were deferred, then new ones.
            launched = 0
            now = time.monotonic()
            while launched < _LAUNCH_BATCH and self._can_launch(more) and self.gate.allow(now):
                launched += 1
                if self.due:
                    idx = self.due.popleft()
                    res = self._try(idx, now) if idx in self.live else None
                elif self.deferred:
                    res = self._start(self.deferred.popleft(), now)
                else:
                    nxt = next(jobs, None)
                    if nxt is None:
                        more = False
                        self.gate.next_at -= self.gate.interval  # give back the unused slot
                        break
                    res = self._start(nxt, now)
                if res is not None:
                    yield res
                now = time.monotonic()
            if not more and not self.live and not self.due and not self.deferred:
                return
            # 2. Wait for answers, at most until the next deadline or the next rate slot.
            if launched and self._can_launch(more):
                wait = 0.0
            else:
                wait = self.heap[0][0] - now if self.heap else 0.05
                if self.gate.interval and self._can_launch(more):
                    wait = min(wait, self.gate.wait(now))
                if self.starved:
                    wait = min(max(wait, 0.0), 0.02 * min(self.starved, 25))
                if wait > 0 and self.p.idle is not None:
                    self.p.idle()
            for fd, _ev in self.poller.poll(wait):
                owner = self.by_fd.get(fd)
                if owner is None:
                    continue  # a sibling try of a port decided earlier in this batch
                res = self._answer(owner, fd)
                if res is not None:
                    yield res
            # 3. Deadlines: another try, or the verdict for silence.
            now = time.monotonic()
            heap = self.heap
            while heap and heap[0][0] <= now:
                _, idx = heapq.heappop(heap)
                flight = self.live.get(idx)
                if flight is None:
                    continue
                if flight.sent < self.tries:
                    self.due.append(idx)
                    continue
                self._finish(idx)
                yield (idx, V.UDP_SILENT if self.p.udp else V.FILTERED, 0, -1)

    def _can_launch(self, more: bool) -> bool:
        if self.due:
            return True
        return (more or bool(self.deferred)) and len(self.live) < self.cap

    def _start(self, idx: int, now: float) -> Result | None:
        """First try of a port; a result when the answer is already known (loopback, no route)."""
        host = idx % self.nh
        if not self.p.udp:
            # Fast path: on loopback and LANs most ports are refused inside connect() itself, and
            # such a port needs no flight record, no poller registration and no deadline.
            try:
                s, err = self._connect(host, self.p.ports[idx // self.nh], details_first=False)
            except OSError as exc:
                self.live[idx] = _Flight(now, host, 0, [])
                self._starve(idx, exc)
                return None
            if err == errno.ECONNREFUSED:
                s.close()
                done = time.monotonic()
                self.rtt.sample(host, done - now)
                self.starved = 0
                return (idx, V.CLOSED, err, int((done - now) * 1e6))
            self.live[idx] = _Flight(now, host, 0, [])
            return self._settle(idx, s, err, now)
        self.live[idx] = _Flight(now, host, 0, [])
        return self._try(idx, now)

    def _connect(self, host: int, port: int, details_first: bool) -> tuple[socket.socket, int]:
        """A non-blocking TCP connect and what is known at once (0: still pending).

        ICMP details (IP_RECVERR) are switched on after connect() returns: an ICMP answer takes at
        least a round trip, and the common loopback refusal then costs one syscall less. Only a
        refusal with host/net unreachable inside connect() itself (a local REJECT) is redone with
        them on first, to tell 'administratively prohibited' from 'no route'.
        """
        p = self.p
        family = p.families[host]
        s = socket.socket(family, socket.SOCK_STREAM | _NONBLOCK)
        if not _NONBLOCK:
            s.setblocking(False)
        if details_first:
            V.enable_icmp_details(s, family)
        err = s.connect_ex((p.addrs[host], port))
        if err == errno.EINPROGRESS:
            err = s.getsockopt(_SOL, _SO_ERROR)
            if not err:
                if not details_first:
                    V.enable_icmp_details(s, family)
                return s, 0
        if err in (errno.EHOSTUNREACH, errno.ENETUNREACH) and not details_first:
            s.close()
            return self._connect(host, port, details_first=True)
        return s, err

    def _try(self, idx: int, now: float) -> Result | None:
        flight = self.live[idx]
        host = flight.host
        p = self.p
        port = p.ports[idx // self.nh]
        if p.udp and flight.socks:  # UDP retries resend on the same socket
            try:
                flight.socks[0].send(self._payload(port))
            except OSError as exc:
                return self._failed(idx, flight.socks[0], exc.errno or 0, now)
            flight.sent += 1
            heapq.heappush(self.heap, (now + self._step(host), idx))
            return None
        try:
            if p.udp:
                family = p.families[host]
                s = socket.socket(family, socket.SOCK_DGRAM | _NONBLOCK)
                if not _NONBLOCK:
                    s.setblocking(False)
                V.enable_icmp_details(s, family)
                err = s.connect_ex((p.addrs[host], port))
                if not err:
                    try:
                        s.send(self._payload(port))
                    except OSError as exc:
                        err = exc.errno or 0
            else:
                s, err = self._connect(host, port, details_first=False)
        except OSError as exc:
            self._starve(idx, exc)
            return None
        return self._settle(idx, s, err, now)

    def _settle(self, idx: int, s: socket.socket, err: int, now: float) -> Result | None:
        """After a try's connect/send: a result if it is decided, else wait for it in the poller."""
        if err in V.RESOURCE_ERRNOS:
            s.close()
            self._starve(idx, OSError(err, ""))
            return None
        self.starved = 0
        if err and err != errno.EINPROGRESS:
            return self._failed(idx, s, err, time.monotonic())
        flight = self.live[idx]
        fd = s.fileno()
        flight.socks.append(s)
        flight.sent += 1
        self.by_fd[fd] = idx
        self.poller.register(fd, self.poller.READ if self.p.udp else self.poller.WRITE)
        heapq.heappush(self.heap, (now + self._step(flight.host), idx))
        return None

    def _step(self, host: int) -> float:
        return self.rtt.timeout(host) / self.tries

    def _payload(self, port: int) -> bytes:
        return self.p.payload_for(port) if self.p.payload_for else b""

    def _starve(self, idx: int, exc: OSError) -> None:
        """Out of local ports or fds: hold this try back and lower the ceiling until things free up."""
        self.starved += 1
        flight = self.live[idx]
        if flight.socks:  # a later try: the port keeps its earlier tries and asks again shortly
            heapq.heappush(self.heap, (time.monotonic() + 0.05, idx))
            return
        del self.live[idx]
        self.deferred.appendleft(idx)
        self.cap = max(1, min(self.cap, len(self.live)))
        if self.starved > 500 and not self.live:
            raise OSError(exc.errno, f"cannot open sockets: {exc.strerror or 'local resources exhausted'}")

    def _answer(self, idx: int, fd: int) -> Result | None:
        flight = self.live[idx]
        s = next(x for x in flight.socks if x.fileno() == fd)
        now = time.monotonic()
        if self.p.udp:
            try:
                s.recv(_UDP_READ)
            except BlockingIOError:
                return None
            except OSError as exc:
                return self._failed(idx, s, exc.errno or 0, now)
            return self._decided(idx, V.UDP_OPEN, 0, now)
        err = s.getsockopt(_SOL, _SO_ERROR)
        if err:
            return self._failed(idx, s, err, now)
        try:
            if s.getsockname() == s.getpeername():
                # TCP simultaneous open with itself: our ephemeral port was the target port.
                return self._decided(idx, V.CLOSED, errno.ECONNREFUSED, now)
        except OSError as exc:
            return self._failed(idx, s, exc.errno or 0, now)
        s.setsockopt(_SOL, _SO_LINGER, _LINGER_RST)
        return self._decided(idx, V.OPEN, 0, now)

    def _failed(self, idx: int, s: socket.socket, err: int, now: float) -> Result:
        code = V.from_errno(err, s, self.p.udp)
        if s not in self.live[idx].socks:
            s.close()
        return self._decided(idx, code, err, now)

    def _decided(self, idx: int, code: int, err: int, now: float) -> Result:
        flight = self.live[idx]
        if flight.sent <= 1:  # Karn: a sample from a port tried twice is ambiguous
            self.rtt.sample(flight.host, now - flight.t0)
        self._finish(idx)
        if self.cap < self.max_cap:
            self.cap += 1
        return (idx, code, err, int((now - flight.t0) * 1e6))

    def _finish(self, idx: int) -> None:
        flight = self.live.pop(idx)
        for s in flight.socks:
            fd = s.fileno()
            self.by_fd.pop(fd, None)
            self.poller.unregister(fd)
            s.close()
