"""Messages in the user's language (English, Brazilian Portuguese) through gettext catalogs.

Placeholder until the catalogs land: every message is returned as written (English).
"""

from __future__ import annotations


def _(message: str) -> str:
    return message


def setup(lang: str | None = None) -> None:
    """Choose the language: `lang` (--lang), else LANGUAGE, LC_ALL, LC_MESSAGES, LANG."""
