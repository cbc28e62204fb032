"""``borne simulate``: realistic days of Wi-Fi sessions over the Lot, with their truth.

A simulated day has residents and visitors. Residents connect a few times at home
(morning, noon, evening) and sometimes in a neighbouring commune. Visitors arrive in the
morning and tour one to four communes, the tourist sites (Rocamadour, Padirac,
Saint-Cirq-Lapopie, Cahors, Figeac, ...) weighing more, each next stop more likely
nearby. Their number follows the season and the weekday; connections follow the hour.
Most phones show a randomised (locally administered) MAC; a few devices opted out of
the statistics. The ground truth (visitors per commune, flows between communes) is
computed from the simulated devices themselves, not from the pipeline, so that the
pipeline can be checked against it.
"""

from __future__ import annotations

import datetime as dt
import functools
import itertools
import math
import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Final
from zoneinfo import ZoneInfo

from controller.registry import Commune, lot_communes
from controller.stats._core import day_bounds

__all__ = [
    "SEASON",
    "TOURIST_WEIGHTS",
    "SimDay",
    "SimSession",
    "ap_ids",
    "simulate_day",
]

# Where visitors go (relative weights; every other commune weighs 1).
TOURIST_WEIGHTS: Final = {
    "Rocamadour": 40.0,
    "Cahors": 35.0,
    "Padirac": 30.0,
    "Saint-Cirq-Lapopie": 30.0,
    "Figeac": 25.0,
    "Gourdon": 12.0,
    "Souillac": 12.0,
    "Martel": 10.0,
    "Saint-Céré": 10.0,
    "Puy-l'Évêque": 8.0,
}
# Where residents live (relative weights; others 1, jittered per commune).
_RESIDENT_WEIGHTS: Final = {
    "Cahors": 25.0,
    "Figeac": 12.0,
    "Gourdon": 5.0,
    "Souillac": 4.0,
    "Saint-Céré": 4.0,
    "Gramat": 3.0,
    "Prayssac": 3.0,
}
# Visitors per month relative to the mean (the Lot's summer peak is July-August).
SEASON: Final = {
    1: 0.3, 2: 0.35, 3: 0.5, 4: 0.8, 5: 1.0, 6: 1.2,
    7: 2.2, 8: 2.4, 9: 1.1, 10: 0.7, 11: 0.35, 12: 0.4,
}  # fmt: skip
# Visitors by weekday (Monday 0): more at weekends.
_WEEKDAY: Final = (0.9, 0.85, 0.9, 0.95, 1.05, 1.3, 1.2)
# Per day at scale 1: mean visitor devices, resident devices.
_VISITORS_BASE: Final = 20_000
_RESIDENTS_BASE: Final = 16_000
_RANDOMISED_SHARE: Final = 0.8
_OPTOUT_SHARE: Final = 0.02
# Hotspots per commune: the busiest places have several.
_HOTSPOTS: Final = {"Cahors": 4, "Figeac": 3, "Rocamadour": 3, "Saint-Cirq-Lapopie": 2}


@dataclass(frozen=True, slots=True)
class SimSession:
    """One simulated session, as the session ledger would record it."""

    ap_id: str
    insee: str
    mac: str
    start: float
    stop: float
    up: int
    down: int


@dataclass
class SimDay:
    """A simulated day and its ground truth.

    Attributes:
        day: the local date.
        sessions: every session, opted-out devices included.
        optout_macs: MACs of devices that opted out.
        visitors: commune → distinct counted devices (opted-out excluded).
        flows: (origin, destination) → distinct counted devices.
        devices: counted devices (opted-out excluded).
        randomised: counted devices with a randomised MAC.
    """

    day: str
    sessions: list[SimSession] = field(default_factory=list)
    optout_macs: set[str] = field(default_factory=set)
    visitors: Counter[str] = field(default_factory=Counter)
    flows: Counter[tuple[str, str]] = field(default_factory=Counter)
    devices: int = 0
    randomised: int = 0

    def truth(self) -> dict[str, Any]:
        """The ground truth as JSON-ready data (no MAC in it)."""
        return {
            "day": self.day,
            "sessions": len(self.sessions),
            "devices": self.devices,
            "randomised_devices": self.randomised,
            "opted_out_devices": len(self.optout_macs),
            "visitors": dict(sorted(self.visitors.items())),
            "flows": [
                {"origin": o, "destination": d, "visitors": n}
                for (o, d), n in sorted(self.flows.items())
            ],
        }


