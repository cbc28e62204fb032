"""The day's working state and its aggregation into cells (pure: no IO, no clock).

:class:`DayAggregator` holds, for one local day and in memory only, each pseudonymous
device's sessions. :meth:`DayAggregator.cells` turns them into aggregate cells per
commune, hotspot and territory, per hour and per day, plus origin → destination flows
between the communes a device visited one after the other. Each device's contribution
is bounded before anything is counted (:class:`Limits`), which also bounds what Laplace
noise must hide (``_disclosure``). Once the cells are built the caller drops the
aggregator with the day's key: nothing here outlives the day.
"""

from __future__ import annotations

import bisect
import datetime as dt
import itertools
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

from controller.stats.models import DWELL_BUCKETS, PRESENCE_FIELDS, Cell, CellKey

__all__ = ["DayAggregator", "Limits", "Visit", "day_bounds", "local_day"]

_F = {name: i for i, name in enumerate(PRESENCE_FIELDS)}
_VISITORS = _F["visitors"]
_RANDOMISED = _F["randomised_visitors"]
_SESSIONS = _F["sessions"]
_REPEAT = _F["repeat_visitors"]
_UP = _F["bytes_up"]
_DOWN = _F["bytes_down"]
_DWELL_FIELDS = [_F[name] for name, _ in DWELL_BUCKETS]
_DWELL_BOUNDS = [bound for _, bound in DWELL_BUCKETS]


@dataclass(frozen=True)
class Limits:
    """Bounds on one device's contribution to one day's statistics.

    Attributes:
        max_sessions: sessions of a device counted per day (its first ones).
        max_communes: distinct communes a device is counted in per day (its first ones).
        max_flows: distinct origin → destination pairs a device adds per day (its first);
            legal_privacy.md §4.3 suggests 3.
        bytes_clip: per-session cap on each data volume, in bytes.
    """

    max_sessions: int = 20
    max_communes: int = 8
    max_flows: int = 3
    bytes_clip: int = 2 * 1024**3


@dataclass(frozen=True, slots=True)
class Visit:
    """One session of one pseudonymous device at one hotspot."""

    pseudonym: bytes
    randomised: bool
    insee: str
    ap_id: str
    start: float
    stop: float
    up: int
    down: int


_LAST_DAY: list[tuple[float, float, str, ZoneInfo]] = []


def local_day(t: float, tz: ZoneInfo) -> str:
    """The local date (``YYYY-MM-DD``) of UTC time ``t``."""
    # Consecutive sessions mostly fall on the same day: remember its bounds.
    if _LAST_DAY:
        start, end, day, zone = _LAST_DAY[0]
        if zone is tz and start <= t < end:
            return day
    day = dt.datetime.fromtimestamp(t, tz).date().isoformat()
    start, end = day_bounds(day, tz)
    _LAST_DAY[:] = [(start, end, day, tz)]
    return day


def day_bounds(day: str, tz: ZoneInfo) -> tuple[float, float]:
    """UTC start and end of a local day (23, 24 or 25 hours long)."""
    d = dt.date.fromisoformat(day)
    start = dt.datetime(d.year, d.month, d.day, tzinfo=tz).timestamp()
    n = d + dt.timedelta(days=1)
    end = dt.datetime(n.year, n.month, n.day, tzinfo=tz).timestamp()
    return start, end


@dataclass
class _Device:
    randomised: bool
    visits: list[Visit] = field(default_factory=list)


