"""The captive portal's typed boundary: what it asks of the controller, and its counters.

The portal decides nothing about the network itself: it hands a ``LoginRequest`` to a
``PortalBackend`` (the controller's, which sends the ``authorize`` command to the access
point's agent and waits for its ack) and shows the ``LoginResult``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal, Protocol

__all__ = [
    "ClientStatus",
    "CommunePolicy",
    "LoginMethod",
    "LoginRequest",
    "LoginResult",
    "LogoutResult",
    "PortalBackend",
    "PortalCounters",
]

LoginMethod = Literal["click-through", "voucher", "email", "sms", "returning", "extend"]


@dataclasses.dataclass(frozen=True, slots=True)
class LoginRequest:
    """A visitor asks to be let in.

    Attributes:
        ap_id: the access point (openNDS ``gatewayname``).
        client_mac: the client's MAC address, ``aa:bb:cc:dd:ee:ff``.
        client_ip: the client's IP address on the access point's network.
        method: how the visitor logged in.
        terms_version: the version of the terms of use the visitor accepted.
        language: the page language (``fr``, ``en``, ``es``, ``de``, ``nl``, ``it``).
        code: the voucher code typed, for ``method="voucher"``.
        identity: the e-mail address or phone number whose code the visitor typed, for
            ``method="email"`` or ``"sms"`` (normalised; stored only for the law).
        stats_optout: the visitor ticked "do not count my device in the statistics".
    """

    ap_id: str
    client_mac: str
    client_ip: str
    method: LoginMethod
    terms_version: str
    language: str
    code: str | None = None
    identity: str | None = None
    stats_optout: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class LoginResult:
    """The controller's answer to a ``LoginRequest``.

    Attributes:
        ok: the access point has let the client in.
        session_minutes: the session length granted (meaningful when ``ok``).
        error: a short reason when not ``ok``, for logs (never shown verbatim).
        bad_code: the voucher code cannot be used (the visitor is told, without why).
        reconnect: (``extend``) the device was cut off to be re-authorised and the
            gateway lets it in again at its next request (the extension is waiting).
    """

    ok: bool
    session_minutes: int
    error: str | None = None
    bad_code: bool = False
    reconnect: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class CommunePolicy:
    """What the portal shows at an access point: its commune's legal texts.

    Attributes:
        insee: the commune of the access point.
        commune: its name.
        terms_version: the version of the legal texts in force there.
        legal: the commune's texts (terms and GDPR art. 13 notice fields), or None
            for the portal's built-in summary.
        accepted_version: the version this device accepted last there, if any.
        accepted_at: when (Unix time).
    """

    insee: str
    commune: str
    terms_version: str
    legal: dict[str, Any] | None = None
    accepted_version: str | None = None
    accepted_at: float | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class ClientStatus:
    """What the session store says about a logged-in client.

    Attributes:
        ap_id: the access point the client is on.
        client_mac: the client's MAC address (never shown on a page).
        client_ip: the client's IP address on the access point's network.
        method: how the client logged in, if known.
        started_at: when its session started (Unix time).
        seconds_remaining: seconds before the session ends, None without a time limit.
        bytes_remaining: bytes left (up + down), None without a data quota.
        bytes_used: bytes counted so far (up + down).
    """

    ap_id: str
    client_mac: str
    client_ip: str
    method: str | None
    started_at: float
    seconds_remaining: int | None
    bytes_remaining: int | None
    bytes_used: int


@dataclasses.dataclass(frozen=True, slots=True)
class LogoutResult:
    """The controller's answer to a logout.

    Attributes:
        ok: the access point has cut the client off.
        error: a short reason when not ``ok``, for logs (never shown verbatim).
    """

    ok: bool
    error: str | None = None


class PortalBackend(Protocol):
    """Authorises clients on behalf of the portal and tells their state."""

    async def authorize(self, request: LoginRequest) -> LoginResult:
        """Let the client in and wait for the access point to confirm.

        Reports every failure in the result (``ok=False``) rather than raising.
        """
        ...

    async def policy(self, ap_id: str, client_mac: str | None) -> CommunePolicy | None:
        """The legal texts in force at ``ap_id`` and this device's last acceptance there.

        None when the access point is unknown (the portal then uses its built-in texts
        and the configured terms version).
        """
        ...

    async def client_status(self, client_ip: str, ap_id: str | None) -> ClientStatus | None:
        """The open session of the client at ``client_ip`` (on ``ap_id`` if given).

        None when the client is not logged in, or when the address is ambiguous
        (several access points have an open session for it and none was named).
        """
        ...

    async def deauthorize(self, ap_id: str, client_mac: str) -> LogoutResult:
        """Cut the client off and wait for the access point to confirm.

        Reports every failure in the result (``ok=False``) rather than raising.
        """
        ...

    async def extend(self, ap_id: str, client_mac: str) -> LoginResult:
        """Extend the client's open session once by the session length (re-authorise
        the same device); ``ok=False`` if it was extended already or the AP refused.
        """
        ...


@dataclasses.dataclass(slots=True)
class PortalCounters:
    """Counts of requests the portal refused or could not serve, and of logins.

    Attributes:
        bad_fas: the FAS query was missing or invalid.
        tampered_state: the form's login state was missing, malformed or altered.
        expired_state: the form's login state had expired.
        missing_consent: the form came back without the terms accepted.
        authorize_refused: the backend answered ``ok=False``.
        authorize_crashed: the backend raised (it should not).
        logins: clients let in.
        probes_captive: OS probes answered "log in first".
        probes_online: OS probes answered "online".
        capport_queries: RFC 8908 API queries.
        logouts: clients cut off at their request.
        logout_refused: logouts the access point did not confirm.
        bad_csrf: forms whose anti-forgery token was missing, wrong or expired.
        bad_code: voucher codes that could not be used.
        code_rate_limited: voucher attempts refused after too many wrong codes.
        terms_changed: forms sent back after the legal texts changed.
        method_off: forms of a login method the commune has not turned on.
        codes_sent: e-mail and SMS codes sent.
        code_send_failed: codes the SMTP relay or the SMS provider did not take.
        code_send_cooldown: codes refused because one was sent a moment ago.
        code_send_capped: codes refused by a daily cap (address, number or source).
        bad_address: e-mail addresses or phone numbers that are not valid.
        prefix_refused: phone numbers of a country codes are not sent to.
        extends: sessions extended.
        extend_refused: extensions refused (already extended, or the AP refused).
        returning: devices let in without a page (territorial continuity).
        uam_logins: one-time credentials handed to a UAM gateway.
        bad_uam: UAM redirects refused (malformed, unknown gateway, wrong checksum).
    """

    bad_fas: int = 0
    tampered_state: int = 0
    expired_state: int = 0
    missing_consent: int = 0
    authorize_refused: int = 0
    authorize_crashed: int = 0
    logins: int = 0
    probes_captive: int = 0
    probes_online: int = 0
    capport_queries: int = 0
    logouts: int = 0
    logout_refused: int = 0
    bad_csrf: int = 0
    bad_code: int = 0
    code_rate_limited: int = 0
    terms_changed: int = 0
    method_off: int = 0
    codes_sent: int = 0
    code_send_failed: int = 0
    code_send_cooldown: int = 0
    code_send_capped: int = 0
    bad_address: int = 0
    prefix_refused: int = 0
    extends: int = 0
    extend_refused: int = 0
    returning: int = 0
    uam_logins: int = 0
    bad_uam: int = 0

    def snapshot(self) -> dict[str, int]:
        """Return a copy of the counters, by name."""
        return dataclasses.asdict(self)
