"""Usage and flows from published statistics, pure: day digests in, tables out, CSV.

The input is the statistics store's published cells only (thresholded, maybe noised):
a cell that was not published is simply absent, and every total here is a sum of
published cells, never a recomputation. :func:`digest` shrinks one day's cells to what
the pages show (per commune: day values, visitors per hour, flows), so that a year of
days stays small in memory. No IO, no clock.

What must not happen here: a commune's page showing a figure of a commune outside the
reader's scope (flows are kept only when their origin or destination is in scope, and
the other end of a flow is named, as the issue asks: "flows to and from it").
"""

from __future__ import annotations

import csv
import dataclasses
import io
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Final

from controller.stats.models import DWELL_BUCKETS, Cell

__all__ = [
    "DWELL_LABELS",
    "DayDigest",
    "UsageView",
    "bar_chart",
    "chart_data",
    "digest",
    "flows_chart",
    "to_csv",
    "usage_view",
]

TERRITORY: Final = ""
DWELL_LABELS: Final = {
    "dwell_lt_5m": "moins de 5 min",
    "dwell_5_15m": "5 à 15 min",
    "dwell_15_30m": "15 à 30 min",
    "dwell_30_60m": "30 min à 1 h",
    "dwell_1_2h": "1 à 2 h",
    "dwell_ge_2h": "2 h et plus",
}
DAY_FIELDS: Final = (
    "visitors",
    "sessions",
    "repeat_visitors",
    "bytes_up",
    "bytes_down",
    *tuple(name for name, _ in DWELL_BUCKETS),
)


@dataclasses.dataclass(frozen=True, slots=True)
class DayDigest:
    """What the pages need of one day's published cells.

    Attributes:
        day: the local date.
        days: per commune (``""`` for the territory): published day values.
        hours: per commune: published visitors per local hour (index 0–23).
        flows: ``(origin, destination) → visitors`` of published flows.
    """

    day: str
    days: Mapping[str, Mapping[str, int]]
    hours: Mapping[str, Sequence[int]]
    flows: Mapping[tuple[str, str], int]


def digest(day: str, cells: Iterable[Cell], hour_of: Callable[[int], int]) -> DayDigest:
    """One day's published cells, reduced.

    Args:
        day: the local date.
        cells: the cells the store returned for that day.
        hour_of: the local hour (0–23) of an hourly cell's ``start`` (the caller knows
            the time zone; 23- and 25-hour days map as they should).
    """
    days: dict[str, dict[str, int]] = {}
    hours: dict[str, list[int]] = {}
    flows: dict[tuple[str, str], int] = {}
    for c in cells:
        if c.kind == "flow":
            flows[(c.insee, c.destination)] = c.visitors
        elif c.scope in ("commune", "territory"):
            key = c.insee if c.scope == "commune" else TERRITORY
            if c.period == "day":
                days[key] = {f: c.values.get(f, 0) for f in DAY_FIELDS}
            else:
                hours.setdefault(key, [0] * 24)[hour_of(c.start)] += c.visitors
    return DayDigest(day, days, hours, flows)


@dataclasses.dataclass(frozen=True, slots=True)
class UsageView:
    """The usage tables of one place over a period.

    Attributes:
        daily: ``(day, values)`` for each day of the period (values may be empty).
        totals: sums of the daily values.
        hours: visitors per local hour, summed over the period.
        busiest_hours: the three busiest hours, busiest first (hours with visitors).
        dwell: ``(label, sessions)`` per dwell-time bucket.
        last_year: visitors of the same days one year before (None: no data then).
        last_year_daily: ``day → visitors`` one year before that day (days with data).
        came_from: ``(commune, visitors)`` flows into the place, largest first.
        went_to: ``(commune, visitors)`` flows out of the place, largest first.
        routes: ``(origin, destination, visitors)`` largest routes (territory view).
    """

    daily: list[tuple[str, dict[str, int]]]
    totals: dict[str, int]
    hours: list[int]
    busiest_hours: list[int]
    dwell: list[tuple[str, int]]
    last_year: int | None
    last_year_daily: dict[str, int]
    came_from: list[tuple[str, int]]
    went_to: list[tuple[str, int]]
    routes: list[tuple[str, str, int]]


