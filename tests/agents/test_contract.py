"""The MQTT contract: every message the agent can emit validates on the controller side."""

from __future__ import annotations

import dataclasses
import json
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents._core import CommandGuard, CommandRefused, Envelope, GatewayClient
from agents.agent import Agent
from agents.config import AgentConfig
from agents.contract import (
    AGENT_KINDS,
    AcctEntry,
    ApplyConfigArgs,
    AuthorizeArgs,
    ClientEvent,
    Command,
    DeauthorizeArgs,
    command_args,
    encode,
    parse_topic,
    seal,
    sign_command,
    topic,
)
from agents.gateway import SimulatedGateway
from controller.contract import ADAPTERS, Rejected, decode

KEY = "k" * 32
NOW = 1_790_000_000.0


class RecordingLink:
    """Stands in for the MQTT link: records what the agent publishes (mid = its index)."""

    def __init__(self) -> None:
        self.published: list[tuple[str, bytes, bool]] = []
        self.connected = threading.Event()
        self.connected.set()

    def publish(self, topic_name: str, payload: bytes, qos: int = 1, retain: bool = False) -> Any:
        self.published.append((topic_name, payload, retain))
        return SimpleNamespace(mid=len(self.published))

    def subscribe(self, topic_filter: str, qos: int = 1) -> None:
        pass

    def stop(self) -> None:
        self.connected.clear()


def make_agent(
    gw: SimulatedGateway, clock: list[float], state_dir: Path
) -> tuple[Agent, RecordingLink]:
    cfg = AgentConfig(ap_id="ap-46201-01", command_key=KEY, state_dir=str(state_dir))
    agent = Agent(cfg, gw, clock=lambda: clock[0], persist_state=False)
    link = RecordingLink()
    agent.link = link  # type: ignore[assignment]
    return agent, link


def keys(ap_id: str) -> bytes | None:
    return KEY.encode() if ap_id == "ap-46201-01" else None


def command(**over: Any) -> bytes:
    fields: dict[str, Any] = {
        "v": 1, "ap": "ap-46201-01", "id": "c1", "cmd": "authorize",
        "args": dataclasses.asdict(AuthorizeArgs(mac="02:00:00:00:00:01", minutes=60)),
        "iat": NOW, "exp": NOW + 60,
    }  # fmt: skip
    fields.update(over)
    return encode(sign_command(Command(**fields), KEY.encode()))


def test_every_message_the_agent_emits_validates(tmp_path: Path) -> None:
    """Status, Will, clients, acct, health and ack from a running agent all pass the controller."""
    gw = SimulatedGateway()
    clock = [NOW]
    agent, link = make_agent(gw, clock, tmp_path)
    agent._on_connect(agent.link)
    gw.arrive("02:00:00:00:00:01", "10.46.1.100")
    gw.arrive("02:00:00:00:00:02", "10.46.1.101")
    agent.poll()
    agent.handle_command(command())
    gw.browse("02:00:00:00:00:01", 2**33, 2**34)  # beyond 32 bits
    clock[0] += 60
    agent.poll()
    agent.publish_acct()
    agent.publish_health()
    agent.handle_command(command(id="c2", cmd="deauthorize",
                                 args={"mac": "02:00:00:00:00:01"}))  # fmt: skip
    agent.handle_command(command(id="c3", cmd="sync", args={}))
    settings = ApplyConfigArgs(version=1, walled_garden=["10.46.0.2"], walled_garden_ports=[443])
    agent.handle_command(command(id="c4", cmd="apply_config", args=dataclasses.asdict(settings)))
    # A reconnection: the status then carries the applied version.
    agent._on_connect(agent.link)
    agent.poll()
    agent.pump()
    will_topic, will_payload, _qos, will_retain = _WILLS[-1]  # kept by _expose_will
    kinds = set()
    for name, payload, _retain in [*link.published, (will_topic, will_payload, will_retain)]:
        kind, msg = decode(name, payload, keys)
        kinds.add(kind)
        assert msg.ap == "ap-46201-01"
    assert kinds == set(AGENT_KINDS)
    acct = [decode(n, p, keys)[1] for n, p, _ in link.published if n.endswith("/acct")]
    assert acct[0].entries[0].down_bytes == 2**34  # type: ignore[union-attr]
    acks = [decode(n, p, keys)[1] for n, p, _ in link.published if n.endswith("/ack")]
    assert [(a.id, a.ok, a.result) for a in acks][-1] == ("c4", True, "applied")  # type: ignore[union-attr]
    status = [decode(n, p, keys)[1] for n, p, _ in link.published if n.endswith("/status")]
    assert status[-1].config_version == 1  # type: ignore[union-attr]


# The Wills agents handed to their MQTT link (``_expose_will``), latest last.
_WILLS: list[tuple[str, bytes, int, bool]] = []


