#!/usr/bin/env python3
"""Keep the translation catalogs in step with the code: extract the messages, update the .po files,
compile them to the .mo files the package loads (portscope.i18n).

    scripts/build_catalogs.py           extract, update every locale/*/LC_MESSAGES/portscope.po, compile
    scripts/build_catalogs.py --check   change nothing; exit 1 if a catalog misses a message of the code,
                                        has one untranslated (or fuzzy) or no longer used, disagrees on
                                        {placeholders}, or its .mo is not the compiled .po (the test
                                        suite runs this)

Why our own tools: xgettext does not know Python's rules (f-strings, named `.format()` placeholders,
`_()` at import time), and Python's Tools/i18n/msgfmt.py is not installed with Python. The .mo
format is small (GNU gettext manual, "The Format of GNU MO Files"); ours is byte-for-byte
deterministic, so --check can compare the committed .mo with a fresh compile.

Workflow: write `_("...")` in the code, run this script, fill in the empty msgstr in
src/portscope/locale/pt_BR/LC_MESSAGES/portscope.po, run it again, commit the .po and the .mo.
"""

from __future__ import annotations

import argparse
import ast
import re
import string
import struct
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src" / "portscope"
LOCALE = SRC / "locale"
DOMAIN = "portscope"
DEFAULT_LANGUAGES = ("pt_BR",)  # a catalog created when missing
MARKERS = {"_": 1, "N_": 1, "ngettext": 3}  # function -> number of positional arguments
WIDTH = 79  # .po lines, as GNU gettext wraps them

HEADERS = {
    "pt_BR": (
        "# Brazilian Portuguese messages for portscope.\n"
        "# This file is distributed under the same license as the portscope package (MIT).\n"
        "#\n",
        "Project-Id-Version: portscope\n"
        "Language: pt_BR\n"
        "MIME-Version: 1.0\n"
        "Content-Type: text/plain; charset=UTF-8\n"
        "Content-Transfer-Encoding: 8bit\n"
        "Plural-Forms: nplurals=2; plural=(n > 1);\n",
    ),
}


class CatalogError(Exception):
    """Code or a catalog that cannot be used as is; the message names the file and line."""


@dataclass(slots=True)
class Entry:
    msgid: str
    msgstr: list[str] = field(default_factory=lambda: [""])  # one form, or one per plural form
    msgid_plural: str | None = None
    flags: list[str] = field(default_factory=list)  # fuzzy, python-brace-format
    refs: list[str] = field(default_factory=list)  # files that use it
    extracted: list[str] = field(default_factory=list)  # "# Translators:" comments in the code
    comments: list[str] = field(default_factory=list)  # the translator's own, kept as written
    obsolete: bool = False

    @property
    def translated(self) -> bool:
        return "fuzzy" not in self.flags and all(self.msgstr)


@dataclass(slots=True)
class Catalog:
    header: Entry
    entries: list[Entry] = field(default_factory=list)

    @property
    def nplurals(self) -> int:
        found = re.search(r"nplurals\s*=\s*(\d+)", self.header.msgstr[0])
        return int(found.group(1)) if found else 2


@dataclass(frozen=True, slots=True)
class Message:
    """One message found in the code."""

    msgid: str
    msgid_plural: str | None
    ref: str
    comments: tuple[str, ...]


# --- extraction ---------------------------------------------------------------------------------


def placeholders(text: str) -> set[str]:
    """The `.format()` field names in TEXT (`{port}`, `{addr.host}`, `{n:>5}`); ValueError when
    .format() would fail on it."""
    names: set[str] = set()
    for _literal, name, spec, _conv in string.Formatter().parse(text):
        if name is not None:
            names.add(name)
            if spec:
                names |= placeholders(spec)
    return names


