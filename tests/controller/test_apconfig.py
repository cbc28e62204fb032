"""Gateway settings of the access points: built from the configuration, versioned, pushed.

The automatic push runs the real controller core on a real mosquitto with a real agent
(its gateway simulated: openNDS and dnsmasq are exercised by tests/e2e/test_hotspot.py).
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import sqlalchemy as sa
from paho.mqtt.enums import CallbackAPIVersion

from agents._core import Envelope
from agents.agent import Agent
from agents.config import AgentConfig
from agents.contract import seal, topic
from agents.gateway import SimulatedGateway
from controller.apconfig import (
    _push_cli,
    desired_settings,
    idle_minutes,
    plan_version,
    prepare_push,
    push,
)
from controller.config import load_settings
from controller.main import open_controller
from controller.registry import Commune
from controller.service import Controller
from controller.storage.schema import ap_configs
from tests.testbed import MosquittoBroker

AP = "ap-46201-01"
T0 = 1_790_000_000.0


def test_settings_come_from_sessions_ap_config_and_the_portal_address() -> None:
    settings = load_settings(
        None,
        portal={"public_url": "http://10.46.2.1:8080/fas/"},
        sessions={"session_minutes": 90, "up_kbps": 1000, "down_kbps": 4000},
        ap_config={"walled_garden": ["lot-tourisme.example"], "down_quota_kb": 500},
    )
    args = desired_settings(settings, AP)
    assert (args.session_minutes, args.up_kbps, args.down_kbps) == (90, 1000, 4000)
    assert (args.down_quota_kb, args.walled_garden) == (500, ["lot-tourisme.example"])
    assert (args.fas_remote_ip, args.fas_remote_fqdn, args.fas_port, args.fas_path) == (
        "10.46.2.1",
        "",
        8080,
        "/fas/",
    )
    assert args.capport_url == f"http://10.46.2.1:8080/capport/api/{AP}"


def test_a_wifi4eu_commune_adds_the_commission_hosts_to_its_walled_garden() -> None:
    """The WiFi4EU snippet's hosts go to that commune's access points only."""
    settings = load_settings(
        None,
        ap_config={"walled_garden": ["lot-tourisme.example"]},
        portal={"communes": {"46042": {"wifi4eu_network_id": "0c2a8f1e-5b7d-4c1a-9e3f"}}},
    )
    assert desired_settings(settings, AP, "46042").walled_garden == [
        "lot-tourisme.example",
        "collection.wifi4eu.ec.europa.eu",
        "wifi4eucollectorprod.azurewebsites.net",
    ]
    assert desired_settings(settings, AP, "46201").walled_garden == ["lot-tourisme.example"]
    assert desired_settings(settings, AP).walled_garden == ["lot-tourisme.example"]


def test_the_idle_timeout_is_the_communes_else_radiuss_in_whole_minutes() -> None:
    """openNDS's authidletimeout: the commune's idle timeout where it sets one, else
    [radius]'s (as in RADIUS replies), rounded up to whole minutes, at least 3 (openNDS
    does not start below its check interval's double); 0 (none) leaves the AP's own."""
    settings = load_settings(
        None,
        radius={"idle_timeout_s": 1200},
        portal={
            "communes": {
                "46042": {"idle_timeout_s": 290},
                "46102": {"idle_timeout_s": 0},
                "46103": {"idle_timeout_s": 30},
                "46104": {"session_minutes": 45},
            }
        },
    )
    idle = {
        i: desired_settings(settings, AP, i).idle_timeout_minutes
        for i in ("46042", "46102", "46103", "46104", "46201")
    }
    assert idle == {"46042": 5, "46102": 0, "46103": 3, "46104": 20, "46201": 20}
    assert desired_settings(settings, AP).idle_timeout_minutes == 20
    # The commune's session length (and rates) too, else [sessions]'.
    assert desired_settings(settings, AP, "46104").session_minutes == 45
    assert desired_settings(settings, AP, "46042").session_minutes == (
        settings.sessions.session_minutes
    )
    # [radius]'s default, 900 s.
    assert desired_settings(load_settings(None), AP).idle_timeout_minutes == 15
    assert [idle_minutes(s) for s in (0, 1, 180, 181, 86400)] == [0, 3, 3, 4, 1440]


def test_a_portal_host_name_goes_to_fasremotefqdn_with_the_configured_address() -> None:
    settings = load_settings(
        None,
        portal={"public_url": "https://wifi.lot.example/fas/"},
        ap_config={"fas_remote_ip": "192.0.2.10", "capport": False},
    )
    args = desired_settings(settings, AP)
    assert (args.fas_remote_ip, args.fas_remote_fqdn, args.fas_port) == (
        "192.0.2.10",
        "wifi.lot.example",
        443,
    )
    assert args.capport_url == ""


async def test_the_version_rises_only_when_the_settings_change(controller: Controller) -> None:
    args = desired_settings(controller.settings, AP)
    db = controller.db
    assert await plan_version(db, args, AP, T0) == 1
    assert await plan_version(db, args, AP, T0 + 1) == 1
    changed = dataclasses.replace(args, session_minutes=args.session_minutes + 1)
    assert await plan_version(db, changed, AP, T0 + 2) == 2
    assert await plan_version(db, changed, AP, T0 + 3) == 2
    # An agent reporting a version the database never issued (a restored backup): the
    # controller skips past it, never lower.
    async with db.begin() as conn:
        await conn.execute(
            ap_configs.update().where(ap_configs.c.ap_id == AP).values(reported_version=7)
        )
    assert await plan_version(db, changed, AP, T0 + 4) == 8


async def row(ctl: Controller) -> Any:
    async with ctl.db.connect() as conn:
        return (await conn.execute(sa.select(ap_configs).where(ap_configs.c.ap_id == AP))).first()


async def test_acks_and_reported_versions_are_recorded(controller: Controller) -> None:
    """Fed through the ingest path: the agent's status and its acks of apply_config."""
    key = controller.registry.key_for(AP)
    assert key is not None
    env = Envelope(AP)
    cmd = await prepare_push(controller, AP)
    assert cmd.cmd == "apply_config" and cmd.args["version"] == 1
    status = env.status(
        T0, "online", agent_version="0.3", gateway="opennds", keepalive_s=30, config_version=None
    )
    assert await controller.handle(topic(AP, "status"), seal(status, key), now=T0) == "applied"
    ack = env.ack(T0 + 1, cmd.id, True, None, "applied")
    assert await controller.handle(topic(AP, "ack"), seal(ack, key), now=T0 + 1) == "applied"
    r = await row(controller)
    assert (r.version, r.applied_version, r.result, r.command_id) == (1, 1, "applied", cmd.id)
    status = env.status(
        T0 + 2, "online", agent_version="0.3", gateway="opennds", keepalive_s=30, config_version=1
    )
    await controller.handle(topic(AP, "status"), seal(status, key), now=T0 + 2)
    assert (await row(controller)).reported_version == 1
    # A refusal is recorded as an error, the applied version stays.
    again = await prepare_push(controller, AP)
    nack = env.ack(T0 + 3, again.id, False, "configuration management is off")
    await controller.handle(topic(AP, "ack"), seal(nack, key), now=T0 + 3)
    r = await row(controller)
    assert (r.applied_version, r.result) == (1, "error: configuration management is off")


