"""Per-commune legal texts: validation, language choice, pages, and asking again on a new
version."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from typing import Any

import pytest

from captive_portal._legal import NOTICE_FIELDS, localize, validate_legal
from captive_portal.app import COUNTERS
from captive_portal.models import CommunePolicy
from tests.captive_portal.portal_fixtures import portal_client
from tests.captive_portal.test_app import FakeBackend, state_of, text_of

LEGAL: dict[str, Any] = {
    "terms": {
        "fr": ["Service gratuit offert par la commune de Rocamadour."],
        "en": ["Free service offered by the commune of Rocamadour."],
    },
    "notice": {
        "controller": {"fr": "Mairie de Rocamadour, 46500", "en": "Town hall of Rocamadour"},
        "dpo": "dpo@cdg46.fr",
        "purposes": "Fournir l'accès ; conservation légale",
        "legal_bases": "Mission d'intérêt public ; obligation légale (L34-1 CPCE)",
        "durations": "Données de connexion : 1 an",
        "recipients": "Autorités judiciaires sur réquisition",
        "rights": "Accès, rectification, effacement, opposition",
        "statistics_optout": "Écrire au DPO avec l'adresse MAC de l'appareil",
        "complaint": "CNIL, 3 place de Fontenoy, 75007 Paris, www.cnil.fr",
    },
}


def without(path: tuple[str, ...]) -> dict[str, Any]:
    content = copy.deepcopy(LEGAL)
    node = content
    for key in path[:-1]:
        node = node[key]
    del node[path[-1]]
    return content


@pytest.mark.parametrize("field", NOTICE_FIELDS)
def test_every_art13_field_is_required(field: str) -> None:
    """A notice lacking any GDPR art. 13 field cannot be published; the error names it."""
    with pytest.raises(ValueError, match=f"notice.{field}"):
        validate_legal(without(("notice", field)))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (without(("terms", "fr")), "French"),
        ({**LEGAL, "extra": 1}, "unknown keys"),
        ({**LEGAL, "terms": {"fr": []}}, "paragraphs"),
        ({**LEGAL, "terms": {"fr": ["x" * 3000]}}, "longer"),
        ({**LEGAL, "notice": {**LEGAL["notice"], "dpo": {"en": "x"}}}, "French"),
        ({**LEGAL, "notice": {**LEGAL["notice"], "dpo": {"fr": "x", "xx": "y"}}}, "language"),
        ({**LEGAL, "notice": {**LEGAL["notice"], "dpo": "  "}}, "non-empty"),
        ([], "object"),
    ],
    ids=["no-french-terms", "unknown-key", "no-paragraph", "too-long", "no-french-field",
         "unknown-language", "blank", "not-an-object"],
)  # fmt: skip
def test_malformed_texts_are_refused(content: Any, message: str) -> None:
    """Malformed texts are refused with a message saying what is wrong."""
    with pytest.raises(ValueError, match=message):
        validate_legal(content)


def test_texts_come_in_the_visitor_language_or_french() -> None:
    """English where given, French for the rest; fields keep the art. 13 order."""
    view = localize(validate_legal(LEGAL), "en")
    assert view.terms == ("Free service offered by the commune of Rocamadour.",)
    assert [name for name, _ in view.notice] == list(NOTICE_FIELDS)
    assert dict(view.notice)["controller"] == "Town hall of Rocamadour"
    assert dict(view.notice)["dpo"] == "dpo@cdg46.fr"
    german = localize(LEGAL, "de")
    assert (german.language, german.terms[0]) == ("fr", LEGAL["terms"]["fr"][0])


def policy(**changes: Any) -> CommunePolicy:
    values: dict[str, Any] = {
        "insee": "46201",
        "commune": "Rocamadour",
        "terms_version": "r2",
        "legal": LEGAL,
    }
    values.update(changes)
    return CommunePolicy(**values)


async def test_pages_show_the_commune_texts_and_version(
    aiohttp_client: Any, make_fas: Callable[..., str]
) -> None:
    """The privacy page lists every art. 13 field of the commune; the terms page its terms."""
    backend = FakeBackend()
    backend.commune_policy = policy()
    client = await portal_client(aiohttp_client, backend)
    body = await (await client.get("/fas/", params={"fas": make_fas(), "lang": "en"})).text()
    state = state_of(body)
    privacy = text_of(
        await (await client.get("/privacy", params={"state": state, "lang": "en"})).text()
    )
    assert "Version r2, Rocamadour." in privacy
    for label in (
        "Data controller",
        "Data protection officer",
        "Legal bases",
        "Complaint to the CNIL",
    ):
        assert label in privacy
    assert "dpo@cdg46.fr" in privacy
    assert "CNIL, 3 place de Fontenoy" in privacy
    terms = text_of(
        await (await client.get("/terms", params={"state": state, "lang": "en"})).text()
    )
    assert "Free service offered by the commune of Rocamadour." in terms


async def test_consent_is_never_pre_ticked_and_a_prior_one_is_honoured(
    aiohttp_client: Any, make_fas: Callable[..., str]
) -> None:
    """A device that accepted this version is told so and need not tick again; never pre-ticked."""
    backend = FakeBackend()
    backend.commune_policy = policy(accepted_version="r2", accepted_at=1_800_000_000.0)
    client = await portal_client(aiohttp_client, backend)
    body = await (await client.get("/fas/", params={"fas": make_fas(), "lang": "en"})).text()
    assert "You accepted these terms (version r2) on 15/01/2027." in text_of(body)
    assert not re.search(r"<input[^>]*checked", body)
    response = await client.post(
        "/fas/accept", data={"state": state_of(body), "consent": "prior", "lang": "en"}
    )
    assert response.status == 200
    assert backend.calls[0].terms_version == "r2"


async def test_a_new_version_asks_again(aiohttp_client: Any, make_fas: Callable[..., str]) -> None:
    """A device that accepted an older version sees the box again and "prior" is refused."""
    backend = FakeBackend()
    backend.commune_policy = policy(accepted_version="r1", accepted_at=1_700_000_000.0)
    client = await portal_client(aiohttp_client, backend)
    body = await (await client.get("/fas/", params={"fas": make_fas(), "lang": "en"})).text()
    assert "The terms of use have changed since your last visit." in text_of(body)
    assert 'id="consent"' in body
    refused = await client.post(
        "/fas/accept", data={"state": state_of(body), "consent": "prior", "lang": "en"}
    )
    assert refused.status == 400
    assert backend.calls == []


async def test_texts_published_while_the_page_was_open_are_shown_again(
    aiohttp_client: Any, make_fas: Callable[..., str]
) -> None:
    """A form accepted for r2 after r3 was published is refused and shows r3's form."""
    backend = FakeBackend()
    backend.commune_policy = policy()
    client = await portal_client(aiohttp_client, backend)
    body = await (await client.get("/fas/", params={"fas": make_fas(), "lang": "en"})).text()
    backend.commune_policy = policy(terms_version="r3")
    response = await client.post(
        "/fas/accept", data={"state": state_of(body), "consent": "yes", "lang": "en"}
    )
    assert response.status == 400
    page = await response.text()
    assert "The terms of use have changed." in text_of(page)
    assert state_of(page) != state_of(body)
    assert backend.calls == []
    assert client.app[COUNTERS].terms_changed == 1
    accepted = await client.post(
        "/fas/accept", data={"state": state_of(page), "consent": "yes", "lang": "en"}
    )
    assert accepted.status == 200
    assert backend.calls[0].terms_version == "r3"