def _check_msgid(text: str) -> str | None:
    """Why TEXT cannot be a msgid, or None."""
    if not text:
        return 'an empty msgid is the catalog\'s header: write a message, or no _("")'
    if "\0" in text or "\x04" in text:
        return "NUL and EOT (\\x04) cannot be in a message: the .mo format uses them as separators"
    try:
        names = placeholders(text)
    except ValueError as exc:
        return f"not a valid .format() string ({exc}): write literal braces as {{{{ and }}}}"
    positional = sorted(n for n in names if not re.split(r"[.\[]", n, maxsplit=1)[0].isidentifier())
    if positional:
        return (
            f"positional placeholder {{{positional[0]}}}: name it, as in "
            '_("port {port} is closed").format(port=port), so a translation can reorder them'
        )
    return None


class _Finder(ast.NodeVisitor):
    """Calls of _(), N_() and ngettext(), and whether each runs at import time."""

    def __init__(self, path: str, lines: list[str]) -> None:
        self.path = path
        self.lines = lines
        self.depth = 0  # functions we are inside; 0 means the code runs at import
        self.found: list[tuple[tuple[int, int], Message]] = []  # (where, message): sorted later
        self.errors: list[str] = []

    def _function(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> None:
        # decorators and default values run when the def runs; only the body runs later
        outer: list[ast.AST] = [*node.args.defaults, *(d for d in node.args.kw_defaults if d)]
        if not isinstance(node, ast.Lambda):
            outer += node.decorator_list
        for child in outer:
            self.visit(child)
        self.depth += 1
        for stmt in node.body if not isinstance(node, ast.Lambda) else [node.body]:
            self.visit(stmt)
        self.depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _function

    def visit_Call(self, node: ast.Call) -> None:
        self.generic_visit(node)
        func = node.func
        name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
        if isinstance(func, ast.Attribute) and not (
            isinstance(func.value, ast.Name) and func.value.id == "i18n"
        ):
            name = ""  # x._(...) is someone else's method; i18n._(...) is ours
        if name not in MARKERS:
            return
        where = f"{self.path}:{node.lineno}"
        if node.keywords or len(node.args) != MARKERS[name]:
            self.errors.append(f"{where}: {name}() takes {MARKERS[name]} positional argument(s)")
            return
        if name == "_" and self.depth == 0:
            self.errors.append(
                f"{where}: _() at import time translates before --lang is applied: "
                "mark the message with N_() and call _() on it when it is shown"
            )
            return
        texts: list[str] = []
        for arg in node.args[:2] if name == "ngettext" else node.args:
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                texts.append(arg.value)
            elif isinstance(arg, ast.JoinedStr):
                self.errors.append(
                    f"{where}: f-string in {name}(): the catalog cannot hold a formatted message; write "
                    '_("port {port} is closed").format(port=port)'
                )
                return
            elif name == "_" and isinstance(arg, ast.Name | ast.Attribute | ast.Subscript):
                return  # a message marked with N_() elsewhere, translated here
            else:
                self.errors.append(f"{where}: {name}() needs a string literal, not {type(arg).__name__}")
                return
        for text in texts:
            problem = _check_msgid(text)
            if problem:
                self.errors.append(f"{where}: {text!r}: {problem}")
                return
        plural = texts[1] if len(texts) > 1 else None
        message = Message(texts[0], plural, self.path, self._comments(node.lineno))
        self.found.append(((node.lineno, node.col_offset), message))

    def _comments(self, lineno: int) -> tuple[str, ...]:
        """The `# Translators:` comment block right above the line of the call, for the translator."""
        block: list[str] = []
        i = lineno - 2
        while i >= 0 and self.lines[i].strip().startswith("#"):
            block.insert(0, self.lines[i].strip().lstrip("#").strip())
            i -= 1
        for j, line in enumerate(block):
            if line.startswith("Translators:"):
                return tuple(block[j:])
        return ()


def extract(src: Path) -> tuple[list[Message], list[str]]:
    """Every message in the .py files under SRC, in file and line order, and every misuse found."""
    messages: list[Message] = []
    errors: list[str] = []
    for path in sorted(p for p in src.rglob("*.py") if "__pycache__" not in p.parts):
        rel = path.relative_to(src.parent).as_posix()
        text = path.read_text(encoding="utf-8")
        try:
            tree = ast.parse(text, filename=rel)
        except SyntaxError as exc:
            errors.append(f"{rel}:{exc.lineno}: {exc.msg}")
            continue
        finder = _Finder(rel, text.splitlines())
        finder.visit(tree)
        messages += [m for _pos, m in sorted(finder.found, key=lambda f: f[0])]
        errors += finder.errors
    return messages, errors


# --- .po files ------------------------------------------------------------------------------------

_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "a": "\a", "b": "\b", "f": "\f", "v": "\v", "\\": "\\", '"': '"'}
_ESCAPES_OUT = {v: "\\" + k for k, v in _ESCAPES.items()}
_ESCAPE_IN = re.compile(r'\\(?:([ntrabfv\\"])|([0-7]{1,3})|x([0-9a-fA-F]{1,2})|(.))', re.DOTALL)


