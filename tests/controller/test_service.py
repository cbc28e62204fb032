"""Ingest: exactly-once processing, sessions from agent events, rejection of bad input."""

from __future__ import annotations

import json
from typing import Any

import pytest
import sqlalchemy as sa

from agents._core import Envelope
from agents.contract import AcctEntry, ClientEvent, seal, topic
from controller.service import Controller
from controller.storage.schema import access_points, sessions
from tests.controller.conftest import online, send

T0 = 1_790_000_000.0
AP = "ap-46201-01"
MAC = "02:00:00:00:00:01"


def key(c: Controller, ap: str = AP) -> bytes:
    k = c.registry.key_for(ap)
    assert k is not None
    return k


async def rows(c: Controller, q: Any) -> list[Any]:
    async with c.db.connect() as conn:
        return list((await conn.execute(q)).all())


async def open_sessions(c: Controller) -> list[Any]:
    return await rows(c, sa.select(sessions).where(sessions.c.stopped_at.is_(None)))


async def test_a_session_lives_from_authorized_through_acct_to_left(controller: Controller) -> None:
    """authorized opens, acct updates the 64-bit counters, left closes, all on one row."""
    env = Envelope(AP)
    assert await online(controller, env, T0) == "applied"
    ev = ClientEvent(event="authorized", mac=MAC, ip="10.46.1.100", at=T0 + 1)
    await send(controller, env, "clients", env.clients(T0 + 1, [ev]), T0 + 1)
    entry = AcctEntry(
        mac=MAC, ip="10.46.1.100", session_start=T0 + 1, up_bytes=5 * 2**32 + 7, down_bytes=2**40
    )
    await send(controller, env, "acct", env.acct(T0 + 60, 60, [entry]), T0 + 60)
    (s,) = await open_sessions(controller)
    assert (s.mac, s.ip, s.insee, s.up_bytes, s.down_bytes) == (
        MAC,
        "10.46.1.100",
        "46201",
        5 * 2**32 + 7,
        2**40,
    )
    left = ClientEvent(event="left", mac=MAC, ip="10.46.1.100", at=T0 + 90)
    await send(controller, env, "clients", env.clients(T0 + 90, [left]), T0 + 90)
    assert await open_sessions(controller) == []
    (closed,) = await rows(controller, sa.select(sessions))
    assert (closed.stopped_at, closed.terminate_cause) == (T0 + 90, "left")


async def test_duplicates_are_processed_once(controller: Controller) -> None:
    """A redelivered (ap, boot, seq) changes nothing and is counted as a duplicate."""
    env = Envelope(AP)
    await online(controller, env, T0)
    ev = ClientEvent(event="authorized", mac=MAC, ip="10.46.1.100", at=T0)
    payload = seal(env.clients(T0, [ev]), key(controller))
    assert await controller.handle(topic(AP, "clients"), payload, now=T0) == "applied"
    left = seal(
        env.clients(T0 + 5, [ClientEvent("left", MAC, "10.46.1.100", T0 + 5)]), key(controller)
    )
    assert await controller.handle(topic(AP, "clients"), left, now=T0 + 5) == "applied"
    # The first message again (QoS 1 redelivery): it must not reopen the session.
    assert await controller.handle(topic(AP, "clients"), payload, now=T0 + 6) == "duplicate"
    assert await open_sessions(controller) == []
    assert controller.counters["duplicates"] == 1


async def test_a_new_boot_closes_the_previous_runs_sessions(controller: Controller) -> None:
    """An agent that restarts (new boot) closes the sessions its previous run had open."""
    first = Envelope(AP)
    await online(controller, first, T0)
    ev = ClientEvent(event="authorized", mac=MAC, ip="10.46.1.100", at=T0)
    await send(controller, first, "clients", first.clients(T0, [ev]), T0)
    second = Envelope(AP)
    await online(controller, second, T0 + 100)
    (s,) = await rows(controller, sa.select(sessions))
    assert (s.stopped_at, s.terminate_cause) == (T0 + 100, "ap-reboot")
    # The Will of the first run arriving late does not mark the new run offline.
    will = first.status(
        T0, "offline", agent_version="x", gateway="g", keepalive_s=30, last_will=True
    )
    await send(controller, first, "status", will, T0 + 101)
    (ap,) = await rows(controller, sa.select(access_points).where(access_points.c.ap_id == AP))
    assert (ap.state, ap.boot) == ("online", second.boot)


