"""Fixtures of the monitor tests: the real servers of servers.py, where a history store lives (both
backends), and the `portscope watch` subprocesses of watchrun.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.monitor.servers import pg_server, pg_url, receiver, smtp
from tests.monitor.watchrun import Watches

__all__ = ["db", "pg_server", "pg_url", "receiver", "smtp", "watches"]


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.root)])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where the store lives: an SQLite file (in a directory that does not exist yet), or a fresh
    PostgreSQL database."""
    if request.param == "sqlite":
        return str(tmp_path / "state" / "history.db")
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def watches(tmp_path: Path) -> Iterator[Watches]:
    """Starts watch subprocesses (logs in tmp_path) and stops every one at the end of the test."""
    w = Watches(tmp_path)
    try:
        yield w
    finally:
        w.close()
