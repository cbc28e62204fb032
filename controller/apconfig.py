"""Gateway settings of the access points: built, versioned and pushed (``apply_config``).

The settings of an AP come from the controller's configuration: session length and
rates (``[sessions]``), quotas and walled garden (``[ap_config]``), the idle timeout of
its commune (``[portal.communes."<insee>"] idle_timeout_s``, else ``[radius]``'s, as in
RADIUS replies), openNDS's FAS settings (``[portal] public_url``) and the RFC 8908 API
URL sent as DHCP option 114 (``<portal>/capport/api/<ap_id>``, RFC 8910). Each AP's
row in ``ap_configs`` keeps a version that rises when its settings change (a digest of
them, version left out), the last push and its ack, and the version the agent reports in
its ``status``.

Pushes: ``borne ap config push AP|--all`` (through the broker, the running controller
records the acks), or automatically (``[ap_config] auto_push``) when an AP comes online
reporting another version than the controller's. A version is never lowered: an agent
that reports a newer one than the database (a database restored from a backup) makes
the controller skip past it.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import ipaddress
import json
import logging
import sys
import time
import urllib.parse
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from agents._apply import settings_digest
from agents._gwconf import MIN_IDLE_MINUTES, config_problems
from agents.contract import AckMsg, ApplyConfigArgs, Command, StatusMsg
from captive_portal._wifi4eu import walled_garden_hosts
from controller.storage.schema import access_points, ap_configs, commands

if TYPE_CHECKING:  # the CLI imports this module at every start: keep it light
    from controller.config import Settings
    from controller.service import Controller
    from controller.storage import Database

__all__ = [
    "add_config_parser",
    "after_message",
    "desired_settings",
    "idle_minutes",
    "plan_version",
    "prepare_push",
]

logger = logging.getLogger(__name__)

CAPPORT_PATH = "/capport/api"


def desired_settings(settings: Settings, ap_id: str, insee: str | None = None) -> ApplyConfigArgs:
    """The gateway settings of ``ap_id`` (version 0: :func:`plan_version` numbers them).

    ``insee``, the access point's commune, adds that commune's own walled-garden hosts
    (WiFi4EU: the Commission's script and collector, ``captive_portal._wifi4eu``) and
    gives its session length, rates and idle timeout (``[portal.communes."<insee>"]``
    where set, else ``[sessions]`` and ``[radius] idle_timeout_s``).
    """
    from radius._policy import limits_at  # only when settings are built: the CLI starts light

    limits = limits_at(settings, insee)

    url = urllib.parse.urlsplit(settings.portal.public_url)
    host = url.hostname or ""
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        ipaddress.IPv4Address(host)
        fas_ip, fas_fqdn = host, ""
    except ValueError:
        fas_ip, fas_fqdn = settings.ap_config.fas_remote_ip or "", host
    conf = settings.ap_config
    capport = f"{url.scheme}://{url.netloc}{CAPPORT_PATH}/{ap_id}" if conf.capport else ""
    return ApplyConfigArgs(
        version=0,
        session_minutes=limits.minutes,
        up_kbps=limits.up_kbps,
        down_kbps=limits.down_kbps,
        up_quota_kb=conf.up_quota_kb,
        down_quota_kb=conf.down_quota_kb,
        walled_garden=list(conf.walled_garden)
        + [h for h in walled_garden_hosts(settings.portal, insee) if h not in conf.walled_garden],
        walled_garden_ports=list(conf.walled_garden_ports),
        fas_remote_ip=fas_ip,
        fas_remote_fqdn=fas_fqdn,
        fas_port=port,
        fas_path=url.path or "/",
        capport_url=capport,
        idle_timeout_minutes=idle_minutes(limits.idle_timeout_s),
    )


def idle_minutes(seconds: int) -> int:
    """openNDS's ``authidletimeout`` for an idle timeout of ``seconds``.

    Whole minutes, rounded up (a client is never logged out sooner than configured), and
    at least :data:`~agents._gwconf.MIN_IDLE_MINUTES` (openNDS does not start unless its
    check interval is under half the idle timeout). 0 (no idle timeout, as RADIUS
    replies then carry no Idle-Timeout) stays 0: the AP keeps its own setting.
    """
    if seconds <= 0:
        return 0
    return max(MIN_IDLE_MINUTES, -(-seconds // 60))


async def plan_version(db: Database, args: ApplyConfigArgs, ap_id: str, now: float) -> int:
    """The version of these settings for ``ap_id``: the stored one, or a new, higher one."""
    digest = settings_digest(args)
    body = json.dumps(dataclasses.asdict(args) | {"version": None}, sort_keys=True)
    async with db.begin() as conn:
        row = (await conn.execute(sa.select(ap_configs).where(ap_configs.c.ap_id == ap_id))).first()
        if row is None:
            await conn.execute(
                ap_configs.insert().values(
                    ap_id=ap_id, version=1, digest=digest, body=body, updated_at=now
                )
            )
            return 1
        version = int(row.version)
        reported = int(row.reported_version or 0)
        if row.digest != digest or reported > version:
            version = max(version, reported) + 1
            await conn.execute(
                ap_configs.update()
                .where(ap_configs.c.ap_id == ap_id)
                .values(version=version, digest=digest, body=body, updated_at=now)
            )
        return version


async def _insee(ctl: Controller, ap_id: str) -> str | None:
    """The commune of a registered access point."""
    row = await ctl.registry.access_point(ap_id)
    return str(row.insee) if row is not None else None


async def prepare_push(ctl: Controller, ap_id: str) -> Command:
    """Number, sign and record the ``apply_config`` of ``ap_id`` (not yet published).

    Raises:
        KeyError: the access point is not registered.
        ValueError: the configuration gives settings the agent would refuse.
    """
    if ctl.registry.key_for(ap_id) is None:
        raise KeyError(ap_id)
    now = ctl.clock()
    args = desired_settings(ctl.settings, ap_id, await _insee(ctl, ap_id))
    problems = config_problems(dataclasses.replace(args, version=1))
    if problems:
        raise ValueError("; ".join(problems))
    version = await plan_version(ctl.db, args, ap_id, now)
    cmd = await ctl.prepare_command(
        ap_id, dataclasses.replace(args, version=version), purpose="config"
    )
    async with ctl.db.begin() as conn:
        await conn.execute(
            ap_configs.update()
            .where(ap_configs.c.ap_id == ap_id)
            .values(command_id=cmd.id, pushed_at=now, result=None, acked_at=None)
        )
    return cmd


async def push(ctl: Controller, ap_id: str) -> str:
    """Prepare and publish the ``apply_config`` of ``ap_id``; return the command id.

    Raises:
        KeyError: the access point is not registered.
        RuntimeError: the controller has no MQTT bridge.
    """
    from agents.contract import encode, topic

    if ctl.bridge is None:
        raise RuntimeError("no MQTT bridge: commands cannot be sent")
    cmd = await prepare_push(ctl, ap_id)
    await ctl.bridge.publish(topic(ap_id, "cmd"), encode(cmd))
    ctl.counters["sent_apply_config"] += 1
    return cmd.id


async def after_message(ctl: Controller, msg: Any) -> None:
    """Hooks run after a message was applied: reported versions, acks, automatic pushes.

    The message itself is stored: a failure here is logged and counted, not retried.
    """
    try:
        if isinstance(msg, StatusMsg) and msg.state == "online":
            await _on_status(ctl, msg)
        elif isinstance(msg, AckMsg):
            await _on_ack(ctl, msg)
    except (sa.exc.SQLAlchemyError, OSError) as exc:
        ctl.counters["config_hook_failed"] += 1
        logger.error("apply_config bookkeeping for %s failed: %s", msg.ap, exc)


async def _on_status(ctl: Controller, msg: StatusMsg) -> None:
    now = ctl.clock()
    async with ctl.db.begin() as conn:
        row = (
            await conn.execute(
                sa.select(access_points.c.boot).where(access_points.c.ap_id == msg.ap)
            )
        ).first()
        if row is None or row.boot != msg.boot:
            return  # a late status of a previous run
        await conn.execute(
            ap_configs.update()
            .where(ap_configs.c.ap_id == msg.ap)
            .values(reported_version=msg.config_version, reported_at=now)
        )
        stored = (
            await conn.execute(sa.select(ap_configs).where(ap_configs.c.ap_id == msg.ap))
        ).first()
    if not ctl.settings.ap_config.auto_push or ctl.bridge is None:
        return
    digest = settings_digest(desired_settings(ctl.settings, msg.ap, await _insee(ctl, msg.ap)))
    if stored is not None and stored.digest == digest:
        if stored.version == msg.config_version:
            return
        # Already sent and still valid, not yet answered: the agent is on it (it says
        # "online" twice at start, and again at each reconnection).
        waiting = stored.pushed_at is not None and stored.acked_at is None
        if waiting and now - stored.pushed_at < ctl.settings.sessions.command_ttl_s:
            return
    if msg.ap in ctl.config_pushing:
        return
    ctl.config_pushing.add(msg.ap)
    ctl.spawn(_auto_push(ctl, msg.ap), f"apply_config {msg.ap}")


async def _auto_push(ctl: Controller, ap_id: str) -> None:
    try:
        cmd_id = await push(ctl, ap_id)
    except (KeyError, ValueError, RuntimeError, sa.exc.SQLAlchemyError, OSError) as exc:
        ctl.counters["config_push_failed"] += 1
        logger.error("automatic apply_config to %s failed: %s", ap_id, exc)
        return
    finally:
        ctl.config_pushing.discard(ap_id)
    ctl.counters["config_auto_pushed"] += 1
    logger.info("apply_config %s sent to %s (its reported version differs)", cmd_id, ap_id)


async def _on_ack(ctl: Controller, msg: AckMsg) -> None:
    async with ctl.db.begin() as conn:
        cmd = (
            await conn.execute(
                sa.select(commands.c.cmd, commands.c.args).where(
                    commands.c.id == msg.id, commands.c.ap_id == msg.ap
                )
            )
        ).first()
        if cmd is None or cmd.cmd != "apply_config":
            return
        try:
            version = int(json.loads(cmd.args)["version"])
        except (ValueError, KeyError, TypeError):
            return
        values: dict[str, Any] = {
            "result": (msg.result or "ok") if msg.ok else f"error: {msg.error or ''}"[:200],
            "acked_at": ctl.clock(),
        }
        if msg.ok:
            values["applied_version"] = version
        await conn.execute(
            ap_configs.update()
            .where(ap_configs.c.ap_id == msg.ap, ap_configs.c.command_id == msg.id)
            .values(**values)
        )
    if not msg.ok:
        logger.warning("apply_config version %d refused by %s: %s", version, msg.ap, msg.error)


# --------------------------------------------------------------------------- CLI


def add_config_parser(ap_sub: Any) -> None:
    """``borne ap config push AP|--all``."""
    cfg = ap_sub.add_parser("config", help="gateway settings of the access points")
    cfg_sub = cfg.add_subparsers(dest="ap_config_command", required=True)
    p = cfg_sub.add_parser("push", help="send the gateway settings (apply_config) and wait")
    p.add_argument("ap_id", nargs="?", help="access point id")
    p.add_argument("--all", action="store_true", help="every registered access point")
    p.add_argument("--wait", type=float, default=60.0, help="seconds to wait for the acks")
    p.add_argument("-c", "--config", help="controller TOML configuration file")
    p.set_defaults(func=_cmd_push)


def _cmd_push(args: argparse.Namespace) -> int:
    from controller.config import settings_or_exit

    if bool(args.ap_id) == bool(args.all):
        print("borne ap config push: give one AP id or --all", file=sys.stderr)
        return 2
    settings = settings_or_exit(args.config)
    logging.basicConfig(level=logging.WARNING)
    return asyncio.run(_push_cli(settings, args.ap_id, args.wait))


async def _push_cli(settings: Settings, ap_id: str | None, wait_s: float) -> int:
    """Publish the commands, then read the acks the running controller records."""
    from agents._mqtt_io import MqttLink
    from agents.contract import encode, topic
    from controller.bridge import link_options
    from controller.registry import Registry
    from controller.service import Controller
    from controller.storage import open_database

    db = await open_database(settings.database.url.get_secret_value())
    try:
        registry = Registry(db, settings.command_master_key.get_secret_value())
        await registry.load()
        ctl = Controller(settings, db, registry)
        if ap_id is None:
            async with db.connect() as conn:
                ids = list((await conn.execute(sa.select(access_points.c.ap_id))).scalars())
        else:
            ids = [ap_id]
        cmds: list[Command] = []
        for ap in sorted(ids):
            try:
                cmds.append(await prepare_push(ctl, ap))
            except KeyError:
                print(f"borne ap config push: unknown access point {ap!r}", file=sys.stderr)
                return 2
            except ValueError as exc:
                print(f"borne ap config push: [ap_config]: {exc}", file=sys.stderr)
                return 2
        link = MqttLink(link_options(settings.mqtt, "borne-cli-config", clean_session=True))
        link.start()
        try:
            if not await asyncio.to_thread(link.connected.wait, 10.0):
                m = settings.mqtt
                print(
                    f"borne ap config push: broker {m.host}:{m.port} unreachable", file=sys.stderr
                )
                return 1
            for cmd in cmds:
                info = link.publish(topic(cmd.ap, "cmd"), encode(cmd))
                await asyncio.to_thread(info.wait_for_publish, 10.0)
        finally:
            await asyncio.to_thread(link.stop)
        return await _report(db, cmds, wait_s)
    finally:
        await db.aclose()


async def _report(db: Database, cmds: list[Command], wait_s: float) -> int:
    pending = {c.id: c for c in cmds}
    failed = 0
    deadline = time.monotonic() + wait_s
    while pending and time.monotonic() < deadline:
        async with db.connect() as conn:
            rows = (
                await conn.execute(
                    sa.select(ap_configs).where(ap_configs.c.command_id.in_(list(pending)))
                )
            ).all()
        for row in rows:
            if row.acked_at is None:
                continue
            cmd = pending.pop(row.command_id)
            print(f"{cmd.ap}: version {cmd.args['version']}: {row.result}")
            failed += str(row.result).startswith("error")
        if pending:
            await asyncio.sleep(0.3)
    for cmd in pending.values():
        print(f"{cmd.ap}: version {cmd.args['version']}: sent, no acknowledgement in time")
    return 1 if failed or pending else 0
