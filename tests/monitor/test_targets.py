"""Remote targets in a watch cycle (monitor/targets.py through monitor/watch.py), against real servers on
loopback: a TCP listener that goes away and comes back, and a TLS server whose certificate is about to
expire and is then renewed.

The watcher runs in-process with explicit times (`cycle(now=...)`), so the persistence time is a later
`now`, not a sleep; the servers, the checks and the probes are real.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from portscope.monitor.store import EventRow, Store
from portscope.monitor.watch import Watcher
from portscope.policy.baseline import loads
from tests.monitor.watchrun import free_server_port
from tests.probes.support import self_signed

T0 = dt.datetime.now(dt.UTC).replace(microsecond=0)


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


class TlsServer:
    """HTTPS on 127.0.0.1 in a thread, stopped and started on one port; `use(days)` swaps its
    certificate, as a renewal would."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.context = self.use(30)
        self.port = 0
        self.sock: socket.socket | None = None
        self.thread: threading.Thread | None = None
        self.start()

    def use(self, days: int) -> ssl.SSLContext:
        d = self.directory / f"cert-{days}"
        d.mkdir(exist_ok=True)
        cert, key = self_signed(d, "watch.test", ["watch.test", "127.0.0.1"], days=days)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        self.context = ctx
        return ctx

    def start(self) -> None:
        sock = socket.create_server(("127.0.0.1", self.port))
        sock.settimeout(0.2)
        self.sock, self.port = sock, int(sock.getsockname()[1])
        self.thread = threading.Thread(target=self._serve, args=(sock,), daemon=True)
        self.thread.start()

    def _serve(self, sock: socket.socket) -> None:
        while True:
            try:
                conn, _ = sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return  # closed by stop()
            with contextlib.suppress(OSError), conn:
                conn.settimeout(3)
                with self.context.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(4096)
                    tls.sendall(b"HTTP/1.0 200 OK\r\nServer: watch-test\r\nContent-Length: 2\r\n\r\nok")

    def stop(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        if self.thread is not None:
            self.thread.join(5)
            self.thread = None


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[TlsServer]:
    server = TlsServer(tmp_path)
    try:
        yield server
    finally:
        server.stop()


def watcher(tmp_path: Path, targets: str, persist: float) -> Watcher:
    """A watcher of these targets only: its [scope] is a port nothing listens on."""
    text = f'[scope]\nports = "{free_server_port()}"\n\n{targets}'
    return Watcher(loads(text), Store.open(str(tmp_path / "history.db")), [], host="t", persist=persist)


def test_a_target_that_goes_down_alerts_after_persisting_and_all_clears_when_back(tmp_path: Path) -> None:
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    w = watcher(
        tmp_path, f'[[target]]\nname = "api"\nhost = "127.0.0.1"\nport = {port}\ncert_warn_days = 0\n', 60
    )
    first = w.cycle(at(0))
    assert [(s.status, s.reason, s.as_expected) for s in first.targets] == [("open", "syn-ack", True)]
    assert first.targets[0].latency_ms is not None and first.differences == []

    server.close()  # the service stops: its port now answers with a reset
    down = w.cycle(at(10))
    assert [(d.kind, d.port) for d in down.differences] == [("target", port)]
    assert down.events == []  # not yet: it must last 60 s
    assert "closed" in down.differences[0].summary and "expected open" in down.differences[0].summary
    alarm = w.cycle(at(75)).events
    assert [(e.kind, e.port) for e in alarm] == [("target_status_changed", port)]
    assert alarm[0].after is not None and alarm[0].after["status"] == "closed"
    assert alarm[0].before == {"status": "open", "service": None}
    assert alarm[0].at == at(10).isoformat()  # when it began, not when it alerted

    server = socket.create_server(("127.0.0.1", port))  # back
    try:
        back = w.cycle(at(80))
        assert back.differences == [] and back.events == []  # the all-clear must last as long
        clear = w.cycle(at(145)).events
        assert [(e.kind, e.after) for e in clear] == [
            ("target_status_changed", {"status": "open", "service": None})
        ]
        assert "as the baseline expects again" in clear[0].summary
        rows = [
            r for r in w.store.history(port=port, kind="target_status_changed") if isinstance(r, EventRow)
        ]
        assert len(rows) == 2
    finally:
        server.close()
        w.store.close()


def test_a_certificate_about_to_expire_alerts_once_survives_a_restart_and_clears_on_renewal(
    tmp_path: Path, tls_server: TlsServer
) -> None:
    target = (
        f'[[target]]\nhost = "127.0.0.1"\nport = {tls_server.port}\n'
        'expect_service = "https"\ncert_warn_days = 45\n'
    )
    w = watcher(tmp_path, target, 0)
    first = w.cycle(at(0))
    (state,) = first.targets
    assert (state.status, state.service, state.as_expected) == ("open", "https", True)
    assert state.days_left in (29, 30)  # valid until 30 days after it was made, just after T0
    assert [d.kind for d in first.differences] == ["certificate"]
    assert [e.kind for e in first.events] == ["certificate_expiring"]
    assert "expires in" in first.events[0].summary and "warning at 45 days" in first.events[0].summary
    assert w.cycle(at(30)).events == []  # once, not every cycle

    # The service goes away: that is alerted, and its certificate is still remembered as expiring (a
    # target that does not answer has not renewed anything), so no all-clear for it.
    tls_server.stop()
    down = w.cycle(at(60))
    assert sorted(d.kind for d in down.differences) == ["certificate", "target"]
    assert [e.kind for e in down.events] == ["target_status_changed"]
    assert down.targets[0].days_left in (state.days_left, state.days_left - 1)  # counted from memory
    tls_server.start()
    back = w.cycle(at(90))
    assert [d.kind for d in back.differences] == ["certificate"]
    assert [(e.kind, e.after) for e in back.events] == [
        ("target_status_changed", {"status": "open", "service": "https"})
    ]
    w.store.close()

    # watch restarts on the same store: the expiring certificate is not alerted a second time.
    w2 = watcher(tmp_path, target, 0)
    again = w2.cycle(at(120))
    assert [d.kind for d in again.differences] == ["certificate"]
    assert again.events == []

    # The certificate is renewed (400 days): one all-clear.
    tls_server.use(400)
    renewed = w2.cycle(at(150))
    assert renewed.differences == []
    assert renewed.targets[0].days_left in (399, 400)
    assert [e.kind for e in renewed.events] == ["certificate_expiring"]
    assert "no longer expires" in renewed.events[0].summary
    assert w2.cycle(at(180)).events == []
    alerts = w2.store.history(port=tls_server.port, kind="certificate_expiring")
    assert len(alerts) == 2  # the warning and its all-clear, each once
    w2.store.close()


def test_the_wrong_service_on_a_target_is_a_difference(tmp_path: Path, tls_server: TlsServer) -> None:
    target = (
        f'[[target]]\nname = "git"\nhost = "127.0.0.1"\nport = {tls_server.port}\n'
        'expect_service = "ssh"\ncert_warn_days = 0\n'
    )
    w = watcher(tmp_path, target, 0)
    report = w.cycle(at(0))
    (d,) = report.differences
    assert d.kind == "target" and "answers https, expected ssh" in d.summary
    assert [e.kind for e in report.events] == ["target_status_changed"]
    assert report.events[0].after is not None and report.events[0].after["service"] == "https"
    w.store.close()
