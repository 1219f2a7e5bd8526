"""Half-open ("SYN") TCP scan over raw sockets, for root: the same Plan in, the same Results out.

Why next to the connect scan: a connect scan completes every handshake to an open port, so the
service sees (and may log) a connection, and each probe costs a socket and a file descriptor. Here a
probe is one hand-built 20-byte TCP header sent through a raw socket (the kernel adds the IP header);
a SYN-ACK means open and our own kernel, which knows nothing of the probe, answers it with RST, so no
connection ever reaches the service's accept queue. A RST means closed, an ICMP unreachable says why
not, silence for the whole timeout means filtered.

How answers find their probe: every probe leaves from one source port that a bound (never listening)
TCP socket holds for the scan, so no other socket on this host can be given it and stray SYN-ACKs to
it get the kernel's RST. Each host index gets its own initial sequence number, so an answer's
acknowledgment (seq + 1) names the host even when one address is listed twice, and the answering
port names the port. Receive sockets carry a classic BPF filter that passes only segments to our
source port: a raw TCP socket otherwise copies every TCP segment of the host to us, on loopback
including our own outgoing SYNs.

Why send in batches and then drain without polling: on loopback the RST or SYN-ACK is built inside
our own sendto() (softirq on the same CPU), so after a batch of sends the answers already wait in the
receive queue and a non-blocking read loop picks them up without an epoll round trip.
"""

from __future__ import annotations

import ctypes
import errno
import heapq
import random
import select
import socket
import struct
import sys
import time
from collections import deque
from collections.abc import Iterator, Sequence
from itertools import islice

from portscope.net import verdicts as V
from portscope.net.probe_loop import Plan, Result
from portscope.net.timing import HostRtt, RateGate

__all__ = ["Plan", "Result", "available", "checksum", "run", "syn_segment"]

_BATCH = 256  # probes sent between two reads of the answer queues
_RCVBUF = 8 << 20  # a batch's answers plus whatever else the host receives meanwhile
_SNAP = 128  # bytes of a packet the filters keep: IP header with options + TCP header / ICMP quote
_WINDOW = 1024
_SYN, _RST, _ACK = 0x02, 0x04, 0x10
_MASK = 0xFFFFFFFF
_TCP = struct.Struct("!HHIIHHHH")  # sport dport seq ack offset+flags window checksum urgent
_ANSWER = struct.Struct("!HHIIBB")  # sport dport seq ack offset flags
_QUOTE = struct.Struct("!HHI")  # sport dport seq of the quoted probe
_SO_ATTACH_FILTER = getattr(socket, "SO_ATTACH_FILTER", 26)
_SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
_ICMP6_FILTER = 1  # <netinet/icmp6.h>, level IPPROTO_ICMPV6
_SEND_BUSY = frozenset({errno.ENOBUFS, errno.EAGAIN, errno.ENOMEM})

# ICMP destination unreachable (type 3) code -> the errno the kernel gives a connect() for it, so a
# SYN scan reports the same verdict and error as the connect scan; 9, 10, 13 are the firewall's.
_ICMP4_ERRNO = {
    0: errno.ENETUNREACH,
    1: errno.EHOSTUNREACH,
    2: errno.ENOPROTOOPT,
    3: errno.ECONNREFUSED,
    4: errno.EMSGSIZE,
    5: errno.EOPNOTSUPP,
    6: errno.ENETUNREACH,
    7: errno.EHOSTDOWN,
    8: errno.ENONET,
    9: errno.ENETUNREACH,
    10: errno.EHOSTUNREACH,
    11: errno.ENETUNREACH,
    12: errno.EHOSTUNREACH,
    13: errno.EHOSTUNREACH,
    14: errno.EHOSTUNREACH,
    15: errno.EHOSTUNREACH,
}
_ICMP4_PROHIBITED = frozenset({9, 10, 13})
# ICMPv6 destination unreachable (type 1): code 1 is administratively prohibited; 5 (source policy)
# and 6 (reject route) are too, as the kernel's EACCES for them says.
_ICMP6_ERRNO = {
    0: errno.ENETUNREACH,
    1: errno.EACCES,
    2: errno.EHOSTUNREACH,
    3: errno.EHOSTUNREACH,
    4: errno.ECONNREFUSED,
    5: errno.EACCES,
    6: errno.EACCES,
}