def ap_ids(commune: Commune) -> list[str]:
    """The simulated hotspots of a commune (``ap-<insee>-01``, ...)."""
    n = _HOTSPOTS.get(commune.name, 1)
    return [f"ap-{commune.insee.lower()}-{i:02d}" for i in range(1, n + 1)]


def _mac(rng: random.Random, randomised: bool) -> str:
    first = rng.randrange(256) & 0b1111_1100
    if randomised:
        first |= 0b10
    return ":".join(f"{b:02x}" for b in [first, *(rng.randrange(256) for _ in range(5))])


def _km(a: Commune, b: Commune) -> float:
    if a.lon is None or a.lat is None or b.lon is None or b.lat is None:
        return 50.0
    x = (a.lon - b.lon) * 111.32 * math.cos(math.radians((a.lat + b.lat) / 2))
    y = (a.lat - b.lat) * 110.57
    return math.hypot(x, y)


def _hour(rng: random.Random, profile: tuple[tuple[float, float, float], ...]) -> float:
    # A mixture of normal bumps (mean hour, spread, weight), kept within the day.
    means = [(m, s) for m, s, _ in profile]
    m, s = rng.choices(means, [w for _, _, w in profile])[0]
    return min(23.7, max(0.2, rng.gauss(m, s)))


_RESIDENT_HOURS: Final = ((8.0, 1.0, 3.0), (12.5, 0.8, 2.0), (18.5, 1.5, 4.0), (21.5, 1.0, 1.0))


@functools.lru_cache(maxsize=4)
def _geometry(
    communes: tuple[Commune, ...],
) -> tuple[dict[str, list[float]], dict[str, list[Commune]]]:
    """Per commune: the cumulative weights of a tour's next stop (attractive and near:
    weight / (1 + km/10)²) and the 6 nearest communes. The same for every day: cached."""
    tourist_w = [TOURIST_WEIGHTS.get(c.name, 1.0) for c in communes]
    next_cum = {
        a.insee: list(
            itertools.accumulate(
                0.0 if b is a else w / (1.0 + _km(a, b) / 10.0) ** 2
                for b, w in zip(communes, tourist_w, strict=True)
            )
        )
        for a in communes
    }
    near = {
        c.insee: sorted((x for x in communes if x is not c), key=lambda x: _km(c, x))[:6]
        for c in communes
    }
    return next_cum, near


