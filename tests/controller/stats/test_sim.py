"""The simulator: season, weekday, tourist sites, randomised MACs, deterministic truth."""

from __future__ import annotations

from controller.registry import lot_communes
from controller.stats._sim import ap_ids, simulate_day


def test_summer_is_busier_than_winter_and_sites_lead() -> None:
    """An August day has several times January's sessions; Rocamadour beats a small village."""
    summer = simulate_day("2026-08-12", scale=0.1, seed=1)
    winter = simulate_day("2026-01-14", scale=0.1, seed=1)
    assert len(summer.sessions) > 2 * len(winter.sessions)
    by_name = {c.name: c.insee for c in lot_communes()}
    assert summer.visitors[by_name["Rocamadour"]] > 10 * summer.visitors[by_name["Albiac"]]


def test_weekend_brings_more_visitors() -> None:
    """A Saturday in August has more devices than the Tuesday before it."""
    sat = simulate_day("2026-08-15", scale=0.1, seed=2)
    tue = simulate_day("2026-08-11", scale=0.1, seed=2)
    assert sat.devices > tue.devices


def test_truth_is_consistent_and_deterministic() -> None:
    """Same seed, same day; most MACs randomised; sessions start within the day."""
    a = simulate_day("2026-07-01", scale=0.05, seed=3)
    b = simulate_day("2026-07-01", scale=0.05, seed=3)
    assert a.truth() == b.truth() and a.sessions == b.sessions
    assert 0.7 < a.randomised / a.devices < 0.9
    assert a.optout_macs and all(s.start < s.stop for s in a.sessions)
    assert {s.ap_id for s in a.sessions} <= {ap for c in lot_communes() for ap in ap_ids(c)}
    truth = a.truth()
    assert "mac" not in str(truth) and not any(m in str(truth) for m in a.optout_macs)
