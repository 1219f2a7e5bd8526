"""diagnose against the network test bed: the seeds' five exercises and more, each reproduced with real
daemons and nftables, each asserting the verdict code and that the next steps name the cause."""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from tests.bed.bed import TestBed
from tests.helpers import portscope, start_sockhost

pytestmark = pytest.mark.root


def _diagnose(*args: str, netns: str | None = None, offline: bool = False) -> tuple[int, dict[str, object]]:
    proc = portscope("diagnose", *args, "--json", netns=netns, offline=offline)
    assert proc.returncode in (0, 1), proc.stderr
    out = json.loads(proc.stdout)
    assert isinstance(out, dict)
    assert set(out) >= {"verdict", "summary", "evidence", "next_steps"}
    for e in out["evidence"]:  # type: ignore[union-attr]
        assert set(e) >= {"check", "observation"} and e["observation"]
    return proc.returncode, out


def _steps(out: dict[str, object]) -> str:
    return " ".join(out["next_steps"])  # type: ignore[arg-type]


def test_refused_nothing_listens(bed: TestBed) -> None:
    rc, out = _diagnose(bed.addr4, "81")
    assert (rc, out["verdict"]) == (1, "refused")
    assert "portscope ls --port 81" in _steps(out)


def test_filtered_by_a_drop_rule(bed: TestBed) -> None:
    rc, out = _diagnose(bed.addr4, "8081", "--timeout", "4")
    assert (rc, out["verdict"]) == (1, "filtered")
    assert "firewall" in _steps(out)


def test_filtered_by_a_reject_rule_says_so(bed: TestBed) -> None:
    _, out = _diagnose(bed.addr4, "8083")
    assert out["verdict"] == "filtered" and "administratively prohibited" in str(out["summary"])


def test_unreachable(bed: TestBed) -> None:
    rc, out = _diagnose(bed.unreachable4, "22")
    assert (rc, out["verdict"]) == (1, "unreachable")
    assert f"ip route get {bed.unreachable4}" in _steps(out)


def test_plain_http_on_a_tls_port(bed: TestBed) -> None:
    _, out = _diagnose(f"{bed.addr4}:8444", "--expect", "https")
    assert out["verdict"] == "wrong_protocol"
    assert "wrong version number" in _steps(out) and "TLS" in str(out["summary"])


def test_expired_certificate(bed: TestBed) -> None:
    _, out = _diagnose(f"{bed.addr4}:8443", "--sni", bed.cert_hostname, "--ca-file", str(bed.ca_pem))
    assert out["verdict"] == "tls_expired" and "expired" in str(out["summary"])
    assert "renew" in _steps(out)


def test_certificate_for_another_name(bed: TestBed) -> None:
    _, out = _diagnose(f"{bed.addr4}:9443", "--sni", bed.cert_hostname, "--ca-file", str(bed.ca_pem))
    assert out["verdict"] == "tls_hostname_mismatch"
    assert bed.wrong_hostname in str(out["summary"]) and "SAN" in _steps(out)


def test_certificate_from_a_ca_not_given(bed: TestBed) -> None:
    _, out = _diagnose(f"{bed.addr4}:443", "--sni", bed.cert_hostname)
    assert out["verdict"] == "tls_untrusted"
    assert "--ca-file" in _steps(out)


def test_healthy_https_with_the_test_ca(bed: TestBed) -> None:
    rc, out = _diagnose(f"{bed.addr4}:443", "--sni", bed.cert_hostname, "--ca-file", str(bed.ca_pem))
    assert (rc, out["verdict"], out["next_steps"]) == (0, "ok", [])
    checks = [e["check"] for e in out["evidence"]]  # type: ignore[union-attr]
    assert checks[:3] == ["reach", "protocol", "tls"]


def test_dns_with_tcp_blocked(bed: TestBed) -> None:
    rc, out = _diagnose(bed.alt4, "53", "--timeout", "6")
    assert (rc, out["verdict"]) == (1, "dns_tcp_blocked")
    assert "TCP 53" in _steps(out) and "UDP" in str(out["summary"])


def test_healthy_dns(bed: TestBed) -> None:
    rc, out = _diagnose(bed.addr4, "53")
    assert (rc, out["verdict"]) == (0, "ok")


def test_database_listening_on_loopback_only(bed: TestBed) -> None:
    # From inside the server's namespace, against its external address (seed exercise 5).
    port = str(bed.loopback_only_port)
    rc, out = _diagnose(bed.alt4, port, "--expect", "postgresql", netns=bed.name)
    assert (rc, out["verdict"]) == (1, "loopback_only")
    assert "127.0.0.1" in str(out["summary"]) and "postgres" in str(out["summary"])
    assert "listen_addresses" in _steps(out)


def test_sshd_on_another_port_seen_on_the_server(bed: TestBed) -> None:
    rc, out = _diagnose(bed.alt4, "22", netns=bed.name)
    assert (rc, out["verdict"]) == (1, "service_on_other_port")
    assert str(bed.ssh_alt_port) in str(out["summary"]) and f"ssh -p {bed.ssh_alt_port}" in _steps(out)


def test_sshd_on_another_port_found_from_outside(bed: TestBed) -> None:
    _, out = _diagnose(bed.alt4, "22")
    assert out["verdict"] == "service_on_other_port"
    assert str(bed.ssh_alt_port) in str(out["summary"])


def test_port_in_use_by_a_real_process() -> None:
    host = start_sockhost([{"kind": "tcp-listen", "addr": "127.0.0.1"}])
    try:
        (port,) = host.ports()
        rc, out = _diagnose("--bind", f"127.0.0.1:{port}")
        assert (rc, out["verdict"]) == (1, "port_in_use")
        assert any(f'"pid": {pid}' in json.dumps(out) for pid in host.pids())
    finally:
        host.stop()


