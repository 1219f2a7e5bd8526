"""TLS options against a real `openssl s_server` on loopback: --sni values that ssl would choke on, a
certificate pinned with --ca-file as curl and openssl trust it, and the other inputs probe and diagnose
refuse in one line (an unknown --expect, port 0).

The certificate is the one people make by hand, `openssl req -x509 ... -subj /CN=localhost -addext
subjectAltName=DNS:localhost`: self-signed, and marked CA:TRUE by openssl's default extensions, which
cryptography's verifier alone refuses for a leaf ("basicConstraints.cA must not be asserted in an EE
certificate") although `curl --cacert` and `openssl s_client -CAfile` accept it.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import portscope
from tests.probes.support import stop

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")


@dataclass(frozen=True)
class Server:
    port: int
    cert: Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def s_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    d = tmp_path_factory.mktemp("s_server")
    cert, key = d / "c.pem", d / "k.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost", "-days", "30",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )  # fmt: skip
    port = _free_port()
    proc = subprocess.Popen(
        ["openssl", "s_server", "-accept", f"127.0.0.1:{port}", "-cert", str(cert), "-key", str(key), "-www"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.05)
        yield Server(port, cert)
    finally:
        stop(proc)


def test_openssl_agrees_the_certificate_is_trusted_when_pinned(s_server: Server) -> None:
    """The reference: openssl itself verifies the server against the file (and so does curl)."""
    proc = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{s_server.port}", "-servername", "localhost",
         "-CAfile", str(s_server.cert), "-verify_return_error", "-brief"],
        input="", capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "Verification: OK" in proc.stderr


def test_a_pinned_self_signed_certificate_is_trusted(s_server: Server) -> None:
    proc = portscope(
        "probe", f"127.0.0.1:{s_server.port}", "--ca-file", str(s_server.cert), "--sni", "localhost", "--json"
    )
    assert proc.returncode in (0, 1), proc.stderr
    (r,) = json.loads(proc.stdout)
    t = r["tls"]
    assert (t["verified"], t["verify_error"], t["self_signed"], t["hostname_match"]) == (
        True,
        None,
        True,
        True,
    )
    assert "not trusted" not in r["summary"]


def test_unpinned_the_refusal_keeps_the_verifier_s_reason(s_server: Server) -> None:
    proc = portscope("probe", f"127.0.0.1:{s_server.port}", "--sni", "localhost", "--json")
    (r,) = json.loads(proc.stdout)
    t = r["tls"]
    assert t["verified"] is False
    assert t["verify_error"].startswith("self-signed certificate")
    assert "basicConstraints" in t["verify_error"]  # the underlying reason, not only our words


def test_diagnose_with_the_pinned_certificate_is_ok(s_server: Server) -> None:
    proc = portscope(
        "diagnose", "127.0.0.1", str(s_server.port), "--sni", "localhost", "--ca-file", str(s_server.cert),
        "--expect", "https", "--json",
    )  # fmt: skip
    d = json.loads(proc.stdout)
    assert (d["verdict"], proc.returncode) == ("ok", 0), d


def test_diagnose_untrusted_with_a_ca_file_does_not_advise_a_ca_file(
    s_server: Server, tmp_path: Path
) -> None:
    """--ca-file given and still untrusted: "use --ca-file" would send the reader in a circle."""
    other = tmp_path / "other.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-subj", "/CN=other", "-days", "30", "-keyout", str(tmp_path / "k.pem"), "-out", str(other)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    for ca in ([], ["--ca-file", str(other)]):
        proc = portscope(
            "diagnose",
            "127.0.0.1",
            str(s_server.port),
            "--sni",
            "localhost",
            "--expect",
            "https",
            "--json",
            *ca,
        )
        d = json.loads(proc.stdout)
        assert d["verdict"] == "tls_untrusted", d
        advice = " ".join(d["next_steps"])
        assert ("--ca-file CA.pem" in advice) is (not ca), advice


BAD_OPTIONS = [
    (["--sni", ""], "--sni '' is not a server name: it is empty"),
    (["--sni", ".foo"], "empty label"),
    (["--sni", "x..y"], "empty label"),
    (["--sni", "a" * 300], "at most 253"),
    (["--sni", "a" * 64 + ".example"], "at most 63"),
    (["--sni", "bad name"], "characters a host name cannot have"),
    (["--expect", "nosuchservice"], "--expect 'nosuchservice' is not a service portscope knows"),
]


@pytest.mark.parametrize(
    ("command", "extra", "words"),
    [
        (command, extra, words)
        for command in ("probe", "diagnose", "scan")
        for extra, words in BAD_OPTIONS
        if not (command == "scan" and extra[0] == "--expect")  # scan has no --expect
    ],
)
def test_bad_tls_options_are_one_line_on_an_open_tls_port(
    s_server: Server, command: str, extra: list[str], words: str
) -> None:
    target = {
        "probe": [f"127.0.0.1:{s_server.port}"],
        "diagnose": ["127.0.0.1", str(s_server.port)],
        "scan": ["127.0.0.1", "-p", str(s_server.port), "--probe"],
    }[command]
    proc = portscope(command, *target, *extra)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert words in proc.stderr
    if extra[0] == "--expect":
        assert "https" in proc.stderr and "kubelet" in proc.stderr  # the valid forms: registry and probes


@pytest.mark.parametrize("sni", ["127.0.0.1", "[::1]", "localhost.", "LocalHost"])
def test_good_server_names_are_accepted(s_server: Server, sni: str) -> None:
    proc = portscope("probe", f"127.0.0.1:{s_server.port}", "--sni", sni, "--json")
    assert proc.returncode in (0, 1), proc.stderr
    (r,) = json.loads(proc.stdout)
    expected = {"127.0.0.1": "127.0.0.1", "[::1]": "::1", "localhost.": "localhost", "LocalHost": "LocalHost"}
    assert r["tls"]["sni"] == expected[sni]
    assert r["tls"]["hostname_match"] is (sni not in ("127.0.0.1", "[::1]"))  # IP: checked against IP SANs


@pytest.mark.parametrize(
    "args",
    [["probe", "127.0.0.1:0"], ["probe", "127.0.0.1", "0"], ["probe", "127.0.0.1", "0-3"], ["diagnose", "127.0.0.1", "0"],
     ["diagnose", "127.0.0.1:0"]],
)  # fmt: skip
def test_port_zero_is_bad_input(args: list[str]) -> None:
    proc = portscope(*args)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "port 0" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
