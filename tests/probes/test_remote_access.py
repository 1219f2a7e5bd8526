"""probe: SSH against the bed's real sshd; Telnet, VNC and RDP against small servers on loopback that
speak the protocols' real bytes (RFC 854/855, RFC 6143, MS-RDPBCGR), since the project has no
daemon for them; hostile peers of each kind; and the parsers on arbitrary bytes.

Ground truth for SSH comes from sshd itself (`sshd -T` prints the algorithms it will offer, `sshd -V`
its version), never from our own parser.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import ssl
import subprocess
import sys
import tracemalloc
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from portscope.model import CheckResult, ProbeResult
from portscope.probes import by_name, rdp, ssh, telnet, vnc
from portscope.probes.base import Session, Settings
from portscope.probes.conn import Deadline
from portscope.probes.runner import probe_one
from tests.bed.bed import TestBed
from tests.helpers import portscope_json
from tests.probes.support import (
    Bounds,
    Handler,
    assert_clean,
    assert_ident_clean,
    probe_peer,
    self_signed,
    server_context,
    tcp_peer,
)

# What a probe hands to the output: JSON-shaped, bounded, escaped. clean_text cuts at its limit, then
# escapes: 512 characters may become 4 * 512 and an ellipsis; names (64) likewise.
OUTPUT = Bounds(text=4 * 512 + 1, key=64, list_items=400, dict_items=40, json_only=True)
NAMES = replace(OUTPUT, text=4 * 64 + 1)


# -- helpers ---------------------------------------------------------------------------------------------


def probe(handler: Handler, expect: str | None = None, **kw: Any) -> ProbeResult:
    """probe_peer(), checking on the way that what it returns for the output is clean."""
    result = probe_peer(handler, expect, **kw)
    assert_clean(result.to_dict()["details"], OUTPUT)
    assert_clean(result.banner, OUTPUT)
    return result


# -- SSH: the bed's sshd ---------------------------------------------------------------------------------


def _sshd_truth(bed: TestBed) -> dict[str, list[str]]:
    """What the bed's sshd will offer, in its own words (`sshd -T` on the bed's config)."""
    sshd = shutil.which("sshd") or "/usr/sbin/sshd"
    out = subprocess.run(
        [sshd, "-T", "-f", str(bed.tmpdir / "ssh" / "sshd_config")],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    truth = {}
    for line in out.splitlines():
        key, _, value = line.partition(" ")
        if key in ("kexalgorithms", "ciphers", "macs", "hostkeyalgorithms"):
            truth[key] = value.split(",")
    return truth


def _sshd_version() -> str:
    sshd = shutil.which("sshd") or "/usr/sbin/sshd"
    out = subprocess.run([sshd, "-V"], capture_output=True, text=True, timeout=30)
    m = re.search(r"OpenSSH_([\w.]+)", out.stderr + out.stdout)
    assert m, out
    return m.group(1)


def _raw_banner(address: str) -> str:
    """The identification line as the socket delivers it, read without portscope."""
    import socket

    with socket.create_connection((address, 22), timeout=10) as s:
        data = b""
        while b"\n" not in data:
            chunk = s.recv(256)
            if not chunk:
                break
            data += chunk
    return data.split(b"\r\n")[0].decode()


@pytest.mark.root
def test_ssh_on_the_bed_through_the_cli(bed: TestBed) -> None:
    (r,) = portscope_json("probe", f"{bed.addr4}:22")
    assert (r["status"], r["identified"], r["protocol"], r["product"]) == ("open", "ssh", "ssh", "OpenSSH")
    assert (r["expected"], r["matches"]) == ("ssh", True)
    raw = _raw_banner(bed.addr4)  # e.g. SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u10
    assert r["banner"] == raw
    software = raw.split(" ")[0].split("-", 2)[2]
    assert r["version"] == software.split("_", 1)[1]
    assert r["version"].startswith(_sshd_version())  # `sshd -V`: OpenSSH_9.2 for 9.2p1
    d = r["details"]
    assert d["protocol_version"] == "2.0" and d["software"] == software
    truth = _sshd_truth(bed)
    pseudo = {"kex-strict-s-v00@openssh.com", "ext-info-s"}  # markers, not algorithms (sshd -T omits them)
    assert [k for k in d["kex"] if k not in pseudo] == truth["kexalgorithms"]
    assert "curve25519-sha256" in d["kex"]
    assert d["ciphers"] == truth["ciphers"] and d["macs"] == truth["macs"]
    assert d["host_key"] == ["ssh-ed25519"]  # the bed's only host key
    assert set(d["host_key"]) <= set(truth["hostkeyalgorithms"])
    assert "none" in d["compression"]
    assert d["strict_kex"] == ("kex-strict-s-v00@openssh.com" in d["kex"])
    assert d["weak"] == []  # a stock modern sshd offers nothing on our list
    assert "kexinit_error" not in d
    assert r["probes"] == ["banner", "ssh"]  # the banner named it; nothing else was tried


@pytest.mark.root
def test_ssh_on_the_bed_over_ipv6_and_speaking_first(bed: TestBed) -> None:
    async def go() -> tuple[ProbeResult, Any]:
        check = CheckResult(bed.addr6, bed.addr6, 22, "tcp", "open", "syn-ack", service="ssh")
        result = await probe_one(check, Settings(timeout=10))
        # run() with no banner: we send our identification before the server's has been read.
        session = Session(bed.addr4, bed.addr4, 22, Settings(), Deadline(10))
        try:
            await session.connect()
            assert ssh.PROBE.run is not None
            ident = await ssh.PROBE.run(session, b"")
        finally:
            await session.close()
        return result, ident

    result, ident = asyncio.run(go())
    assert (result.service, result.product, result.matches) == ("ssh", "OpenSSH", True)
    assert "curve25519-sha256" in result.details["kex"]
    assert ident is not None and ident.product == "OpenSSH" and ident.version == result.version
    assert ident.details["kex"] == result.details["kex"]


# -- SSH: synthetic and hostile servers ------------------------------------------------------------------


def name_list(names: list[str]) -> bytes:
    raw = ",".join(names).encode()
    return len(raw).to_bytes(4, "big") + raw


def kexinit_payload(lists: list[list[str]], cookie: bytes = bytes(16)) -> bytes:
    """SSH_MSG_KEXINIT as RFC 4253 7.1 lays it out: ten name-lists, then the boolean and the reserved 0."""
    assert len(lists) == 10
    return bytes([20]) + cookie + b"".join(name_list(x) for x in lists) + b"\x00" + bytes(4)


def packet(payload: bytes) -> bytes:
    """RFC 4253 6: length, padding length, payload, padding (>= 4, total a multiple of 8)."""
    pad = 8 - (len(payload) + 5) % 8
    if pad < 4:
        pad += 8
    return (1 + len(payload) + pad).to_bytes(4, "big") + bytes([pad]) + payload + bytes(pad)


OLD_SERVER = [
    ["diffie-hellman-group1-sha1", "diffie-hellman-group14-sha1", "curve25519-sha256"],
    ["ssh-dss", "ssh-rsa", "ssh-ed25519"],
    ["aes128-ctr", "3des-cbc", "arcfour256", "aes256-cbc"],
    ["aes128-ctr", "blowfish-cbc"],
    ["hmac-md5", "hmac-sha2-256", "hmac-sha1-96"],
    ["hmac-sha2-256"],
    ["none", "zlib"],
    ["none"],
    [],
    [],
]


def ssh_server(
    ident: bytes = b"SSH-2.0-OldSSH_1.2.3 built-by-tests\r\n",
    lists: list[list[str]] | None = None,
    *,
    preamble: bytes = b"",
    wait_for_client: bool = False,
    together: bool = False,
    before: bytes = b"",
    got: list[bytes] | None = None,
) -> Handler:
    kexinit = packet(kexinit_payload(lists or OLD_SERVER))

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if wait_for_client:
            line = await reader.readline()
            if got is not None:
                got.append(line)
        writer.write(preamble + ident + (before + kexinit if together else b""))
        await writer.drain()
        if not wait_for_client:
            line = await reader.readline()
            if got is not None:
                got.append(line)
        if not together:
            writer.write(before + kexinit)
            await writer.drain()
        await reader.read(100)

    return handler


def test_ssh_weak_algorithms_are_flagged() -> None:
    got: list[bytes] = []

    r = probe(ssh_server(got=got))
    assert (r.service, r.product, r.version) == ("ssh", "OldSSH", "1.2.3")
    assert r.details["comment"] == "built-by-tests"
    assert got == [ssh.CLIENT_IDENT] and got[0].startswith(b"SSH-2.0-portscope_")
    assert r.details["kex"] == OLD_SERVER[0]
    assert r.details["ciphers"] == ["aes128-ctr", "3des-cbc", "arcfour256", "aes256-cbc", "blowfish-cbc"]
    assert r.details["compression"] == ["none", "zlib"]
    assert r.details["strict_kex"] is False
    assert r.details["weak"] == [
        "diffie-hellman-group1-sha1",
        "diffie-hellman-group14-sha1",
        "ssh-dss",
        "ssh-rsa",
        "3des-cbc",
        "arcfour256",
        "aes256-cbc",
        "blowfish-cbc",
        "hmac-md5",
        "hmac-sha1-96",
    ]


@pytest.mark.parametrize(
    "variant",
    ["server waits for the client", "KEXINIT in the banner's segment", "preamble and IGNORE first"],
)
def test_ssh_conversation_variants(variant: str) -> None:
    got: list[bytes] = []
    handler = ssh_server(
        wait_for_client=variant == "server waits for the client",
        together=variant == "KEXINIT in the banner's segment",
        preamble=b"Welcome\r\nauthorised use only\r\n" if variant.startswith("preamble") else b"",
        before=packet(bytes([2]) + name_list(["x"])) if variant.startswith("preamble") else b"",
        got=got,
    )

    r = probe(handler, "ssh", banner_wait_known=0.3)
    assert (r.service, r.product, r.matches) == ("ssh", "OldSSH", True)
    assert "kexinit_error" not in r.details and r.details["kex"] == OLD_SERVER[0]
    assert got == [ssh.CLIENT_IDENT]  # exactly one identification, whoever spoke first
    if variant.startswith("preamble"):
        assert r.details["preamble"] == ["Welcome", "authorised use only"]


def test_ssh_protocol_1_is_not_asked_for_kexinit() -> None:
    got: list[bytes] = []

    r = probe(ssh_server(b"SSH-1.5-Ancient_1.0\n", got=got))
    assert (r.service, r.version, r.details["protocol_version"]) == ("ssh", "1.0", "1.5")
    assert r.details["weak"] == ["protocol 1"] and "kex" not in r.details
    assert got == [b""]  # we said nothing: SSH-1 is a different protocol


async def _huge_length(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"SSH-2.0-x\r\n")
    await writer.drain()
    await reader.readline()
    writer.write((2**31).to_bytes(4, "big") + b"\x04\x14" + b"A" * 1000)
    await writer.drain()
    await reader.read(100)


async def _endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"SSH-2.0-x\r\n")
    chunk = os.urandom(65536)
    for _ in range(4096):  # 256 MiB at most: far past anything a probe may read
        writer.write(chunk)
        await writer.drain()


async def _endless_ignore(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"SSH-2.0-x\r\n")
    ignore = packet(bytes([2]) + bytes(30000))
    for _ in range(8192):
        writer.write(ignore)
        await writer.drain()


async def _endless_line(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"SSH-2.0-")
    for _ in range(100000):
        writer.write(b"x" * 4096)
        await writer.drain()


async def _drip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"SSH-2.0-x\r\n\x00\x00\x7f\xff")
    for _ in range(1000):
        await asyncio.sleep(0.2)
        writer.write(b"\x00")
        await writer.drain()


@pytest.mark.parametrize("behave", [_huge_length, _endless, _endless_ignore, _endless_line, _drip])
def test_hostile_ssh_peers_end_in_time_with_bounded_memory(behave: Handler) -> None:
    tracemalloc.start()
    try:
        r = probe(behave, "ssh", timeout=3)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert r.elapsed_ms is not None and r.elapsed_ms < 3000 + 1500  # its deadline plus closing
    assert peak < 32 * 1024 * 1024  # the peer sends up to 256 MiB
    assert len(json.dumps(r.to_dict())) < 20000
    assert r.service == "ssh" and "kex" not in r.details
    assert r.details["kexinit_error"].startswith("no KEXINIT")
    if behave is _huge_length:
        assert str(2**31) in r.details["kexinit_error"]


# -- Telnet ------------------------------------------------------------------------------------------------

IAC, DONT, DO, WONT, WILL, SB, SE = 255, 254, 253, 252, 251, 250, 240
TTYPE, NAWS, ECHO, SGA, NEW_ENVIRON = 24, 31, 1, 3, 39


def telnet_server(got: bytearray, *, banner_after_reply: bool = True) -> Handler:
    """What a Linux telnetd does: ask for terminal type and window size, offer echo and SGA, wait for the
    client's answers, then print the issue file and the login prompt."""
    opening = bytes(
        (IAC, DO, TTYPE, IAC, DO, NAWS, IAC, WILL, ECHO, IAC, WILL, SGA, IAC, DO, NEW_ENVIRON, IAC, DONT, 34)
    )
    text = b"\r\nDebian GNU/Linux 12\r\n\r\n\x00box login: "

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(opening + (b"" if banner_after_reply else text))
        await writer.drain()
        while len(got) < 5 * 3:  # one answer each to DO TTYPE, DO NAWS, WILL ECHO, WILL SGA, DO NEW-ENVIRON
            chunk = await asyncio.wait_for(reader.read(100), 5)
            if not chunk:
                return
            got.extend(chunk)
        if banner_after_reply:
            writer.write(text)
            await writer.drain()
        await reader.read(100)

    return handler


