"""Tests of the captive portal application over real HTTP (aiohttp test server)."""

from __future__ import annotations

import html
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pydantic import SecretStr

from captive_portal._fas import STATE_TTL_S
from captive_portal.app import COUNTERS, create_app, portal_routes
from captive_portal.models import (
    ClientStatus,
    CommunePolicy,
    LoginRequest,
    LoginResult,
    LogoutResult,
)
from controller.config import PortalSettings, SessionSettings, Settings

FAS_KEY = "test-fas-key"
TERMS_VERSION = "2026-11-01"
MAC = "aa:bb:cc:dd:ee:01"

Client = TestClient[web.Request, web.Application]
MakeClient = Callable[..., Awaitable[Client]]


class FakeBackend:
    """Stands in for the controller: records each request, answers as configured.

    ``statuses`` maps a client IP to its open session (the controller's own lookup is
    tested against a real database in tests/controller/test_portal_backend.py).
    """

    def __init__(self) -> None:
        self.calls: list[LoginRequest] = []
        self.result = LoginResult(ok=True, session_minutes=24 * 60, error=None)
        self.crash: Exception | None = None
        self.statuses: dict[str, ClientStatus] = {}
        self.logouts: list[tuple[str, str]] = []
        self.logout_result = LogoutResult(ok=True)
        self.commune_policy: CommunePolicy | None = None
        self.codes: dict[str, int] = {}
        self.extends: list[tuple[str, str]] = []
        self.extend_result = LoginResult(ok=True, session_minutes=24 * 60)

    async def policy(self, ap_id: str, client_mac: str | None) -> CommunePolicy | None:
        return self.commune_policy

    async def client_status(self, client_ip: str, ap_id: str | None) -> ClientStatus | None:
        status = self.statuses.get(client_ip)
        if status is None or (ap_id is not None and status.ap_id != ap_id):
            return None
        return status

    async def deauthorize(self, ap_id: str, client_mac: str) -> LogoutResult:
        self.logouts.append((ap_id, client_mac))
        if self.logout_result.ok:
            self.statuses = {
                ip: s
                for ip, s in self.statuses.items()
                if (s.ap_id, s.client_mac) != (ap_id, client_mac)
            }
        return self.logout_result

    async def extend(self, ap_id: str, client_mac: str) -> LoginResult:
        self.extends.append((ap_id, client_mac))
        return self.extend_result

    async def authorize(self, request: LoginRequest) -> LoginResult:
        self.calls.append(request)
        if self.crash is not None:
            raise self.crash
        if request.method == "voucher":
            minutes = self.codes.get(request.code or "")
            if minutes is None:
                return LoginResult(ok=False, session_minutes=0, error="bad code", bad_code=True)
            return LoginResult(ok=True, session_minutes=minutes)
        return self.result


class FakeClock:
    """A settable clock."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def settings_for(**portal: Any) -> Settings:
    """Settings of a portal at ``http://10.46.0.2:8080/fas/`` (``portal`` overrides)."""
    values: dict[str, Any] = {
        "public_url": "http://10.46.0.2:8080/fas/",
        "fas_key": SecretStr(FAS_KEY),
        "terms_version": TERMS_VERSION,
        **portal,
    }
    return Settings(portal=PortalSettings(**values), sessions=SessionSettings())


@pytest.fixture
def settings() -> Settings:
    return settings_for()


@pytest.fixture
def backend() -> FakeBackend:
    return FakeBackend()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def app(settings: Settings, backend: FakeBackend, clock: FakeClock) -> web.Application:
    return create_app(settings, backend, clock=clock)


@pytest.fixture
async def client(app: web.Application, aiohttp_client: Any) -> Client:
    result: Client = await aiohttp_client(app)
    return result


