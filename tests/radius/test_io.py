"""The RADIUS server against real peers: radclient (freeradius-utils) and a pyrad DAS."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import pytest
import sqlalchemy as sa
from pyrad.dictionary import Dictionary
from pyrad.packet import CoAPacket

from controller.config import CommunePortalSettings, Settings
from controller.outbox import pending
from controller.registry import Commune, Registry
from controller.storage import Database, open_database
from controller.storage.schema import (
    portal_legal_texts,
    radius_dynauth,
    radius_known_devices,
    sessions,
)
from radius import AccessPolicy, DynAuthClient, NasRegistry, build_server
from radius._store import AccountingWriter
from tests.conftest import empty_database_url
from tests.radius.conftest import NAS_ID, SECRET, Running, radclient

INSEE = "46201"  # the commune of NAS_ID

# The shipped dictionary, parsed by pyrad (read once, at import).
DICTIONARY = Dictionary(str(Path(__file__).resolve().parents[2] / "radius" / "dictionary"))


async def _sessions(db: Database) -> list[sa.Row[Any]]:
    async with db.connect() as conn:
        return list((await conn.execute(sa.select(sessions).order_by(sessions.c.id))).all())


def _sqlite_path(settings: Settings) -> str:
    """The file of the test's SQLite database, to reach it beside the server."""
    return settings.database.url.get_secret_value().removeprefix("sqlite+aiosqlite:///")


def _sql(settings: Settings, statement: str) -> None:
    conn = sqlite3.connect(_sqlite_path(settings), timeout=10)
    try:
        conn.execute(statement)
        conn.commit()
    finally:
        conn.close()


async def _hide_sessions_table(settings: Settings) -> None:
    """A real storage failure: the table the accounting write needs goes missing."""
    await asyncio.to_thread(
        _sql, settings, "ALTER TABLE radius_sessions RENAME TO radius_sessions_away"
    )


async def _restore_sessions_table(settings: Settings, *, after: float) -> None:
    """Undo ``_hide_sessions_table`` ``after`` seconds from now."""
    await asyncio.sleep(after)
    await asyncio.to_thread(
        _sql, settings, "ALTER TABLE radius_sessions_away RENAME TO radius_sessions"
    )


def _acct(status: str, sid: str, mac: str = "02-00-00-00-00-01", /, **more: object) -> str:
    """An Accounting-Request for radclient; ``more`` adds attributes (``Acct_Session_Time=60``)."""
    lines = [
        f"Acct-Status-Type = {status}",
        f'Acct-Session-Id = "{sid}"',
        f'Calling-Station-Id = "{mac}"',
        f'NAS-Identifier = "{NAS_ID}"',
        'User-Name = "visiteur"',
        "Framed-IP-Address = 10.1.0.23",
    ]
    lines += [f"{k.replace('_', '-')} = {v}" for k, v in more.items()]
    return "\n".join(lines) + "\n"


async def test_start_interim_stop_with_gigawords(
    radius_server: Running, radius_db: Database
) -> None:
    """Start, Interim and Stop build one session with 64-bit counters and outbox events."""
    now = int(time.time())
    steps: list[tuple[str, dict[str, object]]] = [
        ("Start", {"Event_Timestamp": now - 120}),
        (
            "Interim-Update",
            {
                "Acct_Input_Octets": 5,
                "Acct_Input_Gigawords": 1,
                "Acct_Output_Octets": 7,
                "Acct_Output_Gigawords": 2,
                "Acct_Session_Time": 60,
                "Event_Timestamp": now - 60,
            },
        ),
        (
            "Stop",
            {
                "Acct_Input_Octets": 100,
                "Acct_Input_Gigawords": 1,
                "Acct_Output_Octets": 200,
                "Acct_Output_Gigawords": 3,
                "Acct_Session_Time": 120,
                "Acct_Terminate_Cause": "Idle-Timeout",
                "Event_Timestamp": now,
            },
        ),
    ]
    for status, extra in steps:
        res = await radclient(
            radius_server.acct_port, "acct", _acct(status, "4f2a00000001", **extra)
        )
        assert "Received Accounting-Response" in res.out, res.out
    rows = await _sessions(radius_db)
    assert len(rows) == 1
    s = rows[0]
    assert (s.ap_id, s.insee, s.mac, s.ip) == (NAS_ID, "46201", "02:00:00:00:00:01", "10.1.0.23")
    assert s.up_bytes == (1 << 32) + 100 and s.down_bytes == (3 << 32) + 200
    assert s.started_at == now - 120 and s.stopped_at == now
    assert s.terminate_cause == "idle-timeout" and s.auth_ref == "visiteur"
    async with radius_db.connect() as conn:
        kinds = [e.kind for e in await pending(conn, "test")]
    assert kinds == ["start", "update", "update", "stop"]