@pytest.mark.parametrize("expect", ["telnet", None])
def test_telnet_negotiation_and_login_banner(expect: str | None) -> None:
    got = bytearray()

    r = probe(telnet_server(got), expect)
    assert r.service == "telnet" and r.probes[:2] == ["banner", "telnet"]
    assert r.matches is (True if expect else None)
    d = r.details
    assert d["server_do"] == ["terminal-type", "window-size", "new-environ"]
    assert d["server_will"] == ["echo", "suppress-go-ahead"]
    assert d["server_dont"] == ["linemode"]
    assert d["banner"] == "Debian GNU/Linux 12 | box login:" and d["login_prompt"] is True
    # Our answers: refuse what is asked of us, accept echo and SGA, say nothing to DONT.
    assert bytes(got) == bytes(
        (IAC, WONT, TTYPE, IAC, WONT, NAWS, IAC, DO, ECHO, IAC, DO, SGA, IAC, WONT, NEW_ENVIRON)
    )


async def _telnet_loop(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Asks again after every answer, with a new option and an endless subnegotiation."""
    n = 0
    while True:
        writer.write(bytes((IAC, DO, n % 256, IAC, WILL, n % 256, IAC, SB, 24)) + b"\x01" * 700)
        await writer.drain()
        n += 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(reader.read(100), 0.05)


async def _telnet_flood(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(bytes((IAC, DO, TTYPE)))
    junk = b"\x1b]0;pwned\x07\xff\xfb\x01" * 5000
    for _ in range(2000):
        writer.write(junk)
        await writer.drain()


@pytest.mark.parametrize("behave", [_telnet_loop, _telnet_flood])
def test_hostile_telnet_peers(behave: Handler) -> None:
    r = probe(behave, "telnet", timeout=3)
    assert r.service == "telnet" and r.elapsed_ms is not None and r.elapsed_ms < 3000 + 1500
    assert len(json.dumps(r.to_dict())) < 20000
    assert len(r.details["server_do"]) <= telnet.MAX_OPTIONS


def test_telnet_text_after_negotiation_in_one_segment() -> None:
    got = bytearray()

    r = probe(telnet_server(got, banner_after_reply=False))
    assert r.details["banner"] == "Debian GNU/Linux 12 | box login:"


# -- VNC ---------------------------------------------------------------------------------------------------


def vnc_server(greeting: bytes, answer: bytes, got: list[bytes]) -> Handler:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(greeting)
        await writer.drain()
        got.append(await asyncio.wait_for(reader.readexactly(12), 5))
        writer.write(answer)
        await writer.drain()
        got.append(await reader.read(100))  # we must hang up without choosing a type

    return handler


def _reason(text: bytes) -> bytes:
    return len(text).to_bytes(4, "big") + text


@pytest.mark.parametrize(
    ("greeting", "answer", "reply", "version", "fields"),
    [
        (
            b"RFB 003.008\n",
            bytes((2, 1, 2)),
            b"RFB 003.008\n",
            "3.8",
            {"security_types": ["None", "VNC Authentication"], "no_auth": True},
        ),
        (
            b"RFB 003.007\n",
            bytes((3, 2, 18, 19)),
            b"RFB 003.007\n",
            "3.7",
            {"security_types": ["VNC Authentication", "TLS", "VeNCrypt"], "no_auth": False},
        ),
        (
            b"RFB 003.003\n",
            (2).to_bytes(4, "big"),
            b"RFB 003.003\n",
            "3.3",
            {"security_types": ["VNC Authentication"], "no_auth": False},
        ),
        (
            b"RFB 003.889\n",
            bytes((2, 30, 2)),
            b"RFB 003.008\n",
            "3.889",
            {
                "variant": "Apple Remote Desktop",
                "security_types": ["Apple (Diffie-Hellman)", "VNC Authentication"],
            },
        ),
        (
            b"RFB 003.008\n",
            b"\x00" + _reason(b"Too many security failures\x1b[2J"),
            b"RFB 003.008\n",
            "3.8",
            {"error": "Too many security failures\\x1b[2J"},
        ),
        (
            b"RFB 003.003\n",
            bytes(4) + _reason(b"connection limit reached"),
            b"RFB 003.003\n",
            "3.3",
            {"error": "connection limit reached"},
        ),
    ],
)
def test_vnc_versions_and_security_types(
    greeting: bytes, answer: bytes, reply: bytes, version: str, fields: dict[str, object]
) -> None:
    got: list[bytes] = []

    r = probe(vnc_server(greeting, answer, got))
    assert (r.service, r.product, r.version) == ("vnc", "VNC (RFB)", version)
    assert r.details["protocol_version"] == version
    for key, value in fields.items():
        assert r.details[key] == value, key
    assert got == [reply, b""]


def test_vnc_table_through_the_cli() -> None:
    async def go() -> tuple[int, str, str]:
        async with tcp_peer(vnc_server(b"RFB 003.008\n", bytes((1, 1)), [])) as port:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "portscope",
                "probe",
                f"127.0.0.1:{port}",
                "--expect",
                "vnc",
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=dict(os.environ, NO_COLOR="1"),
                cwd="/",
            )
            out, err = await asyncio.wait_for(proc.communicate(), 60)
            return proc.returncode or 0, out.decode(), err.decode()

    rc, out, err = asyncio.run(go())
    assert rc == 0, err
    assert "vnc" in out and "VNC (RFB) 3.8" in out and "as expected" in out


def delayed(handler: Handler, seconds: float) -> Handler:
    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(seconds)
        await handler(reader, writer)

    return slow


@pytest.mark.parametrize("kind", ["vnc", "telnet"])
def test_greeting_slower_than_the_banner_wait(kind: str) -> None:
    """The runner's banner wait passes in silence, so run() gets no banner and listens itself."""
    got: list[bytes] = []
    handler = (
        vnc_server(b"RFB 003.008\n", bytes((1, 2)), got) if kind == "vnc" else telnet_server(bytearray())
    )

    r = probe(delayed(handler, 0.5), kind, banner_wait_known=0.1, banner_wait=3.0)
    assert r.service == kind and r.matches is True and r.probes[:2] == ["banner", kind]
    if kind == "vnc":
        assert r.details["security_types"] == ["VNC Authentication"] and got == [b"RFB 003.008\n", b""]
    else:
        assert r.details["login_prompt"] is True


# -- RDP ---------------------------------------------------------------------------------------------------

# MS-RDPBCGR 2.2.1.1 without the optional cookie: TPKT (4), X.224 CR (7), RDP_NEG_REQ (8) for SSL|HYBRID.
CONNECTION_REQUEST = bytes.fromhex("0300 0013 0ee0 0000 0000 0001 0008 0003 000000".replace(" ", ""))


def confirm(neg: bytes = b"") -> bytes:
    x224 = bytes((6 + len(neg), 0xD0, 0, 0, 0x12, 0x34, 0)) + neg
    return b"\x03\x00" + (4 + len(x224)).to_bytes(2, "big") + x224


def neg_rsp(selected: int, flags: int = 0) -> bytes:
    return bytes((2, flags)) + (8).to_bytes(2, "little") + selected.to_bytes(4, "little")


def neg_failure(code: int) -> bytes:
    return bytes((3, 0)) + (8).to_bytes(2, "little") + code.to_bytes(4, "little")


@pytest.fixture(scope="module")
def rdp_tls(tmp_path_factory: pytest.TempPathFactory) -> ssl.SSLContext:
    """The self-signed certificate RDP hosts present, named after the machine, with no SAN."""
    return server_context(*self_signed(tmp_path_factory.mktemp("rdp"), "WIN-RDPHOST", serial=7))


def rdp_server(answer: bytes, tls: ssl.SSLContext | None, got: list[bytes]) -> Handler:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await asyncio.wait_for(reader.readexactly(4), 5)
        if head[:2] != b"\x03\x00":  # not a TPKT (another probe's request): hang up as RDP servers do
            return
        request = head + await reader.readexactly(int.from_bytes(head[2:], "big") - 4)
        got.append(request)
        writer.write(answer)
        await writer.drain()
        if tls is not None:
            await writer.start_tls(tls)
            got.append(b"tls")
        await reader.read(100)

    return handler


@pytest.mark.parametrize(
    ("answer", "uses_tls", "fields"),
    [
        (
            confirm(neg_rsp(2, 0x1F)),
            True,
            {
                "security": "CredSSP (NLA)",
                "nla": True,
                "selected_protocol": 2,
                "server_flags": [
                    "extended client data",
                    "graphics pipeline",
                    "restricted admin mode",
                    "redirected authentication mode",
                ],
            },
        ),
        (confirm(neg_rsp(1)), True, {"security": "TLS", "nla": False}),
        (confirm(neg_rsp(0)), False, {"security": "standard RDP", "nla": False}),
        (
            confirm(neg_failure(2)),
            False,
            {"negotiation_failure": "SSL_NOT_ALLOWED_BY_SERVER", "security": "standard RDP", "nla": False},
        ),
        (
            confirm(neg_failure(5)),
            False,
            {
                "negotiation_failure": "HYBRID_REQUIRED_BY_SERVER",
                "failure_reason": "the server requires CredSSP (NLA)",
            },
        ),
        (confirm(), False, {"negotiation": False, "security": "standard RDP"}),
    ],
)
def test_rdp_negotiation(
    answer: bytes, uses_tls: bool, fields: dict[str, object], rdp_tls: ssl.SSLContext
) -> None:
    got: list[bytes] = []

    r = probe(rdp_server(answer, rdp_tls if uses_tls else None, got), "rdp")
    assert (r.service, r.protocol, r.matches) == ("rdp", "rdp", True)
    for key, value in fields.items():
        assert r.details[key] == value, key
    assert got[0] == CONNECTION_REQUEST == rdp.connection_request()
    if uses_tls:
        assert got[1] == b"tls"
        assert r.tls is not None and r.tls.error is None and r.tls.starttls is True
        assert r.tls.subject == "CN=WIN-RDPHOST" and r.tls.self_signed is True
        assert r.tls.version in ("TLSv1.2", "TLSv1.3")
    else:
        assert r.tls is None and got[1:] == []


def test_rdp_found_on_an_unexpected_port(rdp_tls: ssl.SSLContext) -> None:
    """No expectation: the runner's own order (banner, TLS, HTTP, ...) reaches RDP in the end."""
    got: list[bytes] = []

    r = probe(
        rdp_server(confirm(neg_rsp(2)), rdp_tls, got), timeout=20
    )  # room for every probe listed before RDP
    assert r.service == "rdp" and r.details["nla"] is True and r.probes[-1] == "rdp"
    assert CONNECTION_REQUEST in got


async def _rdp_hostile(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read(100)
    writer.write(b"\x03\x00\xff\xff\x0e\xd0" + b"\x00" * 20)  # a TPKT length far past any confirm
    for _ in range(1000):
        writer.write(b"\x03" * 65536)
        await writer.drain()


def test_hostile_rdp_peer() -> None:
    r = probe(_rdp_hostile, "rdp", timeout=3)
    assert r.service == "unknown" and r.matches is False
    assert r.elapsed_ms is not None and r.elapsed_ms < 3000 + 1500


# -- parsers on arbitrary bytes ---------------------------------------------------------------------------

_PREFIXES = [
    b"",
    b"SSH-2.0-",
    b"SSH-1.99-OpenSSH_",
    b"pre\r\nSSH-2.0-x ",
    b"\xff\xfd",
    b"\xff\xfa",
    b"RFB 003.00",
    b"\x03\x00\x00\x13\x0e\xd0",
    b"\x03\x00\x00\x0b\x06\xd0",
]


@settings(max_examples=500, deadline=None)
@given(st.sampled_from(_PREFIXES), st.binary(max_size=4096))
def test_recognizers_never_raise_and_stay_clean(prefix: bytes, data: bytes) -> None:
    for mod in (ssh, telnet, vnc, rdp):
        ident = mod.recognize(prefix + data)
        if ident is not None:
            assert ident.service == mod.PROBE.name
            assert_ident_clean(ident, OUTPUT, NAMES)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=1024))
