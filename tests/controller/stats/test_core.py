"""Aggregation of one day: visitors, sessions, dwell, repeats, volumes, flows, bounds."""

from __future__ import annotations

from zoneinfo import ZoneInfo

from controller.stats._core import DayAggregator, Limits, Visit, day_bounds, local_day
from controller.stats.models import Cell

TZ = ZoneInfo("Europe/Paris")
DAY = "2026-08-12"
D0, D_END = day_bounds(DAY, TZ)


def visit(dev: int, insee: str, h: float, minutes: float, ap: str = "", up: int = 0) -> Visit:
    start = D0 + h * 3600
    return Visit(
        dev.to_bytes(32, "big"),
        dev % 2 == 1,
        insee,
        ap or f"ap-{insee}-01",
        start,
        start + minutes * 60,
        up,
        10 * up,
    )


def cells_of(visits: list[Visit], limits: Limits | None = None) -> dict[tuple[str, ...], Cell]:
    agg = DayAggregator(DAY, TZ, limits or Limits())
    agg.add_all(visits)
    return {
        (c.scope, c.period, str(c.start), c.insee, c.ap_id, c.destination): c for c in agg.cells()
    }


def test_day_bounds_follow_local_time_and_dst() -> None:
    """Local days are 24 h, 23 h on the spring change, 25 h on the autumn one."""
    assert D_END - D0 == 86400
    s, e = day_bounds("2026-03-29", TZ)
    assert e - s == 23 * 3600
    s, e = day_bounds("2026-10-25", TZ)
    assert e - s == 25 * 3600
    assert local_day(D0, TZ) == DAY and local_day(D_END - 1, TZ) == DAY


def test_visitors_sessions_repeats_dwell_and_volume() -> None:
    """Two devices, three sessions at Rocamadour: each figure counts what it says."""
    c = cells_of(
        [
            visit(1, "46240", 10.0, 3, up=100),
            visit(1, "46240", 15.0, 40, up=200),
            visit(2, "46240", 10.5, 200, up=50),
        ]
    )
    day = c[("commune", "day", str(int(D0)), "46240", "", "")].values
    assert day["visitors"] == 2 and day["sessions"] == 3 and day["repeat_visitors"] == 1
    assert day["randomised_visitors"] == 1
    assert day["dwell_lt_5m"] == 1 and day["dwell_30_60m"] == 1 and day["dwell_ge_2h"] == 1
    assert day["bytes_up"] == 350 and day["bytes_down"] == 3500
    h10 = c[("commune", "hour", str(int(D0) + 36000), "46240", "", "")].values
    assert h10["visitors"] == 2 and h10["sessions"] == 2 and h10["repeat_visitors"] == 0
    # Device 2 stays 200 min from 10:30: present in hours 10 to 13, started only in 10.
    h13 = c[("commune", "hour", str(int(D0) + 13 * 3600), "46240", "", "")].values
    assert h13["visitors"] == 1 and h13["sessions"] == 0
    territory = c[("territory", "day", str(int(D0)), "", "", "")].values
    assert territory["visitors"] == 2 and territory["sessions"] == 3


def test_flows_follow_consecutive_communes() -> None:
    """A → B → A → C gives flows A→B, B→A, A→C; staying in one commune gives none."""
    c = cells_of(
        [
            visit(1, "A", 9, 10),
            visit(1, "B", 11, 10),
            visit(1, "B", 12, 10),
            visit(1, "A", 14, 10),
            visit(1, "C", 16, 10),
            visit(2, "A", 9, 10),
            visit(2, "A", 12, 10),
        ]
    )
    flows = {(k[3], k[5]): v.values["visitors"] for k, v in c.items() if k[0] == "flow"}
    assert flows == {("A", "B"): 1, ("B", "A"): 1, ("A", "C"): 1}


def test_contribution_is_bounded_per_device() -> None:
    """A device counts at most max_sessions sessions, max_communes communes, max_flows flows."""
    visits = [visit(1, f"C{i}", 1 + i * 0.5, 5) for i in range(10)]
    c = cells_of(visits, Limits(max_sessions=6, max_communes=4, max_flows=2))
    communes = [k for k in c if k[0] == "commune" and k[1] == "day"]
    assert len(communes) == 4
    assert c[("territory", "day", str(int(D0)), "", "", "")].values["sessions"] == 4
    assert len([k for k in c if k[0] == "flow"]) == 2


def test_bytes_are_clipped_per_session() -> None:
    """A session's volume counts at most bytes_clip."""
    c = cells_of([visit(1, "A", 1, 5, up=10**12)], Limits(bytes_clip=1000))
    assert c[("commune", "day", str(int(D0)), "A", "", "")].values["bytes_up"] == 1000


def test_cells_carry_no_device_value() -> None:
    """No cell field or tag holds a pseudonym."""
    visits = [visit(i, "A", 1, 5) for i in range(30)]
    for cell in cells_of(visits).values():
        for text in (cell.insee, cell.ap_id, cell.destination, *map(str, cell.values.values())):
            assert all(v.pseudonym.hex() not in text for v in visits)
