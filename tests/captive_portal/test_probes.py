"""The OS probe table, its answers before and after login, and each OS's reading of them."""

from __future__ import annotations

from typing import Any

import pytest

from captive_portal._probes import (
    PROBES,
    Platform,
    Probe,
    Verdict,
    answer_foreign,
    answer_probe,
    classify,
    find_probe,
    is_probe_host,
    wants_html,
)
from captive_portal.app import COUNTERS
from tests.captive_portal.portal_fixtures import CLIENT_IP, logged_in, portal_client
from tests.captive_portal.test_app import FakeBackend

LOGIN = "http://10.46.2.1:8080/"
STATUS = "http://10.46.2.1:8080/status"


def test_every_platform_of_the_brief_has_probes() -> None:
    """Android, Apple, Windows, Firefox, ChromeOS and NetworkManager are all in the table."""
    assert {p.platform for p in PROBES} == set(Platform)
    assert len({(p.host, p.path) for p in PROBES}) == len(PROBES)


@pytest.mark.parametrize("probe", PROBES, ids=lambda p: f"{p.platform.value}:{p.host}{p.path}")
def test_before_login_every_os_sees_a_portal(probe: Probe) -> None:
    """Before login each probe gets a redirect to the login page that its OS reads as a portal."""
    answer = answer_probe(probe, captive=True, login_url=LOGIN)
    assert (answer.status, answer.location) == (302, LOGIN)
    assert len(answer.body.encode()) > 4
    assert classify(probe.platform, answer.status, answer.body, probe=probe) is Verdict.PORTAL


@pytest.mark.parametrize("probe", PROBES, ids=lambda p: f"{p.platform.value}:{p.host}{p.path}")
def test_after_login_every_os_sees_the_internet(probe: Probe) -> None:
    """After login each probe gets exactly its OS's "online" answer."""
    answer = answer_probe(probe, captive=False, login_url=LOGIN)
    assert answer.location is None
    assert classify(probe.platform, answer.status, answer.body, probe=probe) is Verdict.ONLINE


APPLE_SUCCESS = "<HTML><HEAD><TITLE>Success</TITLE></HEAD><BODY>Success</BODY></HTML>"
CLASSIFY_CASES = [
    # (platform, status, body, verdict): the rules of protocols.md §2.1.
    (Platform.ANDROID, 204, "", Verdict.ONLINE),
    (Platform.ANDROID, 200, "", Verdict.FAILED),
    (Platform.ANDROID, 200, "abcd", Verdict.FAILED),
    (Platform.ANDROID, 200, "<html>login</html>", Verdict.PORTAL),
    (Platform.ANDROID, 307, "", Verdict.PORTAL),
    (Platform.ANDROID, 511, "<html>login</html>", Verdict.FAILED),
    (Platform.CHROMEOS, 511, "<html>login</html>", Verdict.PORTAL),
    (Platform.CHROMEOS, 200, "", Verdict.ONLINE),
    (Platform.CHROMEOS, 404, "", Verdict.FAILED),
    (Platform.APPLE, 200, APPLE_SUCCESS, Verdict.ONLINE),
    (Platform.APPLE, 200, "<html>login</html>", Verdict.PORTAL),
    (Platform.WINDOWS, 200, "Microsoft Connect Test", Verdict.ONLINE),
    (Platform.WINDOWS, 200, "Microsoft Connect", Verdict.PORTAL),
    (Platform.FIREFOX, 0, "", Verdict.FAILED),
    (Platform.NETWORKMANAGER, 200, "NetworkManager is online\n", Verdict.ONLINE),
    (Platform.NETWORKMANAGER, 302, "", Verdict.PORTAL),
]  # fmt: skip


@pytest.mark.parametrize(("platform", "status", "body", "verdict"), CLASSIFY_CASES)
def test_os_rules(platform: Platform, status: int, body: str, verdict: Verdict) -> None:
    """Each OS's reading of an answer is the one its source code has."""
    assert classify(platform, status, body) is verdict


