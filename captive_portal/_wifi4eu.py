"""WiFi4EU mode: the European Commission's monitoring snippet and its walled garden.

A commune funded by WiFi4EU must show the Commission's snippet on its portal: three
variables (start time, the network identifier the Commission gave the commune, the page
language) and the script ``https://collection.wifi4eu.ec.europa.eu/wifi4eu.min.js``,
which shows the WiFi4EU banner and reports the visit. Before login the visitor's device
must reach the script's hosts, so they go in the access point's walled garden
(``walled_garden_hosts``, which the controller adds to what the agent receives).

In that mode only, the page's Content-Security-Policy admits exactly this inline script
(by its SHA-256) and that one script URL; every other page keeps ``default-src 'none'``
with no script at all.

Pure.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import re
from typing import Final

from captive_portal._methods import options_for
from controller.config import PortalSettings

__all__ = [
    "SCRIPT_URL",
    "WALLED_GARDEN_HOSTS",
    "Snippet",
    "content_security_policy",
    "snippet",
    "walled_garden_hosts",
]

SCRIPT_URL: Final = "https://collection.wifi4eu.ec.europa.eu/wifi4eu.min.js"
SCRIPT_ORIGIN: Final = "https://collection.wifi4eu.ec.europa.eu"
COLLECTOR_ORIGIN: Final = "https://wifi4eucollectorprod.azurewebsites.net"
# What a captive device must reach for the snippet to load and report (pre-login).
WALLED_GARDEN_HOSTS: Final = (
    "collection.wifi4eu.ec.europa.eu",
    "wifi4eucollectorprod.azurewebsites.net",
)
# The Commission's identifiers are UUIDs; anything else never reaches the script.
_NETWORK_ID = re.compile(r"^[0-9A-Fa-f-]{8,64}$")
_LANGUAGE = re.compile(r"^[a-z]{2}$")


@dataclasses.dataclass(frozen=True, slots=True)
class Snippet:
    """The inline part of the snippet and the CSP source that admits it.

    Attributes:
        inline: the JavaScript put in the page's inline ``<script>``.
        script_url: the Commission's script.
        hash_source: ``'sha256-…'`` of ``inline`` for the Content-Security-Policy.
    """

    inline: str
    script_url: str
    hash_source: str


def snippet(network_id: str, language: str, *, self_test: bool = False) -> Snippet:
    """The snippet of network ``network_id`` for a page in ``language``.

    Raises:
        ValueError: the identifier or the language code is malformed (they are written
            into a script, so nothing else may pass).
    """
    if not _NETWORK_ID.match(network_id):
        raise ValueError("malformed WiFi4EU network identifier")
    if not _LANGUAGE.match(language):
        raise ValueError("malformed language code")
    inline = (
        "var wifi4euTimerStart = Date.now();\n"
        f"var wifi4euNetworkIdentifier = '{network_id}';\n"
        f"var wifi4euLanguage = '{language}';\n"
    )
    if self_test:
        inline += "var selftestModus = true;\n"
    digest = base64.b64encode(hashlib.sha256(inline.encode()).digest()).decode("ascii")
    return Snippet(inline=inline, script_url=SCRIPT_URL, hash_source=f"'sha256-{digest}'")


def content_security_policy(base: str, snip: Snippet) -> str:
    """``base`` (the portal's strict policy) plus exactly the snippet's script, its
    collector and its banner image."""
    return (
        f"{base}; script-src {snip.hash_source} {snip.script_url}; "
        f"connect-src {SCRIPT_ORIGIN} {COLLECTOR_ORIGIN}; img-src {SCRIPT_ORIGIN}"
    )


def walled_garden_hosts(portal: PortalSettings, insee: str | None) -> tuple[str, ...]:
    """Extra host names the access points of commune ``insee`` must let captive devices
    reach (port 443): the WiFi4EU script's hosts in WiFi4EU mode, else none.

    The controller calls this when it builds an access point's configuration.
    """
    if options_for(portal, insee).wifi4eu_network_id is None:
        return ()
    return WALLED_GARDEN_HOSTS
