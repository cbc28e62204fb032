"""Enrolment of an access point: its MQTT login, its broker ACL entry and its command key.

``borne ap enroll AP --insee CODE`` registers the AP with a fresh random command key,
issues its MQTT login (user name = AP id, random password shown once, stored only as a
mosquitto 2.0 password-file hash: ``$7$``, PBKDF2-HMAC-SHA512), and rewrites the
broker's password file and ACL file from every enrolled AP, atomically (temporary file,
``fsync``, ``rename``). The ACL lets an AP write only under its own topic and read only
its own commands (docs/CONTRACT.md); the controller's own login, when configured, reads
and writes every AP's topics.

This module does not talk to the broker: the operator reloads mosquitto (SIGHUP) after
an enrolment; the command says so.

``borne ap rotate AP`` replaces the AP's credentials without a visit and without an
outage (docs/DEPLOY.md, "Rotation"):

1. a new command key and a new MQTT login ``{ap_id}.{generation}`` are issued; the old
   login moves to ``ap_mqtt_logins_retired`` and stays in the broker's files until the
   end of the grace period (``[mqtt] rotation_grace_s``, 24 h by default): mosquitto
   holds one password per user, so two generations need two user names;
2. a ``rotate_credentials`` command, signed with the current key, carries the new key and
   login encrypted with the current key; the agent writes them to its configuration
   atomically, switches, and acknowledges with a message signed by the new key;
3. the controller accepts messages signed with the current or the new key; the first
   message signed with the new key confirms the rotation: commands are signed with the
   new key from then on, and the old key is still accepted (spooled messages) until the
   end of the grace period, then forgotten. An AP that never confirmed is switched over
   at the end of the grace period all the same (``forced``): its old key no longer
   works, which is the point of a rotation.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import dataclasses
import hashlib
import json
import os
import secrets
import stat
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from agents.contract import AGENT_KINDS, AP_ID_RE, TOPIC_PREFIX

if TYPE_CHECKING:  # imported lazily: ``borne`` builds this parser at every start
    from controller.storage import Database

__all__ = [
    "Enrolment",
    "RotationState",
    "acl_file",
    "add_enroll_parser",
    "broker_logins",
    "confirm_rotation",
    "enroll",
    "finish_rotations",
    "mosquitto_hash",
    "password_file",
    "rotated_username",
    "rotation_state",
    "start_rotation",
    "write_broker_files",
]

# mosquitto_passwd's defaults for $7$ in mosquitto 2.0 (src/password_mosq.c).
PBKDF2_ITERATIONS: Final = 101
SALT_BYTES: Final = 12
DEFAULT_PASSWD_FILE: Final = "/etc/mosquitto/borne.passwd"
DEFAULT_ACL_FILE: Final = "/etc/mosquitto/borne.acl"


def mosquitto_hash(password: str, *, salt: bytes | None = None) -> str:
    """A mosquitto 2.0 password-file hash (``$7$<iterations>$<salt b64>$<key b64>``)."""
    salt = salt if salt is not None else secrets.token_bytes(SALT_BYTES)
    key = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, PBKDF2_ITERATIONS, 64)
    return (
        f"$7${PBKDF2_ITERATIONS}${base64.b64encode(salt).decode()}${base64.b64encode(key).decode()}"
    )


@dataclass(frozen=True)
class Enrolment:
    """What the technician copies into the AP's agent configuration (shown once)."""

    ap_id: str
    command_key: str
    mqtt_username: str
    mqtt_password: str

    def agent_toml(self) -> str:
        """The ``[agent]`` lines of this enrolment."""
        return (
            "[agent]\n"
            f'ap_id = "{self.ap_id}"\n'
            f'command_key = "{self.command_key}"\n'
            f'mqtt_username = "{self.mqtt_username}"\n'
            f'mqtt_password = "{self.mqtt_password}"\n'
        )


