"""The dashboards' pure part: records in, display-ready views out, in French.

Nothing here does IO, reads a clock or knows aiohttp: callers pass ``now`` and the time
zone. The records it receives already hold a tag instead of the device's MAC address
(see ``dashboards.app``), so nothing past the point where a row is read can show one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Final

from babel import Locale
from babel.dates import format_datetime, format_timedelta
from babel.numbers import format_decimal

from dashboards.models import (
    FleetResponse,
    FleetSummary,
    HotspotState,
    HotspotView,
    SessionsResponse,
    SessionView,
)

__all__ = [
    "MAX_SESSIONS",
    "STATE_LABELS",
    "HotspotRecord",
    "SessionRecord",
    "fleet_view",
    "human_bytes",
    "human_duration",
    "iso_utc",
    "local_clock",
    "relative_time",
    "sessions_view",
]

# Parsed once at import: babel looks a locale name up on disk at every call otherwise.
LOCALE: Final = Locale.parse("fr_FR")
STATE_LABELS: Final[Mapping[HotspotState, str]] = {
    "online": "en ligne",
    "offline": "hors ligne",
    "unknown": "inconnu",
}
# A page (and its JSON) lists at most this many sessions, newest first: beyond a few
# thousand rows a browser table is no longer readable nor quick, and the counters still
# give the total. The whole Lot at its summer peak stays in the hundreds.
MAX_SESSIONS: Final = 2000
# Under this, "il y a 3 secondes" changes at every refresh and says nothing useful.
_JUST_NOW_S: Final = 5.0
# Decimal (SI) units, as network operators and phone data plans count them.
_UNITS: Final = ("o", "ko", "Mo", "Go", "To", "Po")
_NNBSP: Final = "\u202f"  # narrow no-break space, the French thousands separator
_NBSP: Final = "\u00a0"


@dataclasses.dataclass(frozen=True, slots=True)
class HotspotRecord:
    """What the dashboards read of one access point.

    Attributes:
        ap_id: the access point id.
        name: its display name.
        insee: its commune's INSEE code.
        commune: its commune's name.
        state: the fleet state as stored (``online``, ``offline``, ``unknown``...).
        last_seen: when a message of it was last processed (Unix time).
        agent_version: the version its agent reported.
    """

    ap_id: str
    name: str
    insee: str
    commune: str
    state: str
    last_seen: float | None
    agent_version: str | None


@dataclasses.dataclass(frozen=True, slots=True)
class SessionRecord:
    """What the dashboards read of one open session: a tag, never the MAC.

    Attributes:
        tag: the device's short tag.
        ap_id: the access point.
        insee: the commune's INSEE code.
        started_at: start (Unix time).
        up_bytes: bytes sent by the device.
        down_bytes: bytes received by the device.
    """

    tag: str
    ap_id: str
    insee: str
    started_at: float
    up_bytes: int
    down_bytes: int


# -- formatting ---------------------------------------------------------------------------


def relative_time(ts: float | None, now: float) -> str:
    """``il y a 3 minutes``; ``à l'instant`` under 5 s; ``jamais`` when ``ts`` is None.

    Args:
        ts: the past moment (Unix time), or None.
        now: the current Unix time.
    """
    if ts is None:
        return "jamais"
    delta = ts - now
    if abs(delta) < _JUST_NOW_S:
        return "à l'instant"
    return str(
        format_timedelta(timedelta(seconds=delta), add_direction=True, threshold=1.0, locale=LOCALE)
    )


def human_bytes(n: int) -> str:
    """A byte count in French decimal units: ``512 o``, ``1,2 ko``, ``12,3 Mo``.

    Args:
        n: a number of bytes (negative values count as 0).
    """
    value = float(max(0, n))
    unit = 0
    while value >= 1000 and unit < len(_UNITS) - 1:
        value /= 1000
        unit += 1
    pattern = "#,##0" if unit == 0 or value >= 100 else "#,##0.#"
    return f"{format_decimal(value, format=pattern, locale=LOCALE)}{_NBSP}{_UNITS[unit]}"


def human_duration(seconds: float) -> str:
    """A duration in French: ``45 s``, ``12 min``, ``1 h 05 min``, ``2 j 3 h``.

    Args:
        seconds: the duration (negative values count as 0).
    """
    s = int(max(0.0, seconds))
    days, rest = divmod(s, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}{_NBSP}j {hours}{_NBSP}h"
    if hours:
        return f"{hours}{_NBSP}h {minutes:02d}{_NBSP}min"
    if minutes:
        return f"{minutes}{_NBSP}min"
    return f"{secs}{_NBSP}s"


def iso_utc(ts: float) -> str:
    """ISO 8601 in UTC, to the second (for ``<time datetime>`` and the JSON)."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


