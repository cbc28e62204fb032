"""Cells: identity without values, visitors shortcut."""

from __future__ import annotations

from controller.stats.models import PRESENCE_FIELDS, Cell


def test_key_ignores_values_and_names_the_place() -> None:
    """Two cells of the same place and period share a key whatever their values."""
    a = Cell(
        "presence", "hotspot", "hour", 3600, "2026-08-12", "46240", "ap-1", "", {"visitors": 1}
    )
    b = Cell("presence", "hotspot", "hour", 3600, "2026-08-12", "46240", "ap-1", "", {})
    assert a.key == b.key and a != b
    assert a.visitors == 1 and b.visitors == 0
    assert PRESENCE_FIELDS[0] == "visitors"