def simulate_day(
    day: str,
    *,
    scale: float = 1.0,
    seed: int = 0,
    tz: ZoneInfo | None = None,
    communes: list[Commune] | None = None,
) -> SimDay:
    """Simulate one day of sessions over the Lot's communes.

    Args:
        day: the local date, ``YYYY-MM-DD`` (its month and weekday set the crowd).
        scale: multiplies the number of devices (1.0: about 45,000 devices and 200,000
            sessions on an August weekday; 2.5 gives a summer peak of 500,000 sessions).
        seed: the random seed (same seed, same day).
        tz: the territory's time zone.
        communes: the communes (the Lot's 320 by default).
    """
    tz = tz or ZoneInfo("Europe/Paris")
    rng = random.Random(f"{seed}/{day}")
    communes = communes or lot_communes()
    d = dt.date.fromisoformat(day)
    day0, day_end = day_bounds(day, tz)
    sim = SimDay(day)
    tourist_w = [TOURIST_WEIGHTS.get(c.name, 1.0) for c in communes]
    tourist_cum = list(itertools.accumulate(tourist_w))
    jitter = random.Random(seed)
    resident_w = [_RESIDENT_WEIGHTS.get(c.name, jitter.uniform(0.3, 2.0)) for c in communes]
    resident_cum = list(itertools.accumulate(resident_w))
    next_cum, near = _geometry(tuple(communes))
    aps = {c.insee: ap_ids(c) for c in communes}
    n_visitors = round(_VISITORS_BASE * scale * SEASON[d.month] * _WEEKDAY[d.weekday()])
    n_residents = round(_RESIDENTS_BASE * scale * (0.85 if d.weekday() >= 5 else 1.0))

    def emit(mac: str, stops: list[tuple[Commune, float, int]], counted: bool) -> None:
        # stops: (commune, arrival hour, sessions there)
        route: list[str] = []
        t_free = day0
        for commune, arrival, n in stops:
            # The next place is reached after leaving the last one (travel 15-45 min).
            t = max(day0 + arrival * 3600, t_free + rng.uniform(900, 2700))
            if t >= day_end - 600:
                break
            for _ in range(n):
                if t >= day_end - 60:
                    break
                dwell = min(4 * 3600.0, max(20.0, rng.lognormvariate(math.log(900), 0.9)))
                down = int(rng.lognormvariate(math.log(8e6), 1.2))
                sim.sessions.append(
                    SimSession(
                        rng.choice(aps[commune.insee]),
                        commune.insee,
                        mac,
                        t,
                        t + dwell,
                        down // rng.randint(5, 20),
                        down,
                    )
                )
                t_free = t + dwell
                t = t_free + rng.uniform(300, 3600)
            if not route or route[-1] != commune.insee:
                route.append(commune.insee)
        if not counted:
            return
        sim.devices += 1
        sim.randomised += int(int(mac[:2], 16) & 2 != 0)
        sim.visitors.update(set(route))
        sim.flows.update(set(itertools.pairwise(route)))

    def device() -> tuple[str, bool]:
        mac = _mac(rng, rng.random() < _RANDOMISED_SHARE)
        if rng.random() < _OPTOUT_SHARE:
            sim.optout_macs.add(mac)
            return mac, False
        return mac, True

    for _ in range(n_residents):
        mac, counted = device()
        home = rng.choices(communes, cum_weights=resident_cum)[0]
        stops = [(home, _hour(rng, _RESIDENT_HOURS), rng.randint(1, 3))]
        if rng.random() < 0.2:
            other = rng.choice(near[home.insee])
            stops.append((other, min(20.0, stops[0][1] + rng.uniform(1, 3)), 1))
            stops.append((home, min(22.5, stops[1][1] + rng.uniform(1, 2)), 1))
        emit(mac, stops, counted)
    for _ in range(n_visitors):
        mac, counted = device()
        hour = min(14.0, max(7.5, rng.gauss(10.0, 1.5)))
        here = rng.choices(communes, cum_weights=tourist_cum)[0]
        stops = []
        for _stop in range(rng.choices((1, 2, 3, 4), (30, 35, 25, 10))[0]):
            stops.append((here, hour, rng.choices((1, 2, 3), (50, 35, 15))[0]))
            hour += rng.uniform(1.5, 3.0)
            if hour > 21.0:
                break
            seen = {s[0].insee for s in stops}
            if len(seen) >= len(communes):
                break  # a small simulated territory, every commune visited
            prev = here
            while here.insee in seen:
                here = rng.choices(communes, cum_weights=next_cum[prev.insee])[0]
        emit(mac, stops, counted)
    sim.sessions.sort(key=lambda s: s.start)
    return sim


def sessions_by_day(sims: list[SimDay]) -> Iterator[SimSession]:
    """Every session of several simulated days, in order."""
    for sim in sims:
        yield from sim.sessions
