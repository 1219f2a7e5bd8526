"""probe: SMTP, FTP, POP3 and IMAP against the bed's real daemons, and against fakes and hostile peers.

The bed runs OpenSMTPD on 25 (STARTTLS offered), Dovecot's submission on 587 (STARTTLS, AUTH only
after it) and 465 (implicit TLS), Dovecot IMAP on 143/993 and POP3 on 110/995, and vsftpd with AUTH TLS
on 21, all with the certificate for bed.test from the bed's CA. None of that is known to the probes
except through what the servers say. Loopback fakes cover what no daemon here does: a "220" greeting
that names neither protocol, and peers that flood, dribble or lie.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from portscope.model import CheckResult, ProbeResult
from portscope.probes import ftp, imap, pop3, smtp
from portscope.probes.base import Ident, Settings
from portscope.probes.runner import probe_one
from tests.bed.bed import TestBed
from tests.helpers import portscope

UNSAFE = [chr(c) for c in (*range(0x20), 0x7F)]
MAIL_PORTS = (21, 25, 110, 143, 465, 587, 993, 995)


def _clean(value: object) -> bool:
    text = json.dumps(value, ensure_ascii=False)
    return not any(c in text for c in UNSAFE) and "\x9b" not in text


def _probe_cli(address: str, ports: tuple[int, ...], bed: TestBed, ca: bool = True) -> dict[int, Any]:
    args = [address, ",".join(map(str, ports)), "--json", "--sni", bed.cert_hostname]
    if ca:
        args += ["--ca-file", str(bed.ca_pem)]
    proc = portscope("probe", *args)
    assert proc.returncode in (0, 1), proc.stderr
    return {r["port"]: r for r in json.loads(proc.stdout)}


@pytest.fixture(scope="module")
def mail4(bed: TestBed) -> dict[int, Any]:
    """Every mail and FTP port of the bed over IPv4, probed once through the CLI (concurrently)."""
    return _probe_cli(bed.addr4, MAIL_PORTS, bed)


def _trusted(t: dict[str, Any] | None, bed: TestBed, starttls: bool) -> None:
    assert t is not None and t["error"] is None
    assert t["starttls"] is starttls
    assert t["version"] in ("TLSv1.2", "TLSv1.3")
    assert t["subject"] == f"CN={bed.cert_hostname}" and "portscope test bed CA" in t["issuer"]
    assert (t["verified"], t["hostname_match"], t["expired"]) == (True, True, False)


# -- the bed's real daemons ------------------------------------------------------------------------------


@pytest.mark.root
def test_submission_starttls_and_auth_only_after_it(bed: TestBed, mail4: dict[int, Any]) -> None:
    r = mail4[587]
    assert (r["identified"], r["protocol"], r["product"]) == ("smtp", "smtp", "Dovecot")
    assert (r["expected"], r["matches"]) == ("submission", True)
    d = r["details"]
    assert d["banner_host"] == bed.cert_hostname and d["esmtp"] is True
    assert d["starttls"] is True and "STARTTLS" in d["extensions"] and "PIPELINING" in d["extensions"]
    assert "AUTH" not in d["extensions"] and d["auth_before_tls"] is False
    assert "AUTH" in d["extensions_after_tls"] and "STARTTLS" not in d["extensions_after_tls"]
    assert d["auth_mechanisms"] == ["PLAIN"]
    assert "confidence" not in d
    _trusted(r["tls"], bed, starttls=True)
    assert "with STARTTLS" in r["summary"] and "as expected" in r["summary"]


@pytest.mark.root
def test_smtp_on_25_is_opensmtpd_offering_starttls(bed: TestBed, mail4: dict[int, Any]) -> None:
    r = mail4[25]
    assert (r["identified"], r["product"], r["matches"]) == ("smtp", "OpenSMTPD", True)
    d = r["details"]
    assert d["banner_host"] == bed.cert_hostname and d["ehlo_host"] == bed.cert_hostname
    assert d["starttls"] is True and d["size_limit"] > 0
    assert {"8BITMIME", "SIZE", "STARTTLS"} <= set(d["extensions"])
    t = r["tls"]
    assert t is not None and t["starttls"] is True
    # Debian 12's OpenSMTPD 6.8 breaks its own handshake under OpenSSL 3 (see the bed's truth table);
    # a fixed OpenSMTPD completes it. Either way the probe must say which, consistently.
    if t["error"] is None:
        _trusted(t, bed, starttls=True)
        assert "extensions_after_tls" in d
    else:
        assert t["error"].startswith("handshake failed") and d["starttls_error"] == t["error"]
        assert "extensions_after_tls" not in d


@pytest.mark.root
@pytest.mark.parametrize(
    ("port", "service", "protocol"), [(465, "smtps", "smtp"), (993, "imaps", "imap"), (995, "pop3s", "pop3")]
)
def test_implicit_tls_ports(
    bed: TestBed, mail4: dict[int, Any], port: int, service: str, protocol: str
) -> None:
    r = mail4[port]
    assert (r["identified"], r["protocol"], r["product"], r["matches"]) == (
        service,
        protocol,
        "Dovecot",
        True,
    )
    _trusted(r["tls"], bed, starttls=False)
    d = r["details"]
    assert "starttls_error" not in d and "confidence" not in d
    if protocol == "smtp":
        assert "AUTH" in d["extensions"] and d["auth_before_tls"] is False and d["starttls"] is False
    elif protocol == "imap":
        assert "AUTH=PLAIN" in d["capabilities"] and d["starttls"] is False and "login_disabled" not in d
    else:
        assert "USER" in d["capabilities"] and d["stls"] is False and d["sasl_mechanisms"] == ["PLAIN"]


@pytest.mark.root
def test_ftp_auth_tls(bed: TestBed, mail4: dict[int, Any]) -> None:
    r = mail4[21]
    assert (r["identified"], r["product"], r["matches"]) == ("ftp", "vsFTPd", True)
    assert re.fullmatch(r"\d+\.\d+\.\d+", r["version"] or ""), r["version"]
    d = r["details"]
    assert "AUTH TLS" in d["features"] and "PBSZ" in d["features"] and d["auth_tls"] is True
    _trusted(r["tls"], bed, starttls=True)
    assert r["banner"].startswith("220 (vsFTPd")


@pytest.mark.root
def test_imap_starttls_and_logindisabled(bed: TestBed, mail4: dict[int, Any]) -> None:
    r = mail4[143]
    assert (r["identified"], r["product"], r["matches"]) == ("imap", "Dovecot", True)
    d = r["details"]
    assert d["greeting_status"] == "OK" and "IMAP4rev1" in d["capabilities"]
    assert d["starttls"] is True and d["login_disabled"] is True
    assert "LOGINDISABLED" not in d["capabilities_after_tls"] and "AUTH=PLAIN" in d["capabilities_after_tls"]
    assert d["auth_mechanisms"] == ["PLAIN"]
    _trusted(r["tls"], bed, starttls=True)


@pytest.mark.root
def test_pop3_stls(bed: TestBed, mail4: dict[int, Any]) -> None:
    r = mail4[110]
    assert (r["identified"], r["product"], r["matches"]) == ("pop3", "Dovecot", True)
    d = r["details"]
    assert d["stls"] is True and "STLS" in d["capabilities"] and d["user_before_tls"] is False
    assert "USER" in d["capabilities_after_tls"] and "STLS" not in d["capabilities_after_tls"]
    assert d["apop"] is False
    _trusted(r["tls"], bed, starttls=True)


@pytest.mark.root
def test_ipv6_and_an_untrusted_ca(bed: TestBed) -> None:
    rows = _probe_cli(bed.addr6, (21, 110, 143, 587), bed, ca=False)
    assert {p: r["identified"] for p, r in rows.items()} == {21: "ftp", 110: "pop3", 143: "imap", 587: "smtp"}
    for r in rows.values():
        t = r["tls"]
        assert t["starttls"] is True and t["error"] is None
        assert t["verified"] is False and "authority" in t["verify_error"]
        assert "not trusted" in r["summary"]
        assert _clean(r)


@pytest.mark.root
def test_scan_probe_names_every_mail_port(bed: TestBed) -> None:
    ports = ",".join(map(str, MAIL_PORTS))
    proc = portscope("scan", bed.addr4, "-p", ports, "--probe", "--timeout", "1", "--json")
    assert proc.returncode == 0, proc.stderr
    got = {r["port"]: r["identified"] for r in json.loads(proc.stdout)}
    assert got == {
        21: "ftp",
        25: "smtp",
        110: "pop3",
        143: "imap",
        465: "smtps",
        587: "smtp",
        993: "imaps",
        995: "pop3s",
    }


# -- fakes and hostile peers on loopback ------------------------------------------------------------------

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def _run_against(
    handler: Handler, expect: str | None, timeout: float = 3.0
) -> tuple[ProbeResult, int, float]:
    """Probe a loopback server running `handler`, in this process: (result, peak bytes traced, seconds)."""

    async def main() -> ProbeResult:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                await handler(reader, writer)
            except (OSError, asyncio.IncompleteReadError, asyncio.CancelledError):
                pass  # the probe hung up, or the test ended while this peer still flooded or slept
            finally:
                writer.close()

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        check = CheckResult("127.0.0.1", "127.0.0.1", port, "tcp", "open", "syn-ack")
        try:
            return await probe_one(check, Settings(timeout=timeout), expect)
        finally:
            server.close()

    tracemalloc.start()
    started = time.monotonic()
    try:
        result = asyncio.run(main())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return result, peak, time.monotonic() - started


async def _line(reader: asyncio.StreamReader) -> bytes:
    return await asyncio.wait_for(reader.readline(), 10)


def _ftp_like(greeting: bytes) -> Handler:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(greeting)
        while cmd := (await _line(reader)).strip().upper():
            if cmd == b"FEAT":
                writer.write(b"211-Features:\r\n MDTM\r\n SIZE\r\n UTF8\r\n211 End\r\n")
            elif cmd == b"QUIT":
                writer.write(b"221 Goodbye.\r\n")
                return
            else:
                writer.write(b"500 Unknown command.\r\n")
            await writer.drain()

    return handler


def _smtp_like(greeting: bytes, ehlo: bytes = b"250-x.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n") -> Handler:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(greeting)
        while cmd := (await _line(reader)).strip().upper():
            if cmd.startswith(b"EHLO"):
                writer.write(ehlo)
            elif cmd == b"QUIT":
                writer.write(b"221 2.0.0 Bye\r\n")
                return
            else:
                writer.write(b"502 5.5.2 Error: command not recognized\r\n")
            await writer.drain()

    return handler


@pytest.mark.parametrize("expect", [None, "smtp", "ftp"])
def test_a_bare_220_from_ftp_is_told_apart(expect: str | None) -> None:
    """Whichever probe gets the greeting first, FTP's answer to FEAT decides."""
    result, _, _ = _run_against(_ftp_like(b"220 Service ready for new user.\r\n"), expect)
    assert (result.service, result.protocol) == ("ftp", "ftp")
    assert result.details["features"] == ["MDTM", "SIZE", "UTF8"]
    assert result.details["auth_tls"] is False and "confidence" not in result.details
    assert result.matches is (None if expect is None else expect == "ftp")