def password_file(logins: list[tuple[str, str]]) -> str:
    """The password file for ``(username, hash)`` pairs, sorted by user name."""
    return "".join(f"{user}:{pw_hash}\n" for user, pw_hash in sorted(logins))


def acl_file(ap_ids: list[str], controller_username: str | None) -> str:
    """The ACL file: each AP writes its own topics (not ``cmd``) and reads its ``cmd``.

    ``ap_ids`` are the MQTT user names: an AP's id, or ``{ap_id}.{generation}`` after a
    rotation (an AP id holds no dot), which gets the same AP's topics.
    """
    lines = [
        "# Written by borne ap enroll: do not edit, it is rewritten at each enrolment.",
        "# An AP writes only under its own id and reads only its own commands.",
    ]
    if controller_username:
        lines += ["", f"user {controller_username}", f"topic readwrite {TOPIC_PREFIX}/#"]
    for user in sorted(ap_ids):
        ap_id = user.split(".", 1)[0]
        lines += ["", f"user {user}"]
        lines += [f"topic write {TOPIC_PREFIX}/{ap_id}/{kind}" for kind in AGENT_KINDS]
        lines.append(f"topic read {TOPIC_PREFIX}/{ap_id}/cmd")
    return "\n".join(lines) + "\n"


def _write_atomically(path: Path, text: str, mode: int = 0o640) -> None:
    """Replace ``path`` by a file holding ``text``. A file replaced keeps its owner, group
    and mode: mosquitto reads its password and ACL files as its own user, through the
    group the deployment gave them (root:mosquitto 0640), and a rewrite by root must not
    take them away from it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        old: os.stat_result | None = path.stat()
    except FileNotFoundError:
        old = None
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # one per writing process
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as fh:
        if old is not None:
            if os.geteuid() == 0:
                os.fchown(fh.fileno(), old.st_uid, old.st_gid)
            elif old.st_gid != os.getegid():
                # Another user may only give the file a group of its own (else an error).
                os.fchown(fh.fileno(), -1, old.st_gid)
            os.fchmod(fh.fileno(), stat.S_IMODE(old.st_mode))
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def write_broker_files(
    logins: list[tuple[str, str]],
    controller: tuple[str, str] | None,
    passwd_path: Path,
    acl_path: Path,
) -> None:
    """Write the password and ACL files (``controller``: its user name and password)."""
    entries = list(logins)
    if controller is not None:
        entries.append((controller[0], mosquitto_hash(controller[1])))
    _write_atomically(passwd_path, password_file(entries))
    _write_atomically(acl_path, acl_file([u for u, _ in logins], controller and controller[0]))


async def enroll(db: Database, ap_id: str, now: float) -> tuple[str, list[tuple[str, str]]]:
    """Issue a new MQTT password for ``ap_id`` (replacing any previous one).

    Returns:
        The clear password (to show once) and every enrolled ``(username, hash)``.

    Raises:
        ValueError: ``ap_id`` is not a valid AP id.
    """

    from controller.storage.schema import (
        ap_key_rotations,
        ap_mqtt_logins,
        ap_mqtt_logins_retired,
    )

    if not AP_ID_RE.match(ap_id):
        raise ValueError(f"invalid access point id {ap_id!r}")
    password = secrets.token_urlsafe(24)
    row = {
        "ap_id": ap_id,
        "username": ap_id,
        "password_hash": await asyncio.to_thread(mosquitto_hash, password),
        "created_at": now,
    }
    async with db.begin() as conn:
        await conn.execute(ap_mqtt_logins.delete().where(ap_mqtt_logins.c.ap_id == ap_id))
        await conn.execute(ap_mqtt_logins.insert().values(**row))
        # A new enrolment replaces everything: a rotation in progress ends with it.
        await conn.execute(ap_key_rotations.delete().where(ap_key_rotations.c.ap_id == ap_id))
        await conn.execute(
            ap_mqtt_logins_retired.delete().where(ap_mqtt_logins_retired.c.ap_id == ap_id)
        )
        logins = await broker_logins(conn, now)
    return password, logins


async def broker_logins(conn: Any, now: float) -> list[tuple[str, str]]:
    """Every MQTT login the broker accepts now: current ones and retired ones in grace."""
    import sqlalchemy as sa

    from controller.storage.schema import ap_mqtt_logins, ap_mqtt_logins_retired

    current = (
        await conn.execute(sa.select(ap_mqtt_logins.c.username, ap_mqtt_logins.c.password_hash))
    ).all()
    retired = (
        await conn.execute(
            sa.select(
                ap_mqtt_logins_retired.c.username, ap_mqtt_logins_retired.c.password_hash
            ).where(ap_mqtt_logins_retired.c.valid_until >= now)
        )
    ).all()
    return [(r.username, r.password_hash) for r in [*current, *retired]]


# --------------------------------------------------------------------------- rotation


def rotated_username(ap_id: str, generation: int) -> str:
    """The MQTT user name of an AP's ``generation``-th credentials (0: the AP id).

    Raises:
        ValueError: the name would be longer than 63 characters.
    """
    name = ap_id if generation == 0 else f"{ap_id}.{generation}"
    if len(name) > 63:
        raise ValueError(f"{ap_id!r}: too long for a rotated MQTT login (63 characters at most)")
    return name


@dataclass(frozen=True)
class RotationState:
    """Where an AP's last credential rotation stands (``borne ap rotation``)."""

    ap_id: str
    state: str  # none, pending, confirmed, finished, forced
    generation: int = 0
    started_at: float | None = None
    grace_until: float | None = None
    confirmed_at: float | None = None
    command_id: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly view."""
        return dataclasses.asdict(self)


def _state_of(row: Any) -> str:
    if row.finished_at is not None:
        return "finished" if row.confirmed_at is not None else "forced"
    return "confirmed" if row.confirmed_at is not None else "pending"


async def rotation_state(db: Database, ap_id: str) -> RotationState:
    """The state of ``ap_id``'s last rotation (``none`` if it never had one)."""
    import sqlalchemy as sa

    from controller.storage.schema import ap_key_rotations as rot

    async with db.connect() as conn:
        row = (await conn.execute(sa.select(rot).where(rot.c.ap_id == ap_id))).first()
    if row is None:
        return RotationState(ap_id, "none")
    return RotationState(
        ap_id,
        _state_of(row),
        row.generation,
        row.started_at,
        row.grace_until,
        row.confirmed_at,
        row.command_id,
    )


