"""pytest fixtures for the network test bed; loaded suite-wide by tests/conftest.py (pytest_plugins).

One bed per session: building it costs one to two seconds, and tests only read it. A test that needs to
break a bed (the teardown tests) builds its own TestBed.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.bed.bed import BedUnavailable, TestBed, unavailable_reason


@pytest.fixture(scope="session")
def bed() -> Iterator[TestBed]:
    """A running bed; skips (a failure under CI=true) when this machine cannot build one."""
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    try:
        test_bed = TestBed().up()
    except BedUnavailable as exc:
        pytest.skip(str(exc))
    try:
        yield test_bed
    finally:
        test_bed.down()
