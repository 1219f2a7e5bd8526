"""Messages in English and Brazilian Portuguese: which language is chosen, what comes back, and the
catalog pipeline (scripts/build_catalogs.py: extraction, .po update, our msgfmt).

Oracles independent of our code: Python's gettext.GNUTranslations reads what our msgfmt writes, GNU
msgfmt compiles the same .po byte for byte, and str.format() runs every translation.
"""

from __future__ import annotations

import contextlib
import fnmatch
import gettext
import importlib.util
import io
import shutil
import string
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from portscope import i18n
from portscope.errors import BadInput

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "build_catalogs.py"
PO = ROOT / "src" / "portscope" / "locale" / "pt_BR" / "LC_MESSAGES" / "portscope.po"
MO = PO.with_suffix(".mo")
ENV_VARS = ("LANGUAGE", "LC_ALL", "LC_MESSAGES", "LANG")


def _load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("build_catalogs", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["build_catalogs"] = module  # dataclasses look their module up while being built
    spec.loader.exec_module(module)
    return module


bc = _load_script()


@pytest.fixture(autouse=True)
def _keep_language() -> Iterator[None]:
    """The chosen language is process-wide: give later tests (diagnose's English asserts) it back."""
    saved = (i18n._lang, i18n._gettext, i18n._ngettext)
    yield
    i18n._lang, i18n._gettext, i18n._ngettext = saved


# --- choosing the language ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given_", "expected"),
    [
        ("pt", "pt_BR"),
        ("pt_BR", "pt_BR"),
        ("pt-BR", "pt_BR"),
        ("pt-br", "pt_BR"),
        ("PT_br", "pt_BR"),
        (" pt ", "pt_BR"),
        ("pt_BR.UTF-8", "pt_BR"),
        ("pt_BR.utf8@euro", "pt_BR"),
        ("pt_PT.UTF-8", "pt_BR"),
        ("en", "en"),
        ("en_US.UTF-8", "en"),
        ("en_GB", "en"),
        ("C", "en"),
        ("C.UTF-8", "en"),
        ("POSIX", "en"),
        ("de_DE.UTF-8", None),
        ("fr", None),
        ("xx", None),
        ("", None),
        ("portugues", None),
    ],
)
def test_normalize(given_: str, expected: str | None) -> None:
    assert i18n.normalize(given_) == expected


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, "en"),
        ({"LANG": "pt_BR.UTF-8"}, "pt_BR"),
        ({"LANG": "pt"}, "pt_BR"),
        ({"LANG": "de_DE.UTF-8"}, "en"),
        ({"LANG": "en_US.UTF-8", "LC_MESSAGES": "pt_BR.UTF-8"}, "pt_BR"),
        ({"LANG": "pt_BR.UTF-8", "LC_MESSAGES": "en_US.UTF-8"}, "en"),
        ({"LC_ALL": "en_US.UTF-8", "LC_MESSAGES": "pt_BR.UTF-8", "LANG": "pt_BR.UTF-8"}, "en"),
        ({"LC_ALL": "pt_BR.UTF-8", "LANG": "en_US.UTF-8"}, "pt_BR"),
        ({"LC_ALL": "", "LC_MESSAGES": "", "LANG": "pt_BR.UTF-8"}, "pt_BR"),  # empty is unset
        ({"LANGUAGE": "pt_BR:en", "LANG": "en_US.UTF-8"}, "pt_BR"),
        ({"LANGUAGE": "fr:de:pt", "LANG": "en_US.UTF-8"}, "pt_BR"),  # the first language we have
        ({"LANGUAGE": "en:pt_BR", "LANG": "pt_BR.UTF-8"}, "en"),  # LANGUAGE before the locale
        ({"LANGUAGE": "fr:de", "LANG": "pt_BR.UTF-8"}, "en"),  # as GNU: no fallback to LANG then
        ({"LANGUAGE": "", "LANG": "pt_BR.UTF-8"}, "pt_BR"),
        ({"LANGUAGE": "::pt", "LANG": "en_US.UTF-8"}, "pt_BR"),
        # GNU gettext ignores LANGUAGE in the C locale: LC_ALL=C asks for the untranslated messages
        ({"LANGUAGE": "pt_BR", "LC_ALL": "C"}, "en"),
        ({"LANGUAGE": "pt_BR", "LANG": "C.UTF-8"}, "en"),
        ({"LANGUAGE": "pt_BR", "LC_ALL": "POSIX", "LANG": "pt_BR.UTF-8"}, "en"),
        ({"LANGUAGE": "pt_BR"}, "en"),
    ],
)
def test_language_from_environment(env: dict[str, str], expected: str) -> None:
    assert i18n.from_environment(env) == expected