async def test_interim_opens_and_stop_is_idempotent(
    radius_server: Running, radius_db: Database
) -> None:
    """An Interim for an unknown session opens it; a second Stop changes nothing."""
    now = int(time.time())
    interim = _acct("Interim-Update", "a1", Acct_Session_Time=300, Event_Timestamp=now)
    assert "Accounting-Response" in (await radclient(radius_server.acct_port, "acct", interim)).out
    stop = _acct("Stop", "a1", Acct_Session_Time=360, Acct_Input_Octets=9, Event_Timestamp=now + 60)
    for _ in range(2):
        assert "Accounting-Response" in (await radclient(radius_server.acct_port, "acct", stop)).out
    (s,) = await _sessions(radius_db)
    assert s.started_at == now - 300 and s.stopped_at == now + 60 and s.up_bytes == 9
    async with radius_db.connect() as conn:
        kinds = [e.kind for e in await pending(conn, "test")]
    assert kinds == ["start", "update", "update", "stop"]
    assert radius_server.server.outcomes["already-stopped"] == 1


async def test_accounting_on_closes_the_nas_sessions(
    radius_server: Running, radius_db: Database
) -> None:
    """Accounting-On closes every open session of that NAS with cause nas-reboot."""
    for i in range(3):
        pkt = _acct("Start", f"s{i}", f"02-00-00-00-00-0{i}")
        assert "Accounting-Response" in (await radclient(radius_server.acct_port, "acct", pkt)).out
    on = f'Acct-Status-Type = Accounting-On\nNAS-Identifier = "{NAS_ID}"\n'
    assert "Accounting-Response" in (await radclient(radius_server.acct_port, "acct", on)).out
    rows = await _sessions(radius_db)
    assert len(rows) == 3
    assert all(r.stopped_at is not None and r.terminate_cause == "nas-reboot" for r in rows)


async def test_retransmission_is_stored_once(
    radius_server: Running, radius_db: Database, radius_settings: Settings
) -> None:
    """While the first copy waits for the database, radclient's retransmissions of the
    same packet are not processed again; one record, one reply."""
    path = _sqlite_path(radius_settings)

    def hold_lock(seconds: float) -> None:
        conn = sqlite3.connect(path, timeout=10)
        try:
            conn.execute("BEGIN IMMEDIATE")
            time.sleep(seconds)
            conn.rollback()
        finally:
            conn.close()

    async with asyncio.TaskGroup() as tg:
        tg.create_task(asyncio.to_thread(hold_lock, 2.0))
        await asyncio.sleep(0.2)
        res = await radclient(
            radius_server.acct_port, "acct", _acct("Start", "dup1"), retries=5, wait_s=0.5
        )
    assert "Received Accounting-Response" in res.out, res.out
    assert res.out.count("Sent Accounting-Request") >= 2, res.out
    assert radius_server.server.counters["dropped_duplicate_in_progress"] >= 1
    assert len(await _sessions(radius_db)) == 1


async def test_wrong_secret_is_dropped_silently(
    radius_server: Running, radius_db: Database
) -> None:
    """A packet signed with another secret gets no answer, is counted, stores nothing."""
    res = await radclient(
        radius_server.acct_port, "acct", _acct("Start", "w1"), secret="not-the-secret-xx"
    )
    assert res.rc != 0 and "Received" not in res.out
    assert radius_server.server.counters["dropped_bad_authenticator"] == 1
    assert await _sessions(radius_db) == []
    res = await radclient(
        radius_server.auth_port,
        "auth",
        'User-Name = "u"\nUser-Password = "p"\nMessage-Authenticator = 0x00\n',
        secret="not-the-secret-xx",
    )
    assert "Received" not in res.out
    assert radius_server.server.counters["dropped_bad_message_authenticator"] == 1


