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