def usage_view(
    place: str,
    digests: Sequence[DayDigest],
    last_year: Sequence[DayDigest],
    visible: set[str] | None,
    top: int = 20,
) -> UsageView:
    """Tables for a commune (``place`` = INSEE) or the territory (``place`` = ``""``).

    Args:
        place: an INSEE code, or ``""`` for the whole territory.
        digests: the period's days, in order.
        last_year: the same days a year before.
        visible: communes the reader may see (None: all); flows must touch one of them.
        top: at most this many flows and routes.
    """
    daily = [(d.day, dict(d.days.get(place, {}))) for d in digests]
    totals = {f: sum(v.get(f, 0) for _, v in daily) for f in DAY_FIELDS}
    hours = [0] * 24
    for d in digests:
        for h, n in enumerate(d.hours.get(place, ())):
            hours[h] += n
    busiest = [h for h in sorted(range(24), key=lambda h: (-hours[h], h)) if hours[h] > 0][:3]
    dwell = [(DWELL_LABELS[name], totals[name]) for name, _ in DWELL_BUCKETS]
    ly = [d.days.get(place, {}).get("visitors", 0) for d in last_year]
    last = sum(ly) if any(d.days.get(place) for d in last_year) else None
    ly_daily = {
        _year_after(d.day): d.days[place].get("visitors", 0) for d in last_year if d.days.get(place)
    }
    came: dict[str, int] = {}
    went: dict[str, int] = {}
    routes: dict[tuple[str, str], int] = {}
    for d in digests:
        for (o, dest), n in d.flows.items():
            if visible is not None and o not in visible and dest not in visible:
                continue
            routes[(o, dest)] = routes.get((o, dest), 0) + n
            if dest == place:
                came[o] = came.get(o, 0) + n
            if o == place:
                went[dest] = went.get(dest, 0) + n

    def ranked(m: Mapping[str, int]) -> list[tuple[str, int]]:
        return sorted(m.items(), key=lambda kv: (-kv[1], kv[0]))[:top]

    return UsageView(
        daily,
        totals,
        hours,
        busiest,
        dwell,
        last,
        ly_daily,
        ranked(came),
        ranked(went),
        [(o, d, n) for (o, d), n in sorted(routes.items(), key=lambda kv: (-kv[1], kv[0]))][:top],
    )


def _year_after(day: str) -> str:
    # The same month and day a year later (the pages compare a day with that day).
    return f"{int(day[:4]) + 1:04d}{day[4:]}"


def _sankey(
    place: str, view: UsageView, name_of: Callable[[str], str]
) -> dict[str, list[dict[str, object]]]:
    """Nodes and links of the flows' Sankey diagram.

    A commune: where its visitors came from → the commune → where they went next. The
    territory: origins → destinations of the main routes. Origins and destinations are
    distinct nodes (``o:``/``d:`` prefixes), so that a route and its return never make a
    cycle (a Sankey diagram has none); the label is the commune's name.
    """
    nodes: dict[str, str] = {}
    links: list[dict[str, object]] = []

    def node(key: str, insee: str) -> str:
        nodes.setdefault(key, name_of(insee))
        return key

    if place:
        middle = node(f"p:{place}", place)
        for origin, n in view.came_from:
            links.append({"source": node(f"o:{origin}", origin), "target": middle, "value": n})
        for dest, n in view.went_to:
            links.append({"source": middle, "target": node(f"d:{dest}", dest), "value": n})
    else:
        for origin, dest, n in view.routes:
            links.append(
                {
                    "source": node(f"o:{origin}", origin),
                    "target": node(f"d:{dest}", dest),
                    "value": n,
                }
            )
    return {
        "nodes": [{"name": key, "label": label} for key, label in nodes.items()],
        "links": links,
    }


def chart_data(place: str, view: UsageView, name_of: Callable[[str], str]) -> dict[str, object]:
    """What the page's charts draw (the same figures as its tables), as JSON-able data.

    Args:
        place: the commune (INSEE) or ``""`` for the territory.
        view: the usage tables.
        name_of: a commune's name from its INSEE code.
    """
    days = [d for d, _ in view.daily]
    return {
        "days": days,
        "visitors": [v.get("visitors") for _, v in view.daily],
        "sessions": [v.get("sessions") for _, v in view.daily],
        "last_year": [view.last_year_daily.get(d) for d in days],
        "bytes_up": [v.get("bytes_up") for _, v in view.daily],
        "bytes_down": [v.get("bytes_down") for _, v in view.daily],
        "hours": list(view.hours),
        "dwell_labels": [label for label, _ in view.dwell],
        "dwell": [n for _, n in view.dwell],
        "sankey": _sankey(place, view, name_of),
    }


