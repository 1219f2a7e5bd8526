"""`watch --metrics`: a real watch subprocess scraped over HTTP as Prometheus would, the answer read with
prometheus_client's own parser. A listener's series appears with its process and goes with it; a
target's status and the cycle counters are there; bad addresses are exit 2, a taken port exit 3.
"""

from __future__ import annotations

import os
import socket
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import portscope
from tests.monitor.watchrun import Watches, baseline, free_server_port, listen, stop, wait_for

Samples = list[tuple[str, dict[str, str], float]]


def scrape(port: int) -> Samples:
    """Every sample the endpoint serves now; [] while it is not up yet."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
            text = answer.read().decode()
    except OSError:
        return []
    return [(s.name, s.labels, s.value) for f in text_string_to_metric_families(text) for s in f.samples]


def values(samples: Samples, name: str, **labels: str) -> list[float]:
    return [v for n, lab, v in samples if n == name and all(lab.get(k) == x for k, x in labels.items())]


def test_listeners_targets_and_cycles_are_scraped_and_a_gone_listener_leaves(
    tmp_path: Path, watches: Watches
) -> None:
    port = free_server_port()
    mport = free_server_port(exclude={port})
    closed = free_server_port(exclude={port, mport})  # nothing listens: the target answers a reset
    target = f'[[target]]\nname = "api"\nhost = "127.0.0.1"\nport = {closed}\ncert_warn_days = 0\n'
    file = tmp_path / "portscope.toml"
    file.write_text(baseline(port, extra=target))
    listener = listen(port)
    try:
        name = Path(f"/proc/{listener.pid}/comm").read_text().strip()
        watches.start(
            file, str(tmp_path / "h.db"), "alpha", "--interval", "0.4", "--metrics", f"127.0.0.1:{mport}"
        )
        got = wait_for(
            lambda: scrape(mport), lambda s: bool(values(s, "portscope_listener", port=str(port))), 30
        )
        assert values(got, "portscope_listener", port=str(port)) == [1], watches.stderr()
        (labels,) = [lab for n, lab, _ in got if n == "portscope_listener"]
        assert labels == {
            "host": "alpha",
            "proto": "tcp",
            "address": "0.0.0.0",
            "port": str(port),
            "process": name,
            "user": "root" if os.geteuid() == 0 else labels["user"],
        }
        assert values(got, "portscope_listeners", host="alpha") == [1]
        assert values(got, "portscope_baseline_differences", kind="unexpected") == [1]
        assert values(got, "portscope_baseline_differences", kind="missing") == [0]
        assert values(got, "portscope_baseline_differences", kind="target") == [1]
        assert values(got, "portscope_target_up", target="api", port=str(closed)) == [0]
        assert values(got, "portscope_target_status", target="api", status="closed") == [1]
        (latency,) = values(got, "portscope_target_latency_seconds", target="api")
        assert 0 < latency < 3
        assert values(got, "portscope_cycles_total")[0] >= 1
        assert values(got, "portscope_cycle_duration_seconds_count")[0] >= 1
        assert values(got, "portscope_cycle_errors_total") == [0]
    finally:
        stop(listener)
    gone = wait_for(
        lambda: scrape(mport), lambda s: values(s, "portscope_listeners", host="alpha") == [0], 20
    )
    assert values(gone, "portscope_listener") == []  # the series is gone, not left at its last value
    assert values(gone, "portscope_baseline_differences", kind="unexpected") == [0]


def test_a_bad_metrics_address_is_exit_2_and_a_taken_port_exit_3(tmp_path: Path) -> None:
    file = tmp_path / "portscope.toml"
    file.write_text(baseline(free_server_port()))
    db = str(tmp_path / "h.db")
    for bad in ("9310", "localhost:9310", "127.0.0.1:99999", "127.0.0.1:x"):
        proc = portscope("watch", "--once", "--file", str(file), "--db", db, "--metrics", bad)
        assert proc.returncode == 2, (bad, proc.stderr)
        assert proc.stderr.count("\n") == 1 and "--metrics" in proc.stderr and "Traceback" not in proc.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        used = taken.getsockname()[1]
        proc = portscope("watch", "--once", "--file", str(file), "--db", db, "--metrics", f"127.0.0.1:{used}")
    assert proc.returncode == 3, proc.stderr
    assert "cannot listen there" in proc.stderr and proc.stderr.count("\n") == 1


def test_watch_with_metrics_exits_on_sigterm(tmp_path: Path, watches: Watches) -> None:
    """The exposition server is a daemon thread: it must not keep a stopped watch alive."""
    file = tmp_path / "portscope.toml"
    file.write_text(baseline(free_server_port()))
    mport = free_server_port()
    proc = watches.start(file, str(tmp_path / "h.db"), "alpha", "--metrics", f"127.0.0.1:{mport}")
    assert wait_for(lambda: scrape(mport), bool, 30), watches.stderr()
    proc.terminate()
    assert proc.wait(10) == 0
    assert scrape(mport) == []
