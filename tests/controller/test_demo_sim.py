"""The demo's simulated world: openNDS-like FAS queries, form filling, fleet layout."""

from __future__ import annotations

import base64
import csv
import io
import random
import re
from pathlib import Path
from typing import Any

import aiohttp

from agents.contract import AP_ID_RE, MAC_RE
from agents.gateway import SimulatedGateway
from captive_portal._fas import decode_fas
from controller._demo_sim import (
    MAX_APS,
    PROBES,
    TOURIST_SITES,
    Hotspot,
    ap_id_of,
    fas_query,
    fas_url,
    parse_form,
    pick_communes,
    random_mac,
)
from controller.demo import DemoInfo
from controller.registry import lot_communes
from controller.stats import SqlStatsStore
from tests.controller.test_demo import _run_until
from tests.testbed import decode_fas as split_fas

HID = "0123456789abcdef" * 4
COMMUNES = {c.name: c for c in lot_communes()}


def _hotspot(index: int = 0) -> Hotspot:
    return Hotspot("ap-46240-01", COMMUNES["Rocamadour"], 1, index, SimulatedGateway())


def test_fas_query_is_what_the_portal_decodes() -> None:
    """The crafted ``fas`` value decodes, through the portal's own decoder, to the client."""
    hs = _hotspot()
    fas = decode_fas(fas_query(hs, "02:ab:cd:ef:01:23", "10.46.1.42", PROBES[0], HID))
    assert fas.client_mac == "02:ab:cd:ef:01:23"
    assert fas.client_ip == "10.46.1.42"
    assert fas.gateway_name == "ap-46240-01"
    assert fas.gateway_address == "10.46.1.1:2050"
    assert fas.origin_url == PROBES[0]
    assert fas.hid == HID


def test_fas_query_has_the_shape_of_opennds_9_10() -> None:
    """Fields in openNDS's order, lower-case escapes, bare gatewaymac, (null) tail."""
    value = fas_query(_hotspot(), "02:ab:cd:ef:01:23", "10.46.1.42", PROBES[1], HID)
    decoded = base64.b64decode(value).decode()
    fields = split_fas(value)
    assert list(fields) == [
        "hid", "clientip", "clientmac", "client_type", "gatewayname", "gatewayurl",
        "version", "gatewayaddress", "gatewaymac", "originurl", "clientif", "themespec",
    ]  # fmt: skip
    assert fields["originurl"] == "http%3a%2f%2fconnectivitycheck.gstatic.com%2fgenerate_204"
    assert fields["gatewaymac"] == "02005e000000"
    assert decoded.endswith("themespec=(null), (null)(null)(null)(null)")


def test_fas_url_keeps_the_base64_as_opennds_writes_it() -> None:
    """The base64 (with + / =) goes into the query unescaped, as in openNDS's redirect."""
    url = fas_url("http://127.0.0.1:8080/fas/", "ab+c/d==")
    assert str(url) == "http://127.0.0.1:8080/fas/?fas=ab+c/d=="


def test_parse_form_ticks_the_box_and_keeps_hidden_fields() -> None:
    """The first POST form gives its action, hidden fields and the ticked checkboxes; the
    statistics opt-out stays unticked (the visitor's choice)."""
    page = """
    <form method="get" action="/search"><input name="q" value="x"></form>
    <form method="post" action="/fas/accept">
      <input type="hidden" name="state" value="v1.abc.def">
      <input type="hidden" name="lang" value="fr">
      <input type="checkbox" id="consent" name="consent" value="yes" required>
      <input type="checkbox" name="newsletter">
      <input type="checkbox" name="stats_optout" value="yes">
      <button type="submit">Se connecter</button>
    </form>
    <form method="post" action="/other"><input type="hidden" name="z" value="1"></form>
    """
    form = parse_form(page)
    assert form is not None
    action, fields = form
    assert action == "/fas/accept"
    assert fields == [
        ("state", "v1.abc.def"),
        ("lang", "fr"),
        ("consent", "yes"),
        ("newsletter", "on"),
    ]
    assert parse_form("<p>no form</p>") is None


