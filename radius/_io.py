"""asyncio adapters of the RADIUS server and of the Disconnect/CoA sender.

The only RADIUS code that awaits. ``RadiusServer`` feeds each datagram to the sans-IO
``ServerCore`` and dispatches its event in one ``match``: replies are sent, accounting
records queue for the writer (bounded; full: dropped, counted, the NAS retransmits),
Access-Requests queue for the policy. The writer stores a batch of records in one
transaction and sends their Accounting-Responses only after the commit (RFC 2866 §4.1).
``DynAuthClient`` sends Disconnect/CoA-Requests to a NAS with retries and records the
answer. No business rules live here.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random
import secrets
import sqlite3
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import cast

import asyncpg

from controller.storage import UNAVAILABLE, Database
from controller.storage.schema import radius_dynauth
from radius._codec import Attr, Code, decode, encode_int, sign_request, verify_reply
from radius._core import (
    AccessRequestReceived,
    AccountingRequestReceived,
    Address,
    NasClient,
    PacketDropped,
    Port,
    ReplyReady,
    ServerCore,
    over_quota,
)
from radius._policy import AccessPolicy
from radius._store import AccountingStore, AccountingWriter
from radius.errors import RemoteProtocolError

__all__ = ["DynAuthClient", "DynAuthResult", "RadiusServer"]

logger = logging.getLogger(__name__)

# The accounting writer talks to SQLite (its thread) and PostgreSQL directly: their
# drivers' errors too. A PostgreSQL error of a batch (a lost connection, a batch racing
# another over one session) is a storage error: not answered, the NAS retransmits.
_STORAGE_ERRORS = (
    *UNAVAILABLE,
    sqlite3.OperationalError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
)


class _Endpoint(asyncio.DatagramProtocol):
    def __init__(self, server: RadiusServer, port: Port) -> None:
        self.server = server
        self.port = port
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        assert self.transport is not None
        try:
            self.server.on_datagram(data, (addr[0], addr[1]), self.port, self.transport)
        except Exception:
            # One crash guard per datagram: log it and keep serving.
            self.server.core.counters["handler_crashed"] += 1
            logger.error("RADIUS datagram handler crashed", exc_info=True)

    def error_received(self, exc: Exception) -> None:
        self.server.core.counters["socket_errors"] += 1
        logger.warning("RADIUS socket error on %s port: %s", self.port, exc)


@dataclass
class _Pending:
    event: AccessRequestReceived | AccountingRequestReceived
    transport: asyncio.DatagramTransport


class RadiusServer:
    """Authentication and accounting on two UDP ports.

    Args:
        core: the protocol core (holds the NAS clients and the duplicate cache).
        db: the state database.
        store: applies accounting records.
        policy: decides Access-Requests.
        quota_of: the volume quota in octets of a session at a commune's hotspots, from
            its INSEE code (0: none); None: no quota anywhere.
    """

    def __init__(
        self,
        core: ServerCore,
        db: Database,
        store: AccountingStore,
        policy: AccessPolicy,
        *,
        queue_size: int = 10_000,
        batch_max: int = 256,
        clock: Callable[[], float] = time.time,
        clients_loader: Callable[[], Awaitable[Mapping[str, Sequence[NasClient]]]] | None = None,
        reload_s: float = 30.0,
        dynauth: DynAuthClient | None = None,
        quota_of: Callable[[str], int] | None = None,
    ) -> None:
        self.core = core
        self.clients_loader = clients_loader
        self.reload_s = reload_s
        self.dynauth = dynauth
        self._quota_of = quota_of or (lambda _insee: 0)
        self._quotas: dict[str, int] = {}
        # Sessions cut off for their quota, so that each Interim does not send another
        # Disconnect-Request; bounded (oldest forgotten first).
        self._cut: collections.OrderedDict[tuple[str, str], None] = collections.OrderedDict()
        self._disconnects: asyncio.Queue[tuple[NasClient, str]] = asyncio.Queue(maxsize=1000)
        self.db = db
        self.store = store
        self.writer = AccountingWriter(db, store, batch_max=batch_max)
        self.queue_size = queue_size
        self._write_failures = 0  # consecutive, for the back-off
        self.policy = policy
        self.batch_max = batch_max
        self.clock = clock
        self.outcomes: collections.Counter[str] = collections.Counter()
        self._acct: asyncio.Queue[_Pending] = asyncio.Queue(maxsize=queue_size)
        self._auth: asyncio.Queue[_Pending] = asyncio.Queue(maxsize=queue_size)
        self._transports: list[asyncio.DatagramTransport] = []
        self.addresses: dict[Port, Address] = {}
        self.ready = asyncio.Event()

    @property
    def counters(self) -> collections.Counter[str]:
        """The core's counters (drops by reason, replies, duplicates...)."""
        return self.core.counters

    # receiving ------------------------------------------------------------------
    def on_datagram(
        self, data: bytes, addr: Address, port: Port, transport: asyncio.DatagramTransport
    ) -> None:
        """Feed one datagram to the core and dispatch its event."""
        event = self.core.receive(data, addr, port, self.clock())
        match event:
            case ReplyReady(addr=to, data=reply):
                transport.sendto(reply, to)
            case PacketDropped(reason=reason):
                logger.debug("RADIUS packet from %s dropped: %s", addr[0], reason)
            case AccountingRequestReceived() if self.writer.threaded:
                if self.writer.backlog >= self.queue_size:
                    self.core.abandon(event)
                    self.core.counters["dropped_queue_full"] += 1
                else:
                    self.writer.submit(_Pending(event, transport), (event.nas, event.record))
            case AccountingRequestReceived() | AccessRequestReceived():
                queue = self._acct if isinstance(event, AccountingRequestReceived) else self._auth
                try:
                    queue.put_nowait(_Pending(event, transport))
                except asyncio.QueueFull:
                    self.core.abandon(event)
                    self.core.counters["dropped_queue_full"] += 1

    # serving --------------------------------------------------------------------
    async def run(self, host: str, auth_port: int, acct_port: int) -> None:
        """Listen on ``host`` (auth and acct ports) and serve until cancelled."""
        loop = asyncio.get_running_loop()
        if self.writer.threaded:
            self.writer.start(self._stored)
        try:
            for port, number in (("auth", auth_port), ("acct", acct_port)):
                transport, _ = await loop.create_datagram_endpoint(
                    lambda p=port: _Endpoint(self, p),  # type: ignore[misc]
                    local_addr=(host, number),
                )
                self._transports.append(transport)
                sock = transport.get_extra_info("sockname")
                self.addresses[port] = (sock[0], sock[1])  # type: ignore[index]
            logger.info(
                "RADIUS on %s (auth) and %s (acct)", self.addresses["auth"], self.addresses["acct"]
            )
            self.ready.set()
            async with asyncio.TaskGroup() as tg:
                if not self.writer.threaded:
                    tg.create_task(self._write_accounting(), name="radius.acct-writer")
                tg.create_task(self._decide_access(), name="radius.auth")
                if self.clients_loader is not None:
                    tg.create_task(self._reload_forever(), name="radius.nas-reload")
                if self.dynauth is not None:
                    tg.create_task(self._send_disconnects(), name="radius.disconnect")
        finally:
            for t in self._transports:
                t.close()
            self._transports.clear()
            self.writer.close()

    async def reload_clients(self) -> None:
        """Read the NAS registry again (a NAS added or changed since the start)."""
        if self.clients_loader is not None:
            self.core.clients = await self.clients_loader()

    async def _reload_forever(self) -> None:
        while True:
            await asyncio.sleep(self.reload_s)
            try:
                await self.reload_clients()
            except _STORAGE_ERRORS as exc:
                self.core.counters["storage_errors"] += 1
                logger.error("cannot reload the NAS clients: %s", exc)

    async def _write_accounting(self) -> None:
        # Two batches in flight: one being applied while the previous one is being synced
        # to disk (AccountingWriter's group commit); each takes whatever arrived meanwhile.
        slots = asyncio.Semaphore(2)
        async with asyncio.TaskGroup() as tg:
            while True:
                await slots.acquire()
                batch = [await self._acct.get()]
                while len(batch) < self.batch_max and not self._acct.empty():
                    batch.append(self._acct.get_nowait())
                tg.create_task(self._store_batch(batch, slots), name="radius.acct-batch")

    async def _store_batch(self, batch: list[_Pending], slots: asyncio.Semaphore) -> None:
        try:
            outcomes = await self.writer.write(
                [(p.event.nas, p.event.record) for p in batch]  # type: ignore[union-attr]
            )
        except _STORAGE_ERRORS as exc:
            # Not stored: no response (RFC 2866 §4.1); the NAS retransmits.
            self._abandon(batch)
            self.core.counters["storage_errors"] += 1
            self._write_failures += 1
            delay = random.uniform(0, min(10.0, 0.1 * 1.5**self._write_failures))
            logger.error("cannot store accounting (%s); retrying in %.1f s", exc, delay)
            await asyncio.sleep(delay)
            return
        except Exception:
            self._abandon(batch)
            self.core.counters["handler_crashed"] += 1
            logger.error("accounting batch crashed", exc_info=True)
            return
        finally:
            slots.release()
        self._write_failures = 0
        self._answer(batch, outcomes)

    def _stored(
        self, batch: list[_Pending], outcomes: list[str] | None, error: Exception | None
    ) -> None:
        """The threaded writer's answer for a batch (in the event loop)."""
        if outcomes is not None:
            self._answer(batch, outcomes)
            return
        self._abandon(batch)  # not stored: no response (RFC 2866 §4.1); the NAS retransmits
        if isinstance(error, _STORAGE_ERRORS):
            self.core.counters["storage_errors"] += 1
            logger.error("cannot store accounting: %s", error)
        else:
            self.core.counters["handler_crashed"] += 1
            logger.error("accounting batch crashed", exc_info=error)

    def _answer(self, batch: list[_Pending], outcomes: list[str]) -> None:
        self.core.counters["accounting_batches"] += 1
        for p, outcome in zip(batch, outcomes, strict=True):
            self.outcomes[outcome.split(":")[0]] += 1
            assert isinstance(p.event, AccountingRequestReceived)
            p.transport.sendto(self.core.acknowledge(p.event), p.event.key.addr)
            if over_quota(p.event.record, self.quota_octets(p.event.nas.insee)):
                self._quota_reached(p.event.nas, p.event.record.session_id)

    def quota_octets(self, insee: str) -> int:
        """The volume quota of a session at commune ``insee``'s hotspots (0: none): its
        ``[portal.communes."<insee>"] quota_mb``, else ``[radius] max_total_mb``."""
        quota = self._quotas.get(insee)
        if quota is None:
            quota = self._quotas[insee] = self._quota_of(insee)
        return quota

    def _quota_reached(self, nas: NasClient, session_id: str) -> None:
        if self.dynauth is None or (nas.nas_id, session_id) in self._cut:
            return
        try:
            self._disconnects.put_nowait((nas, session_id))
        except asyncio.QueueFull:
            self.core.counters["disconnect_queue_full"] += 1
            return
        self._cut[(nas.nas_id, session_id)] = None
        while len(self._cut) > 100_000:
            self._cut.popitem(last=False)

    async def _send_disconnects(self) -> None:
        assert self.dynauth is not None
        while True:
            nas, session_id = await self._disconnects.get()
            try:
                result = await self.dynauth.send(
                    nas.nas_id,
                    nas.address,
                    nas.coa_port,
                    nas.secret,
                    acct_session_id=session_id,
                    reason="quota",
                )
            except _STORAGE_ERRORS as exc:
                self.core.counters["storage_errors"] += 1
                logger.error("cannot record a Disconnect-Request: %s", exc)
                continue
            outcome = {True: "ack", False: "nak", None: "unanswered"}[result.ok]
            self.core.counters[f"disconnect_{outcome}"] += 1

    def _abandon(self, batch: list[_Pending]) -> None:
        for p in batch:
            self.core.abandon(p.event)

    async def _decide_access(self) -> None:
        while True:
            p = await self._auth.get()
            event = p.event
            assert isinstance(event, AccessRequestReceived)
            try:
                decision = await self.policy.decide(event, self.clock())
            except _STORAGE_ERRORS as exc:
                self.core.abandon(event)
                self.core.counters["storage_errors"] += 1
                logger.error("cannot decide an Access-Request: %s", exc)
                continue
            except Exception:
                self.core.abandon(event)
                self.core.counters["handler_crashed"] += 1
                logger.error("Access-Request handler crashed", exc_info=True)
                continue
            self.outcomes[f"access_{decision.reason}"] += 1
            if decision.accept:
                reply = self.core.accept(event, decision.limits)
            else:
                reply = self.core.reject(event)
            p.transport.sendto(reply, event.key.addr)


