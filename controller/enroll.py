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
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import os
import secrets
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

from agents.contract import AGENT_KINDS, AP_ID_RE, TOPIC_PREFIX

if TYPE_CHECKING:  # imported lazily: ``borne`` builds this parser at every start
    from controller.storage import Database

__all__ = [
    "Enrolment",
    "acl_file",
    "add_enroll_parser",
    "enroll",
    "mosquitto_hash",
    "password_file",
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
    """The ACL file: each AP writes its own topics (not ``cmd``) and reads its ``cmd``."""
    lines = [
        "# Written by borne ap enroll: do not edit, it is rewritten at each enrolment.",
        "# An AP writes only under its own id and reads only its own commands.",
    ]
    if controller_username:
        lines += ["", f"user {controller_username}", f"topic readwrite {TOPIC_PREFIX}/#"]
    for ap_id in sorted(ap_ids):
        lines += ["", f"user {ap_id}"]
        lines += [f"topic write {TOPIC_PREFIX}/{ap_id}/{kind}" for kind in AGENT_KINDS]
        lines.append(f"topic read {TOPIC_PREFIX}/{ap_id}/cmd")
    return "\n".join(lines) + "\n"


def _write_atomically(path: Path, text: str, mode: int = 0o640) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as fh:
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
    import sqlalchemy as sa

    from controller.storage.schema import ap_mqtt_logins

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
        rows = (
            await conn.execute(sa.select(ap_mqtt_logins.c.username, ap_mqtt_logins.c.password_hash))
        ).all()
    return password, [(r.username, r.password_hash) for r in rows]


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


def add_enroll_parser(ap_sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``borne ap enroll`` to the ``ap`` subcommands."""
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