def test_pick_communes_starts_with_the_tourist_sites() -> None:
    """Hotspots go first to the tourist sites, then to other communes, then double up."""
    rng = random.Random(1)
    assert [c.name for c, _ in pick_communes(4, rng)] == list(TOURIST_SITES[:4])
    picks = pick_communes(330, random.Random(2))
    names = [c.name for c, _ in picks]
    assert names[: len(TOURIST_SITES)] == list(TOURIST_SITES)
    assert len(set(names[:320])) == 320
    assert [n for _, n in picks[320:]] == [2] * 10
    ids = [ap_id_of(c, n) for c, n in pick_communes(MAX_APS, random.Random(3))]
    assert len(set(ids)) == MAX_APS
    assert all(AP_ID_RE.fullmatch(i) for i in ids)
    assert ap_id_of(COMMUNES["Rocamadour"], 1) == f"ap-{COMMUNES['Rocamadour'].insee}-01"


def test_random_mac_is_unicast_and_locally_administered() -> None:
    """Simulated phones use random MACs as phones do: unicast, locally administered."""
    rng = random.Random(4)
    for _ in range(500):
        mac = random_mac(rng)
        assert MAC_RE.fullmatch(mac)
        first = int(mac[:2], 16)
        assert first & 0b01 == 0 and first & 0b10 == 0b10


def test_hotspot_addresses_are_distinct_across_the_fleet() -> None:
    """Each hotspot of a full fleet gets its own client network and gateway MAC."""
    hotspots = [_hotspot(i) for i in range(MAX_APS)]
    assert len({h.gateway_ip for h in hotspots}) == MAX_APS
    assert len({h.gateway_mac for h in hotspots}) == MAX_APS
    assert hotspots[0].client_ip(42) == "10.46.1.42"


async def test_demo_dashboards_show_preloaded_statistics_at_once(tmp_path: Path) -> None:
    """The demo's dashboards answer with published statistics from the start: the demo
    is ready before the simulated past days are computed (in a process of their own),
    and a dashboard read meanwhile waits for them instead of seeing empty days. The
    usage API's daily table then holds each preloaded day, equal to its published
    territory cell; the home page's map is shaded with visitors."""
    database = f"sqlite+aiosqlite:///{tmp_path / 'demo.db'}"
    seen: dict[str, Any] = {}

    async def check(info: DemoInfo) -> None:
        assert len(info.stats_days) == 3 and info.stats_ready is not None
        base = info.dashboard_url
        async with aiohttp.ClientSession() as http:
            query = {"table": "daily", "from": info.stats_days[0], "to": info.stats_days[-1]}
            async with http.get(f"{base}usage.csv", params=query) as resp:
                assert resp.status == 200
                seen["daily"] = list(csv.DictReader(io.StringIO(await resp.text())))
            async with http.get(base) as resp:
                seen["home"] = await resp.text()
        seen["cells"] = {
            day: await SqlStatsStore(info.controller.db).read_day(day) for day in info.stats_days
        }

    info = await _run_until(
        check,
        aps=2,
        portal_port=0,
        dashboard_port=0,
        visitors_per_minute=0,
        database=database,
        seed=7,
    )
    daily = {row["jour"]: row for row in seen["daily"]}
    assert set(daily) == set(info.stats_days)
    for day, cells in seen["cells"].items():
        (territory,) = [c for c in cells if c.scope == "territory"]
        assert int(daily[day]["visitors"]) == territory.visitors > 0
        communes = [c for c in cells if (c.scope, c.period) == ("commune", "day")]
        assert len(communes) > 50 and all(c.visitors >= 11 for c in communes)
    # The home page's map shades each commune with its published visitors of the days.
    shaded = {
        insee: int(n)
        for insee, n in re.findall(
            r'data-insee="(\w+)"><title>[^<]*? : (\d+) visiteurs</title>', seen["home"]
        )
    }
    expected: dict[str, int] = {}
    for cells in seen["cells"].values():
        for c in cells:
            if (c.kind, c.scope, c.period) == ("presence", "commune", "day"):
                expected[c.insee] = expected.get(c.insee, 0) + c.visitors
    assert shaded == expected and len(shaded) > 50
