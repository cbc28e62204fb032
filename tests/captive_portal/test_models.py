"""Tests of captive_portal.models."""

from __future__ import annotations

import dataclasses

import pytest

from captive_portal.models import LoginRequest, LoginResult, PortalCounters


def test_counters_start_at_zero_and_snapshot_is_a_copy() -> None:
    """A snapshot lists every counter and does not change when the counters move on."""
    counters = PortalCounters()
    snapshot = counters.snapshot()
    assert snapshot == {
        "bad_fas": 0,
        "tampered_state": 0,
        "expired_state": 0,
        "missing_consent": 0,
        "authorize_refused": 0,
        "authorize_crashed": 0,
        "logins": 0,
        "probes_captive": 0,
        "probes_online": 0,
        "capport_queries": 0,
        "logouts": 0,
        "logout_refused": 0,
        "bad_csrf": 0,
        "bad_code": 0,
        "code_rate_limited": 0,
        "terms_changed": 0,
        "method_off": 0,
        "codes_sent": 0,
        "code_send_failed": 0,
        "code_send_cooldown": 0,
        "code_send_capped": 0,
        "bad_address": 0,
        "prefix_refused": 0,
        "extends": 0,
        "extend_refused": 0,
        "returning": 0,
        "uam_logins": 0,
        "bad_uam": 0,
    }
    counters.bad_fas += 1
    assert snapshot["bad_fas"] == 0
    assert counters.snapshot()["bad_fas"] == 1


def test_login_request_and_result_are_frozen() -> None:
    """The backend cannot alter a request, nor the portal a result."""
    request = LoginRequest(
        ap_id="lot-cahors-01",
        client_mac="aa:bb:cc:dd:ee:01",
        client_ip="10.46.1.23",
        method="click-through",
        terms_version="2026-11-01",
        language="fr",
    )
    result = LoginResult(ok=True, session_minutes=60, error=None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        request.ap_id = "other"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.ok = False  # type: ignore[misc]
