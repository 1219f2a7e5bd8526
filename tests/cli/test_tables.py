"""Human tables at 80 columns, on a real pseudo-terminal, and the small output bugs around them.

Each command runs with its stdout on a pty whose size is set with TIOCSWINSZ (COLUMNS removed), so
rich sizes the table as it would for a person; the assertions are on what the terminal shows: no
line wider than the terminal, and every address:port that --json reports appears whole on one line.
"""

from __future__ import annotations

import datetime as dt
import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from portscope.cli.output import Column, layout
from tests.helpers import SockHost, portscope, portscope_json, portscope_tty, start_sockhost

WIDTH = 80


@pytest.fixture(scope="module")
def host() -> Iterator[SockHost]:
    h = start_sockhost(
        [
            {"kind": "tcp-listen", "addr": "127.0.0.1"},
            {"kind": "tcp-listen", "addr": "::1"},
            {"kind": "tcp-listen", "addr": "::", "v6only": 0},
            {"kind": "tcp-pair", "addr": "127.0.0.1", "unread": 1234},
            {"kind": "tcp-pair", "addr": "::1", "unread": 7},
            {"kind": "udp", "addr": "127.0.0.1"},
        ]
    )
    try:
        yield h
    finally:
        h.stop()


def endpoint(address: str, port: int, family: str, interface: str | None = None) -> str:
    """How a table writes an address:port, derived here independently of sockview."""
    text = f"[{address}]" if family == "ipv6" else address
    return f"{text}%{interface}:{port}" if interface else f"{text}:{port}"


def shown(*args: str, width: int = WIDTH) -> tuple[int, list[str]]:
    code, text = portscope_tty(*args, columns=width)
    lines = text.splitlines()
    assert lines, f"{args}: nothing on the terminal"
    too_wide = [line for line in lines if len(line) > width]
    assert not too_wide, f"{args}: lines wider than {width}: {too_wide}"
    assert "Traceback" not in text
    return code, lines


def assert_whole(needles: set[str], lines: list[str]) -> None:
    missing = {n for n in needles if not any(n in line for line in lines)}
    assert not missing, f"split or missing on the terminal: {sorted(missing)}\n" + "\n".join(lines)


def socket_endpoints(sockets: list[dict[str, Any]], ports: set[int]) -> set[str]:
    out = set()
    for s in sockets:
        if s["local_port"] in ports:
            out.add(endpoint(s["local_address"], s["local_port"], s["family"], s["interface"]))
            if s["remote_port"]:
                out.add(endpoint(s["remote_address"], s["remote_port"], s["family"]))
    return out


# -- the layout itself ------------------------------------------------------------------------------------


def test_layout_keeps_kept_columns_whole_and_drops_the_least_important_first() -> None:
    cols = [
        Column("LOCAL"),
        Column("PEER"),
        Column("SERVICE", fit="cut", drop=2, min_width=8),
        Column("USER", fit="cut", drop=1, min_width=6),
        Column("PROCESS", fit="cut", min_width=12),
    ]
    natural = [24, 24, 14, 10, 40]
    assert layout(cols, natural, 200) == natural
    # 24+24 kept, PROCESS 12 at least, two gaps: 64; SERVICE (drop 2) goes before USER (drop 1)
    wide = layout(cols, natural, 80)
    assert wide[:2] == [24, 24] and wide[2] is None and wide[3] is not None
    assert sum(w for w in wide if w) + 2 * (len([w for w in wide if w]) - 1) <= 80
    narrow = layout(cols, natural, 64)
    assert narrow == [24, 24, None, None, 12]
    # too narrow even for the kept columns: they stay whole (the terminal wraps the line)
    assert layout(cols, natural, 30) == [24, 24, None, None, 12]


def test_layout_shares_the_room_left_between_shrinking_columns() -> None:
    cols = [Column("PORT"), Column("NAME", fit="cut"), Column("USE", fit="cut", min_width=20)]
    widths = layout(cols, [5, 30, 60], 60)
    assert widths[0] == 5 and sum(w or 0 for w in widths) + 4 == 60
    assert widths[1] is not None and widths[2] is not None and widths[2] >= 20 and widths[1] >= 10


# -- every command with a table, on an 80-column terminal --------------------------------------------------


