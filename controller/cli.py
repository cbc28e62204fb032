"""The ``borne`` command.

Subcommands import what they need lazily, so that ``borne config check`` and
``borne agent`` stay quick and light.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import sys
from pathlib import Path

__all__ = ["COMMAND_MODULES", "main"]

# Modules that contribute subcommands; each defines ``register(subparsers) -> None`` and
# imports its heavy dependencies inside its command functions.
COMMAND_MODULES: list[str] = [
    "radius.cli",
    "controller.legal.cli",
    "controller.inventory",
    "controller.stats.cli",
    "dashboards.cli",
    "captive_portal.cli",
]


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def _cmd_config_check(args: argparse.Namespace) -> int:
    from controller.config import ConfigError, check_file

    try:
        problems = check_file(Path(args.file))
    except ConfigError as exc:
        problems = exc.problems
    if not problems:
        print(f"{args.file}: OK")
        return 0
    print(f"{args.file}: {len(problems)} problem(s)", file=sys.stderr)
    for p in problems:
        print(f"  {p.path}: {p.message}", file=sys.stderr)
    return 2


def _load(args: argparse.Namespace) -> object:
    from controller.config import ConfigError, load_settings

    try:
        return load_settings(Path(args.config) if args.config else None)
    except ConfigError as exc:
        print("configuration problems:", file=sys.stderr)
        for p in exc.problems:
            print(f"  {p.path}: {p.message}", file=sys.stderr)
        raise SystemExit(2) from exc


def _cmd_controller(args: argparse.Namespace) -> int:
    from controller.config import Settings
    from controller.main import run_controller
    from controller.storage import StorageError

    settings = _load(args)
    assert isinstance(settings, Settings)
    _setup_logging(settings.log_level)
    try:
        asyncio.run(run_controller(settings))
    except StorageError as exc:
        print(f"borne controller: {exc}", file=sys.stderr)
        return 1
    return 0


def _cmd_agent(args: argparse.Namespace) -> int:
    from agents.__main__ import main as agent_main

    argv = ["-c", args.config] + (["-v"] if args.verbose else [])
    argv += ["--check"] if args.check else []
    return agent_main(argv)


def _cmd_demo(args: argparse.Namespace) -> int:
    from controller.config import ConfigError
    from controller.demo import DemoError, run_demo
    from controller.storage import StorageError

    _setup_logging("WARNING" if not args.verbose else "INFO")
    try:
        asyncio.run(
            run_demo(
                aps=args.aps,
                portal_port=args.portal_port,
                dashboard_port=args.dashboard_port,
                mqtt_port=args.mqtt_port,
                visitors_per_minute=args.visitors_per_minute,
                database=args.database,
            )
        )
    except KeyboardInterrupt:
        return 0
    except (DemoError, StorageError, ConfigError) as exc:
        print(f"borne demo: {exc}", file=sys.stderr)
        return 2
    return 0


def _cmd_ap_add(args: argparse.Namespace) -> int:
    from controller.config import Settings
    from controller.registry import Registry, RegistryError, lot_communes
    from controller.storage import open_database

    settings = _load(args)
    assert isinstance(settings, Settings)

    async def go() -> int:
        db = await open_database(settings.database.url.get_secret_value())
        try:
            reg = Registry(db, settings.command_master_key.get_secret_value())
            await reg.add_communes(lot_communes())
            await reg.add_access_point(args.ap_id, args.insee, args.name or args.ap_id)
            print(reg.command_key(args.ap_id))
            return 0
        except RegistryError as exc:
            print(f"borne ap add: {exc}", file=sys.stderr)
            return 2
        finally:
            await db.aclose()

    return asyncio.run(go())


def _cmd_client_disconnect(args: argparse.Namespace) -> int:
    from controller.config import Settings

    settings = _load(args)
    assert isinstance(settings, Settings)
    _setup_logging("WARNING")
    return asyncio.run(_client_disconnect(settings, args.ap, args.mac.lower(), args.wait))


async def _client_disconnect(settings: object, ap_id: str, mac: str, wait_s: float) -> int:
    """Publish a signed ``deauthorize`` and wait for the running controller to record its ack."""
    import time

    from agents._mqtt_io import MqttLink
    from agents.contract import DeauthorizeArgs, encode, topic
    from controller.bridge import link_options
    from controller.config import Settings
    from controller.registry import Registry
    from controller.service import Controller
    from controller.storage import open_database

    assert isinstance(settings, Settings)
    db = await open_database(settings.database.url.get_secret_value())
    try:
        registry = Registry(db, settings.command_master_key.get_secret_value())
        await registry.load()
        ctl = Controller(settings, db, registry)
        try:
            cmd = await ctl.prepare_command(ap_id, DeauthorizeArgs(mac=mac), purpose="admin")
        except KeyError:
            print(f"borne client disconnect: unknown access point {ap_id!r}", file=sys.stderr)
            return 2
        m = settings.mqtt
        link = MqttLink(link_options(settings.mqtt, f"borne-cli-{cmd.id[:8]}", clean_session=True))
        link.start()
        try:
            if not await asyncio.to_thread(link.connected.wait, 10.0):
                print(
                    f"borne client disconnect: broker {m.host}:{m.port} unreachable",
                    file=sys.stderr,
                )
                return 1
            info = link.publish(topic(ap_id, "cmd"), encode(cmd))
            await asyncio.to_thread(info.wait_for_publish, 10.0)
        finally:
            await asyncio.to_thread(link.stop)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            ok, error = await ctl.command_outcome(cmd.id)
            if ok is not None:
                print(f"{cmd.id}: {'ok' if ok else 'refused: ' + (error or '')}")
                return 0 if ok else 1
            await asyncio.sleep(0.2)
        print(f"{cmd.id}: sent, no acknowledgement recorded within {wait_s:g} s", file=sys.stderr)
        return 1
    finally:
        await db.aclose()


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``borne``."""
    p = argparse.ArgumentParser(prog="borne", description="Territorial public Wi-Fi controller")
    sub = p.add_subparsers(dest="command", required=True)

    c = sub.add_parser("controller", help="run the controller service")
    c.add_argument("-c", "--config", help="TOML configuration file")
    c.set_defaults(func=_cmd_controller)

    a = sub.add_parser("agent", help="run the agent of an access point")
    a.add_argument("-c", "--config", required=True, help="agent TOML configuration file")
    a.add_argument("-v", "--verbose", action="store_true")
    a.add_argument("--check", action="store_true", help="diagnose the agent's setup and exit")
    a.set_defaults(func=_cmd_agent)

    d = sub.add_parser("demo", help="run everything embedded on localhost")
    d.add_argument("--aps", type=int, default=24, help="simulated hotspots (default 24)")
    d.add_argument("--portal-port", type=int, default=8080)
    d.add_argument("--dashboard-port", type=int, default=8081)
    d.add_argument("--mqtt-port", type=int, default=0, help="embedded broker port (0: any)")
    d.add_argument("--visitors-per-minute", type=float, default=30.0)
    d.add_argument("--database", default=None, help="SQLAlchemy URL (default: temporary SQLite)")
    d.add_argument("-v", "--verbose", action="store_true")
    d.set_defaults(func=_cmd_demo)

    cfg = sub.add_parser("config", help="configuration tools")
    cfg_sub = cfg.add_subparsers(dest="config_command", required=True)
    chk = cfg_sub.add_parser("check", help="check a controller or agent configuration file")
    chk.add_argument("file")
    chk.set_defaults(func=_cmd_config_check)

    ap = sub.add_parser("ap", help="access points")
    ap_sub = ap.add_subparsers(dest="ap_command", required=True)
    add = ap_sub.add_parser("add", help="register an access point and print its command key")
    add.add_argument("ap_id")
    add.add_argument("--insee", required=True, help="INSEE code of its commune")
    add.add_argument("--name", default=None)
    add.add_argument("-c", "--config", help="controller TOML configuration file")
    add.set_defaults(func=_cmd_ap_add)
    from controller.apconfig import add_config_parser
    from controller.enroll import add_enroll_parser

    add_enroll_parser(ap_sub)
    add_config_parser(ap_sub)

    cl = sub.add_parser("client", help="clients of the hotspots")
    cl_sub = cl.add_subparsers(dest="client_command", required=True)
    disc = cl_sub.add_parser("disconnect", help="cut a client off at its access point")
    disc.add_argument("--ap", required=True, help="access point id")
    disc.add_argument("--mac", required=True, help="client MAC address")
    disc.add_argument("--wait", type=float, default=15.0, help="seconds to wait for the ack")
    disc.add_argument("-c", "--config", help="controller TOML configuration file")
    disc.set_defaults(func=_cmd_client_disconnect)

    # Each component adds its own subcommands: ``register(subparsers)`` in these modules
    # (``radius ...``, ``legal ...``, ``simulate``, ``ap enroll``, ``inventory ...``).
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``borne`` console command."""
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
