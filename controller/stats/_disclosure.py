"""Disclosure control: noise, threshold k, secondary suppression (pure).

Order (legal_privacy.md §4.3): optional Laplace noise first, then primary suppression
of every cell counting fewer than ``k`` visitors (after noise), then secondary
suppression. Published tables are linked by additive equations on sessions, dwell
buckets and volumes: a territory day is the sum of its communes' days, a commune day
the sum of its hotspots' days and of its hours, a hotspot day the sum of its hours, a
commune hour the sum of its hotspots' hours. If one of these equations had exactly one
hidden term, "total minus published cells" would give it back; secondary suppression
hides more cells (the smallest first) until no equation has exactly one hidden term.
Flows have no published totals, so thresholding is enough for them.

Noise: each count gets Laplace noise of scale ``sensitivity / epsilon``, the
sensitivity being what one device-day can add to that statistic under the contribution
bounds (:class:`~controller.stats._core.Limits`); ``epsilon`` is therefore spent per
device-day and per statistic (docs/STATISTICS.md lists them).
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from dataclasses import dataclass, replace

from controller.stats._core import Limits
from controller.stats.models import Cell, CellKey

__all__ = ["Protected", "equations", "laplace_bound", "noise", "protect", "sensitivity"]


def sensitivity(cell: Cell, name: str, limits: Limits) -> float:
    """The most one device-day can change ``name`` summed over all cells of its table."""
    s, c, f = limits.max_sessions, limits.max_communes, limits.max_flows
    if cell.kind == "flow":
        return float(f)
    bytes_field = name.startswith("bytes_")
    session_field = name == "sessions" or name.startswith("dwell_")
    if bytes_field:
        return float(s * limits.bytes_clip)
    if session_field:
        return float(s)
    # visitors, randomised_visitors, repeat_visitors: one per place (and hour) present.
    places = 1 if cell.scope == "territory" else (c if cell.scope == "commune" else s)
    return float(places * 24 if cell.period == "hour" else places)


def laplace_bound(scale: float, p: float) -> float:
    """|noise| stays below this with probability ``1 - p`` (Laplace of that scale)."""
    return scale * math.log(1.0 / p)


def noise(cells: list[Cell], epsilon: float, limits: Limits, rng: random.Random) -> list[Cell]:
    """Each value plus Laplace(sensitivity / epsilon) noise, rounded, never negative."""
    out = []
    for cell in cells:
        values = {}
        for name, v in cell.values.items():
            b = sensitivity(cell, name, limits) / epsilon
            # Laplace as the difference of two exponentials of mean b.
            x = rng.expovariate(1.0 / b) - rng.expovariate(1.0 / b)
            values[name] = max(0, round(v + x))
        out.append(replace(cell, values=values, noised=True))
    return out


def equations(cells: list[Cell]) -> list[tuple[CellKey, list[CellKey]]]:
    """The additive equations ``parent = sum(children)`` between the present cells."""
    keys = {c.key for c in cells}
    day_start = {c.day: c.start for c in cells if c.period == "day"}
    # One equation per (parent, kind of breakdown): a commune day is both the sum of its
    # hotspots' days and the sum of its hours.
    children: dict[tuple[CellKey, str], list[CellKey]] = defaultdict(list)
    for cell in cells:
        if cell.kind != "presence":
            continue
        start, insee, ap_id = cell.start, cell.insee, cell.ap_id
        day0 = day_start.get(cell.day, -1)
        parents: list[tuple[CellKey, str]] = []
        if cell.scope == "commune" and cell.period == "day":
            parents.append((("presence", "territory", "day", start, "", "", ""), "communes"))
        elif cell.scope == "hotspot" and cell.period == "day":
            parents.append((("presence", "commune", "day", start, insee, "", ""), "hotspots"))
        elif cell.scope == "commune" and cell.period == "hour":
            parents.append((("presence", "commune", "day", day0, insee, "", ""), "hours"))
        elif cell.scope == "hotspot" and cell.period == "hour":
            parents.append((("presence", "hotspot", "day", day0, insee, ap_id, ""), "hours"))
            parents.append((("presence", "commune", "hour", start, insee, "", ""), "hotspots"))
        for p in parents:
            if p[0] in keys:
                children[p].append(cell.key)
    return [(p, sorted(cs)) for (p, _), cs in sorted(children.items())]


@dataclass(frozen=True)
class Protected:
    """The outcome of disclosure control."""

    published: list[Cell]
    primary: int
    secondary: int


def protect(
    cells: list[Cell],
    k: int,
    epsilon: float | None = None,
    limits: Limits | None = None,
    rng: random.Random | None = None,
    secondary: bool = True,
) -> Protected:
    """Noise (if ``epsilon``), threshold ``k`` and secondary suppression.

    Args:
        cells: every cell of one day, as the aggregator built them.
        k: the smallest count of visitors a published cell may have (≥ 5).
        epsilon: Laplace noise budget per device-day and statistic; None: no noise.
        limits: the contribution bounds the cells were built with (noise scale).
        rng: random source of the noise (a ``random.SystemRandom`` by default).
        secondary: False skips secondary suppression (only to show why it is needed).

    Raises:
        ValueError: ``k`` below 5.
    """
    if k < 5:
        raise ValueError("the threshold k is never below 5")
    if epsilon is not None:
        cells = noise(cells, epsilon, limits or Limits(), rng or random.SystemRandom())
    by_key = {c.key: c for c in cells}
    hidden = {key for key, c in by_key.items() if c.visitors < k}
    primary = len(hidden)
    eqs = equations(cells)
    changed = secondary
    while changed:
        changed = False
        for parent, kids in eqs:
            unknown = [x for x in (parent, *kids) if x in hidden]
            if len(unknown) != 1:
                continue
            candidates = [x for x in kids if x not in hidden]
            if candidates:
                pick = min(candidates, key=lambda x: (by_key[x].values.get("sessions", 0), x))
            else:
                pick = parent
            hidden.add(pick)
            changed = True
    published = [c for key, c in by_key.items() if key not in hidden]
    return Protected(published, primary, len(hidden) - primary)