async def start_rotation(
    db: Database, ap_id: str, current_key: str, now: float, grace_s: float
) -> tuple[Enrolment, int, list[tuple[str, str]]]:
    """Issue new credentials for ``ap_id``; the current ones stay valid for ``grace_s``.

    A rotation started while another one is in progress ends it: its unconfirmed key
    is dropped, and the key before it stops being accepted at once.

    Returns:
        The new credentials (shown once), their generation, and every broker login.

    Raises:
        ValueError: the AP is not registered, or its id is too long for a rotated login.
    """
    import sqlalchemy as sa

    from controller.storage.schema import access_points, ap_mqtt_logins, ap_mqtt_logins_retired
    from controller.storage.schema import ap_key_rotations as rot

    async with db.connect() as conn:
        known = (
            await conn.execute(
                sa.select(access_points.c.ap_id).where(access_points.c.ap_id == ap_id)
            )
        ).first()
        previous = (await conn.execute(sa.select(rot).where(rot.c.ap_id == ap_id))).first()
    if known is None:
        raise ValueError(f"unknown access point {ap_id!r}")
    generation = (previous.generation if previous is not None else 0) + 1
    username = rotated_username(ap_id, generation)
    new_key = secrets.token_hex(32)
    password = secrets.token_urlsafe(24)
    pw_hash = await asyncio.to_thread(mosquitto_hash, password)
    until = now + grace_s
    async with db.begin() as conn:
        old = (
            await conn.execute(sa.select(ap_mqtt_logins).where(ap_mqtt_logins.c.ap_id == ap_id))
        ).first()
        if old is not None:
            await conn.execute(
                ap_mqtt_logins_retired.delete().where(
                    ap_mqtt_logins_retired.c.username == old.username
                )
            )
            await conn.execute(
                ap_mqtt_logins_retired.insert().values(
                    username=old.username,
                    ap_id=ap_id,
                    password_hash=old.password_hash,
                    valid_until=until,
                )
            )
        await conn.execute(ap_mqtt_logins.delete().where(ap_mqtt_logins.c.ap_id == ap_id))
        await conn.execute(
            ap_mqtt_logins.insert().values(
                ap_id=ap_id, username=username, password_hash=pw_hash, created_at=now
            )
        )
        await conn.execute(rot.delete().where(rot.c.ap_id == ap_id))
        await conn.execute(
            rot.insert().values(
                ap_id=ap_id,
                generation=generation,
                new_key=new_key,
                old_key=None,
                started_at=now,
                grace_until=until,
            )
        )
        # The key being replaced stays the signing key until the AP confirms.
        await conn.execute(
            access_points.update()
            .where(access_points.c.ap_id == ap_id)
            .values(command_key=current_key)
        )
        logins = await broker_logins(conn, now)
    return Enrolment(ap_id, new_key, username, password), generation, logins