def text_of(body: str) -> str:
    """The page's visible text, entities decoded and whitespace collapsed."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", body)).split())


def state_of(body: str) -> str:
    match = re.search(r'name="state" value="([^"]+)"', body)
    assert match is not None, "no state in the page"
    return html.unescape(match.group(1))


async def login_page(client: Client, fas: str, **headers: str) -> tuple[int, str]:
    response = await client.get("/fas/", params={"fas": fas}, headers=headers)
    return response.status, await response.text()


# -- the click-through page -------------------------------------------------------------------


async def test_page_is_french_by_default_with_an_unticked_checkbox(
    client: Client, make_fas: Callable[..., str]
) -> None:
    """Without a language hint the page is French, with a required, unticked consent box."""
    status, body = await login_page(client, make_fas())
    assert status == 200
    assert '<html lang="fr">' in body
    text = text_of(body)
    assert "J'accepte les conditions d'utilisation" in text
    assert "Se connecter" in text
    checkbox = re.search(r"<input[^>]*type=\"checkbox\"[^>]*>", body)
    assert checkbox is not None
    assert "checked" not in checkbox.group(0)
    assert "required" in checkbox.group(0)
    assert 'id="consent"' in checkbox.group(0)
    assert '<label for="consent">' in body


async def test_page_is_english_with_accept_language_en(
    client: Client, make_fas: Callable[..., str]
) -> None:
    """An English browser gets the English page."""
    status, body = await login_page(client, make_fas(), **{"Accept-Language": "en-GB,en;q=0.9"})
    assert status == 200
    assert '<html lang="en">' in body
    assert "I accept the terms of use" in text_of(body)


async def test_lang_query_wins_over_accept_language(
    client: Client, make_fas: Callable[..., str]
) -> None:
    """``?lang=`` overrides the browser's languages."""
    response = await client.get(
        "/fas/", params={"fas": make_fas(), "lang": "fr"}, headers={"Accept-Language": "en"}
    )
    assert '<html lang="fr">' in await response.text()


async def test_page_links_terms_and_privacy_and_shows_the_network(
    client: Client, make_fas: Callable[..., str], settings: Settings
) -> None:
    """The page names the network and links both summaries in the same window."""
    _, body = await login_page(client, make_fas())
    text = text_of(body)
    assert settings.portal.network_name in text
    assert "Conditions d'utilisation (résumé)" in text
    assert "Protection des données personnelles (résumé)" in text
    assert re.search(r'href="/terms\?lang=fr&amp;state=', body)
    assert re.search(r'href="/privacy\?lang=fr&amp;state=', body)
    assert "target=" not in body


async def test_language_switch_keeps_the_state(
    client: Client, make_fas: Callable[..., str]
) -> None:
    """The EN link of the switch reopens the same login in English."""
    _, body = await login_page(client, make_fas())
    state = state_of(body)
    links = re.findall(r'<a href="([^"]+)" hreflang="(\w+)"', body)
    assert {code for _, code in links} == {"fr", "en", "es", "de", "nl", "it"}
    english = html.unescape(next(href for href, code in links if code == "en"))
    response = await client.get(english)
    body_en = await response.text()
    assert response.status == 200
    assert '<html lang="en">' in body_en
    assert state_of(body_en) == state


async def test_page_is_light_and_self_contained(
    client: Client, make_fas: Callable[..., str]
) -> None:
    """No script, no external resource, no cookie, a viewport, inline CSS under 4 KB."""
    response = await client.get("/fas/", params={"fas": make_fas()})
    body = await response.text()
    assert "Set-Cookie" not in response.headers
    assert "<script" not in body.lower()
    assert " src=" not in body
    assert not re.search(r'(href|action)="(https?:)?//', body)
    assert 'name="viewport"' in body
    style = re.search(r"<style>(.*)</style>", body, re.S)
    assert style is not None
    assert len(style.group(1).encode()) < 4096


@pytest.mark.parametrize(
    "params",
    [{}, {"fas": "not base64!"}, {"fas": "aGVsbG8="}, {"state": "v1.forged.sig"}],
    ids=["missing", "not-base64", "not-a-list", "forged-state"],
)
async def test_bad_query_gets_a_plain_400_in_the_visitor_language(
    client: Client, app: web.Application, params: dict[str, str]
) -> None:
    """A missing or invalid fas (or state) gets a 400 page in the browser's language."""
    response = await client.get("/fas/", params=params, headers={"Accept-Language": "en"})
    body = await response.text()
    assert response.status == 400
    assert '<html lang="en">' in body
    assert "Traceback" not in body
    assert "Open any web page" in text_of(body)
    snapshot = app[COUNTERS].snapshot()
    assert snapshot["bad_fas"] + snapshot["tampered_state"] == 1