def test_dns_failure_offline() -> None:
    rc, out = _diagnose("no-such-host.invalid", "80", offline=True)
    assert (rc, out["verdict"]) == (1, "dns_failure")
    assert "getent hosts no-such-host.invalid" in _steps(out)


def test_every_check_timing_out_still_ends_in_time(bed: TestBed) -> None:
    # A dropped port that should be DNS: the TCP check, the UDP query and the probe all meet silence.
    port = str(next(iter(bed.filtered_range)))
    started = time.monotonic()
    proc = portscope("diagnose", bed.addr4, port, "--expect", "dns", "--timeout", "2", "--json")
    elapsed = time.monotonic() - started
    assert proc.returncode == 1, proc.stderr
    assert json.loads(proc.stdout)["verdict"] == "filtered"
    assert elapsed < 2 + 4  # the timeout, plus interpreter start-up and a margin for a busy machine


def test_bad_input_is_one_line() -> None:
    for args in (["127.0.0.1"], ["127.0.0.1", "70000"], ["10.0.0.0/24", "22"], ["--bind", "nonsense"]):
        proc = subprocess.run(
            [".venv/bin/python", "-m", "portscope", "diagnose", *args],
            capture_output=True,
            text=True,
            check=False,
        )
        assert proc.returncode == 2, (args, proc.stderr)
        assert len(proc.stderr.strip().splitlines()) == 1


def test_the_servers_own_firewall_is_named(bed: TestBed) -> None:
    # On the server itself: nginx listens on 8082, and the bed's nftables rejects it with a reset.
    rc, out = _diagnose(bed.addr4, "8082", netns=bed.name)
    assert (rc, out["verdict"]) == (1, "refused")
    checks = {e["check"]: e for e in out["evidence"]}  # type: ignore[union-attr]
    assert checks["listening"]["passed"] is True and checks["firewall"]["passed"] is False
    assert "8082" in checks["firewall"]["observation"] and "reject" in checks["firewall"]["observation"]
    assert out["next_steps"][0].startswith("allow it: nft insert rule inet psbed input tcp dport 8082 accept")  # type: ignore[index]


def test_tls_handshake_failed_on_a_broken_starttls(bed: TestBed) -> None:
    # The bed's OpenSMTPD offers STARTTLS and then fails the handshake itself (see the bed's truth for 25).
    rc, out = _diagnose(bed.addr4, "25", "--timeout", "6")
    assert (rc, out["verdict"]) == (1, "tls_handshake_failed")
    assert f"the TLS handshake with {bed.addr4}:25 fails" in str(out["summary"])
    checks = {e["check"]: e for e in out["evidence"]}  # type: ignore[union-attr]
    assert checks["protocol"]["passed"] is True and checks["tls"]["passed"] is False
    assert checks["tls"]["observation"] in out["next_steps"][0]  # type: ignore[index]
    assert f"openssl s_client -connect {bed.addr4}:25" in _steps(out)


def test_udp_dns_answers(bed: TestBed) -> None:
    rc, out = _diagnose(bed.addr4, "53", "--udp")
    assert (rc, out["verdict"], out["proto"]) == (0, "ok", "udp")
    checks = {e["check"]: e for e in out["evidence"]}  # type: ignore[union-attr]
    assert checks["reach"]["data"]["check"]["reason"] == "udp-response"
    assert checks["dns_udp"]["passed"] is True and "dns_tcp" not in checks
    assert "UDP" in str(out["summary"])


def test_udp_nothing_listening_is_refused_by_icmp(bed: TestBed) -> None:
    rc, out = _diagnose(bed.addr4, "54", "--udp")
    assert (rc, out["verdict"]) == (1, "refused")
    assert "ICMP port unreachable" in str(out["summary"]) and "reset" not in str(out["summary"])
    assert "portscope ls --udp --port 54" in _steps(out)


def test_udp_dropped_is_filtered(bed: TestBed) -> None:
    # nft drops udp 5353: no ICMP, no answer; UDP cannot tell that from a silent service (open|filtered).
    rc, out = _diagnose(bed.addr4, "5353", "--udp", "--timeout", "4")
    assert (rc, out["verdict"]) == (1, "filtered")
    checks = {e["check"]: e for e in out["evidence"]}  # type: ignore[union-attr]
    assert checks["reach"]["data"]["check"]["status"] == "open|filtered"
    assert "open|filtered" in str(out["summary"]) and "tcpdump -ni any udp port 5353" in _steps(out)


def test_local_reads_this_hosts_sockets_for_an_address_not_its_own(bed: TestBed) -> None:
    # --local: HOST is this machine although its address is not one of ours (a NAT or port-forward in
    # front). Inside the bed, against the root side's address, PostgreSQL's 127.0.0.1:5433 is found.
    port = str(bed.loopback_only_port)
    _, plain = _diagnose(bed.local4, port, "--expect", "postgresql", netns=bed.name)
    assert plain["verdict"] != "loopback_only"
    assert "listening" not in {e["check"] for e in plain["evidence"]}  # type: ignore[union-attr]
    rc, out = _diagnose(bed.local4, port, "--expect", "postgresql", "--local", netns=bed.name)
    assert (rc, out["verdict"]) == (1, "loopback_only")
    checks = {e["check"]: e for e in out["evidence"]}  # type: ignore[union-attr]
    assert checks["listening"]["passed"] is False and "127.0.0.1:5433" in checks["listening"]["observation"]
    assert "postgres" in str(out["summary"]) and "listen_addresses" in _steps(out)
