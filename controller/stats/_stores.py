"""Where published cells go: one interface, three stores, one batching writer.

- :class:`SqlStatsStore`, the embedded default: the ``stats_cells`` table of the state
  database (SQLite or PostgreSQL), so that the demo and the dashboards need nothing else.
- :class:`Influx1Store`: InfluxDB 1.x, line protocol to ``/write``, InfluxQL from ``/query``.
- :class:`Influx2Store`: InfluxDB 2.x/3.x and compatible servers through the official
  ``influxdb-client`` (asynchronous API); reads in InfluxQL from the v1-compatible
  ``/query`` endpoint those servers answer.

The measurement and tag schema is docs/STATISTICS.md: tags are places and periods only,
fields are counts and sums; a MAC or a pseudonym has no way in, since a :class:`Cell`
cannot carry one. :class:`BatchWriter` sends cells in batches from a bounded buffer and
retries with capped, jittered backoff; it drops the oldest cells (logged and counted)
only when the buffer is full.
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import logging
import random
from collections.abc import Collection, Sequence
from typing import Any, Protocol
from zoneinfo import ZoneInfo

import aiohttp
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from controller.stats._core import day_bounds
from controller.stats.models import FLOW_FIELDS, PRESENCE_FIELDS, Cell
from controller.storage import Database
from controller.storage.schema import stats_cells

__all__ = [
    "BatchWriter",
    "Influx1Store",
    "Influx2Store",
    "SqlStatsStore",
    "StatsStore",
    "StoreError",
    "line_protocol",
]

logger = logging.getLogger(__name__)

MEASUREMENTS = {"presence": "wifi_presence", "flow": "wifi_flow"}


class StoreError(Exception):
    """A store refused or could not take a write or a read."""


class StatsStore(Protocol):
    """What every statistics store does."""

    async def write(self, cells: Sequence[Cell]) -> None:
        """Store cells (idempotent: a cell written twice is stored once)."""

    async def read_day(self, day: str) -> list[Cell]:
        """Every stored cell of local day ``day``."""

    async def read_period(
        self,
        first_day: str,
        last_day: str,
        *,
        scopes: Collection[str],
        places: Collection[str] | None = None,
        period: str | None = None,
    ) -> list[Cell]:
        """The cells of a place over a period, in one query per measurement.

        Args:
            first_day: the first local day, ``YYYY-MM-DD``.
            last_day: the last local day (included).
            scopes: the scopes wanted (``territory``, ``commune``, ``hotspot``, ``flow``).
            places: None for every place; else INSEE codes (``""`` is the territory):
                presence cells of those places, flows from or to one of them.
            period: ``day`` or ``hour`` only (None: both).
        """

    async def aclose(self) -> None:
        """Release connections."""


def _reraise_cancel() -> None:
    # A timeout seen while this task is being cancelled is the cancellation: let it go.
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


# -------------------------------------------------------------------------- line protocol


def _tag(value: str) -> str:
    # Line protocol: commas, spaces and equal signs in tag values are backslash-escaped.
    return value.replace("\\", "\\\\").replace(",", "\\,").replace(" ", "\\ ").replace("=", "\\=")


def _tags(cell: Cell) -> list[tuple[str, str]]:
    if cell.kind == "flow":
        return [("destination", cell.destination), ("origin", cell.insee), ("period", cell.period)]
    tags = [("ap", cell.ap_id), ("insee", cell.insee), ("period", cell.period)]
    tags.append(("scope", cell.scope))
    return [(k, v) for k, v in tags if v]


def line_protocol(cell: Cell) -> str:
    """One cell as one InfluxDB line (integer fields, time in seconds)."""
    tags = ",".join(f"{k}={_tag(v)}" for k, v in _tags(cell))
    fields = ",".join(f"{k}={int(v)}i" for k, v in cell.values.items())
    return f"{MEASUREMENTS[cell.kind]},{tags} {fields} {cell.start}"


# -------------------------------------------------------------------------- embedded SQL


class SqlStatsStore:
    """Cells in the state database's ``stats_cells`` table."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def write(self, cells: Sequence[Cell]) -> None:
        """Upsert cells (one transaction)."""
        if not cells:
            return
        rows = [_row(c) for c in cells]
        mod: Any = postgresql if self.db.dialect == "postgresql" else sqlite
        keys = ["kind", "scope", "period", "start", "insee", "ap_id", "destination"]
        try:
            async with self.db.begin() as conn:
                for i in range(0, len(rows), 500):
                    stmt = mod.insert(stats_cells).values(rows[i : i + 500])
                    update = {c: stmt.excluded[c] for c in rows[0] if c not in keys}
                    await conn.execute(stmt.on_conflict_do_update(index_elements=keys, set_=update))
        except sa.exc.SQLAlchemyError as exc:
            raise StoreError(f"SQL store write failed: {exc.__class__.__name__}") from exc

    async def read_day(self, day: str) -> list[Cell]:
        """The stored cells of ``day``."""
        return await self._fetch(sa.select(stats_cells).where(stats_cells.c.day == day))

    async def read_period(
        self,
        first_day: str,
        last_day: str,
        *,
        scopes: Collection[str],
        places: Collection[str] | None = None,
        period: str | None = None,
    ) -> list[Cell]:
        """One query over the place and period indexes (``ix_stats_cells_place``,
        ``ix_stats_cells_destination``)."""
        t = stats_cells.c
        where = [t.scope.in_(list(scopes)), t.day >= first_day, t.day <= last_day]
        if period is not None:
            where.append(t.period == period)
        if places is None:
            query: Any = sa.select(stats_cells).where(*where)
        else:
            codes = list(places)
            # Flows into a place come through the destination index; the rest (presence
            # of the places, flows out of them) through the place index.
            query = sa.union_all(
                sa.select(stats_cells).where(*where, t.insee.in_(codes)),
                sa.select(stats_cells).where(
                    *where,
                    t.scope == "flow",
                    t.destination.in_(codes),
                    t.insee.not_in(codes),
                ),
            )
        return await self._fetch(query)

    async def _fetch(self, query: sa.Executable) -> list[Cell]:
        """The cells of the ``stats_cells`` rows a SELECT returns."""
        async with self.db.connect() as conn:
            result = await conn.execute(query)
            keys = list(result.keys())
            rows = result.all()
        return _cells(keys, rows)

    async def aclose(self) -> None:
        """Nothing to release: the database belongs to the caller."""


