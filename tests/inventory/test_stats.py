"""portscope stats: counts agree with ss, and the seeds' warnings fire on real trouble."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from tests.helpers import portscope, ss, start_sockhost


def test_close_wait_leak_and_fd_pressure_are_found() -> None:
    host = start_sockhost(
        [
            {"kind": "close-wait", "addr": "127.0.0.1", "count": 12},
            {"kind": "fds", "count": 45, "limit": 70},
        ]
    )
    try:
        before = Counter((r["proto"], r["state"]) for r in ss())
        proc = portscope("stats", "--json")
        after = Counter((r["proto"], r["state"]) for r in ss())
        assert proc.returncode == 1, proc.stderr  # findings: a negative answer
        st = json.loads(proc.stdout)
        assert {"pid": host.pid, "name": "python3", "count": 12} in st["close_wait"] or any(
            c["pid"] == host.pid and c["count"] == 12 for c in st["close_wait"]
        )
        codes = [(f["code"], f["message"]) for f in st["findings"]]
        assert any(c == "close_wait_leak" and f"pid {host.pid}" in m for c, m in codes)
        pressure = [p for p in st["fd_pressure"] if p["pid"] == host.pid]
        assert pressure and pressure[0]["limit"] == 70 and pressure[0]["open"] >= 45 + 12
        assert any(c == "fd_limit" and f"pid {host.pid}" in m for c, m in codes)
        # TIME_WAIT counted as ss counts it (ss runs just before and just after us: TIME_WAITs of other
        # programs come and go meanwhile)
        assert st["sockets"]["tcp"].get("CLOSE_WAIT", 0) >= 12
        tw = [c[("tcp", "TIME_WAIT")] for c in (before, after)]
        assert min(tw) - 2 <= st["sockets"]["tcp"].get("TIME_WAIT", 0) <= max(tw) + 2
        # The 12 closed clients end as FIN_WAIT2 or TIME_WAIT depending on when the kernel turns them
        # into timewait sockets: stats must count whatever ss counts, as checked just above.
        assert st["time_wait"] == st["sockets"]["tcp"].get("TIME_WAIT", 0)
        low, high = (int(x) for x in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
        assert st["ephemeral_range"] == {
            "low": low,
            "high": high,
            "size": high - low + 1,
            "source": st["ephemeral_range"]["source"],
        }
        human = portscope("stats")
        assert "CLOSE_WAIT" in human.stdout and "warning:" in human.stdout
    finally:
        host.stop()
