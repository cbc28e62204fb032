"""The pipeline against a simulated day's ground truth; opt-out, late events, keys."""

from __future__ import annotations

import random
from zoneinfo import ZoneInfo

import pytest

from controller.stats._core import Limits
from controller.stats._disclosure import laplace_bound, sensitivity
from controller.stats._pipeline import DayReport, Pipeline
from controller.stats._pseudo import OptOut
from controller.stats._sim import SimDay, simulate_day

TZ = ZoneInfo("Europe/Paris")
DAY = "2026-08-12"


@pytest.fixture(scope="module")
def sim() -> SimDay:
    """A simulated August day (about 40,000 sessions)."""
    return simulate_day(DAY, scale=0.2, seed=11)


def run(sim: SimDay, epsilon: float | None = None, k: int = 11) -> tuple[Pipeline, DayReport]:
    optout = OptOut(b"optout-key")
    for mac in sim.optout_macs:
        optout.add(mac)
    p = Pipeline(TZ, Limits(), k, optout, epsilon, random.Random(5))
    for s in sim.sessions:
        p.observe(
            ap_id=s.ap_id,
            insee=s.insee,
            mac=s.mac,
            start=s.start,
            stop=s.stop,
            up=s.up,
            down=s.down,
        )
    return p, p.finalise(sim.day)


def test_published_visitors_and_flows_are_exact_without_noise(sim: SimDay) -> None:
    """Without noise every published commune-day and flow equals the truth, opt-outs excluded."""
    _p, report = run(sim)
    assert report.devices == sim.devices and sim.optout_macs
    visitors = {
        c.insee: c.visitors
        for c in report.protected.published
        if c.scope == "commune" and c.period == "day"
    }
    flows = {
        (c.insee, c.destination): c.visitors for c in report.protected.published if c.kind == "flow"
    }
    assert visitors and flows
    assert all(sim.visitors[insee] == n for insee, n in visitors.items())
    assert all(sim.flows[pair] == n for pair, n in flows.items())
    # What is not published is below k, or hidden to protect a cell below k.
    big = [i for i, n in sim.visitors.items() if n >= 11]
    assert len(visitors) >= 0.9 * len(big)
    big_flows = [f for f, n in sim.flows.items() if n >= 11]
    assert len(flows) == len(big_flows)


def test_noised_figures_stay_within_stated_bounds(sim: SimDay) -> None:
    """With ε = 1, published commune-day visitors and flows differ from the truth by less
    than the Laplace bound at p = 0.001 in at least 99 % of cells."""
    _p, report = run(sim, epsilon=1.0)
    limits = Limits()
    checked = outside = 0
    for c in report.protected.published:
        if c.kind == "flow":
            truth = sim.flows[(c.insee, c.destination)]
        elif c.scope == "commune" and c.period == "day":
            truth = sim.visitors[c.insee]
        else:
            continue
        bound = laplace_bound(sensitivity(c, "visitors", limits) / 1.0, 0.001) + 0.5
        checked += 1
        outside += abs(c.visitors - truth) > bound
    assert checked > 100
    assert outside <= 0.01 * checked


def test_each_session_counts_once_whatever_its_events() -> None:
    """Start, update and stop events of one session (same id) count one session."""
    p = Pipeline(TZ, Limits(), 5, OptOut(b"k"))
    t0 = 1786521600.0  # 2026-08-12 02:00 local
    for n in range(12):
        for stop in (t0 + 60, t0 + 120, t0 + 600):
            p.observe(
                ap_id="ap-1", insee="46240", mac=f"02:00:00:00:00:{n:02x}", start=t0 + n,
                stop=stop, up=1, down=2, session_id=n,
            )  # fmt: skip
    report = p.finalise(DAY)
    day = next(c for c in report.protected.published if c.scope == "commune" and c.period == "day")
    assert day.values["sessions"] == 12 and day.values["dwell_5_15m"] == 12
    assert p.counters.randomised == 36


def test_finalised_day_refuses_late_sessions_and_destroys_its_key(sim: SimDay) -> None:
    """After finalise(), the day's key is gone and a late session is counted as late only."""
    p, _report = run(sim)
    assert not p.keys.has(DAY) and p.keys.destroyed == 1
    s = sim.sessions[0]
    kept = p.observe(
        ap_id=s.ap_id, insee=s.insee, mac=s.mac, start=s.start, stop=s.stop, up=0, down=0
    )
    assert not kept and p.counters.late == 1 and not p.keys.has(DAY)


def test_bad_mac_is_counted_not_raised() -> None:
    """A session with a malformed MAC is counted as bad and skipped."""
    p = Pipeline(TZ, Limits(), 5, OptOut(b"k"))
    assert not p.observe(ap_id="a", insee="1", mac="nope", start=0.0, stop=1.0, up=0, down=0)
    assert p.counters.bad_mac == 1
