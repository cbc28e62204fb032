"""Shared fixtures of the captive portal tests: an openNDS-like FAS query builder."""

from __future__ import annotations

import base64
from collections.abc import Callable

import pytest

# The fields openNDS 10 sends at fas_secure_enabled 1, in its order
# (http_microhttpd.c construct_querystring); gatewayurl and originurl are URL-encoded.
OPENNDS_FIELDS: dict[str, str] = {
    "hid": "4f3c" + "0123456789abcdef" * 3 + "a1b2c3d4e5f6",
    "clientip": "10.46.1.23",
    "clientmac": "aa:bb:cc:dd:ee:01",
    "client_type": "cpd_can",
    "gatewayname": "lot-cahors-01",
    "gatewayurl": "http%3a%2f%2fstatus.client",
    "version": "10.2.0",
    "gatewayaddress": "10.46.1.1:2050",
    "gatewaymac": "00:11:22:33:44:55",
    "originurl": "http%3a%2f%2fexample.org%2fvisit%3fday%3d1",
    "clientif": "br-lan",
    "themespec": "(null)",
}


@pytest.fixture
def fas_fields() -> dict[str, str]:
    """Return a copy of a typical openNDS FAS field list."""
    return dict(OPENNDS_FIELDS)


@pytest.fixture
def make_fas_text() -> Callable[..., str]:
    """Return a builder of decoded FAS lists; an override of None drops the field."""

    def build(**overrides: str | None) -> str:
        fields = dict(OPENNDS_FIELDS)
        for key, value in overrides.items():
            if value is None:
                fields.pop(key, None)
            else:
                fields[key] = value
        # openNDS ends the list with the separator.
        return "".join(f"{k}={v}, " for k, v in fields.items())

    return build


@pytest.fixture
def make_fas(make_fas_text: Callable[..., str]) -> Callable[..., str]:
    """Return a builder of ``fas`` query values, base64 as openNDS sends them."""

    def build(**overrides: str | None) -> str:
        return base64.b64encode(make_fas_text(**overrides).encode()).decode("ascii")

    return build
