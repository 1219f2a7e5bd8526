"""probe: HTTP and TLS against the bed's real nginx, and against hostile peers on loopback.

The bed's nginx serves HTTP on 80, a 301 to HTTPS on 8080, HTTPS with a certificate from the bed's CA
on 443 (a page with a title, HTTP/2 offered), an expired certificate on 8443, a certificate for another
name on 9443, and plain HTTP on 8444; none of that is known to the probe except through what the server
says.
"""

from __future__ import annotations

import datetime as dt
import json
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from portscope.probes import http, tls
from tests.bed.bed import NGINX_HTTPS_TITLE, NGINX_REDIRECT_PORT, TestBed
from tests.helpers import portscope
from tests.probes.support import UNSAFE, self_signed_certificate


def _probe(bed: TestBed, port: int, *extra: str, ca: bool = True) -> dict[str, object]:
    args = [f"{bed.addr4}:{port}", "--json", "--sni", bed.cert_hostname, *extra]
    if ca:
        args += ["--ca-file", str(bed.ca_pem)]
    proc = portscope("probe", *args)
    assert proc.returncode in (0, 1), proc.stderr
    (result,) = json.loads(proc.stdout)
    assert isinstance(result, dict)
    result["_rc"] = proc.returncode
    return result


def _probe_tls(bed: TestBed, port: int, *, ca: bool = True) -> tuple[dict[str, object], dict[str, Any]]:
    """_probe() on a port that must have answered TLS, and that TLS part of the result."""
    r = _probe(bed, port, ca=ca)
    t = r["tls"]
    assert isinstance(t, dict)
    return r, t


@pytest.mark.root
def test_plain_http(bed: TestBed) -> None:
    r = _probe(bed, 80)
    assert (r["status"], r["identified"], r["protocol"], r["product"]) == ("open", "http", "http", "nginx")
    assert r["version"] and str(r["version"])[0].isdigit()
    details = r["details"]
    assert isinstance(details, dict) and details["status"] == 200 and details["server"].startswith("nginx/")
    assert r["tls"] is None
    assert (r["expected"], r["matches"], r["_rc"]) == ("http", True, 0)


@pytest.mark.root
def test_https_with_the_bed_ca(bed: TestBed) -> None:
    r, t = _probe_tls(bed, 443)
    assert (r["identified"], r["protocol"], r["matches"], r["_rc"]) == ("https", "http", True, 0)
    assert t["version"] in ("TLSv1.2", "TLSv1.3") and t["cipher"]
    assert t["sni"] == bed.cert_hostname and bed.cert_hostname in t["san"] and bed.addr4 in t["san"]
    assert (t["verified"], t["hostname_match"], t["expired"], t["self_signed"]) == (True, True, False, False)
    assert t["days_left"] > 0 and "portscope test bed CA" in t["issuer"]
    assert len(t["fingerprint_sha256"]) == 64


@pytest.mark.root
def test_http_inside_tls_title_and_alpn(bed: TestBed) -> None:
    """443: nginx with http2 picks h2 from our ClientHello (we offer h2 and http/1.1); we speak
    HTTP/1.1 only, so the probe asks again offering http/1.1 alone and still reads status, Server
    and the page's title from inside TLS. 8443 has no http2: ALPN http/1.1 at once."""
    r, t = _probe_tls(bed, 443)
    assert t["alpn"] == "h2"
    details = r["details"]
    assert isinstance(details, dict)
    assert (details["status"], details["http_version"]) == (200, "1.1")
    assert details["server"].startswith("nginx/") and (r["product"], r["protocol"]) == ("nginx", "http")
    assert details["title"] == NGINX_HTTPS_TITLE
    assert "text/html" in details["content_type"]
    _, t8443 = _probe_tls(bed, 8443)
    assert t8443["alpn"] == "http/1.1"


