"""Disclosure control: threshold k, secondary suppression against differencing, noise."""

from __future__ import annotations

import random
from zoneinfo import ZoneInfo

import pytest

from controller.stats._core import DayAggregator, Limits, Visit, day_bounds
from controller.stats._disclosure import equations, laplace_bound, protect, sensitivity
from controller.stats._pseudo import DailyKeys
from controller.stats._sim import simulate_day
from controller.stats.models import Cell, CellKey

TZ = ZoneInfo("Europe/Paris")
ADDITIVE = ("sessions", "dwell_lt_5m", "dwell_ge_2h", "bytes_up", "bytes_down")


def sim_cells(day: str, scale: float) -> list[Cell]:
    sim = simulate_day(day, scale=scale, seed=7)
    keys = DailyKeys()
    agg = DayAggregator(day, TZ, Limits())
    for s in sim.sessions:
        agg.add(Visit(keys.pseudonym(day, s.mac), False, s.insee, s.ap_id, s.start, s.stop, 1, 1))
    return agg.cells()


def differencing_attack(all_cells: list[Cell], published: list[Cell]) -> dict[CellKey, int]:
    """What "total minus published cells" recovers of hidden cells' sessions, iterated.

    The attacker knows every cell that exists (a hotspot's cell exists even when hidden)
    and every published value; each equation with exactly one unknown term gives it.
    """
    known = {c.key: c.values["sessions"] for c in published if c.kind == "presence"}
    eqs = equations(all_cells)
    recovered: dict[CellKey, int] = {}
    progress = True
    while progress:
        progress = False
        for parent, kids in eqs:
            terms = [parent, *kids]
            unknown = [t for t in terms if t not in known]
            if len(unknown) != 1:
                continue
            (u,) = unknown
            if u == parent:
                value = sum(known[k] for k in kids)
            else:
                value = known[parent] - sum(known[k] for k in kids if k != u)
            known[u] = recovered[u] = value
            progress = True
    return recovered


@pytest.mark.parametrize(("day", "scale"), [("2026-01-13", 0.05), ("2026-08-12", 0.1)])
def test_no_published_cell_below_k(day: str, scale: float) -> None:
    """Every published presence and flow cell counts at least k visitors."""
    out = protect(sim_cells(day, scale), k=11)
    assert out.published and out.primary > 0
    assert min(c.visitors for c in out.published) >= 11


@pytest.mark.parametrize(("day", "scale"), [("2026-01-13", 0.3), ("2026-08-12", 0.1)])
def test_differencing_recovers_no_hidden_cell(day: str, scale: float) -> None:
    """Totals minus published cells recover nothing once secondary suppression ran;
    without it, the same attack recovers hidden cells exactly (so the attack is real)."""
    cells = sim_cells(day, scale)
    truth = {c.key: c.values["sessions"] for c in cells if c.kind == "presence"}
    naive = protect(cells, k=11, secondary=False)
    leaked = differencing_attack(cells, naive.published)
    assert leaked and all(truth[key] == v for key, v in leaked.items())
    safe = protect(cells, k=11)
    assert safe.secondary > 0
    assert differencing_attack(cells, safe.published) == {}


def test_single_hidden_hotspot_takes_a_sibling_with_it() -> None:
    """A commune with a busy and a quiet hotspot: hiding the quiet one alone would leak it
    (commune minus busy), so the busy one is hidden too, and the commune stays published."""
    day = "2026-08-12"
    d0, _ = day_bounds(day, TZ)
    agg = DayAggregator(day, TZ, Limits())
    for i in range(40):
        ap = "ap-a-02" if i < 3 else "ap-a-01"
        agg.add(Visit(i.to_bytes(4, "big"), False, "A", ap, d0 + 36000 + i, d0 + 36600, 0, 0))
    for i in range(40, 60):
        agg.add(Visit(i.to_bytes(4, "big"), False, "B", "ap-b-01", d0 + 40000, d0 + 40600, 0, 0))
    published = {(c.scope, c.period, c.insee, c.ap_id) for c in protect(agg.cells(), 11).published}
    assert ("commune", "day", "A", "") in published
    assert ("hotspot", "day", "A", "ap-a-01") not in published
    assert ("hotspot", "day", "A", "ap-a-02") not in published


def test_k_below_five_is_refused() -> None:
    """The threshold is never below 5."""
    with pytest.raises(ValueError):
        protect([], k=4)


def test_noise_stays_within_its_stated_bound() -> None:
    """Laplace noise of scale sensitivity/ε exceeds scale·ln(1/p) in about a p share of cells."""
    cells = sim_cells("2026-08-12", 0.1)
    limits = Limits()
    eps = 1.0
    noisy = protect(cells, k=5, epsilon=eps, limits=limits, rng=random.Random(3))
    by_key = {c.key: c for c in cells}
    p = 0.01
    checked = outside = 0
    for c in noisy.published:
        if c.kind != "presence" or c.scope != "commune" or c.period != "day":
            continue
        assert c.noised
        bound = laplace_bound(sensitivity(c, "visitors", limits) / eps, p) + 0.5
        checked += 1
        outside += abs(c.visitors - by_key[c.key].visitors) > bound
    assert checked > 50
    assert outside <= max(2, 3 * p * checked)
    assert any(c.visitors != by_key[c.key].visitors for c in noisy.published)
