"""Targets as users paste them: names, literals, HOST:PORT, URLs, blocks, ranges, files, exclusions."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from portscope.errors import BadInput
from portscope.net.targets import expand, read_target_file
from tests.helpers import portscope


def _addrs(items: list[str], **kw: object) -> list[str | None]:
    return [t.address for t in expand(items, **kw)]  # type: ignore[arg-type]


def test_literals_ports_and_urls() -> None:
    assert [(t.address, t.port) for t in expand(["127.0.0.1", "127.0.0.2:22", "[::1]:443"])] == [
        ("127.0.0.1", None),
        ("127.0.0.2", 22),
        ("::1", 443),
    ]
    assert [(t.host, t.address, t.port) for t in expand(["https://127.0.0.1/", "http://[::1]:8080/x"])] == [
        ("127.0.0.1", "127.0.0.1", 443),
        ("::1", "::1", 8080),
    ]
    assert expand(["ssh://127.0.0.1"])[0].port == 22


def test_names_resolve_to_every_address_and_keep_the_name() -> None:
    targets = expand(["localhost"])
    assert targets and all(t.host == "localhost" for t in targets)
    assert "127.0.0.1" in {t.address for t in targets}
    assert all(t.family == "ipv4" for t in expand(["localhost"], family="ipv4"))


def test_blocks_and_ranges() -> None:
    assert _addrs(["127.0.0.0/30"]) == ["127.0.0.0", "127.0.0.1", "127.0.0.2", "127.0.0.3"]
    assert _addrs(["127.0.0.1-3"]) == ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
    assert _addrs(["127.0.0.254-127.0.1.1"]) == ["127.0.0.254", "127.0.0.255", "127.0.1.0", "127.0.1.1"]
    assert len(_addrs(["::1/120"])) == 256


def test_exclusions_and_family() -> None:
    assert _addrs(["127.0.0.0/29"], exclude=["127.0.0.2", "127.0.0.4-5", "127.0.0.6/31"]) == [
        "127.0.0.0",
        "127.0.0.1",
        "127.0.0.3",
    ]
    assert _addrs(["127.0.0.1", "::1"], family="ipv6") == ["::1"]
    assert _addrs(["127.0.0.1", "127.0.0.1"]) == ["127.0.0.1"]


def test_unresolvable_name_is_a_result_not_a_crash() -> None:
    # In an empty network namespace, so the lookup never reaches the machine's real resolver.
    proc = portscope("check", "no-such-host.invalid", "1", offline=True)
    assert proc.returncode == 2 and "no-such-host.invalid" in proc.stderr
    proc = portscope("scan", "no-such-host.invalid", "127.0.0.1", "-p", "1", "--json", offline=True)
    assert proc.returncode == 1, proc.stderr
    by_host = {r["host"]: r for r in json.loads(proc.stdout)}
    assert by_host["no-such-host.invalid"]["status"] == "unresolved"
    assert by_host["no-such-host.invalid"]["reason"] == "dns-failure"
    assert by_host["no-such-host.invalid"]["address"] is None
    assert by_host["127.0.0.1"]["status"] == "closed"


@pytest.mark.parametrize(
    ("item", "needle"),
    [
        ("10.0.0.0/33", "0-32"),
        ("10.0.0.1-300", "0-255"),
        ("10.0.0.5-10.0.0.1", "lower"),
        ("[::1]:70000", "70000"),
        ("host:99999", "99999"),
        ("a b", "bad target"),
        ("fd00::/64", "/112"),
        ("0.0.0.0/0", "/12"),
        ("gopherx://h", "gopherx"),
        ("", "empty"),
    ],
)
def test_bad_targets_are_one_line_errors(item: str, needle: str) -> None:
    with pytest.raises(BadInput) as err:
        expand([item])
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_target_file(tmp_path: Path) -> None:
    f = tmp_path / "targets.txt"
    f.write_text("# lab\n127.0.0.1 127.0.0.2  # two\n\n[::1]:22\n")
    assert read_target_file(str(f)) == ["127.0.0.1", "127.0.0.2", "[::1]:22"]
    with pytest.raises(BadInput, match="cannot read"):
        read_target_file(str(tmp_path / "missing"))


@given(st.ip_addresses(v=4), st.integers(24, 32))
def test_any_ipv4_block_expands_to_exactly_its_addresses(addr: ipaddress.IPv4Address, prefix: int) -> None:
    net = ipaddress.ip_network(f"{addr}/{prefix}", strict=False)
    assert _addrs([f"{addr}/{prefix}"]) == [str(a) for a in net]