@pytest.mark.parametrize("expect", [None, "smtp", "ftp"])
def test_a_bare_220_from_smtp_is_told_apart(expect: str | None) -> None:
    result, _, _ = _run_against(_smtp_like(b"220 mx.test ready\r\n"), expect)
    assert (result.service, result.protocol) == ("smtp", "smtp")
    assert result.details["extensions"] == ["PIPELINING", "8BITMIME"]
    assert result.details["banner_host"] == "mx.test" and result.details["starttls"] is False
    assert "confidence" not in result.details


def test_a_greeting_split_across_segments() -> None:
    """The runner's first read may end mid-line: the rest of the line must not pose as the next reply."""
    base = _smtp_like(b"")

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220-mx.test ESMTP first line\r\n220 mx.te")
        await writer.drain()
        await asyncio.sleep(0.3)
        writer.write(b"st ready\r\n")
        await base(reader, writer)

    result, _, _ = _run_against(handler, "smtp")
    assert (result.service, result.details["esmtp"]) == ("smtp", True)
    assert result.details["extensions"] == ["PIPELINING", "8BITMIME"]
    assert smtp.parse_reply(b"220 mx.te").complete is False
    assert smtp.parse_reply(b"220 mx.test ready\r\n").complete is True


def test_smtp_without_ehlo_falls_back_to_helo() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 old.test SMTP Sendmail 8.6.12 ready\r\n")
        while cmd := (await _line(reader)).strip().upper():
            writer.write(b"250 old.test\r\n" if cmd.startswith(b"HELO") else b"500 Command unrecognized\r\n")
            await writer.drain()

    result, _, _ = _run_against(handler, "smtp")
    assert (result.service, result.product, result.version) == ("smtp", "Sendmail", "8.6.12")
    assert result.details["esmtp"] is False and result.matches is True


