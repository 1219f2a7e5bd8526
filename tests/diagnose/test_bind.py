"""`portscope free` / diagnose.bind: real holders in child processes (tests/sockhost.py), the bed's real
nginx and dnsmasq, and the kernel itself as the oracle for the conflict rules."""

from __future__ import annotations

import argparse
import errno
import io
import ipaddress
import itertools
import json
import os
import random
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

from portscope.cli import diagnosis_view
from portscope.diagnose import bind
from portscope.errors import BadInput
from portscope.model import Diagnosis, Evidence, Socket
from portscope.registry import ephemeral_range
from tests.bed.bed import TestBed
from tests.helpers import SockHost, portscope, start_sockhost

HAS_IPV6 = bind._has_ipv6()


def _binds(address: str, port: int, proto: str = "tcp", v6only: bool = True) -> bool:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    with socket.socket(family, kind) as s:
        if proto == "tcp":
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, int(v6only))
        try:
            s.bind((address, port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A port free on every address for TCP and UDP, outside the ephemeral range (so the kernel will
    not hand it to some other test's connection meanwhile)."""
    eph = ephemeral_range()
    candidates = [p for p in range(10000, 30000) if not eph.contains(p)] or list(range(1024, 65536))
    rng = random.Random()
    for _ in range(500):
        port = rng.choice(candidates)
        addrs = ["0.0.0.0", "::"] if HAS_IPV6 else ["0.0.0.0"]
        if all(_binds(a, port, proto) for a in addrs for proto in ("tcp", "udp")):
            return port
    raise AssertionError("no free port found")


@pytest.fixture
def hosts() -> Iterator[list[SockHost]]:
    started: list[SockHost] = []
    yield started
    for h in started:
        h.stop()


def hold(hosts: list[SockHost], *specs: dict[str, Any]) -> SockHost:
    h = start_sockhost(list(specs))
    hosts.append(h)
    return h


def free_json(*args: str, netns: str | None = None) -> tuple[int, dict[str, Any]]:
    proc = portscope("free", *args, "--json", netns=netns)
    assert proc.returncode in (0, 1), proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def evidence(diag: dict[str, Any], check: str) -> list[dict[str, Any]]:
    return [e for e in diag["evidence"] if e["check"] == check]


# --- a process holds the port -----------------------------------------------------------------------------------


def test_loopback_holder_named_with_its_socket_and_the_ways_out(hosts: list[SockHost]) -> None:
    port = free_port()
    h = hold(
        hosts,
        {"kind": "comm", "name": "holdertest"},
        {"kind": "tcp-listen", "addr": "127.0.0.1", "port": port},
    )

    proc = portscope("free", str(port), "--address", "127.0.0.1")
    assert proc.returncode == 1, proc.stderr
    out = proc.stdout
    assert out.startswith(f"port_in_use: port {port}/tcp on 127.0.0.1 is in use: holdertest (pid {h.pid})")
    assert f"tcp LISTEN 127.0.0.1:{port}" in out
    assert "\nevidence:\n" in out and "\nnext steps:\n" in out
    assert f"kill {h.pid}" in out  # no systemd unit: the process itself
    assert "another port, free now" in out
    assert "reverse proxy" in out
    assert "SO_REUSEPORT" in out and "TIME_WAIT" in out

    code, diag = free_json(str(port), "--address", "127.0.0.1")
    assert code == 1
    assert diag["verdict"] == "port_in_use" and diag["port"] == port and diag["address"] == "127.0.0.1"
    (holder,) = evidence(diag, "holder")
    assert holder["passed"] is False
    data = holder["data"]
    assert data["pid"] == h.pid and data["name"] == "holdertest" and data["user"] == "root"
    assert "sockhost.py" in data["cmdline"]
    (sock,) = data["sockets"]
    assert (sock["local_address"], sock["local_port"], sock["state"], sock["proto"]) == (
        "127.0.0.1",
        port,
        "LISTEN",
        "tcp",
    )
    (tried,) = evidence(diag, "bind")
    assert tried["passed"] is False and tried["data"]["errno"] == "EADDRINUSE"
    (reuseport,) = evidence(diag, "reuseport")
    assert reuseport["data"]["reuseport"] is False  # sockhost does not set SO_REUSEPORT
    assert any("stop the holder" in s and f"kill {h.pid}" in s for s in diag["next_steps"])


def test_nearest_free_ports_really_bind(hosts: list[SockHost]) -> None:
    port = free_port()
    hold(hosts, {"kind": "tcp-listen", "addr": "127.0.0.1", "port": port})
    _code, diag = free_json(str(port), "-a", "127.0.0.1")
    (near,) = evidence(diag, "nearest_free")
    ports = [p["port"] for p in near["data"]["ports"]]
    assert ports and port not in ports
    assert any(p < port for p in ports) and any(p > port for p in ports)
    assert all(abs(p - port) <= bind.NEAREST_WINDOW for p in ports)
    assert not any(ephemeral_range().contains(p) for p in ports)
    assert [p for p in ports if _binds("127.0.0.1", p)] == ports
    # the closest of them are the ones the next step offers
    step = next(s for s in diag["next_steps"] if "another port" in s)
    closest = sorted(ports, key=lambda p: abs(p - port))[0]
    assert str(closest) in step


def test_wildcard_holder_blocks_a_specific_address(hosts: list[SockHost]) -> None:
    port = free_port()
    h = hold(hosts, {"kind": "tcp-listen", "addr": "0.0.0.0", "port": port})
    code, diag = free_json(str(port), "--address", "127.0.0.1")
    assert code == 1 and diag["verdict"] == "port_in_use"
    (holder,) = evidence(diag, "holder")
    assert holder["data"]["pid"] == h.pid
    assert holder["data"]["sockets"][0]["local_address"] == "0.0.0.0"
    (rule,) = evidence(diag, "wildcard")
    assert rule["data"]["rule"] == "wildcard_covers_all"
    assert "the wildcard" in rule["observation"] and f"127.0.0.1:{port}" in rule["observation"]
    assert any("specific address" in s and f"0.0.0.0:{port}" in s for s in diag["next_steps"])
    # ... and the text says it too
    assert "wildcard: " in portscope("free", str(port), "-a", "127.0.0.1").stdout


@pytest.mark.skipif(not HAS_IPV6, reason="needs IPv6 on this host")
def test_dual_stack_holder_blocks_ipv4(hosts: list[SockHost]) -> None:
    port = free_port()
    h = hold(hosts, {"kind": "tcp-listen", "addr": "::", "v6only": 0, "port": port})
    code, diag = free_json(str(port), "-a", "127.0.0.1")
    assert code == 1
    (holder,) = evidence(diag, "holder")
    assert holder["data"]["pid"] == h.pid
    (rule,) = evidence(diag, "wildcard")
    assert rule["data"]["rule"] == "dual_stack_covers_ipv4"
    assert any("IPv6-only" in s for s in diag["next_steps"])
    # the same listener made v6-only leaves IPv4 alone: the rule is about the flag, not the address
    port2 = free_port()
    hold(hosts, {"kind": "tcp-listen", "addr": "::", "v6only": 1, "port": port2})
    code, diag = free_json(str(port2), "-a", "127.0.0.1")
    assert code == 0 and diag["verdict"] == "ok"


def test_specific_holder_leaves_other_addresses_free_but_not_the_wildcard(hosts: list[SockHost]) -> None:
    port = free_port()
    h = hold(hosts, {"kind": "tcp-listen", "addr": "127.0.0.1", "port": port})

    proc = portscope("free", str(port), "--address", "127.0.0.2")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith(f"ok: port {port}/tcp is free on 127.0.0.2")
    code, diag = free_json(str(port), "--address", "127.0.0.2")
    assert code == 0 and diag["verdict"] == "ok" and diag["next_steps"] == []
    (neighbours,) = evidence(diag, "neighbours")
    assert f"pid {h.pid}" in neighbours["observation"] and "wildcard" in neighbours["observation"]

    code, diag = free_json(str(port))  # every address: blocked by the 127.0.0.1 holder
    assert code == 1 and diag["address"] is None
    failed = [e for e in evidence(diag, "bind") if e["passed"] is False]
    assert [e["data"]["address"] for e in failed] == ["0.0.0.0"]
    (rule,) = evidence(diag, "wildcard")
    assert rule["data"]["rule"] == "wildcard_needs_all"
    assert rule["data"]["held"] == [f"127.0.0.1:{port}"]


def test_udp_holder(hosts: list[SockHost]) -> None:
    h = hold(hosts, {"kind": "comm", "name": "udpholder"}, {"kind": "udp", "addr": "127.0.0.1"})
    port = h.report["sockets"][1]["port"]
    code, diag = free_json(str(port), "--udp", "-a", "127.0.0.1")
    assert code == 1 and diag["proto"] == "udp"
    (holder,) = evidence(diag, "holder")
    assert holder["data"]["pid"] == h.pid and holder["data"]["name"] == "udpholder"
    assert holder["data"]["sockets"][0]["state"] == "UNCONN"
    assert evidence(diag, "reuseport") == []  # not probed for UDP: a test socket would join the group
    assert not any("reverse proxy" in s for s in diag["next_steps"])
    eph = ephemeral_range()
    if eph.contains(port):  # the kernel gave sockhost an ephemeral port: say so, and suggest outside it
        assert any("ephemeral range" in s for s in diag["next_steps"])
        near = [p["port"] for p in evidence(diag, "nearest_free")[0]["data"]["ports"]]
        assert near and not any(eph.contains(p) for p in near)
    # the same number over TCP is another port: "53/udp" spelling works too
    code, diag = free_json(f"{port}/udp", "-a", "127.0.0.1")
    assert code == 1 and diag["proto"] == "udp"


def test_free_port_is_ok() -> None:
    port = free_port()
    proc = portscope("free", str(port))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith(f"ok: port {port}/tcp is free on every address")
    code, diag = free_json(str(port), "-a", "127.0.0.1")
    assert code == 0 and diag["verdict"] == "ok"
    (tried,) = evidence(diag, "bind")
    assert tried["passed"] is True
    assert tried["data"] == {
        "address": "127.0.0.1",
        "port": port,
        "proto": "tcp",
        "family": "ipv4",
        "errno": None,
    }
    assert evidence(diag, "holder") == []


def test_process_name_is_escaped_in_text(hosts: list[SockHost]) -> None:
    port = free_port()
    hold(
        hosts,
        {"kind": "comm", "name": "ev\x1b]0;x\x07il"},
        {"kind": "tcp-listen", "addr": "127.0.0.1", "port": port},
    )
    out = portscope("free", str(port), "-a", "127.0.0.1").stdout
    assert "\x1b" not in out and "\x07" not in out
    assert "ev\\x1b]0;x\\x07il" in out


# --- the core, in-process ---------------------------------------------------------------------------------------


def test_time_wait_does_not_count_and_is_reported() -> None:
    port = free_port()
    lst = socket.socket()
    lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lst.bind(("127.0.0.1", port))
    lst.listen()
    cli = socket.create_connection(("127.0.0.1", port))
    srv, _ = lst.accept()
    srv.close()  # the server closes first: its side (local port PORT) ends in TIME_WAIT
    assert cli.recv(1) == b""
    cli.close()
    lst.close()
    deadline = time.monotonic() + 10
    while _binds_plain("127.0.0.1", port) and time.monotonic() < deadline:
        time.sleep(0.05)  # the last ACK is in flight
    assert not _binds_plain("127.0.0.1", port), "setup: no TIME_WAIT left on the port"

    diag = bind.check_bind("127.0.0.1", port)
    assert diag.verdict == "ok"
    (note,) = [e for e in diag.evidence if e.check == "reuseaddr"]
    assert note.data["time_wait"] >= 1
    assert "SO_REUSEADDR" in note.observation and "TIME_WAIT" in note.observation


def _binds_plain(address: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((address, port))
        except OSError as exc:
            assert exc.errno == errno.EADDRINUSE
            return False
    return True


def test_reuseport_holder_is_told_apart() -> None:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        diag = bind.check_bind("127.0.0.1", port)
    assert diag.verdict == "port_in_use"
    (probe,) = [e for e in diag.evidence if e.check == "reuseport"]
    assert probe.data == {"reuseport": True}
    (holder,) = [e for e in diag.evidence if e.check == "holder"]
    assert holder.data["pid"] == os.getpid()


_ADDRS = ["127.0.0.1", "127.0.0.2", "0.0.0.0", "::", "::1", "::ffff:127.0.0.1", "::ffff:0.0.0.0"]


@pytest.mark.skipif(not HAS_IPV6, reason="needs IPv6 on this host")
@pytest.mark.parametrize("proto", ["tcp", "udp"])
def test_conflict_rules_match_the_kernel(proto: str) -> None:
    """Every pair of addresses and v6only flags, bound for real: conflicts() says what bind() does."""
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM

    def make(addr: str, v6only: bool) -> socket.socket:
        s = socket.socket(socket.AF_INET6 if ":" in addr else socket.AF_INET, kind)
        if proto == "tcp":
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if ":" in addr:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, int(v6only))
        return s

    checked = 0
    for held, held_v6only, asked, asked_v6only in itertools.product(
        _ADDRS, (False, True), _ADDRS, (False, True)
    ):
        if (":" not in held and held_v6only) or (":" not in asked and asked_v6only):
            continue
        with make(held, held_v6only) as h:
            try:
                h.bind((held, 0))
            except OSError:
                continue  # e.g. a v4-mapped address on a v6-only socket
            if proto == "tcp":
                h.listen()
            port = h.getsockname()[1]
            with make(asked, asked_v6only) as r:
                try:
                    r.bind((asked, port))
                    kernel = False
                except OSError as exc:
                    if exc.errno != errno.EADDRINUSE:
                        continue
                    kernel = True
            family = "ipv6" if ":" in held else "ipv4"
            sock = Socket(
                proto,
                family,
                "LISTEN" if proto == "tcp" else "UNCONN",
                str(ipaddress.ip_address(held)),
                port,
                "",
                0,
                0,
                0,
                0,
                0,
                v6only=held_v6only if family == "ipv6" else None,
            )
            ours = bind.conflicts(ipaddress.ip_address(asked), asked_v6only if ":" in asked else None, sock)
            assert ours == kernel, (held, held_v6only, asked, asked_v6only)
            checked += 1
    assert checked > 60


def test_unknown_dual_stack_flag_counts_as_a_suspect() -> None:
    held = Socket("tcp", "ipv6", "LISTEN", "::", 80, "::", 0, 0, 0, 0, 0, v6only=None)
    assert bind.conflicts(ipaddress.ip_address("127.0.0.1"), None, held)


def test_http_ports_get_8080_8443_alternatives() -> None:
    assert bind._alternatives(80, "tcp") == (8080, 8000, 8888)
    assert bind._alternatives(443, "tcp") == (8443, 4443)
    assert bind._alternatives(8080, "tcp") == (8000, 8888)
    assert bind._alternatives(5432, "tcp") == ()
    assert bind._alternatives(80, "udp") == ()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("8080", (None, 8080, None)),
        (":8080", (None, 8080, None)),
        ("*:8080", (None, 8080, None)),
        ("127.0.0.1:8080", ("127.0.0.1", 8080, None)),
        ("[::1]:443", ("::1", 443, None)),
        ("[::]:53/udp", ("::", 53, "udp")),
        ("0.0.0.0:80/TCP", ("0.0.0.0", 80, "tcp")),
    ],
)
def test_parse_bind(text: str, expected: tuple[str | None, int, str | None]) -> None:
    assert bind.parse_bind(text) == expected


@pytest.mark.parametrize(
    "text", ["", "abc", "127.0.0.1", "::1:80", "[::1]80", "host:80", "1.2.3.4:0", ":70000", "80/sctp"]
)
def test_parse_bind_rejects(text: str) -> None:
    with pytest.raises(BadInput):
        bind.parse_bind(text)


# --- bad input, no permission -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["70000"], "out of range"),
        (["0"], "1-65535"),
        (["8080", "--address", "10.255.255.1"], "not an address of this host"),
        (["8080", "--address", "example.org"], "not an IP address"),
        (["80,443"], "several ports"),
    ],
)
def test_bad_input_is_one_line_exit_2(args: list[str], words: str) -> None:
    proc = portscope("free", *args)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("portscope free: ") and words in lines[0]