def _cells(keys: list[str], rows: Sequence[Any]) -> list[Cell]:
    """Rows of ``stats_cells`` as cells (by position: a year of rows converts quickly)."""
    at = {k: i for i, k in enumerate(keys)}
    kind, scope, period, start, day = at["kind"], at["scope"], at["period"], at["start"], at["day"]
    insee, ap_id, dest, noised = at["insee"], at["ap_id"], at["destination"], at["noised"]
    presence = [(n, at[n]) for n in PRESENCE_FIELDS]
    flow = [(n, at[n]) for n in FLOW_FIELDS]
    out = []
    for r in rows:
        t = tuple(r)
        fields = flow if t[kind] == "flow" else presence
        out.append(
            Cell(
                t[kind],
                t[scope],
                t[period],
                int(t[start]),
                t[day],
                t[insee],
                t[ap_id],
                t[dest],
                {n: int(t[i]) for n, i in fields},
                bool(t[noised]),
            )
        )
    return out


def _row(c: Cell) -> dict[str, Any]:
    row: dict[str, Any] = {
        "kind": c.kind,
        "scope": c.scope,
        "period": c.period,
        "start": c.start,
        "day": c.day,
        "insee": c.insee,
        "ap_id": c.ap_id,
        "destination": c.destination,
        "noised": c.noised,
    }
    for name in PRESENCE_FIELDS:
        row[name] = c.values.get(name, 0)
    return row


# -------------------------------------------------------------------------- InfluxQL reads


def _cells_from_influxql(
    answer: dict[str, Any], kind: str, day: str | None, tz: ZoneInfo
) -> list[Cell]:
    # ``day`` None: each cell's local day comes from its start (a read over a period).
    out: list[Cell] = []
    for result in answer.get("results", []):
        if "error" in result:
            raise StoreError(f"InfluxQL error: {result['error']}")
        for series in result.get("series", []):
            cols: list[str] = series["columns"]
            for values in series["values"]:
                rec = dict(zip(cols, values, strict=True))
                start = int(rec.pop("time"))
                cell_day = day if day is not None else day_of(start, tz)
                tags = {
                    k: rec.pop(k) or ""
                    for k in ("ap", "insee", "period", "scope", "origin", "destination")
                    if k in rec
                }
                fields = {k: int(v) for k, v in rec.items() if v is not None}
                if kind == "flow":
                    out.append(
                        Cell(
                            "flow",
                            "flow",
                            "day",
                            start,
                            cell_day,
                            tags.get("origin", ""),
                            "",
                            tags.get("destination", ""),
                            fields,
                        )
                    )
                else:
                    out.append(
                        Cell(
                            "presence",
                            tags.get("scope", ""),
                            tags.get("period", ""),
                            start,
                            cell_day,
                            tags.get("insee", ""),
                            tags.get("ap", ""),
                            "",
                            {n: fields.get(n, 0) for n in PRESENCE_FIELDS},
                        )
                    )
    return out


