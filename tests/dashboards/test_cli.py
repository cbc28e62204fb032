"""``borne account ...`` run as a real process against a SQLite database."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pyotp

from controller.storage import open_database
from dashboards._auth import Role, verify_password
from dashboards.accounts import AccountStore

PASSWORD = "le premier administrateur"


async def _borne(db_url: str, *args: str, stdin: str = "") -> tuple[int, str, str]:
    env = {**os.environ, "BORNE__DATABASE__URL": db_url}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "controller.cli", "account", *args,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip
    out, err = await proc.communicate(stdin.encode())
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_first_admin_gets_an_argon2_hash_and_a_totp_secret(tmp_path: Path) -> None:
    """``account add --role admin`` stores an argon2id hash and prints a working TOTP secret."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'state.db'}"
    code, out, err = await _borne(
        url, "add", "admin", "--role", "admin", "--password-stdin", stdin=PASSWORD + "\n"
    )
    assert code == 0, err
    assert "compte créé" in out and "otpauth://totp/" in out
    secret = out.split("shown once):")[1].split()[0]
    assert pyotp.TOTP(secret).now().isdigit()
    db = await open_database(url)
    try:
        creds = await AccountStore(db).credentials("admin")
    finally:
        await db.aclose()
    assert creds is not None and creds.account.role is Role.ADMIN
    assert creds.totp_secret == secret
    assert PASSWORD not in creds.password_hash
    assert await asyncio.to_thread(verify_password, creds.password_hash, PASSWORD)


async def test_epci_account_gets_the_members_and_bad_input_is_refused(tmp_path: Path) -> None:
    """``--epci`` expands to the EPCI's member communes; short passwords and unknown INSEE fail."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'state.db'}"
    table = tmp_path / "epci.csv"
    await asyncio.to_thread(
        table.write_text,
        "CODGEO;LIBGEO;EPCI;LIBEPCI\n"
        "46240;Rocamadour;200066389;CC Causses et Vallée de la Dordogne\n"
        "46213;Padirac;200066389;CC Causses et Vallée de la Dordogne\n"
        "46042;Cahors;200023737;CA du Grand Cahors\n",
        "utf-8",
    )
    args = ["--role", "commune_viewer", "--epci", "200066389", "--epci-file", str(table)]
    code, _, err = await _borne(url, "add", "cauvaldor", *args, "--password-stdin", stdin=PASSWORD)
    assert code == 0, err
    code, out, _ = await _borne(url, "list")
    assert code == 0
    assert "cauvaldor\tcommune_viewer\tactif/active\t46213,46240" in out
    code, _, err = await _borne(
        url, "add", "x1", "--role", "technician", "--password-stdin", stdin="court"
    )
    assert code == 2 and "12" in err
    code, _, err = await _borne(
        url, "add", "x2", "--role", "commune_viewer", "--commune", "99999",
        "--password-stdin", stdin=PASSWORD,
    )  # fmt: skip
    assert code == 2 and "99999" in err
    code, _, _ = await _borne(url, "disable", "cauvaldor")
    assert code == 0
    code, out, _ = await _borne(url, "list")
    assert "désactivé/disabled" in out


async def _dashboard(db_url: str, *args: str) -> tuple[int, str, str]:
    env = {**os.environ, "BORNE__DATABASE__URL": db_url}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "controller.cli", "dashboard", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_dashboard_report_makes_a_months_reports_by_hand(tmp_path: Path) -> None:
    """``dashboard report --month --all`` makes the equipped communes' reports once
    (again with --force); a bad month or no commune is refused; an unknown one fails."""
    from controller.registry import Registry, lot_communes
    from controller.stats import SqlStatsStore
    from dashboards.reports import ReportStore
    from tests.dashboards.test_reports import MONTH, simulated_month

    url = f"sqlite+aiosqlite:///{tmp_path / 'state.db'}"
    db = await open_database(url)
    try:
        registry = Registry(db, "cli test key")
        await registry.add_communes(lot_communes())
        await registry.add_access_point("rocamadour-01", "46240", "Rocamadour")
        await registry.add_access_point("cahors-01", "46042", "Cahors")
        await SqlStatsStore(db).write(list(await asyncio.to_thread(simulated_month)))
    finally:
        await db.aclose()
    code, out, err = await _dashboard(url, "report", "--month", MONTH, "--all")
    assert code == 0, err
    assert "2 rapport(s)" in out and "46042" in out and "46240" in out
    code, out, _ = await _dashboard(url, "report", "--month", MONTH, "--all")
    assert code == 0 and "0 rapport(s)" in out
    code, out, _ = await _dashboard(
        url, "report", "--month", MONTH, "--commune", "46240", "--force"
    )
    assert code == 0 and "1 rapport(s)" in out
    assert (await _dashboard(url, "report", "--month", "2026-4", "--all"))[0] == 2
    assert (await _dashboard(url, "report", "--month", MONTH))[0] == 2
    code, _, err = await _dashboard(url, "report", "--month", MONTH, "--commune", "99999")
    assert code == 1 and "99999" in err
    db = await open_database(url)
    try:
        listing = await ReportStore(db).listing(None)
    finally:
        await db.aclose()
    assert sorted(r.insee for r in listing) == ["46042", "46240"]
