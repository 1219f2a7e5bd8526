"""Human rendering of probe results: one row per port (as nmap -sV), then what curl -v and
openssl s_client would have shown, in a few lines per port. Every field is already clean text."""

from __future__ import annotations

from collections.abc import Sequence

from portscope.cli.output import Column
from portscope.model import ProbeResult, TlsInfo

COLUMNS = [
    Column("PORT", "right"),
    Column("STATE"),
    Column("SERVICE", fit="cut", min_width=8),
    Column("VERSION", max_width=40, fit="cut", min_width=12),  # the server's own words: free text
    Column("TLS"),
    Column("EXPECTED", fit="cut", min_width=10),
]

# details worth a line, in this order, with their label
_SHOWN = (
    ("status", "HTTP status"),
    ("location", "redirects to"),
    ("title", "title"),
    ("server", "Server"),
    ("app_evidence", "recognised by"),
    ("tls_error", "TLS"),
    ("error", "error"),
)


_LABELS = frozenset(k for k, _ in _SHOWN)
# in --json, but too detailed or repeated for the table's notes
_QUIET = frozenset({"reason", "http_version", "content_type", "confidence", "problems", "redirect_to_https"})


def _brief(value: object, limit: int = 120) -> str:
    text = ", ".join(map(str, value)) if isinstance(value, list | tuple) else str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def rows(results: Sequence[ProbeResult], with_host: bool) -> list[list[str]]:
    out = []
    for r in results:
        c = r.check
        port = f"{c.port}/{c.proto}"
        if with_host:
            port = f"{c.host} {port}"
        version = " ".join(x for x in (r.product, r.version) if x)
        tls = (
            (r.tls.version or "")
            if r.tls and not r.tls.error
            else "failed"
            if r.tls and r.tls.starttls
            else ""
        )
        expected = "" if r.matches is None else f"{'yes' if r.matches else 'NO'} ({r.expected})"
        # not probed (closed, filtered): the registry's name, as nmap shows its table guess
        service = r.service if r.service is not None else c.service or ""
        out.append([port, c.status, service, version, tls or "", expected])
    return out


def notes(results: Sequence[ProbeResult]) -> list[str]:
    out: list[str] = []
    for r in results:
        if not r.summary:
            continue
        out.append(r.summary)
        for key, label in _SHOWN:
            value = r.details.get(key)
            if value not in (None, ""):
                out.append(f"    {label}: {value}")
        for key, value in r.details.items():  # the protocol's own fields (kex, extensions, ...), briefly
            if key not in _LABELS and key not in _QUIET and value not in (None, "", [], {}):
                out.append(f"    {key.replace('_', ' ')}: {_brief(value)}")
        if r.tls is not None and not r.tls.error:
            out.extend("    " + line for line in tls_lines(r.tls))
        if r.banner and r.protocol in ("unknown", None):
            out.append(f"    banner: {r.banner[:200]}")
    return out


def tls_lines(t: TlsInfo) -> list[str]:
    session = " ".join(x for x in (t.version, t.cipher, f"ALPN {t.alpn}" if t.alpn else None) if x)
    lines = [f"TLS: {session}" + (" (after STARTTLS)" if t.starttls else "")]
    if t.subject is not None:
        lines.append(f"certificate: {t.subject}; names {', '.join(t.san[:6]) or 'none'}")
        lines.append(f"issuer: {t.issuer}" + (" (self-signed)" if t.self_signed else ""))
        if t.days_left is not None:
            when = f"expired {-t.days_left} days ago" if t.days_left < 0 else f"{t.days_left} days left"
            lines.append(f"valid until {t.not_after} ({when})")
        trust = "yes" if t.verified else f"NO: {t.verify_error}" if t.verified is False else "unknown"
        lines.append(
            f"trusted: {trust}; name {t.sni or '(no SNI)'} matches: {'yes' if t.hostname_match else 'NO'}"
        )
    return lines