def local_clock(ts: float, now: float, tz: tzinfo) -> str:
    """The local clock time of ``ts``: ``14:32`` today, ``27 nov. 14:32`` before.

    Args:
        ts: the moment (Unix time).
        now: the current Unix time.
        tz: the time zone of the readers (Europe/Paris).
    """
    when = datetime.fromtimestamp(ts, tz)
    if when.date() == datetime.fromtimestamp(now, tz).date():
        return when.strftime("%H:%M")
    return str(format_datetime(when, "d MMM HH:mm", tzinfo=tz, locale=LOCALE))


# -- views --------------------------------------------------------------------------------


def _state(raw: str) -> HotspotState:
    return raw if raw in ("online", "offline") else "unknown"  # type: ignore[return-value]


def fleet_view(hotspots: Sequence[HotspotRecord], communes_total: int, now: float) -> FleetResponse:
    """The fleet table and its counters.

    Args:
        hotspots: every registered access point.
        communes_total: how many communes the territory has.
        now: the current Unix time.
    """
    views = []
    for h in hotspots:
        state = _state(h.state)
        views.append(
            HotspotView(
                ap_id=h.ap_id,
                name=h.name,
                commune=h.commune,
                insee=h.insee,
                state=state,
                state_label=STATE_LABELS[state],
                last_seen=h.last_seen,
                last_seen_iso=iso_utc(h.last_seen) if h.last_seen is not None else None,
                last_seen_text=relative_time(h.last_seen, now),
                agent_version=h.agent_version or None,
            )
        )
    summary = FleetSummary(
        hotspots_online=sum(1 for v in views if v.state == "online"),
        hotspots_total=len(views),
        communes_equipped=len({h.insee for h in hotspots}),
        communes_total=communes_total,
    )
    return FleetResponse(generated_at=now, summary=summary, hotspots=views)


def sessions_view(
    sessions: Iterable[SessionRecord],
    hotspots: Mapping[str, HotspotRecord],
    commune_names: Mapping[str, str],
    now: float,
    tz: tzinfo,
    limit: int = MAX_SESSIONS,
) -> SessionsResponse:
    """The open sessions table, newest first as given.

    Args:
        sessions: the open sessions, newest first.
        hotspots: the access points by id (for their names).
        commune_names: commune names by INSEE code (for sessions of removed APs).
        now: the current Unix time.
        tz: the readers' time zone.
        limit: at most this many rows; ``truncated`` says when more exist.
    """
    views: list[SessionView] = []
    count = 0
    for s in sessions:
        count += 1
        if len(views) >= limit:
            continue
        ap = hotspots.get(s.ap_id)
        views.append(
            SessionView(
                tag=s.tag,
                ap_id=s.ap_id,
                hotspot=ap.name if ap is not None else s.ap_id,
                commune=commune_names.get(s.insee, s.insee),
                started_at=s.started_at,
                started_iso=iso_utc(s.started_at),
                started_text=local_clock(s.started_at, now, tz),
                duration_s=int(max(0.0, now - s.started_at)),
                duration_text=human_duration(now - s.started_at),
                up_bytes=s.up_bytes,
                down_bytes=s.down_bytes,
                volume_text=human_bytes(s.up_bytes + s.down_bytes),
            )
        )
    return SessionsResponse(
        generated_at=now, count=count, truncated=count > len(views), sessions=views
    )


def _load_locale_data() -> None:
    """Make babel load the French locale data now, at import, and not while serving."""
    now = 1_790_000_000.0
    human_bytes(1_234_567)
    relative_time(now - 90, now)
    local_clock(now, now, UTC)


_load_locale_data()
