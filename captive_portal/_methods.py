"""Which login methods, WiFi4EU mode and session extension a commune's portal offers.

``[portal] methods`` and ``[portal] can_extend_session`` are the defaults;
``[portal.communes."<insee>"]`` overrides them for one commune. A method that is off is
neither shown nor accepted (the form handler refuses it). E-mail and SMS codes collect
identity data, which French law then asks to keep 5 years (CPCE R10-13 I): they are off
unless a commune turns them on.

Pure: reads the settings only.
"""

from __future__ import annotations

import dataclasses
from typing import Final

from controller.config import LoginMethodName, PortalSettings

__all__ = ["ALL_METHODS", "IDENTITY_METHODS", "CommuneOptions", "options_for"]

ALL_METHODS: Final[tuple[LoginMethodName, ...]] = ("click-through", "voucher", "email", "sms")
# Methods whose login stores who the visitor is (an e-mail address, a phone number).
IDENTITY_METHODS: Final = frozenset({"email", "sms"})


@dataclasses.dataclass(frozen=True, slots=True)
class CommuneOptions:
    """What the portal offers at one commune's access points.

    Attributes:
        methods: the login methods on, in the page's order.
        can_extend_session: a logged-in visitor may extend the session once.
        wifi4eu_network_id: the WiFi4EU network identifier, or None (not WiFi4EU).
        wifi4eu_self_test: the snippet's self-test flag (installation checks only).
    """

    methods: tuple[LoginMethodName, ...]
    can_extend_session: bool
    wifi4eu_network_id: str | None = None
    wifi4eu_self_test: bool = False

    @property
    def collects_identity(self) -> bool:
        """True when a method on here stores the visitor's e-mail address or phone."""
        return any(m in IDENTITY_METHODS for m in self.methods)

    def offers(self, method: str) -> bool:
        """True if ``method`` is on here."""
        return method in self.methods


def options_for(portal: PortalSettings, insee: str | None) -> CommuneOptions:
    """The options of commune ``insee`` (None: an unknown access point, the defaults).

    Args:
        portal: the ``[portal]`` settings.
        insee: the commune's INSEE code.
    """
    own = portal.communes.get(insee) if insee is not None else None
    methods = portal.methods if own is None or own.methods is None else own.methods
    extend = (
        portal.can_extend_session
        if own is None or own.can_extend_session is None
        else own.can_extend_session
    )
    ordered = tuple(m for m in ALL_METHODS if m in methods)
    return CommuneOptions(
        methods=ordered,
        can_extend_session=extend,
        wifi4eu_network_id=own.wifi4eu_network_id if own is not None else None,
        wifi4eu_self_test=own.wifi4eu_self_test if own is not None else False,
    )