async def confirm_rotation(db: Database, ap_id: str, current_key: str, now: float) -> bool:
    """The AP signed with its new key: make it the signing key, keep the old one in grace.

    Returns:
        True when a pending rotation was confirmed (False: nothing was pending).
    """
    import sqlalchemy as sa

    from controller.storage.schema import access_points
    from controller.storage.schema import ap_key_rotations as rot

    async with db.begin() as conn:
        row = (
            await conn.execute(
                sa.select(rot).where(
                    rot.c.ap_id == ap_id,
                    rot.c.confirmed_at.is_(None),
                    rot.c.finished_at.is_(None),
                    rot.c.new_key.is_not(None),
                )
            )
        ).first()
        if row is None:
            return False
        await conn.execute(
            access_points.update()
            .where(access_points.c.ap_id == ap_id)
            .values(command_key=row.new_key)
        )
        await conn.execute(
            rot.update()
            .where(rot.c.ap_id == ap_id)
            .values(confirmed_at=now, old_key=current_key, new_key=None)
        )
    return True


async def finish_rotations(db: Database, now: float) -> list[str]:
    """End the rotations whose grace period is over; forget old keys and logins.

    An AP that never confirmed gets its new key all the same (``forced``).

    Returns:
        The APs whose keys changed (their cached keys must be reloaded).
    """
    import sqlalchemy as sa

    from controller.storage.schema import access_points, ap_mqtt_logins_retired
    from controller.storage.schema import ap_key_rotations as rot

    async with db.begin() as conn:
        rows = (
            await conn.execute(
                sa.select(rot).where(rot.c.finished_at.is_(None), rot.c.grace_until < now)
            )
        ).all()
        for row in rows:
            if row.confirmed_at is None and row.new_key is not None:
                await conn.execute(
                    access_points.update()
                    .where(access_points.c.ap_id == row.ap_id)
                    .values(command_key=row.new_key)
                )
            await conn.execute(
                rot.update()
                .where(rot.c.ap_id == row.ap_id)
                .values(finished_at=now, new_key=None, old_key=None)
            )
        await conn.execute(
            ap_mqtt_logins_retired.delete().where(ap_mqtt_logins_retired.c.valid_until < now)
        )
    return [r.ap_id for r in rows]


def _cmd_enroll(args: argparse.Namespace) -> int:
    from controller.cli import _load
    from controller.config import Settings

    settings = _load(args)
    assert isinstance(settings, Settings)
    return asyncio.run(_enroll_main(settings, args))