async def test_access_request_without_message_authenticator_is_dropped(
    radius_server: Running, radius_db: Database, radius_settings: Settings
) -> None:
    """BlastRADIUS: an Access-Request without Message-Authenticator gets no answer."""
    await AccessPolicy(radius_db, radius_settings).add_credential("u1", "p1", time.time() + 60)
    res = await radclient(
        radius_server.auth_port, "auth", 'User-Name = "u1"\nUser-Password = "p1"\n'
    )
    assert "Received" not in res.out
    assert radius_server.server.counters["dropped_missing_message_authenticator"] == 1


async def test_pap_one_time_credential_accepted_once(
    radius_server: Running, radius_db: Database, radius_settings: Settings
) -> None:
    """A one-time credential gets Access-Accept with limits once, then Access-Reject;
    a wrong password is rejected."""
    await AccessPolicy(radius_db, radius_settings).add_credential(
        "uam-1", "s3cr3t", time.time() + 60
    )
    req = (
        'User-Name = "uam-1"\nUser-Password = "{pw}"\nCalling-Station-Id = "02-00-00-00-00-09"\n'
        "Message-Authenticator = 0x00\n"
    )
    bad = await radclient(radius_server.auth_port, "auth", req.format(pw="wrong"))
    assert "Received Access-Reject" in bad.out, bad.out
    ok = await radclient(radius_server.auth_port, "auth", req.format(pw="s3cr3t"))
    assert "Received Access-Accept" in ok.out, ok.out
    for expected in (
        "Session-Timeout = 7200",
        "Idle-Timeout = 600",
        "Acct-Interim-Interval = 60",
        "WISPr-Bandwidth-Max-Up = 2000000",
    ):
        assert expected in ok.out, ok.out
    again = await radclient(radius_server.auth_port, "auth", req.format(pw="s3cr3t"))
    assert "Received Access-Reject" in again.out, again.out


async def test_mac_authentication_of_a_known_device(
    radius_server: Running, radius_db: Database, radius_settings: Settings
) -> None:
    """MAC auth accepts a device remembered for continuity with the texts in force at the
    NAS's commune, with Session-Timeout and Idle-Timeout; an unknown device, a device whose
    period is over, and any device once new texts are published are rejected. The table
    holds no MAC."""
    devices = AccessPolicy(radius_db, radius_settings).devices
    now = time.time()
    terms = await devices.terms_in_force("46201")
    await devices.remember("02:00:00:00:00:aa", terms, now=now, hours=24)
    await devices.remember("02:00:00:00:00:cc", terms, now=now - 25 * 3600, hours=24)
    req = (
        'User-Name = "{m}"\nUser-Password = "{m}"\nCalling-Station-Id = "{m}"\n'
        "Message-Authenticator = 0x00\n"
    )
    known = await radclient(radius_server.auth_port, "auth", req.format(m="02-00-00-00-00-AA"))
    assert "Received Access-Accept" in known.out, known.out
    assert "Session-Timeout = 7200" in known.out and "Idle-Timeout = 600" in known.out
    for mac in ("02-00-00-00-00-BB", "02-00-00-00-00-CC"):
        refused = await radclient(radius_server.auth_port, "auth", req.format(m=mac))
        assert "Received Access-Reject" in refused.out, refused.out
    async with radius_db.connect() as conn:
        stored = " ".join(
            str(v) for r in await conn.execute(sa.select(radius_known_devices)) for v in r
        )
    assert "02:00:00:00:00:aa" not in stored.lower() and "020000" not in stored
    # The commune publishes new texts: the device must accept them before continuity.
    async with radius_db.begin() as conn:
        await conn.execute(
            portal_legal_texts.insert().values(
                insee="46201", version="2027-01-01", published_at=now, content="{}"
            )
        )
    after = await radclient(radius_server.auth_port, "auth", req.format(m="02-00-00-00-00-AA"))
    assert "Received Access-Reject" in after.out, after.out
    outcomes = radius_server.server.outcomes
    assert outcomes["access_mac_auth"] == 1 and outcomes["access_unknown_device"] == 3


