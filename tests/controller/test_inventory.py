"""``borne inventory export``: groups per EPCI and commune, host vars, keys only vault-encrypted.

Ansible itself is the peer that reads what the export writes: ``ansible-inventory`` for
the groups and host variables, ``ansible-vault`` for the encrypted keys.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from controller.inventory import (
    UNKNOWN_EPCI,
    AccessPointRecord,
    Epci,
    InventoryError,
    build_inventory,
    parse_epci_table,
    render_yaml,
)

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[2]

EPCI_CSV = (
    "CODGEO;LIBGEO;EPCI;LIBEPCI;DEP;REG\n"
    "46042;Cahors;200023737;CA du Grand Cahors;46;76\n"
    "46201;Rocamadour;200066710;CC Causses et Vallée de la Dordogne (Cauvaldor);46;76\n"
    "46999;Nulle part;ZZZZZZZZZ;Sans objet;46;76\n"
)


def run(*argv: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ANSIBLE_HOME": str((cwd or Path.cwd()) / ".ansible-home")}
    return subprocess.run(
        [str(BIN / argv[0]), *argv[1:]],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=cwd,
        env=env,
    )


def test_epci_table_reads_insee_columns_and_skips_communes_without_epci() -> None:
    """INSEE's CODGEO;EPCI;LIBEPCI table maps communes; ZZZZZZZZZ (no EPCI) is left out."""
    table = parse_epci_table("\ufeff" + EPCI_CSV)
    assert table == {
        "46042": Epci("200023737", "CA du Grand Cahors"),
        "46201": Epci("200066710", "CC Causses et Vallée de la Dordogne (Cauvaldor)"),
    }
    comma = parse_epci_table("insee_code,epci_siren,epci_name\n46042,200023737,Grand Cahors\n")
    assert comma["46042"].siren == "200023737"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a;b;c\n1;2;3\n", "expected columns"),
        ("CODGEO;EPCI;LIBEPCI\n46042;2000;Cahors\n", "line 2: bad SIREN"),
    ],
)
def test_epci_table_errors_name_the_problem(text: str, message: str) -> None:
    """A table without the columns or with a bad SIREN is refused with the reason."""
    with pytest.raises(InventoryError, match=message):
        parse_epci_table(text)


def test_inventory_groups_aps_by_epci_then_commune_with_host_vars() -> None:
    """APs land in epci_<SIREN> > commune_<INSEE>; unknown EPCI goes to epci_unknown."""
    aps = [
        AccessPointRecord("ap-46201-02", "46201", "Rocamadour", "Parking", 1.6, 44.8),
        AccessPointRecord("ap-46201-01", "46201", "Rocamadour", "Office", None, None),
        AccessPointRecord("ap-46102-01", "46102", "Figeac", "Mairie", 2.03, 44.6),
    ]
    inv = build_inventory(aps, {"46201": Epci("200066710", "Cauvaldor")})
    groups = inv["all"]["children"]["access_points"]["children"]
    assert list(groups) == ["epci_200066710", UNKNOWN_EPCI]
    rocamadour = groups["epci_200066710"]["children"]["commune_46201"]["hosts"]
    assert list(rocamadour) == ["ap-46201-01", "ap-46201-02"]
    assert rocamadour["ap-46201-02"] == {
        "ap_id": "ap-46201-02",
        "insee": "46201",
        "commune": "Rocamadour",
        "ap_name": "Parking",
        "latitude": 44.8,
        "longitude": 1.6,
        "epci": "Cauvaldor",
    }
    assert "latitude" not in rocamadour["ap-46201-01"]
    assert list(groups[UNKNOWN_EPCI]["children"]) == ["commune_46102"]


