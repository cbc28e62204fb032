"""The agent's sans-IO core: command checks, numbering, client tracking."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agents._core import (
    ClientTracker,
    CommandGuard,
    CommandRefused,
    Envelope,
    GatewayClient,
    batches,
)
from agents.contract import (
    MAX_COMMAND_TTL_S,
    MAX_PAYLOAD_BYTES,
    AcctEntry,
    AuthorizeArgs,
    Command,
    encode,
    seal,
    sign_command,
    topic,
)
from controller.contract import decode

KEY = b"0123456789abcdef0123456789abcdef"
AP = "ap-46201-01"
NOW = 1_790_000_000.0
MAC = "02:00:00:00:00:01"


def signed(key: bytes = KEY, **over: Any) -> bytes:
    fields: dict[str, Any] = {
        "v": 1, "ap": AP, "id": "cmd-1", "cmd": "authorize",
        "args": {"mac": MAC, "minutes": 60}, "iat": NOW, "exp": NOW + 120,
    }  # fmt: skip
    fields.update(over)
    return encode(sign_command(Command(**fields), key))


def test_a_valid_command_is_accepted_with_typed_args() -> None:
    """A well-signed, fresh command for this AP comes out typed."""
    cmd, args = CommandGuard(AP, KEY).check(signed(), NOW)
    assert cmd.id == "cmd-1"
    assert args == AuthorizeArgs(mac=MAC, minutes=60)


def tampered() -> bytes:
    doc = json.loads(signed())
    doc["args"]["minutes"] = 100000
    return json.dumps(doc).encode()


def unsigned() -> bytes:
    doc = json.loads(signed())
    del doc["sig"]
    return json.dumps(doc).encode()


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (lambda: tampered(), "bad_signature"),
        (lambda: unsigned(), "bad_signature"),
        (lambda: signed(key=b"another key, not the AP's own key"), "bad_signature"),
        (lambda: signed(ap="ap-46201-02"), "wrong_ap"),
        (lambda: signed(exp=NOW - 1, iat=NOW - 60), "expired"),
        (lambda: signed(iat=NOW + 3600, exp=NOW + 3700), "not_yet_valid"),
        (lambda: signed(exp=NOW + MAX_COMMAND_TTL_S + 10), "ttl_too_long"),
        (lambda: signed(cmd="reboot"), "unknown_command"),
        (lambda: signed(args={"mac": MAC}), "bad_args"),
        (lambda: signed(args={"mac": "02-00-00-00-00-01", "minutes": 5}), "bad_args"),
        (lambda: signed(args={"mac": MAC, "minutes": "60"}), "bad_args"),
        (lambda: signed(args={"mac": MAC, "minutes": True}), "bad_args"),
        (lambda: signed(args={"mac": MAC, "minutes": -1}), "bad_args"),
        (lambda: signed(args={"mac": MAC, "minutes": 5, "shell": "rm"}), "bad_args"),
        (lambda: b"{not json", "bad_json"),
        (lambda: b"[1, 2]", "bad_shape"),
        (lambda: b"x" * 70_000, "too_large"),
    ],
)
def test_bad_commands_are_refused(payload: Any, reason: str) -> None:
    """Tampered, unsigned, foreign, expired, early, over-long or malformed commands are refused."""
    with pytest.raises(CommandRefused) as err:
        CommandGuard(AP, KEY).check(payload(), NOW)
    assert err.value.reason == reason


def test_a_replayed_command_is_refused() -> None:
    """The same command id is executed once, even if delivered again."""
    guard = CommandGuard(AP, KEY)
    guard.check(signed(), NOW)
    with pytest.raises(CommandRefused) as err:
        guard.check(signed(), NOW + 1)
    assert err.value.reason == "replayed"


def test_replay_protection_survives_a_restart() -> None:
    """Remembered ids handed to a new guard (as the agent persists them) still refuse a replay."""
    first = CommandGuard(AP, KEY)
    first.check(signed(), NOW)
    second = CommandGuard(AP, KEY, first.remembered(NOW))
    with pytest.raises(CommandRefused):
        second.check(signed(), NOW + 5)


def test_remembered_ids_are_forgotten_after_expiry() -> None:
    """Memory stays bounded: ids past their expiry are dropped (they would be refused anyway)."""
    guard = CommandGuard(AP, KEY)
    guard.check(signed(), NOW)
    assert guard.remembered(NOW + 121) == {}


@given(st.binary(max_size=2048))
def test_the_guard_never_raises_anything_else(data: bytes) -> None:
    """Arbitrary bytes give CommandRefused, never another exception."""
    with pytest.raises(CommandRefused):
        CommandGuard(AP, KEY).check(data, NOW)


def test_envelope_numbers_messages_and_reserves_zero_for_the_will() -> None:
    """seq grows from 1 within a boot; the Will has seq 0; boots differ between runs."""
    env = Envelope(AP)
    will = env.status(NOW, "offline", agent_version="x", gateway="g", keepalive_s=30,
                      last_will=True)  # fmt: skip
    a = env.health(NOW, uptime_s=1.0, load1=0.0, mem_total_kb=1, mem_available_kb=1,
                   disk_free_kb=1, clients=0, gateway_up=True, agent_version="x")  # fmt: skip
    b = env.ack(NOW, "c", True)
    assert (will.seq, a.seq, b.seq) == (0, 1, 2)
    assert Envelope(AP).boot != env.boot


def c(mac: str, auth: bool, up: int = 0) -> GatewayClient:
    return GatewayClient(mac=mac, ip="10.0.0.2", authenticated=auth, session_start=NOW, up_bytes=up)


def test_tracker_reports_seen_authorized_left() -> None:
    """Snapshots turn into events in the order a client lives them."""
    t = ClientTracker()
    assert [e.event for e in t.update([c("02:00:00:00:00:01", False)], NOW)] == ["seen"]
    assert [e.event for e in t.update([c("02:00:00:00:00:01", True)], NOW)] == ["authorized"]
    assert t.update([c("02:00:00:00:00:01", True, 5)], NOW) == []
    assert [e.event for e in t.update([], NOW)] == ["left"]
    assert [e.event for e in t.update([c("02:00:00:00:00:02", True)], NOW)] == [
        "seen",
        "authorized",
    ]


def test_tracker_accounting_lists_authenticated_clients_only() -> None:
    """Counters go out for authorised clients only."""
    t = ClientTracker()
    t.update([c("02:00:00:00:00:01", True, 9), c("02:00:00:00:00:02", False)], NOW)
    (entry,) = t.accounting(NOW)
    assert (entry.mac, entry.up_bytes) == ("02:00:00:00:00:01", 9)


def test_batches_are_bounded_by_count() -> None:
    """Large populations of short items are split into batches of MAX_BATCH."""
    parts = batches(list(range(1300)))
    assert [len(p) for p in parts] == [512, 512, 276]
    assert batches([]) == [[]]


def test_batches_of_the_longest_entries_fit_a_message_the_controller_accepts() -> None:
    """512 worst-case acct entries (64-bit counters, port blocks) weigh over 64 KiB: they
    are split by size, and every resulting message passes the controller's decoder."""
    entry = AcctEntry(
        "02:5b:00:00:01:f4", "10.46.250.250", 1790000000.1234567, 2**64 - 1, 2**64 - 1,
        "203.0.113.250", 65000, 65535,
    )  # fmt: skip
    entries = [entry] * 1300
    assert len(encode(Envelope(AP).acct(NOW, 3600, entries[:512]))) > MAX_PAYLOAD_BYTES
    parts = batches(entries)
    assert sum(len(p) for p in parts) == 1300 and len(parts) > 3
    env = Envelope(AP)
    for part in parts:
        payload = seal(env.acct(NOW, 3600, part), KEY)
        assert len(payload) <= MAX_PAYLOAD_BYTES
        _kind, got = decode(topic(AP, "acct"), payload, lambda ap: KEY)
        assert len(got.entries) == len(part)  # type: ignore[union-attr]


def test_command_is_frozen() -> None:
    """Commands are immutable once signed."""
    cmd = Command(v=1, ap=AP, id="x", cmd="sync", args={}, iat=NOW, exp=NOW + 1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cmd.id = "y"  # type: ignore[misc]