async def test_the_will_marks_the_ap_offline(controller: Controller) -> None:
    """The Last Will of the current run sets the AP offline."""
    env = Envelope(AP)
    await online(controller, env, T0)
    will = env.status(T0, "offline", agent_version="x", gateway="g", keepalive_s=30, last_will=True)
    await send(controller, env, "status", will, T0 + 40)
    (ap,) = await rows(controller, sa.select(access_points).where(access_points.c.ap_id == AP))
    assert (ap.state, ap.state_since) == ("offline", T0 + 40)


async def test_acct_for_an_unknown_client_opens_a_session(controller: Controller) -> None:
    """Counters for a client the controller missed open its session (like a RADIUS Interim)."""
    env = Envelope(AP)
    await online(controller, env, T0)
    entry = AcctEntry(mac=MAC, ip="10.46.1.9", session_start=T0 - 30, up_bytes=1, down_bytes=2)
    await send(controller, env, "acct", env.acct(T0, 60, [entry]), T0)
    (s,) = await open_sessions(controller)
    assert (s.started_at, s.down_bytes) == (T0 - 30, 2)


async def test_a_new_gateway_session_closes_the_old_one(controller: Controller) -> None:
    """Same MAC, same AP, another gateway session start: the old session is closed."""
    env = Envelope(AP)
    await online(controller, env, T0)
    a = AcctEntry(mac=MAC, ip="10.46.1.9", session_start=T0, up_bytes=10, down_bytes=10)
    await send(controller, env, "acct", env.acct(T0 + 60, 60, [a]), T0 + 60)
    b = AcctEntry(mac=MAC, ip="10.46.1.9", session_start=T0 + 600, up_bytes=1, down_bytes=1)
    await send(controller, env, "acct", env.acct(T0 + 660, 60, [b]), T0 + 660)
    all_rows = await rows(controller, sa.select(sessions).order_by(sessions.c.id))
    assert [(r.terminate_cause, r.up_bytes) for r in all_rows] == [("new-session", 10), (None, 1)]


async def test_stale_sessions_are_closed(controller: Controller) -> None:
    """A session with no update for 3 x the interval is closed as stale by the sweep."""
    env = Envelope(AP)
    await online(controller, env, T0)
    ev = ClientEvent(event="authorized", mac=MAC, ip="10.46.1.100", at=T0)
    await send(controller, env, "clients", env.clients(T0, [ev]), T0)
    controller.clock = lambda: T0 + 179
    assert await controller.sweep() == 0
    controller.clock = lambda: T0 + 181
    assert await controller.sweep() == 1
    assert await open_sessions(controller) == []


async def test_a_full_client_list_closes_sessions_no_longer_there(controller: Controller) -> None:
    """After a sync, sessions of clients missing from the full list are closed."""
    env = Envelope(AP)
    await online(controller, env, T0)
    evs = [
        ClientEvent("authorized", MAC, "10.46.1.1", T0),
        ClientEvent("authorized", "02:00:00:00:00:02", "10.46.1.2", T0),
    ]
    await send(controller, env, "clients", env.clients(T0, evs), T0)
    await send(controller, env, "clients", env.clients(T0 + 5, evs[1:], full=True), T0 + 5)
    (s,) = await open_sessions(controller)
    assert s.mac == "02:00:00:00:00:02"


async def test_a_late_message_of_a_previous_boot_changes_no_session(controller: Controller) -> None:
    """Counters from an agent run that has since restarted do not reopen sessions."""
    first = Envelope(AP)
    await online(controller, first, T0)
    late = first.acct(T0, 60, [AcctEntry(MAC, "10.46.1.1", T0, 1, 1)])
    await online(controller, Envelope(AP), T0 + 10)
    await send(controller, first, "acct", late, T0 + 11)
    assert await open_sessions(controller) == []
    assert controller.counters["late_previous_boot"] == 1


def forged(controller: Controller) -> list[tuple[str, str, bytes]]:
    env = Envelope(AP)
    good = json.loads(seal(env.ack(T0, "c1", True), key(controller)))
    wrong_type = dict(good, ok="yes")
    return [
        ("bad_signature", topic(AP, "ack"), seal(env.ack(T0, "c", True), b"x" * 32)),
        (
            "unknown_ap",
            topic("ap-99999-99", "ack"),
            seal(Envelope("ap-99999-99").ack(T0, "c", True), b"x" * 32),
        ),
        ("bad_signature", topic(AP, "ack"), json.dumps(wrong_type).encode()),
        ("too_large", topic(AP, "acct"), b"{" + b" " * 70_000 + b"}"),
        ("bad_json", topic(AP, "ack"), b'{"v": 1, "ap": '),
        ("bad_json", topic(AP, "ack"), b"\xff\xfe"),
        ("bad_shape", topic(AP, "ack"), b"[]"),
        ("bad_topic", "borne/v1/ap/ap-46201-01/cmd", b"{}"),
        ("bad_topic", "elsewhere/x", b"{}"),
        (
            "ap_mismatch",
            topic("ap-46201-02", "ack"),
            seal(env.ack(T0, "c", True), key(controller, "ap-46201-02")),
        ),
    ]