async def test_bound_credential_only_for_its_nas_and_device(
    radius_server: Running, radius_db: Database, radius_settings: Settings
) -> None:
    """A credential bound to another NAS, or to another device, is rejected and not
    consumed; from its own NAS and device it is accepted once, with the login's limits."""
    policy = AccessPolicy(radius_db, radius_settings)
    later = time.time() + 60
    await policy.add_credential("uam-other-nas", "pw-1", later, nas_id="nas-46201-02")
    await policy.add_credential(
        "uam-bound", "pw-2", later, 30, nas_id=NAS_ID, mac="02:00:00:00:00:0b",
        up_kbps=512, down_kbps=4096, quota_mb=5000,
    )  # fmt: skip
    req = (
        'User-Name = "{u}"\nUser-Password = "{p}"\nCalling-Station-Id = "{m}"\n'
        f'NAS-Identifier = "{NAS_ID}"\nMessage-Authenticator = 0x00\n'
    )
    for u, p, m in (
        ("uam-other-nas", "pw-1", "02-00-00-00-00-0B"),
        ("uam-bound", "pw-2", "02-00-00-00-00-0C"),
    ):
        res = await radclient(radius_server.auth_port, "auth", req.format(u=u, p=p, m=m))
        assert "Received Access-Reject" in res.out, res.out
    ok = await radclient(
        radius_server.auth_port, "auth", req.format(u="uam-bound", p="pw-2", m="02-00-00-00-00-0B")
    )
    assert "Received Access-Accept" in ok.out, ok.out
    for expected in (
        "Session-Timeout = 1800",
        "WISPr-Bandwidth-Max-Up = 512000",
        "WISPr-Bandwidth-Max-Down = 4096000",
        # 5,000,000,000 octets: 705,032,704 + 1 x 2^32.
        "ChilliSpot-Max-Total-Octets = 705032704",
        # CoovaChilli's Max-Total-Gigawords (VSA 23); FreeRADIUS 3.2's dictionary lacks it.
        "Attr-26.14559.23 = 0x00000001",
    ):
        assert expected in ok.out, ok.out
    outcomes = radius_server.server.outcomes
    assert outcomes["access_wrong_nas"] == 1 and outcomes["access_wrong_device"] == 1


async def test_status_server_on_both_ports(radius_server: Running) -> None:
    """Status-Server gets Access-Accept on the auth port, Accounting-Response on acct."""
    req = "Message-Authenticator = 0x00\n"
    auth = await radclient(radius_server.auth_port, "status", req)
    assert "Received Access-Accept" in auth.out, auth.out
    acct = await radclient(radius_server.acct_port, "status", req)
    assert "Received Accounting-Response" in acct.out, acct.out


class _PyradDas(asyncio.DatagramProtocol):
    """A minimal Dynamic Authorization Server built with pyrad's packet classes (a test
    peer: no NAS runs here). It ignores the first ``ignore`` requests to force retries,
    then ACKs a known Acct-Session-Id and NAKs (503) any other."""

    def __init__(self, ignore: int) -> None:
        self.ignore = ignore
        self.received = 0
        self.bad = 0
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A datagram endpoint's protocol is given a datagram transport, though asyncio's
        # own (_SelectorDatagramTransport) does not subclass DatagramTransport.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.received += 1
        if self.received <= self.ignore:
            return
        req = CoAPacket(packet=data, secret=SECRET.encode(), dict=DICTIONARY)
        if not req.VerifyCoARequest():
            self.bad += 1
            return
        known = req.get("Acct-Session-Id") == ["known-1"]
        reply = req.CreateReply()
        if not known:
            reply.code = 42  # Disconnect-NAK
            reply["Error-Cause"] = 503
        assert self.transport is not None
        self.transport.sendto(reply.ReplyPacket(), addr)


