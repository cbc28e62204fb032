"""Tests of captive_portal._i18n: catalogs, language choice, durations."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po
from babel.support import Translations

from captive_portal._i18n import (
    LANGUAGES,
    LOCALE_DIR,
    format_bytes,
    format_duration,
    load_translations,
    negotiate,
    parse_accept_language,
)

PACKAGE_DIR = Path(__file__).parents[2] / "captive_portal"
_PLACEHOLDER = re.compile(r"%\((\w+)\)[sd]")


@pytest.fixture(scope="module")
def translations() -> dict[str, Translations]:
    return load_translations()


def _source_messages() -> set[str | tuple[str, str]]:
    method_map = [("**.py", "python"), ("templates/**.html", "jinja2.ext:babel_extract")]
    found: set[str | tuple[str, str]] = set()
    for _file, _line, message, _comments, _context in extract_from_dir(
        PACKAGE_DIR, method_map=method_map
    ):
        found.add(message if isinstance(message, str) else (message[0], message[1]))
    return found


@pytest.mark.parametrize("lang", [lang for lang in LANGUAGES if lang != "en"])
def test_every_source_string_is_translated(lang: str) -> None:
    """Each string of the code and templates is in <lang>/portal.po, translated, not fuzzy,
    with the same placeholders."""
    with (LOCALE_DIR / lang / "LC_MESSAGES" / "portal.po").open("rb") as fh:
        catalog = read_po(fh, locale=lang)
    entries = {m.id: m for m in catalog if m.id}
    source = _source_messages()
    assert source, "extraction found nothing"
    missing = [m for m in source if m not in entries]
    assert missing == []
    for msgid in source:
        entry = entries[msgid]
        assert not entry.fuzzy, msgid
        strings = [
            str(s) for s in (entry.string if isinstance(entry.string, tuple) else [entry.string])
        ]
        assert all(strings), f"untranslated: {msgid!r}"
        ids = msgid if isinstance(msgid, tuple) else (msgid,)
        expected = set(_PLACEHOLDER.findall(str(ids[0])))
        for text in strings:
            assert set(_PLACEHOLDER.findall(text)) == expected, msgid


def test_catalogs_hold_no_stale_strings() -> None:
    """Every catalog entry is still used by the code or the templates."""
    source = _source_messages()
    for lang in LANGUAGES:
        with (LOCALE_DIR / lang / "LC_MESSAGES" / "portal.po").open("rb") as fh:
            catalog = read_po(fh, locale=lang)
        stale = [m.id for m in catalog if m.id and m.id not in source]
        assert stale == [], lang


def test_no_compiled_catalog_is_shipped() -> None:
    """Catalogs are compiled in memory: no .mo file lives in the package."""
    assert list(LOCALE_DIR.rglob("*.mo")) == []


def test_catalogs_load_for_every_language(translations: dict[str, Translations]) -> None:
    """Every language loads; each translates, English falls back to the source."""
    assert set(translations) == set(LANGUAGES)
    assert {lang: translations[lang].gettext("Connect") for lang in LANGUAGES} == {
        "fr": "Se connecter",
        "en": "Connect",
        "es": "Conectarse",
        "de": "Verbinden",
        "nl": "Verbinden",
        "it": "Connettiti",
    }


ACCEPT_CASES: list[tuple[str | None, list[str]]] = [
    (None, []),
    ("", []),
    ("fr", ["fr"]),
    ("en-GB,en;q=0.9,fr;q=0.8", ["en", "en", "fr"]),
    ("fr;q=0.5, en", ["en", "fr"]),
    ("de-DE, nl;q=0.7, en;q=0.3", ["de", "nl", "en"]),
    ("*", []),
    ("en;q=0, fr", ["fr"]),
    ("en;q=nan, fr;q=inf, de;q=2, nl;q=abc, es", ["es"]),
    ("FR-fr", ["fr"]),
    ("x" * 600, []),
]


@pytest.mark.parametrize(("header", "expected"), ACCEPT_CASES)
def test_accept_language_parsing(header: str | None, expected: list[str]) -> None:
    """Languages come out best first; q=0, '*', malformed weights and huge headers are ignored."""
    assert parse_accept_language(header) == expected


NEGOTIATE_CASES: list[tuple[str | None, str | None, str, str]] = [
    (None, None, "fr", "fr"),
    (None, None, "en", "en"),
    ("en", "fr", "fr", "en"),
    ("EN", None, "fr", "en"),
    ("de", "en", "fr", "de"),
    ("pt", "en", "fr", "en"),
    (None, "de, en;q=0.5", "fr", "de"),
    (None, "pt, ja;q=0.8, nl;q=0.5", "fr", "nl"),
    (None, "pt, ja", "fr", "fr"),
    (None, "it-IT", "en", "it"),
    (None, "es-419, en;q=0.3", "fr", "es"),
    (None, "en-US,fr;q=0.9", "fr", "en"),
]


@pytest.mark.parametrize(("requested", "header", "default", "expected"), NEGOTIATE_CASES)
def test_language_choice(
    requested: str | None, header: str | None, default: str, expected: str
) -> None:
    """The explicit choice wins, then the first supported browser language, then the default."""
    assert negotiate(requested, header, default) == expected


DURATION_CASES: list[tuple[int, str, str]] = [
    (0, "0 minute", "0 minutes"),
    (1, "1 minute", "1 minute"),
    (45, "45 minutes", "45 minutes"),
    (60, "1 heure", "1 hour"),
    (90, "1 heure 30 minutes", "1 hour 30 minutes"),
    (1440, "24 heures", "24 hours"),
    (2880, "2 jours", "2 days"),
    (10080, "7 jours", "7 days"),
    (3 * 1440 + 120, "3 jours 2 heures", "3 days 2 hours"),
]


@pytest.mark.parametrize(("minutes", "fr", "en"), DURATION_CASES)
def test_durations_in_words(
    translations: dict[str, Translations], minutes: int, fr: str, en: str
) -> None:
    """Session lengths read naturally in both languages (hours up to two days)."""
    assert format_duration(minutes, translations["fr"]) == fr
    assert format_duration(minutes, translations["en"]) == en


@pytest.mark.parametrize(
    ("count", "en", "fr"),
    [
        (0, "0\u00a0B", "0\u00a0B"),
        (999, "999\u00a0B", "999\u00a0B"),
        (1500, "1.5\u00a0kB", "1,5\u00a0kB"),
        (250_000_000, "250\u00a0MB", "250\u00a0MB"),
        (1_234_567_890, "1.2\u00a0GB", "1,2\u00a0GB"),
        (-5, "0\u00a0B", "0\u00a0B"),
    ],
)
def test_volumes_in_words(
    count: int, en: str, fr: str, translations: dict[str, Translations]
) -> None:
    """Volumes use SI units, a decimal comma outside English, never a negative."""
    assert format_bytes(count, translations["en"]) == en
    assert format_bytes(count, translations["fr"]) == fr
