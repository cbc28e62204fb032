"""UAM gateways (CoovaChilli-style): the redirect's query, its checksum, the PAP
password encoded with the challenge, and the portal's UAM pages.

A UAM gateway sends a new client to ``GET /uam?res=notyet&uamip=…&uamport=…&challenge=…
&mac=…&ip=…&nasid=…&userurl=…[&md=…]`` (CoovaChilli ``redir.c``). The portal shows its
usual login page; once the visitor accepts (click-through or voucher), the controller
issues a **one-time RADIUS credential** bound to that NAS and that device, and the
browser is sent to ``http://uamip:uamport/logon?username=…&password=…``, where the
gateway turns it into an Access-Request to borne's RADIUS server (accepted once).

The password travels encoded as CoovaChilli's ``hotspotlogin.cgi`` does for PAP: the
key is ``MD5(challenge octets + uamsecret)`` (the bare challenge without a uamsecret),
repeated to the password's length, XORed with it, in hex. With a uamsecret the redirect
carries ``md``, the upper-case hex ``MD5(URL before "&md=" + uamsecret)``: the portal
refuses a redirect whose checksum does not match.

Pure functions and dataclasses at the top; ``UamPages`` adapts HTTP.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import ipaddress
import logging
import re
from collections.abc import Iterable, Mapping
from itertools import cycle
from typing import Final, Protocol, runtime_checkable
from urllib.parse import quote, urlencode, urlsplit

from aiohttp import web

from captive_portal._continuity import ReturningPages, redirect
from captive_portal._fas import FasRequest, mac_tag, sign_state, uam_request
from captive_portal._pages import login_request
from captive_portal.errors import FasError, PortalError
from captive_portal.models import CommunePolicy, LoginRequest, LoginResult

__all__ = [
    "UAM_PATH",
    "UamBackend",
    "UamError",
    "UamGateway",
    "UamGrant",
    "UamPages",
    "UamQuery",
    "checksum_ok",
    "decode_password",
    "encode_password",
    "logon_url",
    "parse_uam",
    "uam_key",
]

logger = logging.getLogger(__name__)

# Where the gateway's ``uamserver`` points (on the portal's public origin).
UAM_PATH: Final = "/uam"
# CoovaChilli's ``res`` values (redir.c redir_reply, hotspotlogin.cgi).
RESULTS: Final = frozenset(
    {"notyet", "failed", "success", "already", "logoff", "wispr", "popup1", "popup2", "popup3"}
)
_LOGIN_RESULTS: Final = frozenset({"notyet", "failed", "wispr", "popup1", "popup2", "popup3"})
_CHALLENGE_RE: Final = re.compile(r"[0-9a-fA-F]{32}")
_MD_RE: Final = re.compile(r"[0-9a-fA-F]{32}")
_MAC_RE: Final = re.compile(r"[0-9a-fA-F]{2}(?:[-:][0-9a-fA-F]{2}){5}")
_NASID_RE: Final = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
# RADIUS User-Password carries at most 128 octets (RFC 2865 §5.2).
MAX_PASSWORD_OCTETS: Final = 128
_MAX_QUERY_CHARS: Final = 4096
_CONTROL_RE: Final = re.compile(r"[\x00-\x1f\x7f]")


class UamError(PortalError):
    """A UAM redirect is malformed or not authentic (the message names no personal data)."""


@dataclasses.dataclass(frozen=True, slots=True)
class UamQuery:
    """A UAM gateway's redirect, validated.

    Attributes:
        res: what the gateway reports (``notyet``, ``failed``, ``success``...).
        uamip: the gateway's address on the clients' network.
        uamport: its UAM port (CoovaChilli: 3990).
        challenge: 32 lower-case hex digits (login results only; else None).
        mac: the client's MAC, ``aa:bb:cc:dd:ee:ff``.
        ip: the client's address (login results only; else None).
        nasid: the gateway's NAS-Identifier, which is its borne access point id.
        userurl: the page the visitor asked for, if usable.
        timeleft: seconds left in the session (``success``), if given.
        md: the checksum, if the gateway has a uamsecret.
    """

    res: str
    uamip: str
    uamport: int
    challenge: str | None
    mac: str
    ip: str | None
    nasid: str
    userurl: str | None = None
    timeleft: int | None = None
    md: str | None = None

    @property
    def gateway_address(self) -> str:
        """``uamip:uamport``."""
        return f"{self.uamip}:{self.uamport}"

    def login_request(self) -> FasRequest:
        """The login page's request (its signed state carries the challenge).

        Raises:
            FasError: a field is not acceptable for a login (no challenge, bad id...).
        """
        if self.challenge is None or self.ip is None:
            raise FasError("a UAM login needs the challenge and the client's address")
        return uam_request(
            challenge=self.challenge,
            client_ip=self.ip,
            client_mac=self.mac,
            gateway_name=self.nasid,
            gateway_address=self.gateway_address,
            origin_url=self.userurl,
        )


@dataclasses.dataclass(frozen=True, slots=True)
class UamGateway:
    """A registered UAM gateway: its commune and uamsecret (None: not configured)."""

    insee: str
    secret: str | None


@dataclasses.dataclass(frozen=True, slots=True)
class UamGrant:
    """The controller's answer to a UAM login: a one-time credential, or why not.

    Attributes:
        ok: a credential was issued.
        session_minutes: the session length granted (meaningful when ``ok``).
        username: the one-time user name.
        password: the one-time password, in clear (only ever sent encoded).
        error: a short reason when not ``ok``, for logs.
        bad_code: the voucher code cannot be used.
    """

    ok: bool
    session_minutes: int = 0
    username: str = ""
    password: str = ""
    error: str | None = None
    bad_code: bool = False

    def result(self) -> LoginResult:
        """The same outcome as a ``LoginResult`` (for the login flow's pages)."""
        return LoginResult(
            ok=self.ok,
            session_minutes=self.session_minutes,
            error=self.error,
            bad_code=self.bad_code,
        )


@runtime_checkable
class UamBackend(Protocol):
    """A backend that issues one-time RADIUS credentials to UAM gateways."""

    async def uam_gateway(self, nas_id: str) -> UamGateway | None:
        """The registered NAS ``nas_id``, None if unknown."""
        ...

    async def uam_login(self, request: LoginRequest) -> UamGrant:
        """Redeem the voucher if any, issue the credential, store the proof of
        acceptance; failures come back as ``ok=False``."""
        ...


# -- pure ------------------------------------------------------------------------------


def _one(query: Mapping[str, str], name: str) -> str | None:
    value = query.get(name)
    return value if value else None


def parse_uam(query: Mapping[str, str]) -> UamQuery:
    """Validate a UAM redirect's query (already percent-decoded).

    Raises:
        UamError: a field is missing or malformed.
    """
    res = (query.get("res") or "").lower()
    if res not in RESULTS:
        raise UamError("res is missing or unknown")
    try:
        uamip = str(ipaddress.IPv4Address(query.get("uamip", "")))
    except ValueError as exc:
        raise UamError("uamip is not an IPv4 address") from exc
    port = query.get("uamport", "")
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise UamError("uamport is not a port number")
    mac = query.get("mac", "")
    if not _MAC_RE.fullmatch(mac):
        raise UamError("mac is not a MAC address")  # not quoted: personal data
    nasid = query.get("nasid", "")
    if not _NASID_RE.fullmatch(nasid):
        raise UamError("nasid is missing or not an access point id")
    challenge = _one(query, "challenge")
    ip = _one(query, "ip")
    if res in _LOGIN_RESULTS:
        if challenge is None or not _CHALLENGE_RE.fullmatch(challenge):
            raise UamError("challenge is not 32 hex digits")
        try:
            ip = str(ipaddress.ip_address(ip or ""))
        except ValueError as exc:
            raise UamError("ip is not an IP address") from exc
    md = _one(query, "md")
    if md is not None and not _MD_RE.fullmatch(md):
        raise UamError("md is not 32 hex digits")
    timeleft = query.get("timeleft", "")
    return UamQuery(
        res=res,
        uamip=uamip,
        uamport=int(port),
        challenge=challenge.lower() if challenge is not None and res in _LOGIN_RESULTS else None,
        mac=mac.replace("-", ":").lower(),
        ip=ip if res in _LOGIN_RESULTS else None,
        nasid=nasid,
        userurl=_userurl(query.get("userurl")),
        timeleft=int(timeleft) if timeleft.isdigit() and len(timeleft) < 10 else None,
        md=md.upper() if md is not None else None,
    )


def _userurl(value: str | None) -> str | None:
    # Only used for a link and a redirect: an unusable URL is dropped, not refused.
    if not value or len(value) > 2048 or _CONTROL_RE.search(value) or " " in value:
        return None
    try:
        parts = urlsplit(value)
    except ValueError:
        return None
    return value if parts.scheme in ("http", "https") and parts.hostname else None


def checksum_ok(raw_query: str, bases: Iterable[str], secret: str) -> bool:
    """Whether the redirect's ``md`` is ``MD5(<uamserver>?<query before &md=> + secret)``.

    ``md`` comes last; only ``lang=`` (the portal's language switch) may follow it.

    Args:
        raw_query: the query string exactly as received (still percent-encoded).
        bases: the URLs the gateway may have as ``uamserver`` (the portal's public
            one, and the one this request reached).
        secret: the gateway's uamsecret.
    """
    head, sep, tail = raw_query.rpartition("&md=")
    md, *after = tail.split("&")
    # The gateway puts md last; only the portal's own language switch may follow it.
    if not sep or not _MD_RE.fullmatch(md) or any(not p.startswith("lang=") for p in after):
        return False
    for base in bases:
        joiner = "&" if "?" in base else "?"
        expected = hashlib.md5(  # CoovaChilli's checksum, not a choice
            f"{base}{joiner}{head}".encode() + secret.encode()
        ).hexdigest()
        if hmac.compare_digest(expected.upper(), md.upper()):
            return True
    return False


def uam_key(challenge: str, secret: str | None) -> bytes:
    """``MD5(challenge octets + uamsecret)``, or the challenge octets without a secret."""
    octets = bytes.fromhex(challenge)
    if not secret:
        return octets
    return hashlib.md5(octets + secret.encode()).digest()  # CoovaChilli's key


def encode_password(password: str, challenge: str, secret: str | None) -> str:
    """The ``password=`` value of ``/logon`` (PAP): hex of password XOR the repeated key.

    Raises:
        ValueError: the password is empty or longer than RADIUS allows.
    """
    plain = password.encode()
    if not 0 < len(plain) <= MAX_PASSWORD_OCTETS:
        raise ValueError(f"a PAP password has 1 to {MAX_PASSWORD_OCTETS} octets")
    key = uam_key(challenge, secret)
    return bytes(p ^ k for p, k in zip(plain, cycle(key), strict=False)).hex()


def decode_password(encoded: str, challenge: str, secret: str | None) -> bytes:
    """What the gateway does with ``password=``: the clear password it sends in RADIUS."""
    key = uam_key(challenge, secret)
    return bytes(p ^ k for p, k in zip(bytes.fromhex(encoded), cycle(key), strict=False))


def logon_url(query: UamQuery | FasRequest, username: str, encoded_password: str) -> str:
    """``http://uamip:uamport/logon?username=…&password=…[&userurl=…]``."""
    if isinstance(query, UamQuery):
        address, userurl = query.gateway_address, query.userurl
    else:
        address, userurl = query.gateway_address, query.origin_url
    params = {"username": username, "password": encoded_password}
    if userurl:
        params["userurl"] = userurl
    return f"http://{address}/logon?{urlencode(params, quote_via=quote)}"


# -- HTTP ------------------------------------------------------------------------------


class UamPages(ReturningPages):
    """``GET /uam`` and the UAM end of the login flow."""

    def uam_backend(self) -> UamBackend:
        """The backend, if it serves UAM gateways (else 404)."""
        if not isinstance(self.backend, UamBackend):
            raise web.HTTPNotFound()
        return self.backend

    async def uam_entry(self, request: web.Request) -> web.Response:
        """``GET /uam``: a UAM gateway's redirect (login page, result pages)."""
        backend = self.uam_backend()
        lang = self.language(request)
        _ = self.translations[lang].gettext
        raw = request.raw_path.partition("?")[2]
        try:
            if len(raw) > _MAX_QUERY_CHARS:
                raise UamError("the query is too long")
            query = parse_uam(request.query)
        except UamError as exc:
            self.counters.bad_uam += 1
            logger.warning("refused a UAM redirect: %s", exc)
            return self.invalid_link(lang, request)
        gateway = await backend.uam_gateway(query.nasid)
        if gateway is None:
            self.counters.bad_uam += 1
            logger.warning("refused a UAM redirect of unknown NAS %s", query.nasid)
            return self.invalid_link(lang, request)
        if query.res in ("success", "already"):
            minutes = (query.timeleft or 0) // 60
            if not minutes:
                return self.already_connected(lang, request.rel_url)
            return self.success_page(
                lang,
                title=_("You are connected"),
                minutes=minutes,
                ap_id=query.nasid,
                continue_url=query.userurl,
                switch_to=request.rel_url,
            )
        if query.res == "logoff":
            return self.message(
                lang,
                title=_("You are logged out"),
                text=_("Open any web page to log in again."),
                status=200,
                alert=False,
                switch_to=request.rel_url,
            )
        # The result pages above only inform; a login needs an authentic redirect.
        secret = gateway.secret or self.uam_secret()
        if secret is not None:
            bases = (self.absolute(UAM_PATH), str(request.url.with_query(None)))
            if not checksum_ok(raw, bases, secret):
                self.counters.bad_uam += 1
                logger.warning("refused a UAM redirect of %s: bad checksum", query.nasid)
                return self.invalid_link(lang, request)
        try:
            fas = query.login_request()
        except FasError as exc:
            self.counters.bad_uam += 1
            logger.warning("refused a UAM redirect: %s", exc)
            return self.invalid_link(lang, request)
        policy = await self.commune_policy(fas.gateway_name, fas.client_mac)
        version = self.terms_version(policy)
        if query.res != "failed":
            shortcut = await self.uam_returning(fas, policy, lang)
            if shortcut is not None:
                return shortcut
        state = sign_state(fas, self.key, now=self.clock(), terms_version=version)
        failed = _("The hotspot could not connect your device.")
        logger.info(
            "UAM login page for ap=%s client=%s",
            fas.gateway_name,
            mac_tag(fas.client_mac, self.key),
            extra={"ap": fas.gateway_name},
        )
        return self.login_form(
            lang,
            state,
            fas,
            policy=policy,
            terms_version=version,
            error=failed if query.res == "failed" else None,
        )

    def uam_secret(self) -> str | None:
        """``[portal] uam_secret``, for gateways registered without their own."""
        secret = self.settings.portal.uam_secret
        return secret.get_secret_value() if secret is not None else None

    async def uam_returning(
        self, fas: FasRequest, policy: CommunePolicy | None, lang: str
    ) -> web.Response | None:
        """A device recognised by continuity goes straight to the gateway's /logon."""
        if self.settings.portal.continuity_hours <= 0:
            return None
        request = login_request(fas, "returning", self.terms_version(policy), lang)
        result, location = await self.uam_authorize(request, fas)
        if result is None or not result.ok or location is None:
            return None
        self.counters.returning += 1
        return redirect(location)

    async def uam_authorize(
        self, request: LoginRequest, fas: FasRequest
    ) -> tuple[LoginResult | None, str | None]:
        """Have the controller issue the one-time credential; return the outcome and the
        gateway's /logon URL (None when refused)."""
        backend = self.uam_backend()
        assert fas.uam_challenge is not None
        try:
            grant = await backend.uam_login(request)
        except Exception:
            self.counters.authorize_crashed += 1
            logger.error("backend crashed issuing a UAM credential", exc_info=True)
            return None, None
        if not grant.ok:
            return grant.result(), None
        gateway = await backend.uam_gateway(fas.gateway_name)
        secret = (gateway.secret if gateway is not None else None) or self.uam_secret()
        encoded = encode_password(grant.password, fas.uam_challenge, secret)
        self.counters.uam_logins += 1
        return grant.result(), logon_url(fas, grant.username, encoded)
