"""The registry against its sources: IANA's CSV, this host's /etc/services, and the seeds' facts."""

from __future__ import annotations

import csv
import gzip
import socket
import subprocess
from pathlib import Path

import pytest

from portscope import registry
from portscope.errors import BadInput
from portscope.registry import etc_services, iana
from tests.helpers import ROOT

IANA_CSV = ROOT.parent / "shared" / "data" / "iana-service-names-port-numbers.csv.gz"


def test_package_file_is_the_whole_iana_registry() -> None:
    """Every TCP/UDP row of IANA's CSV that names a port is in the package file, and nothing else."""
    expected: set[tuple[int, str, str]] = set()
    with gzip.open(IANA_CSV, "rt", encoding="utf-8", newline="") as fh:
        for rec in csv.DictReader(fh):
            name, proto, ports = rec["Service Name"], rec["Transport Protocol"], rec["Port Number"]
            if name and ports and proto in ("tcp", "udp"):
                low, _, high = ports.partition("-")
                expected.update((p, proto, name.lower()) for p in range(int(low), int(high or low) + 1))
    loaded = {(port, proto, name) for (port, proto), entries in iana.load().items() for name, _ in entries}
    assert loaded == expected
    assert len(loaded) > 11000


def test_curated_name_wins_where_iana_misleads() -> None:
    [es] = registry.lookup_port(9200, "tcp")
    assert es.name == "elasticsearch" and es.iana_name == "wap-wsp"
    assert es.loopback_only and es.category == "database"
    assert "curated" in es.sources and "iana" in es.sources
    assert registry.service_name(9200, "tcp") == "elasticsearch"


def test_host_etc_services_names_match_getservbyport() -> None:
    """Where the curated layer is silent, we print the same name as ss/getservbyport on this host."""
    curated = {(c.port, p) for c in registry.CURATED for p in c.protos}
    checked = 0
    for (port, proto), (name, _aliases) in etc_services.load().items():
        if (port, proto) in curated:
            continue
        assert registry.service_name(port, proto) == socket.getservbyport(port, proto) == name
        checked += 1
    if Path("/etc/services").exists():
        assert checked > 50


def test_iana_fills_ports_the_host_does_not_name() -> None:
    etc = etc_services.load()
    curated = {(c.port, p) for c in registry.CURATED for p in c.protos}
    only_iana = [k for k in iana.load() if k not in etc and k not in curated]
    assert only_iana
    for port, proto in only_iana[:200]:
        assert registry.service_name(port, proto) == iana.load()[(port, proto)][0][0]


@pytest.mark.parametrize(
    ("plain", "tls"), [(80, 443), (143, 993), (110, 995), (25, 465), (389, 636), (21, 990)]
)
def test_tls_twins_are_reciprocal(plain: int, tls: int) -> None:
    [p] = registry.lookup_port(plain, "tcp")
    [t] = registry.lookup_port(tls, "tcp")
    assert p.plaintext and p.tls_twin == tls
    assert not t.plaintext and t.tls_twin == plain


def test_submission_shares_smtps_as_its_tls_port() -> None:
    """25/465/587 are one group: 465 is the TLS form of submission too (RFC 8314), and names 25."""
    [sub] = registry.lookup_port(587, "tcp")
    assert sub.name == "submission" and sub.plaintext and sub.tls_twin == 465
    [smtps] = registry.lookup_port(465, "tcp")
    assert smtps.tls_twin == 25


@pytest.mark.parametrize("port", [6379, 11211, 27017, 5432, 3306, 2375, 2379, 2380, 10250, 9200])
def test_never_beyond_loopback(port: int) -> None:
    [info] = registry.lookup_port(port, "tcp")
    assert info.loopback_only, info


def test_categories_cover_the_seeds_tables() -> None:
    def ports(cat: str) -> set[int]:
        return {s.port for s in registry.by_category(cat)}

    assert {80, 443, 8080} <= ports("web")
    assert {25, 110, 143, 465, 587, 993, 995} <= ports("mail")
    assert {3306, 5432, 6379, 27017} <= ports("database")
    assert {22, 3389, 5900} <= ports("remote-access")
    assert {21} <= ports("file transfer")
    assert {53, 123, 161} <= ports("network-services")
    assert {2375, 6443, 10250} <= ports("container-orchestration")
    assert {9090, 9100} <= ports("monitoring")
    assert {5672, 9092} <= ports("message-queue")
    for cat in registry.CATEGORIES:
        assert all(s.category == cat for s in registry.by_category(cat))
    with pytest.raises(BadInput, match="bogus"):
        registry.by_category("bogus")


def test_names_and_aliases_are_case_insensitive() -> None:
    assert {s.port for s in registry.lookup_name("PostgreSQL")} == {5432}
    assert 5432 in {s.port for s in registry.lookup_name("postgres")}
    assert {s.port for s in registry.lookup_name("ssh")} == {22}
    assert registry.lookup_name("no-such-service-anywhere") == []


def test_top_ports_are_our_ranked_list() -> None:
    top = registry.top_ports(1000)
    assert len(top) == len(set(top)) == 1000
    assert {80, 443, 22} <= set(top[:5])
    assert all(0 <= p <= 65535 for p in top)
    assert len(set(registry.top_ports(65536))) == 65536
    assert 53 in registry.top_ports(3, "udp")
    with pytest.raises(BadInput):
        registry.top_ports(0)


def test_port_class_edges() -> None:
    cls = registry.port_class
    assert [cls(p) for p in (0, 1023, 1024, 49151, 49152, 65535)] == [
        "well-known",
        "well-known",
        "registered",
        "registered",
        "dynamic",
        "dynamic",
    ]


def test_ephemeral_range_is_the_kernels() -> None:
    out = subprocess.run(["sysctl", "-n", "net.ipv4.ip_local_port_range"], capture_output=True, text=True)
    if out.returncode != 0:
        pytest.skip("no sysctl binary")  # pragma: no cover
    low, high = map(int, out.stdout.split())
    eph = registry.ephemeral_range()
    assert (eph.low, eph.high, eph.size) == (low, high, high - low + 1)
    assert eph.contains(low) and eph.contains(high) and not eph.contains(high + 1)


def test_names_table_is_the_first_iana_name_of_every_port() -> None:
    """names.txt (the hot path's table) and iana.tsv come from one build: they must agree."""
    primary = iana.primary_names()
    full = iana.load()
    assert len(primary) == len(full)
    for (port, proto), entries in full.items():
        assert primary[registry.name_key(port, proto)] == entries[0][0]