async def test_disconnect_retries_then_records_ack_and_nak(radius_db: Database) -> None:
    """Disconnect-Request is retried until the DAS answers; ACK and NAK(503) are recorded."""
    loop = asyncio.get_running_loop()
    transport, das = await loop.create_datagram_endpoint(
        lambda: _PyradDas(ignore=1), local_addr=("127.0.0.1", 0)
    )
    port = transport.get_extra_info("sockname")[1]
    try:
        client = DynAuthClient(radius_db, timeout_s=0.3, retries=3)
        ack = await client.send(
            NAS_ID, "127.0.0.1", port, SECRET.encode(), acct_session_id="known-1"
        )
        nak = await client.send(NAS_ID, "127.0.0.1", port, SECRET.encode(), acct_session_id="other")
    finally:
        transport.close()
    assert das.bad == 0
    assert (ack.ok, ack.attempts) == (True, 2)
    assert (nak.ok, nak.error_cause, nak.attempts) == (False, 503, 1)
    async with radius_db.connect() as conn:
        rows = (await conn.execute(sa.select(radius_dynauth).order_by(radius_dynauth.c.id))).all()
    assert [(r.ok, r.error_cause, r.attempts) for r in rows] == [(True, None, 2), (False, 503, 1)]


async def test_disconnect_without_answer_is_recorded_unanswered(radius_db: Database) -> None:
    """A NAS that never answers: every retry is sent, the request stays unanswered."""
    loop = asyncio.get_running_loop()
    transport, das = await loop.create_datagram_endpoint(
        lambda: _PyradDas(ignore=100), local_addr=("127.0.0.1", 0)
    )
    port = transport.get_extra_info("sockname")[1]
    try:
        res = await DynAuthClient(radius_db, timeout_s=0.1, retries=2).send(
            NAS_ID, "127.0.0.1", port, SECRET.encode(), kind="coa", acct_session_id="x"
        )
    finally:
        transport.close()
    assert (res.ok, res.attempts, das.received) == (None, 3, 3)


async def test_nas_changes_apply_after_a_reload(
    radius_server: Running, radius_db: Database
) -> None:
    """A NAS's new secret is used once the registry is read again; the old one is refused."""
    new = "a-brand-new-secret-4567"
    await NasRegistry(radius_db).add(NAS_ID, "127.0.0.1", new)
    await radius_server.server.reload_clients()
    ok = await radclient(radius_server.acct_port, "acct", _acct("Start", "r1"), secret=new)
    assert "Received Accounting-Response" in ok.out, ok.out
    old = await radclient(radius_server.acct_port, "acct", _acct("Start", "r2"))
    assert "Received" not in old.out


async def test_no_response_until_the_record_is_stored(
    radius_server: Running, radius_db: Database, radius_settings: Settings
) -> None:
    """While the database refuses the write, no Accounting-Response goes out; radclient's
    retransmission after the repair is stored once and answered."""
    # A real storage failure: the table the write needs is missing for a while.
    await _hide_sessions_table(radius_settings)

    async with asyncio.TaskGroup() as tg:
        tg.create_task(_restore_sessions_table(radius_settings, after=1.5))
        res = await radclient(
            radius_server.acct_port, "acct", _acct("Start", "f1"), retries=6, wait_s=0.7
        )
    assert "Received Accounting-Response" in res.out, res.out
    assert res.out.count("Sent Accounting-Request") >= 2, res.out
    assert radius_server.server.counters["storage_errors"] >= 1
    assert len(await _sessions(radius_db)) == 1


