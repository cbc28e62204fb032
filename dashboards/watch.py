"""The fleet watcher: reads hotspot states, records incidents, wakes live pages.

One reading at a time for the whole process (a lock and a minimum interval): however
many pages follow the fleet live, the registry is read at most once per interval. Each
reading compares states with the previous one (``dashboards._health.transitions``) and
records incidents in ``dashboard_incidents``; then the live pages (server-sent events)
are woken through a version counter and a condition.

:meth:`FleetWatcher.run` reads at every interval, so that incidents are recorded while
nobody looks; without it, readings happen when pages ask, and the down time still comes
from the registry's ``state_since``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Final

import sqlalchemy as sa

from controller.storage import UNAVAILABLE, Database
from controller.storage.schema import access_points, dashboard_incidents
from dashboards._health import Incident, Snapshot, Transition, transitions

__all__ = ["FleetWatcher"]

logger = logging.getLogger(__name__)

# Agents report status at once and health every few seconds; a second is as live as a
# page can usefully be.
MIN_INTERVAL_S: Final = 1.0


class FleetWatcher:
    """Shared readings of the fleet's states, incidents, and wake-ups for live pages.

    Args:
        db: the state database.
        clock: returns the current Unix time.
        interval_s: the least time between two readings.
    """

    def __init__(
        self, db: Database, clock: Callable[[], float], interval_s: float = MIN_INTERVAL_S
    ) -> None:
        self.db = db
        self.clock = clock
        self.interval_s = interval_s
        self.version = 0
        self._last: dict[str, Snapshot] | None = None
        self._fingerprint: tuple[tuple[str, str, float | None], ...] = ()
        self._read_at = float("-inf")
        self._lock = asyncio.Lock()
        self._changed = asyncio.Condition()

    async def refresh(self) -> int:
        """Read the fleet unless it was read less than an interval ago; the version."""
        async with self._lock:
            # The interval is measured on the loop's monotonic clock; ``now`` is wall time.
            tick = asyncio.get_running_loop().time()
            if tick - self._read_at < self.interval_s:
                return self.version
            self._read_at = tick
            now = self.clock()
            async with self.db.connect() as conn:
                rows = (
                    await conn.execute(
                        sa.select(
                            access_points.c.ap_id,
                            access_points.c.state,
                            access_points.c.state_since,
                            access_points.c.last_seen,
                        ).order_by(access_points.c.ap_id)
                    )
                ).all()
            snaps = [Snapshot(r.ap_id, r.state, r.state_since) for r in rows]
            if self._last is None:
                self._last = await self._open_incidents_of_offline(snaps)
            changes = transitions(self._last, snaps, now)
            if changes:
                await self._record(changes)
            self._last = {s.ap_id: s for s in snaps}
            fingerprint = tuple((r.ap_id, r.state, r.last_seen) for r in rows)
            if fingerprint != self._fingerprint:
                self._fingerprint = fingerprint
                self.version += 1
                async with self._changed:
                    self._changed.notify_all()
            return self.version

    async def _open_incidents_of_offline(self, snaps: list[Snapshot]) -> dict[str, Snapshot]:
        """At the first reading, the previous state is what the incidents table says."""
        async with self.db.connect() as conn:
            open_ids = {
                r.ap_id
                for r in await conn.execute(
                    sa.select(dashboard_incidents.c.ap_id).where(
                        dashboard_incidents.c.up_at.is_(None)
                    )
                )
            }
        # A hotspot with an open incident was down; an offline one without is a new
        # incident (left out, so that it counts as first seen); any other is as it is.
        return {
            s.ap_id: Snapshot(s.ap_id, "offline", None) if s.ap_id in open_ids else s
            for s in snaps
            if s.ap_id in open_ids or s.state != "offline"
        }

    async def _record(self, changes: list[Transition]) -> None:
        async with self.db.begin() as conn:
            for ch in changes:
                if ch.kind == "down":
                    exists = (
                        await conn.execute(
                            sa.select(dashboard_incidents.c.id).where(
                                dashboard_incidents.c.ap_id == ch.ap_id,
                                dashboard_incidents.c.up_at.is_(None),
                            )
                        )
                    ).first()
                    if exists is None:
                        await conn.execute(
                            dashboard_incidents.insert().values(ap_id=ch.ap_id, down_at=ch.at)
                        )
                        logger.info("hotspot down", extra={"ap": ch.ap_id})
                else:
                    await conn.execute(
                        dashboard_incidents.update()
                        .where(
                            dashboard_incidents.c.ap_id == ch.ap_id,
                            dashboard_incidents.c.up_at.is_(None),
                        )
                        .values(up_at=ch.at)
                    )
                    logger.info("hotspot back up", extra={"ap": ch.ap_id})

    async def wait_change(
        self, version: int, within_s: float, stop: asyncio.Event | None = None
    ) -> int:
        """Wait until the version passes ``version``, ``within_s`` seconds pass or ``stop``
        is set (checked at every interval); the version.

        Reads the fleet every interval while waiting (shared with every other waiter).
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within_s
        while self.version <= version and not (stop is not None and stop.is_set()):
            left = deadline - loop.time()
            if left <= 0:
                break
            await self.refresh()
            if self.version > version:
                break
            async with self._changed:
                try:
                    async with asyncio.timeout(min(self.interval_s, left)):
                        await self._changed.wait()
                except TimeoutError:
                    task = asyncio.current_task()
                    if task is not None and task.cancelling():
                        raise
        return self.version

    async def incidents(self, since: float) -> list[Incident]:
        """Incidents that were open at some time after ``since``, oldest first."""
        async with self.db.connect() as conn:
            rows = await conn.execute(
                sa.select(dashboard_incidents)
                .where(
                    sa.or_(
                        dashboard_incidents.c.up_at.is_(None),
                        dashboard_incidents.c.up_at >= since,
                    )
                )
                .order_by(dashboard_incidents.c.down_at)
            )
            return [Incident(r.ap_id, r.down_at, r.up_at) for r in rows]

    async def run(self) -> None:
        """Read the fleet at every interval, forever (a task of the controller)."""
        while True:
            try:
                await self.refresh()
            except UNAVAILABLE as exc:
                logger.warning("fleet watcher cannot read the state database: %s", exc)
            await asyncio.sleep(self.interval_s)
