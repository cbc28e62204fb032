"""What every entry of the login flow shares: the commune's policy and options, the
signed state, and the login page itself.

The FAS entry and the login forms (``captive_portal.app``), the UAM entry
(``captive_portal._uam``) and the e-mail and SMS code forms (``captive_portal._codepages``)
all show the same login page and refuse a bad state or link with the same pages. HTTP
adaptation only.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

from aiohttp import web
from yarl import URL

from captive_portal._fas import FasRequest, LoginState, mac_tag, sign_state, verify_state
from captive_portal._methods import CommuneOptions, options_for
from captive_portal._pages import CONTENT_SECURITY_POLICY, PortalBase, field
from captive_portal._wifi4eu import content_security_policy, snippet
from captive_portal.errors import StateExpired, StateInvalid
from captive_portal.models import CommunePolicy

__all__ = ["LoginPages", "LoginPost"]

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, slots=True)
class LoginPost:
    """A login form posted with a valid signed state (see ``LoginPages.login_post``).

    Attributes:
        form: the posted fields.
        lang: the visitor's language.
        token: the signed state, as posted.
        login: what the state carries (the FAS request, the terms version shown).
        policy: the commune's policy now (None: the built-in texts).
        version: the terms version in force now.
    """

    form: Mapping[str, object]
    lang: str
    token: str
    login: LoginState
    policy: CommunePolicy | None
    version: str

    @property
    def fas(self) -> FasRequest:
        return self.login.fas

    @property
    def terms_changed(self) -> bool:
        """The commune published new texts while the page was open."""
        return self.version != self.login.terms_version

    @property
    def consented(self) -> bool:
        """The box is ticked, or the device already accepted these texts ("prior")."""
        consent = field(self.form, "consent")
        prior = (
            consent == "prior"
            and self.policy is not None
            and self.policy.accepted_version == self.version
        )
        return consent == "yes" or prior


class LoginPages(PortalBase):
    """The login page, its refusals, and the commune's rules it follows."""

    def options(self, policy: CommunePolicy | None) -> CommuneOptions:
        """The methods, WiFi4EU mode and extension rule of the policy's commune."""
        return options_for(self.settings.portal, policy.insee if policy is not None else None)

    async def commune_policy(self, ap_id: str, mac: str | None) -> CommunePolicy | None:
        """The commune's legal texts and the device's last acceptance (None: built-in)."""
        try:
            return await self.backend.policy(ap_id, mac)
        except Exception:
            logger.error("backend crashed reading the policy of %s", ap_id, exc_info=True)
            return None

    def terms_version(self, policy: CommunePolicy | None) -> str:
        return policy.terms_version if policy is not None else self.settings.portal.terms_version

    def check_state(self, token: str) -> LoginState:
        return verify_state(token, self.key, now=self.clock())

    def bad_state(
        self, lang: str, exc: StateInvalid | StateExpired, *, switch_to: URL | None
    ) -> web.Response:
        _ = self.translations[lang].gettext
        if isinstance(exc, StateExpired):
            self.counters.expired_state += 1
            logger.info("refused an expired login state")
            text = _("This login page has expired.")
        else:
            self.counters.tampered_state += 1
            logger.warning("refused a login state: %s", exc)
            text = _("This login page is not valid.")
        return self.message(
            lang,
            title=_("Please start again"),
            text=text,
            hint=_("Open any web page: the login page will appear again."),
            status=400,
            switch_to=switch_to,
        )

    def invalid_link(self, lang: str, request: web.Request) -> web.Response:
        """The 400 page for a missing or unusable FAS query."""
        _ = self.translations[lang].gettext
        return self.message(
            lang,
            title=_("Invalid request"),
            text=_("This address is not a valid login link."),
            hint=_("Open any web page: the login page will appear again."),
            status=400,
            switch_to=request.rel_url,
        )

    def login_form(
        self,
        lang: str,
        state: str,
        fas: FasRequest,
        *,
        policy: CommunePolicy | None,
        terms_version: str,
        error: str | None = None,
        code_error: str | None = None,
        **extra: Any,
    ) -> web.Response:
        _ = self.translations[lang].gettext
        options = self.options(policy)
        wifi4eu = (
            snippet(options.wifi4eu_network_id, lang, self_test=options.wifi4eu_self_test)
            if options.wifi4eu_network_id is not None
            else None
        )
        query = urlencode({"lang": lang, "state": state})
        accepted = policy.accepted_version if policy is not None else None
        prior_date = None
        if policy is not None and accepted == terms_version and policy.accepted_at:
            prior_date = time.strftime("%d/%m/%Y", time.gmtime(policy.accepted_at))
        fields: dict[str, Any] = {
            "email_error": None,
            "sms_error": None,
            "email_value": "",
            "sms_value": "",
            **extra,
        }
        response = self.render(
            "login.html",
            lang,
            title=_("Connect"),
            status=400
            if (error or code_error or fields["email_error"] or fields["sms_error"])
            else 200,
            switch_to=self.form_url(state),
            state=state,
            error=error,
            code_error=code_error,
            ap_id=fas.gateway_name,
            commune=policy.commune if policy is not None else None,
            terms_url=f"{self.routes.terms}?{query}",
            privacy_url=f"{self.routes.privacy}?{query}",
            methods=options.methods,
            collects_identity=options.collects_identity,
            voucher_url=self.routes.voucher,
            email_url=self.routes.fas.rstrip("/") + "/email",
            sms_url=self.routes.fas.rstrip("/") + "/sms",
            wifi4eu=wifi4eu,
            prior_date=prior_date,
            terms_version=terms_version,
            changed=accepted is not None and accepted != terms_version,
            **fields,
        )
        if wifi4eu is not None:
            # Only this page, only this commune: the snippet's script and nothing else.
            response.headers["Content-Security-Policy"] = content_security_policy(
                CONTENT_SECURITY_POLICY, wifi4eu
            )
        return response

    # -- the login forms' posts ---------------------------------------------------------

    async def login_post(self, request: web.Request) -> LoginPost | web.Response:
        """The posted form, its language, signed state and commune policy; or the page
        that refuses its state."""
        form = await request.post()
        lang = self.language(request, field(form, "lang"))
        token = field(form, "state") or ""
        try:
            login = self.check_state(token)
        except (StateInvalid, StateExpired) as exc:
            return self.bad_state(lang, exc, switch_to=None)
        policy = await self.commune_policy(login.fas.gateway_name, login.fas.client_mac)
        return LoginPost(form, lang, token, login, policy, self.terms_version(policy))

    def require_method(self, policy: CommunePolicy | None, method: str) -> None:
        """Raise 404 (counted) if the commune does not offer ``method``."""
        if not self.options(policy).offers(method):
            self.counters.method_off += 1
            raise web.HTTPNotFound()

    def form_again(self, post: LoginPost, **fields: Any) -> web.Response:
        """The login page of ``post`` again, with its error (``error``, ``code_error``,
        ``email_error``...) and the values typed."""
        return self.login_form(
            post.lang,
            post.token,
            post.fas,
            policy=post.policy,
            terms_version=post.version,
            **fields,
        )

    def new_terms(self, post: LoginPost) -> web.Response:
        """The login page with the texts in force now (counted), under a new state that
        names their version (the next submission is checked against them)."""
        _ = self.translations[post.lang].gettext
        self.counters.terms_changed += 1
        state = sign_state(post.fas, self.key, now=self.clock(), terms_version=post.version)
        return self.form_again(
            dataclasses.replace(post, token=state),
            error=_("The terms of use have changed. Please read them and accept them again."),
        )

    # -- wrong codes (vouchers, e-mail and SMS codes) ------------------------------------

    def code_keys(self, request: web.Request, fas: FasRequest) -> tuple[str, str]:
        """The wrong-code limiter's keys: the device and the source address."""
        return (f"mac:{mac_tag(fas.client_mac, self.key)}", f"ip:{request.remote}")

    def code_blocked(self, keys: tuple[str, str], now: float) -> bool:
        """Too many wrong codes from this device or this address lately."""
        return any(self.code_limiter.blocked(k, now) for k in keys)

    def code_refused(self, lang: str, keys: tuple[str, str], now: float, *, limited: bool) -> str:
        """Count a refused code (``limited``: blocked; else a wrong one, a failure for each
        key) and say why, without saying which part was wrong (unknown, used, expired...)."""
        _ = self.translations[lang].gettext
        if limited:
            self.counters.code_rate_limited += 1
            return _("Too many wrong codes. Please wait ten minutes.")
        self.counters.bad_code += 1
        for key in keys:
            self.code_limiter.fail(key, now)
        return _("This code is not valid or can no longer be used.")
