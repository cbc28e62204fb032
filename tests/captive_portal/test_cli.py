"""``borne voucher`` and ``borne portal`` commands, run as a user runs them (a real
``borne`` process), then the codes used through the store."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
from pathlib import Path

from captive_portal.store import PortalStore
from controller.storage import open_database
from tests.captive_portal.test_legal import LEGAL

SECRET = "cli-test-portal-secret"


def borne(tmp_path: Path, *argv: str) -> tuple[int, str]:
    config = tmp_path / "borne.toml"
    config.write_text(
        f'[database]\nurl = "sqlite+aiosqlite:///{tmp_path / "s.db"}"\n'
        f'[portal]\nsecret_key = "{SECRET}"\nnetwork_name = "Lot Wi-Fi"\n'
    )
    proc = subprocess.run(
        [sys.executable, "-m", "controller.cli", *argv, "-c", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=60,
        check=False,
    )
    return proc.returncode, proc.stdout


async def _redeem(tmp_path: Path, code: str, mac: str) -> int | None:
    db = await open_database(f"sqlite+aiosqlite:///{tmp_path / 's.db'}")
    try:
        grant = await PortalStore(db, SECRET).redeem(
            code, ap_id="ap-1", insee="46201", mac=mac, now=1_800_000_000.0
        )
    finally:
        await db.aclose()
    return None if grant is None else grant.minutes


def test_create_prints_a_sheet_whose_codes_work_and_revoke_stops_them(tmp_path: Path) -> None:
    """A batch's sheet holds its codes, which redeem with the batch's time; revoked, they fail."""
    sheet = tmp_path / "sheet.html"
    code, out = borne(
        tmp_path, "voucher", "create", "--count", "4", "--minutes", "180", "--expires",
        "2030-12-31", "--devices", "2", "--note", "office de tourisme", "--sheet", str(sheet),
    )  # fmt: skip
    assert code == 0, out
    batch = re.search(r"batch (\w+): 4 codes", out)
    assert batch is not None, out
    html = sheet.read_text()
    codes = re.findall(r'<div class="code">([A-Z0-9]{5}-[A-Z0-9]{5})</div>', html)
    assert len(set(codes)) == 4
    assert "Lot Wi-Fi" in html and "3 heures" in html and "3 hours" in html
    assert "31/12/2030" in html and "2 appareils / devices" in html
    assert asyncio.run(_redeem(tmp_path, codes[0], "aa:bb:cc:dd:ee:01")) == 180
    code, out = borne(tmp_path, "voucher", "list")
    assert code == 0 and batch.group(1) in out and "office de tourisme" in out, out
    code, out = borne(tmp_path, "voucher", "revoke", batch.group(1))
    assert (code, "4 vouchers revoked" in out) == (0, True), out
    assert asyncio.run(_redeem(tmp_path, codes[1], "aa:bb:cc:dd:ee:02")) is None


def test_bad_batches_and_texts_get_a_clear_error(tmp_path: Path) -> None:
    """A past or malformed date, or texts lacking an art. 13 field, are refused with a reason."""
    code, out = borne(
        tmp_path, "voucher", "create", "--count", "1", "--minutes", "60", "--expires",
        "2001-01-01", "--sheet", str(tmp_path / "s.html"),
    )  # fmt: skip
    assert code == 2 and "batch refused" in out, out
    code, out = borne(
        tmp_path, "voucher", "create", "--count", "1", "--minutes", "60", "--expires",
        "31/12/2030", "--sheet", str(tmp_path / "s.html"),
    )  # fmt: skip
    assert code == 2 and "invalid date" in out, out
    texts = tmp_path / "legal.json"
    texts.write_text(json.dumps({**LEGAL, "notice": {"dpo": "x"}}))
    code, out = borne(
        tmp_path, "portal", "legal-publish", "--insee", "46201", "--version", "r1", str(texts)
    )
    assert code == 2 and "notice.controller" in out, out


def test_legal_texts_publish_once_per_version(tmp_path: Path) -> None:
    """A version is published once; publishing it again is refused (proofs name it)."""
    texts = tmp_path / "legal.json"
    texts.write_text(json.dumps(LEGAL))
    argv = ("portal", "legal-publish", "--insee", "46201", "--version", "r1", str(texts))
    code, out = borne(tmp_path, *argv)
    assert code == 0, out
    code, out = borne(tmp_path, *argv)
    assert code == 2 and "exists already" in out, out