def test_recognizers_on_their_own_shapes(tail: bytes) -> None:
    ident = ssh.recognize(b"SSH-2.0-OpenSSH_9.9p1 \x1b[31m" + tail.replace(b"\n", b"") + b"\r\n")
    assert ident is not None and (ident.product, ident.version) == ("OpenSSH", "9.9p1")
    assert_ident_clean(ident, OUTPUT, NAMES)
    assert telnet.recognize(bytes((IAC, WILL, ECHO)) + tail) is not None
    ident = vnc.recognize(b"RFB 003.008\n" + tail)
    assert ident is not None and ident.version == "3.8"
    ident = rdp.recognize(confirm(neg_rsp(2)) + tail)
    assert ident is not None and ident.details["nla"] is True


# Printable ASCII and the control characters that are not white space: a name is never blank.
_NAME = st.text(
    st.characters(codec="ascii", exclude_characters=", \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f"),
    min_size=1,
    max_size=80,
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(_NAME, max_size=12), min_size=10, max_size=10), st.binary(min_size=16, max_size=16))
def test_kexinit_round_trip(lists: list[list[str]], cookie: bytes) -> None:
    payload = kexinit_payload(lists, cookie)
    body = packet(payload)
    n = ssh.packet_length(body)
    assert n == len(body) - 4
    assert ssh.packet_payload(body[4:]) == payload
    kex = ssh.parse_kexinit(payload)
    assert kex is not None
    assert len(kex.kex) == len(lists[0]) and len(kex.comp_s2c) == len(lists[7])
    for got, sent in zip(kex.kex + kex.enc_s2c, lists[0] + lists[3], strict=True):
        assert_clean(got, NAMES)
        if sent.isprintable() and len(sent) <= 64 and sent == sent.strip():
            assert got == sent
    assert_clean(ssh.describe_kexinit(kex), OUTPUT)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=2048))
