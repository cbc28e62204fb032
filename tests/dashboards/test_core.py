"""French formatting and view building of the dashboards (pure functions)."""

from __future__ import annotations

from datetime import UTC
from zoneinfo import ZoneInfo

import pytest

from dashboards._core import (
    HotspotRecord,
    SessionRecord,
    fleet_view,
    human_bytes,
    human_duration,
    local_clock,
    relative_time,
    sessions_view,
)

NOW = 1_780_000_000.0  # 2026-05-28 20:26:40 UTC, 22:26:40 in Paris
PARIS = ZoneInfo("Europe/Paris")
NB = "\u00a0"


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (-5, f"0{NB}o"),
        (0, f"0{NB}o"),
        (999, f"999{NB}o"),
        (1000, f"1{NB}ko"),
        (1_250, f"1,2{NB}ko"),
        (12_345_678, f"12,3{NB}Mo"),
        (123_456_789, f"123{NB}Mo"),
        (1_050_000_000, f"1{NB}Go"),
        (2**64 - 1, f"18\u202f447{NB}Po"),
    ],
)
def test_human_bytes_uses_french_decimal_units(n: int, text: str) -> None:
    """Byte counts read as French decimal units with a decimal comma."""
    assert human_bytes(n) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (-3, f"0{NB}s"),
        (45.9, f"45{NB}s"),
        (60, f"1{NB}min"),
        (12 * 60 + 59, f"12{NB}min"),
        (3600 + 5 * 60, f"1{NB}h 05{NB}min"),
        (2 * 86400 + 3 * 3600 + 59, f"2{NB}j 3{NB}h"),
    ],
)
def test_human_duration_is_short_french(seconds: float, text: str) -> None:
    """Durations read as ``45 s``, ``12 min``, ``1 h 05 min``, ``2 j 3 h``."""
    assert human_duration(seconds) == text


@pytest.mark.parametrize(
    ("ago", "text"),
    [
        (None, "jamais"),
        (0, "à l'instant"),
        (4, "à l'instant"),
        (40, "il y a 40 secondes"),
        (180, "il y a 3 minutes"),
        (2 * 3600, "il y a 2 heures"),
        (86400, "il y a 1 jour"),
    ],
)
def test_relative_time_in_french(ago: float | None, text: str) -> None:
    """Last contact reads ``il y a …``, ``à l'instant`` or ``jamais``."""
    ts = None if ago is None else NOW - ago
    assert relative_time(ts, NOW) == text


def test_local_clock_shows_the_date_only_for_other_days() -> None:
    """A start today shows the Paris clock time; an earlier one adds the day."""
    assert local_clock(NOW - 3600, NOW, PARIS) == "21:26"
    assert local_clock(NOW - 86400, NOW, PARIS) == "27 mai 22:26"
    assert local_clock(NOW, NOW, UTC) == "20:26"


def _ap(ap_id: str, insee: str, state: str) -> HotspotRecord:
    return HotspotRecord(ap_id, ap_id, insee, f"commune {insee}", state, None, None)


def test_fleet_view_counts_online_aps_and_equipped_communes() -> None:
    """Online APs and distinct communes are counted; an unknown state shows as inconnu."""
    view = fleet_view(
        [
            _ap("a", "46001", "online"),
            _ap("b", "46001", "offline"),
            _ap("c", "46002", "rebooting"),
        ],
        320,
        NOW,
    )
    assert view.summary.hotspots_online == 1
    assert view.summary.hotspots_total == 3
    assert view.summary.communes_equipped == 2
    assert view.summary.communes_total == 320
    assert [h.state_label for h in view.hotspots] == ["en ligne", "hors ligne", "inconnu"]


def test_sessions_view_truncates_but_counts_all() -> None:
    """Beyond the limit, rows are dropped but the count stays the total."""
    rows = [SessionRecord(f"t{i}", "a", "46001", NOW - i, 1, 2) for i in range(5)]
    view = sessions_view(rows, {}, {"46001": "Cahors"}, NOW, PARIS, limit=3)
    assert view.count == 5 and view.truncated
    assert [s.tag for s in view.sessions] == ["t0", "t1", "t2"]
    assert view.sessions[0].commune == "Cahors"
    assert view.sessions[0].hotspot == "a"  # AP no longer registered: its id
