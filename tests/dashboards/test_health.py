"""Uptime, transitions and health rows (``dashboards._health``), pure."""

from __future__ import annotations

import json

import pytest

from dashboards._health import DAY, Incident, Snapshot, health_rows, transitions, uptime

NOW = 1_780_000_000.0


def test_uptime_counts_downtime_inside_the_window_only() -> None:
    """An incident half inside the window counts only its inside part; open ones up to now."""
    window = (NOW - 7 * DAY, NOW)
    assert uptime([], *window) == 100.0
    half_day = [Incident("a", NOW - 7 * DAY - DAY, NOW - 7 * DAY + DAY / 2)]
    assert uptime(half_day, *window) == pytest.approx(100 * (1 - 0.5 / 7))
    still_down = [Incident("a", NOW - 7 * DAY / 2, None)]
    assert uptime(still_down, *window) == pytest.approx(50.0)
    assert uptime([Incident("a", NOW - 10 * DAY, None)], *window) == 0.0


def test_uptime_ignores_time_before_registration() -> None:
    """A hotspot registered a day ago, down for 6 h of it, is 75 % up, not 96 %."""
    incidents = [Incident("a", NOW - 6 * 3600, None)]
    assert uptime(incidents, NOW - 7 * DAY, NOW, since=NOW - DAY) == pytest.approx(75.0)
    assert uptime(incidents, NOW - 7 * DAY, NOW, since=NOW + 5) is None


def test_transitions_between_readings() -> None:
    """Online to offline is down at state_since; offline to online is up; new offline is down."""
    before = {
        "a": Snapshot("a", "online", NOW - 100),
        "b": Snapshot("b", "offline", NOW - 100),
        "c": Snapshot("c", "online", NOW - 100),
    }
    after = [
        Snapshot("a", "offline", NOW - 5),
        Snapshot("b", "online", NOW - 3),
        Snapshot("c", "online", NOW - 100),
        Snapshot("d", "offline", NOW - 50),
        Snapshot("e", "unknown", None),
    ]
    got = {(t.ap_id, t.kind, t.at) for t in transitions(before, after, NOW)}
    assert got == {("a", "down", NOW - 5), ("b", "up", NOW - 3), ("d", "down", NOW - 50)}


def test_health_rows_read_latency_and_count_incidents() -> None:
    """Latency comes from the agent's broker_rtt_ms; incidents of 30 days are counted."""
    health = json.dumps({"broker_rtt_ms": 42.5, "uptime_s": 10})
    rows = health_rows(
        [("a", NOW - 40 * DAY, 1.5, health), ("b", NOW - 40 * DAY, None, "not json")],
        [
            Incident("a", NOW - 2 * DAY, NOW - 2 * DAY + 3600),
            Incident("a", NOW - 31 * DAY, NOW - 31 * DAY + 60),
        ],
        NOW,
    )
    assert rows["a"].rtt_ms == 42.5 and rows["a"].clock_skew_s == 1.5
    assert rows["a"].incidents_30d == 1
    assert rows["a"].uptime_7d == pytest.approx(100 * (1 - 1 / 168))
    assert rows["b"].rtt_ms is None and rows["b"].uptime_30d == 100.0
