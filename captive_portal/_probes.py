"""OS captive-portal detection: the probe table, the answers, and how each OS reads them.

Every major OS checks for a captive portal by fetching a known URL over plain HTTP and
comparing the answer with what it expects from the real Internet (protocols.md §2.1).
A portal must answer these probes so that the OS opens its login window before login
and closes it after:

- before login (captive): a redirect to the portal (``302``) with a small HTML body, never
  the "online" answer; a client that does not want HTML (an API, a script) gets ``511
  Network Authentication Required`` with a link to the login page (RFC 6585 §6). Android
  does not read 511 as a portal, so the known probes always get the redirect;
- after login: exactly the answer the OS expects from its own server (``204``, Apple's
  ``Success`` page, ``Microsoft Connect Test``...).

``classify`` states each OS's rule as its source reads it, so that a test can check an
answer the way the OS would.

Pure: no IO, no clock, no logging.
"""

from __future__ import annotations

import dataclasses
import enum
import html
from typing import Final

__all__ = [
    "PROBES",
    "Platform",
    "Probe",
    "ProbeAnswer",
    "Verdict",
    "answer_foreign",
    "answer_probe",
    "classify",
    "find_probe",
    "is_probe_host",
    "wants_html",
]


class Platform(enum.Enum):
    """The families of connectivity checks (protocols.md §2.1)."""

    ANDROID = "android"
    APPLE = "apple"
    WINDOWS = "windows"
    FIREFOX = "firefox"
    CHROMEOS = "chromeos"
    NETWORKMANAGER = "networkmanager"


class Verdict(enum.Enum):
    """What an OS concludes from a probe's answer."""

    ONLINE = "online"
    PORTAL = "portal"
    FAILED = "failed"


@dataclasses.dataclass(frozen=True, slots=True)
class Probe:
    """One connectivity-check URL and the answer its OS expects when online.

    Attributes:
        platform: the OS family.
        host: the probe's host name.
        path: the probe's path.
        status: the HTTP status of the online answer.
        body: the online answer's body ("" with 204).
        content_type: the online answer's media type.
    """

    platform: Platform
    host: str
    path: str
    status: int
    body: str = ""
    content_type: str = "text/plain"


@dataclasses.dataclass(frozen=True, slots=True)
class ProbeAnswer:
    """An HTTP answer to give.

    Attributes:
        status: the HTTP status.
        body: the body, UTF-8.
        content_type: the media type of the body.
        location: the ``Location`` header, if any.
    """

    status: int
    body: str
    content_type: str
    location: str | None = None


_APPLE_SUCCESS: Final = "<HTML><HEAD><TITLE>Success</TITLE></HEAD><BODY>Success</BODY></HTML>"
_FIREFOX_CANONICAL: Final = (
    '<meta http-equiv="refresh" content="0;url=https://support.mozilla.org/kb/captive-portal"/>'
)
_NM_ONLINE: Final = "NetworkManager is online\n"

# protocols.md §2.1. Each OS's "online" answer, exactly as its servers give it.
PROBES: Final[tuple[Probe, ...]] = (
    Probe(Platform.ANDROID, "connectivitycheck.gstatic.com", "/generate_204", 204),
    Probe(Platform.ANDROID, "www.google.com", "/gen_204", 204),
    Probe(Platform.ANDROID, "play.googleapis.com", "/generate_204", 204),
    Probe(Platform.ANDROID, "clients3.google.com", "/generate_204", 204),
    Probe(Platform.ANDROID, "connect.rom.miui.com", "/generate_204", 204),
    Probe(Platform.ANDROID, "cp.cloudflare.com", "/generate_204", 204),
    Probe(Platform.CHROMEOS, "www.gstatic.com", "/generate_204", 204),
    Probe(
        Platform.APPLE,
        "captive.apple.com",
        "/hotspot-detect.html",
        200,
        _APPLE_SUCCESS,
        "text/html",
    ),
    Probe(
        Platform.APPLE,
        "www.apple.com",
        "/library/test/success.html",
        200,
        _APPLE_SUCCESS,
        "text/html",
    ),
    Probe(
        Platform.WINDOWS,
        "www.msftconnecttest.com",
        "/connecttest.txt",
        200,
        "Microsoft Connect Test",
    ),
    Probe(
        Platform.WINDOWS,
        "ipv6.msftconnecttest.com",
        "/connecttest.txt",
        200,
        "Microsoft Connect Test",
    ),
    Probe(Platform.WINDOWS, "www.msftncsi.com", "/ncsi.txt", 200, "Microsoft NCSI"),
    Probe(
        Platform.FIREFOX,
        "detectportal.firefox.com",
        "/canonical.html",
        200,
        _FIREFOX_CANONICAL,
        "text/html",
    ),
    Probe(Platform.FIREFOX, "detectportal.firefox.com", "/success.txt", 200, "success\n"),
    Probe(
        Platform.NETWORKMANAGER,
        "nmcheck.gnome.org",
        "/check_network_status.txt",
        200,
        _NM_ONLINE,
    ),
    Probe(Platform.NETWORKMANAGER, "network-test.debian.org", "/nm", 200, _NM_ONLINE),
    # Ubuntu's NetworkManager configuration sets an empty response: it expects no data.
    Probe(Platform.NETWORKMANAGER, "connectivity-check.ubuntu.com", "/", 204),
)

