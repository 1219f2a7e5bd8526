"""Numeric options: out of range, zero and negative values are bad input naming the valid range."""

from __future__ import annotations

import pytest

from tests.helpers import portscope


def test_scan_top_zero_is_bad_input() -> None:
    proc = portscope("scan", "127.0.0.1", "--top", "0")
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "--top takes 1-65536" in proc.stderr


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("scan", "127.0.0.1", "--timeout", "-1"), "between 0.001 and 600"),
        (("scan", "127.0.0.1", "--rate", "-5"), "at most 10000000"),
        (("scan", "127.0.0.1", "--top", "-5"), "--top takes 1-65536"),
        (("scan", "127.0.0.1", "--retries", "-1"), "give 0-10"),
        (("scan", "127.0.0.1", "--concurrency", "-2"), "give 1-100000"),
        (("check", "127.0.0.1", "22", "--timeout", "-0.5"), "between 0.001 and 600"),
        (("probe", "127.0.0.1:22", "--probe-timeout", "-1"), "between 0.1 and 600"),
    ],
)
def test_negative_numbers_name_the_valid_range(args: tuple[str, ...], needle: str) -> None:
    proc = portscope(*args)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and needle in proc.stderr, proc.stderr
    assert "expected one argument" not in proc.stderr


def test_negative_number_rewrite_leaves_the_rest_alone() -> None:
    from portscope.cli.main import join_negative_values

    numeric = {"--timeout", "--top"}
    assert join_negative_values(["scan", "-4", "--timeout", "-1", "h"], numeric) == [
        "scan",
        "-4",
        "--timeout=-1",
        "h",
    ]
    assert join_negative_values(["scan", "--top", "5", "--", "--top", "-1"], numeric) == [
        "scan",
        "--top",
        "5",
        "--",
        "--top",
        "-1",
    ]
