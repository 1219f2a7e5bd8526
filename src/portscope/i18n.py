"""Messages in the user's language (English, Brazilian Portuguese) through gettext catalogs.

English is the source language: msgids are the English text, so a message nobody translated still
reads well. Verdict codes, JSON keys and anything a script parses are never translated.

Rules for code that shows messages (scripts/build_catalogs.py enforces the first three):
- `_("port {port} is closed").format(port=port)`: a literal with named placeholders, never an f-string
  (the msgid would be the already-formatted text, which no catalog holds) nor `{}`/`{0}` (a translator
  may need to reorder them).
- `_()` runs when the message is shown, never at import time (module level, class bodies, default
  arguments): the language is chosen later, by `setup()`. Tables of messages built at import mark
  their strings with `N_()` and pass them through `_()` when rendering.
- Text from the network or another process goes into a placeholder, never into the msgid.

Importing this module is cheap (no gettext import); the catalog is read on the first message.
"""

from __future__ import annotations

import os

from portscope.errors import BadInput

TYPE_CHECKING = False  # typing itself costs more to import than the rest of this module
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

DOMAIN = "portscope"
LOCALE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "locale")
SOURCE_LANGUAGE = "en"

_lang: str | None = None  # None until setup() or the first message, which reads the environment
_gettext: Callable[[str], str] | None = None
_ngettext: Callable[[str, str, int], str] | None = None


def N_(message: str) -> str:
    """Mark a message for the catalog without translating it yet (tables built at import time)."""
    return message


def _(message: str) -> str:
    """The message in the chosen language; the English msgid when the catalog has no translation."""
    return (_gettext or _load()[0])(message)


def ngettext(singular: str, plural: str, n: int) -> str:
    """The form of a message for N things, by the language's plural rule (pt_BR: 0 and 1 are singular)."""
    return (_ngettext or _load()[1])(singular, plural, n)


# Translators: language names, shown as the name of the language portscope speaks.
_NAMES = {"en": N_("English"), "pt_BR": N_("Brazilian Portuguese")}


def normalize(lang: str) -> str | None:
    """The catalog for a language name as found in --lang or the environment: `en`, `pt_BR`, or None.

    Accepts what people type and what locales are called: `pt`, `pt_BR`, `pt-br`, `pt_BR.UTF-8`,
    `en_US.UTF-8@euro`. Every Portuguese (pt_PT too) gets pt_BR: closer to the reader than English.
    The C and POSIX locales mean untranslated, that is English.
    """
    primary = _primary(lang)
    if primary in ("c", "posix", "en"):
        return SOURCE_LANGUAGE
    if primary == "pt":
        return "pt_BR"
    return None


def _primary(lang: str) -> str:
    """`pt` for `pt_BR.UTF-8@euro`, `c` for `C.UTF-8`."""
    return lang.strip().split(".", 1)[0].split("@", 1)[0].replace("-", "_").split("_", 1)[0].lower()


def from_environment(environ: Mapping[str, str] | None = None) -> str:
    """The language GNU gettext would pick: LANGUAGE (a colon-separated list, first known language
    wins), else the locale's messages category (the first set of LC_ALL, LC_MESSAGES, LANG).

    As GNU gettext (and unlike Python's gettext module), LANGUAGE is ignored when the locale is C or
    unset: `LC_ALL=C portscope ...` gives English, as it does for ls and grep, even on a desktop that
    sets LANGUAGE. Unknown languages give English.
    """
    env = os.environ if environ is None else environ
    locale = next((env[v] for v in ("LC_ALL", "LC_MESSAGES", "LANG") if env.get(v)), "")
    if _primary(locale) in ("", "c", "posix"):
        return SOURCE_LANGUAGE
    if env.get("LANGUAGE"):
        for item in env["LANGUAGE"].split(":"):
            found = normalize(item) if item else None
            if found:
                return found
        return SOURCE_LANGUAGE
    return normalize(locale) or SOURCE_LANGUAGE