@pytest.mark.root
def test_redirect_to_https(bed: TestBed) -> None:
    r = _probe(bed, NGINX_REDIRECT_PORT, "--expect", "http")
    assert (r["identified"], r["product"], r["tls"], r["matches"]) == ("http", "nginx", None, True)
    details = r["details"]
    assert isinstance(details, dict) and details["status"] == 301
    assert details["redirect_to_https"] is True
    assert details["location"] == f"https://{bed.cert_hostname}/"


@pytest.mark.root
def test_https_without_the_ca_is_untrusted(bed: TestBed) -> None:
    r, t = _probe_tls(bed, 443, ca=False)
    assert t["verified"] is False
    assert "authority" in t["verify_error"]
    assert "not trusted" in str(r["summary"])


@pytest.mark.root
def test_expired_certificate(bed: TestBed) -> None:
    r, t = _probe_tls(bed, 8443)
    assert t["expired"] is True and t["days_left"] < 0 and t["verified"] is True
    assert dt.datetime.fromisoformat(t["not_after"]) < dt.datetime.now(dt.UTC)
    assert "expired" in str(r["summary"])


@pytest.mark.root
def test_certificate_for_another_name(bed: TestBed) -> None:
    r, t = _probe_tls(bed, 9443)
    assert t["hostname_match"] is False and bed.wrong_hostname in t["san"] and t["verified"] is True
    assert f"not for {bed.cert_hostname}" in str(r["summary"])


@pytest.mark.root
def test_plain_http_on_a_tls_port(bed: TestBed) -> None:
    r = _probe(bed, 8444, "--expect", "https")
    assert (r["identified"], r["matches"], r["_rc"]) == ("http", False, 1)
    assert "plain HTTP, not TLS" in str(r["summary"])
    details = r["details"]
    assert isinstance(details, dict) and "plain text" in details["tls_error"]


@pytest.mark.root
def test_closed_port_and_ipv6(bed: TestBed) -> None:
    proc = portscope("probe", bed.addr6, "81", "80", "--json")
    assert proc.returncode == 1
    by_port = {r["port"]: r for r in json.loads(proc.stdout)}
    assert (by_port[81]["status"], by_port[81]["identified"]) == ("closed", None)
    assert (by_port[80]["identified"], by_port[80]["product"]) == ("http", "nginx")


@pytest.mark.root
def test_table_output_names_the_problem(bed: TestBed) -> None:
    proc = portscope("probe", f"{bed.addr4}:8443", "--sni", bed.cert_hostname, "--ca-file", str(bed.ca_pem))
    assert proc.returncode == 0, proc.stderr
    assert "8443/tcp" in proc.stdout and "https" in proc.stdout and "expired" in proc.stdout


