"""``borne inventory export``: the Ansible inventory of the fleet, written from the registry.

Layout (``deploy/ansible``, ``docs/DEPLOY.md``)::

    access_points
      epci_<SIREN>            one group per EPCI (intercommunalité), when known
        commune_<INSEE>       one group per commune
          <ap_id>             host vars: ap_id, insee, commune, latitude, longitude

The registry does not know EPCIs: they come from INSEE's "composition communale des
EPCI" table given with ``--epci`` (``CODGEO``/``EPCI``/``LIBEPCI`` columns, ``;`` or
``,``); communes it does not list go to ``epci_unknown``. The uplink and the address
Ansible connects to are site facts the registry does not hold either: keep them in
``host_vars/<ap_id>/site.yml``, which the export never touches.

Secrets are never written in clear: ``--vault-password-file`` writes each AP's command
key to ``host_vars/<ap_id>/vault.yml`` encrypted by ``ansible-vault``; without it, no
key is written at all. Building the inventory is pure (``build_inventory``,
``render_yaml``); only ``export_inventory`` touches files and processes.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "AccessPointRecord",
    "Epci",
    "InventoryError",
    "build_inventory",
    "export_inventory",
    "parse_epci_table",
    "register",
    "render_yaml",
]

UNKNOWN_EPCI = "epci_unknown"
_SIREN_RE = re.compile(r"^[0-9]{9}$")


class InventoryError(ValueError):
    """The inventory cannot be written as asked."""


@dataclass(frozen=True)
class Epci:
    """An intercommunalité: its SIREN number and name."""

    siren: str
    name: str


@dataclass(frozen=True)
class AccessPointRecord:
    """What the inventory needs of one registered access point."""

    ap_id: str
    insee: str
    commune: str
    name: str
    lon: float | None
    lat: float | None


def parse_epci_table(text: str) -> dict[str, Epci]:
    """Read INSEE's commune → EPCI table (``CODGEO``, ``EPCI``, ``LIBEPCI``).

    Also accepts the headers ``insee_code``, ``epci_siren``, ``epci_name``.

    Raises:
        InventoryError: missing columns or a bad SIREN number.
    """
    sample = text[:4096]
    delimiter = ";" if sample.count(";") > sample.count(",") else ","
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")), delimiter=delimiter)
    fields = {f.strip().lower(): f for f in reader.fieldnames or []}
    names = [("codgeo", "epci", "libepci"), ("insee_code", "epci_siren", "epci_name")]
    found = [cols for cols in names if cols[0] in fields and cols[1] in fields]
    if not found:
        raise InventoryError("EPCI table: expected columns CODGEO;EPCI;LIBEPCI")
    insee_col, siren_col, name_col = found[0]
    table: dict[str, Epci] = {}
    for line, row in enumerate(reader, start=2):
        insee = (row.get(fields[insee_col]) or "").strip()
        siren = (row.get(fields[siren_col]) or "").strip()
        if not insee or siren in ("", "ZZZZZZZZZ"):  # INSEE's code for "no EPCI"
            continue
        if not _SIREN_RE.match(siren):
            raise InventoryError(f"EPCI table, line {line}: bad SIREN {siren!r}")
        label = (row.get(fields[name_col]) or "").strip() if name_col in fields else ""
        table[insee] = Epci(siren, label)
    return table


def build_inventory(
    aps: Iterable[AccessPointRecord],
    epci: Mapping[str, Epci],
    *,
    group_vars: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The inventory as nested dicts (Ansible's YAML inventory structure)."""
    tree: dict[str, dict[str, dict[str, Any]]] = {}
    for ap in sorted(aps, key=lambda a: a.ap_id):
        found = epci.get(ap.insee)
        group = f"epci_{found.siren}" if found else UNKNOWN_EPCI
        hostvars: dict[str, Any] = {
            "ap_id": ap.ap_id,
            "insee": ap.insee,
            "commune": ap.commune,
            "ap_name": ap.name,
        }
        if ap.lat is not None and ap.lon is not None:
            hostvars["latitude"] = round(ap.lat, 6)
            hostvars["longitude"] = round(ap.lon, 6)
        if found and found.name:
            hostvars["epci"] = found.name
        tree.setdefault(group, {}).setdefault(f"commune_{ap.insee}", {})[ap.ap_id] = hostvars
    children = {
        group: {"children": {c: {"hosts": hosts} for c, hosts in sorted(communes.items())}}
        for group, communes in sorted(tree.items())
    }
    root: dict[str, Any] = {"children": {"access_points": {"children": children}}}
    if group_vars:
        root = {"vars": dict(group_vars), **root}
    return {"all": root}


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    # A JSON string is a valid YAML double-quoted scalar: no quoting rule to get wrong.
    return json.dumps(str(value), ensure_ascii=False)


def render_yaml(data: Mapping[str, Any], indent: int = 0) -> str:
    """A small YAML writer for nested mappings of scalars (keys are Ansible names)."""
    lines: list[str] = []
    pad = "  " * indent
    for key, value in data.items():
        if isinstance(value, Mapping):
            if value:
                lines.append(f"{pad}{key}:")
                lines.append(render_yaml(value, indent + 1))
            else:
                lines.append(f"{pad}{key}: {{}}")
        else:
            lines.append(f"{pad}{key}: {_scalar(value)}")
    text = "\n".join(lines)
    return text + "\n" if indent == 0 else text