@pytest.mark.root
def test_privileged_port_as_unprivileged_user_exit_3() -> None:
    start = bind.unprivileged_port_start()
    if start <= 80:
        pytest.skip(f"net.ipv4.ip_unprivileged_port_start is {start}: port 80 is not privileged here")
    proc = portscope("free", "80", user="nobody")
    assert proc.returncode == 3, proc.stdout + proc.stderr
    (line,) = proc.stderr.splitlines()
    assert "CAP_NET_BIND_SERVICE" in line and "ip_unprivileged_port_start" in line
    # the same user may bind an unprivileged port: the refusal is about the port, not the user
    port = free_port()
    assert portscope("free", str(port), "-a", "127.0.0.1", user="nobody").returncode == 0


# --- the bed's real daemons ------------------------------------------------------------------------------------


def test_bed_nginx_on_80_with_web_alternatives(bed: TestBed) -> None:
    code, diag = free_json("80", "-a", bed.addr4, netns=bed.name)
    assert code == 1 and diag["verdict"] == "port_in_use"
    (holder,) = evidence(diag, "holder")
    data = holder["data"]
    assert data["name"] == "nginx" and "nginx.conf" in data["cmdline"]
    assert len(data["pids"]) >= 2 and data["pid"] in data["pids"]  # master and worker share the listener
    assert data["pid"] == min(data["pids"])  # the master, whose parent is not nginx, is the one named
    assert data["sockets"][0]["local_address"] == bed.addr4
    step = next(s for s in diag["next_steps"] if "web servers" in s)
    assert "8080 (free now)" in step
    # 443's alternative 8443 is taken in the bed (the expired-certificate server): said so
    _code, diag = free_json("443", "-a", bed.addr4, netns=bed.name)
    step = next(s for s in diag["next_steps"] if "web servers" in s)
    assert "8443 (in use too)" in step and "4443 (free now)" in step
    # every address: both of nginx's specific listeners stand in the way of the wildcard
    code, diag = free_json("80", netns=bed.name)
    assert code == 1
    rules = {e["data"]["rule"] for e in evidence(diag, "wildcard")}
    assert rules == {"wildcard_needs_all"}