async def _enroll_main(settings: object, args: argparse.Namespace) -> int:
    from controller.config import Settings
    from controller.registry import Registry, RegistryError, lot_communes
    from controller.storage import open_database

    assert isinstance(settings, Settings)
    db = await open_database(settings.database.url.get_secret_value())
    try:
        reg = Registry(db, settings.command_master_key.get_secret_value())
        await reg.add_communes(lot_communes())
        key = secrets.token_hex(32)
        try:
            await reg.add_access_point(
                args.ap_id, args.insee, args.name or args.ap_id, command_key=key
            )
            password, logins = await enroll(db, args.ap_id, time.time())
        except (RegistryError, ValueError) as exc:
            print(f"borne ap enroll: {exc}", file=sys.stderr)
            return 2
        m = settings.mqtt
        controller = (
            (m.username, m.password.get_secret_value()) if m.username and m.password else None
        )
        passwd, acl = Path(args.passwd_file), Path(args.acl_file)
        try:
            await asyncio.to_thread(write_broker_files, logins, controller, passwd, acl)
        except OSError as exc:
            print(f"borne ap enroll: cannot write the broker files: {exc}", file=sys.stderr)
            return 1
        done = Enrolment(args.ap_id, key, args.ap_id, password)
        print(done.agent_toml(), end="")
        print(
            f"# Point d'accès {args.ap_id} inscrit ; {passwd} et {acl} réécrits.\n"
            "# Rechargez mosquitto (systemctl reload mosquitto) ; ce mot de passe ne sera\n"
            "# plus affiché.\n"
            f"# Access point {args.ap_id} enrolled; {passwd} and {acl} rewritten.\n"
            "# Reload mosquitto (systemctl reload mosquitto); this password is not shown again.",
            file=sys.stderr,
        )
        return 0
    finally:
        await db.aclose()


def _cmd_rotate(args: argparse.Namespace) -> int:
    from controller.config import settings_or_exit

    return asyncio.run(_rotate_main(settings_or_exit(args.config), args))


