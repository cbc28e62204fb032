"""borne's RADIUS server: authentication and accounting for third-party gateways.

``_codec`` (packet bytes and cryptography) and ``_core`` (server state machine: checks,
duplicate cache, replies) are sans-IO; ``_store`` and ``_policy`` hold the database
rules; ``_io`` holds the asyncio adapters. ``open_server`` wires them for the controller.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from controller.config import Settings
    from controller.storage import Database
    from radius._codec import Attr, Code
    from radius._core import AccessLimits, AcctRecord, AcctStatus, NasClient, ServerCore
    from radius._devices import KnownDevices, Terms
    from radius._io import DynAuthClient, DynAuthResult, RadiusServer
    from radius._policy import AccessPolicy, Decision
    from radius._store import AccountingStore, NasRegistry, NasRegistryError
    from radius.errors import LocalProtocolError, RadiusError, RemoteProtocolError

__all__ = [
    "AccessLimits",
    "AccessPolicy",
    "AccountingStore",
    "AcctRecord",
    "AcctStatus",
    "Attr",
    "Code",
    "Decision",
    "DynAuthClient",
    "DynAuthResult",
    "KnownDevices",
    "LocalProtocolError",
    "NasClient",
    "NasRegistry",
    "NasRegistryError",
    "RadiusError",
    "RadiusServer",
    "RemoteProtocolError",
    "ServerCore",
    "Terms",
    "build_server",
]


# Imported on first use: ``borne --help`` and ``borne agent`` must not load SQLAlchemy.
_HOMES = {
    "Attr": "radius._codec",
    "Code": "radius._codec",
    "AccessLimits": "radius._core",
    "AcctRecord": "radius._core",
    "AcctStatus": "radius._core",
    "NasClient": "radius._core",
    "ServerCore": "radius._core",
    "KnownDevices": "radius._devices",
    "Terms": "radius._devices",
    "DynAuthClient": "radius._io",
    "DynAuthResult": "radius._io",
    "RadiusServer": "radius._io",
    "AccessPolicy": "radius._policy",
    "Decision": "radius._policy",
    "AccountingStore": "radius._store",
    "NasRegistry": "radius._store",
    "NasRegistryError": "radius._store",
    "LocalProtocolError": "radius.errors",
    "RadiusError": "radius.errors",
    "RemoteProtocolError": "radius.errors",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'radius' has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)


async def build_server(settings: Settings, db: Database) -> RadiusServer:
    """A RADIUS server for the registered NAS clients (call ``run`` to serve)."""
    from controller.sessions import SessionLedger
    from radius._core import ServerCore
    from radius._io import DynAuthClient, RadiusServer
    from radius._policy import AccessPolicy, limits_at
    from radius._store import AccountingStore, NasRegistry

    registry = NasRegistry(db)
    clients = await registry.clients()
    r = settings.radius
    return RadiusServer(
        ServerCore(clients),
        db,
        AccountingStore(SessionLedger(settings.sessions)),
        AccessPolicy(db, settings),
        queue_size=r.queue_size,
        batch_max=r.batch_max,
        clients_loader=registry.clients,
        dynauth=DynAuthClient(db, timeout_s=r.coa_timeout_s, retries=r.coa_retries),
        quota_of=lambda insee: limits_at(settings, insee).radius_quota_mb * 1_000_000,
    )