def test_rendered_yaml_is_read_back_by_ansible_inventory(tmp_path: Path) -> None:
    """ansible-inventory reads the rendered YAML: groups, hosts and quoted strings intact."""
    tricky = 'Saint-Cirq-Lapopie: "l\'église" # not a comment'
    aps = [AccessPointRecord("ap-46256-01", "46256", tricky, "Mairie", 1.67, 44.46)]
    path = tmp_path / "hosts.yml"
    path.write_text(render_yaml(build_inventory(aps, {"46256": Epci("200066710", "Cauvaldor")})))
    out = run("ansible-inventory", "-i", str(path), "--list", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    listed = json.loads(out.stdout)
    assert listed["_meta"]["hostvars"]["ap-46256-01"]["commune"] == tricky
    assert listed["_meta"]["hostvars"]["ap-46256-01"]["insee"] == "46256"
    assert listed["commune_46256"]["hosts"] == ["ap-46256-01"]
    assert "commune_46256" in listed["epci_200066710"]["children"]


def _controller_conf(tmp_path: Path) -> Path:
    conf = tmp_path / "borne.toml"
    conf.write_text(
        'command_master_key = "inventory-test-master-key-0123"\n'
        f'[database]\nurl = "sqlite+aiosqlite:///{tmp_path / "state.db"}"\n'
    )
    return conf


@pytest.mark.slow
def test_export_writes_inventory_and_only_vault_encrypted_keys(tmp_path: Path) -> None:
    """The export's inventory lists every registered AP; its key is only in an encrypted vault."""
    conf = _controller_conf(tmp_path)
    keys: dict[str, Any] = {}
    for ap_id, insee in [("ap-46201-01", "46201"), ("ap-46042-01", "46042")]:
        added = run("borne", "ap", "add", ap_id, "--insee", insee, "-c", str(conf))
        assert added.returncode == 0, added.stderr
        keys[ap_id] = added.stdout.strip()
    (tmp_path / "epci.csv").write_text(EPCI_CSV)
    (tmp_path / "vault-pass").write_text(f"pw-{time.time_ns()}\n")

    plain_dir = tmp_path / "plain"
    plain = run("borne", "inventory", "export", "-o", str(plain_dir), "-c", str(conf))
    assert plain.returncode == 0, plain.stderr
    assert not (plain_dir / "host_vars").exists()
    assert "keys not exported" in plain.stderr

    out_dir = tmp_path / "inv"
    exported = run(
        "borne", "inventory", "export", "-o", str(out_dir), "--epci", str(tmp_path / "epci.csv"),
        "--vault-password-file", str(tmp_path / "vault-pass"), "-c", str(conf),
    )  # fmt: skip
    assert exported.returncode == 0, exported.stderr
    hosts = (out_dir / "hosts.yml").read_text()
    for key in keys.values():
        assert key not in hosts
    graph = run("ansible-inventory", "-i", str(out_dir / "hosts.yml"), "--graph", cwd=tmp_path)
    assert graph.returncode == 0, graph.stderr
    assert "@epci_200066710:" in graph.stdout and "@commune_46201:" in graph.stdout
    assert "@epci_200023737:" in graph.stdout and "ap-46042-01" in graph.stdout
    for ap_id, key in keys.items():
        vault = out_dir / "host_vars" / ap_id / "vault.yml"
        assert vault.read_text().startswith("$ANSIBLE_VAULT")
        assert key not in vault.read_text()
        assert vault.stat().st_mode & 0o077 == 0
        view = run(
            "ansible-vault", "view", "--vault-password-file", str(tmp_path / "vault-pass"),
            str(vault), cwd=tmp_path,
        )  # fmt: skip
        assert view.returncode == 0, view.stderr
        assert f'borne_agent_command_key: "{key}"' in view.stdout

    # rotate.yml adds the MQTT login to a vault; a later export keeps it.
    vault = out_dir / "host_vars" / "ap-46201-01" / "vault.yml"
    updated = subprocess.run(
        [sys.executable, str(ROOT / "deploy/ansible/files/vault_update.py"),
         "--vault-file", str(vault), "--vault-password-file", str(tmp_path / "vault-pass")],
        input='{"borne_agent_mqtt_username": "ap-46201-01.1", "borne_agent_mqtt_password": "pw-1"}',
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert updated.returncode == 0, updated.stderr
    again = run(
        "borne", "inventory", "export", "-o", str(out_dir),
        "--vault-password-file", str(tmp_path / "vault-pass"), "-c", str(conf),
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    view = run(
        "ansible-vault", "view", "--vault-password-file", str(tmp_path / "vault-pass"),
        str(vault), cwd=tmp_path,
    )  # fmt: skip
    assert 'borne_agent_mqtt_username: "ap-46201-01.1"' in view.stdout
    assert 'borne_agent_mqtt_password: "pw-1"' in view.stdout
    assert f'borne_agent_command_key: "{keys["ap-46201-01"]}"' in view.stdout


def test_export_refuses_a_bad_epci_table(tmp_path: Path) -> None:
    """A broken EPCI table stops the export with exit 2 and the reason, writing nothing."""
    conf = _controller_conf(tmp_path)
    (tmp_path / "epci.csv").write_text("nothing useful\n")
    out = run(
        "borne", "inventory", "export", "-o", str(tmp_path / "inv"),
        "--epci", str(tmp_path / "epci.csv"), "-c", str(conf),
    )  # fmt: skip
    assert out.returncode == 2
    assert "expected columns CODGEO;EPCI;LIBEPCI" in out.stderr
    assert not (tmp_path / "inv").exists()