def _reload_broker(command: str) -> str | None:
    """Run the broker's reload command; an error message, or None."""
    import shlex
    import subprocess

    try:
        proc = subprocess.run(
            shlex.split(command), capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    return None if proc.returncode == 0 else f"exit {proc.returncode}: {proc.stderr.strip()[:200]}"


async def _send_rotation(
    settings: Any, db: Database, registry: Any, ap_id: str, current: str, creds: dict[str, str]
) -> tuple[str | None, str | None]:
    """Publish ``rotate_credentials`` signed with the current key: (command id, error)."""
    from agents._mqtt_io import MqttLink
    from agents.contract import RotateCredentialsArgs, encode, seal_credentials, topic
    from controller.bridge import link_options
    from controller.service import Controller

    nonce = secrets.token_hex(16)
    args = RotateCredentialsArgs(nonce, seal_credentials(current.encode(), nonce, creds))
    ctl = Controller(settings, db, registry)
    cmd = await ctl.prepare_command(ap_id, args, purpose="rotation")
    link = MqttLink(link_options(settings.mqtt, f"borne-rotate-{cmd.id[:8]}", clean_session=True))
    link.start()
    try:
        if not await asyncio.to_thread(link.connected.wait, 10.0):
            return None, f"broker {settings.mqtt.host}:{settings.mqtt.port} unreachable"
        info = link.publish(topic(ap_id, "cmd"), encode(cmd))
        await asyncio.to_thread(info.wait_for_publish, 10.0)
    finally:
        await asyncio.to_thread(link.stop)
    return cmd.id, None


async def _wait_confirmed(
    db: Database, ap_id: str, cmd_id: str | None, wait_s: float
) -> tuple[RotationState, str | None]:
    """Wait for the AP's confirmation, or its refusal of the command."""
    import sqlalchemy as sa

    from controller.storage.schema import commands

    deadline = time.monotonic() + wait_s
    while True:
        state = await rotation_state(db, ap_id)
        if state.state != "pending":
            return state, None
        if cmd_id is not None:
            async with db.connect() as conn:
                row = (
                    await conn.execute(
                        sa.select(commands.c.ok, commands.c.error).where(commands.c.id == cmd_id)
                    )
                ).first()
            if row is not None and row.ok is False:
                return state, row.error or "refused"
        if time.monotonic() >= deadline:
            return state, None
        await asyncio.sleep(0.2)


async def _rotate_main(settings: Any, args: argparse.Namespace) -> int:

    from controller.registry import Registry, RegistryError
    from controller.storage import open_database
    from controller.storage.schema import ap_key_rotations

    db = await open_database(settings.database.url.get_secret_value())
    try:
        reg = Registry(db, settings.command_master_key.get_secret_value())
        await reg.load()
        grace = float(args.grace if args.grace is not None else settings.mqtt.rotation_grace_s)
        try:
            current = reg.command_key(args.ap_id)
            new, generation, logins = await start_rotation(
                db, args.ap_id, current, time.time(), grace
            )
        except (RegistryError, ValueError) as exc:
            print(f"borne ap rotate: {exc}", file=sys.stderr)
            return 2
        await reg.reload(args.ap_id)
        m = settings.mqtt
        controller = (
            (m.username, m.password.get_secret_value()) if m.username and m.password else None
        )
        passwd, acl = Path(args.passwd_file), Path(args.acl_file)
        try:
            await asyncio.to_thread(write_broker_files, logins, controller, passwd, acl)
        except OSError as exc:
            print(f"borne ap rotate: cannot write the broker files: {exc}", file=sys.stderr)
            return 1
        if args.broker_reload and (
            err := await asyncio.to_thread(_reload_broker, args.broker_reload)
        ):
            print(f"borne ap rotate: broker reload failed: {err}", file=sys.stderr)
            return 1
        cmd_id, error = None, None
        if not args.no_send:
            creds = {
                "command_key": new.command_key,
                "mqtt_username": new.mqtt_username,
                "mqtt_password": new.mqtt_password,
                "grace_s": str(int(grace)),
            }
            cmd_id, error = await _send_rotation(settings, db, reg, args.ap_id, current, creds)
            async with db.begin() as conn:
                await conn.execute(
                    ap_key_rotations.update()
                    .where(ap_key_rotations.c.ap_id == args.ap_id)
                    .values(command_id=cmd_id)
                )
        state, refused = (await rotation_state(db, args.ap_id)), None
        if cmd_id is not None and args.wait > 0:
            state, refused = await _wait_confirmed(db, args.ap_id, cmd_id, args.wait)
        _print_rotation(args, new, generation, state, error or refused)
        return 0
    finally:
        await db.aclose()


def _print_rotation(
    args: argparse.Namespace,
    new: Enrolment,
    generation: int,
    state: RotationState,
    problem: str | None,
) -> None:
    if args.json:
        out = {
            "ap_id": new.ap_id,
            "command_key": new.command_key,
            "mqtt_username": new.mqtt_username,
            "mqtt_password": new.mqtt_password,
            "generation": generation,
            "state": state.state,
            "grace_until": state.grace_until,
            "command_id": state.command_id,
            "problem": problem,
        }
        print(json.dumps(out))
    else:
        print(new.agent_toml(), end="")
    if problem:
        print(f"# {args.ap_id}: {problem}", file=sys.stderr)
    print(
        f"# Identifiants de {args.ap_id} renouvelés (génération {generation}) : {state.state}.\n"
        "# Les anciens restent valides jusqu'à la fin du délai de grâce ; mettez le coffre\n"
        "# (vault) de la borne à jour : ce mot de passe ne sera plus affiché.\n"
        f"# Credentials of {args.ap_id} rotated (generation {generation}): {state.state}.\n"
        "# The old ones stay valid until the end of the grace period; update the AP's\n"
        "# vault: this password is not shown again.",
        file=sys.stderr,
    )


def _cmd_rotation(args: argparse.Namespace) -> int:
    from controller.config import settings_or_exit

    settings = settings_or_exit(args.config)

    async def go() -> int:
        from controller.storage import open_database

        db = await open_database(settings.database.url.get_secret_value())
        try:
            state = await rotation_state(db, args.ap_id)
        finally:
            await db.aclose()
        if args.json:
            print(json.dumps(state.as_dict()))
        else:
            print(f"{state.ap_id}: {state.state} (generation {state.generation})")
        return 0

    return asyncio.run(go())


def _cmd_broker_files(args: argparse.Namespace) -> int:
    from controller.config import settings_or_exit

    settings = settings_or_exit(args.config)

    async def go() -> int:
        from controller.storage import open_database

        db = await open_database(settings.database.url.get_secret_value())
        try:
            now = time.time()
            ended = await finish_rotations(db, now)
            async with db.connect() as conn:
                logins = await broker_logins(conn, now)
        finally:
            await db.aclose()
        m = settings.mqtt
        controller = (
            (m.username, m.password.get_secret_value()) if m.username and m.password else None
        )
        try:
            write_broker_files(logins, controller, Path(args.passwd_file), Path(args.acl_file))
        except OSError as exc:
            print(f"borne ap broker-files: {exc}", file=sys.stderr)
            return 1
        if args.broker_reload and (err := _reload_broker(args.broker_reload)):
            print(f"borne ap broker-files: broker reload failed: {err}", file=sys.stderr)
            return 1
        print(f"{len(logins)} login(s) written; rotations ended: {', '.join(ended) or 'none'}")
        return 0

    return asyncio.run(go())


def _broker_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--passwd-file", default=DEFAULT_PASSWD_FILE, help="mosquitto password_file")
    p.add_argument("--acl-file", default=DEFAULT_ACL_FILE, help="mosquitto acl_file")
    p.add_argument(
        "--broker-reload",
        default=None,
        metavar="CMD",
        help='command that makes mosquitto re-read its files ("systemctl reload mosquitto")',
    )
    p.add_argument("-c", "--config", help="controller TOML configuration file")


def add_enroll_parser(ap_sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``borne ap enroll``, ``rotate``, ``rotation`` and ``broker-files``."""
    r = ap_sub.add_parser(
        "rotate", help="issue a new command key and MQTT login; the old ones expire after a grace"
    )
    r.add_argument("ap_id")
    r.add_argument("--grace", type=float, default=None, help="seconds (default: rotation_grace_s)")
    r.add_argument("--no-send", action="store_true", help="do not send rotate_credentials")
    r.add_argument("--wait", type=float, default=0.0, help="seconds to wait for the confirmation")
    r.add_argument("--json", action="store_true", help="print JSON (for Ansible)")
    _broker_args(r)
    r.set_defaults(func=_cmd_rotate)
    st = ap_sub.add_parser("rotation", help="where an access point's credential rotation stands")
    st.add_argument("ap_id")
    st.add_argument("--json", action="store_true")
    st.add_argument("-c", "--config", help="controller TOML configuration file")
    st.set_defaults(func=_cmd_rotation)
    bf = ap_sub.add_parser(
        "broker-files", help="end expired rotations and rewrite mosquitto's password and ACL"
    )
    _broker_args(bf)
    bf.set_defaults(func=_cmd_broker_files)
    p = ap_sub.add_parser(
        "enroll",
        help="register an access point, issue its MQTT login, ACL entry and command key",
    )
    p.add_argument("ap_id")
    p.add_argument("--insee", required=True, help="INSEE code of its commune")
    p.add_argument("--name", default=None)
    p.add_argument("--passwd-file", default=DEFAULT_PASSWD_FILE, help="mosquitto password_file")
    p.add_argument("--acl-file", default=DEFAULT_ACL_FILE, help="mosquitto acl_file")
    p.add_argument("-c", "--config", help="controller TOML configuration file")
    p.set_defaults(func=_cmd_enroll)