def test_starttls_answered_in_plain_text() -> None:
    """A server that accepts STARTTLS and then keeps talking plain text: the upgrade failed, say so."""
    ehlo = b"250-x.test\r\n250-STARTTLS\r\n250 AUTH PLAIN LOGIN\r\n"

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 x.test ESMTP fake\r\n")
        while cmd := (await _line(reader)).strip().upper():
            if cmd.startswith(b"EHLO"):
                writer.write(ehlo)
            elif cmd == b"STARTTLS":
                writer.write(b"220 go ahead\r\n")
                await writer.drain()
                await reader.read(1)  # the ClientHello has come: answer it in plain text
                writer.write(b"500 \x1b[31mnot really\r\n")
            await writer.drain()

    result, _, _ = _run_against(handler, "smtp")
    d = result.details
    assert (
        result.service == "smtp"
        and d["auth_before_tls"] is True
        and d["auth_mechanisms"] == ["PLAIN", "LOGIN"]
    )
    assert result.tls is not None and result.tls.starttls and result.tls.error
    assert d["starttls_error"] == result.tls.error and "plain text" in d["starttls_error"]


def test_starttls_refused() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 x.test ESMTP Postfix (Debian/GNU)\r\n")
        while cmd := (await _line(reader)).strip().upper():
            if cmd.startswith(b"EHLO"):
                writer.write(b"250-x.test\r\n250 STARTTLS\r\n")
            elif cmd == b"STARTTLS":
                writer.write(b"454 4.7.0 TLS not available due to local problem\r\n")
            else:
                writer.write(b"221 bye\r\n")
            await writer.drain()

    result, _, _ = _run_against(handler, None)
    assert (result.service, result.product) == ("smtp", "Postfix")
    assert result.details["starttls_error"].startswith("STARTTLS refused: 454 4.7.0")
    assert result.tls is None


