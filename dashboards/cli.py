"""``borne account ...``: dashboard accounts from the command line (the first admin too);
``borne dashboard assets install`` (the charting library, from npm) and ``borne dashboard
report`` (monthly reports by hand: a month missed, a commune added, again with --force).

Messages are in French first, then English. The password is read from the terminal
(twice, not echoed) or, with ``--password-stdin``, from the first line of standard input;
never from an argument, which other users of the machine could read in ``ps``.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["register"]


def _settings(path: str | None) -> Any:
    from controller.config import settings_or_exit

    return settings_or_exit(path)


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("Mot de passe / password: ")
    if getpass.getpass("Encore / again: ") != first:
        raise SystemExit("les mots de passe diffèrent / passwords differ")
    return first


async def _communes(args: argparse.Namespace) -> list[str]:
    """The INSEE codes given with ``--commune`` plus the members of ``--epci``."""
    codes = [c.strip().upper() for c in args.commune]
    if args.epci:
        from controller.inventory import InventoryError, parse_epci_table

        if not args.epci_file:
            raise SystemExit("--epci demande --epci-file / --epci needs --epci-file")
        text = await asyncio.to_thread(Path(args.epci_file).read_text, encoding="utf-8-sig")
        try:
            table = parse_epci_table(text)
        except InventoryError as exc:
            raise SystemExit(str(exc)) from exc
        members = [insee for insee, e in table.items() if e.siren == args.epci]
        if not members:
            raise SystemExit(f"EPCI {args.epci} absent de la table / not in the table")
        codes += members
    return codes


async def _add(args: argparse.Namespace) -> int:
    from controller.registry import lot_communes
    from controller.storage import open_database
    from dashboards._auth import (
        SECOND_FACTOR_ROLES,
        Role,
        hash_password,
        new_totp_secret,
        password_problem,
        totp_uri,
    )
    from dashboards.accounts import AccountError, AccountStore

    settings = _settings(args.config)
    role = Role(args.role)
    codes = await _communes(args)
    known = {c.insee for c in lot_communes()}
    unknown = sorted(set(codes) - known)
    if unknown:
        print(f"commune inconnue / unknown commune: {', '.join(unknown)}", file=sys.stderr)
        return 2
    password = _read_password(args.password_stdin)
    problem = password_problem(password)
    if problem is not None:
        print(f"mot de passe refusé / password refused: {problem}", file=sys.stderr)
        return 2
    secret = new_totp_secret() if role in SECOND_FACTOR_ROLES else None
    pw_hash = await asyncio.to_thread(hash_password, password)
    db = await open_database(settings.database.url.get_secret_value())
    try:
        store = AccountStore(db)
        await store.create(
            args.username,
            args.display_name or args.username,
            role,
            pw_hash,
            communes=codes,
            totp_secret=secret,
            now=time.time(),
        )
    except AccountError as exc:
        print(f"borne account add: {exc}", file=sys.stderr)
        return 2
    finally:
        await db.aclose()
    print(f"compte créé / account created: {args.username} ({role.value})")
    if secret is not None:
        print("secret TOTP (affiché une seule fois / shown once):")
        print(f"  {secret}")
        print(f"  {totp_uri(secret, args.username, settings.name)}")
    return 0


async def _list(args: argparse.Namespace) -> int:
    from controller.storage import open_database
    from dashboards.accounts import AccountStore

    settings = _settings(args.config)
    db = await open_database(settings.database.url.get_secret_value())
    try:
        rows = await AccountStore(db).accounts()
    finally:
        await db.aclose()
    for account, active in rows:
        state = "actif/active" if active else "désactivé/disabled"
        communes = ",".join(sorted(account.communes)) or "-"
        print(f"{account.username}\t{account.role.value}\t{state}\t{communes}")
    return 0


async def _set(args: argparse.Namespace) -> int:
    from controller.storage import open_database
    from dashboards._auth import hash_password, password_problem
    from dashboards.accounts import AccountError, AccountStore

    settings = _settings(args.config)
    pw_hash = None
    if args.account_command == "passwd":
        password = _read_password(args.password_stdin)
        problem = password_problem(password)
        if problem is not None:
            print(f"mot de passe refusé / password refused: {problem}", file=sys.stderr)
            return 2
        pw_hash = await asyncio.to_thread(hash_password, password)
    db = await open_database(settings.database.url.get_secret_value())
    try:
        store = AccountStore(db)
        if pw_hash is not None:
            await store.set_password(args.username, pw_hash)
        else:
            await store.set_active(args.username, args.account_command == "enable")
    except AccountError as exc:
        print(f"borne account {args.account_command}: {exc}", file=sys.stderr)
        return 2
    finally:
        await db.aclose()
    print(f"{args.username}: ok")
    return 0


async def _assets(args: argparse.Namespace) -> int:
    from dashboards.assets import ECHARTS_VERSION, AssetError, install

    directory = Path(args.dir) if args.dir else _settings(args.config).dashboard.assets_dir
    try:
        path = await asyncio.to_thread(install, directory, args.npm)
    except AssetError as exc:
        print(f"borne dashboard assets install: {exc}", file=sys.stderr)
        return 1
    print(f"echarts {ECHARTS_VERSION} installé / installed: {path}")
    return 0


async def _report(args: argparse.Namespace) -> int:
    from controller.registry import Registry
    from controller.service import Controller
    from controller.storage import open_database
    from dashboards.app import REPORTS, create_app
    from dashboards.reports import ReportError, parse_month

    settings = _settings(args.config)
    try:
        parse_month(args.month)
    except ReportError as exc:
        print(f"borne dashboard report: {exc}", file=sys.stderr)
        return 2
    if not args.all and not args.commune:
        print("--commune INSEE ou --all / --commune INSEE or --all", file=sys.stderr)
        return 2
    db = await open_database(settings.database.url.get_secret_value())
    try:
        registry = Registry(db, settings.command_master_key.get_secret_value())
        app = await asyncio.to_thread(create_app, Controller(settings, db, registry))
        scheduler = app[REPORTS]
        try:
            communes = (
                await scheduler.communes()
                if args.all
                else [c.strip().upper() for c in args.commune]
            )
            made = await scheduler.make(args.month, communes, force=args.force)
        finally:
            # Its cleanup closes the statistics store it opened (signals need a frozen app).
            app.freeze()
            await app.shutdown()
            await app.cleanup()
    finally:
        await db.aclose()
    print(f"{args.month}: {len(made)} rapport(s) établi(s) / report(s) made: {' '.join(made)}")
    return 1 if scheduler.failures else 0


def register(sub: Any) -> None:
    """Add ``account`` and ``dashboard`` to the ``borne`` command."""
    _register_dashboard(sub)
    from dashboards._auth import Role

    a = sub.add_parser("account", help="comptes du tableau de bord / dashboard accounts")
    a_sub = a.add_subparsers(dest="account_command", required=True)
    add = a_sub.add_parser("add", help="créer un compte / create an account")
    add.add_argument("username")
    add.add_argument("--role", required=True, choices=[r.value for r in Role])
    add.add_argument("--display-name", default="", help="nom affiché / display name")
    add.add_argument(
        "--commune", action="append", default=[], help="code INSEE (répétable) / INSEE code"
    )
    add.add_argument("--epci", default=None, help="SIREN d'un EPCI : ses communes membres")
    add.add_argument("--epci-file", default=None, help="table INSEE commune → EPCI (CSV)")
    add.add_argument("--password-stdin", action="store_true", help="lire le mot de passe")
    add.add_argument("-c", "--config", help="fichier TOML du contrôleur / controller TOML file")
    add.set_defaults(func=lambda x: asyncio.run(_add(x)))
    ls = a_sub.add_parser("list", help="lister les comptes / list accounts")
    ls.add_argument("-c", "--config", help="fichier TOML du contrôleur / controller TOML file")
    ls.set_defaults(func=lambda x: asyncio.run(_list(x)))
    for name, text in (
        ("passwd", "changer le mot de passe / change the password"),
        ("disable", "désactiver un compte / disable an account"),
        ("enable", "réactiver un compte / enable an account"),
    ):
        p = a_sub.add_parser(name, help=text)
        p.add_argument("username")
        if name == "passwd":
            p.add_argument("--password-stdin", action="store_true")
        p.add_argument("-c", "--config", help="fichier TOML du contrôleur / controller TOML file")
        p.set_defaults(func=lambda x: asyncio.run(_set(x)))


def _register_dashboard(sub: Any) -> None:
    d = sub.add_parser("dashboard", help="tableaux de bord / dashboards")
    d_sub = d.add_subparsers(dest="dashboard_command", required=True)
    assets = d_sub.add_parser("assets", help="bibliothèque de graphiques / charting library")
    a_sub = assets.add_subparsers(dest="assets_command", required=True)
    inst = a_sub.add_parser("install", help="installer ECharts avec npm / install ECharts")
    inst.add_argument("--dir", default=None, help="dossier (défaut : [dashboard] assets_dir)")
    inst.add_argument("--npm", default=None, help="chemin de npm / path to npm")
    inst.add_argument("-c", "--config", help="fichier TOML du contrôleur / controller TOML file")
    inst.set_defaults(func=lambda x: asyncio.run(_assets(x)))
    rep = d_sub.add_parser("report", help="rapports mensuels / monthly reports")
    rep.add_argument("--month", required=True, help="AAAA-MM / YYYY-MM")
    rep.add_argument("--commune", action="append", default=[], help="code INSEE (répétable)")
    rep.add_argument("--all", action="store_true", help="toutes les communes équipées")
    rep.add_argument("--force", action="store_true", help="refaire les rapports existants")
    rep.add_argument("-c", "--config", help="fichier TOML du contrôleur / controller TOML file")
    rep.set_defaults(func=lambda x: asyncio.run(_report(x)))