def unescape(text: str, where: str) -> str:
    def one(m: re.Match[str]) -> str:
        if m.group(1):
            return _ESCAPES[m.group(1)]
        if m.group(2):
            return chr(int(m.group(2), 8))
        if m.group(3):
            return chr(int(m.group(3), 16))
        raise CatalogError(f"{where}: unknown escape \\{m.group(4)}")

    return _ESCAPE_IN.sub(one, text)


def escape(text: str) -> str:
    return "".join(
        _ESCAPES_OUT.get(ch) or (f"\\{ord(ch):03o}" if ord(ch) < 0x20 or ord(ch) == 0x7F else ch)
        for ch in text
    )


_KEYWORD = re.compile(r'^(msgctxt|msgid|msgid_plural|msgstr(?:\[(\d+)\])?)\s+"(.*)"\s*$')
_CONTINUATION = re.compile(r'^"(.*)"\s*$')


def parse_po(text: str, name: str = "<po>") -> Catalog:
    """A .po file as GNU gettext writes it: entries separated by blank lines, obsolete ones behind
    `#~`. Previous msgids (`#|`) are dropped; msgctxt is refused (portscope has no pgettext)."""
    entries: list[Entry] = []
    cur = Entry("", [])
    strings: dict[str, str] = {}  # keyword -> text (msgstr forms as msgstr[N])
    last: str | None = None
    seen_msgid = False

    def finish(lineno: int, end: bool = False) -> None:
        nonlocal cur, strings, last, seen_msgid
        if not seen_msgid:
            if end and (cur.comments or cur.flags or cur.refs or cur.extracted):
                raise CatalogError(f"{name}:{lineno}: comments without an entry")
            return  # comments before a blank line belong to the next entry
        cur.msgid = strings["msgid"]
        cur.msgid_plural = strings.get("msgid_plural")
        forms = sorted(int(k[7:-1]) for k in strings if k.startswith("msgstr["))
        if cur.msgid_plural is None:
            if "msgstr" not in strings or forms:
                raise CatalogError(f'{name}:{lineno}: msgid {cur.msgid!r} needs one msgstr "..."')
            cur.msgstr = [strings["msgstr"]]
        else:
            if "msgstr" in strings or not forms or forms != list(range(len(forms))):
                raise CatalogError(f"{name}:{lineno}: {cur.msgid!r} needs msgstr[0], msgstr[1], ...")
            cur.msgstr = [strings[f"msgstr[{i}]"] for i in forms]
        entries.append(cur)
        cur, strings, last, seen_msgid = Entry("", []), {}, None, False

    lines = text.split("\n")  # not splitlines(): U+2028 and friends may stand raw inside a string
    for lineno, raw in enumerate(lines, 1):
        line = raw.strip()
        where = f"{name}:{lineno}"
        obsolete = line.startswith("#~")
        if obsolete:
            line = line[2:].strip()
            if not line or line.startswith("|"):
                continue  # the previous msgid of an obsolete entry: dropped
        elif not line:
            finish(lineno)
            continue
        elif line.startswith("#"):
            if seen_msgid:
                finish(lineno)
            kind, rest = line[:2], line[2:].strip()
            if kind == "#,":
                cur.flags += [f.strip() for f in rest.split(",") if f.strip()]
            elif kind == "#:":
                cur.refs += rest.split()
            elif kind == "#.":
                cur.extracted.append(rest)
            elif kind != "#|":
                cur.comments.append(line[1:].removeprefix(" "))
            continue
        if seen_msgid and obsolete != cur.obsolete:
            finish(lineno)
        m = _KEYWORD.match(line)
        if m:
            keyword = m.group(1)
            if keyword == "msgctxt":
                raise CatalogError(f"{where}: msgctxt is not supported")
            if keyword == "msgid":
                if seen_msgid:
                    finish(lineno)
                seen_msgid, cur.obsolete = True, obsolete
            elif not seen_msgid:
                raise CatalogError(f"{where}: {keyword} before msgid")
            if keyword in strings:
                raise CatalogError(f"{where}: {keyword} twice in one entry")
            strings[keyword] = unescape(m.group(3), where)
            last = keyword
            continue
        m = _CONTINUATION.match(line)
        if m and last is not None:
            strings[last] += unescape(m.group(1), where)
            continue
        raise CatalogError(f"{where}: cannot parse {raw[:60]!r}")
    finish(len(lines) + 1, end=True)

    if not entries or entries[0].msgid != "" or entries[0].obsolete:
        raise CatalogError(f'{name}: the first entry must be the header (msgid "")')
    header, body = entries[0], entries[1:]
    seen: set[str] = set()
    for e in body:
        if e.msgid == "":
            raise CatalogError(f'{name}: a second msgid ""')
        if not e.obsolete:
            if e.msgid in seen:
                raise CatalogError(f"{name}: msgid {e.msgid!r} twice")
            seen.add(e.msgid)
    return Catalog(header, body)