@pytest.mark.parametrize("where", ["radius", "commune"])
async def test_quota_reached_sends_one_disconnect(
    radius_settings: Settings, radius_db: Database, where: str
) -> None:
    """An Interim past the volume quota (``[radius] max_total_mb``, or the NAS's commune's
    own ``quota_mb`` with no global quota) makes the server send a Disconnect-Request for
    that session to the NAS's CoA port (a pyrad DAS here), once, and record its ACK."""
    loop = asyncio.get_running_loop()
    transport, das = await loop.create_datagram_endpoint(
        lambda: _PyradDas(ignore=0), local_addr=("127.0.0.1", 0)
    )
    das_port = transport.get_extra_info("sockname")[1]
    await NasRegistry(radius_db).add(NAS_ID, "127.0.0.1", SECRET, coa_port=das_port)
    if where == "radius":
        settings = radius_settings.model_copy(
            update={"radius": radius_settings.radius.model_copy(update={"max_total_mb": 1})}
        )
    else:
        assert radius_settings.radius.max_total_mb == 0
        portal = radius_settings.portal.model_copy(
            update={"communes": {INSEE: CommunePortalSettings(quota_mb=1)}}
        )
        settings = radius_settings.model_copy(update={"portal": portal})
    server = await build_server(settings, radius_db)
    assert server.quota_octets(INSEE) == 1_000_000 and server.quota_octets("46999") == (
        1_000_000 if where == "radius" else 0
    )
    try:
        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(server.run("127.0.0.1", 0, 0), name="radius-quota")
            await server.ready.wait()
            port = server.addresses["acct"][1]
            for octets in (400_000, 1_200_000, 1_500_000):
                pkt = _acct("Interim-Update", "known-1", Acct_Input_Octets=octets)
                assert "Accounting-Response" in (await radclient(port, "acct", pkt)).out
            await wait_until(lambda: server.counters["disconnect_ack"] == 1)
            task.cancel()
    finally:
        transport.close()
    assert das.received == 1 and das.bad == 0
    async with radius_db.connect() as conn:
        rows = (await conn.execute(sa.select(radius_dynauth))).all()
    assert [(r.reason, r.acct_session_id, r.ok) for r in rows] == [("quota", "known-1", True)]


