"""Login by a code sent by e-mail or SMS: the "send me a code" forms and the code check.

``POST {faspath}email`` or ``{faspath}sms`` (consent, address or number) checks the
commune's methods, the address, the country code and the send limits, sends a 6-digit
code and shows the code form, which carries a challenge id (``captive_portal._codes``).
``POST {faspath}code`` goes through the common login flow (``app._Portal.login``), which
calls ``check_code`` here before authorising. HTTP adaptation only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Final

from aiohttp import web

from captive_portal._codes import (
    Challenge,
    Channel,
    CodeBook,
    SendLimiter,
    mask_email,
    mask_phone,
    new_code,
    normalize_email,
    normalize_phone,
    phone_allowed,
)
from captive_portal._codestore import CodeKeeper, PendingCodes
from captive_portal._email import EmailError, EmailSender, build_message
from captive_portal._fas import mac_tag
from captive_portal._login import LoginPages, LoginPost
from captive_portal._pages import field
from captive_portal._sms import HttpSmsProvider, SmsError, SmsProvider
from captive_portal._visitor import VisitorPages
from captive_portal.models import PortalBackend
from controller.config import Settings

__all__ = ["CodePages"]

logger = logging.getLogger(__name__)

MAX_IDENTITY_CHARS: Final = 254


class CodePages(VisitorPages, LoginPages):
    """The e-mail and SMS code handlers (mixed into the portal's login flow)."""

    def __init__(
        self, settings: Settings, backend: PortalBackend, clock: Callable[[], float]
    ) -> None:
        super().__init__(settings, backend, clock)
        # The controller keeps pending codes in its database (a restart loses none).
        self.codebook: PendingCodes = (
            backend.pending_codes if isinstance(backend, CodeKeeper) else CodeBook()
        )
        self.send_limiter = SendLimiter()
        self.email_sender = EmailSender(settings.portal.email)
        self.sms_provider: SmsProvider = HttpSmsProvider(settings.portal.sms)

    # -- helpers ------------------------------------------------------------------------

    def code_page(
        self,
        lang: str,
        *,
        state: str,
        challenge: str,
        channel: Channel,
        to: str,
        minutes: int,
        error: str | None = None,
    ) -> web.Response:
        _ = self.translations[lang].gettext
        return self.render(
            "code.html",
            lang,
            title=_("Enter your code"),
            status=400 if error else 200,
            state=state,
            challenge=challenge,
            channel=channel,
            to=to,
            minutes=minutes,
            error=error,
            code_url=self.routes.fas.rstrip("/") + "/code",
            back_url=str(self.form_url(state).update_query(lang=lang)),
        )

    def _send_limits(
        self, channel: Channel, identity: str, request: web.Request, device: str
    ) -> str | None:
        """None if a code may be sent, else the refusal ("cooldown" or "capped")."""
        now = self.clock()
        if channel == "email":
            e = self.settings.portal.email
            per_identity, per_source, cooldown = (
                e.per_address_per_day,
                e.per_ip_per_day,
                e.cooldown_s,
            )
        else:
            s = self.settings.portal.sms
            per_identity, per_source, cooldown = (
                s.per_number_per_day,
                s.per_ip_per_day,
                s.cooldown_s,
            )
        verdicts = (
            self.send_limiter.verdict(
                f"{channel}:{identity}", now, cap=per_identity, cooldown_s=cooldown
            ),
            self.send_limiter.verdict(f"{channel}-dev:{device}", now, cap=per_source),
            self.send_limiter.verdict(f"{channel}-ip:{request.remote}", now, cap=per_source),
        )
        if "capped" in verdicts:
            return "capped"
        if "cooldown" in verdicts:
            return "cooldown"
        return None

    async def _deliver(self, channel: Channel, identity: str, code: str, lang: str) -> bool:
        """Send the code; False (logged, counted) if the relay or provider refused it."""
        catalog = self.translations[lang]
        network = self.settings.portal.network_name
        try:
            if channel == "email":
                minutes = self.settings.portal.email.code_minutes
                body = catalog.gettext(
                    "Your code to connect to %(network)s: %(code)s\n\n"
                    "It is valid for %(minutes)s minutes. "
                    "If you did not ask for it, ignore this message."
                ) % {"network": network, "code": code, "minutes": minutes}
                subject = catalog.gettext("Your Wi-Fi code: %(code)s") % {"code": code}
                message = build_message(
                    self.settings.portal.email, identity, subject, body, self.clock()
                )
                await self.email_sender.send(message)
            else:
                minutes = self.settings.portal.sms.code_minutes
                text = catalog.gettext(
                    "%(network)s: your Wi-Fi code is %(code)s (valid %(minutes)s min)."
                ) % {"network": network, "code": code, "minutes": minutes}
                await self.sms_provider.send(identity, text)
        except (EmailError, SmsError) as exc:
            self.counters.code_send_failed += 1
            logger.warning("could not send a %s code: %s", channel, exc)
            return False
        return True

    # -- handlers -----------------------------------------------------------------------

    async def send_email(self, request: web.Request) -> web.Response:
        """``POST {faspath}email``: send a code to the address typed."""
        return await self.send_code(request, "email")

    async def send_sms(self, request: web.Request) -> web.Response:
        """``POST {faspath}sms``: send a code to the number typed."""
        return await self.send_code(request, "sms")

    async def send_code(self, request: web.Request, channel: Channel) -> web.Response:
        """Check the form and the limits, send the code, show the code form."""
        post = await self.login_post(request)
        if isinstance(post, web.Response):
            return post
        lang, token, fas = post.lang, post.token, post.fas
        _ = self.translations[lang].gettext
        self.require_method(post.policy, channel)
        raw = (field(post.form, "identity") or "")[:MAX_IDENTITY_CHARS]

        def again(**errors: str) -> web.Response:
            return self.form_again(post, **{f"{channel}_value": raw}, **errors)

        if post.terms_changed:
            return self.new_terms(post)
        if not post.consented:
            self.counters.missing_consent += 1
            return again(error=_("Please tick the box to accept the terms of use."))
        identity = self.identity_of(channel, raw)
        if identity is None:
            self.counters.bad_address += 1
            if channel == "email":
                return again(email_error=_("Please enter a valid e-mail address."))
            return again(
                sms_error=_(
                    "Please enter a valid mobile number, with its country code "
                    "(for example +33 6 12 34 56 78)."
                )
            )
        if channel == "sms" and not phone_allowed(
            identity, self.settings.portal.sms.allowed_prefixes
        ):
            self.counters.prefix_refused += 1
            return again(sms_error=_("Codes cannot be sent by SMS to this country."))
        refusal = self._send_limits(channel, identity, request, fas.client_mac)
        if refusal is not None:
            key = f"{channel}_error"
            if refusal == "cooldown":
                self.counters.code_send_cooldown += 1
                text = _("A code was sent a moment ago. Please wait a minute before asking again.")
            else:
                self.counters.code_send_capped += 1
                text = _(
                    "Too many codes were asked today. "
                    "Please use another way to connect, or try again tomorrow."
                )
            return again(**{key: text})
        settings = self.settings.portal.email if channel == "email" else self.settings.portal.sms
        code = new_code()
        if not await self._deliver(channel, identity, code, lang):
            return again(
                **{
                    f"{channel}_error": _(
                        "The code could not be sent. Please try again in a moment."
                    )
                }
            )
        now = self.clock()
        for key in (
            f"{channel}:{identity}",
            f"{channel}-dev:{fas.client_mac}",
            f"{channel}-ip:{request.remote}",
        ):
            self.send_limiter.sent(key, now)
        await self.codebook.sweep(now)
        challenge = await self.codebook.issue(
            channel,
            identity,
            fas.client_mac,
            code=code,
            now=now,
            ttl_s=settings.code_minutes * 60,
            attempts=settings.max_attempts,
        )
        self.counters.codes_sent += 1
        logger.info(
            "%s code sent for ap=%s client=%s",
            channel,
            fas.gateway_name,
            mac_tag(fas.client_mac, self.key),
        )
        return self.code_page(
            lang,
            state=token,
            challenge=challenge,
            channel=channel,
            to=mask_email(identity) if channel == "email" else mask_phone(identity),
            minutes=settings.code_minutes,
        )

    def identity_of(self, channel: Channel, raw: str) -> str | None:
        """The normalised address or number typed, None if it is not one."""
        return normalize_email(raw) if channel == "email" else normalize_phone(raw)

    async def code_channel(self, form: Mapping[str, object]) -> Channel | None:
        """The channel of the form's challenge (None: unknown or gone)."""
        challenge = await self.codebook.peek(field(form, "challenge") or "")
        return challenge.channel if challenge is not None else None

    async def check_code(self, request: web.Request, post: LoginPost) -> Challenge | web.Response:
        """The used challenge if the code typed is right, else the code form again
        (one answer for a wrong, expired, used or foreign code)."""
        challenge_id = field(post.form, "challenge") or ""
        pending = await self.codebook.peek(challenge_id)
        now = self.clock()
        keys = self.code_keys(request, post.fas)
        limited = self.code_blocked(keys, now)
        used = (
            None
            if limited
            else await self.codebook.check(
                challenge_id, field(post.form, "code") or "", post.fas.client_mac, now
            )
        )
        if used is not None:
            return used
        error = self.code_refused(post.lang, keys, now, limited=limited)
        channel: Channel = pending.channel if pending is not None else "email"
        settings = self.settings.portal.email if channel == "email" else self.settings.portal.sms
        alive = pending is not None and await self.codebook.peek(challenge_id) is not None
        to = ""
        if pending is not None:
            to = (
                mask_email(pending.identity) if channel == "email" else mask_phone(pending.identity)
            )
        return self.code_page(
            post.lang,
            state=post.token,
            challenge=challenge_id if alive else "",
            channel=channel,
            to=to,
            minutes=settings.code_minutes,
            error=error,
        )