def _wrap(keyword: str, text: str) -> list[str]:
    """KEYWORD "TEXT" on one line when it fits, else GNU's style: an empty first string, then pieces
    broken after each newline and, when too long, after spaces."""
    one = f'{keyword} "{escape(text)}"'
    if len(one) <= WIDTH and "\n" not in text[:-1]:
        return [one]
    pieces: list[str] = []
    for segment in re.split(r"(?<=\n)", text):
        if not segment:
            continue
        piece = ""
        for word in re.split(r"(?<= )", escape(segment)):
            if piece and len(piece) + len(word) > WIDTH - 2:
                pieces.append(piece)
                piece = ""
            piece += word
        pieces.append(piece)
    return [f'{keyword} ""'] + [f'"{p}"' for p in pieces]


def render_po(catalog: Catalog) -> str:
    out: list[str] = []
    for e in [catalog.header, *catalog.entries]:
        block = [f"# {c}".rstrip() for c in e.comments]
        if not e.obsolete:
            block += [f"#. {c}".rstrip() for c in e.extracted]
            block += [f"#: {r}" for r in e.refs]
        if e.flags:
            block.append("#, " + ", ".join(e.flags))
        body = _wrap("msgid", e.msgid)
        if e.msgid_plural is None:
            body += _wrap("msgstr", e.msgstr[0])
        else:
            body += _wrap("msgid_plural", e.msgid_plural)
            for i, form in enumerate(e.msgstr):
                body += _wrap(f"msgstr[{i}]", form)
        block += [f"#~ {line}" for line in body] if e.obsolete else body
        out.append("\n".join(block) + "\n")
    return "\n".join(out)


def new_catalog(lang: str) -> Catalog:
    """An empty catalog; a language not in HEADERS gets English's plural rule, to be checked."""
    comments, header = HEADERS.get(
        lang, ("", HEADERS["pt_BR"][1].replace("pt_BR", lang).replace("n > 1", "n != 1"))
    )
    return Catalog(Entry("", [header], comments=[c[1:].removeprefix(" ") for c in comments.splitlines()]))