def test_bad_input_is_one_line() -> None:
    for args in (
        ["127.0.0.1:80", "--ca-file", "/nonexistent.pem"],
        ["127.0.0.1:80", "--probe-timeout", "0"],
        ["127.0.0.1"],
        ["127.0.0.1:99999"],
    ):
        proc = portscope("probe", *args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


# -- hostile peers on loopback -------------------------------------------------------------------------


@pytest.fixture
def peer() -> Iterator[Callable[[Callable[[socket.socket], None]], int]]:
    """Start a TCP server on 127.0.0.1 running `behave` on every connection; yields its port."""
    servers: list[socket.socket] = []
    stop = threading.Event()

    def start(behave: Callable[[socket.socket], None]) -> int:
        srv = socket.create_server(("127.0.0.1", 0))
        srv.settimeout(0.2)
        servers.append(srv)

        def loop() -> None:
            while not stop.is_set():
                try:
                    conn, _ = srv.accept()
                except TimeoutError:
                    continue
                except OSError:
                    return
                threading.Thread(target=_serve, args=(conn, behave), daemon=True).start()

        threading.Thread(target=loop, daemon=True).start()
        return int(srv.getsockname()[1])

    yield start
    stop.set()
    for s in servers:
        s.close()


def _serve(conn: socket.socket, behave: Callable[[socket.socket], None]) -> None:
    try:
        behave(conn)
    except OSError:
        pass
    finally:
        conn.close()


def _flood(conn: socket.socket) -> None:
    chunk = b"A" * 65536
    conn.settimeout(10)
    for _ in range(2000):  # up to 128 MiB, far beyond what a probe may read
        conn.sendall(chunk)


def _escapes(conn: socket.socket) -> None:
    conn.sendall(b"220 \x1b]0;pwned\x07\x1b[2J evil\x9b31m banner\r\n")
    conn.settimeout(5)
    conn.recv(100)


def _stall(conn: socket.socket) -> None:
    conn.settimeout(20)
    while conn.recv(4096):
        pass


def _tls_garbage(conn: socket.socket) -> None:
    conn.settimeout(5)
    conn.recv(4096)
    conn.sendall(b"\x16\x03\x03\x00\x40" + bytes(range(64)) + b"\x16\x03\x01\xff\xff" + b"\x00" * 200)
    conn.recv(4096)


def _http_flood(conn: socket.socket) -> None:
    conn.settimeout(5)
    conn.recv(4096)
    conn.sendall(b"HTTP/1.1 200 OK\r\nServer: \x1b[31mred\r\n")
    for _ in range(2000):
        conn.sendall(b"X-Fill: " + b"y" * 1000 + b"\r\n")


@pytest.mark.parametrize("behave", [_flood, _escapes, _stall, _tls_garbage, _http_flood])
def test_hostile_peers_end_in_time_and_stay_escaped(
    peer: Callable[[Callable[[socket.socket], None]], int], behave: Callable[[socket.socket], None]
) -> None:
    port = peer(behave)
    # A hang would hit subprocess's timeout (a failure); the probe's own deadline is 3 s.
    for fmt in ("--json", "--csv", None):
        args = ["probe", f"127.0.0.1:{port}", "--probe-timeout", "3", "--expect", "https"]
        proc = portscope(*args, *([fmt] if fmt else []))
        assert proc.returncode == 1, proc.stderr
        assert "Traceback" not in proc.stderr
        assert not UNSAFE.search(proc.stdout.replace("\n", ""))
        assert "\x9b" not in proc.stdout
    result = json.loads(portscope("probe", f"127.0.0.1:{port}", "--probe-timeout", "3", "--json").stdout)[0]
    assert result["elapsed_ms"] < 3000 + 1500  # its deadline, plus closing; not a speed test
    assert len(json.dumps(result)) < 20000  # bounded, whatever the peer sent
    if behave is _escapes:
        assert "\\x1b]0;pwned" in (result["banner"] or "")


# -- parsers on arbitrary bytes ------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=4096))
def test_recognizers_never_raise(data: bytes) -> None:
    for recognize in (http.recognize, tls.recognize):
        ident = recognize(data)
        if ident is not None:
            for value in (ident.service, ident.product, ident.version, *map(str, ident.details.values())):
                assert value is None or not UNSAFE.search(value)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2048).map(lambda b: b"HTTP/1.1 200 OK\r\n" + b))
def test_http_heads_stay_clean_and_bounded(data: bytes) -> None:
    resp = http.parse_head(data)
    assert resp is not None
    for k, v in resp.headers.items():
        assert len(k) <= 65 and len(v) <= 513
        assert not UNSAFE.search(k + v)
    ident = http.identify(resp, tls=False)
    assert ident.protocol == "http"


def test_hostname_rules() -> None:
    cert, _ = self_signed_certificate("ignored.example", ["*.bed.test", "exact.test", "::1"], serial=1)
    assert tls.hostname_matches("a.bed.test", cert)
    assert tls.hostname_matches("EXACT.test.", cert)
    assert tls.hostname_matches("[::1]", cert)
    assert not tls.hostname_matches("bed.test", cert)  # a wildcard covers one label, not the parent
    assert not tls.hostname_matches("a.b.bed.test", cert)
    assert not tls.hostname_matches("ignored.example", cert)  # CN is ignored when SANs exist
    assert not tls.hostname_matches("127.0.0.1", cert)
