"""``borne voucher ...`` and ``borne portal ...``: voucher batches and legal texts.

``borne voucher create`` issues a batch and writes its printable sheet (the codes are
shown only then: the database keeps keyed hashes); ``list`` shows the batches and their
use; ``revoke`` withdraws a batch. ``borne portal legal-publish`` publishes a version of a
commune's terms and GDPR notice from a JSON file (``captive_portal._legal``).

Heavy imports happen inside the command functions, so that ``borne --help`` stays quick.
Messages are in French first, then English.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from captive_portal.store import PortalStore

__all__ = ["register", "render_sheet"]


def register(subparsers: Any) -> None:
    """Add ``voucher`` and ``portal`` and their subcommands to ``borne``'s parser."""
    v = subparsers.add_parser("voucher", help="codes d'accès au Wi-Fi / Wi-Fi vouchers")
    sub = v.add_subparsers(dest="voucher_command", required=True)
    create = sub.add_parser("create", help="émettre un lot de codes / issue a batch")
    create.add_argument("--count", type=int, required=True, help="nombre / how many")
    create.add_argument(
        "--minutes", type=int, required=True, help="durée dès la 1re utilisation / time"
    )
    create.add_argument("--quota-mb", type=int, default=0, help="données (Mo) / data (MB)")
    create.add_argument("--up-kbps", type=int, default=0, help="débit montant / upload rate")
    create.add_argument("--down-kbps", type=int, default=0, help="débit descendant / download")
    create.add_argument(
        "--expires", required=True, help="date limite AAAA-MM-JJ (UTC) / last day (UTC)"
    )
    create.add_argument(
        "--devices", type=int, default=1, help="appareils par code / devices per code"
    )
    create.add_argument("--insee", default=None, help="commune seule / only this commune")
    create.add_argument("--note", default=None, help="note (ex. office de tourisme)")
    create.add_argument(
        "--sheet", required=True, help="planche à imprimer (HTML) / printable sheet (HTML)"
    )
    create.add_argument("-c", "--config", help="fichier TOML du contrôleur / controller TOML")
    create.set_defaults(func=_cmd_create)
    ls = sub.add_parser("list", help="lister les lots / list the batches")
    ls.add_argument("-c", "--config", help="fichier TOML du contrôleur / controller TOML")
    ls.set_defaults(func=_cmd_list)
    rv = sub.add_parser("revoke", help="retirer un lot / withdraw a batch")
    rv.add_argument("batch", help="identifiant du lot / batch id")
    rv.add_argument("-c", "--config", help="fichier TOML du contrôleur / controller TOML")
    rv.set_defaults(func=_cmd_revoke)

    p = subparsers.add_parser("portal", help="portail captif / captive portal")
    psub = p.add_subparsers(dest="portal_command", required=True)
    pub = psub.add_parser(
        "legal-publish",
        help="publier les textes légaux d'une commune / publish a commune's legal texts",
    )
    pub.add_argument("--insee", required=True, help="code INSEE, ou * pour le défaut / or *")
    pub.add_argument("--version", required=True, help="version (ex. 2026-12-01)")
    pub.add_argument("file", help="fichier JSON (docs/PORTAL.md) / JSON file")
    pub.add_argument("-c", "--config", help="fichier TOML du contrôleur / controller TOML")
    pub.set_defaults(func=_cmd_legal_publish)


def _settings(path: str | None) -> Any:
    from controller.config import settings_or_exit

    return settings_or_exit(path)


@contextlib.asynccontextmanager
async def _portal_store(settings: Any) -> AsyncIterator[PortalStore]:
    """The portal's store on the controller's database, closed on the way out."""
    from captive_portal.store import PortalStore
    from controller.storage import open_database

    db = await open_database(settings.database.url.get_secret_value())
    try:
        yield PortalStore(db, settings.portal.secret_key.get_secret_value())
    finally:
        await db.aclose()


def _duration(minutes: int, lang: str) -> str:
    from captive_portal._i18n import format_duration, load_translations

    return format_duration(minutes, load_translations(languages=(lang,))[lang])


