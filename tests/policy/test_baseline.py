"""The baseline file and `portscope baseline init|check` (seed 003: compare the open ports with a list).

Real listeners run in child processes; every test looks only at the ports it opened (a baseline
scoped to them), because other programs on this shared machine open and close ports meanwhile.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import socket
import subprocess
import sys
import textwrap
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from portscope.cli.main import main
from portscope.errors import BadInput
from portscope.inventory.procinfo import ProcDetails
from portscope.model import Listener, ProcessRef, Socket
from portscope.policy.baseline import (
    Baseline,
    EmailSink,
    ExecSink,
    SyslogSink,
    WebhookSink,
    compare,
    find_file,
    load,
    loads,
)
from portscope.policy.listeners import Scope, current_listeners, listeners_from
from portscope.policy.template import render
from portscope.policy.tomlfile import Locator, toml_string
from portscope.registry import EphemeralRange, ephemeral_range, parse_ports
from portscope.textsafe import clean
from tests.helpers import SockHost, portscope, start_sockhost

# ---------------------------------------------------------------------------------------------------
# helpers


def free_port() -> int:
    """A port below the ephemeral range, free for TCP and UDP on every address: where servers live."""
    low = min(ephemeral_range().low, 30000)
    for _ in range(200):
        port = random.randrange(20000, low)
        try:
            for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
                with socket.socket(socket.AF_INET, kind) as s:
                    s.bind(("0.0.0.0", port))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port found")


UDP_SERVER = textwrap.dedent(
    """
    import socket, sys
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((sys.argv[1], int(sys.argv[2])))
    print("ready", flush=True)
    sys.stdin.read()
    """
)


class UdpServer:
    """A UDP server on a fixed port (sockhost's UDP sockets take an ephemeral port, as clients do)."""

    def __init__(self, addr: str, port: int) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", UDP_SERVER, addr, str(port)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None and self.proc.stdout.readline() == "ready\n"

    def stop(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=10)


def tcp_server(port: int, name: str, addr: str = "127.0.0.1") -> SockHost:
    """A TCP listener whose process is called NAME (comm), as a daemon would be."""
    return start_sockhost(
        [{"kind": "comm", "name": name}, {"kind": "tcp-listen", "addr": addr, "port": port}]
    )


def check(path: Path) -> tuple[int, dict[str, Any]]:
    proc = portscope("baseline", "check", "--file", str(path), "--json")
    assert proc.returncode in (0, 1), proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def line_of(text: str, wanted: str) -> int:
    """The 1-based number of the first line that is WANTED (comments mention [[listener]] too)."""
    return text.splitlines().index(wanted) + 1


def listener(port: int, process: str | None = "sshd", **kw: Any) -> Listener:
    fields: dict[str, Any] = {"proto": "tcp", "address": "0.0.0.0", "user": "root"} | kw
    return Listener(fields.pop("proto"), fields.pop("address"), port, process, **fields)


@pytest.fixture
def stoppers() -> Iterator[list[SockHost | UdpServer]]:
    started: list[SockHost | UdpServer] = []
    yield started
    for child in started:
        child.stop()


# ---------------------------------------------------------------------------------------------------
# init -> check on real listeners


def test_init_then_check_restart_removal_and_identity_change(tmp_path: Path) -> None:
    port = free_port()
    path = tmp_path / "portscope.toml"
    first = tcp_server(port, "psb-alpha")
    try:
        init = portscope("baseline", "init", "--ports", str(port), "--output", str(path))
        assert init.returncode == 0, init.stderr
        assert "1 listener(s)" in init.stdout
        text = path.read_text()
        entry = tomllib.loads(text)["listener"]
        assert entry == [
            {"proto": "tcp", "port": port, "address": "127.0.0.1", "process": "psb-alpha", "user": "root"}
            | ({"unit": entry[0]["unit"]} if "unit" in entry[0] else {})
        ]
        assert f'ports = "{port}"' in text
        assert check(path)[0] == 0
        old_pid = first.pid
    finally:
        first.stop()

    # the daemon is gone: missing, pointing at the [[listener]] that expects it
    code, report = check(path)
    assert code == 1
    [diff] = report["differences"]
    assert (diff["kind"], diff["port"], diff["actual"]) == ("missing", port, None)
    assert diff["line"] == line_of(text, "[[listener]]")

    # restarted: a new PID, the same listener
    second = tcp_server(port, "psb-alpha")
    try:
        assert second.pid != old_pid
        code, report = check(path)
        assert (code, report["differences"]) == (0, [])
        assert [item["pids"] for item in report["listeners"]] == [[second.pid]]
    finally:
        second.stop()

    # another program took the port: one "changed" difference, not missing + unexpected
    third = tcp_server(port, "psb-beta")
    try:
        code, report = check(path)
        assert code == 1
        [diff] = report["differences"]
        assert (diff["kind"], diff["fields"], diff["actual"]["process"]) == (
            "changed",
            ["process"],
            "psb-beta",
        )
        assert "process psb-beta instead of psb-alpha" in diff["summary"]
        human = portscope("baseline", "check", "--file", str(path))
        assert human.returncode == 1
        assert "changed" in human.stdout and f"tcp 127.0.0.1:{port}" in human.stdout
    finally:
        third.stop()


def test_unexpected_listener_and_allow(tmp_path: Path, stoppers: list[SockHost | UdpServer]) -> None:
    expected, extra = free_port(), free_port()
    stoppers.append(tcp_server(expected, "psb-main"))
    path = tmp_path / "b.toml"
    assert portscope("baseline", "init", "--ports", f"{expected},{extra}", "-o", str(path)).returncode == 0
    assert check(path)[0] == 0
    stoppers.append(tcp_server(extra, "psb-extra", addr="0.0.0.0"))
    code, report = check(path)
    assert code == 1
    [diff] = report["differences"]
    assert (diff["kind"], diff["port"], diff["address"]) == ("unexpected", extra, "0.0.0.0")
    assert diff["actual"]["process"] == "psb-extra" and diff["expected"] is None
    # allowed to come and go, by port range and process: no longer reported
    with path.open("a") as f:
        f.write(f'\n[[allow]]\nports = "{extra}-{extra + 1}"\nproto = "tcp"\nprocess = "psb-*"\n')
    assert check(path)[0] == 0
    # the rule names the process: another one on that port is still reported
    path.write_text(path.read_text().replace('process = "psb-*"', 'process = "nginx"'))
    assert check(path)[0] == 1


def test_check_finds_the_default_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    if not os.path.exists("/etc/portscope/portscope.toml"):
        assert main(["baseline", "check"]) == 2
        assert "no baseline file" in capsys.readouterr().err
    port = free_port()
    (tmp_path / "portscope.toml").write_text(f'[scope]\nports = "{port}"\n')
    assert find_file() == "portscope.toml"
    assert main(["baseline", "check"]) == 0
    assert "no difference from portscope.toml: 0 listener(s)" in capsys.readouterr().out


def test_init_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    path = tmp_path / "portscope.toml"
    path.write_text("# reviewed by hand\n")
    port = str(free_port())
    refused = portscope("baseline", "init", "--ports", port, "-o", str(path))
    assert refused.returncode == 2
    assert refused.stderr.strip().endswith("exists: review or rename it, or pass --force to replace it")
    assert path.read_text() == "# reviewed by hand\n"
    assert portscope("baseline", "init", "--ports", port, "-o", str(path), "--force").returncode == 0
    assert load(str(path)).scope.ports == parse_ports(port)
    assert [p.name for p in tmp_path.iterdir()] == ["portscope.toml"]  # no temporary file left
    printed = portscope("baseline", "init", "--ports", port, "-o", "-")
    assert printed.returncode == 0 and loads(printed.stdout).listeners == ()


def test_init_writes_hostile_process_names_as_data(
    tmp_path: Path, stoppers: list[SockHost | UdpServer]
) -> None:
    """A process name is chosen by whoever runs it: a newline must not end the comment and write TOML,
    and glob characters must match only themselves."""
    port = free_port()
    name = 'x"\n[[allow]]*?'  # 15 bytes, the kernel's limit
    stoppers.append(tcp_server(port, name))
    path = tmp_path / "portscope.toml"
    assert portscope("baseline", "init", "--ports", str(port), "-o", str(path)).returncode == 0
    baseline = load(str(path))
    assert baseline.allow == () and len(baseline.listeners) == 1
    assert check(path)[0] == 0
    assert tomllib.loads(path.read_text())["listener"][0]["process"] == 'x"\n[[][[]allow]][*][?]'


# ---------------------------------------------------------------------------------------------------
# what is (not) a listener, on real sockets


def test_udp_clients_in_the_ephemeral_range_are_not_listeners(stoppers: list[SockHost | UdpServer]) -> None:
    eph = ephemeral_range()
    server_port = free_port()
    server = UdpServer("0.0.0.0", server_port)
    stoppers.append(server)
    clients = start_sockhost(
        [
            {"kind": "udp", "addr": "0.0.0.0"},
            {"kind": "udp", "addr": "127.0.0.1"},
            {"kind": "udp-connected", "addr": "127.0.0.1"},
        ]
    )
    stoppers.append(clients)
    wild, loop, connected = (s["port"] for s in clients.report["sockets"])
    assert all(eph.contains(p) for p in (wild, loop, connected))
    spec = parse_ports(f"{server_port},{wild},{loop},{connected}")
    found = current_listeners(Scope(ports=spec))
    assert [(x.proto, x.address, x.port) for x in found] == [("udp", "0.0.0.0", server_port)]
    assert found[0].pids == [server.proc.pid]
    # the rule left them out, not their absence: with the exclusions off the unconnected ones appear
    wide = current_listeners(Scope(ports=spec, udp_ephemeral=True, loopback_ephemeral=True))
    assert {x.port for x in wide} == {server_port, wild, loop}
    only_udp = current_listeners(Scope(ports=spec, udp_ephemeral=True))
    assert {x.port for x in only_udp} == {server_port, wild}  # loopback ephemeral stays out
    # a baseline that names a client-range port keeps it
    kept = current_listeners(Scope(ports=spec), keep={("udp", wild)})
    assert {x.port for x in kept} == {server_port, wild}


def test_random_loopback_ports_and_client_sockets_are_not_listeners(
    stoppers: list[SockHost | UdpServer],
) -> None:
    host = start_sockhost(
        [
            {"kind": "tcp-listen", "addr": "127.0.0.1"},
            {"kind": "tcp-listen", "addr": "::1"},
            {"kind": "tcp-listen", "addr": "0.0.0.0"},
            {"kind": "tcp-pair", "addr": "127.0.0.1"},
        ]
    )
    stoppers.append(host)
    loop4, loop6, wild, pair = host.report["sockets"]
    ports = [loop4["port"], loop6["port"], wild["port"], pair["port"], pair["client_port"]]
    assert all(ephemeral_range().contains(p) for p in ports)
    spec = parse_ports(",".join(map(str, ports)))
    # an ephemeral port on every address is reported: others can reach it
    assert [(x.address, x.port) for x in current_listeners(Scope(ports=spec))] == [("0.0.0.0", wild["port"])]
    wide = current_listeners(Scope(ports=spec, loopback_ephemeral=True))
    assert {(x.address, x.port) for x in wide} == {
        ("127.0.0.1", loop4["port"]),
        ("::1", loop6["port"]),
        ("0.0.0.0", wild["port"]),
        ("127.0.0.1", pair["port"]),
    }  # the connected client's port never: it is not listening
    assert all(x.pids == [host.pid] for x in wide)
    exposed = current_listeners(Scope(ports=spec, loopback=False, loopback_ephemeral=True))
    assert [x.port for x in exposed] == [wild["port"]]
    # a [[listener]] naming a random loopback port keeps it, and then it is as expected
    baseline = loads(
        f'[scope]\nports = "{spec.text}"\n[[listener]]\nport = {loop4["port"]}\naddress = "127.0.0.1"\n'
        f"[[listener]]\nport = {wild['port']}\n"
    )
    now = current_listeners(baseline.scope, baseline.keep_ports())
    assert {x.port for x in now} == {loop4["port"], wild["port"]}
    assert compare(baseline, now) == []


def test_workers_sharing_a_socket_are_one_listener(stoppers: list[SockHost | UdpServer]) -> None:
    host = start_sockhost(
        [{"kind": "comm", "name": "psb-nginx"}, {"kind": "fork-listen", "addr": "127.0.0.1"}]
    )
    stoppers.append(host)
    shared = host.report["sockets"][1]["port"]
    found = current_listeners(Scope(ports=parse_ports(str(shared)), loopback_ephemeral=True))
    assert len(found) == 1
    assert found[0].pids == sorted(host.pids()) and len(found[0].pids) == 2
    assert (found[0].process, found[0].user) == ("psb-nginx", "root")


# ---------------------------------------------------------------------------------------------------
# who a listener is: the opener, not a worker or systemd


def _socket(port: int, pids: list[tuple[int, str]], uid: int | None = 0, **kw: Any) -> Socket:
    fields: dict[str, Any] = {"proto": "tcp", "state": "LISTEN", "address": "0.0.0.0", "exposure": "all"} | kw
    return Socket(
        fields["proto"],
        "ipv4",
        fields["state"],
        fields["address"],
        port,
        "0.0.0.0",
        fields.get("rport", 0),
        0,
        0,
        1000 + port,
        uid,
        {0: "root", 33: "www-data"}.get(uid) if uid is not None else None,
        None,
        fields["exposure"],
        None,
        None,
        [ProcessRef(pid, name, 3) for pid, name in pids],
    )


def _details(uids: dict[int, int], units: dict[int, str] | None = None) -> Any:
    def details(pid: int) -> ProcDetails:
        uid = uids.get(pid)
        user = {0: "root", 33: "www-data"}.get(uid) if uid is not None else None
        return ProcDetails(uid, user, None, None, None, (units or {}).get(pid), None)

    return details


EPH = EphemeralRange(32768, 60999, "test")


def test_opener_identifies_the_listener_not_workers_or_systemd() -> None:
    # after a PID wrap-around a www-data worker has the lowest pid; the root master opened the socket
    nginx = _socket(80, [(300, "nginx"), (400, "nginx"), (32000, "nginx")])
    # socket activation: pid 1 holds the socket next to the service
    activated = _socket(22, [(1, "systemd"), (900, "sshd")])
    details = _details(
        {300: 33, 400: 33, 32000: 0, 1: 0, 900: 0}, {900: "ssh.service", 32000: "nginx.service"}
    )
    found = listeners_from([nginx, activated], Scope(), (), EPH, details)
    assert [(x.port, x.process, x.user, x.unit, x.pids) for x in found] == [
        (22, "sshd", "root", "ssh.service", [1, 900]),
        (80, "nginx", "root", "nginx.service", [300, 400, 32000]),
    ]


def test_sockets_of_one_slot_merge_and_hidden_owners_keep_their_user() -> None:
    reuseport = [_socket(8080, [(500, "app")]), _socket(8080, [(501, "app")])]
    hidden = _socket(9090, [], uid=33)
    found = listeners_from([*reuseport, hidden], Scope(), (), EPH, _details({500: 0, 501: 0}))
    assert [(x.port, x.process, x.user, x.pids) for x in found] == [
        (8080, "app", "root", [500, 501]),
        (9090, None, "www-data", []),
    ]


@pytest.mark.parametrize(
    ("sock", "scope", "reported"),
    [
        (_socket(40000, [], proto="udp", state="UNCONN"), Scope(), False),  # a client's ephemeral port
        (_socket(40000, [], proto="udp", state="UNCONN"), Scope(udp_ephemeral=True), True),
        (_socket(5353, [], proto="udp", state="UNCONN"), Scope(), True),  # a server's fixed port
        (_socket(123, [], proto="udp", state="UNCONN"), Scope(), True),
        (_socket(5353, [], proto="udp", state="ESTABLISHED", rport=53), Scope(), False),  # connected
        (_socket(40000, [], address="127.0.0.1", exposure="loopback"), Scope(), False),
        (_socket(40000, [], address="127.0.0.1", exposure="loopback"), Scope(loopback_ephemeral=True), True),
        (_socket(40000, []), Scope(), True),  # an ephemeral port on every address: reachable
        (_socket(5432, [], address="127.0.0.1", exposure="loopback"), Scope(), True),
        (_socket(5432, [], address="127.0.0.1", exposure="loopback"), Scope(loopback=False), False),
        (_socket(5432, [], state="ESTABLISHED", rport=40000), Scope(), False),  # a connection
        (_socket(5432, []), Scope(ports=parse_ports("22")), False),
    ],
)
def test_what_is_a_listener(sock: Socket, scope: Scope, reported: bool) -> None:
    assert bool(listeners_from([sock], scope, (), EPH, _details({}))) is reported


# ---------------------------------------------------------------------------------------------------
# compare


def test_compare_matching_rules() -> None:
    baseline = loads(
        textwrap.dedent(
            """
            [[listener]]
            port = 22
            process = "sshd"

            [[listener]]
            port = 53
            proto = "udp"
            exposure = "loopback"
            container = "docker:*"

            [[listener]]
            process = "systemd-resolved"  # 16 characters: the kernel says systemd-resolve
            exposure = "loopback"

            [[allow]]
            ports = "8000-8100"
            proto = "tcp"
            user = "dev*"
            """
        )
    )
    now = [
        listener(22),
        listener(22, address="::"),
        listener(53, "dns", proto="udp", address="127.0.0.53", container="docker:0123456789ab"),
        listener(5355, "systemd-resolve", address="127.0.0.53"),
        listener(8050, "python3", user="devops"),
        listener(8050, "python3", proto="udp", user="devops"),
        listener(8200, "python3", user="devops"),
    ]
    diffs = compare(baseline, now)
    assert [(d.kind, d.proto, d.port) for d in diffs] == [
        ("unexpected", "udp", 8050),
        ("unexpected", "tcp", 8200),
    ]
    assert all(d.event == "listener_added" for d in diffs)


def test_compare_changed_missing_and_hidden_owners() -> None:
    baseline = loads('[[listener]]\nport = 22\nprocess = "sshd"\nuser = "root"\nunit = "ssh.service"\n')
    [changed] = compare(baseline, [listener(22, "dropbear", unit="dropbear.service")])
    assert (changed.kind, changed.fields, changed.expected and changed.expected.line) == (
        "changed",
        ["process", "unit"],
        1,
    )
    assert changed.to_dict()["actual"]["process"] == "dropbear"
    missing, unexpected = compare(baseline, [listener(2222, "sshd", unit="ssh.service")])
    assert (missing.kind, missing.port, missing.event) == ("missing", 22, "listener_removed")
    assert (unexpected.kind, unexpected.port) == ("unexpected", 2222)
    # an owner we could not see: only its user is compared
    assert compare(baseline, [listener(22, None, user="root")]) == []
    assert [d.fields for d in compare(baseline, [listener(22, None, user="nobody")])] == [["user"]]
    # a restart: another PID, same listener
    assert compare(baseline, [listener(22, unit="ssh.service", pids=[1234])]) == []
    # the same port on another address is not the expected slot when the address is given
    pinned = loads('[[listener]]\nport = 5432\naddress = "127.0.0.1"\n')
    diffs = compare(pinned, [listener(5432, "postgres", address="0.0.0.0")])
    assert [d.kind for d in diffs] == ["missing", "unexpected"]
    assert (
        compare(
            loads('[[listener]]\nport = 5432\naddress = "::ffff:127.0.0.1"\n'),
            [listener(5432, address="::ffff:127.0.0.1")],
        )
        == []
    )


# ---------------------------------------------------------------------------------------------------
# the file: what it holds, and its errors with their lines


FULL = """\
version = 1

[scope]
ports = "1-1024,8000-8100"
loopback_ephemeral = true

[watch]
interval = 10
persist = 25.5

[[listener]]
proto = "tcp"
port = 22
address = "0.0.0.0"
process = "sshd"
user = "root"
unit = "ssh.service"
note = "administration"

[[allow]]
ports = 8080

[[target]]
host = "db.example.net"
port = 5432
expect_service = "postgresql"
cert_warn_days = 30

[[target]]
host = "[2001:db8::1]"
port = 53
proto = "udp"
expect_status = "open|filtered"

[[sink]]
type = "email"
host = "mail.example.net"
starttls = true
user = "portscope"
password_env = "PORTSCOPE_SMTP_PASSWORD"
from = "portscope@example.net"
to = ["ops@example.net", "oncall@example.net"]
events = ["listener_added", "listener_changed"]

[[sink]]
type = "webhook"
url = "https://hooks.example.net/x"
format = "slack"

[[sink]]
type = "syslog"
address = "127.0.0.1:514"

[[sink]]
type = "exec"
command = ["/bin/true", "--quiet"]
timeout = 5
max_per_hour = 20

[[sink]]
type = "webhook"
name = "chat"
url_env = "PORTSCOPE_HOOK"
format = "apprise"

[[sink]]
type = "email"
host = "localhost"
sender = "root@localhost"
to = "ops@example.net"
"""


def test_full_file_reads_into_types() -> None:
    b = loads(FULL, "/etc/portscope/portscope.toml")
    assert isinstance(b, Baseline)
    assert b.scope.ports == parse_ports("1-1024,8000-8100") and b.scope.loopback_ephemeral
    assert (b.watch.interval, b.watch.persist) == (10.0, 25.5)
    [ssh] = b.listeners
    assert (ssh.port, ssh.address, ssh.process, ssh.unit, ssh.line) == (
        22,
        "0.0.0.0",
        "sshd",
        "ssh.service",
        11,
    )
    assert b.allow[0].ports.contains(8080, "udp") and b.allow[0].line == 20
    assert [(t.host, t.port, t.proto, t.expect_status, t.cert_warn_days) for t in b.targets] == [
        ("db.example.net", 5432, "tcp", "open", 30),
        ("2001:db8::1", 53, "udp", "open|filtered", 14),
    ]
    email, hook, syslog, run, apprise, local = b.sinks
    assert isinstance(email, EmailSink) and (email.port, email.sender, email.to) == (
        587,
        "portscope@example.net",
        ("ops@example.net", "oncall@example.net"),
    )
    assert email.events == ("listener_added", "listener_changed") and email.type == "email"
    assert isinstance(hook, WebhookSink) and hook.format == "slack" and hook.timeout is None
    assert isinstance(syslog, SyslogSink) and syslog.facility == "daemon"
    assert isinstance(run, ExecSink) and run.command == ("/bin/true", "--quiet")
    headers = [n for n, line in enumerate(FULL.splitlines(), 1) if line == "[[sink]]"]
    assert [x.line for x in b.sinks] == headers
    assert (run.timeout, run.max_per_hour) == (5.0, 20)
    assert isinstance(apprise, WebhookSink) and (apprise.name, apprise.url_env) == ("chat", "PORTSCOPE_HOOK")
    assert isinstance(local, EmailSink) and (local.sender, local.to, local.port) == (
        "root@localhost",
        ("ops@example.net",),
        25,
    )
    assert b.keep_ports() == {("tcp", 22)}
    empty = loads("")
    assert (empty.watch.interval, empty.watch.persist, empty.scope.ports, empty.listeners) == (
        30.0,
        60.0,
        None,
        (),
    )


INVALID = [
    # (file text, line, what the message says)
    ("[watch]\ninterval = 10\npersist = \n", 3, "TOML syntax error: invalid value at column 11"),
    (
        '[[listener]]\nport = 22\nprocess = "sshd\n',
        3,
        "TOML syntax error: illegal character '\\n' at column 16",
    ),
    ("[[listener]]\nport = 22\nport = 23\n", 3, "TOML syntax error: cannot overwrite a value"),
    (
        "[[listener]]\nport = 22\nprot = 'tcp'\n",
        3,
        "unknown key 'prot' in [[listener]]; did you mean 'proto'?",
    ),
    (
        "version = 1\n\n[watch]\nintervall = 5\n",
        4,
        "unknown key 'intervall' in [watch]; did you mean 'interval'?",
    ),
    ("# comment\nlisteners = []\n", 2, "unknown key 'listeners' in the file; did you mean 'listener'?"),
    (
        '[[listener]]\nport = "22"\n',
        2,
        "port in [[listener]] must be a whole number 1-65535, not a string ('22')",
    ),
    (
        "[[listener]]\nport = 22\n[[listener]]\nport = 70000\n",
        4,
        "port 70000 in [[listener]] is out of range",
    ),
    ("[[listener]]\nport = true\n", 2, "must be a whole number 1-65535, not a boolean"),
    ("[[listener]]\nport = 0\n", 2, "port 0 in [[listener]] is out of range"),
    ("[[listener]]\nproto = 'sctp'\nport = 1\n", 2, 'proto in [[listener]] must be "tcp" or "udp"'),
    ("[[listener]]\nport = 1\naddress = '0.0.0.0/0'\n", 3, "address in [[listener]] must be an IP address"),
    ("[[listener]]\nport = 1\naddress = '::'\nexposure = 'all'\n", 4, "address or exposure, not both"),
    ("\n[[listener]]\nuser = 'root'\n", 2, "a [[listener]] needs at least a port or a process"),
    ("[listener]\nport = 22\n", 1, "write [[listener]], with two brackets"),
    ("listener = [ {port = 22},\n  {port = 65536} ]\n", 2, "port 65536 in [[listener]] is out of range"),
    ('[[listener]]\n"po\\u0072t" = -1\n', 2, "port -1 in [[listener]] is out of range"),
    (
        '[[sink]]\ntype = "exec"\ncommand = [\n  """/bin/\\\n  true""",\n]\n[watch]\ninterval = 0\n',
        8,
        "interval 0 in [watch] is out of range",
    ),
    ("[watch]\npersist = 'soon'\n", 2, "persist in [watch] must be a number of seconds"),
    ("[scope]\nports = '22-'\n", 2, "ports in [scope]: bad port"),
    ("[scope]\nports = 'nosuchservice'\n", 2, "unknown service name 'nosuchservice'"),
    ("[scope]\nudp_ephemeral = 'yes'\n", 2, "must be true or false"),
    ("[[allow]]\nproto = 'udp'\n", 1, "[[allow]] needs ports"),
    ("[[allow]]\nports = '80/tcp'\nproto = 'udp'\n", 2, "ports in [[allow]] names no udp port"),
    ("[[target]]\nhost = 'db:5432'\nport = 5432\n", 2, "without the port"),
    ("[[target]]\nhost = 'db'\n", 1, "[[target]] needs port"),
    ("[[target]]\nhost = 'db'\nport = 1\nexpect_status = 'up'\n", 4, 'must be "open" or "closed"'),
    ("[[target]]\nhost = 'db'\nport = 1\ncert_warn_days = 9999\n", 4, "cert_warn_days 9999"),
    ("[[sink]]\ntype = 'sms'\n", 2, 'type in [[sink]] must be "email" or "webhook" or "syslog" or "exec"'),
    ("[[sink]]\nhost = 'x'\n", 1, "[[sink]] needs type"),
    (
        "[[sink]]\ntype = 'email'\nhost = 'mail'\nfrom = 'a@b'\nto = ['c@d']\npassword = 'hunter2'\n",
        6,
        "a password never goes in the baseline file",
    ),
    (
        "[[sink]]\ntype = 'email'\nhost = 'mail'\nfrom = 'a@b'\nto = 5\n",
        5,
        "must be an array of 1-64 mail",
    ),
    (
        "[[sink]]\ntype = 'email'\nhost = 'mail'\nfrom = 'a@b'\nto = ['c@d', \"bad\\r\\nBcc: x@y\"]\n",
        5,
        "item 2",
    ),
    (
        "[[sink]]\ntype = 'email'\nhost = 'mail.example.net'\nfrom = 'a@b'\nto = ['c@d']\nuser = 'u'\n"
        "password_env = 'P'\n",
        1,
        "would send its password unencrypted",
    ),
    (
        "[[sink]]\ntype = 'email'\nhost = 'm'\nfrom = 'a@b'\nto = ['c@d']\nstarttls = true\ntls = true\n",
        7,
        "exclude",
    ),
    (
        "[[sink]]\ntype = 'email'\nhost = 'm'\nfrom = 'a@b'\nto = ['c@d']\npassword_env = '1X'\n",
        6,
        "environment",
    ),
    ("[[sink]]\ntype = 'webhook'\nurl = 'https://h/x'\ncommand = ['x']\n", 4, 'of type "webhook"'),
    ("[[sink]]\ntype = 'webhook'\n", 1, "url or url_env"),
    ("[[sink]]\ntype = 'webhook'\nurl = 'ftp://h/x'\n", 3, "http:// or https:// URL"),
    ("[[sink]]\ntype = 'exec'\ncommand = []\n", 3, "array of 1-64 strings"),
    ("[[sink]]\ntype = 'syslog'\nfacility = 'local9'\n", 3, "facility in [[sink]] must be"),
    ("[[sink]]\ntype = 'syslog'\nevents = ['listener_added', 'oops']\n", 3, "item 2 is 'oops'"),
    ("version = 2\n", 1, "version must be 1"),
    ("[[sink]]\ntype = 'email'\nhost = 'm'\nfrom = 'a@b'\nsender = 'a@b'\nto = 'c@d'\n", 5, "the same key"),
    ("[[sink]]\ntype = 'syslog'\nmax_per_hour = 0\n", 3, "max_per_hour 0 in [[sink]] is out of range"),
    ("[[sink]]\ntype = 'syslog'\nname = 'a b'\n", 3, "name in [[sink]] must be 1-64 letters"),
    ("[[sink]]\ntype = 'syslog'\nformat = 'json'\n", 3, 'must be "auto" or "syslog" or "journal"'),
    ("[[sink]]\ntype = 'exec'\ncommand = 'notify --all'\n", 3, "runs without a shell"),
    ("[[sink]]\ntype = 'webhook'\nformat = 'apprise'\nurl = 'not a url'\n", 4, "an apprise URL"),
    (
        "[[listener]]\nport = 0x" + "f" * 5000 + "\n",
        2,
        "port an integer of 20000 bits in [[listener]] is out of range",
    ),
    ("[watch]\n\ninterval = " + "9" * 5000 + "\n", 3, "a number too long"),
    ("a = " + "[" * 5000 + "]" * 5000 + "\n", 1, "nested too deeply"),
    (
        "[[listener]]\nport = 22\n[scope]\nports = '80'\n",
        2,
        "port 22 of this [[listener]] is outside [scope] ports",
    ),
    (
        "[scope]\nloopback = false\n[[listener]]\nport = 1\nexposure = 'loopback'\n",
        3,
        "which [scope] leaves out",
    ),
    ("[[listener]]\nport = 1\n[[listener]]\nport = 2\n\n[[listener]]\nport = 3\nnote = 1\n", 8, "note in"),
]


@pytest.mark.parametrize(("text", "line", "what"), INVALID)
def test_invalid_files_name_the_line(text: str, line: int, what: str) -> None:
    with pytest.raises(BadInput) as err:
        loads(text, "/etc/portscope/portscope.toml")
    message = str(err.value)
    assert message.startswith(f"/etc/portscope/portscope.toml:{line}: "), message
    assert what in message
    assert "\n" not in message and len(message) < 400


def test_sinks_read_here_are_sinks_watch_builds() -> None:
    """One schema: monitor/sinks.py builds every [[sink]] of a file this module accepted."""
    sinks = pytest.importorskip("portscope.monitor.sinks")
    built = sinks.build_sinks([s.table for s in loads(FULL).sinks])
    assert [x.type for x in built] == ["email", "webhook", "syslog", "exec", "webhook", "email"]


def test_invalid_file_on_the_command_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[[listener]]\nport = 22\n\n[[listener]]\nport = 99999\n")
    proc = portscope("baseline", "check", "--file", str(path))
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == (
        f"portscope baseline: {path}:5: port 99999 in [[listener]] is out of range: "
        "it must be a whole number 1-65535\n"
    )
    path.write_bytes(b"[watch]\ninterval = 5\n# caf\xe9\n")
    assert portscope("baseline", "check", "--file", str(path)).stderr.endswith(
        f"{path}:3: not UTF-8 text (TOML files are UTF-8)\n"
    )
    missing = portscope("baseline", "check", "--file", str(tmp_path / "none.toml"))
    assert missing.returncode == 2 and "none.toml: no such file" in missing.stderr


def test_locator_follows_toml_layout() -> None:
    text = textwrap.dedent(
        '''\
        title = """
        [[listener]]
        not a header"""
        ports = [
          22,  # ssh
          "x]",
        ]
        a.b."c.d" = 1
        [[listener]]
        port = 1
        [listener.inner]
        k = { x = 1, y = [ {z = 2},
                           {z = 3} ] }
        [[listener]]
        'port' = 2
        '''
    )
    lines = Locator(text).lines
    assert lines[("title",)] == 1
    assert (lines[("ports", 0)], lines[("ports", 1)]) == (5, 6)
    assert lines[("a", "b", "c.d")] == 8
    assert (lines[("listener", 0)], lines[("listener", 0, "port")]) == (9, 10)
    assert lines[("listener", 0, "inner", "k", "y", 1, "z")] == 13
    assert (lines[("listener", 1)], lines[("listener", 1, "port")]) == (14, 15)
    assert Locator(text).line(("listener", 1, "nosuchkey")) == 14


# ---------------------------------------------------------------------------------------------------
# fuzz


_KEY = st.sampled_from(
    [
        "version",
        "scope",
        "watch",
        "listener",
        "allow",
        "target",
        "sink",
        "port",
        "ports",
        "proto",
        "address",
        "exposure",
        "process",
        "user",
        "unit",
        "container",
        "interval",
        "persist",
        "type",
        "host",
        "to",
        "from",
        "url",
        "command",
        "events",
        "password_env",
        "starttls",
        "tls",
        "expect_status",
        "cert_warn_days",
        "loopback",
        "x",
        '"q.k"',
    ]
)
_VALUE = st.one_of(
    st.integers(-(2**70), 2**70).map(str),
    st.sampled_from(["true", "false", "nan", "-inf", "1.5", "1979-05-27T07:32:00Z", "07:32:00", "[]", "{}"]),
    st.sampled_from(["0x" + "f" * 4000, "9" * 4400, "-0o" + "7" * 5000, "1e999"]),
    st.sampled_from(
        ["tcp", "udp", "email", "webhook", "syslog", "exec", "loopback", "open", "-", "22-", "a@b"]
    ).map(lambda s: f'"{s}"'),
    st.text(max_size=12).map(lambda s: json.dumps(s)),
    st.lists(st.integers(-5, 70000).map(str), max_size=3).map(lambda xs: "[" + ",".join(xs) + "]"),
    st.text(max_size=8),
)
_LINE = st.one_of(
    st.sampled_from(
        ["[[listener]]", "[[allow]]", "[[target]]", "[[sink]]", "[watch]", "[scope]", "[listener]", ""]
    ),
    st.tuples(_KEY, _VALUE).map(lambda kv: f"{kv[0]} = {kv[1]}"),
    st.text(max_size=20),
)


@settings(max_examples=600, deadline=None)
@given(st.lists(_LINE, max_size=14))
def test_any_tomlish_text_is_a_baseline_or_bad_input(lines: list[str]) -> None:
    text = "\n".join(lines)
    try:
        loads(text)
    except BadInput as exc:
        assert "\n" not in str(exc) and str(exc).startswith("portscope.toml:")
    Locator(text)  # never raises, even on text tomllib refuses


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_any_bytes_are_a_baseline_or_bad_input(data: bytes) -> None:
    with contextlib.suppress(BadInput):
        loads(data)


@settings(max_examples=2000, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("[]{}\"'.=,#\n\r\t \\ab1-_")), max_size=60))
def test_locator_ends_on_any_text(text: str) -> None:
    """Unterminated strings, stray brackets: the scan stops (once it looped forever on an unclosed
    '''), and every line it reports exists."""
    lines = Locator(text).lines
    assert all(1 <= n <= text.count("\n") + 1 for n in lines.values())


