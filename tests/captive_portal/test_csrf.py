"""Anti-forgery tokens, and the status page's log-out form that needs one."""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from typing import Any

import pytest

from captive_portal._csrf import CSRF_TTL_S, check_token, make_token
from captive_portal.app import COUNTERS
from captive_portal.errors import StateExpired, StateInvalid
from captive_portal.models import LogoutResult
from tests.captive_portal.portal_fixtures import AP, CLIENT_IP, logged_in, portal_client
from tests.captive_portal.test_app import FakeBackend, FakeClock, state_of, text_of

KEY = "k" * 32
SUBJECT = ("ap-1", "aa:bb:cc:dd:ee:01", "10.46.1.23")


def test_a_token_is_accepted_for_its_action_and_subject_until_it_expires() -> None:
    """A token works for the same action and client, and not after its expiry."""
    token = make_token(KEY, "logout", SUBJECT, now=1000.0)
    check_token(token, KEY, "logout", SUBJECT, now=1000.0 + CSRF_TTL_S)
    with pytest.raises(StateExpired):
        check_token(token, KEY, "logout", SUBJECT, now=1001.0 + CSRF_TTL_S)


@pytest.mark.parametrize(
    ("token_of", "action", "subject", "key"),
    [
        (lambda t: t, "extend", SUBJECT, KEY),
        (lambda t: t, "logout", ("ap-1", "aa:bb:cc:dd:ee:02", "10.46.1.23"), KEY),
        (lambda t: t, "logout", SUBJECT, "another key"),
        (lambda t: "9" + t, "logout", SUBJECT, KEY),
        (lambda t: t[:-2], "logout", SUBJECT, KEY),
        (lambda t: "", "logout", SUBJECT, KEY),
        (lambda t: "no-dot", "logout", SUBJECT, KEY),
        (lambda t: t + "é", "logout", SUBJECT, KEY),
    ],
    ids=[
        "other-action",
        "other-client",
        "other-key",
        "later-expiry",
        "cut",
        "empty",
        "bad",
        "utf8",
    ],
)
def test_a_forged_or_misused_token_is_refused(
    token_of: Any, action: str, subject: tuple[str, ...], key: str
) -> None:
    """Another action, client or key, a changed expiry or a damaged token is refused."""
    token = token_of(make_token(KEY, "logout", SUBJECT, now=1000.0))
    with pytest.raises(StateInvalid):
        check_token(token, key, action, subject, now=1000.0)


