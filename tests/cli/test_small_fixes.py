"""Small output fixes: who --csv names both users apart, services 0 says what port 0 means."""

from __future__ import annotations

from tests.helpers import portscope, start_sockhost


def test_who_csv_names_both_users_distinctly() -> None:
    host = start_sockhost([{"kind": "tcp-listen", "addr": "127.0.0.1"}])
    try:
        port = host.report["sockets"][0]["port"]
        proc = portscope("who", str(port), "--csv")
    finally:
        host.stop()
    assert proc.returncode == 0
    header, *rows = proc.stdout.splitlines()
    fields = header.split(",")
    assert len(fields) == len(set(fields))
    assert {"user", "socket_user"} <= set(fields) and rows


def test_services_port_zero_says_the_kernel_picks_a_port() -> None:
    proc = portscope("services", "0")
    assert "needs root" not in proc.stdout and "PORT" not in proc.stdout
    assert "asks the kernel for a free ephemeral port" in proc.stdout