def to_csv(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A CSV document (comma-separated, UTF-8 text, header first)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue()


def bar_chart(values: Sequence[int], labels: Sequence[str], title: str) -> str:
    """A bar chart as inline SVG (no script), with a title; the table beside it has the data.

    Args:
        values: one bar each.
        labels: one label each (every few are written under the axis).
        title: the chart's accessible title.
    """
    width, height, pad = 720.0, 180.0, 24.0
    top = max(values, default=0)
    n = max(1, len(values))
    step = (width - 2 * pad) / n
    every = max(1, n // 12)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {width:.0f}'
        f' {height + 20:.0f}" role="img" aria-label="{_attr(title)}">',
        f'<line x1="{pad}" y1="{height}" x2="{width - pad}" y2="{height}" stroke="#6b6b6b"/>',
    ]
    for i, v in enumerate(values):
        h = 0.0 if top <= 0 else (height - pad) * v / top
        x = pad + i * step
        out.append(
            f'<rect x="{x + step * 0.1:.1f}" y="{height - h:.1f}" width="{step * 0.8:.1f}"'
            f' height="{h:.1f}" fill="#3182bd"><title>{_text(labels[i])} : {v}</title></rect>'
        )
        if i % every == 0:
            out.append(
                f'<text x="{x + step / 2:.1f}" y="{height + 14:.0f}" font-size="11"'
                f' text-anchor="middle" fill="#1a1a1a">{_text(labels[i])}</text>'
            )
    out.append("</svg>")
    return "".join(out)


def flows_chart(
    place: str, view: UsageView, name_of: Callable[[str], str], title: str, top: int = 8
) -> str:
    """The flows as a Sankey diagram in inline SVG (no script), with a title.

    A commune: where its visitors came from → the commune → where they went next (the
    ``top`` largest each side); the territory: origins → destinations of the ``top``
    largest routes. Band widths are proportional to visitors; each band's ``<title>``
    says ``A → B : n``. The ranked tables beside it have the same figures.
    """
    if place:
        left = view.came_from[:top]
        right = view.went_to[:top]
        links = [(f"o:{o}", f"p:{place}", n) for o, n in left]
        links += [(f"p:{place}", f"d:{d}", n) for d, n in right]
        middle = max(sum(n for _, n in left), sum(n for _, n in right))
        columns = [
            [(f"o:{o}", n) for o, n in left],
            [(f"p:{place}", middle)] if links else [],
            [(f"d:{d}", n) for d, n in right],
        ]
    else:
        routes = view.routes[:top]
        links = [(f"o:{o}", f"d:{d}", n) for o, d, n in routes]
        out: dict[str, int] = {}
        into: dict[str, int] = {}
        for o, d, n in routes:
            out[f"o:{o}"] = out.get(f"o:{o}", 0) + n
            into[f"d:{d}"] = into.get(f"d:{d}", 0) + n
        columns = [
            sorted(out.items(), key=lambda kv: -kv[1]),
            sorted(into.items(), key=lambda kv: -kv[1]),
        ]
    columns = [c for c in columns if c]
    width, height, node_w, gap, top_m = 720.0, 280.0, 12.0, 6.0, 20.0
    out_svg = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart flows" viewBox="0 0 {width:.0f}'
        f' {height + top_m:.0f}" role="img" aria-label="{_attr(title)}">'
    ]
    if not links:
        out_svg.append("</svg>")
        return "".join(out_svg)
    scale = min((height - gap * (len(col) - 1)) / max(1, sum(v for _, v in col)) for col in columns)
    xs = (
        [0.0]
        if len(columns) == 1
        else [
            (width * 0.26) + i * (width * 0.48 - node_w) / (len(columns) - 1)
            for i in range(len(columns))
        ]
    )
    pos: dict[str, tuple[float, float, float]] = {}  # key → (x, y, height)
    for x, col in zip(xs, columns, strict=True):
        y = top_m
        for key, value in col:
            h = max(1.0, value * scale)
            pos[key] = (x, y, h)
            y += h + gap
    sent: dict[str, float] = {}
    received: dict[str, float] = {}
    for a, b, n in links:
        xa, ya, _ = pos[a]
        xb, yb, _ = pos[b]
        t = max(1.0, n * scale)
        y0 = ya + sent.get(a, 0.0)
        y1 = yb + received.get(b, 0.0)
        sent[a] = sent.get(a, 0.0) + t
        received[b] = received.get(b, 0.0) + t
        x0, x1 = xa + node_w, xb
        xm = (x0 + x1) / 2
        out_svg.append(
            f'<path d="M{x0:.1f},{y0:.1f} C{xm:.1f},{y0:.1f} {xm:.1f},{y1:.1f} {x1:.1f},{y1:.1f}'
            f" L{x1:.1f},{y1 + t:.1f} C{xm:.1f},{y1 + t:.1f} {xm:.1f},{y0 + t:.1f}"
            f' {x0:.1f},{y0 + t:.1f} Z" fill="#3182bd" fill-opacity="0.35">'
            f"<title>{_text(name_of(a[2:]))} → {_text(name_of(b[2:]))} : {n}</title></path>"
        )
    last = len(columns) - 1
    for i, (x, col) in enumerate(zip(xs, columns, strict=True)):
        for key, value in col:
            _, y, h = pos[key]
            label = _text(name_of(key[2:]))
            out_svg.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{node_w:.0f}" height="{h:.1f}"'
                f' fill="#1f5fa8"><title>{label} : {value}</title></rect>'
            )
            # Labels outside the bands: left of the first column, right of the last, above
            # a middle one.
            ty = y + h / 2 + 4
            if 0 < i < last:
                tx, ty, anchor = x + node_w / 2, y - 6, "middle"
            elif i == 0 and last > 0:
                tx, anchor = x - 6, "end"
            else:
                tx, anchor = x + node_w + 6, "start"
            shown = f"{label} ({value})" if not 0 < i < last else label
            out_svg.append(
                f'<text x="{tx:.1f}" y="{ty:.1f}" font-size="12"'
                f' text-anchor="{anchor}" fill="#1a1a1a">{shown}</text>'
            )
    out_svg.append("</svg>")
    return "".join(out_svg)


def _text(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _attr(s: str) -> str:
    return _text(s).replace('"', "&quot;")
