"""`check` and `scan` as users run them: exit codes, JSON, and the files other tools read (nmap XML, -oG)."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import portscope


@pytest.fixture
def listener() -> Iterator[int]:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(16)
    yield s.getsockname()[1]
    s.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_check_open_and_closed_with_exit_codes(listener: int) -> None:
    closed = _free_port()
    proc = portscope("check", "127.0.0.1", str(listener), "--json")
    assert proc.returncode == 0, proc.stderr
    (r,) = json.loads(proc.stdout)
    assert (r["status"], r["reason"], r["address"], r["port"]) == ("open", "syn-ack", "127.0.0.1", listener)
    proc = portscope("check", "127.0.0.1", str(listener), str(closed), "--json")
    assert proc.returncode == 1
    got = {r["port"]: r["status"] for r in json.loads(proc.stdout)}
    assert got == {listener: "open", closed: "closed"}


def test_check_explains_a_refusal_in_words(listener: int) -> None:
    closed = _free_port()
    proc = portscope("check", f"127.0.0.1:{closed}")
    assert proc.returncode == 1
    assert "refused" in proc.stdout and "nothing listens" in proc.stdout
    assert "portscope ls" in proc.stdout  # the next step, as the seeds give it


def test_check_url_means_the_scheme_port(listener: int) -> None:
    proc = portscope("check", f"http://127.0.0.1:{listener}/path", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)[0]["port"] == listener


def test_check_both_loopback_families_of_a_name(listener: int) -> None:
    proc = portscope("check", "localhost", str(listener), "--json")
    rows = json.loads(proc.stdout)
    by_addr = {r["address"]: r["status"] for r in rows}
    assert by_addr["127.0.0.1"] == "open"
    assert all(r["host"] == "localhost" for r in rows)
    # Bound to 127.0.0.1 only: ::1, when localhost has it, is refused, so the check as a whole fails.
    if "::1" in by_addr:
        assert by_addr["::1"] == "closed" and proc.returncode == 1


def _scan_xml(tmp_path: Path, name: str, *args: str) -> Path:
    out = tmp_path / name
    proc = portscope("scan", *args, "-oX", str(out))
    assert proc.returncode in (0, 1), proc.stderr
    return out


def test_scan_xml_is_nmap_shaped_and_ndiff_reads_it(tmp_path: Path) -> None:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(4)
    port = s.getsockname()[1]
    spec = f"{port - 2}-{port + 2}"
    before = _scan_xml(tmp_path, "before.xml", "127.0.0.1", "-p", spec)
    s.close()
    after = _scan_xml(tmp_path, "after.xml", "127.0.0.1", "-p", spec)

    root = ET.parse(before).getroot()
    assert root.tag == "nmaprun" and root.get("xmloutputversion") == "1.05"
    states = {int(p.get("portid", "0")): p.find("state").get("state") for p in root.iter("port")}  # type: ignore[union-attr]
    assert states[port] == "open"
    assert ET.parse(after).getroot().find(f".//port[@portid='{port}']/state").get("state") == "closed"  # type: ignore[union-attr]

    if shutil.which("ndiff") is None:
        pytest.skip("ndiff (Debian package ndiff) is not installed; scripts/apt-test-deps.sh installs it")
    diff = subprocess.run(["ndiff", str(before), str(after)], capture_output=True, text=True, timeout=60)
    assert diff.returncode == 1, diff.stderr  # 1: the scans differ
    assert f"{port}/tcp" in diff.stdout and "open" in diff.stdout and "closed" in diff.stdout
    same = subprocess.run(["ndiff", str(after), str(after)], capture_output=True, text=True, timeout=60)
    assert same.returncode == 0, same.stderr


def test_scan_grepable_and_json(listener: int) -> None:
    spec = f"{listener - 1}-{listener + 1}"
    proc = portscope("scan", "127.0.0.1", "-p", spec, "-oG", "-")
    assert proc.returncode == 0, proc.stderr
    ports_line = next(line for line in proc.stdout.splitlines() if "Ports:" in line)
    assert f"{listener}/open/tcp/" in ports_line
    proc = portscope("scan", "127.0.0.1", "-p", spec, "--json")
    rows = json.loads(proc.stdout)
    assert [r["port"] for r in rows] == [listener - 1, listener, listener + 1]
    assert {r["port"] for r in rows if r["status"] == "open"} >= {listener}
    assert set(rows[0]) >= {"host", "address", "port", "proto", "status", "reason", "latency_ms", "service"}


def test_scan_table_folds_closed_ports_and_counts(listener: int) -> None:
    low = max(1, listener - 200)
    proc = portscope("scan", "127.0.0.1", "-p", f"{low}-{low + 400}", "--open")
    assert proc.returncode == 0, proc.stderr
    assert str(listener) in proc.stdout
    assert "401 probes" in proc.stdout
    assert proc.stdout.count("closed") <= 2  # folded, not 400 lines


def test_scan_top_ports_come_from_the_registry() -> None:
    proc = portscope("scan", "127.0.0.1", "--top", "25", "--json")
    rows = json.loads(proc.stdout)
    ports = {r["port"] for r in rows}
    assert len(rows) == 25 and {22, 80, 443} <= ports


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["scan", "127.0.0.1", "-p", "70000"], "70000"),
        (["scan", "127.0.0.0/33", "-p", "1"], "0-32"),
        (["scan", "127.0.0.1", "-p", "1", "--timeout", "0"], "--timeout"),
        (["scan", "127.0.0.1", "-p", "1", "--concurrency", "0"], "--concurrency"),
        (["scan", "127.0.0.0/16", "-p", "1-100"], "--yes"),
        (["scan", "127.0.0.0/8", "-p", "1"], "/12"),
        (["check", "127.0.0.1"], "no port"),
    ],
)
def test_bad_scan_input_is_one_line_and_exit_2(args: list[str], needle: str) -> None:
    proc = portscope(*args)
    assert proc.returncode == 2
    assert needle in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert "Traceback" not in proc.stderr


def test_udp_silence_next_to_icmp_refusals_is_flagged_as_rate_limiting() -> None:
    from portscope.cli.reach import icmp_rate_limit_notes
    from portscope.model import CheckResult

    def r(port: int, status: str, addr: str = "198.18.0.2") -> CheckResult:
        return CheckResult("h", addr, port, "udp", status, "no-response")

    limited = [r(1, "closed"), *(r(p, "open|filtered") for p in range(2, 14))]
    (note,) = icmp_rate_limit_notes(limited)
    assert "198.18.0.2" in note and "12 stayed silent" in note and "--rate 1" in note
    # All silent (a firewall drops everything), or few silent: no such guess.
    assert icmp_rate_limit_notes([r(p, "open|filtered") for p in range(20)]) == []
    assert icmp_rate_limit_notes([r(1, "closed"), r(2, "open|filtered")]) == []
