"""The portal's shared page machinery: routes, catalogs and templates, rendering, and
finding the visitor in the session store.

``PortalBase`` holds what every handler needs; ``captive_portal._visitor`` adds the pages
of a visitor who is (or is not yet) online, ``captive_portal._login`` the login page,
``captive_portal.app`` the login flow. Only HTTP adaptation lives here: no business rule.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlencode, urlsplit

import jinja2
from aiohttp import web
from babel.support import Translations
from yarl import URL

from captive_portal._fas import FasRequest
from captive_portal._i18n import (
    LANGUAGE_NAMES,
    LANGUAGES,
    format_duration,
    load_translations,
    negotiate,
)
from captive_portal._limits import FailureLimiter
from captive_portal._probes import (
    is_probe_host,
)
from captive_portal.models import (
    ClientStatus,
    LoginMethod,
    LoginRequest,
    PortalBackend,
    PortalCounters,
)
from controller.config import Settings

__all__ = [
    "CONTENT_SECURITY_POLICY",
    "TEMPLATE_DIR",
    "PortalBase",
    "PortalRoutes",
    "field",
    "portal_routes",
]

logger = logging.getLogger(__name__)

TEMPLATE_DIR: Final = Path(__file__).parent / "templates"
# No script may run; styles are inline; forms post to the portal only.
CONTENT_SECURITY_POLICY: Final = (
    "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)


@dataclasses.dataclass(frozen=True, slots=True)
class PortalRoutes:
    """The portal's URL paths.

    Attributes:
        fas: where openNDS sends clients (``faspath``), from ``portal.public_url``.
        accept: where the consent form is posted.
        terms: the terms of use.
        privacy: the privacy notice.
        health: the liveness probe.
        home: the landing page of a visitor who reached the portal directly.
        status: a logged-in visitor's status page.
        logout: where the status page's log-out form is posted.
        voucher: where the voucher form is posted.
        capport: the RFC 8908 API (also ``{capport}/{ap_id}``).
    """

    fas: str
    accept: str
    terms: str = "/terms"
    privacy: str = "/privacy"
    health: str = "/healthz"
    home: str = "/"
    status: str = "/status"
    logout: str = "/logout"
    capport: str = "/capport/api"
    voucher: str = "/voucher"


def portal_routes(public_url: str) -> PortalRoutes:
    """Derive the portal's paths from its public URL (openNDS's ``faspath``).

    Args:
        public_url: ``settings.portal.public_url``, e.g. ``http://10.46.0.2:8080/fas/``.
    """
    path = urlsplit(public_url).path or "/"
    base = path if path.endswith("/") else f"{path}/"
    return PortalRoutes(fas=path, accept=f"{base}accept", voucher=f"{base}voucher")


def field(form: Mapping[str, object], name: str) -> str | None:
    value = form.get(name)
    return value if isinstance(value, str) else None


def login_request(
    fas: FasRequest,
    method: LoginMethod,
    terms_version: str,
    lang: str,
    *,
    code: str | None = None,
    identity: str | None = None,
    stats_optout: bool = False,
) -> LoginRequest:
    """What the backend is asked to let in: the device of ``fas``, by ``method``."""
    return LoginRequest(
        ap_id=fas.gateway_name,
        client_mac=fas.client_mac,
        client_ip=fas.client_ip,
        method=method,
        terms_version=terms_version,
        language=lang,
        code=code,
        identity=identity,
        stats_optout=stats_optout,
    )


def _build_environments(translations: Mapping[str, Translations]) -> dict[str, jinja2.Environment]:
    envs: dict[str, jinja2.Environment] = {}
    for lang, catalog in translations.items():
        env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(TEMPLATE_DIR),
            autoescape=True,
            # Templates are loaded below, once: no file check on each request.
            auto_reload=False,
            undefined=jinja2.StrictUndefined,
            extensions=["jinja2.ext.i18n"],
            trim_blocks=True,
            lstrip_blocks=True,
        )
        env.install_gettext_translations(catalog, newstyle=True)  # type: ignore[attr-defined]
        for name in env.list_templates(extensions=["html", "css"]):
            env.get_template(name)
        envs[lang] = env
    return envs


class PortalBase:
    """What every page handler shares: settings, backend, catalogs, rendering."""

    def __init__(
        self, settings: Settings, backend: PortalBackend, clock: Callable[[], float]
    ) -> None:
        self.settings = settings
        self.backend = backend
        self.clock = clock
        self.counters = PortalCounters()
        self.routes = portal_routes(settings.portal.public_url)
        self.key = settings.portal.fas_key.get_secret_value()
        # Wrong voucher codes per client and per source address (10 minutes).
        self.code_limiter = FailureLimiter(settings.portal.max_code_failures, 600.0)
        # Session extensions waiting for their device to come back: (ap, mac) -> deadline.
        self.extending: dict[tuple[str, str], float] = {}
        self.translations = load_translations()
        self.envs = _build_environments(self.translations)
        # The portal's own names: requests for any other host name are probes or pages
        # the gateway intercepted. IP literals and "localhost" are always the portal's.
        self.own_hosts = frozenset(
            h.lower()
            for h in (urlsplit(settings.portal.public_url).hostname, "localhost")
            if h is not None
        )

    # -- helpers ------------------------------------------------------------------------

    def language(self, request: web.Request, requested: str | None = None) -> str:
        if requested is None:
            requested = request.query.get("lang")
        return negotiate(
            requested,
            request.headers.get("Accept-Language"),
            self.settings.portal.default_language,
        )

    def switch(self, lang: str, target: URL | None) -> list[dict[str, Any]]:
        """The FR | EN links: ``target`` with its ``lang`` replaced."""
        if target is None:
            return []
        return [
            {
                "code": code,
                "label": code.upper(),
                "name": LANGUAGE_NAMES[code],
                "href": str(target.update_query(lang=code)),
                "current": code == lang,
            }
            for code in LANGUAGES
        ]

    def form_url(self, state: str) -> URL:
        return URL(self.routes.fas).with_query(state=state)

    def render(
        self,
        template: str,
        lang: str,
        *,
        title: str,
        status: int = 200,
        switch_to: URL | None = None,
        **context: Any,
    ) -> web.Response:
        html = (
            self.envs[lang]
            .get_template(template)
            .render(
                lang=lang,
                title=title,
                network_name=self.settings.portal.network_name,
                switch=self.switch(lang, switch_to),
                accept_url=self.routes.accept,
                **context,
            )
        )
        return web.Response(text=html, content_type="text/html", charset="utf-8", status=status)

    def message(
        self,
        lang: str,
        *,
        title: str,
        text: str,
        status: int,
        switch_to: URL | None = None,
        hint: str | None = None,
        alert: bool = True,
        retry_state: str | None = None,
        back_url: str | None = None,
    ) -> web.Response:
        return self.render(
            "message.html",
            lang,
            title=title,
            text=text,
            status=status,
            switch_to=switch_to,
            hint=hint,
            alert=alert,
            retry_state=retry_state,
            back_url=back_url,
        )

    def unavailable(
        self,
        lang: str,
        *,
        title: str,
        text: str,
        switch_to: URL | None = None,
        retry_state: str | None = None,
        back_url: str | None = None,
    ) -> web.Response:
        """The 503 page of an action the hotspot could not carry out (usually briefly)."""
        _ = self.translations[lang].gettext
        return self.message(
            lang,
            title=title,
            text=text,
            hint=_("This is usually temporary. Please try again in a few seconds."),
            status=503,
            switch_to=switch_to,
            retry_state=retry_state,
            back_url=back_url,
        )

    def already_connected(self, lang: str, switch_to: URL | None) -> web.Response:
        """The page of a device that is online already: nothing to do but close it."""
        _ = self.translations[lang].gettext
        return self.message(
            lang,
            title=_("You are connected"),
            text=_("This device is already connected. You can close this page."),
            status=200,
            alert=False,
            switch_to=switch_to,
        )

    def success_page(
        self,
        lang: str,
        *,
        title: str,
        minutes: int,
        ap_id: str,
        continue_url: str | None,
        switch_to: URL | None = None,
    ) -> web.Response:
        """The page of a login or extension that succeeded: for how long, where to go on,
        and the link to the status page of ``ap_id``."""
        query = urlencode({"lang": lang, "ap": ap_id})
        return self.render(
            "success.html",
            lang,
            title=title,
            duration=format_duration(minutes, self.translations[lang]),
            continue_url=continue_url,
            ap_id=ap_id,
            status_url=f"{self.routes.status}?{query}",
            switch_to=switch_to,
        )

    def absolute(self, path: str) -> str:
        """``path`` on the portal's public origin (a probe asked another host)."""
        parts = urlsplit(self.settings.portal.public_url)
        return f"{parts.scheme}://{parts.netloc}{path}"

    def is_foreign(self, host: str) -> bool:
        """True if ``host`` is not the portal's: a probe, or a page the gateway sent here."""
        if not host:
            return False
        if is_probe_host(host):
            return True
        if host in self.own_hosts:
            return False
        try:
            ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            return True
        return False

    async def lookup(self, request: web.Request, ap_id: str | None) -> ClientStatus | None:
        """The requester's open session, by its source address."""
        remote = request.remote
        if remote is None:
            return None
        try:
            return await self.backend.client_status(remote, ap_id)
        except Exception:
            # The backend reports "unknown" as None; a crash is a bug: say "captive".
            logger.error("backend crashed looking up a client", exc_info=True)
            return None
