"""The dashboards' JSON: what ``/api/fleet`` and ``/api/sessions`` answer.

These models are also what the HTML page renders, so that the page served by the server
and the page updated by its script show the same values. None of them carries a MAC
address, an IP address or any other device identifier: a session is shown by a short
tag only (``controller.service.mac_tag``).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

__all__ = [
    "FleetResponse",
    "FleetSummary",
    "HotspotState",
    "HotspotView",
    "SessionView",
    "SessionsResponse",
]

HotspotState = Literal["online", "offline", "unknown"]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class HotspotView(_Model):
    """One access point, ready to display.

    Attributes:
        ap_id: the access point id.
        name: its display name.
        commune: the name of its commune.
        insee: the INSEE code of its commune.
        state: ``online``, ``offline`` or ``unknown``.
        state_label: the state in French (``en ligne``...).
        last_seen: when the controller last heard from it (Unix time), if ever.
        last_seen_iso: the same in ISO 8601 (UTC), or None.
        last_seen_text: the same relative to now, in French (``il y a 3 minutes``).
        agent_version: the version its agent reported, if any.
    """

    ap_id: str
    name: str
    commune: str
    insee: str
    state: HotspotState
    state_label: str
    last_seen: float | None
    last_seen_iso: str | None
    last_seen_text: str
    agent_version: str | None


class FleetSummary(_Model):
    """The counters at the top of the page.

    Attributes:
        hotspots_online: access points currently online.
        hotspots_total: registered access points.
        communes_equipped: communes with at least one registered access point.
        communes_total: communes of the territory (320 in the Lot).
    """

    hotspots_online: int
    hotspots_total: int
    communes_equipped: int
    communes_total: int


class FleetResponse(_Model):
    """``GET /api/fleet``."""

    generated_at: float
    summary: FleetSummary
    hotspots: list[HotspotView]


class SessionView(_Model):
    """One open session, ready to display (no device identifier, only a short tag).

    Attributes:
        tag: a short tag that tells devices apart on the page.
        ap_id: the access point.
        hotspot: the access point's display name.
        commune: the name of the access point's commune.
        started_at: start (Unix time).
        started_iso: start in ISO 8601 (UTC).
        started_text: start as a local clock time (Europe/Paris).
        duration_s: seconds since the start.
        duration_text: the same in French (``1 h 05 min``).
        up_bytes: bytes sent by the device.
        down_bytes: bytes received by the device.
        volume_text: both together in French units (``12,3 Mo``).
    """

    tag: str
    ap_id: str
    hotspot: str
    commune: str
    started_at: float
    started_iso: str
    started_text: str
    duration_s: int
    duration_text: str
    up_bytes: int
    down_bytes: int
    volume_text: str


class SessionsResponse(_Model):
    """``GET /api/sessions``.

    Attributes:
        generated_at: when the answer was built (Unix time).
        count: open sessions in all.
        truncated: True when ``sessions`` holds only the newest of them.
        sessions: the open sessions, newest first.
    """

    generated_at: float
    count: int
    truncated: bool
    sessions: list[SessionView]
