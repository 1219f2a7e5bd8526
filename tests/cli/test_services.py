"""`portscope services`: the registry as a user asks it, in JSON and in the table."""

from __future__ import annotations

from pathlib import Path

from tests.helpers import portscope, portscope_json


def test_port_443_shows_https_and_its_plaintext_twin() -> None:
    found = portscope_json("services", "443/tcp")
    assert [(s["port"], s["proto"], s["name"]) for s in found] == [(443, "tcp", "https")]
    assert found[0]["tls_twin"] == 80 and found[0]["plaintext"] is False
    assert found[0]["port_class"] == "well-known"


def test_name_lookup() -> None:
    found = portscope_json("services", "postgresql")
    assert {s["port"] for s in found} == {5432}
    [tcp] = [s for s in found if s["proto"] == "tcp"]
    assert tcp["category"] == "database" and tcp["loopback_only"] and "curated" in tcp["sources"]


def test_range_lists_only_ports_inside_it() -> None:
    found = portscope_json("services", "8000-8100", "-t")
    assert found and all(8000 <= s["port"] <= 8100 and s["proto"] == "tcp" for s in found)
    assert 8080 in {s["port"] for s in found}


def test_category() -> None:
    found = portscope_json("services", "--category", "database")
    ports = {s["port"] for s in found}
    assert {3306, 5432, 6379, 27017} <= ports
    assert {s["category"] for s in found} == {"database"}
    bad = portscope("services", "--category", "bogus")
    assert bad.returncode == 2 and "bogus" in bad.stderr and "database" in bad.stderr


def test_table_explains_misleading_iana_names_and_port_classes() -> None:
    out = portscope("services", "9200")
    assert out.returncode == 0
    assert "elasticsearch" in out.stdout and "wap-wsp" in out.stdout
    assert "registered port" in out.stdout
    low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    inside = portscope("services", str((low + high) // 2)).stdout
    assert f"ephemeral range {low}-{high}" in inside


def test_unknown_name_is_bad_input() -> None:
    proc = portscope("services", "no-such-service-anywhere")
    assert proc.returncode == 2 and "no-such-service-anywhere" in proc.stderr


def test_submission_has_465_as_its_tls_twin() -> None:
    [sub] = [s for s in portscope_json("services", "587") if s["proto"] == "tcp"]
    assert (sub["name"], sub["tls_twin"], sub["plaintext"]) == ("submission", 465, True)
    [smtps] = portscope_json("services", "465/tcp")
    assert smtps["tls_twin"] == 25 and not smtps["plaintext"]
