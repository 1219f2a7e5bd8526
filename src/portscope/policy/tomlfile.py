"""TOML files people edit by hand: read with a bounded size, errors as "FILE:LINE: what is wrong".

tomllib reports a syntax error's line only inside its message, and says nothing about where a value
sits once parsing succeeded. A value can be well-formed TOML and still be wrong for us (a port of
70000, a key nobody knows), and the user should be sent to the line that says so: `Locator` finds the
line of every table, array element and key by scanning the text the way TOML lays it out.
"""

from __future__ import annotations

import contextlib
import os
import re
import tomllib
from typing import Any

from portscope.errors import BadInput, CannotDo
from portscope.textsafe import clean

MAX_BYTES = 1 << 20  # a baseline is a few kB; anything near this is not one
TOML_FORMS = "key = value lines, [table] and [[array-of-tables]] headers; see https://toml.io"

Path = tuple[str | int, ...]  # where a value sits: ("listener", 2, "port")

_SYNTAX_AT = re.compile(r"^(.*?) \(at line (\d+), column (\d+)\)$", re.DOTALL)
_SYNTAX_END = re.compile(r"^(.*?) \(at end of document\)$", re.DOTALL)
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_LONG_NUMBER = re.compile(r"[0-9_]{4000,}")
_SCALAR_END = re.compile(r"[,\]}#\n]")


def read(path: str) -> tuple[dict[str, Any], Locator]:
    """The parsed document and its locator; BadInput (exit 2) for anything the user can fix."""
    shown = clean(path, 200)
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_BYTES + 1)
    except FileNotFoundError as exc:
        raise BadInput(f"{shown}: no such file") from exc
    except IsADirectoryError as exc:
        raise BadInput(f"{shown}: is a directory, not a TOML file") from exc
    except PermissionError as exc:
        raise CannotDo(f"{shown}: permission denied (readable by root only?)") from exc
    except OSError as exc:
        raise CannotDo(f"{shown}: cannot read: {os.strerror(exc.errno or 0)}") from exc
    if len(data) > MAX_BYTES:
        raise BadInput(f"{shown}:1: file larger than {MAX_BYTES // 1024} KiB: not a baseline file")
    return parse(data, path)


def parse(data: bytes, path: str) -> tuple[dict[str, Any], Locator]:
    shown = clean(path, 200)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise BadInput(f"{shown}:{line}: not UTF-8 text (TOML files are UTF-8)") from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise BadInput(syntax_message(str(exc), text, shown)) from None
    except RecursionError:
        raise BadInput(f"{shown}:1: arrays or tables nested too deeply ({TOML_FORMS})") from None
    except ValueError:  # int() refusing a decimal of more than 4300 digits, which tomllib lets through
        long = _LONG_NUMBER.search(text)
        if long is None:
            raise BadInput(f"{shown}:1: a value TOML cannot hold ({TOML_FORMS})") from None
        line = text.count("\n", 0, long.start()) + 1
        raise BadInput(f"{shown}:{line}: a number too long to be one ({TOML_FORMS})") from None
    return doc, Locator(text)


def syntax_message(message: str, text: str, shown: str) -> str:
    """tomllib's "Invalid value (at line 3, column 7)" as "FILE:3: TOML syntax error: invalid value ..."."""
    line, where = text.rstrip("\r\n").count("\n") + 1, ""
    at = _SYNTAX_AT.match(message)
    end = _SYNTAX_END.match(message)
    if at:
        message, line, where = at.group(1), int(at.group(2)), f" at column {at.group(3)}"
    elif end:
        message, where = end.group(1), " at the end of the file"
    what = clean(message[:1].lower() + message[1:], 200)
    return f"{shown}:{line}: TOML syntax error: {what}{where} ({TOML_FORMS})"


class _Stop(Exception):
    """The scanner met something it does not follow; what was found so far stands."""


