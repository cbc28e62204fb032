"""borne's RADIUS server: authentication and accounting for third-party gateways.

``_codec`` (packet bytes and cryptography) and ``_core`` (server state machine: checks,
duplicate cache, replies) are sans-IO; ``_store`` and ``_policy`` hold the database
rules; ``_io`` holds the asyncio adapters. ``open_server`` wires them for the controller.
"""

from __future__ import annotations

from controller.config import Settings
from controller.sessions import SessionLedger
from controller.storage import Database
from radius._codec import Attr, Code
from radius._core import AccessLimits, AcctRecord, AcctStatus, NasClient, ServerCore
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
    "LocalProtocolError",
    "NasClient",
    "NasRegistry",
    "NasRegistryError",
    "RadiusError",
    "RadiusServer",
    "RemoteProtocolError",
    "ServerCore",
    "build_server",
]


async def build_server(settings: Settings, db: Database) -> RadiusServer:
    """A RADIUS server for the registered NAS clients (call ``run`` to serve)."""
    clients = await NasRegistry(db).clients()
    r = settings.radius
    return RadiusServer(
        ServerCore(clients),
        db,
        AccountingStore(SessionLedger(settings.sessions)),
        AccessPolicy(db, settings),
        queue_size=r.queue_size,
        batch_max=r.batch_max,
    )