def csrf_of(body: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', body)
    assert match is not None, "no csrf token in the page"
    return html.unescape(match.group(1))


async def test_status_page_shows_time_and_data_left_in_the_visitor_language(
    aiohttp_client: Any,
) -> None:
    """The status page says time left, data left and data used, in the chosen language."""
    backend = FakeBackend()
    backend.statuses[CLIENT_IP] = logged_in(seconds=2 * 3600 + 59, left=250_000_000, used=1_500_000)
    client = await portal_client(aiohttp_client, backend)
    fr = text_of(await (await client.get("/status")).text())
    assert "Temps restant 2 heures" in fr
    assert "Données restantes 250 MB" in fr
    assert "Données utilisées 1,5 MB" in fr
    de = text_of(await (await client.get("/status", params={"lang": "de"})).text())
    assert "Verbleibende Zeit 2 Stunden" in de
    unlimited = FakeBackend()
    unlimited.statuses[CLIENT_IP] = logged_in(seconds=None, left=None)
    client2 = await portal_client(aiohttp_client, unlimited)
    en = text_of(await (await client2.get("/status", params={"lang": "en"})).text())
    assert "Time left No time limit" in en
    assert "Data left No data limit" in en


async def test_status_page_of_a_client_without_session(aiohttp_client: Any) -> None:
    """A client that is not logged in is told so, with no log-out form."""
    client = await portal_client(aiohttp_client, FakeBackend())
    body = await (await client.get("/status", params={"lang": "en"})).text()
    assert "You are not connected" in text_of(body)
    assert 'name="csrf"' not in body


async def test_opennds_authenticated_redirect_shows_the_status_page(aiohttp_client: Any) -> None:
    """openNDS's ``status=authenticated`` return lands on the status page."""
    backend = FakeBackend()
    backend.statuses[CLIENT_IP] = logged_in()
    client = await portal_client(aiohttp_client, backend)
    response = await client.get(
        "/fas/", params={"status": "authenticated", "gatewayname": AP, "lang": "en"}
    )
    assert "Time left" in text_of(await response.text())


async def test_log_out_with_the_page_token_deauthorizes_the_client(aiohttp_client: Any) -> None:
    """The status page's button cuts this client off through the backend."""
    backend = FakeBackend()
    backend.statuses[CLIENT_IP] = logged_in()
    client = await portal_client(aiohttp_client, backend)
    token = csrf_of(await (await client.get("/status")).text())
    response = await client.post(
        "/logout", data={"csrf": token, "ap": AP, "lang": "en"}, headers={"Origin": "null"}
    )
    assert response.status == 200
    assert "You are logged out" in text_of(await response.text())
    assert backend.logouts == [(AP, "aa:bb:cc:dd:ee:01")]
    assert client.app[COUNTERS].logouts == 1


@pytest.mark.parametrize("token", [None, "", "1.abc"], ids=["missing", "empty", "forged"])
async def test_log_out_without_a_valid_token_is_refused(
    aiohttp_client: Any, token: str | None
) -> None:
    """A cross-site form (no or a forged token) logs nobody out: 403, counted."""
    backend = FakeBackend()
    backend.statuses[CLIENT_IP] = logged_in()
    client = await portal_client(aiohttp_client, backend)
    data = {"ap": AP} if token is None else {"ap": AP, "csrf": token}
    response = await client.post("/logout", data=data)
    assert response.status == 403
    assert backend.logouts == []
    assert client.app[COUNTERS].bad_csrf == 1


async def test_an_expired_token_is_refused(aiohttp_client: Any) -> None:
    """A status page left open longer than the token's validity must be reloaded."""
    backend = FakeBackend()
    backend.statuses[CLIENT_IP] = logged_in()
    clock = FakeClock()
    client = await portal_client(aiohttp_client, backend, clock)
    token = csrf_of(await (await client.get("/status")).text())
    clock.now += CSRF_TTL_S + 1
    response = await client.post("/logout", data={"csrf": token, "ap": AP})
    assert response.status == 403
    assert backend.logouts == []


async def test_a_refused_log_out_says_so(aiohttp_client: Any) -> None:
    """When the access point does not confirm, the page says the log-out failed (503)."""
    backend = FakeBackend()
    backend.statuses[CLIENT_IP] = logged_in()
    backend.logout_result = LogoutResult(ok=False, error="access point did not answer")
    client = await portal_client(aiohttp_client, backend)
    token = csrf_of(await (await client.get("/status")).text())
    response = await client.post("/logout", data={"csrf": token, "ap": AP, "lang": "en"})
    assert response.status == 503
    assert "Log-out failed" in text_of(await response.text())
    assert client.app[COUNTERS].logout_refused == 1


async def test_every_page_is_light_and_sends_the_security_headers(
    aiohttp_client: Any, make_fas: Callable[..., str]
) -> None:
    """Login, legal, status and message pages weigh under 30 KB and carry strict headers."""
    backend = FakeBackend()
    backend.statuses[CLIENT_IP] = logged_in()
    client = await portal_client(aiohttp_client, backend)
    first = await client.get("/fas/", params={"fas": make_fas()})
    state = state_of(await first.text())
    pages = [
        ("/fas/", {"fas": make_fas()}),
        ("/fas/", {"state": state, "lang": "de"}),
        ("/terms", {"state": state}),
        ("/privacy", {"state": state, "lang": "it"}),
        ("/status", {"lang": "nl"}),
        ("/", {"lang": "es"}),
        ("/nowhere", {}),
    ]
    for path, params in pages:
        response = await client.get(path, params=params)
        body = await response.read()
        assert len(body) < 30 * 1024, (path, len(body))
        headers = response.headers
        assert "script-src" not in headers["Content-Security-Policy"]
        assert headers["Content-Security-Policy"].startswith("default-src 'none'")
        assert headers["X-Frame-Options"] == "DENY"
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["Referrer-Policy"] == "no-referrer"
        assert "Set-Cookie" not in headers
        assert b"<script" not in body.lower()
