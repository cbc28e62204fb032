"""Fleet health, pure: uptime over a window from incidents, transitions between snapshots,
and the health table's rows (state, last seen, uptime 7/30 days, skew, version, latency).

No IO and no clock: callers pass ``now``. What must not happen here: an uptime above
100 % or below 0 %, or time before a hotspot was registered counted as downtime.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Final

__all__ = [
    "DAY",
    "HealthRow",
    "Incident",
    "Snapshot",
    "Transition",
    "health_rows",
    "transitions",
    "uptime",
]

DAY: Final = 86400.0


@dataclasses.dataclass(frozen=True, slots=True)
class Incident:
    """A hotspot down from ``down_at`` until ``up_at`` (None: still down)."""

    ap_id: str
    down_at: float
    up_at: float | None


@dataclasses.dataclass(frozen=True, slots=True)
class Snapshot:
    """One hotspot as read from the registry.

    Attributes:
        ap_id: the access point.
        state: ``online``, ``offline`` or ``unknown``.
        state_since: when it entered that state (Unix time), if known.
    """

    ap_id: str
    state: str
    state_since: float | None


@dataclasses.dataclass(frozen=True, slots=True)
class Transition:
    """A hotspot went down (``down``) or came back (``up``) at ``at``."""

    ap_id: str
    kind: str
    at: float


def transitions(
    before: Mapping[str, Snapshot], after: Iterable[Snapshot], now: float
) -> list[Transition]:
    """What changed between two readings of the fleet.

    A hotspot seen for the first time offline opens an incident (it may have been down
    while nobody watched); one that leaves ``online`` for anything else is down; one that
    comes back ``online`` is up. Times are the registry's ``state_since`` when known.
    A flap shorter than the interval between two readings is not seen (a known limit,
    docs/DASHBOARDS.md).
    """
    out: list[Transition] = []
    for snap in after:
        old = before.get(snap.ap_id)
        at = snap.state_since if snap.state_since is not None else now
        if old is None:
            if snap.state == "offline":
                out.append(Transition(snap.ap_id, "down", at))
            continue
        was_up, is_up = old.state == "online", snap.state == "online"
        if was_up and not is_up:
            out.append(Transition(snap.ap_id, "down", at))
        elif is_up and not was_up:
            out.append(Transition(snap.ap_id, "up", at))
    return out


def uptime(
    incidents: Iterable[Incident], start: float, now: float, since: float | None = None
) -> float | None:
    """The share of ``[start, now]`` a hotspot was up, in percent (None: no time to judge).

    Args:
        incidents: the hotspot's incidents.
        start: the window's start.
        now: the window's end.
        since: when the hotspot was registered; time before it is not counted.
    """
    begin = max(start, since) if since is not None else start
    span = now - begin
    if span <= 0:
        return None
    down = 0.0
    for inc in incidents:
        lo = max(inc.down_at, begin)
        hi = min(inc.up_at if inc.up_at is not None else now, now)
        if hi > lo:
            down += hi - lo
    return max(0.0, min(100.0, 100.0 * (1 - down / span)))


@dataclasses.dataclass(frozen=True, slots=True)
class HealthRow:
    """One line of the health table.

    Attributes:
        ap_id: the access point.
        uptime_7d: percent up over the last 7 days (None: too recent).
        uptime_30d: percent up over the last 30 days.
        clock_skew_s: device clock minus controller clock, seconds.
        rtt_ms: the agent's round-trip time to the broker (uplink latency), if reported.
        incidents_30d: incidents that began in the last 30 days.
    """

    ap_id: str
    uptime_7d: float | None
    uptime_30d: float | None
    clock_skew_s: float | None
    rtt_ms: float | None
    incidents_30d: int


def _rtt(health: str | None) -> float | None:
    if not health:
        return None
    try:
        value = json.loads(health).get("broker_rtt_ms")
    except (ValueError, AttributeError):
        return None
    return float(value) if isinstance(value, int | float) else None


def health_rows(
    aps: Sequence[tuple[str, float | None, float | None, str | None]],
    incidents: Iterable[Incident],
    now: float,
) -> dict[str, HealthRow]:
    """The health row of each hotspot.

    Args:
        aps: ``(ap_id, created_at, clock_skew_s, health JSON)`` per hotspot.
        incidents: incidents of the last 30 days or more.
        now: the current Unix time.
    """
    by_ap: dict[str, list[Incident]] = {}
    for inc in incidents:
        by_ap.setdefault(inc.ap_id, []).append(inc)
    rows = {}
    for ap_id, created, skew, health in aps:
        mine = by_ap.get(ap_id, [])
        rows[ap_id] = HealthRow(
            ap_id,
            uptime(mine, now - 7 * DAY, now, created),
            uptime(mine, now - 30 * DAY, now, created),
            skew,
            _rtt(health),
            sum(1 for i in mine if i.down_at >= now - 30 * DAY),
        )
    return rows
