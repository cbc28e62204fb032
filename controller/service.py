"""The controller service: ingest agent messages, keep sessions, send commands.

Everything runs in one asyncio loop under one ``TaskGroup`` (see ``controller.main``).
The ingest path is ``handle``: decode and check (``controller.contract``), claim
``(ap, boot, seq)`` and apply its effects in one transaction (``controller.sessions``),
then acknowledge to the broker. Bad input is rejected, counted and logged without
secrets; it never stops the service.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import hmac
import json
import logging
import secrets
import time
from collections.abc import Callable, Coroutine
from typing import Any

import sqlalchemy as sa

from agents.contract import (
    VERSION,
    AckMsg,
    ApplyConfigArgs,
    AuthorizeArgs,
    Command,
    DeauthorizeArgs,
    RotateCredentialsArgs,
    SyncArgs,
    command_args,
    encode,
    sign_command,
    signature_ok,
    topic,
)
from controller import apconfig, outbox
from controller.bridge import Bridge, Incoming
from controller.config import Settings
from controller.contract import Rejected, decode
from controller.registry import Registry
from controller.returning import ReturningDevices
from controller.sessions import SessionLedger
from controller.storage import UNAVAILABLE, Database, retry_while_unavailable
from controller.storage.schema import (
    access_points,
    commands,
    processed_messages,
    session_events,
    sessions,
)

__all__ = ["Controller", "mac_tag"]

logger = logging.getLogger(__name__)

# How often the stale-session sweep runs.
STALE_SWEEP_S = 30.0
# Processed (ap, boot, seq) rows older than this are pruned: QoS 1 redeliveries and
# spooled replays arrive well within it.
PROCESSED_KEEP_S = 7 * 86400.0
# How often the sweep also deletes the portal's records that are over.
PORTAL_PRUNE_S = 3600.0


_COMMAND_NAMES: dict[type, str] = {
    AuthorizeArgs: "authorize",
    DeauthorizeArgs: "deauthorize",
    SyncArgs: "sync",
    ApplyConfigArgs: "apply_config",
    RotateCredentialsArgs: "rotate_credentials",
}
# After a bad signature, an AP's keys are re-read from the database (a rotation started
# by `borne ap rotate` in another process) at most this often.
KEY_RELOAD_S = 2.0


# Keyed per process: without the key, a tag cannot be reversed by trying a vendor's
# 2^24 addresses. Tags are stable within one run of the controller, no longer.
_TAG_KEY = secrets.token_bytes(32)


def mac_tag(mac: str) -> str:
    """A short keyed tag of a MAC for logs and pages (never show a MAC in clear)."""
    return hmac.new(_TAG_KEY, mac.encode(), hashlib.sha256).hexdigest()[:10]


class Controller:
    """Ingest, sessions and commands; the IO adapters around it are thin."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        registry: Registry,
        *,
        bridge: Bridge | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.db = db
        self.registry = registry
        self.bridge = bridge
        self.clock = clock
        self.ledger = SessionLedger(settings.sessions)
        self.counters: collections.Counter[str] = collections.Counter()
        self._acks: dict[str, asyncio.Future[AckMsg]] = {}
        # Background jobs started by ingest (automatic apply_config pushes).
        self._tasks: set[asyncio.Task[None]] = set()
        # Access points with an automatic apply_config being prepared (controller.apconfig).
        self.config_pushing: set[str] = set()
        self._key_reloads: dict[str, float] = {}
        # Returning devices let in as they appear (territorial continuity, no page).
        self.returning = ReturningDevices(self)
        self._portal_pruned = float("-inf")

    # ingest ------------------------------------------------------------------------
    async def handle(self, topic_name: str, payload: bytes, now: float | None = None) -> str:
        """Process one agent message; return ``applied``, ``duplicate`` or ``rejected:...``.

        Raises:
            sqlalchemy.exc.OperationalError: the database failed (the caller retries and
                does not acknowledge the message).
        """
        now = self.clock() if now is None else now
        try:
            kind, msg = await self._decode(topic_name, payload, now)
        except Rejected as exc:
            self.counters["rejected"] += 1
            self.counters[f"rejected_{exc.reason}"] += 1
            logger.warning(
                "message rejected (%s) on %s: %s", exc.reason, topic_name[:100], exc.detail[:160]
            )
            return f"rejected:{exc.reason}"
        async with self.db.begin() as conn:
            ap = (
                await conn.execute(sa.select(access_points).where(access_points.c.ap_id == msg.ap))
            ).first()
            if ap is None:  # removed from the registry since the key cache was filled
                self.counters["rejected"] += 1
                self.counters["rejected_unknown_ap"] += 1
                return "rejected:unknown_ap"
            if not await self.ledger.claim(conn, msg.ap, msg.boot, msg.seq, now):
                self.counters["duplicates"] += 1
                return "duplicate"
            applied = await self.ledger.apply(conn, ap, msg, now)
        self.counters[f"applied_{kind}"] += 1
        await self._confirm_rotation(msg.ap, payload, now)
        if applied.late:
            self.counters["late_previous_boot"] += 1
        if applied.backfilled:
            self.counters["backfilled"] += 1
        if isinstance(msg, AckMsg):
            fut = self._acks.pop(msg.id, None)
            if fut is not None and not fut.done():
                fut.set_result(msg)
        await apconfig.after_message(self, msg)
        self.returning.after_message(msg, late=applied.late, backfilled=applied.backfilled)
        return "applied"

    def spawn(self, job: Coroutine[Any, Any, None], name: str) -> None:
        """Run ``job`` in the background; the controller keeps a reference until it ends."""
        task = asyncio.get_running_loop().create_task(job, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _decode(self, topic_name: str, payload: bytes, now: float) -> Any:
        """Decode with every key the AP may use now; after a bad signature, re-read its
        keys once (a rotation made by another process) and try again."""
        try:
            return decode(topic_name, payload, lambda ap: self.registry.accepted_keys(ap, now))
        except Rejected as exc:
            if exc.reason != "bad_signature" or not exc.detail:
                raise
            ap_id = exc.detail
            if now - self._key_reloads.get(ap_id, float("-inf")) < KEY_RELOAD_S:
                raise
            self._key_reloads[ap_id] = now
            await self.registry.reload(ap_id)
            return decode(topic_name, payload, lambda ap: self.registry.accepted_keys(ap, now))

    async def _confirm_rotation(self, ap_id: str, payload: bytes, now: float) -> None:
        """A message signed with a rotation's new key confirms it (controller.enroll)."""
        pending = self.registry.pending_key(ap_id)
        if pending is None or not signature_ok(json.loads(payload), pending):
            return
        from controller.enroll import confirm_rotation

        current = self.registry.key_for(ap_id)
        assert current is not None
        if await confirm_rotation(self.db, ap_id, current.decode(), now):
            self.counters["rotations_confirmed"] += 1
            logger.info("%s confirmed its new credentials", ap_id)
        await self.registry.reload(ap_id)

    async def consume(self) -> None:
        """Feed the bridge's messages through :meth:`handle`, then acknowledge them."""
        assert self.bridge is not None
        while True:
            item = await self.bridge.queue.get()
            await self._handle_until_stored(item)
            self.bridge.ack(item)

    async def _handle_until_stored(self, item: Incoming) -> None:
        # Disk full, database restarting...: keep the message (unacknowledged) and try
        # again; the broker holds the rest meanwhile.
        await retry_while_unavailable(
            lambda: self.handle(item.topic, item.payload),
            what="store a message",
            failed=lambda: self.counters.update(["storage_errors"]),
            cap_s=10.0,
        )

    # commands ----------------------------------------------------------------------
    async def prepare_command(
        self,
        ap_id: str,
        args: AuthorizeArgs | DeauthorizeArgs | SyncArgs | RotateCredentialsArgs | ApplyConfigArgs,
        *,
        purpose: str | None = None,
        ttl_s: int | None = None,
    ) -> Command:
        """Sign a command for ``ap_id`` and record it (not yet published).

        Raises:
            KeyError: the access point is not registered.
        """
        key = self.registry.key_for(ap_id)
        if key is None:
            raise KeyError(ap_id)
        name = _COMMAND_NAMES[type(args)]
        now = self.clock()
        ttl = ttl_s or self.settings.sessions.command_ttl_s
        cmd = sign_command(
            Command(
                v=VERSION,
                ap=ap_id,
                id=secrets.token_hex(12),
                cmd=name,  # type: ignore[arg-type]
                args=command_args(args),
                iat=now,
                exp=now + ttl,
            ),
            key,
        )
        async with self.db.begin() as conn:
            await conn.execute(
                commands.insert().values(
                    id=cmd.id,
                    ap_id=ap_id,
                    cmd=name,
                    mac=getattr(args, "mac", None),
                    purpose=purpose,
                    args=json.dumps(cmd.args),
                    created_at=now,
                    expires_at=cmd.exp,
                )
            )
        return cmd

    async def send_command(
        self,
        ap_id: str,
        args: AuthorizeArgs | DeauthorizeArgs | SyncArgs | ApplyConfigArgs,
        *,
        purpose: str | None = None,
        ttl_s: int | None = None,
    ) -> str:
        """Sign, record and publish a command; return its id (see :meth:`wait_ack`).

        Raises:
            KeyError: the access point is not registered.
            RuntimeError: the controller has no MQTT bridge.
        """
        if self.bridge is None:
            raise RuntimeError("no MQTT bridge: commands cannot be sent")
        cmd = await self.prepare_command(ap_id, args, purpose=purpose, ttl_s=ttl_s)
        self._acks[cmd.id] = asyncio.get_running_loop().create_future()
        await self.bridge.publish(topic(ap_id, "cmd"), encode(cmd))
        self.counters[f"sent_{cmd.cmd}"] += 1
        return cmd.id

    async def command_outcome(self, cmd_id: str) -> tuple[bool | None, str | None]:
        """``(ok, error)`` recorded for a command; ``ok`` is None while unacknowledged."""
        async with self.db.connect() as conn:
            row = (
                await conn.execute(
                    sa.select(commands.c.ok, commands.c.error).where(commands.c.id == cmd_id)
                )
            ).first()
        return (None, None) if row is None else (row.ok, row.error)

    async def wait_ack(self, cmd_id: str, timeout_s: float) -> AckMsg | None:
        """The agent's ack of ``cmd_id``, or None if none came in time."""
        fut = self._acks.get(cmd_id)
        if fut is None:
            return None
        try:
            async with asyncio.timeout(timeout_s):
                return await asyncio.shield(fut)
        except TimeoutError:
            self.counters["ack_timeouts"] += 1
            return None
        finally:
            if fut.done():
                self._acks.pop(cmd_id, None)

    def forget_ack(self, cmd_id: str) -> None:
        """Stop waiting for ``cmd_id``."""
        fut = self._acks.pop(cmd_id, None)
        if fut is not None:
            fut.cancel()

    # periodic jobs -----------------------------------------------------------------
    def outbox_consumers(self) -> list[str]:
        """The pipelines that read the session events outbox in this configuration."""
        wanted = (("legal", self.settings.legal.enabled), ("stats", self.settings.stats.enabled))
        return [name for name, enabled in wanted if enabled]

    async def sweep(self) -> int:
        """Close stale sessions, prune old exactly-once records and consumed outbox events."""
        now = self.clock()
        async with self.db.begin() as conn:
            closed = await self.ledger.close_stale(conn, now)
            await conn.execute(
                processed_messages.delete().where(
                    processed_messages.c.received_at < now - PROCESSED_KEEP_S
                )
            )
            consumers = self.outbox_consumers()
            if consumers:
                pruned = await outbox.prune(conn, consumers)
            else:
                # Nobody reads the outbox: keep a week, for a pipeline enabled later.
                result = await conn.execute(
                    session_events.delete().where(session_events.c.at < now - PROCESSED_KEEP_S)
                )
                pruned = int(result.rowcount)
            self.counters["outbox_pruned"] += pruned
        from controller.enroll import finish_rotations

        await self._prune_portal(now)
        for ap_id in await finish_rotations(self.db, now):
            self.counters["rotations_finished"] += 1
            await self.registry.reload(ap_id)
        if closed:
            self.counters["stale_closed"] += closed
            logger.info("closed %d stale sessions", closed)
        return closed

    async def _prune_portal(self, now: float) -> None:
        """At most every ``PORTAL_PRUNE_S``: identity data past its legal retention,
        continuity records whose period is over, used or expired UAM credentials, codes
        and session extensions whose time is over."""
        if now - self._portal_pruned < PORTAL_PRUNE_S:
            return
        from captive_portal._codestore import prune_pending
        from captive_portal.identities import purge_expired
        from radius._policy import prune_credentials

        self._portal_pruned = now
        self.counters["identities_purged"] += await purge_expired(self.db, now)
        self.counters["devices_pruned"] += await self.returning.devices.prune(now)
        self.counters["credentials_pruned"] += await prune_credentials(self.db, now)
        self.counters["portal_pending_pruned"] += await prune_pending(self.db, now)

    async def sweep_forever(self) -> None:
        """Run :meth:`sweep` every ``STALE_SWEEP_S``."""
        while True:
            await asyncio.sleep(STALE_SWEEP_S)
            try:
                await self.sweep()
            except UNAVAILABLE as exc:
                self.counters["storage_errors"] += 1
                logger.error("stale sweep failed: %s", exc)

    # reads for the portal and the dashboards ---------------------------------------
    async def open_sessions(self, ap_id: str | None = None) -> list[sa.Row[Any]]:
        """Open sessions, newest first."""
        q = sa.select(sessions).where(sessions.c.stopped_at.is_(None))
        if ap_id is not None:
            q = q.where(sessions.c.ap_id == ap_id)
        async with self.db.connect() as conn:
            return list((await conn.execute(q.order_by(sessions.c.started_at.desc()))).all())

    def snapshot_counters(self) -> dict[str, int]:
        """A copy of the counters."""
        return dict(self.counters)
