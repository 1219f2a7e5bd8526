"""What the probes say, in the reader's language where a human reads it, English where a script does.

The probe's sentence ("443/tcp answers plain HTTP, not TLS"), its TLS errors and certificate verdicts
are English in `probe --json` (and in diagnose's `data.probe`) whatever the locale; `diagnose --lang
pt` shows them in Portuguese in its evidence and summary, with verdict codes and JSON keys English.
The Portuguese is written out here, not read from the catalog, so a lost translation fails.
"""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import portscope
from tests.probes.support import self_signed, server_context

PT = {"LC_ALL": "", "LC_MESSAGES": "", "LANGUAGE": "", "LANG": "pt_BR.UTF-8"}


class _Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"hello\n"
        self.send_response(200)
        self.send_header("Server", "hello/1.0")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def _serve(tls_dir: Path | None = None) -> http.server.ThreadingHTTPServer:
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    if tls_dir is not None:
        cert, key = self_signed(tls_dir, "localhost", ["localhost"])
        srv.socket = server_context(cert, key).wrap_socket(srv.socket, server_side=True)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


@pytest.fixture
def plain_port() -> Iterator[int]:
    srv = _serve()
    yield int(srv.server_address[1])
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def self_signed_port(tmp_path: Path) -> Iterator[int]:
    srv = _serve(tmp_path)
    yield int(srv.server_address[1])
    srv.shutdown()
    srv.server_close()


def _evidence(d: dict[str, object], check: str) -> dict[str, object]:
    ev = d["evidence"]
    assert isinstance(ev, list)
    return next(e for e in ev if e["check"] == check)


def test_plain_http_on_a_tls_port_in_portuguese(plain_port: int) -> None:
    args = ["diagnose", "127.0.0.1", str(plain_port), "--expect", "https", "--lang", "pt"]
    text = portscope(*args)
    assert text.returncode == 1, text.stderr
    lines = text.stdout.splitlines()
    assert lines[0].startswith("wrong_protocol: ")  # the code stays English
    assert f"{plain_port}/tcp responde HTTP puro, não TLS (esperado: https)" in lines[0]
    protocol = next(line for line in lines if "protocol:" in line)
    assert "responde HTTP puro, não TLS" in protocol and "answers" not in protocol

    proc = portscope(*args, "--json")
    d = json.loads(proc.stdout)
    assert d["verdict"] == "wrong_protocol"
    assert {"verdict", "summary", "evidence", "next_steps"} <= set(d)
    ev = _evidence(d, "protocol")
    assert set(ev) == {"check", "observation", "passed", "data"}
    assert "responde HTTP puro, não TLS" in str(ev["observation"])
    data = ev["data"]
    assert isinstance(data, dict)
    probe = data["probe"]  # the probe's own object: English, as probe --json
    assert "answers plain HTTP, not TLS (expected https)" in probe["summary"]
    assert "plain text, not TLS" in probe["details"]["tls_error"]


def test_certificate_errors_in_portuguese(self_signed_port: int) -> None:
    args = ["diagnose", "127.0.0.1", str(self_signed_port), "--sni", "localhost", "--expect", "https"]
    d = json.loads(portscope(*args, "--lang", "pt", "--json").stdout)
    assert d["verdict"] == "tls_untrusted"
    assert "certificado autoassinado (o emissor é ele mesmo)" in d["summary"]
    assert "certificado não confiável: certificado autoassinado" in str(
        _evidence(d, "protocol")["observation"]
    )
    assert "self-signed certificate" in _evidence(d, "protocol")["data"]["probe"]["tls"]["verify_error"]  # type: ignore[index]
    english = json.loads(portscope(*args, "--lang", "en", "--json").stdout)
    assert "self-signed certificate (its issuer is itself)" in english["summary"]


def test_probe_json_stays_english_in_a_portuguese_locale(plain_port: int) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "portscope",
            "probe",
            f"127.0.0.1:{plain_port}",
            "--expect",
            "https",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "NO_COLOR": "1", **PT},
    )
    (r,) = json.loads(proc.stdout)
    assert r["summary"] == f"{plain_port}/tcp answers plain HTTP, not TLS (expected https)"
    assert r["details"]["tls_error"].startswith("the server answered in plain text")
    # the same locale does speak Portuguese where a human reads: diagnose without --lang
    d = subprocess.run(
        [sys.executable, "-m", "portscope", "diagnose", "127.0.0.1", str(plain_port), "--expect", "https"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "NO_COLOR": "1", **PT},
    )
    assert "responde HTTP puro, não TLS" in d.stdout, d.stdout + d.stderr
