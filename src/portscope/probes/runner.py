"""Which probes to try on a port, in what order, within what time; and expected versus actual.

Order (nmap's idea, our own lists): listen briefly for a banner, since server-speaks-first protocols
(SSH, SMTP, FTP, POP3, IMAP, MySQL, VNC) identify themselves unasked; then the probe of the service
the port should have; then TLS, then HTTP (the two most common client-first protocols, and TLS
carries HTTP and others inside); then the probes that list this port; then the rest, common first.
The port's expected probe goes before TLS and HTTP because on a healthy host it is right, and
one right guess is the whole cost. Every step shares one deadline, so a silent or slow server can
only make the answer "unknown", never late.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from portscope.i18n import N_, Text
from portscope.model import CheckResult, ProbeResult, TlsInfo
from portscope.probes import all_probes, by_name
from portscope.probes.base import Ident, Probe, Session, Settings, clean_text
from portscope.probes.conn import ConnectFailed, Deadline
from portscope.registry import lookup_name, lookup_port

TLS_INNER_ALPN = ["h2", "http/1.1"]


def probe_all(
    checks: Sequence[CheckResult], settings: Settings, expect: str | None = None, concurrency: int = 64
) -> list[ProbeResult]:
    """Probe every open (or open|filtered UDP) port of `checks`; the others pass through with a summary."""
    return asyncio.run(_probe_all(checks, settings, expect, concurrency))


async def _probe_all(
    checks: Sequence[CheckResult], settings: Settings, expect: str | None, concurrency: int
) -> list[ProbeResult]:
    gate = asyncio.Semaphore(concurrency)

    async def one(c: CheckResult) -> ProbeResult:
        async with gate:
            return await probe_one(c, settings, expect)

    return list(await asyncio.gather(*(one(c) for c in checks)))


async def probe_one(check: CheckResult, settings: Settings, expect: str | None = None) -> ProbeResult:
    # The registry's name is an expectation only where some probe can confirm it: "pcsync-http"
    # on 8444 is a 1990s registration, not a claim about what runs there today.
    expected = expect or (check.service if expected_probe(check.service) else None)
    result = ProbeResult(check=check, expected=expected)
    started = time.monotonic()
    probeable = check.status == "open" or (check.proto == "udp" and check.status == "open|filtered")
    if not probeable or check.address is None:
        result.summary = Text(
            N_("{where} is {status} ({reason}): nothing to identify"),
            where=f"{check.port}/{check.proto}",
            status=check.status,
            reason=check.reason,
        )
        return result
    session = Session(check.host, check.address, check.port, settings, Deadline(settings.timeout))
    try:
        if check.proto == "udp":
            ident, banner = await _identify_udp(session, result, expected), b""
        else:
            ident, banner = await _identify_tcp(session, result, expected)
    finally:
        await session.close()
    result.elapsed_ms = (time.monotonic() - started) * 1000
    if ident is not None and check.proto == "udp" and check.status != "open":
        check.status, check.reason = "open", "udp-response"  # the probe's request got the answer
    _fill(result, ident, banner)
    _judge(result)
    return result


# -- TCP ------------------------------------------------------------------------------------------------


def _order(port: int, expected: Probe | None, proto: str = "tcp", tls_first: bool = False) -> list[Probe]:
    """Candidates for a silent port: expected, TLS, HTTP, probes listing the port, the rest by rarity.
    TLS goes first when the expected service is a TLS form (https: TLS, then HTTP inside it)."""
    listed = [p for p in all_probes() if port in (p.ports if proto == "tcp" else p.udp_ports)]
    rest = sorted(all_probes(), key=lambda p: p.rarity)
    head = [by_name("tls")] if tls_first else []
    head += [expected] if expected else []
    if proto == "tcp":
        head += [by_name("tls"), by_name("http")]
    out: list[Probe] = []
    for p in [*head, *listed, *rest]:
        runnable = (p.run is not None or p.name == "tls") if proto == "tcp" else p.run_udp is not None
        if proto == "tcp" and p.server_first and p is not expected:
            runnable = False  # the banner wait heard nothing: another wait for a greeting only burns time
        if p not in out and runnable:
            out.append(p)
    return out


def check_expect(name: str) -> str:
    """--expect's value, or BadInput naming the valid forms (exit 2): a service name of the registry
    (`https`, `postgresql`, `submission`) or a name some probe confirms (`tls`, `kubelet`, `docker`)."""
    from portscope.errors import BadInput

    text = name.strip().lower()
    if text and (lookup_name(text) or expected_probe(text) is not None):
        return text
    probes = sorted({p.name for p in all_probes()} | {n for p in all_probes() for n in p.identifies})
    raise BadInput(
        f"--expect {clean_text(name, 80)!r} is not a service portscope knows: give a service name of the "
        f"registry (https, ssh, postgresql; `portscope services NAME` searches) or a probe's: {', '.join(probes)}"
    )


def expected_probe(expected: str | None) -> Probe | None:
    """The probe that confirms a service name (`https` -> http, `postgres` -> postgresql)."""
    if not expected:
        return None
    for name in (expected, *(i.name for i in lookup_name(expected))):
        for p in all_probes():
            if name == p.name or name in p.names or name in p.identifies:
                return p
    return None


async def _identify_tcp(
    session: Session, result: ProbeResult, expected: str | None
) -> tuple[Ident | None, bytes]:
    want = expected_probe(expected)
    try:
        conn = await session.connect()
    except ConnectFailed as e:
        result.details["error"] = f"could not connect again: {clean_text(e.strerror or str(e))}"
        return None, b""
    wait = session.settings.banner_wait_known if want and want.server_first else session.settings.banner_wait
    tls_expected = bool(expected and _tls_form(_canonical(expected)))
    if (want and not want.server_first) or tls_expected:
        # client-first, or TLS first (465, 993: the greeting comes inside TLS): do not wait; a
        # banner still shows up in the answer to what we send
        wait = min(wait, 0.05)
    result.probes.append("banner")
    banner = await conn.read(4096, session.deadline.left(wait))
    if banner:
        return await _from_bytes(session, result, banner, want), banner
    used = False
    for probe in _order(session.port, want, tls_first=tls_expected):
        if session.deadline.expired:
            break
        if used or conn.eof:
            try:
                conn = await session.connect()
            except ConnectFailed:
                break
        used = True
        result.probes.append(probe.name)
        if probe.name == "tls":
            ident = await _tls_then_inner(session, result, want)
        else:
            assert probe.run is not None
            ident = await probe.run(session, b"")
            spent = session.conn
            if ident is None and spent is not None and spent.tls is None and spent.seen:
                ident = await _from_bytes(session, result, spent.seen, want, skip=probe)
        if ident is not None:
            return ident, banner
    return None, banner


async def _from_bytes(
    session: Session, result: ProbeResult, data: bytes, want: Probe | None, skip: Probe | None = None
) -> Ident | None:
    """Name what sent `data` (a banner, or a reply to another protocol's request) and deepen with that
    protocol's own run(): on the same connection for a banner, on a fresh one for a client-first
    protocol (a Redis error to our HTTP GET: reconnect and PING). The recognizer's guess stands when
    the deepening fails or time is up."""
    candidates = [want] if want and want.recognize and want is not skip else []
    candidates += [p for p in all_probes() if p.recognize and p not in candidates and p is not skip]
    for probe in candidates:
        assert probe.recognize is not None
        try:
            ident = probe.recognize(data)
        except Exception:  # a recognizer bug must not cost the user the answer of the others
            ident = None
        if ident is None:
            continue
        if probe.run is None or session.deadline.expired:
            return ident
        deeper = None
        if probe.server_first and session.conn is not None and not session.conn.eof:
            result.probes.append(probe.name)
            deeper = await probe.run(session, data)
        elif not probe.server_first and (session.conn is None or session.conn.tls is None):
            result.probes.append(f"{probe.name} (recognised its answer)")
            try:
                await session.connect()
            except ConnectFailed:
                return ident
            deeper = await probe.run(session, b"")
        return deeper if deeper is not None else ident
    return None


async def _tls_then_inner(session: Session, result: ProbeResult, want: Probe | None) -> Ident | None:
    """Implicit TLS: the handshake, then what speaks inside it (banner first, then HTTP, then the twin)."""
    assert session.conn is not None
    info, plain = await session.start_tls(session.conn, TLS_INNER_ALPN)
    if session.conn.tls is None:
        result.tls = info if info.error and "handshake failed" in info.error else None
        result.details["tls_error"] = info.error
        if plain:
            ident = await _from_bytes(session, result, plain, want)
            if ident is not None:
                return ident
        return None
    conn = session.conn
    inner_want = want if want and want.name != "tls" else None
    wait = 0.3 if inner_want is None or not inner_want.server_first else session.settings.banner_wait_known
    if info.alpn in ("h2", "http/1.1") or (inner_want and inner_want.name == "http"):
        wait = 0.0
    banner = await conn.read(4096, session.deadline.left(wait)) if wait else b""
    ident = None
    if banner:
        ident = await _from_bytes(session, result, banner, inner_want)
        result.banner = clean_text(banner, 512)
    elif not conn.eof and info.alpn != "h2":
        for probe in [p for p in (inner_want, by_name("http")) if p is not None and p.run is not None]:
            assert probe.run is not None
            result.probes.append(f"{probe.name} in tls")
            ident = await probe.run(session, b"")
            if ident is not None or session.conn is None or session.conn.eof:
                break
    if ident is None and info.alpn == "h2" and not session.deadline.expired:
        ident = await _http1_beside_h2(session, result)
    if ident is None and info.alpn == "h2":
        ident = Ident("https", protocol="http", details={"http_version": "2"})
    if ident is None:
        ident = Ident("tls", details={"note": "TLS completed; nothing recognised inside it"})
    ident.tls = info
    return ident


async def _http1_beside_h2(session: Session, result: ProbeResult) -> Ident | None:
    """The server chose HTTP/2, which we do not speak: ask again on a fresh connection offering only
    http/1.1 (as `curl --http1.1` does), so status, Server, redirect and title are still read. The
    first handshake's TLS details (ALPN h2) are the ones reported."""
    http = by_name("http")
    assert http.run is not None
    result.probes.append("http in tls (http/1.1)")
    try:
        conn = await session.connect()
    except ConnectFailed:
        return None
    await session.start_tls(conn, ["http/1.1"])
    if conn.tls is None:
        return None
    return await http.run(session, b"")


# -- UDP ------------------------------------------------------------------------------------------------


async def _identify_udp(session: Session, result: ProbeResult, expected: str | None) -> Ident | None:
    for probe in _order(session.port, expected_probe(expected), "udp"):
        if session.deadline.expired:
            break
        assert probe.run_udp is not None
        result.probes.append(probe.name)
        ident = await probe.run_udp(session)
        if ident is not None:
            return ident
    return None


# -- result ---------------------------------------------------------------------------------------------


def _fill(result: ProbeResult, ident: Ident | None, banner: bytes) -> None:
    if banner and result.banner is None:
        result.banner = clean_text(banner, 512)
    if ident is None:
        result.service = result.protocol = "unknown"
        return
    result.service, result.protocol = ident.service, ident.protocol
    result.product, result.version = ident.product, ident.version
    if ident.banner:
        result.banner = clean_text(ident.banner, 512)
    # A TLS attempt that met silence or a hang-up says nothing once another probe named the port;
    # one answered in plain text does (plain HTTP on a TLS port). The test is on the English value.
    if result.details.get("tls_error") and "plain text" not in str(result.details["tls_error"]):
        del result.details["tls_error"]
    result.details.update(ident.details)
    if ident.problems:
        result.details["problems"] = [clean_text(p, 200) for p in ident.problems[:20]]
    if ident.confidence != "high":
        result.details["confidence"] = ident.confidence
    if ident.tls is not None:
        result.tls = ident.tls
    if result.tls is not None and not result.tls.starttls and not result.tls.error:
        result.service = tls_name(result.service)


def tls_name(service: str) -> str:
    """The name of a plain-text service spoken inside implicit TLS: http -> https, imap -> imaps."""
    for info in lookup_name(service)[:1]:
        if info.plaintext and info.tls_twin is not None:
            twin = lookup_port(info.tls_twin, info.proto)
            if twin:
                return twin[0].name
    return service


def _canonical(name: str) -> str:
    found = lookup_name(name)
    return found[0].name if found else name


def _tls_form(name: str) -> bool | None:
    """True: the service is the TLS form (https, imaps); False: a plain-text protocol; None: either."""
    if name in ("tls", "ssl", "https"):
        return True
    infos = lookup_name(name)
    if not infos:
        return None
    info = infos[0]
    if info.tls_twin is not None:
        return not info.plaintext
    return None


def _judge(result: ProbeResult) -> None:
    """expected versus actual: `matches` and the one sentence, with what is wrong appended.

    The sentence is English in the result (--json); it is a Text, so a human rendering in another
    language (diagnose --lang pt) can show it translated."""
    if result.service is None:
        return
    spoke_tls = result.tls is not None and result.tls.error is None and not result.tls.starttls
    verdict = _verdict(result, spoke_tls)
    problems: list[str] = (
        tls_problems(result.tls) if result.tls is not None and result.tls.error is None else []
    )
    if result.tls is not None and result.tls.starttls and result.tls.error:
        problems.insert(0, Text(N_("STARTTLS failed: {error}"), error=result.tls.error))
    problems += result.details.get("problems", [])
    if problems:
        result.summary = Text(
            N_("{verdict}; {problems}"), verdict=verdict, problems=Text.joined(", ", problems)
        )
    else:
        result.summary = verdict


def _verdict(result: ProbeResult, spoke_tls: bool) -> Text:
    where = f"{result.check.port}/{result.check.proto}"
    what = _describe(result)
    if result.expected is None:
        return Text(N_("{where} answers {what}"), where=where, what=what)
    expected = _canonical(result.expected)
    tls_wanted = _tls_form(expected)
    got = _canonical(result.service or "")
    want_probe = expected_probe(expected)
    same = got == expected or (
        want_probe is not None and want_probe.name == result.protocol and expected in _generic(want_probe)
    )
    result.matches = False
    if result.service == "unknown":
        return Text(
            N_("{where} is open but did not identify itself as {expected}: {what}"),
            where=where,
            expected=expected,
            what=what,
        )
    if same and tls_wanted is True and not spoke_tls:
        return Text(
            N_("{where} answers plain {protocol}, not TLS (expected {expected})"),
            where=where,
            protocol=_proto_word(result),
            expected=expected,
        )
    if same and tls_wanted is False and spoke_tls and want_probe is not None and want_probe.name != "tls":
        return Text(
            N_("{where} answers TLS ({what}), not plain {expected}"),
            where=where,
            what=what,
            expected=expected,
        )
    if same:
        result.matches = True
        return Text(N_("{where} answers {what}, as expected"), where=where, what=what)
    return Text(N_("{where} answers {what}, not {expected}"), where=where, what=what, expected=expected)


def _generic(probe: Probe) -> frozenset[str]:
    return probe.names | {probe.name}


def _proto_word(result: ProbeResult) -> str:
    word = result.protocol or "text"
    return word.upper() if len(word) <= 5 else word


def _describe(result: ProbeResult) -> str:
    if result.service == "unknown":
        if result.banner:
            return Text(N_("something unrecognised (it sent {banner})"), banner=repr(result.banner[:60]))
        tls_error = result.details.get("tls_error")
        if tls_error:
            return Text(N_("nothing we recognise (silent to every probe); TLS: {error}"), error=tls_error)
        return Text(N_("nothing we recognise (silent to every probe)"))
    name: str = result.service or "?"
    tls = result.tls
    if tls is not None and tls.error is None:
        if tls.starttls:
            name = Text(N_("{service} with STARTTLS"), service=name)
        elif name != "tls" and _tls_form(name) is not True:
            name = Text(N_("{service} over TLS"), service=name)
    product = " ".join(x for x in (result.product, result.version) if x)
    if product:
        name = Text(N_("{service} ({product})"), service=name, product=product)
    if tls is not None and tls.version:
        name = Text(N_("{service}, {tls_version}"), service=name, tls_version=tls.version)
    return name


def tls_problems(tls: TlsInfo | None) -> list[str]:
    """What is wrong with a TLS endpoint, in words (empty when nothing is)."""
    if tls is None or tls.error:
        return []
    out: list[str] = []
    if tls.expired and tls.days_left is not None and tls.days_left < 0:
        out.append(Text(N_("certificate expired {days} days ago"), days=-tls.days_left))
    elif tls.expired:
        out.append(Text(N_("certificate not valid yet")))
    if tls.hostname_match is False:
        names = ", ".join(tls.san[:3]) or tls.subject
        if tls.sni:
            out.append(
                Text(N_("certificate is not for {host} (it names {names})"), host=tls.sni, names=names)
            )
        else:
            out.append(Text(N_("certificate is not for this host (it names {names})"), names=names))
    if tls.verified is False:
        out.append(Text(N_("certificate not trusted: {error}"), error=tls.verify_error))
    return out


def known_ports() -> dict[int, str]:
    """Port -> registry name for every port some probe lists (for `scan --probe` tables)."""
    out = {}
    for p in all_probes():
        for port in p.ports:
            info = lookup_port(port)
            if info:
                out[port] = info[0].name
    return out