async def test_bad_messages_are_rejected_counted_and_harmless(controller: Controller) -> None:
    """Each kind of bad input is refused with its reason and counted; good input still works."""
    cases = forged(controller)
    for reason, name, payload in cases:
        assert await controller.handle(name, payload, now=T0) == f"rejected:{reason}", reason
    assert controller.counters["rejected"] == len(cases)
    assert controller.counters["rejected_bad_signature"] == 2
    assert controller.counters["rejected_bad_json"] == 2
    assert await online(controller, Envelope(AP), T0) == "applied"


async def test_a_wrongly_typed_but_signed_message_is_rejected(controller: Controller) -> None:
    """A correctly signed payload with a wrong field type fails validation, not the service."""
    import hashlib
    import hmac

    from agents.contract import canonical_bytes

    env = Envelope(AP)
    fields = json.loads(seal(env.ack(T0, "c1", True), key(controller)))
    fields["ok"] = "yes"
    fields["sig"] = hmac.new(key(controller), canonical_bytes(fields), hashlib.sha256).hexdigest()
    out = await controller.handle(topic(AP, "ack"), json.dumps(fields).encode(), now=T0)
    assert out == "rejected:bad_shape"
    assert controller.counters["rejected_bad_shape"] == 1


@pytest.mark.parametrize("field", ["seq", "boot", "ts"])
async def test_envelope_bounds(controller: Controller, field: str) -> None:
    """Negative seq, bad boot or an unset device clock are refused."""
    import hashlib
    import hmac

    from agents.contract import canonical_bytes

    env = Envelope(AP)
    fields = json.loads(seal(env.ack(T0, "c1", True), key(controller)))
    fields[field] = {"seq": -1, "boot": "not/alnum", "ts": 12.0}[field]
    fields["sig"] = hmac.new(key(controller), canonical_bytes(fields), hashlib.sha256).hexdigest()
    out = await controller.handle(topic(AP, "ack"), json.dumps(fields).encode(), now=T0)
    assert out == "rejected:bad_value"


async def test_the_sweep_deletes_portal_records_that_are_over_without_any_login(
    controller: Controller,
) -> None:
    """Identity data past its retention, continuity records past their period and
    expired UAM credentials go at the next sweep, logins or not; at most once an hour;
    what is still within its time stays."""
    from captive_portal.identities import DAY_S, IdentityStore
    from controller.storage.schema import portal_identities, radius_credentials
    from radius import AccessPolicy

    retention = controller.settings.portal.identity_retention_days * DAY_S
    store = IdentityStore(controller.db, "secret", 1827)
    for when, who in ((T0 - retention - 10, "old@example.org"), (T0 - 10, "new@example.org")):
        await store.record(method="email", identity=who, mac=MAC, insee="46201", ap_id=AP, now=when)
    policy = AccessPolicy(controller.db, controller.settings)
    terms = await policy.devices.terms_in_force("46201")
    await policy.devices.remember(MAC, terms, now=T0 - 25 * 3600, hours=24)
    await policy.devices.remember("02:00:00:00:00:02", terms, now=T0 - 3600, hours=24)
    await policy.add_credential("uam-old", "pw", T0 - 1)
    await policy.add_credential("uam-new", "pw", T0 + 60)

    controller.clock = lambda: T0
    await controller.sweep()
    assert [r.logged_in_at for r in await rows(controller, sa.select(portal_identities))] == [
        T0 - 10
    ]
    assert await policy.devices.find(MAC) is None
    assert await policy.devices.find("02:00:00:00:00:02") is not None
    users = await rows(controller, sa.select(radius_credentials.c.username))
    assert [u.username for u in users] == ["uam-new"]
    counted = ("identities_purged", "devices_pruned", "credentials_pruned")
    assert [controller.counters[c] for c in counted] == [1, 1, 1]

    # Within the hour, the sweep leaves them; after it, the next records over go.
    controller.clock = lambda: T0 + 1800
    await controller.sweep()
    assert controller.counters["credentials_pruned"] == 1  # "uam-new" is over, kept
    controller.clock = lambda: T0 + 24 * 3600
    await controller.sweep()
    assert controller.counters["devices_pruned"] == 2
    assert controller.counters["credentials_pruned"] == 2