async def test_invalid_fas_is_counted(client: Client, app: web.Application) -> None:
    """Each refused FAS query adds one to ``bad_fas``."""
    for _ in range(3):
        await client.get("/fas/", params={"fas": "@@@"})
    assert app[COUNTERS].snapshot()["bad_fas"] == 3


async def test_already_authenticated_client_is_told_so(client: Client) -> None:
    """openNDS's ``status=authenticated`` redirect shows a 200 'already connected' page."""
    response = await client.get(
        "/fas/", params={"clientip": "10.46.1.23", "gatewayname": "x", "status": "authenticated"}
    )
    assert response.status == 200
    assert "Cet appareil est déjà connecté" in text_of(await response.text())


# -- the consent form -------------------------------------------------------------------------


async def submit(client: Client, state: str, **fields: str) -> tuple[int, str]:
    response = await client.post("/fas/accept", data={"state": state, **fields})
    return response.status, await response.text()


async def test_post_without_consent_is_refused_and_backend_not_called(
    client: Client, make_fas: Callable[..., str], backend: FakeBackend, app: web.Application
) -> None:
    """Without the box ticked: 400, the form again with an error, no authorisation."""
    _, page = await login_page(client, make_fas())
    state = state_of(page)
    status, body = await submit(client, state, lang="fr")
    assert status == 400
    assert backend.calls == []
    assert "Veuillez cocher la case" in text_of(body)
    assert state_of(body) == state
    assert 'aria-invalid="true"' in body
    assert app[COUNTERS].snapshot()["missing_consent"] == 1


@pytest.mark.parametrize("consent", ["", "no", "on"])
async def test_only_the_checkbox_value_counts_as_consent(
    client: Client, make_fas: Callable[..., str], backend: FakeBackend, consent: str
) -> None:
    """Any consent value other than the checkbox's own is not consent."""
    _, page = await login_page(client, make_fas())
    status, _ = await submit(client, state_of(page), consent=consent)
    assert status == 400
    assert backend.calls == []


async def test_post_with_consent_authorises_once_and_shows_success(
    client: Client, make_fas: Callable[..., str], backend: FakeBackend, app: web.Application
) -> None:
    """With consent: one authorize call with the FAS fields, then the French success page."""
    _, page = await login_page(client, make_fas(clientmac="AA:BB:CC:DD:EE:01"))
    status, body = await submit(client, state_of(page), consent="yes", lang="fr")
    assert status == 200
    assert backend.calls == [
        LoginRequest(
            ap_id="lot-cahors-01",
            client_mac=MAC,
            client_ip="10.46.1.23",
            method="click-through",
            terms_version=TERMS_VERSION,
            language="fr",
        )
    ]
    text = text_of(body)
    assert "Vous êtes connecté·e" in text
    assert "24 heures" in text
    assert app[COUNTERS].snapshot()["logins"] == 1


async def test_success_page_in_english_shows_the_granted_length(
    client: Client, make_fas: Callable[..., str], backend: FakeBackend
) -> None:
    """The success page follows the form's language and the backend's session length."""
    backend.result = LoginResult(ok=True, session_minutes=90, error=None)
    _, page = await login_page(client, make_fas())
    status, body = await submit(client, state_of(page), consent="yes", lang="en")
    assert status == 200
    assert backend.calls[0].language == "en"
    assert "You are connected" in text_of(body)
    assert "1 hour 30 minutes" in text_of(body)


async def test_success_page_links_back_to_the_origin_but_not_to_a_probe(
    client: Client, make_fas: Callable[..., str]
) -> None:
    """The 'continue' link goes to the page asked for, unless it was an OS probe URL."""
    _, page = await login_page(client, make_fas())
    _, body = await submit(client, state_of(page), consent="yes")
    assert 'href="http://example.org/visit?day=1"' in body
    probe = "http%3a%2f%2fcaptive.apple.com%2fhotspot-detect.html"
    _, page = await login_page(client, make_fas(originurl=probe))
    _, body = await submit(client, state_of(page), consent="yes")
    assert "captive.apple.com" not in body