def kept_width(sockets: list[dict[str, Any]]) -> int:
    """What `ls -a`'s never-cut columns (PROTO, STATE, LOCAL, PEER) need, gaps included."""
    local = max(
        len(endpoint(s["local_address"], s["local_port"], s["family"], s["interface"])) for s in sockets
    )
    peer = max(len(endpoint(s["remote_address"], s["remote_port"], s["family"])) for s in sockets)
    return 5 + max(len(s["state"]) for s in sockets) + local + peer + 3 * 2


def test_ls_listening_and_all_at_80_columns(host: SockHost) -> None:
    listening = socket_endpoints(portscope_json("ls"), host.ports())
    code, lines = shown("ls")
    assert code == 0 and lines[0].split()[:2] == ["PROTO", "LOCAL"]
    assert_whole(listening, lines)
    # Our sockets alone: what fits in 80 columns is known. Then the whole host, whose other sockets
    # (long IPv6 pairs) may need more than 80 columns for the never-cut columns alone.
    ports = ",".join(map(str, sorted(host.ports())))
    code, lines = shown("ls", "-a", "--port", ports)
    assert code == 0 and "ESTABLISHED" in "\n".join(lines)
    assert_whole(socket_endpoints(portscope_json("ls", "-a", "--port", ports), host.ports()), lines)
    everything = portscope_json("ls", "-a")
    code, text = portscope_tty("ls", "-a", columns=WIDTH)
    lines = text.splitlines()
    assert code == 0
    assert_whole(socket_endpoints(everything, host.ports()), lines)
    if kept_width(everything) <= WIDTH:
        assert max(len(line) for line in lines) <= WIDTH, lines


def test_ls_hides_columns_on_a_narrow_terminal_and_says_which(host: SockHost) -> None:
    ports = ",".join(map(str, sorted(host.ports())))
    code, lines = shown("ls", "-a", "--port", ports, width=64)
    assert code == 0
    header = lines[0].split()
    assert {"PROTO", "STATE", "LOCAL", "PEER"} <= set(header)
    [note] = [line for line in lines if line.startswith("hidden at 64 columns:")]
    hidden = note.split(":", 1)[1].split("(")[0].replace(",", " ").split()
    assert hidden and not set(hidden) & set(header)
    # the least important go first: SERVICE, then USER, then the queues, PROCESS last
    order = ["SERVICE", "USER", "SEND-Q", "RECV-Q", "PROCESS"]
    assert set(hidden) == set(order[: len(hidden)]), hidden
    assert_whole(socket_endpoints(portscope_json("ls", "-a", "--port", ports), host.ports()), lines)


def test_who_at_80_columns(host: SockHost) -> None:
    port = next(s["port"] for s in host.report["sockets"] if s["kind"] == "tcp-listen")
    holders = portscope_json("who", str(port))
    code, lines = shown("who", str(port))
    assert code == 0
    assert_whole(
        {endpoint(s["local_address"], s["local_port"], s["family"]) for h in holders for s in h["sockets"]},
        lines,
    )
    # sockhost's command line carries its JSON argument: longer than 80, so it ends in an ellipsis
    [command] = [line for line in lines if line.startswith("command")]
    assert "sockhost.py" in command and command.rstrip().endswith("…")


@pytest.mark.parametrize(
    "args", [("services", "8000-8100"), ("services", "--category", "database"), ("services", "9200")]
)
def test_services_at_80_columns(args: tuple[str, ...]) -> None:
    found = portscope_json(*args)
    code, lines = shown(*args)
    assert code == 0
    rows = [line for line in lines[2:] if line[:6].strip().isdigit()]
    # one line per service: a port and its protocol never wrap onto a line of their own
    assert len(rows) == len(found)
    for s, line in zip(found, rows, strict=True):
        assert line.split()[:2] == [str(s["port"]), s["proto"]]


def test_stats_at_80_columns(host: SockHost) -> None:
    code, lines = shown("stats")
    assert code in (0, 1)
    assert lines[0].split() == ["STATE", "TCP", "UDP"]
    busiest = portscope_json("stats")["busiest_destination"]
    if busiest:
        addr, port = busiest["address"], busiest["port"]
        assert_whole({f"{addr}:{port}" if ":" not in addr else f"[{addr}]:{port}"}, lines)


