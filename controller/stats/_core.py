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
        acc: dict[CellKey, list[int]] = defaultdict(lambda: [0] * len(PRESENCE_FIELDS))
        flows: dict[CellKey, int] = defaultdict(int)
        lim = self.limits
        t_day: CellKey = ("presence", "territory", "day", day0, "", "", "")
        for dev in self._devices.values():
            visits = sorted(dev.visits, key=lambda v: v.start)[: lim.max_sessions]
            allowed: list[str] = []
            for v in visits:
                if v.insee not in allowed and len(allowed) < lim.max_communes:
                    allowed.append(v.insee)
            visits = [v for v in visits if v.insee in allowed]
            present: set[CellKey] = {t_day}
            started: dict[CellKey, int] = defaultdict(int)
            route: list[str] = []
            for v in visits:
                if not route or route[-1] != v.insee:
                    route.append(v.insee)
                c_day: CellKey = ("presence", "commune", "day", day0, v.insee, "", "")
                h_day: CellKey = ("presence", "hotspot", "day", day0, v.insee, v.ap_id, "")
                h0 = min(last_hour, max(0, int((v.start - day0) // 3600)))
                stop = min(max(v.stop, v.start), day_end - 1)
                h1 = min(last_hour, max(h0, int((stop - day0) // 3600)))
                hour0 = day0 + 3600 * h0
                c_h0: CellKey = ("presence", "commune", "hour", hour0, v.insee, "", "")
                h_h0: CellKey = ("presence", "hotspot", "hour", hour0, v.insee, v.ap_id, "")
                present.update((c_day, h_day))
                for h in range(h0, h1 + 1):
                    hour = day0 + 3600 * h
                    present.add(("presence", "commune", "hour", hour, v.insee, "", ""))
                    present.add(("presence", "hotspot", "hour", hour, v.insee, v.ap_id, ""))
                dwell = max(0.0, v.stop - v.start)
                bucket = _DWELL_FIELDS[bisect.bisect_right(_DWELL_BOUNDS, dwell)]
                up = min(max(v.up, 0), lim.bytes_clip)
                down = min(max(v.down, 0), lim.bytes_clip)
                for key in (t_day, c_day, h_day, c_h0, h_h0):
                    row = acc[key]
                    row[_SESSIONS] += 1
                    row[bucket] += 1
                    row[_UP] += up
                    row[_DOWN] += down
                    started[key] += 1
            for key in present:
                row = acc[key]
                row[_VISITORS] += 1
                if dev.randomised:
                    row[_RANDOMISED] += 1
            for key, n in started.items():
                if n >= 2:
                    acc[key][_REPEAT] += 1
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
            for k, row in acc.items()
        ]
        out.extend(
            Cell("flow", "flow", "day", k[3], self.day, k[4], "", k[6], {"visitors": n})
            for k, n in flows.items()
        )
        return out
