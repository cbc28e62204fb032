"""Registry of communes and access points.

The communes of the Lot ship with borne (``controller/data``, IGN Admin Express COG 2018,
Licence Ouverte); any INSEE code is accepted since communes merge over the years. Each
access point has its own command key: enrolled explicitly, or derived from the
controller's master key (``derive_key``) when none is stored.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import hmac
import time
from dataclasses import dataclass
from importlib import resources
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from agents.contract import AP_ID_RE
from controller.storage import Database
from controller.storage.schema import access_points, ap_key_rotations, communes

__all__ = ["Commune", "Registry", "RegistryError", "derive_key", "lot_communes"]


class RegistryError(ValueError):
    """A commune or access point cannot be registered as given."""


@dataclass(frozen=True)
class Commune:
    """A commune of the territory."""

    insee: str
    name: str
    lon: float | None
    lat: float | None


@functools.cache
def _lot_communes() -> tuple[Commune, ...]:
    text = resources.files("controller.data").joinpath("lot-communes.csv").read_text("utf-8")
    return tuple(
        Commune(r["insee_code"], r["name"], float(r["lon"]), float(r["lat"]))
        for r in csv.DictReader(text.splitlines())
    )


def lot_communes() -> list[Commune]:
    """The 320 communes of the Lot shipped with borne (read once, then cached)."""
    return list(_lot_communes())


def derive_key(master: str, ap_id: str) -> str:
    """The command key of ``ap_id`` derived from the controller's master key."""
    return hmac.new(master.encode(), b"borne/ap-key/" + ap_id.encode(), hashlib.sha256).hexdigest()


_ROTATIONS = sa.select(
    ap_key_rotations.c.ap_id,
    ap_key_rotations.c.new_key,
    ap_key_rotations.c.old_key,
    ap_key_rotations.c.grace_until,
).where(ap_key_rotations.c.finished_at.is_(None))


def _rotation(row: Any) -> tuple[bytes | None, bytes | None, float]:
    new = row.new_key.encode() if row.new_key else None
    old = row.old_key.encode() if row.old_key else None
    return new, old, float(row.grace_until)


def _upsert(dialect: str, table: sa.Table, rows: list[dict[str, Any]], key: str) -> Any:
    mod = postgresql if dialect == "postgresql" else sqlite
    stmt = mod.insert(table).values(rows)
    cols = {c: stmt.excluded[c] for c in rows[0] if c != key}
    return stmt.on_conflict_do_update(index_elements=[key], set_=cols)