def test_check_and_scan_at_80_columns(host: SockHost) -> None:
    port = next(s["port"] for s in host.report["sockets"] if s["kind"] == "tcp-listen" and s["addr"] == "::1")
    closed = _closed_port()
    for args in (("check", "::1", str(port), str(closed)), ("scan", "::1", "-p", f"{port},{closed}")):
        results = portscope_json(*args)
        code, lines = shown(*args)
        assert code in (0, 1)
        for r in results:
            assert any(
                r["address"] in line and str(r["port"]) in line.split() and r["status"] in line.split()
                for line in lines
            ), (r, lines)


def test_probe_at_80_columns() -> None:
    with BannerServer(
        b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3 with a long comment to fill the row\r\n"
    ) as port:
        results = portscope_json("probe", f"127.0.0.1:{port}", "--probe-timeout", "3")
        code, lines = shown("probe", f"127.0.0.1:{port}", "--probe-timeout", "3")
    assert results[0]["status"] == "open"
    assert any(line.split()[:2] == [f"{port}/tcp", "open"] for line in lines), lines
    assert code in (0, 1)


def test_history_at_80_columns(tmp_path: Path) -> None:
    from portscope.model import Event, Listener
    from portscope.monitor.store import Store

    path = str(tmp_path / "h.db")
    t0 = dt.datetime(2024, 5, 1, 23, 0, tzinfo=dt.UTC)
    nc = Listener("tcp", "0.0.0.0", 4444, "a-rather-long-process-name", "mallory", None, None, [4242])
    ssh = Listener("tcp", "2001:db8::22", 22, "sshd", "root", "ssh.service", None, [1])
    with Store.open(path) as store:
        store.record_listeners("a-host-with-a-long-name.example.net", [ssh], t0 - dt.timedelta(hours=1))
        store.record_events(
            [
                Event(
                    id="e1",
                    kind="listener_added",
                    host="a-host-with-a-long-name.example.net",
                    at=t0.isoformat(),
                    summary="a-rather-long-process-name listens on 0.0.0.0:4444/tcp, not in the baseline",
                    proto="tcp",
                    address="0.0.0.0",
                    port=4444,
                    before=None,
                    after=nc.to_dict(),
                )
            ]
        )
        store.record_listeners("a-host-with-a-long-name.example.net", [ssh, nc], t0)
    rows = portscope_json("history", "--db", path)
    code, lines = shown("history", "--db", path)
    assert code == 0 and lines[0].startswith("WHEN (")
    assert_whole(
        {endpoint(r["address"], r["port"], "ipv6" if ":" in r["address"] else "ipv4") for r in rows}, lines
    )
    assert any(line.startswith("hidden at 80 columns:") for line in lines)


# -- empty results: no header over nothing -------------------------------------------------------------------


def test_no_rows_prints_no_header() -> None:
    port = _closed_port()
    who = portscope("who", str(port))
    assert (who.returncode, who.stdout) == (1, f"nothing holds {port}\n")
    ls = portscope("ls", "--process", "zzzz-no-such-process")
    assert (ls.returncode, ls.stdout) == (1, "no socket matches\n")
    code, text = portscope_tty("who", str(port))
    assert (code, text.strip()) == (1, f"nothing holds {port}")


def test_json_output_never_loads_rich() -> None:
    proc = portscope("ls", "--json", env={"PYTHONPROFILEIMPORTTIME": "1"})
    assert proc.returncode in (0, 1)
    assert json.loads(proc.stdout) is not None
    assert "rich" not in {line.split("|")[-1].strip().split(".")[0] for line in proc.stderr.splitlines()}


# -- servers for the tests ------------------------------------------------------------------------------------


def _closed_port() -> int:
    """A port nothing holds (bound, then released): who says "nothing holds", check says closed."""
    with socket.socket(socket.AF_INET6) as s:
        s.bind(("::", 0))
        return int(s.getsockname()[1])


class BannerServer:
    """A TCP server on 127.0.0.1 that sends BANNER to every client, then waits for it to leave."""

    def __init__(self, banner: bytes) -> None:
        self.banner = banner
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(2)
                try:
                    conn.sendall(self.banner)
                    conn.recv(4096)
                except OSError:
                    pass

    def __enter__(self) -> int:
        self.thread.start()
        return int(self.sock.getsockname()[1])

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(5)
        self.sock.close()