# ------------------------------------------------------------------ Disconnect / CoA


@dataclass(frozen=True)
class DynAuthResult:
    """The NAS's answer: ACK (``ok``), NAK (with Error-Cause) or none (``ok`` None)."""

    ok: bool | None
    error_cause: int | None
    attempts: int


class _ClientEndpoint(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.replies: asyncio.Queue[bytes] = asyncio.Queue(maxsize=64)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        with contextlib.suppress(asyncio.QueueFull):
            self.replies.put_nowait(data)


class DynAuthClient:
    """Sends Disconnect-Request / CoA-Request (RFC 5176) to a NAS and records the answer.

    Retries follow RFC 5080 §2.2.1 in spirit: the same packet (same Identifier and
    authenticator, so the NAS can detect the duplicate) after a jittered, doubling wait.
    """

    def __init__(self, db: Database, *, timeout_s: float = 2.0, retries: int = 3) -> None:
        self._db = db
        self.timeout_s = timeout_s
        self.retries = retries

    async def send(
        self,
        nas_id: str,
        host: str,
        port: int,
        secret: bytes,
        *,
        kind: str = "disconnect",
        acct_session_id: str | None = None,
        user_name: str | None = None,
        calling_station_id: str | None = None,
        extra: list[tuple[int, bytes]] | None = None,
        reason: str = "admin",
    ) -> DynAuthResult:
        """Send one request and wait for its ACK/NAK; the outcome is stored in
        ``radius_dynauth`` whatever it is."""
        code = Code.DISCONNECT_REQUEST if kind == "disconnect" else Code.COA_REQUEST
        attrs: list[tuple[int, bytes]] = [(Attr.NAS_IDENTIFIER, nas_id.encode())]
        if user_name:
            attrs.append((Attr.USER_NAME, user_name.encode()))
        if acct_session_id:
            attrs.append((Attr.ACCT_SESSION_ID, acct_session_id.encode()))
        if calling_station_id:
            attrs.append((Attr.CALLING_STATION_ID, calling_station_id.encode()))
        # RFC 5176 §3.3: Event-Timestamp protects the NAS against replays.
        attrs.append((Attr.EVENT_TIMESTAMP, encode_int(int(time.time()))))
        attrs.extend(extra or [])
        data = sign_request(code, secrets.randbelow(256), attrs, secret)
        now = time.time()
        async with self._db.begin() as conn:
            result = await conn.execute(
                radius_dynauth.insert().values(
                    nas_id=nas_id,
                    kind=kind,
                    acct_session_id=acct_session_id,
                    reason=reason[:32],
                    created_at=now,
                )
            )
        row_id = result.inserted_primary_key[0]  # type: ignore[index]
        outcome = await self._exchange(data, host, port, secret, code)
        async with self._db.begin() as conn:
            await conn.execute(
                radius_dynauth.update()
                .where(radius_dynauth.c.id == row_id)
                .values(
                    attempts=outcome.attempts,
                    ok=outcome.ok,
                    error_cause=outcome.error_cause,
                    answered_at=time.time() if outcome.ok is not None else None,
                )
            )
        return outcome

    async def _exchange(
        self, data: bytes, host: str, port: int, secret: bytes, code: int
    ) -> DynAuthResult:
        loop = asyncio.get_running_loop()
        transport, proto = await loop.create_datagram_endpoint(
            _ClientEndpoint, remote_addr=(host, port)
        )
        ack, nak = code + 1, code + 2
        attempt = 0
        try:
            for attempt in range(1, self.retries + 2):
                transport.sendto(data)
                wait = self.timeout_s * (2 ** (attempt - 1)) * random.uniform(0.9, 1.1)
                deadline = loop.time() + wait
                while (left := deadline - loop.time()) > 0:
                    try:
                        async with asyncio.timeout(left):
                            reply = await proto.replies.get()
                    except TimeoutError:
                        break
                    parsed = self._match(reply, data, secret, ack, nak)
                    if parsed is not None:
                        return DynAuthResult(parsed[0], parsed[1], attempt)
            return DynAuthResult(None, None, attempt)
        finally:
            transport.close()

    @staticmethod
    def _match(
        reply: bytes, request: bytes, secret: bytes, ack: int, nak: int
    ) -> tuple[bool, int | None] | None:
        try:
            pkt = decode(reply)
        except RemoteProtocolError:
            return None
        if pkt.identifier != request[1] or pkt.code not in (ack, nak):
            return None
        if not verify_reply(reply, request[4:20], secret):
            return None
        return pkt.code == ack, pkt.get_int(Attr.ERROR_CAUSE)
