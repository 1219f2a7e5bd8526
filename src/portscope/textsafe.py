"""Neutralise untrusted text before it reaches a terminal, a CSV cell, an email header or a log line.

Process names, command lines, banners and certificate fields are chosen by someone else. A name like
"\\x1b]0;pwned\\x07" would retitle the terminal; a newline would forge a log line or a mail header.
Every control character (C0, DEL, C1) and the Unicode bidi overrides become visible escapes.
"""

from __future__ import annotations

import re

_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _escape(m: re.Match[str]) -> str:
    ch = m.group(0)
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def clean(text: str, limit: int = 4096) -> str:
    """Escaped, and cut at `limit` characters with an ellipsis so one field cannot flood the screen."""
    if len(text) > limit:
        text = text[:limit] + "…"
    return _UNSAFE.sub(_escape, text)