# --------------------------------------------------------------------------- real broker


@pytest.fixture
async def ctl(mosquitto: MosquittoBroker, tmp_path: Path) -> AsyncIterator[Controller]:
    settings = load_settings(
        None,
        command_master_key="apconfig-test-master-key-0123",
        database={"url": f"sqlite+aiosqlite:///{tmp_path / 'state.db'}"},
        mqtt={"host": mosquitto.host, "port": mosquitto.port, "client_id": f"ctl-{time.time_ns()}"},
        ap_config={"auto_push": True, "walled_garden": ["10.46.0.2"]},
    )
    async with open_controller(settings, backoff_cap_s=1.0) as (controller, _tg):
        await controller.registry.add_communes([Commune("46201", "Rocamadour", 1.6, 44.8)])
        await controller.registry.add_access_point(AP, "46201", "test")
        assert controller.bridge is not None
        assert await controller.bridge.wait_subscribed(30), "controller never subscribed"
        yield controller
    await asyncio.to_thread(clear_status, mosquitto)


def clear_status(broker: MosquittoBroker) -> None:
    """Clear the AP's retained status: later tests' controllers must not receive it."""
    clear = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id="clear")
    clear.connect(broker.host, broker.port)
    clear.loop_start()
    clear.publish(topic(AP, "status"), b"", qos=1, retain=True).wait_for_publish(5)
    clear.disconnect()
    clear.loop_stop()


