"""Monthly reports on schedule: each equipped commune's report, stored for its accounts.

At the start of a month the controller (its TaskGroup, next to the fleet watcher) makes
the report of the month just ended for every commune that has a hotspot, and stores it
in the state database (``dashboard_reports``, gzip'd print-ready HTML, self-contained:
server-drawn SVG charts, inline styles, no script). The commune's accounts list and open
them at ``/reports``; ``borne dashboard report --month YYYY-MM --all`` makes them by hand
(a month missed, a commune added later, or again with ``--force``).

The scheduler checks every hour and makes only what is missing, so that a controller
stopped over the first of the month catches up when it starts, and several controllers
sharing one database at worst make a report twice (the second replaces the first).
"""

from __future__ import annotations

import asyncio
import dataclasses
import gzip
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from datetime import date, datetime, timedelta, tzinfo
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from controller.stats import StoreError
from controller.storage import Database
from controller.storage.schema import dashboard_reports

__all__ = [
    "ReportError",
    "ReportScheduler",
    "ReportStore",
    "StoredReport",
    "month_days",
    "parse_month",
    "previous_month",
]

logger = logging.getLogger(__name__)

# How often the scheduler looks for missing reports.
CHECK_S: Final = 3600.0
# The first reports wait this long after start-up (the controller has other things to do).
START_DELAY_S: Final = 60.0


class ReportError(Exception):
    """A bad month or a report that cannot be made (message in French / English)."""


def parse_month(text: str) -> date:
    """The first day of month ``YYYY-MM``.

    Raises:
        ReportError: not a month.
    """
    try:
        if len(text) != 7:
            raise ValueError(text)
        return date.fromisoformat(f"{text}-01")
    except ValueError as exc:
        raise ReportError(f"mois AAAA-MM attendu / expected YYYY-MM: {text!r}") from exc


def month_days(first: date) -> tuple[date, date]:
    """The first and last days of the month starting at ``first``."""
    last = (first.replace(day=28) + timedelta(days=4)).replace(day=1) - timedelta(days=1)
    return first, last


def previous_month(today: date) -> str:
    """The month before ``today``'s, ``YYYY-MM``."""
    return (today.replace(day=1) - timedelta(days=1)).isoformat()[:7]


@dataclasses.dataclass(frozen=True, slots=True)
class StoredReport:
    """A stored report's listing entry."""

    insee: str
    month: str
    generated_at: float
    size: int


class ReportStore:
    """Monthly reports in the state database (SQLite or PostgreSQL)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def save(self, insee: str, month: str, html: str, now: float) -> None:
        """Store (or replace) a commune's report of ``month``."""
        content = gzip.compress(html.encode("utf-8"), 6)
        mod: Any = postgresql if self.db.dialect == "postgresql" else sqlite
        stmt = mod.insert(dashboard_reports).values(
            insee=insee, month=month, generated_at=now, content=content
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=["insee", "month"],
            set_={"generated_at": stmt.excluded.generated_at, "content": stmt.excluded.content},
        )
        async with self.db.begin() as conn:
            await conn.execute(stmt)

    async def get(self, insee: str, month: str) -> str | None:
        """A stored report's HTML, or None."""
        async with self.db.connect() as conn:
            row = (
                await conn.execute(
                    sa.select(dashboard_reports.c.content).where(
                        dashboard_reports.c.insee == insee, dashboard_reports.c.month == month
                    )
                )
            ).first()
        return None if row is None else gzip.decompress(row.content).decode("utf-8")

    async def listing(self, insees: Iterable[str] | None) -> list[StoredReport]:
        """Stored reports of those communes (None: all), newest month first."""
        t = dashboard_reports.c
        query = sa.select(t.insee, t.month, t.generated_at, sa.func.length(t.content))
        if insees is not None:
            query = query.where(t.insee.in_(sorted(insees)))
        async with self.db.connect() as conn:
            rows = (await conn.execute(query.order_by(t.month.desc(), t.insee))).all()
        return [StoredReport(r[0], r[1], float(r[2]), int(r[3])) for r in rows]

    async def months_of(self, month: str) -> set[str]:
        """The communes whose report of ``month`` is stored."""
        async with self.db.connect() as conn:
            rows = await conn.execute(
                sa.select(dashboard_reports.c.insee).where(dashboard_reports.c.month == month)
            )
            return {r.insee for r in rows}


# (commune, month) → the report's HTML
Generate = Callable[[str, str], Awaitable[str]]


class ReportScheduler:
    """Makes the month just ended's reports of the equipped communes, once each.

    Args:
        store: where reports go.
        generate: makes one report's HTML (the dashboards' report page, stored form).
        communes: the communes to report on (those with a hotspot).
        tz: the territory's time zone (a month ends at local midnight).
        clock: Unix time.
    """

    def __init__(
        self,
        store: ReportStore,
        generate: Generate,
        communes: Callable[[], Awaitable[list[str]]],
        tz: tzinfo,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.generate = generate
        self.communes = communes
        self.tz = tz
        self.clock = clock
        self.made = 0
        self.failures = 0

    async def make(self, month: str, insees: Iterable[str], *, force: bool = False) -> list[str]:
        """Make and store the reports of ``month`` for ``insees``; the communes made.

        Without ``force``, reports already stored are kept. A commune whose report fails
        is logged and counted, and the others are still made.
        """
        parse_month(month)
        done = set() if force else await self.store.months_of(month)
        made: list[str] = []
        for insee in insees:
            if insee in done:
                continue
            try:
                html = await self.generate(insee, month)
                await self.store.save(insee, month, html, self.clock())
            except (sa.exc.SQLAlchemyError, OSError, ReportError, StoreError) as exc:
                self.failures += 1
                logger.error("monthly report %s %s not made: %s", insee, month, exc)
                continue
            made.append(insee)
            self.made += 1
        return made

    async def run_once(self) -> list[str]:
        """Make the missing reports of the month just ended."""
        today = datetime.fromtimestamp(self.clock(), self.tz).date()
        month = previous_month(today)
        made = await self.make(month, await self.communes())
        if made:
            logger.info("monthly reports of %s made for %d communes", month, len(made))
        return made

    async def run(self, check_s: float = CHECK_S, start_delay_s: float = START_DELAY_S) -> None:
        """Check every ``check_s`` until cancelled; a failed check is logged and retried."""
        await asyncio.sleep(start_delay_s)
        while True:
            try:
                await self.run_once()
            except (sa.exc.SQLAlchemyError, OSError, StoreError) as exc:
                self.failures += 1
                logger.error("monthly reports: cannot read their data: %s", exc)
            await asyncio.sleep(check_s)
