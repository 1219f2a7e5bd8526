"""Connections to untrusted servers: every read is capped in bytes and in time, and so is the whole probe.

Why one class for plain and TLS: probes speak the same protocol before and after STARTTLS, and over
implicit TLS, so they get one `Conn` and never see sockets. TLS runs on an `ssl.SSLObject` over memory
BIOs (not `asyncio` start_tls) for two reasons: when a "TLS" port answers in plain text we keep the
bytes it sent, to name what it speaks; and the handshake's reads go through the same caps as any read.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
import ssl
import time

READ_CAP = 64 * 1024  # bytes returned by one read call
SEEN_CAP = 4096  # first bytes kept for recognizers
CONN_CAP = 1024 * 1024  # bytes one connection may receive in all before we hang up (a flooding peer)


class Deadline:
    """The whole probe's time budget; every wait takes min(its own cap, what is left)."""

    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def left(self, cap: float | None = None) -> float:
        rest = max(0.0, self.end - time.monotonic())
        return rest if cap is None else min(cap, rest)

    @property
    def expired(self) -> bool:
        return time.monotonic() >= self.end


class ConnectFailed(OSError):
    """connect() failed; errno says how (ECONNREFUSED, ETIMEDOUT, EHOSTUNREACH, ...)."""


class Conn:
    """A TCP connection, optionally upgraded to TLS; reads return b"" on EOF, timeout or cap."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, deadline: Deadline
    ) -> None:
        self._reader = reader
        self._writer = writer
        self.deadline = deadline
        self.received = 0  # raw bytes from the peer, TLS records included
        self.eof = False
        self.timed_out = False  # the last read ended on its time cap
        self._tls: ssl.SSLObject | None = None
        self._in: ssl.MemoryBIO | None = None
        self._out: ssl.MemoryBIO | None = None
        self._pending = b""  # plain bytes read but not yet handed out (read_line, TLS leftovers)
        # The first bytes the peer sent, whatever they were: when a probe does not understand its
        # answer, the other probes' recognizers may (Redis names itself in its reply to an HTTP GET).
        self.seen = b""

    @classmethod
    async def open(cls, address: str, port: int, deadline: Deadline, timeout: float) -> Conn:
        """Connect, or raise ConnectFailed with the errno (ETIMEDOUT when nothing answered)."""
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(address, port, limit=READ_CAP), deadline.left(timeout)
            )
        except TimeoutError:
            raise ConnectFailed(errno.ETIMEDOUT, "no answer to the connection attempt") from None
        except OSError as e:
            raise ConnectFailed(e.errno or errno.EIO, e.strerror or str(e)) from None
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(reader, writer, deadline)

    @property
    def tls(self) -> ssl.SSLObject | None:
        return self._tls

    # -- raw transport ---------------------------------------------------------------------------------

    async def _raw_read(self, limit: int, timeout: float) -> bytes:
        if self.eof:
            return b""
        limit = min(limit, CONN_CAP - self.received)
        if limit <= 0:
            self.eof = True  # flooded: treat as closed, the caller has enough to decide
            return b""
        try:
            data = await asyncio.wait_for(self._reader.read(limit), self.deadline.left(timeout))
        except TimeoutError:
            self.timed_out = True
            return b""
        except OSError:
            data = b""
        if not data:
            self.eof = True
        self.received += len(data)
        if len(self.seen) < SEEN_CAP:
            self.seen += data[: SEEN_CAP - len(self.seen)]
        return data

    async def _raw_write(self, data: bytes) -> bool:
        if self._writer.is_closing():
            return False
        try:
            self._writer.write(data)
            await asyncio.wait_for(self._writer.drain(), self.deadline.left(5.0))
        except (OSError, TimeoutError):
            return False
        return True

    # -- what probes use -------------------------------------------------------------------------------

    async def write(self, data: bytes) -> bool:
        """Send; False when the peer is gone (a probe then has nothing more to learn here)."""
        if self._tls is None:
            return await self._raw_write(data)
        try:
            self._tls.write(data)
        except ssl.SSLError:
            return False
        return await self._flush_tls()

    async def read(self, limit: int = READ_CAP, timeout: float = 2.0) -> bytes:
        """Up to `limit` bytes: what arrives first, b"" on EOF or when `timeout` passes in silence."""
        self.timed_out = False
        if self._pending:
            out, self._pending = self._pending[:limit], self._pending[limit:]
            return out
        if self._tls is None:
            return await self._raw_read(limit, timeout)
        end = time.monotonic() + timeout
        while True:
            try:
                return self._tls.read(limit)
            except ssl.SSLWantReadError:
                pass
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                self.eof = True
                return b""
            except ssl.SSLError:
                self.eof = True
                return b""
            chunk = await self._raw_read(READ_CAP, max(0.0, end - time.monotonic()))
            if not chunk:
                return b""
            assert self._in is not None
            self._in.write(chunk)

    async def read_until(self, marker: bytes, limit: int = 8192, timeout: float = 2.0) -> bytes:
        """Bytes up to and including `marker`, or what came before the cap, EOF or timeout.

        The time cap covers the whole wait, so a peer dribbling one byte a second cannot stretch it.
        """
        end = time.monotonic() + timeout
        buf = b""
        while marker not in buf and len(buf) < limit:
            chunk = await self.read(limit - len(buf), max(0.0, end - time.monotonic()))
            if not chunk:
                break
            buf += chunk
        cut = buf.find(marker)
        if cut >= 0:
            cut += len(marker)
            buf, self._pending = buf[:cut], buf[cut:] + self._pending
        return buf

    async def read_exactly(self, n: int, timeout: float = 2.0) -> bytes:
        """Exactly n bytes (n is the caller's bound), or fewer on EOF or timeout."""
        end = time.monotonic() + timeout
        buf = b""
        while len(buf) < n:
            chunk = await self.read(n - len(buf), max(0.0, end - time.monotonic()))
            if not chunk:
                break
            buf += chunk
        return buf

    async def read_lines(
        self, until: bytes | None = None, limit: int = 16384, timeout: float = 2.0
    ) -> list[bytes]:
        """Lines (CRLF or LF stripped) until a line starting with `until`, EOF, cap or timeout.

        For multi-line replies such as SMTP's `250-...` then `250 ...`: pass the prefix of the last line.
        """
        end = time.monotonic() + timeout
        lines: list[bytes] = []
        total = 0
        while total < limit:
            line = await self.read_until(b"\n", limit - total, max(0.0, end - time.monotonic()))
            if not line:
                break
            total += len(line)
            lines.append(line.rstrip(b"\r\n"))
            if not line.endswith(b"\n") or (until is not None and line.startswith(until)):
                break
        return lines

    # -- TLS -----------------------------------------------------------------------------------------

    async def start_tls(
        self,
        context: ssl.SSLContext,
        server_hostname: str | None,
        timeout: float,
        first_timeout: float | None = None,
    ) -> bytes:
        """Handshake over this connection. Returns b"" on success, else the raw bytes the peer sent.

        Raises ssl.SSLError for a failed handshake (the peer spoke TLS but refused us); returns the
        peer's non-TLS bytes (possibly b"" when it closed or stayed silent) with self.tls still None
        when it did not speak TLS at all, so the caller can name what it did speak. `first_timeout`
        bounds the wait for the server's first byte: a TLS server answers a ClientHello at once, and a
        text protocol reading it as a line (Redis) would otherwise hold us for the whole `timeout`.
        """
        if self._pending:  # the peer spoke on, in plain text, right after its go-ahead
            plain, self._pending = self._pending, b""
            return plain
        self._in, self._out = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = context.wrap_bio(self._in, self._out, server_side=False, server_hostname=server_hostname)
        end = time.monotonic() + timeout
        first = True
        raw_seen = b""
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                pass
            if not await self._flush_bio(self._out):
                return raw_seen
            wait = max(0.0, end - time.monotonic())
            if first and first_timeout is not None:
                wait = min(wait, first_timeout)
            chunk = await self._raw_read(READ_CAP, wait)
            if not chunk:
                return raw_seen
            if first and not _looks_like_tls(chunk):
                return chunk
            first = False
            raw_seen += chunk[:4096]
            self._in.write(chunk)
        await self._flush_bio(self._out)
        self._tls = tls
        return b""

    async def _flush_tls(self) -> bool:
        assert self._out is not None
        return await self._flush_bio(self._out)

    async def _flush_bio(self, bio: ssl.MemoryBIO) -> bool:
        data = bio.read()
        return await self._raw_write(data) if data else True

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(OSError, TimeoutError):
            await asyncio.wait_for(self._writer.wait_closed(), 0.5)


def _looks_like_tls(data: bytes) -> bool:
    """A TLS record: content type 20-24 and major version 3 (every TLS and SSLv3 record header)."""
    return len(data) >= 2 and 20 <= data[0] <= 24 and data[1] == 3