class Registry:
    """Communes and access points, with an in-memory cache of AP keys for the hot path."""

    def __init__(self, db: Database, master_key: str) -> None:
        self._db = db
        self._master = master_key
        self._keys: dict[str, bytes] = {}
        # Credential rotations in progress: (new key not yet confirmed, old key, the end
        # of the old key's grace period) per AP (controller.enroll).
        self._rotations: dict[str, tuple[bytes | None, bytes | None, float]] = {}

    async def load(self) -> None:
        """Fill the key cache from the database (call at start)."""
        async with self._db.connect() as conn:
            rows = (
                await conn.execute(sa.select(access_points.c.ap_id, access_points.c.command_key))
            ).all()
            rotations = (await conn.execute(_ROTATIONS)).all()
        self._keys = {r.ap_id: self._key_of(r.ap_id, r.command_key) for r in rows}
        self._rotations = {r.ap_id: _rotation(r) for r in rotations}

    async def reload(self, ap_id: str) -> None:
        """Re-read one AP's keys (after a rotation step, possibly by another process)."""
        async with self._db.connect() as conn:
            row = (
                await conn.execute(
                    sa.select(access_points.c.command_key).where(access_points.c.ap_id == ap_id)
                )
            ).first()
            rot = (await conn.execute(_ROTATIONS.where(ap_key_rotations.c.ap_id == ap_id))).first()
        if row is None:
            self._keys.pop(ap_id, None)
        else:
            self._keys[ap_id] = self._key_of(ap_id, row.command_key)
        if rot is None:
            self._rotations.pop(ap_id, None)
        else:
            self._rotations[ap_id] = _rotation(rot)

    def accepted_keys(self, ap_id: str, now: float | None = None) -> tuple[bytes, ...] | None:
        """Every key an AP's message may be signed with now, or None for an unknown AP.

        The current key, plus during a rotation the new key not yet confirmed and the
        old key until the end of its grace period.
        """
        key = self._keys.get(ap_id)
        if key is None:
            return None
        rot = self._rotations.get(ap_id)
        if rot is None:
            return (key,)
        new, old, until = rot
        now = time.time() if now is None else now
        extra = [k for k in (new,) if k] + [k for k in (old,) if k and now <= until]
        return (key, *extra)

    def pending_key(self, ap_id: str) -> bytes | None:
        """The new key of a rotation the AP has not confirmed yet."""
        rot = self._rotations.get(ap_id)
        return rot[0] if rot is not None else None

    def _key_of(self, ap_id: str, stored: str | None) -> bytes:
        return (stored or derive_key(self._master, ap_id)).encode()

    def key_for(self, ap_id: str) -> bytes | None:
        """The command key of a registered AP, or None (sync: used by the decoder)."""
        return self._keys.get(ap_id)

    async def add_communes(self, items: list[Commune]) -> None:
        """Insert or update communes."""
        for c in items:
            if not (len(c.insee) == 5 and c.insee[:2].isalnum() and c.insee[2:].isdigit()):
                raise RegistryError(f"invalid INSEE code {c.insee!r}")
        async with self._db.begin() as conn:
            for i in range(0, len(items), 200):
                rows = [
                    {"insee": c.insee, "name": c.name, "lon": c.lon, "lat": c.lat}
                    for c in items[i : i + 200]
                ]
                await conn.execute(_upsert(conn.dialect.name, communes, rows, "insee"))

    async def add_access_point(
        self,
        ap_id: str,
        insee: str,
        name: str,
        *,
        lon: float | None = None,
        lat: float | None = None,
        command_key: str | None = None,
    ) -> None:
        """Register (or update) an access point of commune ``insee``.

        Raises:
            RegistryError: bad id, or a commune the registry does not know.
        """
        if not AP_ID_RE.match(ap_id):
            raise RegistryError(f"invalid access point id {ap_id!r}")
        async with self._db.begin() as conn:
            known = (
                await conn.execute(sa.select(communes.c.insee).where(communes.c.insee == insee))
            ).first()
            if known is None:
                raise RegistryError(f"unknown commune {insee!r}: add it first")
            row = {
                "ap_id": ap_id,
                "insee": insee,
                "name": name,
                "lon": lon,
                "lat": lat,
                "command_key": command_key,
                "created_at": time.time(),
            }
            await conn.execute(_upsert(conn.dialect.name, access_points, [row], "ap_id"))
        self._keys[ap_id] = self._key_of(ap_id, command_key)

    async def access_point(self, ap_id: str) -> sa.Row[Any] | None:
        """One access point's row."""
        async with self._db.connect() as conn:
            return (
                await conn.execute(sa.select(access_points).where(access_points.c.ap_id == ap_id))
            ).first()

    async def access_points(self) -> list[sa.Row[Any]]:
        """Every access point with its commune name."""
        async with self._db.connect() as conn:
            return list(
                (
                    await conn.execute(
                        sa.select(access_points, communes.c.name.label("commune"))
                        .join(communes, communes.c.insee == access_points.c.insee)
                        .order_by(access_points.c.ap_id)
                    )
                ).all()
            )

    def command_key(self, ap_id: str) -> str:
        """The key to write into an agent's configuration.

        Raises:
            RegistryError: the access point is not registered.
        """
        key = self._keys.get(ap_id)
        if key is None:
            raise RegistryError(f"unknown access point {ap_id!r}")
        return key.decode()
