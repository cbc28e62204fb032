"""RFC 8908 Captive Portal API: the JSON body, and the portal's endpoint over HTTP."""

from __future__ import annotations

import json
from typing import Any

import pytest

from captive_portal._capport import CAPTIVE_JSON, capport_body
from tests.captive_portal.portal_fixtures import AP, CLIENT_IP, logged_in, portal_client
from tests.captive_portal.test_app import FakeBackend

PORTAL = "https://portal.example.org/"


def test_a_captive_client_gets_only_captive_and_the_portal() -> None:
    """Captive: ``captive`` true and the login page; no session keys (RFC 8908 §5)."""
    body = json.loads(
        capport_body(None, user_portal_url=PORTAL, venue_info_url=None, can_extend_session=True)
    )
    assert body == {"captive": True, "user-portal-url": PORTAL}


@pytest.mark.parametrize(
    ("seconds", "left", "expected"),
    [
        (3600, 10**9, {"seconds-remaining": 3600, "bytes-remaining": 10**9}),
        (None, 5, {"bytes-remaining": 5}),
        (42, None, {"seconds-remaining": 42}),
        (None, None, {}),
        (-3, -1, {"seconds-remaining": 0, "bytes-remaining": 0}),
    ],
)
def test_a_logged_in_client_gets_what_is_left(
    seconds: int | None, left: int | None, expected: dict[str, int]
) -> None:
    """Not captive: seconds and bytes left only where limited, never negative, as integers."""
    status = logged_in(seconds=seconds, left=left)
    body = json.loads(
        capport_body(
            status,
            user_portal_url=PORTAL,
            venue_info_url="https://www.rocamadour.fr/",
            can_extend_session=False,
        )
    )
    assert body == {
        "captive": False,
        "user-portal-url": PORTAL,
        "venue-info-url": "https://www.rocamadour.fr/",
        "can-extend-session": False,
        **expected,
    }


@pytest.mark.parametrize("path", ["/capport/api", f"/capport/api/{AP}"])
async def test_the_api_answers_captive_json_before_and_after_login(
    aiohttp_client: Any, path: str
) -> None:
    """The endpoint says captive, then the session's time and data left, as captive+json."""
    backend = FakeBackend()
    client = await portal_client(
        aiohttp_client, backend, venue_info_url="https://www.rocamadour.fr/"
    )
    headers = {"Accept": CAPTIVE_JSON}
    before = await client.get(path, headers=headers)
    assert before.status == 200
    assert before.headers["Content-Type"] == CAPTIVE_JSON
    assert before.headers["Cache-Control"] == "no-store"
    assert json.loads(await before.text()) == {
        "captive": True,
        "user-portal-url": "http://10.46.0.2:8080/",
        "venue-info-url": "https://www.rocamadour.fr/",
    }
    backend.statuses[CLIENT_IP] = logged_in(seconds=1800, left=123_456)
    after = await client.get(path, headers=headers)
    assert json.loads(await after.text()) == {
        "captive": False,
        "user-portal-url": "http://10.46.0.2:8080/status",
        "venue-info-url": "https://www.rocamadour.fr/",
        "can-extend-session": False,
        "seconds-remaining": 1800,
        "bytes-remaining": 123_456,
    }


async def test_the_api_of_another_access_point_says_captive(aiohttp_client: Any) -> None:
    """The per-AP URI only finds sessions on that AP: another AP's client stays captive there."""
    backend = FakeBackend()
    backend.statuses[CLIENT_IP] = logged_in()
    client = await portal_client(aiohttp_client, backend)
    response = await client.get("/capport/api/ap-46201-01")
    assert json.loads(await response.text())["captive"] is True
