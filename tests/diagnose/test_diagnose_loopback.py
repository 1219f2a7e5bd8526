"""diagnose against small real servers on loopback (no root, no bed): a TLS peer that answers the
ClientHello with garbage, UDP with nothing listening or nothing answering, a service found on another
port by what answers rather than by its process name, a silent server with nothing expected.

The servers run in threads of the test process; `portscope diagnose` runs as a real command, so it
sees them as any client would, and as this host's listeners (127.0.0.1 is local: the inventory path).
"""

from __future__ import annotations

import contextlib
import errno
import json
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from portscope.probes.runner import expected_probe
from portscope.registry import service_name
from tests.helpers import portscope

Handler = Callable[[socket.socket], None]


def _diagnose(*args: str, env: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    proc = portscope("diagnose", *args, "--json", env=env)
    assert proc.returncode in (0, 1), proc.stderr
    out = json.loads(proc.stdout)
    assert isinstance(out, dict)
    return proc.returncode, out


def _steps(out: dict[str, Any]) -> str:
    return " ".join(out["next_steps"])


def _evidence(out: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["check"]: e for e in out["evidence"]}


def _unnamed_port(kind: int = socket.SOCK_STREAM) -> socket.socket:
    """A loopback socket bound to a port the registry names no probe-able service for, so that nothing
    is expected there unless the test says so."""
    proto = "tcp" if kind == socket.SOCK_STREAM else "udp"
    for _ in range(50):
        s = socket.socket(socket.AF_INET, kind)
        s.bind(("127.0.0.1", 0))
        name = service_name(s.getsockname()[1], proto)
        if not (name and expected_probe(name)):
            return s
        s.close()
    raise AssertionError("no loopback port without a registry service in 50 tries")


@contextlib.contextmanager
def _tcp_server(handler: Handler, port: int | None = None) -> Iterator[int]:
    """A TCP server on 127.0.0.1 (PORT, or one nothing is expected on) running HANDLER per connection."""
    if port is None:
        srv = _unnamed_port()
    else:
        srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            srv.bind(("127.0.0.1", port))
        except OSError as exc:
            srv.close()
            if exc.errno == errno.EADDRINUSE:
                pytest.skip(f"127.0.0.1:{port} is taken on this machine")
            raise
    srv.listen(16)
    stop = threading.Event()

    def serve(conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            conn.settimeout(5)
            handler(conn)

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield srv.getsockname()[1]
    finally:
        stop.set()
        srv.shutdown(socket.SHUT_RDWR)
        srv.close()
        thread.join(5)


def _garbage_after_hello(conn: socket.socket) -> None:
    if conn.recv(4096):  # the ClientHello (or any first request)
        conn.sendall(b"\x16\x03\x03\x00\x10" + b"\xde\xad\xbe\xef" * 4)  # a handshake record of nonsense
        conn.recv(64)


def _ssh_banner(conn: socket.socket) -> None:
    conn.sendall(b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n")
    conn.recv(256)


def _silent(conn: socket.socket) -> None:
    while conn.recv(4096):
        pass


def _nothing_on(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) != 0


# --- tls_handshake_failed ------------------------------------------------------------------------------


@pytest.mark.parametrize("expect", [None, "https"])
def test_tls_handshake_answered_with_garbage(expect: str | None) -> None:
    with _tcp_server(_garbage_after_hello) as port:
        rc, out = _diagnose(
            "127.0.0.1", str(port), *(["--expect", expect] if expect else []), "--timeout", "5"
        )
    assert (rc, out["verdict"]) == (1, "tls_handshake_failed"), out
    assert f"the TLS handshake with 127.0.0.1:{port} fails" in out["summary"]
    tls = _evidence(out)["tls"]
    assert tls["passed"] is False and tls["observation"]
    # The next steps name the cause: the error the handshake broke off with, and how to look at it.
    assert tls["observation"] in out["next_steps"][0]
    assert f"openssl s_client -connect 127.0.0.1:{port}" in _steps(out)


# --- UDP -----------------------------------------------------------------------------------------------


def test_udp_nothing_listening_is_refused_by_icmp_port_unreachable() -> None:
    with _unnamed_port(socket.SOCK_DGRAM) as held:
        port = held.getsockname()[1]
    # The port was just free; nothing binds it again in the next milliseconds (ephemeral ports cycle).
    rc, out = _diagnose("127.0.0.1", str(port), "--udp", "--timeout", "4")
    assert (rc, out["verdict"], out["proto"]) == (1, "refused", "udp"), out
    assert "ICMP port unreachable" in out["summary"] and "reset" not in out["summary"]
    reach = _evidence(out)["reach"]
    assert reach["data"]["check"]["reason"] == "icmp-port-unreach"
    assert f"portscope ls --udp --port {port}" in _steps(out) and "ss -lnup" in _steps(out)


def test_udp_bound_but_silent_is_filtered_not_ok() -> None:
    # A UDP socket that never answers: UDP has no handshake, so this is open|filtered, not a working service.
    with _unnamed_port(socket.SOCK_DGRAM) as held:
        port = held.getsockname()[1]
        rc, out = _diagnose("127.0.0.1", str(port), "--udp", "--timeout", "4")
    assert (rc, out["verdict"]) == (1, "filtered"), out
    assert "open|filtered" in out["summary"] and "no answer" in out["summary"]
    checks = _evidence(out)
    assert checks["listening"]["passed"] is True  # this host's inventory sees the socket
    assert checks["reach"]["data"]["check"]["status"] == "open|filtered"
    assert checks["protocol"]["passed"] is None
    assert f"tcpdump -ni any udp port {port}" in _steps(out) and "--expect SERVICE" in _steps(out)


# --- the service on another port, found by what answers -----------------------------------------------


def test_ssh_on_2222_found_on_this_host_by_what_answers() -> None:
    # A fake SSH server (a Python socket, not a process called sshd) on 127.0.0.1:2222, nothing on 22.
    if not _nothing_on(22):
        pytest.skip("something listens on 127.0.0.1:22 on this machine")
    with _tcp_server(_ssh_banner, port=2222):
        rc, out = _diagnose("127.0.0.1", "22", "--timeout", "6")
    assert (rc, out["verdict"]) == (1, "service_on_other_port"), out
    assert "port 2222" in out["summary"] and "ssh" in out["summary"]
    checks = _evidence(out)
    assert checks["listening"]["passed"] is False  # the inventory shows nothing on 22 ...
    assert checks["alternate_port"]["data"]["port"] == 2222  # ... and the probe of 2222 answers SSH
    assert "ssh -p 2222" in _steps(out)


def test_ssh_on_an_unusual_port_found_among_the_listeners() -> None:
    # Not one of the ports people move SSH to: only probing what this host listens on finds it.
    if not _nothing_on(22):
        pytest.skip("something listens on 127.0.0.1:22 on this machine")
    with _tcp_server(_silent) as decoy, _tcp_server(_ssh_banner) as port:
        rc, out = _diagnose("127.0.0.1", "22", "--timeout", "6")
    assert decoy != port
    assert (rc, out["verdict"]) == (1, "service_on_other_port"), out
    assert f"port {port}" in out["summary"] and f"ssh -p {port}" in _steps(out)


def test_nothing_else_answering_as_the_service_stays_refused() -> None:
    if not _nothing_on(22):
        pytest.skip("something listens on 127.0.0.1:22 on this machine")
    with _tcp_server(_silent), _tcp_server(_garbage_after_hello):
        rc, out = _diagnose("127.0.0.1", "22", "--timeout", "6")
    assert (rc, out["verdict"]) == (1, "refused"), out
    assert "alternate_port" not in _evidence(out)


# --- a silent server, nothing expected ------------------------------------------------------------------


def test_silent_server_with_nothing_expected_is_ok_but_says_nothing_was_checked() -> None:
    with _tcp_server(_silent) as port:
        rc, out = _diagnose("127.0.0.1", str(port), "--timeout", "4")
    # The connection works and no fault was found: ok (exit 0) ...
    assert (rc, out["verdict"]) == (0, "ok"), out
    # ... but the sentence claims no expectation met, says nothing was recognised, and how to check.
    summary = out["summary"]
    assert "answers as expected" not in summary
    assert f"{port}/tcp on 127.0.0.1 accepts connections" in summary and "recognised" in summary
    assert "no service was expected" in summary
    assert f"portscope diagnose 127.0.0.1 {port} --expect SERVICE" in _steps(out)
    assert _evidence(out)["protocol"]["passed"] is None  # information: nothing was checked


def test_silent_server_with_a_service_expected_is_wrong_protocol() -> None:
    with _tcp_server(_silent) as port:
        rc, out = _diagnose("127.0.0.1", str(port), "--expect", "ssh", "--timeout", "4")
    assert (rc, out["verdict"]) == (1, "wrong_protocol"), out
    assert "ssh" in out["summary"] and _evidence(out)["protocol"]["passed"] is False
