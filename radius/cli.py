"""``borne radius ...``: register NAS clients, list them, cut a session off (Disconnect),
forget a device remembered for territorial continuity.

Heavy imports happen inside the command functions, so that ``borne --help`` stays quick.
Messages are in French first, then English.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sys
from typing import Any

__all__ = ["register"]


def register(subparsers: Any) -> None:
    """Add ``radius`` and its subcommands to ``borne``'s parser."""
    r = subparsers.add_parser("radius", help="serveur RADIUS / RADIUS server")
    sub = r.add_subparsers(dest="radius_command", required=True)

    add = sub.add_parser(
        "nas-add",
        help="enregistrer une passerelle RADIUS (NAS) / register a RADIUS gateway (NAS)",
    )
    add.add_argument("nas_id", help="identifiant (celui de la borne) / id (the AP's)")
    add.add_argument("--insee", required=True, help="code INSEE de la commune / commune code")
    add.add_argument("--address", required=True, help="adresse IP source / source IP address")
    add.add_argument(
        "--secret", default=None, help="secret partagé (généré si absent) / shared secret"
    )
    add.add_argument("--coa-port", type=int, default=3799)
    add.add_argument(
        "--uam-secret",
        default=None,
        help="uamsecret de la passerelle UAM (CoovaChilli) / the UAM gateway's uamsecret",
    )
    add.add_argument("--name", default=None)
    add.add_argument("-c", "--config", help="fichier TOML du contrôleur / controller TOML")
    add.set_defaults(func=_cmd_nas_add)

    ls = sub.add_parser("nas-list", help="lister les NAS / list the NAS clients")
    ls.add_argument("-c", "--config", help="fichier TOML du contrôleur / controller TOML")
    ls.set_defaults(func=_cmd_nas_list)

    forget = sub.add_parser(
        "forget-device",
        help="oublier un appareil (continuité territoriale) / forget a device (continuity)",
    )
    forget.add_argument("mac", help="adresse MAC / MAC address (aa:bb:cc:dd:ee:ff)")
    forget.add_argument("-c", "--config", help="fichier TOML du contrôleur / controller TOML")
    forget.set_defaults(func=_cmd_forget_device)

    disc = sub.add_parser(
        "disconnect",
        help="couper une session (Disconnect-Request) / end a session (Disconnect-Request)",
    )
    disc.add_argument("--nas", required=True, help="identifiant du NAS / NAS id")
    disc.add_argument("--session-id", required=True, help="Acct-Session-Id")
    disc.add_argument("-c", "--config", help="fichier TOML du contrôleur / controller TOML")
    disc.set_defaults(func=_cmd_disconnect)


def _settings(path: str | None) -> Any:
    from controller.config import settings_or_exit

    return settings_or_exit(path)


def _cmd_nas_add(args: argparse.Namespace) -> int:
    from controller.registry import Registry, RegistryError, lot_communes
    from controller.storage import open_database
    from radius._store import NasRegistry, NasRegistryError

    settings = _settings(args.config)
    secret = args.secret or secrets.token_urlsafe(24)

    async def go() -> int:
        db = await open_database(settings.database.url.get_secret_value())
        try:
            reg = Registry(db, settings.command_master_key.get_secret_value())
            await reg.add_communes(await asyncio.to_thread(lot_communes))
            if await reg.access_point(args.nas_id) is None:
                await reg.add_access_point(args.nas_id, args.insee, args.name or args.nas_id)
            await NasRegistry(db).add(
                args.nas_id,
                args.address,
                secret,
                coa_port=args.coa_port,
                uam_secret=args.uam_secret,
            )
        except (RegistryError, NasRegistryError) as exc:
            print(f"borne radius nas-add : {exc}", file=sys.stderr)
            return 2
        finally:
            await db.aclose()
        print(f"NAS {args.nas_id} ({args.address}) enregistré / registered")
        if args.secret is None:
            print(f"secret partagé / shared secret: {secret}")
        return 0

    return asyncio.run(go())


def _cmd_nas_list(args: argparse.Namespace) -> int:
    from controller.storage import open_database
    from radius._store import NasRegistry

    settings = _settings(args.config)

    async def go() -> int:
        db = await open_database(settings.database.url.get_secret_value())
        try:
            for r in await NasRegistry(db).rows():
                uam = "UAM" if r.uam_secret else "-"
                print(f"{r.nas_id}\t{r.address}\tINSEE {r.insee}\tCoA {r.coa_port}\t{uam}")
        finally:
            await db.aclose()
        return 0

    return asyncio.run(go())


def _cmd_forget_device(args: argparse.Namespace) -> int:
    """A visitor's request (GDPR art. 17/21): the device is asked again everywhere."""
    from radius._codec import normalize_mac

    mac = normalize_mac(args.mac)
    if mac is None:
        print(f"pas une adresse MAC / not a MAC address: {args.mac!r}", file=sys.stderr)
        return 2
    from controller.storage import open_database
    from radius._devices import KnownDevices

    settings = _settings(args.config)

    async def go() -> int:
        db = await open_database(settings.database.url.get_secret_value())
        try:
            devices = KnownDevices(
                db,
                settings.radius.device_key.get_secret_value(),
                settings.portal.terms_version,
            )
            forgotten = await devices.forget(mac)
        finally:
            await db.aclose()
        if forgotten:
            print("appareil oublié / device forgotten")
        else:
            print("appareil inconnu / device not known")
        return 0

    return asyncio.run(go())


def _cmd_disconnect(args: argparse.Namespace) -> int:
    from controller.storage import open_database
    from radius._io import DynAuthClient
    from radius._store import NasRegistry

    settings = _settings(args.config)

    async def go() -> int:
        db = await open_database(settings.database.url.get_secret_value())
        try:
            rows = {r.nas_id: r for r in await NasRegistry(db).rows()}
            nas = rows.get(args.nas)
            if nas is None:
                print(f"NAS inconnu / unknown NAS: {args.nas}", file=sys.stderr)
                return 2
            r = settings.radius
            client = DynAuthClient(db, timeout_s=r.coa_timeout_s, retries=r.coa_retries)
            res = await client.send(
                nas.nas_id,
                nas.address,
                nas.coa_port,
                nas.secret.encode(),
                acct_session_id=args.session_id,
            )
        finally:
            await db.aclose()
        if res.ok:
            print("session coupée (Disconnect-ACK) / session ended (Disconnect-ACK)")
            return 0
        if res.ok is False:
            print(f"refusé par le NAS / refused by the NAS (Error-Cause {res.error_cause})")
            return 1
        print(f"pas de réponse du NAS / no answer from the NAS ({res.attempts} envois / sends)")
        return 1

    return asyncio.run(go())