def test_setup_reads_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("LANG", "pt_BR.UTF-8")
    assert i18n.setup() == "pt_BR" == i18n.language()
    assert i18n._("English") == "Inglês"
    monkeypatch.setenv("LC_ALL", "C")
    assert i18n.setup(None) == "en"
    assert i18n._("English") == "English"


@pytest.mark.parametrize(
    ("option", "expected"),
    [("pt", "pt_BR"), ("pt_BR", "pt_BR"), ("pt-BR", "pt_BR"), ("en", "en"), ("xx", "en"), ("de", "en")],
)
def test_lang_option_wins_over_the_environment(
    monkeypatch: pytest.MonkeyPatch, option: str, expected: str
) -> None:
    for var in ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("LANG", "en_US.UTF-8" if expected == "pt_BR" else "pt_BR.UTF-8")
    assert i18n.setup(option) == expected  # an unknown language is English, silently
    assert i18n.language() == expected
    assert i18n._("Brazilian Portuguese") == (
        "Português do Brasil" if expected == "pt_BR" else "Brazilian Portuguese"
    )


def test_the_first_message_chooses_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("LANG", "pt_BR.UTF-8")
    i18n._lang = i18n._gettext = i18n._ngettext = None  # as right after import
    assert i18n._("English") == "Inglês"
    assert i18n.language() == "pt_BR"


def test_parse_lang_refuses_what_setup_would_ignore() -> None:
    assert [i18n.parse_lang(v) for v in ("pt", "pt-BR", "pt_BR", "en")] == ["pt_BR", "pt_BR", "pt_BR", "en"]
    i18n.setup("en")
    with pytest.raises(BadInput, match=r"--lang 'klingon' is not a language .*give en .* or pt"):
        i18n.parse_lang("klingon")
    i18n.setup("pt")
    with pytest.raises(BadInput, match=r"--lang 'x\\x1b\[2J' não é um idioma .*use en .* ou pt"):
        i18n.parse_lang("x\x1b[2J")  # what the user typed, escaped by repr


# --- what comes back ----------------------------------------------------------------------------


def test_translated_message_and_english_fallback() -> None:
    i18n.setup("pt")
    assert i18n._("English") == "Inglês"
    assert i18n.language_name("pt") == i18n.language_name("pt_BR") == "Português do Brasil"
    assert i18n.language_name("en_US") == "Inglês"
    assert i18n.language_name("tlh") == "tlh"
    # no catalog entry: the English msgid, untouched, placeholders and all
    assert i18n._("no catalog has this {port}") == "no catalog has this {port}"
    assert i18n.ngettext("{n} port", "{n} ports", 1) == "{n} port"
    assert i18n.ngettext("{n} port", "{n} ports", 0) == "{n} ports"  # English's rule, untranslated
    assert i18n.N_("English") == "English"  # marks, never translates
    i18n.setup("en")
    assert i18n._("English") == "English"
    assert i18n.language_name("pt") == "Brazilian Portuguese"


def test_placeholders_survive_translation() -> None:
    i18n.setup("pt")
    msg = (
        "--lang {value!r} is not a language portscope speaks: give en (English) or pt (Brazilian Portuguese)"
    )
    out = i18n._(msg).format(value="xx")
    assert out.startswith("--lang 'xx' não é um idioma") and "{" not in out