def _encrypt(plain: str, vault_password_file: Path, ansible_vault: str) -> str:
    proc = subprocess.run(
        [ansible_vault, "encrypt", "--vault-password-file", str(vault_password_file), "-"],
        input=plain,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if proc.returncode != 0 or not proc.stdout.startswith("$ANSIBLE_VAULT"):
        raise InventoryError(f"ansible-vault encrypt failed: {proc.stderr.strip()[-300:]}")
    return proc.stdout


def _decrypt(path: Path, vault_password_file: Path, ansible_vault: str) -> dict[str, Any]:
    """The variables of an existing vault file.

    Raises:
        InventoryError: it cannot be decrypted or does not hold a mapping.
    """
    import yaml  # type: ignore[import-untyped]  # PyYAML comes with ansible-core

    proc = subprocess.run(
        [ansible_vault, "view", "--vault-password-file", str(vault_password_file), str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if proc.returncode != 0:
        raise InventoryError(f"cannot decrypt {path}: {proc.stderr.strip()[-300:]}")
    data = yaml.safe_load(proc.stdout)
    if data is not None and not isinstance(data, dict):
        raise InventoryError(f"{path} does not hold a mapping")
    return dict(data or {})


def _write_files(
    out: Path,
    inventory: dict[str, Any],
    keys: Mapping[str, str],
    vault_password_file: Path | None,
) -> list[Path]:
    """Write hosts.yml and, with a vault password, one encrypted vault per AP."""
    out.mkdir(parents=True, exist_ok=True)
    header = (
        "---\n# Written by `borne inventory export` from the controller's registry: do not edit\n"
        "# by hand (site facts such as ansible_host and uplink go to host_vars/<ap>/site.yml).\n"
    )
    written = [out / "hosts.yml"]
    (out / "hosts.yml").write_text(header + render_yaml(inventory), encoding="utf-8")
    if vault_password_file is not None:
        ansible_vault = shutil.which("ansible-vault") or str(
            Path(sys.executable).parent / "ansible-vault"
        )
        if not Path(ansible_vault).exists():
            raise InventoryError("ansible-vault not found (pip install ansible-core)")
        for ap_id, key in sorted(keys.items()):
            path = out / "host_vars" / ap_id / "vault.yml"
            # An existing vault keeps its other secrets (the MQTT login rotate.yml wrote).
            kept = _decrypt(path, vault_password_file, ansible_vault) if path.exists() else {}
            plain = "---\n" + render_yaml({**kept, "borne_agent_command_key": key})
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(_encrypt(plain, vault_password_file, ansible_vault))
            path.chmod(0o600)
            written.append(path)
    return written


async def export_inventory(
    settings: Any,
    out: Path,
    *,
    epci_file: Path | None = None,
    vault_password_file: Path | None = None,
) -> list[Path]:
    """Read the registry and write the inventory under ``out``; returns the files written.

    Raises:
        InventoryError: unreadable EPCI table, missing ansible-vault, encryption failure.
    """
    from controller.registry import Registry
    from controller.storage import open_database

    epci: dict[str, Epci] = {}
    if epci_file is not None:
        try:
            text = await asyncio.to_thread(epci_file.read_text, "utf-8")
        except OSError as exc:
            raise InventoryError(f"cannot read {epci_file}: {exc.strerror}") from exc
        epci = parse_epci_table(text)
    db = await open_database(settings.database.url.get_secret_value())
    try:
        registry = Registry(db, settings.command_master_key.get_secret_value())
        await registry.load()
        rows = await registry.access_points()
        aps = [AccessPointRecord(r.ap_id, r.insee, r.commune, r.name, r.lon, r.lat) for r in rows]
        keys = {ap.ap_id: registry.command_key(ap.ap_id) for ap in aps}
    finally:
        await db.aclose()
    inventory = build_inventory(aps, epci)
    return await asyncio.to_thread(_write_files, out, inventory, keys, vault_password_file)


def _cmd_export(args: argparse.Namespace) -> int:
    from controller.config import ConfigError, load_settings

    try:
        settings = load_settings(Path(args.config) if args.config else None)
    except ConfigError as exc:
        print("configuration problems / problèmes de configuration:", file=sys.stderr)
        for p in exc.problems:
            print(f"  {p.path}: {p.message}", file=sys.stderr)
        return 2
    try:
        written = asyncio.run(
            export_inventory(
                settings,
                Path(args.output),
                epci_file=Path(args.epci) if args.epci else None,
                vault_password_file=(
                    Path(args.vault_password_file) if args.vault_password_file else None
                ),
            )
        )
    except InventoryError as exc:
        print(f"borne inventory export: {exc}", file=sys.stderr)
        return 2
    for path in written:
        print(path)
    if args.vault_password_file is None:
        print(
            "clés non exportées (pas de --vault-password-file) / keys not exported "
            "(no --vault-password-file)",
            file=sys.stderr,
        )
    return 0


def register(subparsers: Any) -> None:
    """Add ``borne inventory export`` to the ``borne`` command."""
    inv = subparsers.add_parser("inventory", help="Ansible inventory / inventaire Ansible")
    inv_sub = inv.add_subparsers(dest="inventory_command", required=True)
    exp = inv_sub.add_parser(
        "export",
        help="write the Ansible inventory from the registry / écrire l'inventaire Ansible",
    )
    exp.add_argument("-o", "--output", required=True, help="inventory directory to write")
    exp.add_argument("--epci", help="INSEE commune → EPCI table (CODGEO;EPCI;LIBEPCI)")
    exp.add_argument(
        "--vault-password-file",
        help="also write each AP's command key, encrypted with ansible-vault",
    )
    exp.add_argument("-c", "--config", help="controller TOML configuration file")
    exp.set_defaults(func=_cmd_export)