def test_511_only_for_clients_that_do_not_want_html() -> None:
    """RFC 6585 §6: a captive API client gets 511 linking to the login page, a browser a 302."""
    api = answer_foreign(captive=True, wants_html=False, login_url=LOGIN, status_url=STATUS)
    assert api.status == 511
    assert api.location is None
    assert f'href="{LOGIN}"' in api.body
    assert "<form" not in api.body
    browser = answer_foreign(captive=True, wants_html=True, login_url=LOGIN, status_url=STATUS)
    assert (browser.status, browser.location) == (302, LOGIN)
    online = answer_foreign(captive=False, wants_html=False, login_url=LOGIN, status_url=STATUS)
    assert (online.status, online.location) == (302, STATUS)


@pytest.mark.parametrize(
    ("accept", "html"),
    [
        (None, True),
        ("text/html,application/xhtml+xml,*/*;q=0.8", True),
        ("*/*", True),
        ("application/json", False),
        ("application/captive+json", False),
    ],
)
def test_wants_html(accept: str | None, html: bool) -> None:
    """Browsers (and clients that send no Accept) want HTML; API clients do not."""
    assert wants_html(accept) is html


def test_probe_lookup_ignores_case_and_the_trailing_dot() -> None:
    """Host names compare case-insensitively, with or without the root dot."""
    assert is_probe_host("Captive.Apple.COM.")
    assert not is_probe_host("example.org")
    probe = find_probe("CONNECTIVITYCHECK.gstatic.com", "/generate_204")
    assert probe is not None and probe.platform is Platform.ANDROID
    assert find_probe("connectivitycheck.gstatic.com", "/other") is None


# -- the same table through the portal's HTTP server ------------------------------------------


@pytest.mark.parametrize("logged", [False, True], ids=["before-login", "after-login"])
@pytest.mark.parametrize("probe", PROBES, ids=lambda p: f"{p.platform.value}:{p.host}{p.path}")
async def test_portal_answers_each_probe_before_and_after_login(
    aiohttp_client: Any, probe: Probe, logged: bool
) -> None:
    """A probe that reaches the portal gets "log in" before login and "online" after, uncached."""
    backend = FakeBackend()
    if logged:
        backend.statuses[CLIENT_IP] = logged_in()
    client = await portal_client(aiohttp_client, backend)
    response = await client.get(probe.path, headers={"Host": probe.host}, allow_redirects=False)
    body = await response.text()
    assert response.headers["Cache-Control"] == "no-store"
    verdict = classify(probe.platform, response.status, body, probe=probe)
    if logged:
        assert (response.status, body) == (probe.status, probe.body)
        assert verdict is Verdict.ONLINE
    else:
        assert response.status == 302
        assert response.headers["Location"] == "http://10.46.0.2:8080/"
        assert verdict is Verdict.PORTAL
    counters = client.app[COUNTERS]
    assert (counters.probes_online, counters.probes_captive) == ((1, 0) if logged else (0, 1))


async def test_portal_answers_511_to_a_captive_api_client(aiohttp_client: Any) -> None:
    """A captive client's JSON request for another host gets 511 with a link, a browser a 302."""
    client = await portal_client(aiohttp_client, FakeBackend())
    api = await client.get(
        "/v1/items",
        headers={"Host": "api.example.org", "Accept": "application/json"},
        allow_redirects=False,
    )
    assert api.status == 511
    assert 'href="http://10.46.0.2:8080/"' in await api.text()
    page = await client.get(
        "/news", headers={"Host": "www.example.org", "Accept": "text/html"}, allow_redirects=False
    )
    assert (page.status, page.headers["Location"]) == (302, "http://10.46.0.2:8080/")


async def test_the_portal_own_addresses_are_not_probes(aiohttp_client: Any) -> None:
    """Requests for the portal by IP or by its public name reach its pages, not probe answers."""
    client = await portal_client(aiohttp_client, FakeBackend())
    for host in ("127.0.0.1:8080", "10.46.0.2:8080", "localhost"):
        response = await client.get("/healthz", headers={"Host": host})
        assert (response.status, await response.text()) == (200, "ok"), host