def test_catalog_is_read_once_and_only_when_needed(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from portscope import i18n\n"
        "assert 'gettext' not in sys.modules, 'imported gettext at import time'\n"
        "i18n.setup('en'); i18n._('English')\n"
        "assert 'gettext' not in sys.modules, 'English needs no catalog'\n"
        "i18n.setup('pt')\n"
        "assert i18n._gettext is None, 'setup() read the catalog before any message'\n"
        "print(i18n._('English'))\n"
        "first = i18n._gettext\n"
        "i18n._('Brazilian Portuguese')\n"
        "assert i18n._gettext is first, 'read the catalog twice'\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "Inglês"


def test_missing_catalog_means_english(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(i18n, "LOCALE_DIR", str(tmp_path))
    i18n.setup("pt")
    assert i18n._("English") == "English"
    assert i18n.ngettext("a port", "{n} ports", 1) == "a port"


# --- the shipped catalog --------------------------------------------------------------------------


class _Any:
    """Stands for any value .format() may be given: formats with any spec, has every attribute."""

    def __format__(self, spec: str) -> str:
        return "X"

    def __getattr__(self, name: str) -> _Any:
        return self

    def __getitem__(self, key: object) -> _Any:
        return self

    def __repr__(self) -> str:
        return "X"


def _names(text: str) -> set[str]:
    return {name for _lit, name, _spec, _conv in string.Formatter().parse(text) if name is not None}


def test_every_translation_keeps_the_placeholders_of_its_english() -> None:
    catalog = bc.parse_po(PO.read_text(encoding="utf-8"), str(PO))
    translated = [e for e in catalog.entries if not e.obsolete and all(e.msgstr)]
    assert len(translated) >= 3
    for e in translated:
        for i, form in enumerate(e.msgstr):
            english = e.msgid if i == 0 or e.msgid_plural is None else e.msgid_plural
            assert _names(form) == _names(english), (e.msgid, form)
            values = {name.split(".")[0].split("[")[0]: _Any() for name in _names(english)}
            form.format(**values)  # raises on a stray brace or a name the code does not pass


def test_catalog_is_complete_and_compiled() -> None:
    """What CI enforces: every message of the code is translated and the .mo is the compiled .po."""
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_shipped_mo_is_readable_by_python_gettext() -> None:
    with MO.open("rb") as fh:
        t = gettext.GNUTranslations(fh)
    assert t.info()["language"] == "pt_BR"
    assert t.gettext("English") == "Inglês"
    assert [t.plural(n) for n in (0, 1, 2, 10)] == [0, 0, 1, 1]  # type: ignore[attr-defined]  # pt_BR: 0 is singular


def test_mo_files_are_package_data() -> None:
    """pip installs only what package-data names: without the .mo an install is English only."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    patterns = config["tool"]["setuptools"]["package-data"]["portscope"]
    rel = MO.relative_to(ROOT / "src" / "portscope").as_posix()
    assert any(fnmatch.fnmatch(rel, p) for p in patterns), patterns


# --- our msgfmt and .po handling ------------------------------------------------------------------

SAMPLE_PO = r"""# Translator's note, kept.
msgid ""
msgstr ""
"Language: pt_BR\n"
"Content-Type: text/plain; charset=UTF-8\n"
"Plural-Forms: nplurals=2; plural=(n > 1);\n"

#: portscope/x.py
#, python-brace-format
msgid "port {port} is closed"
msgstr "a porta {port} está fechada"

msgid ""
"a \"quoted\" back\\slash,\ta tab and\n"
"a second line"
msgstr "\"aspas\" barra\\invertida,\tuma tabulação e\numa segunda linha"

msgid "ação"
msgstr "ação ✓"

#, python-brace-format
msgid "{n} port"
msgid_plural "{n} ports"
msgstr[0] "{n} porta"
msgstr[1] "{n} portas"

#, fuzzy
msgid "fuzzy one"
msgstr "não revisada"

msgid "untranslated"
msgstr ""

#, python-brace-format
msgid "lost {name}"
msgstr "perdido {nome}"

msgid "half a plural"
msgid_plural "half plurals"
msgstr[0] "meio"
msgstr[1] ""

#~ msgid "gone"
#~ msgstr "foi-se"
"""


def test_msgfmt_round_trip_through_python_gettext() -> None:
    catalog = bc.parse_po(SAMPLE_PO)
    mo = bc.compile_mo(catalog)
    t = gettext.GNUTranslations(io.BytesIO(mo))
    assert t.gettext("port {port} is closed") == "a porta {port} está fechada"
    assert t.gettext('a "quoted" back\\slash,\ta tab and\na second line') == (
        '"aspas" barra\\invertida,\tuma tabulação e\numa segunda linha'
    )
    assert t.gettext("ação") == "ação ✓"
    assert [t.ngettext("{n} port", "{n} ports", n) for n in (0, 1, 2, 10)] == [
        "{n} porta",
        "{n} porta",
        "{n} portas",
        "{n} portas",
    ]
    # left out, as GNU msgfmt does, so the English shows: fuzzy, untranslated, obsolete, half a plural;
    # and a translation whose placeholders .format() would choke on
    for english in ("fuzzy one", "untranslated", "gone", "lost {name}"):
        assert t.gettext(english) == english
    assert t.ngettext("half a plural", "half plurals", 1) == "half a plural"
    assert set(t._catalog) == {  # type: ignore[attr-defined]
        "",
        "port {port} is closed",
        'a "quoted" back\\slash,\ta tab and\na second line',
        "ação",
        ("{n} port", 0),
        ("{n} port", 1),
    }


def test_po_render_parse_round_trip_keeps_everything() -> None:
    catalog = bc.parse_po(SAMPLE_PO)
    again = bc.parse_po(bc.render_po(catalog))
    assert again == catalog
    assert bc.render_po(again) == bc.render_po(catalog)
    assert catalog.header.comments == ["Translator's note, kept."]
    assert [e.msgid for e in catalog.entries if e.obsolete] == ["gone"]
    assert catalog.nplurals == 2


@pytest.mark.skipif(
    shutil.which("msgfmt") is None, reason="GNU msgfmt not installed (Debian package gettext)"
)
@pytest.mark.parametrize("source", ["sample", "shipped"])
def test_our_mo_is_byte_identical_to_gnu_msgfmt(tmp_path: Path, source: str) -> None:
    """GNU msgfmt --no-hash writes the same layout (sorted msgids, no hash table): an independent
    implementation agreeing byte for byte. -c also checks python-brace-format entries."""
    text = PO.read_text(encoding="utf-8") if source == "shipped" else SAMPLE_PO
    po = tmp_path / "x.po"
    catalog = bc.parse_po(text)
    # GNU compiles what we leave out on purpose, as English is better than what they would give:
    # translations .format() chokes on, and plurals with a form missing (gettext would return "")
    catalog.entries = [
        e for e in catalog.entries if not bc.placeholder_problems(e) and (all(e.msgstr) or not any(e.msgstr))
    ]
    po.write_text(bc.render_po(catalog), encoding="utf-8")
    proc = subprocess.run(
        ["msgfmt", "-c", "--no-hash", "-o", str(tmp_path / "gnu.mo"), str(po)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "gnu.mo").read_bytes() == bc.compile_mo(catalog)


_TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=200)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(_TEXT.filter(bool), _TEXT, max_size=8))
def test_any_text_survives_po_and_mo(pairs: dict[str, str]) -> None:
    header = bc.Entry(
        "", ["Content-Type: text/plain; charset=UTF-8\nPlural-Forms: nplurals=2; plural=(n > 1);\n"]
    )
    catalog = bc.Catalog(header, [bc.Entry(k, [v]) for k, v in pairs.items()])
    parsed = bc.parse_po(bc.render_po(catalog))
    assert parsed == catalog
    t = gettext.GNUTranslations(io.BytesIO(bc.compile_mo(parsed)))
    for msgid, msgstr in pairs.items():
        english = _safe_names(msgid)
        usable = (
            msgstr
            and (english is None or english == _safe_names(msgstr))
            # as GNU msgfmt: a newline that starts or ends the English starts or ends the translation
            and msgid.startswith("\n") == msgstr.startswith("\n")
            and msgid.endswith("\n") == msgstr.endswith("\n")
        )
        assert t.gettext(msgid) == (msgstr if usable else msgid)


def _safe_names(text: str) -> set[str] | None:
    """None when TEXT is no .format() string."""
    try:
        return _names(text)
    except ValueError:
        return None


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_po_parser_only_raises_catalog_error(text: str) -> None:
    with contextlib.suppress(bc.CatalogError):
        bc.parse_po(text)


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ('msgid "a"\nmsgstr "b"\n', "header"),
        ('msgid ""\nmsgstr ""\n\nmsgid "a"\n', "needs one msgstr"),
        ('msgid ""\nmsgstr ""\n\nmsgid "a"\nmsgstr "b"\n\nmsgid "a"\nmsgstr "c"\n', "twice"),
        ('msgid ""\nmsgstr ""\n\nmsgid "a"\nmsgid_plural "as"\nmsgstr "b"\n', r"msgstr\[0\]"),
        ('msgid ""\nmsgstr ""\n\nmsgid "a"\nmsgid_plural "as"\nmsgstr[1] "b"\n', r"msgstr\[0\]"),
        ('msgid ""\nmsgstr ""\n\nmsgctxt "c"\nmsgid "a"\nmsgstr "b"\n', "msgctxt"),
        ('msgid ""\nmsgstr ""\n\nmsgid "a\\q"\nmsgstr "b"\n', "unknown escape"),
        ('msgid ""\nmsgstr ""\n\nmsgid "a"\nmsgstr "b"\nwhat\n', "cannot parse"),
    ],
)
def test_po_parser_names_the_problem(text: str, error: str) -> None:
    with pytest.raises(bc.CatalogError, match=error):
        bc.parse_po(text, "t.po")


# --- extraction and updating ------------------------------------------------------------------------


def _tree(tmp_path: Path, code: str) -> tuple[Path, Path]:
    src = tmp_path / "pkg"
    src.mkdir(exist_ok=True)
    (src / "mod.py").write_text(code, encoding="utf-8")
    return src, tmp_path / "locale"


def _build(src: Path, locale: Path, *extra: str) -> int:
    code: int = bc.main(["--src", str(src), "--locale", str(locale), *extra])
    return code


def _translate(po: Path, translations: dict[str, list[str]]) -> None:
    catalog = bc.parse_po(po.read_text(encoding="utf-8"))
    for e in catalog.entries:
        if e.msgid in translations:
            e.msgstr = translations[e.msgid]
    po.write_text(bc.render_po(catalog), encoding="utf-8")


CODE_V1 = """
from portscope import i18n
from portscope.i18n import N_, _, ngettext

LABELS = {"up": N_("Up")}


def f(n: int, key: str) -> list[str]:
    # Translators: {port} is a number.
    a = _("port {port} is closed").format(port=n)
    return [a, _("Bye"), ngettext("{n} port", "{n} ports", n).format(n=n), _(LABELS[key]), i18n._("via module")]


def g(obj: object) -> str:
    return obj._("not ours")  # someone else's method
"""


def test_extract_update_translate_obsolete_revive(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src, locale = _tree(tmp_path, CODE_V1)
    po = locale / "pt_BR" / "LC_MESSAGES" / "portscope.po"
    mo = po.with_suffix(".mo")
    assert _build(src, locale) == 0
    catalog = bc.parse_po(po.read_text(encoding="utf-8"))
    by_id = {e.msgid: e for e in catalog.entries}
    assert list(by_id) == ["Up", "port {port} is closed", "Bye", "{n} port", "via module"]
    assert all(not any(e.msgstr) for e in by_id.values())
    assert by_id["{n} port"].msgid_plural == "{n} ports" and by_id["{n} port"].msgstr == ["", ""]
    assert by_id["port {port} is closed"].flags == ["python-brace-format"]
    assert by_id["port {port} is closed"].extracted == ["Translators: {port} is a number."]
    assert by_id["Bye"].refs == ["pkg/mod.py"]
    assert "5 to translate" in capsys.readouterr().out

    assert _build(src, locale, "--check") == 1
    assert "'Bye' is not translated" in capsys.readouterr().err

    _translate(
        po,
        {
            "Up": ["Ativo"],
            "port {port} is closed": ["a porta {port} está fechada"],
            "Bye": ["Tchau"],
            "{n} port": ["{n} porta", "{n} portas"],
            "via module": ["pelo módulo"],
        },
    )
    assert _build(src, locale, "--check") == 1  # the .mo is still the old one
    assert "portscope.mo is not the compiled portscope.po" in capsys.readouterr().err
    assert _build(src, locale) == 0
    assert _build(src, locale, "--check") == 0
    t = gettext.GNUTranslations(io.BytesIO(mo.read_bytes()))
    assert t.gettext("Bye") == "Tchau" and t.ngettext("{n} port", "{n} ports", 3) == "{n} portas"

    # the code changes: one message goes, one comes
    (src / "mod.py").write_text(CODE_V1.replace('_("Bye")', '_("Hello")'), encoding="utf-8")
    assert _build(src, locale, "--check") == 1
    err = capsys.readouterr().err
    assert "'Hello' (pkg/mod.py) is not in the catalog" in err
    assert "'Bye' is no longer in the code" in err
    assert _build(src, locale) == 0
    text = po.read_text(encoding="utf-8")
    assert '#~ msgid "Bye"\n#~ msgstr "Tchau"' in text
    catalog = bc.parse_po(text)
    assert {e.msgid: e.msgstr for e in catalog.entries if not e.obsolete}["Hello"] == [""]
    assert {e.msgid: e.msgstr for e in catalog.entries}["port {port} is closed"] == [
        "a porta {port} está fechada"
    ]
    t = gettext.GNUTranslations(io.BytesIO(mo.read_bytes()))
    assert t.gettext("Bye") == "Bye"  # obsolete: not compiled

    # it comes back: the old translation with it
    (src / "mod.py").write_text(CODE_V1, encoding="utf-8")
    assert _build(src, locale) == 0
    assert "Tchau" in po.read_text(encoding="utf-8") and "#~" not in po.read_text(encoding="utf-8")
    assert _build(src, locale, "--check") == 0
    before = po.read_bytes(), mo.read_bytes()
    assert _build(src, locale) == 0
    assert (po.read_bytes(), mo.read_bytes()) == before  # nothing changed, nothing rewritten

    mo.write_bytes(mo.read_bytes() + b"\0")
    assert _build(src, locale, "--check") == 1


def test_check_refuses_a_translation_that_loses_a_placeholder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src, locale = _tree(
        tmp_path, 'def f(h: str) -> str:\n    return _("cannot reach {host}").format(host=h)\n'
    )
    po = locale / "pt_BR" / "LC_MESSAGES" / "portscope.po"
    assert _build(src, locale) == 0
    _translate(po, {"cannot reach {host}": ["não alcança {hots}"]})
    assert _build(src, locale) == 1
    assert _build(src, locale, "--check") == 1
    assert "placeholders ['hots'] in the translation, ['host'] in the English" in capsys.readouterr().err
    t = gettext.GNUTranslations(io.BytesIO(po.with_suffix(".mo").read_bytes()))
    assert t.gettext("cannot reach {host}") == "cannot reach {host}"  # English rather than a KeyError


@pytest.mark.parametrize(
    ("code", "error"),
    [
        ('def f(p):\n    return _(f"port {p} closed")\n', "f-string in _()"),
        ('def f(p, n):\n    return ngettext(f"{p}", "ps", n)\n', "f-string in ngettext()"),
        ('MSG = _("at import")\n', "_() at import time"),
        ('class A:\n    label = _("in a class body")\n', "_() at import time"),
        ('def f(x=_("a default")):\n    return x\n', "_() at import time"),
        ('X = [_(m) for m in ("a", "b")]\n', "_() at import time"),
        ('def f(p):\n    return _("port {} closed").format(p)\n', "positional placeholder {}"),
        ('def f(p):\n    return _("port {0} closed").format(p)\n', "positional placeholder {0}"),
        ('def f():\n    return _("a { b")\n', "not a valid .format() string"),
        ('def f():\n    return _("")\n', "empty msgid"),
        ('def f():\n    return _("a\\0b")\n', "NUL and EOT"),
        ('def f(x):\n    return _("port " + x)\n', "needs a string literal, not BinOp"),
        ('def f(x):\n    return _("port %s" % x)\n', "needs a string literal, not BinOp"),
        ("def f(x):\n    return N_(x)\n", "N_() needs a string literal"),
        ('def f():\n    return _("a", "b")\n', "_() takes 1 positional argument"),
        ("def f(:\n", "pkg/mod.py:1"),
    ],
)
def test_extractor_rejects_what_cannot_be_translated(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], code: str, error: str
) -> None:
    src, locale = _tree(tmp_path, code)
    assert _build(src, locale, "--check") == 1
    assert error in capsys.readouterr().err
    assert _build(src, locale) == 1
    assert not locale.exists()  # nothing written from code that is wrong


def test_extractor_accepts_deferred_and_lambda_messages(tmp_path: Path) -> None:
    code = 'TABLE = {"a": N_("Alpha")}\nf = lambda: _("in a lambda")\n\n\nasync def g(k):\n    return _(TABLE[k])\n'
    src, _locale = _tree(tmp_path, code)
    messages, errors = bc.extract(src)
    assert errors == []
    assert [m.msgid for m in messages] == ["Alpha", "in a lambda"]


def test_the_package_examples_are_extracted() -> None:
    messages, errors = bc.extract(ROOT / "src" / "portscope")
    assert errors == []
    ids = [m.msgid for m in messages]
    assert {"English", "Brazilian Portuguese"} <= set(ids)
    assert any(m.startswith("--lang {value!r}") for m in ids)
