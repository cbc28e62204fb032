"""Tests of captive_portal._methods: per-commune login methods and options."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from captive_portal._methods import options_for
from controller.config import CommunePortalSettings, PortalSettings, SmsCodeSettings


def test_defaults_are_click_through_and_vouchers_without_identity() -> None:
    options = options_for(PortalSettings(), "46042")
    assert options.methods == ("click-through", "voucher")
    assert not options.collects_identity
    assert not options.can_extend_session
    assert options.wifi4eu_network_id is None
    assert options_for(PortalSettings(), None) == options


def test_a_commune_overrides_methods_and_extension_others_keep_the_defaults() -> None:
    portal = PortalSettings(
        can_extend_session=False,
        sms=SmsCodeSettings(url="https://sms.example/v1/messages"),
        communes={
            "46042": CommunePortalSettings(methods=("sms", "click-through", "email")),
            "46102": CommunePortalSettings(can_extend_session=True),
        },
    )
    cahors = options_for(portal, "46042")
    # Shown in the page's fixed order, whatever the order in the settings.
    assert cahors.methods == ("click-through", "email", "sms")
    assert cahors.collects_identity and cahors.offers("sms") and not cahors.offers("voucher")
    figeac = options_for(portal, "46102")
    assert figeac.methods == ("click-through", "voucher") and figeac.can_extend_session
    assert options_for(portal, "46201").methods == ("click-through", "voucher")


def test_settings_refuse_unknown_methods_and_malformed_wifi4eu_identifiers() -> None:
    with pytest.raises(ValidationError):
        CommunePortalSettings.model_validate({"methods": ["facebook"]})
    with pytest.raises(ValidationError):
        CommunePortalSettings(wifi4eu_network_id="x'; alert(1); '")
    ok = CommunePortalSettings(wifi4eu_network_id="0c2a8f1e-5b7d-4c1a-9e3f-2d6b8a4c7e90")
    assert ok.wifi4eu_network_id is not None


def test_sms_anywhere_needs_a_provider_url() -> None:
    """Turning SMS codes on without a provider is a configuration error, not a page that
    fails at each visitor."""
    with pytest.raises(ValidationError, match="sms"):
        PortalSettings(communes={"46042": CommunePortalSettings(methods=("sms",))})
    with pytest.raises(ValidationError, match="sms"):
        PortalSettings(methods=("click-through", "sms"))
    PortalSettings(
        communes={"46042": CommunePortalSettings(methods=("sms",))},
        sms=SmsCodeSettings(url="https://sms.example/v1/messages"),
    )