def start_agent(
    ctl: Controller, broker: MosquittoBroker, state: Path, gw: SimulatedGateway
) -> tuple[Agent, threading.Event, threading.Thread]:
    cfg = AgentConfig(
        ap_id=AP,
        command_key=ctl.registry.command_key(AP),
        mqtt_host=broker.host,
        mqtt_port=broker.port,
        poll_interval_s=0.2,
        health_interval_s=60,
        gateway="simulated",
        state_dir=str(state),
    )
    agent = Agent(cfg, gw, backoff_cap_s=1.0)
    stop = threading.Event()
    thread = threading.Thread(target=agent.run, args=(stop,), daemon=True)
    thread.start()
    return agent, stop, thread


async def until(pred: Any, within: float = 20.0, what: str = "") -> Any:
    deadline = time.monotonic() + within
    while True:
        value = await pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def test_an_ap_coming_online_gets_its_settings_once(
    ctl: Controller, mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    """One push for the two "online" of a start; none when the agent comes back with the
    controller's version; a change of settings gives a new version, applied."""
    gw = SimulatedGateway()
    _, stop, thread = await asyncio.to_thread(start_agent, ctl, mosquitto, tmp_path / "state", gw)
    try:
        r = await until(lambda: _acked(ctl), what="apply_config acked")
        assert (r.version, r.applied_version, r.result) == (1, 1, "applied")
        await asyncio.sleep(1.0)
        assert ctl.counters["config_auto_pushed"] == 1 and gw.restarts == 1
        assert gw.config is not None and gw.config.walled_garden == ["10.46.0.2"]
    finally:
        stop.set()
        await asyncio.to_thread(thread.join, 15)
    _, stop, thread = await asyncio.to_thread(start_agent, ctl, mosquitto, tmp_path / "state", gw)
    try:
        await until(lambda: _reported(ctl, 1), what="version 1 reported")
        await asyncio.sleep(1.0)
        assert ctl.counters["config_auto_pushed"] == 1
        ctl.settings = ctl.settings.model_copy(
            update={"sessions": ctl.settings.sessions.model_copy(update={"session_minutes": 30})}
        )
        cmd_id = await push(ctl, AP)
        r = await until(lambda: _acked(ctl, cmd_id), what="second push acked")
        assert (r.version, r.applied_version, r.result) == (2, 2, "applied")
        assert gw.restarts == 2 and gw.config is not None and gw.config.session_minutes == 30
    finally:
        stop.set()
        await asyncio.to_thread(thread.join, 15)


async def _acked(ctl: Controller, cmd_id: str | None = None) -> Any:
    r = await row(ctl)
    if r is None or r.acked_at is None or (cmd_id and r.command_id != cmd_id):
        return None
    return r


async def _reported(ctl: Controller, version: int) -> bool:
    r = await row(ctl)
    return r is not None and r.reported_version == version


async def test_the_cli_pushes_to_every_ap_and_prints_each_result(
    ctl: Controller,
    mosquitto: MosquittoBroker,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`borne ap config push --all`: one line per AP; an AP without agent is reported late."""
    await ctl.registry.add_access_point("ap-46201-02", "46201", "sans agent")
    gw = SimulatedGateway()
    _, stop, thread = await asyncio.to_thread(start_agent, ctl, mosquitto, tmp_path / "state", gw)
    try:
        await until(lambda: _acked(ctl), what="automatic push acked")
        assert await _push_cli(ctl.settings, None, 5.0) == 1
        out = capsys.readouterr().out.splitlines()
        assert f"{AP}: version 1: unchanged" in out
        assert "ap-46201-02: version 1: sent, no acknowledgement in time" in out
        assert gw.restarts == 1
    finally:
        stop.set()
        await asyncio.to_thread(thread.join, 15)


async def test_settings_the_agent_would_refuse_are_not_sent(controller: Controller) -> None:
    controller.settings = controller.settings.model_copy(
        update={"ap_config": controller.settings.ap_config.model_copy(
            update={"walled_garden": ("good.example", "bad host")}
        )}
    )  # fmt: skip
    with pytest.raises(ValueError, match="walled_garden: 'bad host'"):
        await prepare_push(controller, AP)
    assert await row(controller) is None
