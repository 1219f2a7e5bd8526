"""Port specs: the one grammar every command accepts (DESIGN.md), and its one-line errors."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from portscope.errors import BadInput
from portscope.registry import parse_ports


def test_single_port_means_both_protocols() -> None:
    spec = parse_ports("22")
    assert spec.contains(22, "tcp") and spec.contains(22, "udp")
    assert not spec.contains(23, "tcp")


def test_protocol_suffix_restricts() -> None:
    spec = parse_ports("22/tcp,53/udp")
    assert spec.ports("tcp") == [22] and spec.ports("udp") == [53]
    assert not spec.contains(53, "tcp") and not spec.contains(22, "udp")


def test_lists_ranges_and_all() -> None:
    assert parse_ports("80,443").ports("tcp") == [80, 443]
    assert parse_ports("8000-8100").count("tcp") == 101
    everything = parse_ports("-")
    assert everything.count("tcp") == 65536 and everything.contains(0) and everything.contains(65535, "udp")


def test_service_names_resolve_through_the_registry() -> None:
    spec = parse_ports("ssh,https", default_protos=("tcp",))
    assert spec.ports("tcp") == [22, 443]
    assert 5432 in parse_ports("postgresql").ports("tcp")
    assert 53 in parse_ports("domain/udp").ports("udp")


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ("70000", "70000"),
        ("-1", "-1"),
        ("8100-8000", "backwards"),
        ("22/sctp", "sctp"),
        ("", "empty"),
        ("80,,443", "empty"),
        ("nosuchservicename", "nosuchservicename"),
        ("1-99999", "99999"),
        ("2x", "2x"),
    ],
)
def test_bad_specs_name_the_problem(spec: str, needle: str) -> None:
    with pytest.raises(BadInput) as err:
        parse_ports(spec)
    msg = str(err.value)
    assert needle in msg and "\n" not in msg


_ranges = st.lists(st.tuples(st.integers(0, 65535), st.integers(0, 300)), min_size=1, max_size=12)


@given(_ranges, st.lists(st.integers(0, 65535), max_size=40))
def test_contains_agrees_with_a_plain_set(ranges: list[tuple[int, int]], probes: list[int]) -> None:
    expected: set[int] = set()
    parts = []
    for low, width in ranges:
        high = min(low + width, 65535)
        expected.update(range(low, high + 1))
        parts.append(f"{low}-{high}/tcp")
    spec = parse_ports(",".join(parts))
    assert spec.count("tcp") == len(expected) and spec.count("udp") == 0
    for port in [*probes, *(r[0] for r in ranges)]:
        assert spec.contains(port, "tcp") == (port in expected)
        assert not spec.contains(port, "udp")


def test_unicode_digits_are_bad_input_not_a_crash() -> None:
    # "²".isdigit() is true but int("²") fails: such input must be the usual one-line error.
    for spec in ("²", "8²", "²-3", "٣"):
        with pytest.raises(BadInput):
            parse_ports(spec)