def setup(lang: str | None = None) -> str:
    """Choose the language for every later message: `lang` (from --lang) when given, else the
    environment. An unknown language gives English, silently (use parse_lang() to refuse it).
    Returns the language chosen: `en` or `pt_BR`."""
    global _lang, _gettext, _ngettext
    chosen = (normalize(lang) or SOURCE_LANGUAGE) if lang else from_environment()
    _lang, _gettext, _ngettext = chosen, None, None
    return chosen


def language() -> str:
    """The language messages are in (`en` or `pt_BR`), choosing it from the environment if not yet."""
    return _lang or setup()


def parse_lang(value: str) -> str:
    """--lang's value as a language, or BadInput naming the valid ones (exit 2)."""
    found = normalize(value)
    if found is None:
        raise BadInput(
            _(
                "--lang {value!r} is not a language portscope speaks: give en (English) or pt (Brazilian Portuguese)"
            ).format(value=value)
        )
    return found


def language_name(code: str) -> str:
    """`pt_BR` as a reader of the current language calls it."""
    name = _NAMES.get(normalize(code) or code)
    return _(name) if name else code


def catalog_path(lang: str) -> str:
    return os.path.join(LOCALE_DIR, lang, "LC_MESSAGES", DOMAIN + ".mo")


def _load() -> tuple[Callable[[str], str], Callable[[str, str, int], str]]:
    """Read the chosen language's catalog once. A missing catalog (a broken install) gives English
    rather than an error: a diagnosis in English beats none."""
    global _gettext, _ngettext
    lang = language()
    gettext_: Callable[[str], str] = _identity
    ngettext_: Callable[[str, str, int], str] = _english_plural
    if lang != SOURCE_LANGUAGE:
        import gettext  # here, not at the top: English needs no catalog

        try:
            with open(catalog_path(lang), "rb") as fh:
                catalog = gettext.GNUTranslations(fh)
        except OSError:
            pass
        else:
            gettext_, ngettext_ = catalog.gettext, catalog.ngettext
    _gettext, _ngettext = gettext_, ngettext_
    return gettext_, ngettext_


def _identity(message: str) -> str:
    return message


def _english_plural(singular: str, plural: str, n: int) -> str:
    return singular if n == 1 else plural


class Text(str):
    """English text that can still say itself in the reader's language later.

    For messages made below cli/ whose English must stay in data (probe --json, `details`) while
    a human rendering elsewhere (diagnose --lang pt) shows them translated: the str value is the
    English, formatted once; `localize()` formats the template's translation with the same values
    (themselves localized when they are Text). Write `Text(N_("port {port} is closed"), port=p)`;
    the N_() marks the template for the catalog, as for any message.
    """

    template: str
    params: dict[str, object]
    parts: tuple[object, ...] | None
    sep: str

    def __new__(cls, template: str, /, **params: object) -> Text:
        self = super().__new__(cls, template.format(**params))
        self.template, self.params, self.parts, self.sep = template, params, None, ""
        return self

    @classmethod
    def joined(cls, sep: str, parts: Sequence[object]) -> Text:
        """`sep.join(parts)` that localizes each part when shown (the separator is punctuation)."""
        self = super().__new__(cls, sep.join(str(p) for p in parts))
        self.template, self.params, self.parts, self.sep = "", {}, tuple(parts), sep
        return self

    def localized(self) -> str:
        if self.parts is not None:
            return self.sep.join(str(localize(p)) for p in self.parts)
        return _(self.template).format(**{k: localize(v) for k, v in self.params.items()})

    def __reduce__(self) -> tuple[object, ...]:  # copy, deepcopy and pickle keep the template
        if self.parts is not None:
            return (Text.joined, (self.sep, self.parts))
        return (_text, (self.template, self.params))


def _text(template: str, params: dict[str, object]) -> Text:
    return Text(template, **params)


if TYPE_CHECKING:
    from typing import TypeVar

    _T = TypeVar("_T")


def localize(value: _T) -> _T:
    """A Text in the chosen language (a plain str); anything else as it is (a str from the network
    stays as sent)."""
    return value.localized() if isinstance(value, Text) else value  # type: ignore[return-value]
