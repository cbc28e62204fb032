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

By e-mail: a commune account subscribes itself, at its own address, to its communes'
reports (``dashboard_report_subscriptions``, the ``/reports`` page). After each check
the mailer (``dashboards._report_mail``) sends every stored report of the month just ended to each
subscriber not served yet, the report's HTML as the message's HTML part with a short
plain-text part, through ``[portal.email]``'s relay (``captive_portal._email``) when
``[dashboard] report_email`` is on. Each mail is claimed in ``dashboard_report_mails``
before it is sent (account, commune, month): a restart, a second controller or a report
made again never sends it twice; a failed send gives the claim back, so the next check
tries again. Logs name the account, never the address.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gzip
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from datetime import date, datetime, timedelta, tzinfo
from typing import TYPE_CHECKING, Any, Final

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from controller.stats import StoreError
from controller.storage import Database
from controller.storage.schema import (
    dashboard_account_communes,
    dashboard_accounts,
    dashboard_report_mails,
    dashboard_report_subscriptions,
    dashboard_reports,
)

if TYPE_CHECKING:
    from dashboards._report_mail import ReportMailer

__all__ = [
    "ReportError",
    "ReportScheduler",
    "ReportStore",
    "StoredReport",
    "Subscriber",
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


@dataclasses.dataclass(frozen=True, slots=True)
class Subscriber:
    """An account that receives a commune's reports, at its own address."""

    username: str
    insee: str
    email: str


class ReportStore:
    """Monthly reports in the state database (SQLite or PostgreSQL), their subscribers
    and the mails sent."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def _insert(self, table: sa.Table) -> Any:
        """An INSERT that can say ON CONFLICT, in the database's dialect."""
        mod: Any = postgresql if self.db.dialect == "postgresql" else sqlite
        return mod.insert(table)

    async def save(self, insee: str, month: str, html: str, now: float) -> None:
        """Store (or replace) a commune's report of ``month``."""
        content = gzip.compress(html.encode("utf-8"), 6)
        stmt = self._insert(dashboard_reports).values(
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

    # -- e-mail subscriptions and the mails sent -----------------------------------------

    async def subscriptions(self, username: str) -> dict[str, str]:
        """The communes whose reports ``username`` receives, each with its address."""
        t = dashboard_report_subscriptions.c
        async with self.db.connect() as conn:
            rows = await conn.execute(sa.select(t.insee, t.email).where(t.username == username))
            return {r.insee: r.email for r in rows}

    async def subscribe(self, username: str, email: str, insees: Iterable[str], now: float) -> None:
        """Replace the account's subscriptions with ``insees`` at ``email`` (none: it
        receives nothing). The caller checks the address and the account's communes."""
        t = dashboard_report_subscriptions
        rows = [
            {"username": username, "insee": i, "email": email, "created_at": now}
            for i in sorted(set(insees))
        ]
        async with self.db.begin() as conn:
            await conn.execute(t.delete().where(t.c.username == username))
            if rows:
                await conn.execute(t.insert(), rows)

    async def pending_mails(self, month: str) -> list[Subscriber]:
        """The subscribers of the communes whose report of ``month`` is stored, not sent
        yet: active accounts that still see the commune."""
        s, r = dashboard_report_subscriptions.c, dashboard_reports.c
        a, c, m = dashboard_accounts.c, dashboard_account_communes.c, dashboard_report_mails.c
        joined = (
            dashboard_report_subscriptions.join(
                dashboard_reports, sa.and_(r.insee == s.insee, r.month == month)
            )
            .join(dashboard_accounts, a.username == s.username)
            .join(
                dashboard_account_communes,
                sa.and_(c.username == s.username, c.insee == s.insee),
            )
            .outerjoin(
                dashboard_report_mails,
                sa.and_(m.username == s.username, m.insee == s.insee, m.month == month),
            )
        )
        query = (
            sa.select(s.username, s.insee, s.email)
            .select_from(joined)
            .where(a.active.is_(True), m.username.is_(None))
            .order_by(s.insee, s.username)
        )
        async with self.db.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [Subscriber(row.username, row.insee, row.email) for row in rows]

    async def claim_mail(self, sub: Subscriber, month: str, now: float) -> bool:
        """Record the mail of ``month`` to ``sub`` as sent, before sending it; False if
        it already was (or another controller has just claimed it)."""
        stmt = (
            self._insert(dashboard_report_mails)
            .values(username=sub.username, insee=sub.insee, month=month, sent_at=now)
            .on_conflict_do_nothing()
        )
        async with self.db.begin() as conn:
            return bool((await conn.execute(stmt)).rowcount == 1)

    async def release_mail(self, sub: Subscriber, month: str) -> None:
        """Give a claim back (the send failed): the next check sends it again."""
        m = dashboard_report_mails
        async with self.db.begin() as conn:
            await conn.execute(
                m.delete().where(
                    m.c.username == sub.username, m.c.insee == sub.insee, m.c.month == month
                )
            )

    async def mail_sent(self, sub: Subscriber, month: str, now: float) -> None:
        """The relay took the mail at ``now``."""
        m = dashboard_report_mails
        async with self.db.begin() as conn:
            await conn.execute(
                m.update()
                .where(m.c.username == sub.username, m.c.insee == sub.insee, m.c.month == month)
                .values(sent_at=now)
            )


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
        mailer: e-mails the month's reports to their subscribers after each check.
    """

    def __init__(
        self,
        store: ReportStore,
        generate: Generate,
        communes: Callable[[], Awaitable[list[str]]],
        tz: tzinfo,
        clock: Callable[[], float] = time.time,
        mailer: ReportMailer | None = None,
    ) -> None:
        self.store = store
        self.generate = generate
        self.communes = communes
        self.tz = tz
        self.clock = clock
        self.mailer = mailer
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
        """Make the missing reports of the month just ended, then e-mail those not sent."""
        today = datetime.fromtimestamp(self.clock(), self.tz).date()
        month = previous_month(today)
        made = await self.make(month, await self.communes())
        if made:
            logger.info("monthly reports of %s made for %d communes", month, len(made))
        if self.mailer is not None:
            await self.mailer.deliver(month)
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
