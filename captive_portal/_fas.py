"""openNDS FAS level 1: decode the ``fas`` query, sign the portal's own login state.

openNDS (``fas_secure_enabled 1``) sends a new client to the portal with
``?fas=<base64>``. Decoded, the value is a ``", "``-separated list of ``key=value``
(``hid, clientip, clientmac, client_type, gatewayname, gatewayurl, version,
gatewayaddress, gatewaymac, originurl, clientif, themespec`` and any custom
parameters; openNDS ``http_microhttpd.c`` ``construct_querystring``). ``gatewayname``,
``gatewayurl`` and ``originurl`` are URL-encoded inside the list. openNDS 9.10 (Debian
12, checked against the real daemon in the tests) also sends ``gatewaymac`` without
separators and ends the list with ``(null)(null)(null)(null)`` for its unset custom
parameter lists.

Anyone can forge such a query, so the decoded fields are validated strictly here, and
the form the portal serves carries them in a state signed with HMAC-SHA256 so that the
POST that follows cannot change them (only the controller's ack proves that the client
really sits behind that gateway).

Pure functions only: no IO, no clock (``now`` is passed in), no logging.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import hmac
import ipaddress
import json
import re
from typing import Final
from urllib.parse import quote, unquote, urlencode, urlsplit

from agents.contract import AP_ID_RE, MAC_RE
from captive_portal.errors import FasError, StateExpired, StateInvalid

__all__ = [
    "DEFAULT_AUTH_DIR",
    "MAX_FAS_BYTES",
    "MAX_FAS_CHARS",
    "MAX_STATE_CHARS",
    "STATE_TTL_S",
    "FasRequest",
    "LoginState",
    "auth_token",
    "decode_fas",
    "gateway_auth_url",
    "mac_tag",
    "sign_state",
    "uam_request",
    "verify_state",
]

# openNDS builds the decoded list in a QUERYMAXLEN (4096 bytes) buffer and truncates
# beyond it, so a longer value did not come from openNDS.
MAX_FAS_BYTES: Final = 4096
MAX_FAS_CHARS: Final = 4 * -(-MAX_FAS_BYTES // 3)
# A longer origin URL is dropped (not refused: it is only used for a "continue" link).
MAX_URL_CHARS: Final = 2048
# openNDS sends 12 fields plus the operator's custom parameters.
MAX_FIELDS: Final = 64
# A visitor reads the page, maybe the terms, and ticks a box: minutes, not hours. A short
# validity also bounds how long a copied form can be replayed.
STATE_TTL_S: Final = 15 * 60
# The state holds at most the fields of one FAS query, re-encoded.
MAX_STATE_CHARS: Final = 2 * MAX_FAS_CHARS
DEFAULT_AUTH_DIR: Final = "opennds_auth"

_SEPARATOR: Final = ", "
_NULL: Final = "(null)"
_STATE_VERSION: Final = "v1"
_B64_RE: Final = re.compile(r"[A-Za-z0-9+/_-]+={0,2}")
_KEY_RE: Final = re.compile(r"[A-Za-z0-9_.-]{1,64}")
# openNDS's hid is the SHA-256 of the client token, in lower-case hex.
_HID_RE: Final = re.compile(r"[0-9a-f]{64}")
# A UAM gateway's challenge: 16 random octets in hex (CoovaChilli redir.c).
_UAM_CHALLENGE_RE: Final = re.compile(r"[0-9a-f]{32}")
_CONTROL_RE: Final = re.compile(r"[\x00-\x1f\x7f]")
_HOSTNAME_RE: Final = re.compile(
    r"(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
)
_ADDRESS_RE: Final = re.compile(
    r"(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[^:\[\]]+))(?::(?P<port>[0-9]{1,5}))?"
)
_TEXT_RE: Final = re.compile(r"[\x20-\x7e]{1,128}")
# The fields the POST needs (the informational ones would only make the page heavier:
# the state is repeated in the form and in each link that keeps it).
_STATE_FIELDS: Final = (
    "hid",
    "client_ip",
    "client_mac",
    "gateway_name",
    "gateway_address",
    "origin_url",
    "auth_dir",
    "uam_challenge",
)
_STATE_KEY_LABEL: Final = b"borne/captive_portal/login-state/v1"
_LOG_KEY_LABEL: Final = b"borne/captive_portal/log-mac/v1"


@dataclasses.dataclass(frozen=True, slots=True)
class FasRequest:
    """What openNDS says about a client that wants to log in, validated.

    Attributes:
        hid: openNDS's hashed client id (64 lower-case hex digits).
        client_ip: the client's IPv4 or IPv6 address, in canonical text form.
        client_mac: the client's MAC address, ``aa:bb:cc:dd:ee:ff``.
        gateway_name: openNDS ``gatewayname``, which is the borne access point id.
        gateway_address: ``host:port`` of the openNDS web server (``10.46.1.1:2050``).
        origin_url: the http(s) page the visitor first asked for, if usable.
        gateway_mac: the gateway's MAC address, if sent, ``aa:bb:cc:dd:ee:ff``.
        gateway_url: the gateway's own http(s) URL, if sent.
        client_type: openNDS's guess at the client (``cpd_can``...), informational.
        client_if: the gateway interface the client uses, informational.
        version: the openNDS version, informational.
        auth_dir: the virtual directory of openNDS's auth endpoint.
        uam_challenge: for a UAM gateway (CoovaChilli-style, ``captive_portal._uam``),
            the challenge of its redirect, 32 lower-case hex digits; None for openNDS.
    """

    hid: str
    client_ip: str
    client_mac: str
    gateway_name: str
    gateway_address: str
    origin_url: str | None = None
    gateway_mac: str | None = None
    gateway_url: str | None = None
    client_type: str | None = None
    client_if: str | None = None
    version: str | None = None
    auth_dir: str = DEFAULT_AUTH_DIR
    uam_challenge: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class LoginState:
    """The content of a verified login state.

    Attributes:
        fas: the client's FAS fields, as decoded when the form was served; the
            informational ones (``gateway_mac``, ``gateway_url``, ``client_type``,
            ``client_if``, ``version``) are not carried and are None.
        terms_version: the version of the terms the form showed.
        expires_at: Unix time after which the state is refused.
    """

    fas: FasRequest
    terms_version: str
    expires_at: int


# -- decoding ---------------------------------------------------------------------------


def decode_fas(value: str) -> FasRequest:
    """Decode and validate the ``fas`` query parameter of openNDS FAS level 1.

    Args:
        value: the parameter as the web framework hands it over (already
            percent-decoded; a ``+`` turned into a space is put back).

    Returns:
        The validated request.

    Raises:
        FasError: the value is missing, too long, not base64, not UTF-8 text, not a
            ``key=value`` list, lacks a required field, or a field is malformed.
    """
    fields = _split_fields(_b64_text(value))
    for name in ("gatewayname", "gatewayurl", "originurl"):
        if name in fields:
            # These three are URL-encoded by openNDS (uh_urlencode) inside the list.
            try:
                fields[name] = unquote(fields[name], errors="strict")
            except UnicodeDecodeError as exc:
                raise FasError(f"the fas field {name!r} is not URL-encoded UTF-8") from exc
    return _build(
        hid=_required(fields, "hid"),
        client_ip=_required(fields, "clientip"),
        client_mac=_required(fields, "clientmac"),
        gateway_name=_required(fields, "gatewayname"),
        gateway_address=_required(fields, "gatewayaddress"),
        origin_url=fields.get("originurl"),
        gateway_mac=fields.get("gatewaymac"),
        gateway_url=fields.get("gatewayurl"),
        client_type=fields.get("client_type"),
        client_if=fields.get("clientif"),
        version=fields.get("version"),
        auth_dir=fields.get("authdir"),
    )


def _b64_text(value: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise FasError("the fas parameter is missing or empty")
    if len(value) > MAX_FAS_CHARS:
        raise FasError(f"the fas parameter is longer than {MAX_FAS_CHARS} characters")
    # openNDS puts standard base64 into the URL without percent-encoding it, so a form
    # decoder turns each '+' into a space; no space is part of base64, so undo it. The
    # URL-safe alphabet and missing padding are accepted too (proxies rewrite URLs).
    text = value.replace(" ", "+").strip()
    if not _B64_RE.fullmatch(text):
        raise FasError("the fas parameter is not base64")
    text = text.rstrip("=").translate(str.maketrans("-_", "+/"))
    text += "=" * (-len(text) % 4)
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise FasError("the fas parameter is not valid base64") from exc
    if len(raw) > MAX_FAS_BYTES:
        raise FasError(f"the decoded fas parameter is longer than {MAX_FAS_BYTES} bytes")
    try:
        decoded = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FasError("the decoded fas parameter is not UTF-8 text") from exc
    if _CONTROL_RE.search(decoded):
        raise FasError("the decoded fas parameter contains control characters")
    return decoded


def _split_fields(text: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    # openNDS ends the list with a separator; empty items are skipped.
    for position, part in enumerate(text.split(_SEPARATOR)):
        # openNDS 9 formats its unset custom parameter lists with printf("%s", NULL),
        # which glibc prints as "(null)": "themespec=(null), (null)(null)(null)(null)".
        item = part.strip()
        while item.startswith(_NULL):
            item = item[len(_NULL) :]
        if not item:
            continue
        key, sep, val = item.partition("=")
        if not sep or not _KEY_RE.fullmatch(key):
            # Not quoted: the item may hold personal data and this message is logged.
            raise FasError(f"item {position} of the fas list is not key=value")
        if key in fields:
            raise FasError(f"the fas list repeats the field {key!r}")
        fields[key] = val
        if len(fields) > MAX_FIELDS:
            raise FasError(f"the fas list has more than {MAX_FIELDS} fields")
    return fields


def _required(fields: dict[str, str], key: str) -> str:
    value = fields.get(key, "")
    if not value:
        raise FasError(f"the fas list lacks the field {key!r}")
    return value


def _build(
    *,
    hid: str,
    client_ip: str,
    client_mac: str,
    gateway_name: str,
    gateway_address: str,
    origin_url: str | None,
    gateway_mac: str | None,
    gateway_url: str | None,
    client_type: str | None,
    client_if: str | None,
    version: str | None,
    auth_dir: str | None,
    uam_challenge: str | None = None,
) -> FasRequest:
    """Validate decoded values; required ones raise, informational ones become None."""
    if not _HID_RE.fullmatch(hid):
        raise FasError("hid is not 64 lower-case hex digits")
    if uam_challenge is not None and not _UAM_CHALLENGE_RE.fullmatch(uam_challenge):
        raise FasError("the UAM challenge is not 32 lower-case hex digits")
    return FasRequest(
        hid=hid,
        client_ip=_ip(client_ip),
        client_mac=_mac(client_mac, "clientmac"),
        gateway_name=_gateway_name(gateway_name),
        gateway_address=_address(gateway_address),
        origin_url=_http_url(origin_url),
        gateway_mac=_gateway_mac(gateway_mac),
        gateway_url=_http_url(gateway_url),
        client_type=_text(client_type),
        client_if=_text(client_if),
        version=_text(version),
        auth_dir=_auth_dir(auth_dir),
        uam_challenge=uam_challenge,
    )


def uam_request(
    *,
    challenge: str,
    client_ip: str,
    client_mac: str,
    gateway_name: str,
    gateway_address: str,
    origin_url: str | None,
) -> FasRequest:
    """Validate a UAM gateway's redirect fields as a login request (``captive_portal._uam``).

    ``hid`` has no meaning there: it is derived from the challenge so that the state
    keeps one shape.

    Raises:
        FasError: a field is malformed.
    """
    return _build(
        hid=hashlib.sha256(b"borne/uam/" + challenge.encode()).hexdigest(),
        client_ip=client_ip,
        client_mac=client_mac,
        gateway_name=gateway_name,
        gateway_address=gateway_address,
        origin_url=origin_url,
        gateway_mac=None,
        gateway_url=None,
        client_type=None,
        client_if=None,
        version=None,
        auth_dir=None,
        uam_challenge=challenge,
    )


def _ip(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError as exc:
        # The value is not quoted: it is personal data and this message is logged.
        raise FasError("clientip is not an IP address") from exc


def _mac(value: str, name: str) -> str:
    mac = value.lower()
    if not MAC_RE.fullmatch(mac):
        # The value is not quoted: a client MAC must never reach the logs.
        raise FasError(f"{name} is not a MAC address like aa:bb:cc:dd:ee:ff")
    return mac


def _gateway_mac(value: str | None) -> str | None:
    # Informational. openNDS 9.10 sends it without separators ("3e4047c999f7").
    if not value:
        return None
    mac = value.lower()
    if re.fullmatch(r"[0-9a-f]{12}", mac):
        mac = ":".join(mac[i : i + 2] for i in range(0, 12, 2))
    return mac if MAC_RE.fullmatch(mac) else None


def _gateway_name(value: str) -> str:
    # The gateway name is the access point id of the MQTT contract.
    if not AP_ID_RE.fullmatch(value):
        raise FasError(f"gatewayname is not an access point id: {value[:70]!r}")
    return value


def _address(value: str) -> str:
    match = _ADDRESS_RE.fullmatch(value)
    if match is None:
        raise FasError(f"gatewayaddress is not host[:port]: {value[:80]!r}")
    port = match["port"]
    if port is not None and not 1 <= int(port) <= 65535:
        raise FasError(f"gatewayaddress has an invalid port: {value[:80]!r}")
    if match["v6"] is not None:
        try:
            ipaddress.IPv6Address(match["v6"])
        except ValueError as exc:
            raise FasError(f"gatewayaddress is not an IPv6 address: {value[:80]!r}") from exc
        return value
    host = match["host"]
    if host.replace(".", "").isdigit():
        try:
            ipaddress.IPv4Address(host)
        except ValueError as exc:
            raise FasError(f"gatewayaddress is not an IPv4 address: {value[:80]!r}") from exc
    elif not _HOSTNAME_RE.fullmatch(host):
        raise FasError(f"gatewayaddress is not a host name: {value[:80]!r}")
    return value


def _http_url(value: str | None) -> str | None:
    # Informational: an unusable URL is dropped rather than refusing the login, and only
    # http(s) is kept because the URL ends up in a link on the success page.
    if not value or len(value) > MAX_URL_CHARS or _CONTROL_RE.search(value) or " " in value:
        return None
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    return value


def _text(value: str | None) -> str | None:
    if value is None or not _TEXT_RE.fullmatch(value):
        return None
    return value


def _auth_dir(value: str | None) -> str:
    if value and re.fullmatch(r"[A-Za-z0-9_-]{1,64}", value):
        return value
    return DEFAULT_AUTH_DIR


# -- openNDS authentication by the browser ------------------------------------------------


def auth_token(hid: str, fas_key: str) -> str:
    """Return the token openNDS expects back from a FAS: ``sha256(hid + faskey)`` in hex.

    Args:
        hid: the ``hid`` field of the FAS query.
        fas_key: openNDS's ``faskey``.
    """
    return hashlib.sha256((hid + fas_key).encode("utf-8")).hexdigest()


def gateway_auth_url(fas: FasRequest, fas_key: str, redir: str | None = None) -> str:
    """Return the URL that lets the client in when its browser opens it.

    ``http://<gatewayaddress>/<authdir>/?tok=<sha256(hid + faskey)>&redir=<url>``. The
    main flow authorises through the agent instead (the decision stays with the
    controller and works for every gateway type); this is the agent-less alternative.

    Args:
        fas: the decoded FAS request.
        fas_key: openNDS's ``faskey``.
        redir: where openNDS sends the browser afterwards; defaults to the origin URL.
    """
    query = {"tok": auth_token(fas.hid, fas_key)}
    target = redir if redir is not None else fas.origin_url
    if target:
        query["redir"] = target
    return f"http://{fas.gateway_address}/{fas.auth_dir}/?{urlencode(query, quote_via=quote)}"


# -- signed login state -----------------------------------------------------------------


def _subkey(key: str, label: bytes) -> bytes:
    # One secret (openNDS's faskey) serves several purposes: derive one key per purpose
    # so that a value signed for one can never be accepted for another.
    return hmac.new(key.encode("utf-8"), label, hashlib.sha256).digest()


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64url(text: str) -> bytes:
    if not re.fullmatch(r"[A-Za-z0-9_-]*", text):
        raise StateInvalid("the login state is not base64url")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise StateInvalid("the login state is not base64url") from exc


def sign_state(
    fas: FasRequest,
    key: str,
    *,
    now: float,
    terms_version: str,
    ttl_s: int = STATE_TTL_S,
) -> str:
    """Return an opaque, signed login state to put in the form.

    Format: ``v1.<base64url(JSON)>.<base64url(HMAC-SHA256)>``, the MAC covering
    ``v1.<payload>`` under a key derived from ``key``.

    Args:
        fas: the decoded FAS request.
        key: the shared FAS key (``settings.portal.fas_key``).
        now: the current Unix time.
        terms_version: the version of the terms shown with the form.
        ttl_s: validity in seconds.
    """
    fields = {k: getattr(fas, k) for k in _STATE_FIELDS}
    payload = {
        "f": {k: v for k, v in fields.items() if v is not None and v != DEFAULT_AUTH_DIR},
        "t": terms_version,
        "e": int(now) + ttl_s,
    }
    body = _b64url(json.dumps(payload, separators=(",", ":"), sort_keys=True).encode())
    signed = f"{_STATE_VERSION}.{body}"
    mac = hmac.new(_subkey(key, _STATE_KEY_LABEL), signed.encode("ascii"), hashlib.sha256)
    return f"{signed}.{_b64url(mac.digest())}"


def verify_state(token: str, key: str, *, now: float) -> LoginState:
    """Check a login state's signature and expiry and return its content.

    Args:
        token: the state sent back by the form.
        key: the shared FAS key (``settings.portal.fas_key``).
        now: the current Unix time.

    Raises:
        StateInvalid: the state is malformed or its signature does not match.
        StateExpired: the state is authentic but expired.
    """
    if not isinstance(token, str) or not token:
        raise StateInvalid("the login state is missing")
    if len(token) > MAX_STATE_CHARS:
        raise StateInvalid("the login state is too long")
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != _STATE_VERSION:
        raise StateInvalid("the login state is not in the v1 format")
    given = _unb64url(parts[2])
    expected = hmac.new(
        _subkey(key, _STATE_KEY_LABEL), f"{parts[0]}.{parts[1]}".encode("ascii"), hashlib.sha256
    ).digest()
    if not hmac.compare_digest(given, expected):
        raise StateInvalid("the login state's signature does not match")
    # Authentic from here on: whatever fails below is our own bug or an old format.
    try:
        payload = json.loads(_unb64url(parts[1]))
        fields = payload["f"]
        terms_version = payload["t"]
        expires_at = payload["e"]
    except (ValueError, KeyError, TypeError) as exc:
        raise StateInvalid("the login state's content is malformed") from exc
    if (
        not isinstance(fields, dict)
        or not isinstance(terms_version, str)
        or not isinstance(expires_at, int)
        or not all(isinstance(v, str) for v in fields.values())
    ):
        raise StateInvalid("the login state's content is malformed")
    if not set(fields) <= set(_STATE_FIELDS):
        raise StateInvalid("the login state has unknown fields")
    try:
        fas = _build(
            hid=fields.get("hid", ""),
            client_ip=fields.get("client_ip", ""),
            client_mac=fields.get("client_mac", ""),
            gateway_name=fields.get("gateway_name", ""),
            gateway_address=fields.get("gateway_address", ""),
            origin_url=fields.get("origin_url"),
            gateway_mac=None,
            gateway_url=None,
            client_type=None,
            client_if=None,
            version=None,
            auth_dir=fields.get("auth_dir"),
            uam_challenge=fields.get("uam_challenge"),
        )
    except FasError as exc:
        raise StateInvalid(f"the login state's fields are invalid: {exc}") from exc
    if now > expires_at:
        raise StateExpired("the login state has expired")
    return LoginState(fas=fas, terms_version=terms_version, expires_at=expires_at)


# -- logging ----------------------------------------------------------------------------


def mac_tag(mac: str, key: str) -> str:
    """Return a short keyed hash of a MAC address, to tell clients apart in logs.

    The tag cannot be turned back into the MAC without the key (a plain hash could: the
    MAC space is small). Ten hex digits keep collisions rare at the scale of one log.

    Args:
        mac: the MAC address.
        key: the shared FAS key (a purpose-specific key is derived from it).
    """
    digest = hmac.new(_subkey(key, _LOG_KEY_LABEL), mac.lower().encode(), hashlib.sha256)
    return digest.hexdigest()[:10]