async def test_tampered_state_is_refused_and_counted(
    client: Client, make_fas: Callable[..., str], backend: FakeBackend, app: web.Application
) -> None:
    """A state changed by the browser: 400, counted, no authorisation."""
    _, page = await login_page(client, make_fas())
    state = state_of(page)
    tampered = state[:12] + ("A" if state[12] != "A" else "B") + state[13:]
    status, body = await submit(client, tampered, consent="yes")
    assert status == 400
    assert backend.calls == []
    assert "Traceback" not in body
    assert app[COUNTERS].snapshot()["tampered_state"] == 1


async def test_missing_state_is_refused(
    client: Client, backend: FakeBackend, app: web.Application
) -> None:
    """A POST without a state: 400, counted as tampered, no authorisation."""
    response = await client.post("/fas/accept", data={"consent": "yes"})
    assert response.status == 400
    assert backend.calls == []
    assert app[COUNTERS].snapshot()["tampered_state"] == 1


async def test_expired_state_is_refused_and_counted(
    client: Client,
    make_fas: Callable[..., str],
    backend: FakeBackend,
    clock: FakeClock,
    app: web.Application,
) -> None:
    """A form posted after the state's validity: 400, counted as expired, no authorisation."""
    _, page = await login_page(client, make_fas())
    clock.now += STATE_TTL_S + 1
    status, body = await submit(client, state_of(page), consent="yes")
    assert status == 400
    assert backend.calls == []
    assert "Cette page de connexion a expiré" in text_of(body)
    assert app[COUNTERS].snapshot()["expired_state"] == 1


async def test_refusal_shows_an_error_with_a_retry_button(
    client: Client, make_fas: Callable[..., str], backend: FakeBackend, app: web.Application
) -> None:
    """``ok=False`` shows a clear error in the visitor's language and a retry form."""
    backend.result = LoginResult(ok=False, session_minutes=0, error="ack timeout")
    _, page = await login_page(client, make_fas())
    state = state_of(page)
    status, body = await submit(client, state, consent="yes", lang="en")
    assert status == 503
    assert "The hotspot could not connect your device" in text_of(body)
    assert "ack timeout" not in body
    assert state_of(body) == state
    assert 'name="consent" value="yes"' in body
    assert "Try again" in text_of(body)
    backend.result = LoginResult(ok=True, session_minutes=60, error=None)
    status, _ = await submit(client, state, consent="yes", lang="en")
    assert status == 200
    assert len(backend.calls) == 2
    assert app[COUNTERS].snapshot()["authorize_refused"] == 1


async def test_backend_crash_shows_an_error_page_not_a_traceback(
    client: Client, make_fas: Callable[..., str], backend: FakeBackend, app: web.Application
) -> None:
    """A backend that raises despite its contract gets the same error page, counted."""
    backend.crash = RuntimeError("broker gone")
    _, page = await login_page(client, make_fas())
    status, body = await submit(client, state_of(page), consent="yes")
    assert status == 503
    assert "broker gone" not in body
    assert "Traceback" not in body
    assert "La borne n'a pas pu connecter votre appareil" in text_of(body)
    assert app[COUNTERS].snapshot()["authorize_crashed"] == 1


async def test_logs_never_hold_the_full_mac(
    client: Client, make_fas: Callable[..., str], caplog: pytest.LogCaptureFixture
) -> None:
    """A whole login, refused then accepted, logs no client MAC address."""
    caplog.set_level(logging.DEBUG, logger="captive_portal")
    _, page = await login_page(client, make_fas())
    await submit(client, state_of(page))
    await submit(client, state_of(page), consent="yes")
    await client.get("/fas/", params={"fas": make_fas(clientmac="AA-BB-CC-DD-EE-01")})
    assert caplog.records
    logged = caplog.text.lower()
    assert MAC not in logged
    assert "aa-bb-cc-dd-ee-01" not in logged


