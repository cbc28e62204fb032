"""The Grafana dashboards' InfluxQL queries run against a real InfluxDB 1.x (Debian's
``influxd``) holding cells written by borne's own store: each answers, none is empty."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import pytest

from controller.stats import Cell, Influx1Store
from tests.controller.stats.conftest import Server
from tests.controller.stats.conftest import influxdb1 as _influxdb1

GRAFANA = Path(__file__).resolve().parents[2] / "dashboards" / "grafana"
ROC, CAH = "46240", "46042"
DAY = "2026-07-14"
START = 1_784_066_400  # 2026-07-14 00:00 Europe/Paris

influxdb1 = _influxdb1


def _dashboards() -> Iterator[tuple[str, dict[str, Any]]]:
    for path in sorted(GRAFANA.glob("*.json")):
        yield path.name, json.loads(path.read_text("utf-8"))


def _queries() -> list[tuple[str, str, str]]:
    out = []
    for name, dash in _dashboards():
        for panel in dash["panels"]:
            for t in panel["targets"]:
                out.append((name, panel["title"], t["query"]))
        for var in dash["templating"]["list"]:
            if var["type"] == "query":
                out.append((name, var["name"], var["query"]))
    return out


def test_dashboards_are_importable_grafana_json() -> None:
    """Each file is a Grafana dashboard: uid, title, InfluxDB data source input, panels."""
    names = [name for name, _ in _dashboards()]
    assert names == ["borne-commune.json", "borne-territory.json"]
    for _, dash in _dashboards():
        assert dash["uid"] and dash["title"] and dash["panels"]
        assert dash["__inputs"][0]["pluginId"] == "influxdb"
        ids = [p["id"] for p in dash["panels"]]
        assert len(ids) == len(set(ids))
        for panel in dash["panels"]:
            assert panel["targets"] and all(t["rawQuery"] for t in panel["targets"])


def _cells() -> list[Cell]:
    cells = []
    for insee, n in ((ROC, 120), (CAH, 60)):
        values = {"visitors": n, "sessions": 2 * n, "dwell_5_15m": n, "bytes_down": 10 * n}
        cells.append(Cell("presence", "commune", "day", START, DAY, insee, values=values))
        cells.append(
            Cell(
                "presence", "commune", "hour", START + 3600 * 15, DAY, insee, values={"visitors": n}
            )
        )
    cells.append(
        Cell("presence", "territory", "day", START, DAY, values={"visitors": 180, "sessions": 360})
    )
    cells.append(
        Cell("presence", "territory", "hour", START + 3600 * 15, DAY, values={"visitors": 180})
    )
    cells.append(
        Cell("flow", "flow", "day", START, DAY, CAH, destination=ROC, values={"visitors": 15})
    )
    cells.append(
        Cell("flow", "flow", "day", START, DAY, ROC, destination=CAH, values={"visitors": 12})
    )
    return cells


@pytest.mark.slow
async def test_every_query_answers_with_data_from_a_real_influxdb(influxdb1: Server) -> None:
    """Every panel's InfluxQL, with Grafana's macros filled in, returns series from influxd."""
    tz = await asyncio.to_thread(ZoneInfo, "Europe/Paris")
    store = Influx1Store(influxdb1.url, "borne", tz)
    try:
        await store.create_database()
        await store.write(_cells())
    finally:
        await store.aclose()
    queries = await asyncio.to_thread(_queries)
    assert len(queries) == 12
    async with aiohttp.ClientSession() as http:
        for name, title, query in queries:
            q = query.replace(
                "$timeFilter", "time >= '2026-07-01T00:00:00Z' AND time < '2026-08-01T00:00:00Z'"
            )
            q = q.replace("$insee", ROC)
            assert not re.search(r"\$[a-zA-Z_]", q), (name, title)
            async with http.get(f"{influxdb1.url}/query", params={"db": "borne", "q": q}) as resp:
                assert resp.status == 200, (name, title, await resp.text())
                answer = await resp.json()
            [result] = answer["results"]
            assert "error" not in result, (name, title, result)
            values = [v for s in result.get("series", []) for v in s["values"]]
            assert values, (name, title, q)
            numbers = [x for row in values for x in row[1:] if isinstance(x, int | float)]
            if not re.search(r"SHOW TAG VALUES", q):
                assert any(n > 0 for n in numbers), (name, title, values)