def _influxql_select(kind: str, where: list[str]) -> str:
    return f"SELECT * FROM {MEASUREMENTS[kind]} WHERE {' AND '.join(where)}"


def _influxql_days(first_day: str, last_day: str, tz: ZoneInfo) -> list[str]:
    """The conditions on time of the local days ``first_day`` to ``last_day``."""
    start, _ = day_bounds(first_day, tz)
    _, end = day_bounds(last_day, tz)
    return [f"time >= {int(start)}s", f"time < {int(end)}s"]


def _influxql_day(day: str, tz: ZoneInfo) -> dict[str, str]:
    where = _influxql_days(day, day, tz)
    return {m: _influxql_select(m, where) for m in MEASUREMENTS}


def _quote(value: str) -> str:
    # An InfluxQL string literal: backslashes and single quotes escaped.
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _any_of(tag: str, values: Collection[str]) -> str:
    return "(" + " OR ".join(f"{tag} = {_quote(v)}" for v in values) + ")"


def _influxql_period(
    first_day: str,
    last_day: str,
    tz: ZoneInfo,
    scopes: Collection[str],
    places: Collection[str] | None,
    period: str | None,
) -> dict[str, str]:
    """One InfluxQL statement per measurement holding a wanted scope."""
    base = _influxql_days(first_day, last_day, tz)
    if period is not None:
        base.append(f"period = {_quote(period)}")
    out: dict[str, str] = {}
    presence = [s for s in scopes if s != "flow"]
    if presence:
        # A territory cell has no insee tag: ``insee = ''`` matches it in InfluxQL.
        where = [*base, _any_of("scope", presence)]
        if places is not None:
            where.append(_any_of("insee", places))
        out["presence"] = _influxql_select("presence", where)
    if "flow" in scopes:
        where = list(base)
        if places is not None:
            codes = [p for p in places if p] or [""]
            where.append(f"({_any_of('origin', codes)} OR {_any_of('destination', codes)})")
        out["flow"] = _influxql_select("flow", where)
    return out


class _InfluxQLReader:
    url: str
    database: str
    tz: ZoneInfo
    _http: aiohttp.ClientSession

    def _auth_headers(self) -> dict[str, str]:
        return {}

    def _auth_params(self) -> dict[str, str]:
        return {}

    async def query(self, q: str) -> dict[str, Any]:
        """Run one InfluxQL statement; the JSON answer."""
        params = {"db": self.database, "q": q, "epoch": "s", **self._auth_params()}
        try:
            async with self._http.post(
                f"{self.url}/query", data=params, headers=self._auth_headers()
            ) as resp:
                if resp.status != 200:
                    raise StoreError(
                        f"InfluxQL query: HTTP {resp.status}: {(await resp.text())[:200]}"
                    )
                answer: dict[str, Any] = await resp.json()
                return answer
        except (aiohttp.ClientError, TimeoutError) as exc:
            _reraise_cancel()
            raise StoreError(f"InfluxQL query failed: {exc!r}") from exc

    async def read_day(self, day: str) -> list[Cell]:
        """Every cell of ``day``, read back with InfluxQL."""
        return await self._fetch(_influxql_day(day, self.tz), day)

    async def read_period(
        self,
        first_day: str,
        last_day: str,
        *,
        scopes: Collection[str],
        places: Collection[str] | None = None,
        period: str | None = None,
    ) -> list[Cell]:
        """The cells of places over a period: one InfluxQL query per measurement."""
        return await self._fetch(
            _influxql_period(first_day, last_day, self.tz, scopes, places, period), None
        )

    async def _fetch(self, queries: dict[str, str], day: str | None) -> list[Cell]:
        """The cells of one InfluxQL statement per measurement, in turn (``day`` None:
        each cell's local day from its start)."""
        out: list[Cell] = []
        for kind, q in queries.items():
            out.extend(_cells_from_influxql(await self.query(q), kind, day, self.tz))
        return out


class Influx1Store(_InfluxQLReader):
    """InfluxDB 1.x: ``POST /write?db=`` in line protocol, InfluxQL reads."""

    def __init__(
        self,
        url: str,
        database: str,
        tz: ZoneInfo,
        username: str | None = None,
        password: str | None = None,
        timeout_s: float = 30.0,
    ) -> None:
        self.url = url.rstrip("/")
        self.database = database
        self.tz = tz
        self._user = (username, password)
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s))

    def _auth_params(self) -> dict[str, str]:
        user, password = self._user
        return {"u": user, "p": password or ""} if user else {}

    async def create_database(self) -> None:
        """``CREATE DATABASE`` (idempotent in InfluxDB 1.x)."""
        await self.query(f'CREATE DATABASE "{self.database}"')

    async def write(self, cells: Sequence[Cell]) -> None:
        """One POST of every cell in line protocol."""
        if not cells:
            return
        body = "\n".join(line_protocol(c) for c in cells).encode()
        params = {"db": self.database, "precision": "s", **self._auth_params()}
        try:
            async with self._http.post(f"{self.url}/write", params=params, data=body) as resp:
                if resp.status != 204:
                    raise StoreError(
                        f"InfluxDB write: HTTP {resp.status}: {(await resp.text())[:200]}"
                    )
        except (aiohttp.ClientError, TimeoutError) as exc:
            _reraise_cancel()
            raise StoreError(f"InfluxDB write failed: {exc!r}") from exc

    async def aclose(self) -> None:
        """Close the HTTP session."""
        await self._http.close()