class Locator:
    """Line numbers of the tables, array elements and keys of a TOML text that tomllib accepted.

    Paths are those of the parsed document: `[[listener]]` elements count from 0 whether written as
    headers or as an inline array, so `("listener", 2, "port")` is the `port` of the third one.
    """

    def __init__(self, text: str) -> None:
        self.lines: dict[Path, int] = {}
        self._s = text
        self._i = 0
        self._line = 1
        self._aot: dict[Path, int] = {}  # array-of-tables path -> index of its latest element
        with contextlib.suppress(_Stop, IndexError, RecursionError, tomllib.TOMLDecodeError):
            self._document()
        del self._s

    def line(self, path: Path) -> int:
        """The line of PATH, or of its nearest ancestor that has one (a missing key: its table)."""
        for n in range(len(path), 0, -1):
            hit = self.lines.get(path[:n])
            if hit is not None:
                return hit
        return 1

    # scanning -----------------------------------------------------------------------------------

    def _record(self, path: Path) -> None:
        for n in range(1, len(path) + 1):
            self.lines.setdefault(path[:n], self._line)

    def _goto(self, j: int) -> None:
        self._line += self._s.count("\n", self._i, j)
        self._i = j

    def _peek(self, n: int = 1) -> str:
        return self._s[self._i : self._i + n]

    def _blank(self, newlines: bool = True) -> None:
        """Skip spaces and tabs, and with NEWLINES also line ends and comments."""
        s = self._s
        while self._i < len(s):
            c = s[self._i]
            if c in " \t":
                self._i += 1
            elif newlines and c in "\r\n":
                self._goto(self._i + 1)
            elif newlines and c == "#":
                end = s.find("\n", self._i)
                self._i = len(s) if end < 0 else end
            else:
                return

    def _document(self) -> None:
        table: Path = ()
        while True:
            self._blank()
            if self._i >= len(self._s):
                return
            if self._peek(2) == "[[":
                self._goto(self._i + 2)
                keys = self._key()
                parent = self._resolve(keys[:-1])
                base = (*parent, keys[-1])
                index = self._aot.get(base, -1) + 1
                self._aot[base] = index
                table = (*base, index)
                self._record(table)
                self._expect("]]")
            elif self._peek() == "[":
                self._goto(self._i + 1)
                table = self._resolve(self._key())
                self._record(table)
                self._expect("]")
            else:
                keys = self._key()
                path = (*table, *keys)
                self._record(path)
                self._expect("=")
                self._value(path)
            self._blank(newlines=False)
            if self._peek() == "#":
                self._blank()

    def _resolve(self, keys: Path) -> Path:
        """A header's dotted key as a document path: an array of tables means its latest element."""
        full: list[str | int] = []
        for k in keys:
            full.append(k)
            index = self._aot.get(tuple(full))
            if index is not None:
                full.append(index)
        return tuple(full)

    def _expect(self, token: str) -> None:
        self._blank(newlines=False)
        if self._peek(len(token)) != token:
            raise _Stop
        self._i += len(token)
        self._blank(newlines=False)

    def _key(self) -> tuple[str, ...]:
        keys: list[str] = []
        while True:
            self._blank(newlines=False)
            c = self._peek()
            start = self._i
            if c and c in "\"'":
                self._string()
                raw = self._s[start : self._i]
                keys.append(raw[1:-1] if c == "'" else tomllib.loads(f"k = {raw}")["k"])
            else:
                m = _BARE_KEY.match(self._s, self._i)
                if not m:
                    raise _Stop
                keys.append(m.group(0))
                self._i = m.end()
            self._blank(newlines=False)
            if self._peek() != ".":
                return tuple(keys)
            self._i += 1

    def _string(self) -> None:
        s, i = self._s, self._i
        if s.startswith(('"""', "'''"), i):
            quote = s[i : i + 3]
            j = i + 3
            while True:
                if j >= len(s):
                    raise _Stop
                if quote == '"""' and s[j] == "\\":
                    j += 2
                elif s.startswith(quote, j):
                    j += 3
                    extra = 0
                    while extra < 2 and j < len(s) and s[j] == quote[0]:  # """a"""" ends in a quote
                        j += 1
                        extra += 1
                    break
                else:
                    j += 1
        else:
            quote = s[i]
            j = i + 1
            while s[j] != quote:
                j += 2 if quote == '"' and s[j] == "\\" else 1
            j += 1
        self._goto(j)

    def _value(self, path: Path) -> None:
        c = self._peek()
        if c and c in "\"'":
            self._string()
        elif c == "[":
            self._i += 1
            index = 0
            while True:
                self._blank()
                if self._peek() == "]":
                    self._i += 1
                    return
                element = (*path, index)
                self._record(element)
                self._value(element)
                self._blank()
                if self._peek() == ",":
                    self._i += 1
                    index += 1
                elif self._peek() != "]":
                    raise _Stop
        elif c == "{":
            self._i += 1
            while True:
                self._blank()
                if self._peek() == "}":
                    self._i += 1
                    return
                keys = (*path, *self._key())
                self._record(keys)
                self._expect("=")
                self._value(keys)
                self._blank()
                if self._peek() == ",":
                    self._i += 1
                elif self._peek() != "}":
                    raise _Stop
        elif c:
            m = _SCALAR_END.search(self._s, self._i)
            self._i = m.start() if m else len(self._s)
        else:
            raise _Stop


_UNSAFE_IN_TOML = re.compile('["\\\\\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff]')


def _escape(m: re.Match[str]) -> str:
    ch = m.group(0)
    if ch in '"\\':
        return "\\" + ch
    code = ord(ch)
    return "\ufffd" if 0xD800 <= code <= 0xDFFF else f"\\u{code:04x}"


def toml_string(text: str) -> str:
    """A TOML basic string that reads back as TEXT (lone surrogates, which TOML cannot hold, become
    U+FFFD). Control, C1 and bidi characters are escaped too, so the file is safe to `cat`."""
    return '"' + _UNSAFE_IN_TOML.sub(_escape, text) + '"'
