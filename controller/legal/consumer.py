"""The legal log's consumer of the session events outbox (consumer name ``legal``).

It reads start, update and stop events after its own offset, writes one record per
session and event into the store, and moves the offset only once the records are
fsynced. A crash between the two re-reads events already written: they are skipped by
their outbox id, so nothing is lost and nothing is written twice.

Updates only carry counters most of the time; writing one per accounting interval
would multiply the log by the session length for no legal purpose. An update is
written when the session's private IP or its NAT port block changed; the
volumes are in the stop record. This module holds no crypto and no file format.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from controller import outbox
from controller.config import LegalSettings
from controller.legal.errors import LegalError
from controller.legal.keys import MasterKey, MasterKeyProvider, load_signing_key, parse_master_key
from controller.legal.records import LegalRecord, from_session
from controller.legal.retention import purge
from controller.legal.store import LegalStore, day_of
from controller.storage import UNAVAILABLE, Database, retry_while_unavailable

__all__ = ["CONSUMER", "LegalConsumer", "open_store", "provider_from"]

logger = logging.getLogger(__name__)

CONSUMER = "legal"
# How many sessions' last written address we remember to skip unchanged updates.
_SEEN_MAX = 200_000
# What an update must change to be written: the private IP or the NAT port block.
_Addr = tuple[str, str | None, int | None, int | None]
# The store or the state database away: a batch tried again later, never fatal.
_RETRIED: tuple[type[Exception], ...] = (LegalError, *UNAVAILABLE)
# Sealing and purging run this often: a day is purged at most an hour after it is due.
MAINTENANCE_S = 3600.0


def provider_from(settings: LegalSettings) -> MasterKeyProvider:
    """The master key provider the settings name.

    Raises:
        LegalError: the key is missing or malformed.
    """
    if settings.master_key_provider == "env":
        if settings.master_key is None:
            raise LegalError("BORNE__LEGAL__MASTER_KEY is not set")
        return MasterKey(parse_master_key(settings.master_key.get_secret_value()))
    return MasterKey.from_file(settings.master_key_file)


def open_store(settings: LegalSettings, *, read_only: bool = False) -> LegalStore:
    """Open the store the settings describe (blocking: reads key files)."""
    signing = None if read_only else load_signing_key(settings.signing_key_file)
    return LegalStore(
        Path(settings.directory),
        provider_from(settings),
        signing,
        checkpoint_s=settings.checkpoint_s,
    )


class LegalConsumer:
    """Moves session events from the outbox into the legal store."""

    def __init__(
        self,
        db: Database,
        store: LegalStore,
        settings: LegalSettings,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.db = db
        self.store = store
        self.settings = settings
        self.clock = clock
        self.written = 0
        self.failures = 0  # batches retried
        self._last_id: int | None = None
        self._seen: collections.OrderedDict[str, _Addr] = collections.OrderedDict()

    def _failed(self) -> None:
        self.failures += 1

    def _wanted(self, kind: str, rec: LegalRecord, batch: dict[str, _Addr | None]) -> bool:
        """Whether to write this event; what it changes goes to ``batch`` and reaches
        the remembered addresses only once the batch is durable."""
        addr = (rec.private_ip, rec.public_ip, rec.port_start, rec.port_end)
        if kind == "stop":
            batch[rec.session_id] = None
            return True
        known = batch[rec.session_id] if rec.session_id in batch else self._seen.get(rec.session_id)
        if kind == "update" and known == addr:
            return False
        batch[rec.session_id] = addr
        return True

    def _remember(self, batch: dict[str, _Addr | None]) -> None:
        for sid, addr in batch.items():
            if addr is None:
                self._seen.pop(sid, None)
            else:
                self._seen[sid] = addr
                self._seen.move_to_end(sid)
        while len(self._seen) > _SEEN_MAX:
            self._seen.popitem(last=False)

    async def step(self) -> int:
        """Handle one batch; return the number of events consumed."""
        if self._last_id is None:
            self._last_id = await asyncio.to_thread(self.store.last_event_id)
        async with self.db.connect() as conn:
            events = await outbox.pending(conn, CONSUMER, limit=self.settings.batch)
        if not events:
            return 0
        items = []
        batch: dict[str, _Addr | None] = {}
        for ev in events:
            rec = from_session(ev.session, ev.kind)
            # An event at or before the last written one was written before a crash that
            # came before the offset moved: it only refreshes what we remember.
            if self._wanted(ev.kind, rec, batch) and ev.id > self._last_id:
                items.append((ev.id, rec))
        if items:
            try:
                await asyncio.to_thread(self.store.append, items, self.clock())
            except (LegalError, OSError):
                # Part of the batch may be durable: ask the store again what it holds.
                self._last_id = None
                raise
            self.written += len(items)
        self._remember(batch)
        self._last_id = max(self._last_id, events[-1].id)
        async with self.db.begin() as conn:
            await outbox.advance(conn, CONSUMER, events[-1].id)
        return len(events)

    async def maintain(self) -> list[dict[str, Any]]:
        """Seal the days before today and purge what is past retention (CPCE L34-1 II:
        keeping too long is an offence, so the controller does not wait for a cron job).
        Returns the shredding statements."""
        now = self.clock()
        await asyncio.to_thread(self.store.seal_before, day_of(now), now)
        statements = await asyncio.to_thread(purge, self.store, self.settings, now)
        for st in statements:
            logger.info(
                "legal log: keys of %s destroyed (%s)", st["day"], ", ".join(st["destroyed"])
            )
        return statements

    async def run(self) -> None:
        """Consume forever, sealing and purging every hour; a failing batch (the store or
        the state database away: nothing moved) is counted and retried with jittered
        backoff."""
        next_maintenance = 0.0

        async def batch() -> int:
            nonlocal next_maintenance
            if time.monotonic() >= next_maintenance:
                await self.maintain()
                next_maintenance = time.monotonic() + MAINTENANCE_S
            return await self.step()

        try:
            while True:
                n = await retry_while_unavailable(
                    batch, what="write the legal log", failed=self._failed, errors=_RETRIED
                )
                if n < self.settings.batch:
                    await asyncio.sleep(self.settings.poll_s)
        finally:
            await asyncio.shield(asyncio.to_thread(self.store.close))
