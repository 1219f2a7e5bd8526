"""memcached: `version`, then `stats` for how busy and how old the instance is.

Why a probe for it at all: an open memcached is a classic exposure (no authentication in the text
protocol, and its UDP port was a DDoS amplifier), so "memcached 1.6 answers on 0.0.0.0:11211" is
worth saying plainly. Both commands only read.

memcached answers every line it cannot parse with `ERROR`, so a TLS ClientHello sent to it comes
back as a few `ERROR` lines: `recognize` takes that as a (low-confidence) sign of memcached.

Fields in details: uptime_s, curr_connections, max_connections, threads, stats_error (`stats`
refused, e.g. SASL-only servers).
"""

from __future__ import annotations

import re

from portscope.probes.base import Ident, Probe, Session, clean_text

LINE_CAP = 512
STATS_CAP = 16 * 1024  # `stats` is ~3 KiB
_VERSION = re.compile(rb"^VERSION ([0-9][0-9A-Za-z.\-+~]{0,39})\r?\n?$")
_STAT = re.compile(rb"^STAT ([a-z_]{1,40}) ([0-9]{1,19})$")
_REFUSAL = re.compile(rb"(?:ERROR|CLIENT_ERROR [\x20-\x7e]{1,200})\r\n")
_STATS_KEPT = {
    "uptime": "uptime_s",
    "curr_connections": "curr_connections",
    "max_connections": "max_connections",
    "threads": "threads",
}


def parse_version(line: bytes) -> str | None:
    """The version in a `VERSION x.y.z` answer; None for anything else. Fuzzed."""
    m = _VERSION.match(line[:LINE_CAP])
    return m.group(1).decode() if m else None


def parse_stats(lines: list[bytes]) -> dict[str, int]:
    """The few numeric STAT lines we report, bounded. Fuzzed."""
    out: dict[str, int] = {}
    for line in lines[:400]:
        m = _STAT.match(line[:LINE_CAP])
        if m and (name := _STATS_KEPT.get(m.group(1).decode())) is not None:
            out[name] = int(m.group(2))
    return out


def recognize(data: bytes) -> Ident | None:
    """Nothing but memcached's `ERROR` / `CLIENT_ERROR ...` lines: its answer to bytes it cannot read."""
    pos = count = 0
    while pos < len(data) and count < 64:
        m = _REFUSAL.match(data, pos)
        if m is None:
            return None
        pos, count = m.end(), count + 1
    if count == 0 or pos != len(data):
        return None
    evidence = clean_text(data.split(b"\r\n", 1)[0], 100)
    return Ident("memcached", product="memcached", details={"evidence": evidence}, confidence="low")


async def run(session: Session, banner: bytes) -> Ident | None:
    conn = session.conn
    if conn is None or not await conn.write(b"version\r\n"):
        return None
    timeout = session.settings.read_timeout
    version = parse_version(await conn.read_until(b"\n", LINE_CAP, session.deadline.left(timeout)))
    if version is None:
        return None
    ident = Ident("memcached", product="memcached", version=version, details={})
    if not await conn.write(b"stats\r\n"):
        return ident
    lines = await conn.read_lines(b"END", STATS_CAP, session.deadline.left(timeout))
    if lines and not lines[0].startswith(b"STAT "):
        ident.details["stats_error"] = clean_text(lines[0], 200)
    ident.details.update(parse_stats(lines))
    return ident


PROBE = Probe(
    name="memcached",
    names=frozenset({"memcached", "memcache"}),
    ports=frozenset({11211}),
    recognize=recognize,
    run=run,
    rarity=5,
)