# -- other pages and headers --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "marker"),
    [("/terms", "Conditions d'utilisation"), ("/privacy", "Protection des données personnelles")],
)
async def test_legal_pages_are_summaries_with_the_terms_version(
    client: Client, path: str, marker: str
) -> None:
    """Terms and privacy pages say they are summaries and give the terms version."""
    response = await client.get(path)
    text = text_of(await response.text())
    assert response.status == 200
    assert marker in text
    assert f"Résumé, version {TERMS_VERSION}" in text


async def test_legal_page_leads_back_to_the_login(
    client: Client, make_fas: Callable[..., str]
) -> None:
    """Opened from the form, a legal page links back to the same login, same language."""
    _, page = await login_page(client, make_fas())
    state = state_of(page)
    response = await client.get("/privacy", params={"state": state, "lang": "en"})
    body = await response.text()
    assert "Privacy notice" in text_of(body)
    back = re.search(r'<a class="btn" href="([^"]+)"', body)
    assert back is not None
    response = await client.get(html.unescape(back.group(1)))
    body = await response.text()
    assert '<html lang="en">' in body
    assert state_of(body) == state


async def test_healthz_answers_ok(client: Client) -> None:
    """``GET /healthz`` answers 200 ok."""
    response = await client.get("/healthz")
    assert response.status == 200
    assert await response.text() == "ok"


async def test_unknown_path_gets_a_page_in_the_visitor_language(client: Client) -> None:
    """A 404 is a portal page in the browser's language."""
    response = await client.get("/nowhere", headers={"Accept-Language": "en"})
    assert response.status == 404
    assert "This page does not exist" in text_of(await response.text())


@pytest.mark.parametrize(
    ("method", "path", "params"),
    [
        ("GET", "/fas/", "fas"),
        ("GET", "/fas/", None),
        ("POST", "/fas/accept", None),
        ("GET", "/fas/accept", None),
        ("GET", "/terms", None),
        ("GET", "/privacy", None),
        ("GET", "/healthz", None),
        ("GET", "/nowhere", None),
    ],
)
async def test_every_response_forbids_caching_and_closes_the_connection(
    client: Client,
    make_fas: Callable[..., str],
    method: str,
    path: str,
    params: str | None,
) -> None:
    """``Cache-Control: no-store`` and ``Connection: close`` on every portal response."""
    query = {"fas": make_fas()} if params else None
    response = await client.request(method, path, params=query)
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Connection"] == "close"
    assert "Set-Cookie" not in response.headers


@pytest.mark.parametrize(
    ("public_url", "fas", "accept"),
    [
        ("http://10.46.0.2:8080/fas/", "/fas/", "/fas/accept"),
        ("https://portal.example.org/", "/", "/accept"),
        ("http://10.46.0.2:8080", "/", "/accept"),
        ("http://10.46.0.2/wifi/login", "/wifi/login", "/wifi/login/accept"),
    ],
)
def test_routes_follow_the_public_url(public_url: str, fas: str, accept: str) -> None:
    """The FAS path is the public URL's path; the form posts to ``accept`` below it."""
    routes = portal_routes(public_url)
    assert (routes.fas, routes.accept) == (fas, accept)


async def test_portal_serves_a_custom_faspath(
    aiohttp_client: Any, settings: Settings, backend: FakeBackend, make_fas: Callable[..., str]
) -> None:
    """With another public URL the page and the form live under its path."""
    portal = settings.portal.model_copy(update={"public_url": "http://h/wifi/login"})
    custom = settings.model_copy(update={"portal": portal})
    client: Client = await aiohttp_client(create_app(custom, backend))
    response = await client.get("/wifi/login", params={"fas": make_fas()})
    body = await response.text()
    assert 'action="/wifi/login/accept"' in body
    status, _ = await submit_to(client, "/wifi/login/accept", state_of(body))
    assert status == 200
    assert len(backend.calls) == 1


async def submit_to(client: Client, path: str, state: str) -> tuple[int, str]:
    response = await client.post(path, data={"state": state, "consent": "yes"})
    return response.status, await response.text()