@given(st.text())
def test_toml_string_reads_back(text: str) -> None:
    written = toml_string(text)
    assert tomllib.loads(f"a = {written}")["a"] == text
    assert clean(written) == written  # nothing for a terminal to interpret


_NAME = st.text(max_size=15)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.builds(
            Listener,
            st.sampled_from(["tcp", "udp"]),
            st.sampled_from(["0.0.0.0", "::", "127.0.0.1", "::1", "192.0.2.7", "::ffff:127.0.0.1"]),
            st.integers(1, 65535),
            st.one_of(st.none(), _NAME),
            st.one_of(st.none(), st.text(min_size=1, max_size=32)),
            st.one_of(st.none(), st.sampled_from(["nginx.service", "session-4.scope", "a[1].service"])),
            st.one_of(st.none(), st.just("docker:0123456789ab")),
            st.lists(st.integers(1, 4_000_000), max_size=3),
        ),
        max_size=6,
        unique_by=lambda x: (x.proto, x.address, x.port),
    )
)
def test_what_init_writes_check_accepts(listeners: list[Listener]) -> None:
    """init's file, read back, matches exactly the listeners it was written from: any process or
    user name survives the trip, and a restart (new pids) changes nothing."""
    text = render(listeners, scope=Scope(), ephemeral=EPH, host="h\nx", when="now", notes=["a\nb"])
    baseline = loads(text)
    assert len(baseline.listeners) == len(listeners)
    restarted = [
        Listener(x.proto, x.address, x.port, x.process, x.user, x.unit, x.container, [p + 1 for p in x.pids])
        for x in listeners
    ]
    assert compare(baseline, restarted) == []
    if listeners and listeners[0].process is not None:
        other = listeners[0].process + "z"
        moved = [Listener(listeners[0].proto, listeners[0].address, listeners[0].port, other), *restarted[1:]]
        assert [d.kind for d in compare(baseline, moved)] == ["changed"]
