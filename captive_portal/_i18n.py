"""The portal's languages: gettext catalogs, language choice, durations in words.

Source strings are English, in the code and the templates. Each language has a
``locale/<lang>/LC_MESSAGES/portal.po``; the ``.po`` files are compiled in memory when the
application is built (no ``.mo`` file is kept in the repository). To refresh them after
changing a string::

    pybabel extract -F captive_portal/babel.cfg -o /tmp/portal.pot captive_portal
    pybabel update -i /tmp/portal.pot -d captive_portal/locale -D portal

Only ``load_translations`` reads files, once at start-up; the rest is pure.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Final

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import Translations

__all__ = [
    "DOMAIN",
    "LANGUAGES",
    "LANGUAGE_NAMES",
    "LOCALE_DIR",
    "format_bytes",
    "format_duration",
    "load_translations",
    "negotiate",
    "parse_accept_language",
]

LANGUAGES: Final[tuple[str, ...]] = ("fr", "en", "es", "de", "nl", "it")
# Each language's name in itself, for the language switch.
LANGUAGE_NAMES: Final = {
    "fr": "Français",
    "en": "English",
    "es": "Español",
    "de": "Deutsch",
    "nl": "Nederlands",
    "it": "Italiano",
}
DOMAIN: Final = "portal"
LOCALE_DIR: Final = Path(__file__).parent / "locale"
# A browser sends a handful of languages; a longer header is not worth parsing.
MAX_ACCEPT_LANGUAGE_CHARS: Final = 512
MAX_ACCEPT_LANGUAGE_ITEMS: Final = 32


def load_translations(
    locale_dir: Path = LOCALE_DIR, languages: tuple[str, ...] = LANGUAGES
) -> dict[str, Translations]:
    """Compile each language's ``portal.po`` in memory.

    Args:
        locale_dir: the directory holding ``<lang>/LC_MESSAGES/portal.po``.
        languages: the languages to load.

    Raises:
        OSError: a catalog cannot be read.
        ValueError: a catalog is not valid ``.po`` syntax.
    """
    out: dict[str, Translations] = {}
    for lang in languages:
        path = locale_dir / lang / "LC_MESSAGES" / f"{DOMAIN}.po"
        with path.open("rb") as fh:
            catalog = read_po(fh, locale=lang, domain=DOMAIN, abort_invalid=True)
        buf = io.BytesIO()
        write_mo(buf, catalog)
        buf.seek(0)
        out[lang] = Translations(fp=buf, domain=DOMAIN)
    return out


def parse_accept_language(header: str | None) -> list[str]:
    """Return the primary language subtags of an ``Accept-Language`` header, best first.

    RFC 9110 §12.5.4: items are ``tag;q=weight``; weight 0 means "not acceptable".
    Ties keep the header's order. ``*`` and malformed items are skipped.

    Args:
        header: the header value, or None.
    """
    if not header or len(header) > MAX_ACCEPT_LANGUAGE_CHARS:
        return []
    ranked: list[tuple[float, int, str]] = []
    for index, item in enumerate(header.split(",")[:MAX_ACCEPT_LANGUAGE_ITEMS]):
        tag, _, params = item.partition(";")
        primary = tag.strip().lower().split("-")[0]
        if not primary.isascii() or not primary.isalpha():
            continue
        weight = 1.0
        for param in params.split(";"):
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    weight = float(value.strip())
                except ValueError:
                    weight = 0.0
        if not math.isfinite(weight) or not 0.0 < weight <= 1.0:
            continue
        ranked.append((-weight, index, primary))
    ranked.sort()
    return [primary for _, _, primary in ranked]


def negotiate(
    requested: str | None,
    accept_language: str | None,
    default: str,
    languages: tuple[str, ...] = LANGUAGES,
) -> str:
    """Choose the page language: the explicit choice, then the browser's, then the default.

    Args:
        requested: the ``lang`` query or form field, if any.
        accept_language: the ``Accept-Language`` header, if any.
        default: the portal's default language.
        languages: the languages the portal has.
    """
    if requested is not None and requested.lower() in languages:
        return requested.lower()
    for lang in parse_accept_language(accept_language):
        if lang in languages:
            return lang
    return default if default in languages else languages[0]


def format_duration(minutes: int, translations: Translations) -> str:
    """Say a session length in words: "45 minutes", "24 hours", "7 days 12 hours".

    Up to two days the length is given in hours (a visitor thinks of a day's pass as
    "24 hours"), beyond in days.

    Args:
        minutes: the length in minutes.
        translations: the visitor's catalog.
    """
    ngettext = translations.ngettext
    minutes = max(0, minutes)
    days, rest = divmod(minutes, 24 * 60) if minutes >= 48 * 60 else (0, minutes)
    hours, mins = divmod(rest, 60)
    parts = []
    if days:
        parts.append(ngettext("%(num)d day", "%(num)d days", days) % {"num": days})
    if hours:
        parts.append(ngettext("%(num)d hour", "%(num)d hours", hours) % {"num": hours})
    if mins or not parts:
        parts.append(ngettext("%(num)d minute", "%(num)d minutes", mins) % {"num": mins})
    return " ".join(parts)


def format_bytes(count: int, translations: Translations) -> str:
    """Say a data volume in words with SI units: "850 kB", "1.5 GB" (decimal comma in
    the languages that write one).

    Args:
        count: the volume in bytes.
        translations: the visitor's catalog (its language picks the decimal mark).
    """
    count = max(0, count)
    text, unit = str(count), "B"
    for size, name in ((10**9, "GB"), (10**6, "MB"), (10**3, "kB")):
        if count >= size:
            value = count / size
            text, unit = (f"{value:.1f}" if value < 10 else f"{value:.0f}"), name
            break
    lang = translations.info().get("language", "en")
    if lang != "en":
        text = text.replace(".", ",")
    return f"{text}\u00a0{unit}"
