"""A commune's legal texts: terms of use and the GDPR art. 13 notice, validated and
picked in the visitor's language.

The texts are published per commune and per version (``borne portal legal-publish``,
stored by ``captive_portal.store``) as a JSON object::

    {"terms": {"fr": ["paragraph", ...], "en": [...]},
     "notice": {"controller": {"fr": "...", "en": "..."}, "dpo": "...", ...}}

Every notice field of art. 13 GDPR is required (a string, or one string per language):
``controller`` (who is responsible, with contact), ``dpo`` (the data protection
officer's contact), ``purposes``, ``legal_bases``, ``durations``, ``recipients``,
``rights``, ``statistics_optout`` (how to object to the statistics) and ``complaint``
(the CNIL). French is required; a missing language falls back to French.

Pure: no IO.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Final

__all__ = ["NOTICE_FIELDS", "LegalView", "localize", "validate_legal"]

NOTICE_FIELDS: Final = (
    "controller",
    "dpo",
    "purposes",
    "legal_bases",
    "durations",
    "recipients",
    "rights",
    "statistics_optout",
    "complaint",
)
# A notice is read on a phone: bound each text (also bounds the page weight).
MAX_TEXT_CHARS: Final = 2000
MAX_PARAGRAPHS: Final = 20
_LANGS: Final = ("fr", "en", "es", "de", "nl", "it")


@dataclasses.dataclass(frozen=True, slots=True)
class LegalView:
    """The texts to show in one language.

    Attributes:
        terms: the paragraphs of the terms of use.
        notice: ``(field, text)`` in the order of ``NOTICE_FIELDS``.
        language: the language of the texts (French when the visitor's is missing).
    """

    terms: tuple[str, ...]
    notice: tuple[tuple[str, str], ...]
    language: str


def _text(value: object, where: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{where}: a non-empty text is required")
    if len(value) > MAX_TEXT_CHARS:
        raise ValueError(f"{where}: longer than {MAX_TEXT_CHARS} characters")


def _per_language(value: object, where: str, check: Any) -> None:
    if isinstance(value, dict):
        if "fr" not in value:
            raise ValueError(f"{where}: the French text is required")
        for lang, text in value.items():
            if lang not in _LANGS:
                raise ValueError(f"{where}: unknown language {lang!r}")
            check(text, f"{where}.{lang}")
    else:
        check(value, where)


def _paragraphs(value: object, where: str) -> None:
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_PARAGRAPHS:
        raise ValueError(f"{where}: a list of 1 to {MAX_PARAGRAPHS} paragraphs is required")
    for i, text in enumerate(value):
        _text(text, f"{where}[{i}]")


def validate_legal(content: object) -> dict[str, Any]:
    """Check a commune's texts before they are published.

    Raises:
        ValueError: a field is missing, empty, too long, or in an unknown language;
            the message names it.
    """
    if not isinstance(content, dict):
        raise ValueError("the legal texts must be an object with 'terms' and 'notice'")
    unknown = set(content) - {"terms", "notice"}
    if unknown:
        raise ValueError(f"unknown keys: {sorted(unknown)}")
    if "terms" not in content:
        raise ValueError("terms: required")
    terms = content["terms"]
    if not isinstance(terms, dict) or "fr" not in terms:
        raise ValueError("terms: paragraphs per language are required, French included")
    _per_language(terms, "terms", _paragraphs)
    notice = content.get("notice")
    if not isinstance(notice, dict):
        raise ValueError("notice: required")
    for name in NOTICE_FIELDS:
        if name not in notice:
            raise ValueError(f"notice.{name}: required (GDPR art. 13)")
        _per_language(notice[name], f"notice.{name}", _text)
    extra = set(notice) - set(NOTICE_FIELDS)
    if extra:
        raise ValueError(f"notice: unknown fields {sorted(extra)}")
    return content


def _pick(value: Any, lang: str) -> tuple[Any, str]:
    if isinstance(value, dict):
        return (value[lang], lang) if lang in value else (value["fr"], "fr")
    return value, "fr"


def localize(content: dict[str, Any], lang: str) -> LegalView:
    """The texts of validated ``content`` in ``lang`` (French where it is missing)."""
    terms, terms_lang = _pick(content["terms"], lang)
    notice = tuple((name, _pick(content["notice"][name], lang)[0]) for name in NOTICE_FIELDS)
    return LegalView(terms=tuple(terms), notice=notice, language=terms_lang)
