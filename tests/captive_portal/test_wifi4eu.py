"""Tests of captive_portal._wifi4eu and of the login page in WiFi4EU mode."""

from __future__ import annotations

import base64
import hashlib
import re
from typing import Any

import pytest

from captive_portal._pages import CONTENT_SECURITY_POLICY
from captive_portal._wifi4eu import (
    SCRIPT_URL,
    WALLED_GARDEN_HOSTS,
    snippet,
    walled_garden_hosts,
)
from captive_portal.models import CommunePolicy
from controller.config import CommunePortalSettings, PortalSettings
from tests.captive_portal.portal_fixtures import portal_client
from tests.captive_portal.test_app import TERMS_VERSION, FakeBackend

NETWORK_ID = "0c2a8f1e-5b7d-4c1a-9e3f-2d6b8a4c7e90"


def test_snippet_has_the_commission_variables_and_its_own_hash() -> None:
    snip = snippet(NETWORK_ID, "de")
    assert "var wifi4euTimerStart = Date.now();" in snip.inline
    assert f"var wifi4euNetworkIdentifier = '{NETWORK_ID}';" in snip.inline
    assert "var wifi4euLanguage = 'de';" in snip.inline
    assert "selftestModus" not in snip.inline
    assert snip.script_url == "https://collection.wifi4eu.ec.europa.eu/wifi4eu.min.js"
    digest = base64.b64encode(hashlib.sha256(snip.inline.encode()).digest()).decode()
    assert snip.hash_source == f"'sha256-{digest}'"
    assert "var selftestModus = true;" in snippet(NETWORK_ID, "fr", self_test=True).inline


@pytest.mark.parametrize(("network_id", "lang"), [("x'; alert(1); //", "fr"), (NETWORK_ID, "f'")])
def test_snippet_refuses_anything_but_an_identifier_and_a_language(
    network_id: str, lang: str
) -> None:
    with pytest.raises(ValueError, match="malformed"):
        snippet(network_id, lang)


def test_walled_garden_hosts_only_for_wifi4eu_communes() -> None:
    portal = PortalSettings(
        communes={"46042": CommunePortalSettings(wifi4eu_network_id=NETWORK_ID)}
    )
    assert walled_garden_hosts(portal, "46042") == WALLED_GARDEN_HOSTS
    assert set(WALLED_GARDEN_HOSTS) == {
        "collection.wifi4eu.ec.europa.eu",
        "wifi4eucollectorprod.azurewebsites.net",
    }
    assert walled_garden_hosts(portal, "46102") == ()
    assert walled_garden_hosts(portal, None) == ()


async def test_login_page_carries_the_snippet_and_a_csp_for_exactly_it(
    aiohttp_client: Any, make_fas: Any
) -> None:
    """In a WiFi4EU commune the login page has the snippet in the page's language and a
    CSP allowing only its inline hash and the Commission's script; elsewhere no script
    at all and the strict policy."""
    backend = FakeBackend()
    backend.commune_policy = CommunePolicy(
        insee="46042", commune="Cahors", terms_version=TERMS_VERSION
    )
    portal = {"46042": CommunePortalSettings(wifi4eu_network_id=NETWORK_ID)}
    client = await portal_client(aiohttp_client, backend, communes=portal)
    page = await client.get("/fas/", params={"fas": make_fas(), "lang": "it"})
    body = await page.text()
    inline = re.findall(r"<script>(.*?)</script>", body, re.S)
    assert inline == [snippet(NETWORK_ID, "it").inline]
    assert re.findall(r'<script src="([^"]+)"', body) == [SCRIPT_URL]
    csp = page.headers["Content-Security-Policy"]
    assert csp.startswith(CONTENT_SECURITY_POLICY)
    scripts = re.search(r"script-src ([^;]+)", csp)
    assert scripts is not None
    assert scripts.group(1).split() == [snippet(NETWORK_ID, "it").hash_source, SCRIPT_URL]
    assert "'unsafe-inline'" not in scripts.group(1)
    assert len(body.encode()) < 30_000
    terms = await client.get("/terms")
    assert terms.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY

    backend.commune_policy = CommunePolicy(
        insee="46102", commune="Figeac", terms_version=TERMS_VERSION
    )
    plain = await client.get("/fas/", params={"fas": make_fas(), "lang": "it"})
    assert "<script" not in await plain.text()
    assert plain.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