def test_bed_dnsmasq_holds_53_udp(bed: TestBed) -> None:
    code, diag = free_json("53", "--udp", "-a", bed.addr4, netns=bed.name)
    assert code == 1
    (holder,) = evidence(diag, "holder")
    assert holder["data"]["name"] == "dnsmasq"
    assert holder["data"]["sockets"][0]["local_port"] == 53


# --- the renderer --------------------------------------------------------------------------------------------------


def test_render_cleans_every_string_and_json_is_the_dict() -> None:
    diag = Diagnosis(
        verdict="port_in_use",
        summary="held by \x1b[31mred\x1b[0m",
        port=8080,
        evidence=[
            Evidence("bind", "fails\n forged line", False),
            Evidence("holder", "name \u202eevil", None),
            Evidence("ok_check", "fine", True),
        ],
        next_steps=["kill 1\x07"],
    )
    buf = io.StringIO()
    assert diagnosis_view.render(diag, None, buf) == 1
    text = buf.getvalue()
    assert "\x1b" not in text and "\x07" not in text and "\u202e" not in text
    lines = text.splitlines()
    assert lines[0] == "port_in_use: held by \\x1b[31mred\\x1b[0m"
    assert lines[1] == "evidence:"
    assert lines[2] == "  FAIL  bind: fails\\x0a forged line"
    assert lines[3].startswith("  info  holder: ")
    assert lines[4] == "  ok    ok_check: fine"
    assert lines[5:] == ["next steps:", "  - kill 1\\x07"]

    buf = io.StringIO()
    assert diagnosis_view.render(Diagnosis("ok", "fine"), argparse.Namespace(json=True), buf) == 0
    assert json.loads(buf.getvalue()) == Diagnosis("ok", "fine").to_dict()
