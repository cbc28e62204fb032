"""borne's captive portal: the page openNDS sends visitors to (FAS), in French and English.

``create_app`` builds the aiohttp application; the controller passes its settings and a
``PortalBackend`` that authorises clients through the access points' agents. The
portal itself holds no session and touches no database.
"""

from captive_portal._fas import (
    FasRequest,
    LoginState,
    auth_token,
    decode_fas,
    gateway_auth_url,
    sign_state,
    verify_state,
)
from captive_portal.app import COUNTERS, PortalRoutes, create_app, portal_routes
from captive_portal.errors import FasError, PortalError, StateError, StateExpired, StateInvalid
from captive_portal.models import LoginRequest, LoginResult, PortalBackend, PortalCounters

__all__ = [
    "COUNTERS",
    "FasError",
    "FasRequest",
    "LoginRequest",
    "LoginResult",
    "LoginState",
    "PortalBackend",
    "PortalCounters",
    "PortalError",
    "PortalRoutes",
    "StateError",
    "StateExpired",
    "StateInvalid",
    "auth_token",
    "create_app",
    "decode_fas",
    "gateway_auth_url",
    "portal_routes",
    "sign_state",
    "verify_state",
]