def available() -> bool:
    """Can this process send raw TCP (Linux, root or CAP_NET_RAW)? Tried, not guessed from the uid."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP).close()
    except OSError:
        return False
    return True


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071) of `data`, as it goes into a header."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return int(~total & 0xFFFF)


def _pseudo(src: bytes, dst: bytes) -> bytes:
    """The pseudo-header a TCP checksum covers, for a 20-byte segment (RFC 793 / RFC 8200 8.1)."""
    if len(src) == 4:
        return src + dst + struct.pack("!BBH", 0, socket.IPPROTO_TCP, 20)
    return src + dst + struct.pack("!IxxxB", 20, socket.IPPROTO_TCP)


def syn_segment(src: bytes, dst: bytes, sport: int, dport: int, seq: int) -> bytes:
    """A complete SYN (no options), checksummed the slow, obvious way: the reference for the fast path."""
    seg = _TCP.pack(sport, dport, seq, 0, 0x5000 | _SYN, _WINDOW, 0, 0)
    csum = checksum(_pseudo(src, dst) + seg)
    return seg[:16] + struct.pack("!H", csum) + seg[18:]


def _partial_sum(src: bytes, dst: bytes, sport: int, seq: int) -> int:
    """One's-complement sum of everything in a SYN but its destination port: add the port, fold, invert.

    Why: per port the checksum then costs an addition and two folds, not a pass over 32 bytes.
    """
    seg = _TCP.pack(sport, 0, seq, 0, 0x5000 | _SYN, _WINDOW, 0, 0)
    data = _pseudo(src, dst) + seg
    return sum(struct.unpack(f"!{len(data) // 2}H", data))


def _filter(prog: Sequence[tuple[int, int, int, int]]) -> tuple[ctypes.Array[ctypes.c_char], bytes]:
    """A struct sock_fprog for SO_ATTACH_FILTER, and the instruction buffer it points to (keep it alive)."""
    insns = ctypes.create_string_buffer(b"".join(struct.pack("=HBBI", *i) for i in prog))
    return insns, struct.pack("@HP", len(prog), ctypes.addressof(insns))


def _ldx_ihl() -> tuple[int, int, int, int]:
    return (0xB1, 0, 0, 0)  # ldxb 4*([0]&0xf): X = IPv4 header length


def _tcp_filter(family: int, port: int) -> list[tuple[int, int, int, int]]:
    """Pass only TCP segments to our port (v4 raw sockets see the IP header, v6 ones start at TCP)."""
    load = (0x48, 0, 0, 2) if family == socket.AF_INET else (0x28, 0, 0, 2)  # ldh [x+2] / ldh [2]
    prog = [load, (0x15, 0, 1, port), (0x06, 0, 0, _SNAP), (0x06, 0, 0, 0)]
    return [_ldx_ihl(), *prog] if family == socket.AF_INET else prog


def _icmp_filter(family: int, port: int) -> list[tuple[int, int, int, int]]:
    """Pass only 'destination unreachable' quoting a segment from our port (quoted IPv4 header: 20 bytes)."""
    if family == socket.AF_INET:
        return [
            _ldx_ihl(),
            (0x50, 0, 0, 0),  # ldb [x+0]: ICMP type
            (0x15, 0, 3, 3),
            (0x48, 0, 0, 8 + 20),  # ldh [x+28]: quoted source port
            (0x15, 0, 1, port),
            (0x06, 0, 0, _SNAP),
            (0x06, 0, 0, 0),
        ]
    return [
        (0x30, 0, 0, 0),  # ldb [0]: ICMPv6 type
        (0x15, 0, 3, 1),
        (0x28, 0, 0, 8 + 40),  # ldh [48]: quoted source port
        (0x15, 0, 1, port),
        (0x06, 0, 0, _SNAP),
        (0x06, 0, 0, 0),
    ]


def _raw(family: int, proto: int, port: int | None) -> socket.socket:
    """A non-blocking raw socket; with a port, a receiver filtered to answers to that port."""
    s = socket.socket(family, socket.SOCK_RAW | socket.SOCK_NONBLOCK, proto)
    if port is None:
        return s
    try:
        s.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, _RCVBUF)
    except OSError:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RCVBUF)
    if proto == socket.IPPROTO_ICMPV6:
        # The kernel's own ICMPv6 type filter: block every type (bit set) but 1, before BPF runs.
        s.setsockopt(socket.IPPROTO_ICMPV6, _ICMP6_FILTER, b"\xfd" + b"\xff" * 31)
    prog = _icmp_filter(family, port) if proto != socket.IPPROTO_TCP else _tcp_filter(family, port)
    insns, fprog = _filter(prog)
    s.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_FILTER, fprog)
    del insns
    # Segments queued between socket() and the filter are anyone's: drop them.
    try:
        while True:
            s.recv(_SNAP)
    except BlockingIOError:
        pass
    return s


def _hold_port() -> tuple[socket.socket, int]:
    """A TCP socket bound (not listening) to a free port on every address: our probes' source port.

    Why dual-stack wildcard: one port then serves IPv4 and IPv6 targets alike, and no other socket on
    any address can be given it while the scan runs.
    """
    try:
        s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        s.bind(("::", 0))
    except OSError:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind(("0.0.0.0", 0))
    return s, s.getsockname()[1]


def _route_source(family: int, addr: str) -> tuple[str, int]:
    """(source address the kernel would use for addr, 0) or ('', errno) when there is no route.

    connect() on a UDP socket only consults the routing table: nothing is sent.
    """
    with socket.socket(family, socket.SOCK_DGRAM) as u:
        try:
            u.connect((addr, 9))
        except OSError as exc:
            return "", exc.errno or errno.ENETUNREACH
        return u.getsockname()[0], 0


def _key(family: int, addr: str) -> bytes:
    return socket.inet_pton(family, addr.split("%", 1)[0])


def run(plan: Plan) -> Iterator[Result]:
    """SYN-scan plan.share: results (index, verdict code, errno, latency µs or -1) as they are decided.

    Raises PermissionError without CAP_NET_RAW (see available()) and ValueError for a UDP plan.
    """
    if plan.udp:
        raise ValueError("a SYN scan is TCP only; use the connect loop for UDP")
    scan = _Scan(plan)
    try:
        yield from scan.run()
    finally:
        scan.close()


class _Scan:
    """One scan's sockets and per-port state: live (index -> first try's time) and extra tries sent.

    Deadlines are kept per send batch and host, not per port: every port a batch sends to one host
    shares its deadline, so the heap holds one entry per (batch, host) and a full-range scan of one
    host pushes 256 times fewer entries than it sends probes.
    """

    def __init__(self, plan: Plan) -> None:
        self.p = plan
        nh = self.nh = len(plan.addrs)
        self.rtt = HostRtt(nh, plan.timeout)
        self.gate = RateGate(plan.rate)
        self.tries = plan.retries + 1
        self.cap = max(1, plan.concurrency)
        self.socks: list[socket.socket] = []
        self.poll: select.epoll | None = None
        self.held, self.sport = _hold_port()
        try:
            self._setup(plan)
        except BaseException:
            self.close()
            raise

    def _setup(self, plan: Plan) -> None:
        nh = self.nh
        base = random.getrandbits(32)
        # Distinct per host (an odd multiplier is a bijection mod 2**32): the ack names the host.
        self.seq = [(base + h * 0x9E3779B1) & _MASK for h in range(nh)]
        self.by_ack = {(s + 1) & _MASK: h for h, s in enumerate(self.seq)}
        self.by_seq = {s: h for h, s in enumerate(self.seq)}
        self.dst: list[tuple[str, int]] = []
        self.key: list[bytes] = []
        self.partial = [0] * nh
        self.sender: list[socket.socket | None] = [None] * nh
        self.route_err = [0] * nh
        senders: dict[tuple[int, str], socket.socket] = {}
        families = set()
        for h, (addr, family) in enumerate(zip(plan.addrs, plan.families, strict=True)):
            self.dst.append((addr, 0))
            self.key.append(_key(family, addr))
            src, err = _route_source(family, addr)
            if err:
                self.route_err[h] = err
                continue
            families.add(family)
            tx = senders.get((family, src))
            if tx is None:
                tx = senders[(family, src)] = self._own(_raw(family, socket.IPPROTO_TCP, None))
                tx.bind((src, 0))
            self.sender[h] = tx
            self.partial[h] = _partial_sum(_key(family, src), self.key[h], self.sport, self.seq[h])
        self.rx: list[tuple[socket.socket, int, bool]] = []  # (socket, family, carries ICMP)
        for family in sorted(families):
            icmp = socket.IPPROTO_ICMP if family == socket.AF_INET else socket.IPPROTO_ICMPV6
            self.rx.append((self._own(_raw(family, socket.IPPROTO_TCP, self.sport)), family, False))
            self.rx.append((self._own(_raw(family, icmp, self.sport)), family, True))
        self.poll = select.epoll()
        for s, _f, _i in self.rx:
            self.poll.register(s.fileno(), select.EPOLLIN)
        # Port -> its position in plan.ports; a port listed twice keeps its other positions in `dups`.
        self.pos: dict[int, int] = {}
        self.dups: dict[int, list[int]] = {}
        for i, port in enumerate(plan.ports):
            if port in self.pos:
                self.dups.setdefault(port, []).append(i)
            else:
                self.pos[port] = i
        self.live: dict[int, float] = {}  # index -> time of its first try
        self.extra: dict[int, int] = {}  # index -> tries sent beyond the first
        self.heap: list[tuple[float, int, list[int]]] = []  # (deadline, tie-break, indexes)
        self.ticket = 0
        self.due: deque[int] = deque()  # ports whose next try is due, before any new port
        self.deferred: deque[int] = deque()  # new ports whose first try met a full send queue
        self.out: list[Result] = []

    def _own(self, s: socket.socket) -> socket.socket:
        self.socks.append(s)
        return s

    def close(self) -> None:
        if self.poll is not None:
            self.poll.close()
        for s in self.socks:
            s.close()
        self.held.close()

    def run(self) -> Iterator[Result]:
        jobs = iter(self.p.share)
        more = True
        out, gate, live, due, deferred = self.out, self.gate, self.live, self.due, self.deferred
        assert self.poll is not None
        while True:
            # 1. Send: due retries, then deferred first tries, then new ports, a batch at a time.
            now = time.monotonic()
            batch: list[int] = []
            retries: list[int] = []
            room = _BATCH
            if gate.interval:  # paced: one probe per slot of the rate
                room = 1 if gate.allow(now) else 0
            while room and due:
                idx = due.popleft()
                if idx in live:
                    retries.append(idx)
                    room -= 1
            while room and deferred and len(live) + len(batch) < self.cap:
                batch.append(deferred.popleft())
                room -= 1
            if more and room:
                n = min(room, self.cap - len(live) - len(batch))
                if n > 0:
                    new = list(islice(jobs, n))
                    more = len(new) == n
                    batch += new
            if gate.interval and room and not retries and not batch:
                gate.next_at -= gate.interval  # the slot went unused: give it back
            sent = self._send(retries, now, False) + self._send(batch, now, True)
            busy = sent < len(retries) + len(batch)
            # 2. Answers: on loopback they are already queued.
            self._drain()
            if out:
                yield from out
                out.clear()
            if not more and not live and not due and not deferred:
                return
            # 3. Wait when nothing more may leave now: for an answer, a deadline or the next rate slot.
            can_send = bool(due or deferred) or (more and len(live) < self.cap)
            if sent and can_send and not busy:
                wait = 0.0
            else:
                now = time.monotonic()
                wait = self.heap[0][0] - now if self.heap else 0.05
                if can_send and gate.interval:
                    wait = min(wait, gate.wait(now))
                if busy:
                    wait = min(wait, 0.001)
            if wait > 0:
                if self.p.idle is not None:
                    self.p.idle()
                if self.poll.poll(wait):
                    self._drain()
            # 4. Deadlines: another try, or the verdict for silence.
            self._deadlines()
            if out:
                yield from out
                out.clear()

    def _send(self, idxs: list[int], now: float, first: bool) -> int:
        """One try for each port; stops at a full send queue, putting the rest back. Returns tries sent."""
        nh, ports, senders, partial, seqs, dsts = (
            self.nh,
            self.p.ports,
            self.sender,
            self.partial,
            self.seq,
            self.dst,
        )
        live, extra, sport, pack = self.live, self.extra, self.sport, _TCP.pack
        buckets: dict[int, list[int]] = {}
        sent = 0
        for k, idx in enumerate(idxs):
            h = idx % nh
            tx = senders[h]
            if tx is None:  # no route: decided without a packet, as connect() decides it
                err = self.route_err[h]
                self._local(idx, err, now)
                sent += 1
                continue
            dport = ports[idx // nh]
            total = partial[h] + dport
            total = (total & 0xFFFF) + (total >> 16)
            total = (total & 0xFFFF) + (total >> 16)
            try:
                tx.sendto(pack(sport, dport, seqs[h], 0, 0x5002, _WINDOW, ~total & 0xFFFF, 0), dsts[h])
            except OSError as exc:
                err = exc.errno or 0
                if err in _SEND_BUSY:
                    (self.deferred if first else self.due).extendleft(reversed(idxs[k:]))
                    break
                # A local verdict (a firewall's OUTPUT reject, a route that vanished): as connect reports it.
                self._local(idx, err, now)
                sent += 1
                continue
            sent += 1
            if first:
                live[idx] = now
            else:
                extra[idx] = extra.get(idx, 0) + 1
            bucket = buckets.get(h)
            if bucket is None:
                bucket = buckets[h] = []
            bucket.append(idx)
        for h, bucket in buckets.items():
            self.ticket += 1
            heapq.heappush(self.heap, (now + self.rtt.timeout(h) / self.tries, self.ticket, bucket))
        return sent

    def _local(self, idx: int, err: int, now: float) -> None:
        t0 = self.live.pop(idx, now)
        self.extra.pop(idx, None)
        self.out.append((idx, V.from_errno(err), err, int((time.monotonic() - t0) * 1e6)))

    def _deadlines(self) -> None:
        now = time.monotonic()
        heap, live, extra, due, out = self.heap, self.live, self.extra, self.due, self.out
        while heap and heap[0][0] <= now:
            for idx in heapq.heappop(heap)[2]:
                if idx not in live:
                    continue
                if extra.get(idx, 0) + 1 < self.tries:
                    due.append(idx)
                    continue
                del live[idx]
                extra.pop(idx, None)
                out.append((idx, V.FILTERED, 0, -1))

    def _drain(self) -> None:
        """Read every answer already queued, without blocking."""
        for s, family, icmp in self.rx:
            if icmp:
                self._read_icmp(s, family)
            else:
                self._read_tcp(s, family)

    def _read_tcp(self, s: socket.socket, family: int) -> None:
        v4 = family == socket.AF_INET
        recv, recvfrom, unpack, sport = s.recv, s.recvfrom, _ANSWER.unpack_from, self.sport
        by_ack, key, pos, live, extra, out, nh = (
            self.by_ack,
            self.key,
            self.pos,
            self.live,
            self.extra,
            self.out,
            self.nh,
        )
        now = 0.0
        sampled: set[int] = set()
        while True:
            try:
                if v4:  # IPv4 raw sockets see the IP header: the source address is in it
                    data = recv(_SNAP)
                    at = (data[0] & 15) << 2
                    src = data[12:16]
                else:  # IPv6 raw sockets start at the TCP header; the address comes beside it
                    data, addr = recvfrom(_SNAP)
                    at = 0
                    src = _key(socket.AF_INET6, addr[0])
            except BlockingIOError:
                return
            except OSError:
                continue  # a queued error report; the answers behind it still count
            if len(data) < at + 20:
                continue
            src_port, dport, _seq, ack, _off, flags = unpack(data, at)
            if dport != sport:
                continue
            if flags & _RST:
                code, err = V.CLOSED, errno.ECONNREFUSED
            elif flags & _SYN and flags & _ACK:
                code, err = V.OPEN, 0
            else:
                continue  # our own SYN to our own port, or a stray segment
            h = by_ack.get(ack) if flags & _ACK else None
            if h is None or key[h] != src:
                h = self._host_of(src) if not flags & _ACK else None
                if h is None:
                    continue
            if not now:
                now = time.monotonic()
            p = pos.get(src_port)
            if p is None:
                continue
            if self.dups:
                self._decide(h, src_port, code, err, now)
                continue
            idx = p * nh + h
            t0 = live.pop(idx, None)
            if t0 is None:
                continue  # decided already (an earlier try's answer), or another worker's share
            # Karn: a port tried twice gives an ambiguous sample. One sample per host per read: the
            # answers queued together came from one burst and would only repeat each other.
            if extra.pop(idx, 0) == 0 and h not in sampled:
                sampled.add(h)
                self.rtt.sample(h, now - t0)
            out.append((idx, code, err, int((now - t0) * 1e6)))

    def _host_of(self, src: bytes) -> int | None:
        """A host index by address alone: for a RST without ACK, which carries no sequence to match."""
        for h, k in enumerate(self.key):
            if k == src:
                return h
        return None

    def _decide(self, h: int, port: int, code: int, err: int, now: float) -> None:
        """Decide every live index of (host h, port): the slow path, for ICMP and ports listed twice."""
        first = self.pos.get(port)
        if first is None:
            return
        for p in (first, *self.dups.get(port, ())):
            idx = p * self.nh + h
            t0 = self.live.pop(idx, None)
            if t0 is None:
                continue
            if self.extra.pop(idx, 0) == 0:
                self.rtt.sample(h, now - t0)
            self.out.append((idx, code, err, int((now - t0) * 1e6)))

    def _read_icmp(self, s: socket.socket, family: int) -> None:
        v4 = family == socket.AF_INET
        while True:
            try:
                data = s.recv(_SNAP)
            except BlockingIOError:
                return
            except OSError:
                continue
            if v4:
                at = (data[0] & 15) << 2
                if len(data) < at + 8 + 20 or data[at] != 3:
                    continue
                quote = at + 8
                if data[quote + 9] != socket.IPPROTO_TCP:
                    continue
                dst = data[quote + 16 : quote + 20]
                tcp_at = quote + ((data[quote] & 15) << 2)
                icmp_code = data[at + 1]
                err = _ICMP4_ERRNO.get(icmp_code, errno.EHOSTUNREACH)
                code = V.PROHIBITED if icmp_code in _ICMP4_PROHIBITED else V.from_errno(err)
            else:  # ICMPv6 sockets start at the ICMPv6 header: type, code, 6 bytes, quoted IPv6 header
                if len(data) < 8 + 40 or data[0] != 1 or data[8 + 6] != socket.IPPROTO_TCP:
                    continue
                dst = data[8 + 24 : 8 + 40]
                tcp_at = 8 + 40
                err = _ICMP6_ERRNO.get(data[1], errno.EHOSTUNREACH)
                code = V.from_errno(err)
            if len(data) < tcp_at + _QUOTE.size:
                continue
            src_port, dport, seq = _QUOTE.unpack_from(data, tcp_at)
            h = self.by_seq.get(seq)
            if src_port != self.sport or h is None or self.key[h] != dst:
                continue
            self._decide(h, dport, code, err, time.monotonic())
