"""The territory map, drawn on the server as SVG from the shipped commune polygons.

No tile server, no JavaScript, no network: the 320 communes of the Lot come from
``controller/data/lot-communes.geojson`` (IGN Admin Express, Licence Ouverte), projected
once at start; a page gets an ``<svg>`` with communes shaded by visitors and hotspots as
markers coloured by state. Pure: :func:`load_territory` reads the shipped file (call it
at start, in a thread); :func:`render_map` only formats strings.

What must not happen here: a commune the account may not see shaded, or its hotspots
drawn (they are left out by the caller, and the shading map is filtered again here).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from importlib import resources
from typing import Final
from xml.sax.saxutils import escape, quoteattr

__all__ = ["MapMarker", "Territory", "load_territory", "render_map", "shade_classes"]

# The drawing's width in SVG user units; the height follows the territory's shape.
WIDTH: Final = 800.0
_MARGIN: Final = 8.0
# Visitors shading: light to dark blue (ColorBrewer "Blues", 5 classes), grey = no data.
SHADES: Final = ("#c6dbef", "#9ecae1", "#6baed6", "#3182bd", "#08519c")
NO_DATA: Final = "#f7f7f7"
STATE_COLOURS: Final = {"online": "#1a7f37", "offline": "#c62828", "unknown": "#6b6b6b"}
STATE_TEXT: Final = {"online": "en ligne", "offline": "hors ligne", "unknown": "inconnu"}


@dataclasses.dataclass(frozen=True, slots=True)
class Territory:
    """The communes as SVG paths in one projected frame.

    Attributes:
        paths: SVG path data by INSEE code.
        names: commune names by INSEE code.
        centres: projected centre (x, y) of each commune (its bounding box's middle).
        height: the drawing's height for :data:`WIDTH`.
        lon0: the western edge (degrees).
        lat0: the southern edge (degrees).
        kx: cosine of the mean latitude (shrinks longitudes to ground distance).
        scale: drawing units per degree of latitude.
        max_y: the projected height of the territory.
    """

    paths: Mapping[str, str]
    names: Mapping[str, str]
    centres: Mapping[str, tuple[float, float]]
    height: float
    lon0: float
    lat0: float
    kx: float
    scale: float
    max_y: float

    def project(self, lon: float, lat: float) -> tuple[float, float]:
        """WGS84 to drawing units (equirectangular at the territory's mean latitude).

        Over a département (about 100 km) this is within a fraction of a percent of a
        conformal projection: enough for a map that places hotspots in their commune.
        """
        x = (lon - self.lon0) * self.kx * self.scale + _MARGIN
        y = self.max_y - (lat - self.lat0) * self.scale + _MARGIN
        return x, y


def _rings(geometry: Mapping[str, object]) -> list[list[list[float]]]:
    coords = geometry["coordinates"]
    assert isinstance(coords, list)
    if geometry["type"] == "Polygon":
        return list(coords)
    return [ring for polygon in coords for ring in polygon]  # MultiPolygon


def load_territory(
    package: str = "controller.data", name: str = "lot-communes.geojson"
) -> Territory:
    """Read and project the shipped commune polygons (blocking: call it in a thread)."""
    data = json.loads(resources.files(package).joinpath(name).read_text("utf-8"))
    features = [
        (str(f["properties"]["code"]), str(f["properties"]["nom"]), _rings(f["geometry"]))
        for f in data["features"]
    ]
    lons = [p[0] for _, _, rings in features for ring in rings for p in ring]
    lats = [p[1] for _, _, rings in features for ring in rings for p in ring]
    lon0, lat0 = min(lons), min(lats)
    kx = math.cos(math.radians((lat0 + max(lats)) / 2))
    scale = (WIDTH - 2 * _MARGIN) / ((max(lons) - lon0) * kx)
    max_y = (max(lats) - lat0) * scale
    frame = Territory({}, {}, {}, max_y + 2 * _MARGIN, lon0, lat0, kx, scale, max_y)
    paths: dict[str, str] = {}
    names: dict[str, str] = {}
    centres: dict[str, tuple[float, float]] = {}
    for insee, nom, rings in features:
        parts = []
        xs: list[float] = []
        ys: list[float] = []
        for ring in rings:
            pts = [frame.project(p[0], p[1]) for p in ring]
            xs += [x for x, _ in pts]
            ys += [y for _, y in pts]
            # Whole units (a 1/800 of the width) are finer than a screen shows; points
            # that round to the previous one are dropped, which halves the page's weight.
            text: list[str] = []
            for x, y in pts:
                point = f"{x:.0f},{y:.0f}"
                if not text or text[-1] != point:
                    text.append(point)
            parts.append("M" + "L".join(text) + "Z")
        paths[insee] = "".join(parts)
        names[insee] = nom
        centres[insee] = ((min(xs) + max(xs)) / 2, (min(ys) + max(ys)) / 2)
    return dataclasses.replace(frame, paths=paths, names=names, centres=centres)


@dataclasses.dataclass(frozen=True, slots=True)
class MapMarker:
    """One hotspot on the map.

    Attributes:
        ap_id: the access point id.
        label: what its tooltip says (name and commune).
        insee: its commune.
        state: ``online``, ``offline`` or ``unknown``.
        lon, lat: its position, or None to place it in its commune.
    """

    ap_id: str
    label: str
    insee: str
    state: str
    lon: float | None = None
    lat: float | None = None


def shade_classes(values: Iterable[int]) -> list[int]:
    """Upper bounds of the 5 shading classes: equal steps up to the largest value."""
    top = max([v for v in values if v > 0], default=0)
    if top <= 0:
        return []
    step = max(1, math.ceil(top / len(SHADES)))
    return [step * (i + 1) for i in range(len(SHADES))]


def _shade(value: int | None, bounds: Sequence[int]) -> str:
    if value is None or value <= 0 or not bounds:
        return NO_DATA
    for colour, bound in zip(SHADES, bounds, strict=True):
        if value <= bound:
            return colour
    return SHADES[-1]


def render_map(
    territory: Territory,
    markers: Sequence[MapMarker],
    visitors: Mapping[str, int],
    visible: Iterable[str] | None,
    title: str,
) -> str:
    """The map as an inline ``<svg>`` element (with a title and a legend).

    Args:
        territory: the projected communes.
        markers: the hotspots to draw (already limited to what the reader may see).
        visitors: visitors per INSEE code, from published statistics.
        visible: INSEE codes the reader may see (None: all); others stay grey, unnamed.
        title: the map's accessible title.
    """
    seen = set(territory.paths) if visible is None else set(visible)
    shading = {k: v for k, v in visitors.items() if k in seen}
    bounds = shade_classes(shading.values())
    h = territory.height
    out = [
        '<svg xmlns="http://www.w3.org/2000/svg" class="map"'
        f' viewBox="0 0 {WIDTH:.0f} {h + 40:.0f}" role="img"'
        ' aria-labelledby="map-title" preserveAspectRatio="xMidYMid meet">',
        f'<title id="map-title">{escape(title)}</title>',
        '<g class="communes" stroke="#ffffff" stroke-width="0.6">',
    ]
    for insee, d in territory.paths.items():
        if insee in seen:
            value = shading.get(insee)
            text = f"{territory.names[insee]} : " + (
                f"{value} visiteurs" if value else "pas de donnée publiée"
            )
            out.append(
                f'<path d="{d}" fill="{_shade(value, bounds)}" data-insee="{insee}">'
                f"<title>{escape(text)}</title></path>"
            )
        else:
            out.append(f'<path d="{d}" fill="#dadada"/>')
    out.append("</g>")
    out.append('<g class="hotspots" stroke="#ffffff" stroke-width="1.5">')
    per_commune: dict[str, int] = {}
    for m in markers:
        if m.insee not in seen:
            continue
        if m.lon is not None and m.lat is not None:
            x, y = territory.project(m.lon, m.lat)
        elif m.insee in territory.centres:
            # No coordinates: around the commune's centre, a small step per hotspot.
            k = per_commune.get(m.insee, 0)
            per_commune[m.insee] = k + 1
            cx, cy = territory.centres[m.insee]
            x, y = cx + 7 * math.cos(k * 2.4) * (k > 0), cy + 7 * math.sin(k * 2.4) * (k > 0)
        else:
            continue
        state = m.state if m.state in STATE_COLOURS else "unknown"
        tip = f"{m.label} — {STATE_TEXT[state]}"
        out.append(
            f'<circle cx="{x:.1f}" cy="{y:.1f}" r="6" fill="{STATE_COLOURS[state]}"'
            f' class="marker marker-{state}" data-ap={quoteattr(m.ap_id)}>'
            f"<title>{escape(tip)}</title></circle>"
        )
    out.append("</g>")
    # Legend: the states, then the shading classes.
    y = h + 14
    x = 10.0
    out.append('<g class="legend" font-size="12" fill="#1a1a1a">')
    for state, colour in STATE_COLOURS.items():
        out.append(f'<circle cx="{x + 6:.0f}" cy="{y:.0f}" r="6" fill="{colour}"/>')
        out.append(f'<text x="{x + 16:.0f}" y="{y + 4:.0f}">{STATE_TEXT[state]}</text>')
        x += 100
    if bounds:
        out.append(f'<text x="{x:.0f}" y="{y + 4:.0f}">visiteurs :</text>')
        x += 70
        low = 1
        for colour, bound in zip(SHADES, bounds, strict=True):
            out.append(
                f'<rect x="{x:.0f}" y="{y - 7:.0f}" width="14" height="14" fill="{colour}"'
                ' stroke="#6b6b6b" stroke-width="0.5"/>'
            )
            out.append(f'<text x="{x + 18:.0f}" y="{y + 4:.0f}">{low}–{bound}</text>')
            low = bound + 1
            x += 80
    out.append("</g></svg>")
    return "".join(out)