class DayAggregator:
    """One local day's sessions of pseudonymous devices, aggregated on demand."""

    def __init__(self, day: str, tz: ZoneInfo, limits: Limits) -> None:
        self.day = day
        self.tz = tz
        self.limits = limits
        self.start, self.end = day_bounds(day, tz)
        self._devices: dict[bytes, _Device] = {}
        self.sessions_in = 0

    def __len__(self) -> int:
        return len(self._devices)

    def add(self, visit: Visit) -> None:
        """Count one session of the day (by its start)."""
        dev = self._devices.get(visit.pseudonym)
        if dev is None:
            dev = self._devices[visit.pseudonym] = _Device(visit.randomised)
        dev.visits.append(visit)
        self.sessions_in += 1

    def add_all(self, visits: Iterable[Visit]) -> None:
        """Count many sessions."""
        for v in visits:
            self.add(v)

    def cells(self) -> list[Cell]:
        """Every non-empty cell of the day, before any disclosure control."""
        day0, day_end = int(self.start), self.end
        last_hour = int((day_end - 1 - day0) // 3600)
        # Cells are numbered as they appear; places and hours map to their numbers once,
        # so that the per-session work is on small integers (a peak day has 500,000).
        keys: list[CellKey] = []
        rows: list[list[int]] = []
        width = len(PRESENCE_FIELDS)

        def new(key: CellKey) -> int:
            keys.append(key)
            rows.append([0] * width)
            return len(keys) - 1

        t_day = new(("presence", "territory", "day", day0, "", "", ""))
        communes: dict[str, int] = {}
        days: dict[tuple[str, str], int] = {}
        hours: dict[tuple[str, str, int], tuple[int, int]] = {}
        c_hours: dict[tuple[str, int], int] = {}

        def hour_ids(insee: str, ap_id: str, h: int) -> tuple[int, int]:
            ids = hours.get((insee, ap_id, h))
            if ids is None:
                hour = day0 + 3600 * h
                c = c_hours.get((insee, h))
                if c is None:
                    c = c_hours[(insee, h)] = new(
                        ("presence", "commune", "hour", hour, insee, "", "")
                    )
                ids = hours[(insee, ap_id, h)] = (
                    c,
                    new(("presence", "hotspot", "hour", hour, insee, ap_id, "")),
                )
            return ids

        flows: dict[CellKey, int] = defaultdict(int)
        lim = self.limits
        clip = lim.bytes_clip
        for dev in self._devices.values():
            visits = sorted(dev.visits, key=lambda v: v.start)[: lim.max_sessions]
            allowed: list[str] = []
            for v in visits:
                if v.insee not in allowed and len(allowed) < lim.max_communes:
                    allowed.append(v.insee)
            present: set[int] = {t_day}
            started: dict[int, int] = defaultdict(int)
            route: list[str] = []
            for v in visits:
                insee, ap_id = v.insee, v.ap_id
                if insee not in allowed:
                    continue
                if not route or route[-1] != insee:
                    route.append(insee)
                c_day = communes.get(insee)
                if c_day is None:
                    c_day = communes[insee] = new(
                        ("presence", "commune", "day", day0, insee, "", "")
                    )
                h_day = days.get((insee, ap_id))
                if h_day is None:
                    h_day = days[(insee, ap_id)] = new(
                        ("presence", "hotspot", "day", day0, insee, ap_id, "")
                    )
                h0 = min(last_hour, max(0, int((v.start - day0) // 3600)))
                stop = min(max(v.stop, v.start), day_end - 1)
                h1 = min(last_hour, max(h0, int((stop - day0) // 3600)))
                c_h0, h_h0 = hour_ids(insee, ap_id, h0)
                present.add(c_day)
                present.add(h_day)
                present.add(c_h0)
                present.add(h_h0)
                for h in range(h0 + 1, h1 + 1):
                    present.update(hour_ids(insee, ap_id, h))
                bucket = _DWELL_FIELDS[bisect.bisect_right(_DWELL_BOUNDS, v.stop - v.start)]
                up = min(max(v.up, 0), clip)
                down = min(max(v.down, 0), clip)
                for i in (t_day, c_day, h_day, c_h0, h_h0):
                    row = rows[i]
                    row[_SESSIONS] += 1
                    row[bucket] += 1
                    row[_UP] += up
                    row[_DOWN] += down
                    started[i] += 1
            for i in present:
                row = rows[i]
                row[_VISITORS] += 1
                if dev.randomised:
                    row[_RANDOMISED] += 1
            for i, n in started.items():
                if n >= 2:
                    rows[i][_REPEAT] += 1
            pairs: list[tuple[str, str]] = []
            for o, d in itertools.pairwise(route):
                if (o, d) not in pairs and len(pairs) < lim.max_flows:
                    pairs.append((o, d))
            for o, d in pairs:
                flows[("flow", "flow", "day", day0, o, "", d)] += 1
        out = [
            Cell(
                k[0],
                k[1],
                k[2],
                k[3],
                self.day,
                k[4],
                k[5],
                k[6],
                dict(zip(PRESENCE_FIELDS, row, strict=True)),
            )
            for k, row in zip(keys, rows, strict=True)
            if row[_VISITORS] or row[_SESSIONS]
        ]
        out.extend(
            Cell("flow", "flow", "day", k[3], self.day, k[4], "", k[6], {"visitors": n})
            for k, n in flows.items()
        )
        return out