_BY_URL: Final = {(p.host, p.path): p for p in PROBES}
_HOSTS: Final = frozenset(p.host for p in PROBES) | {"ipv6.msftncsi.com", "clients1.google.com"}


def is_probe_host(host: str) -> bool:
    """True if ``host`` (no port, any case) is a connectivity-check host."""
    return host.lower().rstrip(".") in _HOSTS


def find_probe(host: str, path: str) -> Probe | None:
    """The probe that ``host`` + ``path`` is, if any (the query string is ignored)."""
    return _BY_URL.get((host.lower().rstrip("."), path))


def _redirect(login_url: str) -> ProbeAnswer:
    # A body of more than 4 bytes: some Android builds read a tiny 200/3xx as success.
    link = html.escape(login_url, quote=True)
    body = (
        '<!doctype html><html lang="fr"><meta charset="utf-8"><title>Wi-Fi</title>'
        f'<p><a href="{link}">Connexion au Wi-Fi / Wi-Fi login</a></p></html>'
    )
    return ProbeAnswer(302, body, "text/html", location=login_url)


def _network_authentication_required(login_url: str) -> ProbeAnswer:
    # RFC 6585 §6: the representation links to the login resource and does not hold the
    # login form itself (browsers would tie it to the URL originally asked for).
    link = html.escape(login_url, quote=True)
    body = (
        '<!doctype html><html lang="fr"><head><meta charset="utf-8">'
        "<title>Connexion requise / Network login required</title>"
        f'<meta http-equiv="refresh" content="0; url={link}"></head>'
        f'<body><p>Connectez-vous au réseau : <a href="{link}">{link}</a></p>'
        f'<p lang="en">You need to log in to this network: <a href="{link}">{link}</a></p>'
        "</body></html>"
    )
    return ProbeAnswer(511, body, "text/html")


def answer_probe(probe: Probe, *, captive: bool, login_url: str) -> ProbeAnswer:
    """The answer to a known probe.

    Args:
        probe: the probe the request is.
        captive: the client is not (or no longer) logged in.
        login_url: where a captive client logs in.
    """
    if captive:
        return _redirect(login_url)
    return ProbeAnswer(probe.status, probe.body, probe.content_type)


def answer_foreign(
    *, captive: bool, wants_html: bool, login_url: str, status_url: str
) -> ProbeAnswer:
    """The answer to a request for another host that is not a known probe.

    Args:
        captive: the client is not logged in.
        wants_html: the client accepts HTML (a browser), judged from ``Accept``.
        login_url: where a captive client logs in.
        status_url: the page of a logged-in client.
    """
    if captive:
        return _redirect(login_url) if wants_html else _network_authentication_required(login_url)
    return _redirect(status_url)


def wants_html(accept: str | None) -> bool:
    """True if an ``Accept`` header admits HTML (no header: a browser-like client)."""
    if not accept:
        return True
    lowered = accept.lower()
    return "text/html" in lowered or "*/*" in lowered or "application/xhtml" in lowered


def classify(platform: Platform, status: int, body: str, *, probe: Probe | None = None) -> Verdict:
    """What ``platform`` concludes from a probe's answer (protocols.md §2.1).

    Args:
        platform: the OS family.
        status: the HTTP status it got (0: no answer).
        body: the body it got.
        probe: the probe asked (for the expected content); the platform's first one if
            None.

    Returns:
        ``ONLINE``, ``PORTAL`` or ``FAILED`` as that OS's code decides.
    """
    expected = probe or next(p for p in PROBES if p.platform is platform)
    if platform is Platform.ANDROID:
        # NetworkMonitor: isSuccessful() is 204 only; isPortal() is 200..399 but a 200
        # with a body of 4 bytes or less is not a portal; 511 and other codes fail.
        if status == 204:
            return Verdict.ONLINE
        if 200 <= status <= 399 and not (status == 200 and len(body.encode()) <= 4):
            return Verdict.PORTAL
        return Verdict.FAILED
    if platform is Platform.CHROMEOS:
        # Chromium's captive_portal_detector: 204 (or an empty 200) is online; 511 and
        # any other 2xx/3xx are a portal; 4xx/5xx are unknown.
        if status == 204 or (status == 200 and not body):
            return Verdict.ONLINE
        if status == 511 or 200 <= status <= 399:
            return Verdict.PORTAL
        return Verdict.FAILED
    if status == 0:
        return Verdict.FAILED
    if platform is Platform.NETWORKMANAGER:
        if expected.status == 204:
            # An empty expected response: NetworkManager wants no data.
            return (
                Verdict.ONLINE if status == 204 or (status == 200 and not body) else Verdict.PORTAL
            )
        return Verdict.ONLINE if body.startswith(expected.body) else Verdict.PORTAL
    # Apple, Windows and Firefox compare the content with the expected one.
    if status == 200 and body.strip() == expected.body.strip():
        return Verdict.ONLINE
    return Verdict.PORTAL