@pytest.fixture(autouse=True)
def _expose_will(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the Will the agent hands to its MQTT link, for the test above."""
    from agents._mqtt_io import MqttLink

    def capture(*args: Any, **kw: Any) -> MqttLink:
        _WILLS.append(kw["will"])
        return MqttLink(*args, **kw)

    monkeypatch.setattr("agents.agent.MqttLink", capture)


macs = st.from_regex(r"\A[0-9a-f]{2}(:[0-9a-f]{2}){5}\Z")
ips = st.ip_addresses(v=4).map(str) | st.ip_addresses(v=6).map(str)
counters = st.integers(min_value=0, max_value=2**64 - 1)


@settings(max_examples=200, deadline=None)
@given(
    events=st.lists(st.builds(ClientEvent, event=st.sampled_from(["seen", "authorized", "left"]),
                              mac=macs, ip=ips, at=st.floats(NOW, NOW + 1e6)), max_size=20),
    entries=st.lists(st.builds(AcctEntry, mac=macs, ip=ips, session_start=st.floats(NOW, NOW + 1e6),
                               up_bytes=counters, down_bytes=counters), max_size=20),
    ts=st.floats(NOW, NOW + 1e8),
)  # fmt: skip
def test_envelope_messages_validate_for_any_values(
    events: list[ClientEvent], entries: list[AcctEntry], ts: float
) -> None:
    """Whatever values the agent puts in, its sealed messages validate."""
    env = Envelope("ap-46201-01")
    for kind, msg in [
        ("clients", env.clients(ts, events, full=True)),
        ("acct", env.acct(ts, 60, entries)),
        ("ack", env.ack(ts, "x" * 64, False, "é" * 200)),
        ("ack", env.ack(ts, "y" * 64, True, None, "unchanged")),
    ]:
        got_kind, got = decode(topic("ap-46201-01", kind), seal(msg, KEY.encode()), keys)
        assert got_kind == kind
        assert dataclasses.replace(got, sig="") == msg


def test_the_controller_knows_every_agent_kind() -> None:
    """The controller has a validator for every kind the contract lets an agent publish."""
    assert set(ADAPTERS) == set(AGENT_KINDS)


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("borne/v1/ap/ap-1/status", True),
        ("borne/v1/ap/ap-1/cmd", True),
        ("borne/v1/ap/AP-1/status", False),
        ("borne/v1/ap/ap-1/other", False),
        ("borne/v2/ap/ap-1/status", False),
        ("borne/v1/ap/ap-1/status/x", False),
        ("borne/v1/ap/+/status", False),
        ("borne/v1/ap/ap-1\n/status", False),
    ],
)
def test_topic_names(name: str, ok: bool) -> None:
    """Only the contract's topics parse."""
    if ok:
        assert parse_topic(name)[0] == "ap-1"
    else:
        with pytest.raises(ValueError):
            parse_topic(name)


def test_a_message_signed_with_another_key_is_rejected() -> None:
    """An agent message whose signature does not match its AP's key is refused."""
    msg = Envelope("ap-46201-01").ack(NOW, "c1", True)
    with pytest.raises(Rejected) as err:
        decode(topic("ap-46201-01", "ack"), seal(msg, b"another-key-of-32-bytes........."), keys)
    assert err.value.reason == "bad_signature"


def test_a_tampered_message_is_rejected() -> None:
    """Changing any field after sealing breaks the signature."""
    payload = json.loads(seal(Envelope("ap-46201-01").ack(NOW, "c1", True), KEY.encode()))
    payload["ok"] = False
    with pytest.raises(Rejected) as err:
        decode(topic("ap-46201-01", "ack"), json.dumps(payload).encode(), keys)
    assert err.value.reason == "bad_signature"


def test_apply_config_without_the_idle_timeout_leaves_openndss_own() -> None:
    """A controller that predates ``idle_timeout_minutes`` sends no such key: the agent
    takes it as 0 (openNDS's own setting stays); a newer one sends the minutes."""
    guard = CommandGuard("ap-46201-01", KEY.encode())
    older = dataclasses.asdict(ApplyConfigArgs(version=1, session_minutes=60))
    del older["idle_timeout_minutes"]
    _cmd, args = guard.check(command(id="c1", cmd="apply_config", args=older), NOW)
    assert args == ApplyConfigArgs(version=1, session_minutes=60, idle_timeout_minutes=0)
    newer = dataclasses.asdict(ApplyConfigArgs(version=2, idle_timeout_minutes=15))
    _cmd, args = guard.check(command(id="c2", cmd="apply_config", args=newer), NOW)
    assert args.idle_timeout_minutes == 15
    with pytest.raises(CommandRefused, match="idle_timeout_minutes must be an integer"):
        guard.check(
            command(id="c3", cmd="apply_config", args={**newer, "idle_timeout_minutes": "15"}),
            NOW,
        )


def test_optional_arguments_at_their_default_are_not_sent() -> None:
    """``command_args`` leaves out an OPTIONAL field at its default, so that an agent that
    predates it (which refuses unknown keys) still takes the command; other fields,
    defaults included, are always sent."""

    fields = {f.name for f in dataclasses.fields(ApplyConfigArgs)}
    none = command_args(ApplyConfigArgs(version=3))
    assert set(none) == fields - {"idle_timeout_minutes"} and none["walled_garden"] == []
    some = command_args(ApplyConfigArgs(version=3, idle_timeout_minutes=15))
    assert set(some) == fields and some["idle_timeout_minutes"] == 15
    guard = CommandGuard("ap-46201-01", KEY.encode())
    _cmd, args = guard.check(command(id="c9", cmd="apply_config", args=none), NOW)
    assert args == ApplyConfigArgs(version=3)


def test_deauthorize_args_shape() -> None:
    """Commands carry typed arguments that the agent rebuilds."""
    assert DeauthorizeArgs(**{"mac": "02:00:00:00:00:01"}).mac == "02:00:00:00:00:01"


def test_gateway_client_counters_are_bytes() -> None:
    """The simulated gateway counts bytes, as the contract says."""
    gw = SimulatedGateway()
    gw.arrive("02:00:00:00:00:01", "10.0.0.1")
    gw.authorize("02:00:00:00:00:01", 10, 0, 0, 0, 0)
    gw.browse("02:00:00:00:00:01", 5, 7)
    (c,) = gw.clients()
    assert c == GatewayClient("02:00:00:00:00:01", "10.0.0.1", True, c.session_start, 5, 7)