class Influx2Store(_InfluxQLReader):
    """InfluxDB 2.x/3.x and compatible servers through ``influxdb-client`` (async)."""

    def __init__(
        self, url: str, bucket: str, org: str, token: str, tz: ZoneInfo, timeout_s: float = 30.0
    ) -> None:
        from influxdb_client.client.influxdb_client_async import InfluxDBClientAsync

        self.url = url.rstrip("/")
        self.database = bucket
        self.org = org
        self.tz = tz
        self._token = token
        self._client = InfluxDBClientAsync(
            url=self.url, token=token, org=org, timeout=int(timeout_s * 1000)
        )
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s))

    def _auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Token {self._token}"}

    async def write(self, cells: Sequence[Cell]) -> None:
        """One write of every cell through the client's asynchronous write API."""
        if not cells:
            return
        from influxdb_client.client.exceptions import InfluxDBError
        from influxdb_client.domain.write_precision import WritePrecision

        lines = [line_protocol(c) for c in cells]
        try:
            await self._client.write_api().write(
                bucket=self.database,
                org=self.org,
                record=lines,
                write_precision=WritePrecision.S,  # type: ignore[arg-type]
            )
        except (InfluxDBError, aiohttp.ClientError, OSError, TimeoutError) as exc:
            _reraise_cancel()
            raise StoreError(f"InfluxDB v2 write failed: {exc}") from exc

    async def aclose(self) -> None:
        """Close the client and the HTTP session."""
        await self._client.close()  # type: ignore[no-untyped-call]
        await self._http.close()


# -------------------------------------------------------------------------- batching


class BatchWriter:
    """Cells to a store in batches, from a bounded buffer, with retries.

    Args:
        store: where to write.
        batch_size: cells per write.
        max_cells: buffer bound; beyond it the oldest cells are dropped (and counted).
        backoff_cap_s: cap of the jittered retry delay.
    """

    def __init__(
        self,
        store: StatsStore,
        batch_size: int = 5000,
        max_cells: int = 500_000,
        backoff_cap_s: float = 30.0,
    ) -> None:
        self.store = store
        self.batch_size = batch_size
        self.max_cells = max_cells
        self.backoff_cap_s = backoff_cap_s
        self._buffer: collections.deque[Cell] = collections.deque()
        self._ready = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self.written = 0
        self.dropped = 0
        self.failures = 0

    def __len__(self) -> int:
        return len(self._buffer)

    def submit(self, cells: Sequence[Cell]) -> None:
        """Queue cells for writing (never waits)."""
        self._buffer.extend(cells)
        over = len(self._buffer) - self.max_cells
        if over > 0:
            for _ in range(over):
                self._buffer.popleft()
            self.dropped += over
            logger.warning("statistics buffer full: %d oldest cells dropped", over)
        if self._buffer:
            self._idle.clear()
            self._ready.set()

    async def run(self) -> None:
        """Write until cancelled."""
        attempt = 0
        while True:
            await self._ready.wait()
            if not self._buffer:
                self._ready.clear()
                self._idle.set()
                continue
            batch = [self._buffer.popleft() for _ in range(min(self.batch_size, len(self._buffer)))]
            try:
                await self.store.write(batch)
            except StoreError as exc:
                self.failures += 1
                attempt += 1
                # Back at the front, in order; the bound applies again (oldest dropped).
                self._buffer.extendleft(reversed(batch))
                self.submit(())
                delay = random.uniform(0, min(self.backoff_cap_s, 0.5 * 1.5**attempt))
                logger.warning("statistics write failed (retry in %.1f s): %s", delay, exc)
                await asyncio.sleep(delay)
                continue
            attempt = 0
            self.written += len(batch)

    async def drained(self) -> None:
        """Wait until every submitted cell is written (or dropped)."""
        await self._idle.wait()


def day_of(t: int, tz: ZoneInfo) -> str:
    """The local date of a cell start."""
    return dt.datetime.fromtimestamp(t, tz).date().isoformat()