def test_binary_parsers_never_raise(data: bytes) -> None:
    for payload in (data, b"\x14" + data):
        kex = ssh.parse_kexinit(payload)
        if kex is not None:
            assert_clean(ssh.describe_kexinit(kex), OUTPUT)
    n = ssh.packet_length(data)
    assert n is None or 2 <= n <= ssh.MAX_PACKET
    p = ssh.packet_payload(data)
    assert p is None or (len(p) < len(data) and p)
    cc = rdp.parse_confirm(data)
    if cc is not None:
        assert_ident_clean(rdp.describe(cc), OUTPUT, NAMES)
    neg = telnet.parse(data)
    assert len(neg.text) <= len(data) and len(neg.partial) <= len(data)
    assert all(v in (WILL, WONT, DO, DONT) and 0 <= o <= 255 for v, o in neg.commands)
    assert_ident_clean(telnet.describe(neg.commands, neg.text), OUTPUT, NAMES)
    types = vnc.parse_security_types(data)
    if types is not None:
        assert_clean(vnc.describe_types(types), OUTPUT)
    found = ssh.find_ident(data)
    if found is not None:
        assert_ident_clean(ssh.banner_ident(found[0]), OUTPUT, NAMES)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(0, 255), st.booleans())
def test_rdp_confirm_round_trip(value: int, flags: int, failure: bool) -> None:
    cc = rdp.parse_confirm(confirm(neg_failure(value) if failure else neg_rsp(value, flags)))
    assert cc is not None
    if failure:
        assert (cc.failure, cc.selected) == (value, None)
    else:
        assert (cc.selected, cc.flags, cc.failure) == (value, flags, None)
    assert_ident_clean(rdp.describe(cc), OUTPUT, NAMES)


def test_probes_are_registered_with_their_ports() -> None:
    assert by_name("ssh").ports >= {22} and by_name("telnet").ports >= {23}
    assert by_name("vnc").ports >= set(range(5900, 5910)) and by_name("rdp").ports == {3389}
    assert by_name("ssh").server_first and by_name("vnc").server_first and not by_name("rdp").server_first