async def wait_until(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    """Poll ``condition`` in the event loop until it holds."""
    for _ in range(int(timeout_s / 0.05)):
        if condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the condition did not hold in time")


async def test_records_past_the_writer_backlog_are_dropped_then_stored_once(
    radius_settings: Settings, radius_db: Database
) -> None:
    """While another connection holds the database's write lock, records wait for the
    writer thread; past ``queue_size`` waiting records, the others are dropped unanswered
    and counted. After the lock is released, radclient's retransmissions are stored once
    each and every request is answered."""
    path = _sqlite_path(radius_settings)

    def lock() -> sqlite3.Connection:
        conn = sqlite3.connect(path, timeout=10, isolation_level=None, check_same_thread=False)
        conn.execute("BEGIN IMMEDIATE")  # the write lock, as a busy writer holds it
        return conn

    def unlock(conn: sqlite3.Connection) -> None:
        conn.execute("ROLLBACK")
        conn.close()

    server = await build_server(radius_settings, radius_db)
    server.queue_size = 2  # records waiting for the writer (the setting's minimum is 10)
    assert server.writer.threaded
    holder = await asyncio.to_thread(lock)
    locked = True
    try:
        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(server.run("127.0.0.1", 0, 0), name="radius-backlog")
            await server.ready.wait()
            port = server.addresses["acct"][1]
            first = tg.create_task(
                radclient(port, "acct", _acct("Start", "q0"), retries=8, wait_s=0.7)
            )
            await wait_until(lambda: server.writer.taken == 1)  # the writer waits on the lock
            packets = "\n".join(
                _acct("Start", f"q{i}", f"02-00-00-00-00-0{i}") for i in range(1, 7)
            )
            rest = tg.create_task(
                radclient(port, "acct", packets, retries=8, wait_s=0.7, extra=("-p", "10"))
            )
            await wait_until(lambda: server.counters["dropped_queue_full"] >= 4)
            assert server.writer.backlog == 2
            await asyncio.to_thread(unlock, holder)
            locked = False
            res0, res = await first, await rest
            task.cancel()
    finally:
        if locked:
            await asyncio.to_thread(unlock, holder)
    assert "Received Accounting-Response" in res0.out, res0.out
    assert res.out.count("Received Accounting-Response") == 6, res.out
    # q0 and q1 share a device (q1's Start closes q0): seven sessions, none twice.
    rows = await _sessions(radius_db)
    assert sorted(r.mac for r in rows) == ["02:00:00:00:00:01"] + [
        f"02:00:00:00:00:0{i}" for i in range(1, 7)
    ]


async def test_async_engine_writer_stores_and_answers_only_after_commit(
    radius_settings: Settings, radius_db: Database
) -> None:
    """The writer used on PostgreSQL (batches through the application's async engine),
    here on SQLite: Start and Stop stored and answered; while the database refuses the
    write nothing is answered, and radclient's retransmission after the repair is stored
    once."""
    server = await build_server(radius_settings, radius_db)
    server.writer = AccountingWriter(radius_db, server.store, threaded=False)

    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(server.run("127.0.0.1", 0, 0), name="radius-async-writer")
        await server.ready.wait()
        port = server.addresses["acct"][1]
        for status in ("Start", "Stop"):
            res = await radclient(port, "acct", _acct(status, "a1"))
            assert "Received Accounting-Response" in res.out, res.out
        await _hide_sessions_table(radius_settings)
        tg.create_task(_restore_sessions_table(radius_settings, after=1.5))
        res = await radclient(
            port, "acct", _acct("Start", "a2", "02-00-00-00-00-02"), retries=6, wait_s=0.7
        )
        task.cancel()
    assert "Received Accounting-Response" in res.out, res.out
    assert res.out.count("Sent Accounting-Request") >= 2, res.out
    assert server.counters["storage_errors"] >= 1 and not server.writer.threaded
    rows = await _sessions(radius_db)
    assert [(r.mac, r.stopped_at is not None) for r in rows] == [
        ("02:00:00:00:00:01", True),
        ("02:00:00:00:00:02", False),
    ]


@pytest.mark.postgres
async def test_postgres_writer_stores_and_answers_only_after_commit(
    request: pytest.FixtureRequest, tmp_path: Path, radius_settings: Settings
) -> None:
    """On a real PostgreSQL (the writer's own asyncpg statements, one transaction per
    batch): Start, Interim with gigawords and Stop stored and answered through radclient;
    while the table the write needs is missing nothing is answered, the failure counts as
    a storage error, and radclient's retransmission after the repair is stored once."""
    url = await empty_database_url(request, tmp_path, "postgres")
    settings = radius_settings.model_copy(
        update={"database": radius_settings.database.model_copy(update={"url": url})}
    )
    db = await open_database(url)
    reg = Registry(db, "test-master-key-0123456789")
    await reg.add_communes([Commune(INSEE, "Rocamadour", 1.6, 44.8)])
    await reg.add_access_point(NAS_ID, INSEE, "Rocamadour — CoovaChilli")
    await NasRegistry(db).add(NAS_ID, "127.0.0.1", SECRET)

    async def alter(statement: str, after: float = 0.0) -> None:
        await asyncio.sleep(after)
        async with db.begin() as conn:
            await conn.execute(sa.text(statement))

    try:
        server = await build_server(settings, db)
        assert not server.writer.threaded
        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(server.run("127.0.0.1", 0, 0), name="radius-postgres")
            await server.ready.wait()
            port = server.addresses["acct"][1]
            for pkt in (
                _acct("Start", "p1"),
                _acct("Interim-Update", "p1", Acct_Input_Octets=5, Acct_Input_Gigawords=1),
                _acct("Stop", "p1", Acct_Input_Octets=9, Acct_Input_Gigawords=1),
            ):
                res = await radclient(port, "acct", pkt)
                assert "Received Accounting-Response" in res.out, res.out
            await alter("ALTER TABLE radius_sessions RENAME TO radius_sessions_away")
            tg.create_task(
                alter("ALTER TABLE radius_sessions_away RENAME TO radius_sessions", after=1.5)
            )
            res = await radclient(
                port, "acct", _acct("Start", "p2", "02-00-00-00-00-02"), retries=6, wait_s=0.7
            )
            task.cancel()
        assert "Received Accounting-Response" in res.out, res.out
        assert res.out.count("Sent Accounting-Request") >= 2, res.out
        assert server.counters["storage_errors"] >= 1
        assert server.counters["handler_crashed"] == 0
        rows = await _sessions(db)
        assert [(r.mac, r.up_bytes, r.stopped_at is not None) for r in rows] == [
            ("02:00:00:00:00:01", 2**32 + 9, True),
            ("02:00:00:00:00:02", 0, False),
        ]
    finally:
        await db.aclose()
