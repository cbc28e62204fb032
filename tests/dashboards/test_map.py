"""The server-side SVG map from the shipped commune polygons."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import pytest

from dashboards._map import (
    NO_DATA,
    SHADES,
    STATE_COLOURS,
    MapMarker,
    Territory,
    load_territory,
    render_map,
    shade_classes,
)

ROCAMADOUR, CAHORS, FIGEAC = "46240", "46042", "46102"
SVG = "{http://www.w3.org/2000/svg}"


@pytest.fixture(scope="module")
def territory() -> Territory:
    return load_territory()


def _fill(svg: str, insee: str) -> str:
    match = re.search(rf'<path d="[^"]+" fill="(#[0-9a-f]{{6}})" data-insee="{insee}"', svg)
    assert match is not None
    return match.group(1)


def test_every_commune_of_the_lot_is_drawn_inside_the_frame(territory: Territory) -> None:
    """320 commune paths, all within the drawing, Cahors south-west of Figeac."""
    assert len(territory.paths) == 320
    numbers = [float(n) for d in territory.paths.values() for n in re.findall(r"-?\d+", d)]
    assert min(numbers) >= 0 and max(numbers) <= 800
    cx, cy = territory.centres[CAHORS]
    fx, fy = territory.centres[FIGEAC]
    assert cx < fx and cy > fy  # west and south (SVG y grows downwards)
    x, y = territory.project(1.44062, 44.45072)  # Cahors' centroid
    assert abs(x - cx) < 25 and abs(y - cy) < 25


def test_map_is_valid_svg_with_title_markers_and_shading(territory: Territory) -> None:
    """The SVG parses, names itself, colours markers by state and shades by visitors."""
    markers = [
        MapMarker("roc-1", "Rocamadour — parvis", ROCAMADOUR, "online"),
        MapMarker("roc-2", "Rocamadour — château", ROCAMADOUR, "offline"),
        MapMarker("cah-1", "Cahors", CAHORS, "weird", 1.44, 44.45),
    ]
    svg = render_map(territory, markers, {ROCAMADOUR: 500, CAHORS: 20}, None, "Carte")
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG}svg" and root.get("role") == "img"
    circles = {
        c.get("data-ap"): c.get("fill") for c in root.iter(f"{SVG}circle") if c.get("data-ap")
    }
    assert circles == {
        "roc-1": STATE_COLOURS["online"],
        "roc-2": STATE_COLOURS["offline"],
        "cah-1": STATE_COLOURS["unknown"],
    }
    assert _fill(svg, ROCAMADOUR) == SHADES[-1]
    assert _fill(svg, CAHORS) == SHADES[0]
    assert _fill(svg, FIGEAC) == NO_DATA
    assert "Rocamadour : 500 visiteurs" in svg


def test_map_of_one_commune_hides_the_others(territory: Territory) -> None:
    """Limited to Rocamadour: other communes are grey, unnamed, unshaded, without markers."""
    markers = [
        MapMarker("roc-1", "Rocamadour", ROCAMADOUR, "online"),
        MapMarker("cah-1", "Cahors", CAHORS, "online"),
    ]
    svg = render_map(territory, markers, {ROCAMADOUR: 30, CAHORS: 999}, {ROCAMADOUR}, "Carte")
    assert 'data-ap="roc-1"' in svg and 'data-ap="cah-1"' not in svg
    assert "Cahors" not in svg and "999" not in svg
    assert f'data-insee="{CAHORS}"' not in svg
    assert _fill(svg, ROCAMADOUR) == SHADES[-1]


def test_shade_classes_cover_the_largest_value() -> None:
    """Five equal classes up to the largest value; none without data."""
    assert shade_classes([]) == [] and shade_classes([0, 0]) == []
    bounds = shade_classes([3, 100, 47])
    assert len(bounds) == 5 and bounds[-1] >= 100 and bounds == sorted(bounds)
