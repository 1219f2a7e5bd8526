"""Telnet: the option negotiation a server opens with (RFC 854/855) and the login banner after it.

Why answer the negotiation: many telnet daemons ask first (DO TERMINAL-TYPE, DO NAWS, ...) and only
print their banner and login prompt once the client has replied. We refuse every option the server
asks of us (WONT) and accept only ECHO and SUPPRESS-GO-AHEAD, which every client accepts; each
(verb, option) is answered once, so a server cannot drag us into a negotiation loop (RFC 854's rule).
We never type anything at the prompt.

Fields in details: server_will (options the server offers to perform), server_do (options it asks
the client to perform), server_wont / server_dont when sent, all in words ("echo", "terminal-type",
"option-99" when unnamed); banner (the text, cleaned, its lines joined by " | "); login_prompt (bool:
the text ends in a login or password prompt); note (telnet carries passwords in clear).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from portscope.probes.base import Ident, Probe, Session, clean_text

IAC, DONT, DO, WONT, WILL, SB, SE = 255, 254, 253, 252, 251, 250, 240
ECHO, SGA = 1, 3
MAX_OPTIONS = 64  # commands kept per verb
SB_CAP = 512  # a subnegotiation longer than this is cut (it carries nothing we report)
TOTAL_CAP = 16384
MAX_ROUNDS = 8

# RFC 855 and the IANA telnet option registry, the names as RFCs spell them.
OPTION_NAMES = {
    0: "binary",
    1: "echo",
    2: "reconnection",
    3: "suppress-go-ahead",
    4: "approx-message-size",
    5: "status",
    6: "timing-mark",
    7: "remote-controlled-trans-and-echo",
    8: "output-line-width",
    9: "output-page-size",
    10: "output-cr-disposition",
    17: "extended-ascii",
    18: "logout",
    19: "byte-macro",
    20: "data-entry-terminal",
    21: "supdup",
    22: "supdup-output",
    23: "send-location",
    24: "terminal-type",
    25: "end-of-record",
    26: "tacacs-user-identification",
    27: "output-marking",
    28: "terminal-location-number",
    29: "telnet-3270-regime",
    30: "x.3-pad",
    31: "window-size",
    32: "terminal-speed",
    33: "remote-flow-control",
    34: "linemode",
    35: "x-display-location",
    36: "environment",
    37: "authentication",
    38: "encryption",
    39: "new-environ",
    40: "tn3270e",
    41: "xauth",
    42: "charset",
    43: "remote-serial-port",
    44: "com-port-control",
    45: "suppress-local-echo",
    46: "start-tls",
    47: "kermit",
    48: "send-url",
    49: "forward-x",
    255: "extended-options-list",
}
_VERBS = {WILL: "server_will", WONT: "server_wont", DO: "server_do", DONT: "server_dont"}
_PROMPT = re.compile(r"(?i)(login|username|user name|user|password|passcode)\s*:\s*$")


def option_name(code: int) -> str:
    return OPTION_NAMES.get(code, f"option-{code}")


@dataclass(slots=True)
class Negotiation:
    """What one chunk of server bytes holds: its commands in order, and the text around them."""

    commands: list[tuple[int, int]] = field(default_factory=list)  # (verb, option)
    text: bytes = b""
    partial: bytes = b""  # an IAC sequence cut at the end of the chunk, to prepend to the next one


def parse(data: bytes) -> Negotiation:
    """Split server bytes into option commands and data; never raises, bounded by the input."""
    out = Negotiation()
    text = bytearray()
    i, n = 0, len(data)
    while i < n:
        b = data[i]
        if b != IAC:
            text.append(b)
            i += 1
            continue
        if i + 1 >= n:
            out.partial = data[i:]
            break
        verb = data[i + 1]
        if verb == IAC:  # an escaped 0xFF data byte
            text.append(IAC)
            i += 2
        elif verb in _VERBS:
            if i + 2 >= n:
                out.partial = data[i:]
                break
            if len(out.commands) < MAX_OPTIONS * 4:
                out.commands.append((verb, data[i + 2]))
            i += 3
        elif verb == SB:
            end = data.find(bytes((IAC, SE)), i + 2, i + 2 + SB_CAP)
            if end < 0:
                if n - i < SB_CAP:
                    out.partial = data[i:]
                    break
                nxt = data.find(bytes((IAC,)), i + 2 + SB_CAP)  # an endless subnegotiation: drop it
                i = nxt if nxt >= 0 else n
            else:
                i = end + 2
        else:  # NOP, GA, AYT, ...: two-byte commands with no data we show
            i += 2
    out.text = bytes(text)
    return out


def is_negotiation(data: bytes) -> bool:
    """Server bytes that open with a telnet command, or text with well-formed option commands in it."""
    if len(data) < 3:
        return False
    if data[0] == IAC:
        return data[1] in _VERBS or data[1] == SB
    neg = parse(data[:4096])
    if not neg.commands:
        return False
    printable = sum(1 for c in neg.text if 32 <= c < 127 or c in (9, 10, 13, 0))
    return printable >= len(neg.text) * 0.9


def _lines(raw: bytes) -> list[str]:
    """The text as a user sees it: NULs and bare CRs dropped, blank lines gone, lines trimmed."""
    lines = raw.replace(b"\x00", b"").replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
    kept = (ln.decode("utf-8", "replace").strip() for ln in lines[:200])
    return [x for x in kept if x]


def _prompt(lines: list[str]) -> bool:
    return bool(lines) and _PROMPT.search(lines[-1][-200:]) is not None


def describe(commands: list[tuple[int, int]], text: bytes) -> Ident:
    details: dict[str, object] = {}
    for verb, key in _VERBS.items():
        names = list(dict.fromkeys(option_name(o) for v, o in commands if v == verb))[:MAX_OPTIONS]
        if names:
            details[key] = names
    lines = _lines(text)
    if lines:
        details["banner"] = clean_text(" | ".join(lines), 512)  # one line: newlines would be escaped
        details["login_prompt"] = _prompt(lines)
    details["note"] = "telnet carries everything, passwords included, unencrypted"
    return Ident("telnet", details=details, problems=["telnet sends passwords in clear text"])


def recognize(data: bytes) -> Ident | None:
    data = data[:TOTAL_CAP]
    if not is_negotiation(data):
        return None
    neg = parse(data)
    return describe(neg.commands, neg.text)


def reply(verb: int, option: int) -> bytes:
    """What a minimal client answers: only ECHO and SGA are accepted, nothing is offered."""
    if verb == WILL:
        return bytes((IAC, DO if option in (ECHO, SGA) else DONT, option))
    if verb == DO:
        return bytes((IAC, WONT, option))
    return b""  # WONT/DONT need no answer from a side that never asked


async def run(session: Session, banner: bytes) -> Ident | None:
    conn = session.conn
    if conn is None:
        return None
    data = banner
    if not data:  # the runner heard nothing yet: a telnet server that is there opens at once
        data = await conn.read(4096, session.deadline.left(session.settings.banner_wait))
        if not is_negotiation(data):
            return None
    commands: list[tuple[int, int]] = []
    text = b""
    answered: set[tuple[int, int]] = set()
    pending = b""
    total = 0
    for _ in range(MAX_ROUNDS):
        total += len(data)
        neg = parse(pending + data)
        pending = neg.partial
        commands += neg.commands
        text = (text + neg.text)[:TOTAL_CAP]
        answer = b""
        for cmd in neg.commands:
            if cmd not in answered:
                answered.add(cmd)
                answer += reply(*cmd)
        if answer and not await conn.write(answer):
            break
        if total >= TOTAL_CAP or conn.eof or session.deadline.expired:
            break
        prompt = _prompt(_lines(text))
        if prompt and not answer:
            break  # the server waits for a user name: all it will say unasked is said
        # After our answers a prompt already shown may only be followed by more negotiation: a short wait.
        wait = session.deadline.left(0.5 if prompt else session.settings.read_timeout)
        data = await conn.read(min(4096, TOTAL_CAP - total), wait)
        if not data:
            break
    return describe(commands[: MAX_OPTIONS * 4], text)


PROBE = Probe(
    name="telnet",
    names=frozenset({"telnet"}),
    ports=frozenset({23, 2323}),
    server_first=True,
    recognize=recognize,
    run=run,
    rarity=7,
)