def merge(catalog: Catalog, messages: Sequence[Message]) -> Catalog:
    """The catalog for MESSAGES: translations kept (also those of messages that come back after being
    obsolete), new messages untranslated, messages the code no longer has marked obsolete (kept for
    when they return; dropped if they were never translated)."""
    old = {e.msgid: e for e in catalog.entries if e.obsolete}
    old.update({e.msgid: e for e in catalog.entries if not e.obsolete})
    by_id: dict[str, Entry] = {}
    for m in messages:
        e = by_id.get(m.msgid)
        if e is None:
            e = by_id[m.msgid] = _entry_for(m, old.get(m.msgid), catalog.nplurals)
        if m.ref not in e.refs:
            e.refs.append(m.ref)
        e.extracted += [c for c in m.comments if c not in e.extracted]
    gone = [
        replace(e, obsolete=True, refs=[], extracted=[], flags=[f for f in e.flags if f == "fuzzy"])
        for e in old.values()
        if e.msgid not in by_id and any(e.msgstr)
    ]
    return Catalog(catalog.header, [*by_id.values(), *gone])


def _entry_for(m: Message, previous: Entry | None, nplurals: int) -> Entry:
    flags = (
        ["python-brace-format"]
        if placeholders(m.msgid) or (m.msgid_plural and placeholders(m.msgid_plural))
        else []
    )
    size = 1 if m.msgid_plural is None else nplurals
    msgstr = [""] * size
    comments: list[str] = []
    if previous is not None:
        comments = list(previous.comments)
        if "fuzzy" in previous.flags:
            flags.insert(0, "fuzzy")
        if previous.msgid_plural == m.msgid_plural:
            msgstr = list(previous.msgstr)
        elif any(previous.msgstr):  # singular became plural or the English plural changed: review it
            msgstr = (previous.msgstr + [previous.msgstr[-1]] * size)[:size]
            flags = ["fuzzy", *[f for f in flags if f != "fuzzy"]]
    return Entry(m.msgid, msgstr, m.msgid_plural, flags, [], [], comments)


# --- .mo files ------------------------------------------------------------------------------------


def compile_mo(catalog: Catalog) -> bytes:
    """The GNU .mo file for CATALOG: little-endian, no hash table (readers then binary-search the
    msgids, which is why they are sorted). Untranslated, fuzzy and obsolete entries are left out, as
    msgfmt does, so the English msgid shows; so are translations whose {placeholders} are wrong."""
    pairs = {b"": catalog.header.msgstr[0].encode()}
    for e in catalog.entries:
        if e.obsolete or not e.translated or placeholder_problems(e):
            continue  # a translation .format() would choke on is worse than English
        msgid = e.msgid if e.msgid_plural is None else f"{e.msgid}\0{e.msgid_plural}"
        pairs[msgid.encode()] = "\0".join(e.msgstr).encode()
    keys = sorted(pairs)
    n = len(keys)
    originals = 7 * 4
    translations = originals + n * 8
    strings = translations + n * 8
    table_o, table_t, data = [], [], bytearray()
    for key in keys:
        table_o += [len(key), strings + len(data)]
        data += key + b"\0"
    for key in keys:
        value = pairs[key]
        table_t += [len(value), strings + len(data)]
        data += value + b"\0"
    head = struct.pack("<7I", 0x950412DE, 0, n, originals, translations, 0, strings)
    return head + struct.pack(f"<{4 * n}I", *table_o, *table_t) + bytes(data)


# --- the checks and the command -------------------------------------------------------------------


def catalogs(locale: Path) -> Iterator[tuple[str, Path]]:
    """(language, .po path) for every catalog, and for the default ones even before they exist."""
    langs = {p.parent.parent.name for p in locale.glob(f"*/LC_MESSAGES/{DOMAIN}.po")} | set(DEFAULT_LANGUAGES)
    for lang in sorted(langs):
        yield lang, locale / lang / "LC_MESSAGES" / f"{DOMAIN}.po"


