"""Fixtures of the monitor tests: the real servers of servers.py."""

from tests.monitor.servers import pg_server, pg_url, receiver, smtp

__all__ = ["pg_server", "pg_url", "receiver", "smtp"]