def render_sheet(
    *,
    network_name: str,
    batch_id: str,
    codes: list[str],
    minutes: int,
    quota_mb: int,
    expires_at: float,
    max_devices: int,
    commune: str | None,
) -> str:
    """The printable sheet of a batch: one card per code (French and English)."""
    import jinja2

    from captive_portal._vouchers import format_code

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"), autoescape=True
    )
    return env.get_template("voucher_sheet.html").render(
        network_name=network_name,
        batch_id=batch_id,
        codes=[format_code(c) for c in codes],
        duration_fr=_duration(minutes, "fr"),
        duration_en=_duration(minutes, "en"),
        quota_mb=quota_mb,
        expires=time.strftime("%d/%m/%Y", time.gmtime(expires_at)),
        max_devices=max_devices,
        commune=commune,
    )


def _last_second(day: str) -> float:
    date = datetime.date.fromisoformat(day)
    end = datetime.datetime.combine(date, datetime.time(23, 59, 59), tzinfo=datetime.UTC)
    return end.timestamp()


def _cmd_create(args: argparse.Namespace) -> int:
    from captive_portal._vouchers import VoucherPolicy

    settings = _settings(args.config)
    try:
        expires_at = _last_second(args.expires)
    except ValueError:
        print("date invalide (AAAA-MM-JJ) / invalid date (YYYY-MM-DD)", file=sys.stderr)
        return 2
    policy = VoucherPolicy(
        minutes=args.minutes,
        quota_mb=args.quota_mb,
        up_kbps=args.up_kbps,
        down_kbps=args.down_kbps,
        expires_at=expires_at,
        max_devices=args.devices,
        insee=args.insee,
    )

    async def go() -> int:
        async with _portal_store(settings) as store:
            try:
                batch, codes = await store.issue_batch(
                    policy, args.count, now=time.time(), note=args.note
                )
            except ValueError as exc:
                print(f"lot refusé / batch refused: {exc}", file=sys.stderr)
                return 2
        html = render_sheet(
            network_name=settings.portal.network_name,
            batch_id=batch.id,
            codes=codes,
            minutes=policy.minutes,
            quota_mb=policy.quota_mb,
            expires_at=policy.expires_at,
            max_devices=policy.max_devices,
            commune=args.insee,
        )
        await asyncio.to_thread(Path(args.sheet).write_text, html, "utf-8")
        print(
            f"lot {batch.id} : {len(codes)} codes, planche {args.sheet} / "
            f"batch {batch.id}: {len(codes)} codes, sheet {args.sheet}"
        )
        return 0

    return asyncio.run(go())


def _cmd_list(args: argparse.Namespace) -> int:
    settings = _settings(args.config)

    async def go() -> int:
        async with _portal_store(settings) as store:
            rows = await store.batches()
        print("lot/batch  codes  utilisés/used  retirés/revoked  minutes  fin/expires  note")
        for batch, used, revoked in rows:
            day = time.strftime("%Y-%m-%d", time.gmtime(batch.policy.expires_at))
            print(
                f"{batch.id:9}  {batch.count:5}  {used:13}  {revoked:15}  "
                f"{batch.policy.minutes:7}  {day}   {batch.note or ''}"
            )
        return 0

    return asyncio.run(go())


def _cmd_revoke(args: argparse.Namespace) -> int:
    settings = _settings(args.config)

    async def go() -> int:
        async with _portal_store(settings) as store:
            count = await store.revoke_batch(args.batch, now=time.time())
        print(f"{count} codes retirés / {count} vouchers revoked")
        return 0 if count else 1

    return asyncio.run(go())


def _cmd_legal_publish(args: argparse.Namespace) -> int:
    import sqlalchemy as sa

    from captive_portal._legal import validate_legal

    settings = _settings(args.config)
    try:
        content = validate_legal(json.loads(Path(args.file).read_text("utf-8")))
    except (OSError, ValueError) as exc:
        print(f"textes refusés / texts refused: {exc}", file=sys.stderr)
        return 2

    async def go() -> int:
        async with _portal_store(settings) as store:
            try:
                await store.publish_legal(args.insee, args.version, content, now=time.time())
            except sa.exc.IntegrityError:
                print("cette version existe déjà / this version exists already", file=sys.stderr)
                return 2
        print(f"version {args.version} publiée / published ({args.insee})")
        return 0

    return asyncio.run(go())