async def _endless_ehlo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"220 flood.test ESMTP\r\n")
    await _line(reader)
    for i in range(10**6):
        writer.write(b"250-X%d \x1b[2J\r\n" % i)
        await writer.drain()


async def _endless_greeting(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    for _ in range(10**6):
        writer.write(b"220-" + b"w" * 200 + b"\r\n")
        await writer.drain()


async def _dribbled_ehlo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"220 slow.test ESMTP\r\n")
    await _line(reader)
    writer.write(b"250-slow.test\r\n")
    for _ in range(1000):
        writer.write(b"2")
        await writer.drain()
        await asyncio.sleep(0.05)


async def _dribbled_greeting(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    for byte in b"220 slow.test ESMTP\r\n" * 10:
        writer.write(bytes([byte]))
        await writer.drain()
        await asyncio.sleep(0.1)


async def _endless_feat(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"220 (vsFTPd 3.0.3)\r\n")
    await _line(reader)
    writer.write(b"211-Features:\r\n")
    for i in range(10**6):
        writer.write(b" FEATURE%d\r\n" % i)
        await writer.drain()


async def _endless_capa(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"+OK POP3 ready\r\n")
    await _line(reader)
    writer.write(b"+OK\r\n")
    for i in range(10**6):
        writer.write(b"X-CAP%d\r\n" % i)
        await writer.drain()


async def _endless_imap(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"* OK [CAPABILITY IMAP4rev1 STARTTLS] ready\r\n")
    await _line(reader)
    for i in range(10**6):
        writer.write(b"* CAPABILITY IMAP4rev1 X%d\r\n" % i)
        await writer.drain()


async def _silent_after_greeting(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"220 quiet.test ESMTP\r\n")
    await asyncio.sleep(20)


HOSTILE: dict[str, tuple[Handler, str, str | None]] = {
    "endless 250- continuation": (_endless_ehlo, "smtp", "smtp"),
    "endless 220- greeting": (_endless_greeting, "smtp", None),
    "dribbled EHLO reply": (_dribbled_ehlo, "smtp", "smtp"),
    "dribbled greeting": (_dribbled_greeting, "smtp", None),
    "endless FEAT": (_endless_feat, "ftp", "ftp"),
    "endless POP3 CAPA": (_endless_capa, "pop3", "pop3"),
    "endless IMAP untagged lines": (_endless_imap, "imap", "imap"),
    "silent after the greeting": (_silent_after_greeting, "smtp", "smtp"),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_peers_end_in_time_with_bounded_memory(name: str) -> None:
    handler, expect, service = HOSTILE[name]
    result, peak, seconds = _run_against(handler, expect, timeout=3.0)
    assert seconds < 3.0 + 2.0, seconds  # the probe's deadline, plus closing; not a speed test
    assert peak < 16 * 1024 * 1024, peak  # the flood is endless; what we keep of it is not
    out = result.to_dict()
    assert len(json.dumps(out)) < 30000 and _clean(out)
    if service is not None:
        assert result.service == service, out
    if name == "endless 250- continuation":
        assert (
            result.details["ehlo_truncated"] is True and len(result.details["extensions"]) <= smtp.MAX_ITEMS
        )
    if name == "endless FEAT":
        assert result.details["feat_truncated"] is True and len(result.details["features"]) <= smtp.MAX_ITEMS


def test_hostile_bytes_stay_escaped_through_the_cli() -> None:
    """Control characters in a greeting and in EHLO lines reach no output format unescaped."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 \x1b]0;pwned\x07 ESMTP \x9b31m\r\n")
        await _line(reader)
        writer.write(b"250-\x1b[2Jx\r\n250-AUTH \x1b[31mPLAIN\r\n250 SIZE 99999999999999999999999\r\n")
        await writer.drain()
        await _line(reader)

    async def main() -> list[str]:
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        outs = []
        for fmt in ("--json", "--csv", None):
            args = ["probe", f"127.0.0.1:{port}", "--probe-timeout", "3", "--expect", "smtp"]
            proc = await asyncio.to_thread(portscope, *args, *([fmt] if fmt else []))
            assert proc.returncode in (0, 1) and "Traceback" not in proc.stderr, proc.stderr
            outs.append(proc.stdout)
        server.close()
        return outs

    outs = asyncio.run(main())
    for out in outs:
        assert not any(c in out.replace("\n", "") for c in UNSAFE) and "\x9b" not in out
    (result,) = json.loads(outs[0])
    assert result["identified"] == "smtp"
    assert result["details"]["size_limit"] is None  # 23 digits: out of bounds, not a number we trust
    assert "\\x1b]0;pwned" in result["banner"]


# -- parsers on arbitrary bytes ---------------------------------------------------------------------------


def _ident_is_clean(ident: Ident | None) -> None:
    if ident is None:
        return
    assert ident.confidence in ("high", "low")
    for value in (ident.service, ident.product, ident.version):
        assert value is None or (len(value) < 300 and not any(c in value for c in UNSAFE))
    assert _clean(ident.details) and len(json.dumps(ident.details)) < 20000


_GREETINGS = st.sampled_from(
    [
        b"220 ",
        b"220-",
        b"+OK ",
        b"-ERR POP ",
        b"* OK ",
        b"* PREAUTH ",
        b"* BYE ",
        b"* OK [CAPABILITY ",
        b"421 ",
    ]
)


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.binary(max_size=4096), st.tuples(_GREETINGS, st.binary(max_size=2048)).map(b"".join)))
def test_recognizers_never_raise(data: bytes) -> None:
    for recognize in (smtp.recognize, ftp.recognize, pop3.recognize, imap.recognize):
        _ident_is_clean(recognize(data))


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=20000))
def test_reply_parser_is_bounded(data: bytes) -> None:
    reply = smtp.parse_reply(data)
    assert len(reply.lines) <= smtp.MAX_LINES and reply.size <= min(len(data), smtp.REPLY_CAP)
    assert reply.code is None or 100 <= reply.code <= 999
    assert not any(c in reply.text for c in UNSAFE)
    for parsed in (smtp.parse_ehlo(reply), ftp.parse_feat(reply)):
        assert _clean(parsed if isinstance(parsed, list) else parsed.extensions + parsed.auth_mechanisms)
    ehlo = smtp.parse_ehlo(reply)
    assert len(ehlo.extensions) <= smtp.MAX_ITEMS and len(ehlo.auth_mechanisms) <= smtp.MAX_ITEMS
    assert ehlo.size_limit is None or 0 <= ehlo.size_limit < 10**15


_TEXT = st.binary(max_size=80).filter(lambda b: b"\n" not in b and b"\r" not in b)


@settings(max_examples=300, deadline=None)
@given(st.integers(200, 599), st.lists(_TEXT, min_size=1, max_size=20))
def test_reply_parser_reads_what_was_sent(code: int, texts: list[bytes]) -> None:
    """A well-formed multi-line reply comes back line for line, whatever the text holds."""
    wire = b"".join(b"%d-%s\r\n" % (code, t) for t in texts[:-1]) + b"%d %s\r\n" % (code, texts[-1])
    reply = smtp.parse_reply(wire + b"250 next reply\r\n")
    assert (reply.code, reply.complete, reply.size) == (code, True, len(wire))
    assert reply.lines == texts


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=200), max_size=200))
def test_capability_parsers_are_bounded(lines: list[bytes]) -> None:
    capa = pop3.parse_capa(lines)
    assert len(capa.keywords) <= smtp.MAX_ITEMS and len(capa.sasl) <= smtp.MAX_ITEMS
    assert _clean([capa.keywords, capa.sasl, capa.implementation])
    caps = imap.parse_capabilities(b" ".join(lines))
    assert len(caps) <= smtp.MAX_ITEMS and _clean(caps)
    assert _clean(imap.auth_mechanisms(caps))
    features = [f.decode("utf-8", "replace") for f in lines]
    assert ftp.lists_auth_tls(features) in (True, False)


def test_greetings_name_their_products() -> None:
    cases: list[tuple[Callable[[bytes], Ident | None], bytes, str, str | None, str | None]] = [
        (smtp.recognize, b"220 mx.example.com ESMTP Postfix (Debian/GNU)\r\n", "smtp", "Postfix", None),
        (smtp.recognize, b"220 mx.example.com ESMTP Exim 4.96 Tue, 25 Nov 2025\r\n", "smtp", "Exim", "4.96"),
        (
            smtp.recognize,
            b"220 ex.contoso.com Microsoft ESMTP MAIL Service ready at Tue\r\n",
            "smtp",
            "Microsoft ESMTP MAIL Service",
            None,
        ),
        (smtp.recognize, b"220 h ESMTP Sendmail 8.15.2/8.15.2; Tue\r\n", "smtp", "Sendmail", "8.15.2"),
        (
            ftp.recognize,
            b"220 ProFTPD 1.3.5e Server (Debian) [::ffff:10.0.0.1]\r\n",
            "ftp",
            "ProFTPD",
            "1.3.5e",
        ),
        (
            ftp.recognize,
            b"220-FileZilla Server 1.5.1\r\n220 Please visit\r\n",
            "ftp",
            "FileZilla Server",
            "1.5.1",
        ),
        (ftp.recognize, b"220 Microsoft FTP Service\r\n", "ftp", "Microsoft FTP Service", None),
        (pop3.recognize, b"+OK Dovecot ready.\r\n", "pop3", "Dovecot", None),
        (
            pop3.recognize,
            b"+OK h Cyrus POP3 v2.4.17-Debian server ready <1@h>\r\n",
            "pop3",
            "Cyrus",
            "2.4.17",
        ),
        (
            imap.recognize,
            b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] Dovecot ready.\r\n",
            "imap",
            "Dovecot",
            None,
        ),
        (
            imap.recognize,
            b"* OK h Cyrus IMAP v2.4.17-Debian server ready\r\n",
            "imap",
            "Cyrus IMAP",
            "2.4.17",
        ),
    ]
    for recognize, data, service, product, version in cases:
        ident = recognize(data)
        assert ident is not None, data
        assert (ident.service, ident.product, ident.version, ident.confidence) == (
            service,
            product,
            version,
            "high",
        ), data
    # Host names in lower case are not protocol names: "smtp.example.com" greeting as FTP stays FTP.
    ident = ftp.recognize(b"220 smtp.example.com FTP server ready\r\n")
    assert ident is not None and ident.confidence == "high" and smtp.recognize(b"220 ftp.x ESMTP\r\n")
    assert smtp.recognize(b"220 smtp.example.com FTP server ready\r\n") is None
    assert ftp.recognize(b"220 mx ESMTP Postfix\r\n") is None
    bare = b"220 Service ready\r\n"
    assert (smtp.recognize(bare) or Ident("x")).confidence == "low"
    assert (ftp.recognize(bare) or Ident("x")).confidence == "low"
    apop = pop3.recognize(b"+OK ready <1896.697170952@dbc.mtview.ca.us>\r\n")
    assert apop is not None and apop.details["apop"] is True
    assert pop3.recognize(b"+OK\r\n") is not None and pop3.recognize(b"-ERR unknown command\r\n") is None
    bye = imap.recognize(b"* BYE too many connections\r\n")
    assert bye is not None and bye.details["refused"] == "too many connections"