def problems(catalog: Catalog, messages: Sequence[Message], lang: str) -> list[tuple[str, str]]:
    """What keeps CATALOG from translating every message of the code correctly: (kind, text), kind
    one of missing, stale, untranslated, format."""
    out: list[tuple[str, str]] = []
    active = {e.msgid: e for e in catalog.entries if not e.obsolete}
    first: dict[str, Message] = {}
    for m in messages:
        first.setdefault(m.msgid, m)
    for m in first.values():  # each message once, where it is first used
        e = active.get(m.msgid)
        if e is None:
            out.append(("missing", f"{lang}: {m.msgid!r} ({m.ref}) is not in the catalog"))
        elif e.msgid_plural != m.msgid_plural:
            out.append(
                ("missing", f"{lang}: {m.msgid!r} ({m.ref}): the catalog's plural is {e.msgid_plural!r}")
            )
    for e in active.values():
        if e.msgid not in first:
            out.append(
                ("stale", f"{lang}: {e.msgid!r} is no longer in the code (the script marks it obsolete)")
            )
        elif not e.translated:
            state = "fuzzy" if "fuzzy" in e.flags else "not translated"
            out.append(("untranslated", f"{lang}: {e.msgid!r} is {state}"))
        else:
            out += [("format", f"{lang}: {e.msgid!r}: {p}") for p in placeholder_problems(e)]
    return out


def placeholder_problems(e: Entry) -> list[str]:
    """A translation must use the {names} its English uses: .format() raises KeyError on a name the
    code does not pass and the reader loses a fact when one is left out. Plural forms after the
    first follow msgid_plural. As GNU msgfmt, a leading or trailing newline must be kept too."""
    out: list[str] = []
    for i, form in enumerate(e.msgstr):
        english = e.msgid if i == 0 or e.msgid_plural is None else e.msgid_plural
        for where, test in (("begins", str.startswith), ("ends", str.endswith)):
            if form and test(english, "\n") != test(form, "\n"):
                out.append(f"the English {where} with a newline and the translation does not, or the reverse")
        try:
            want = placeholders(english)
        except ValueError:
            continue  # English that is no format string: the code cannot be calling .format() on it
        try:
            got = placeholders(form)
        except ValueError as exc:
            out.append(f"msgstr {form!r} is not a valid .format() string ({exc})")
            continue
        if got != want:
            out.append(f"placeholders {sorted(got)} in the translation, {sorted(want)} in the English")
    return out


def run(src: Path, locale: Path, check: bool) -> int:
    messages, errors = extract(src)
    for err in errors:
        print(err, file=sys.stderr)
    if errors:
        return 1
    bad: list[str] = []
    for lang, po_path in catalogs(locale):
        mo_path = po_path.with_suffix(".mo")
        try:
            current = (
                parse_po(po_path.read_text(encoding="utf-8"), str(po_path)) if po_path.exists() else None
            )
        except CatalogError as exc:
            print(exc, file=sys.stderr)
            return 1
        if check:
            if current is None:
                bad.append(f"{lang}: no catalog at {po_path}")
                continue
            bad += [text for _kind, text in problems(current, messages, lang)]
            if not mo_path.exists() or mo_path.read_bytes() != compile_mo(current):
                bad.append(f"{lang}: {mo_path.name} is not the compiled {po_path.name}")
            continue
        updated = merge(current or new_catalog(lang), messages)
        po_text, mo = render_po(updated), compile_mo(updated)
        po_path.parent.mkdir(parents=True, exist_ok=True)
        for path, data in ((po_path, po_text.encode()), (mo_path, mo)):
            if not path.exists() or path.read_bytes() != data:
                path.write_bytes(data)
        todo = [e.msgid for e in updated.entries if not e.obsolete and not e.translated]
        obsolete = sum(e.obsolete for e in updated.entries)
        print(
            f"{lang}: {len(updated.entries) - obsolete} messages, {len(todo)} to translate, {obsolete} obsolete"
        )
        for msgid in todo:
            print(f"  to translate: {msgid!r}")
        bad += [text for kind, text in problems(updated, messages, lang) if kind != "untranslated"]
    for p in bad:
        print(p, file=sys.stderr)
    if bad and check:
        print(
            "run scripts/build_catalogs.py, translate what it lists in the .po, run it again", file=sys.stderr
        )
    return 1 if bad else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if the catalogs lag")
    parser.add_argument("--src", type=Path, default=SRC, help="the package to scan (default: %(default)s)")
    parser.add_argument("--locale", type=Path, default=LOCALE, help="the catalogs (default: %(default)s)")
    args = parser.parse_args(argv)
    return run(args.src, args.locale, args.check)


if __name__ == "__main__":
    sys.exit(main())
