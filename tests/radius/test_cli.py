"""``borne radius`` commands, run as a user runs them (a real ``borne`` process)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

from controller.config import load_settings
from controller.storage import open_database
from radius._devices import KnownDevices, Terms


def borne(tmp_path: Path, *argv: str) -> tuple[int, str]:
    config = tmp_path / "borne.toml"
    config.write_text(f'[database]\nurl = "sqlite+aiosqlite:///{tmp_path / "s.db"}"\n')
    proc = subprocess.run(
        [sys.executable, "-m", "controller.cli", "radius", *argv, "-c", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=60,
        check=False,
    )
    return proc.returncode, proc.stdout


def test_nas_add_generates_a_secret_and_lists_it(tmp_path: Path) -> None:
    """nas-add registers the AP and the NAS, prints a generated secret; nas-list shows it."""
    rc, out = borne(
        tmp_path, "nas-add", "nas-46042-01", "--insee", "46042", "--address", "192.0.2.10"
    )
    assert rc == 0, out
    assert "secret partagé / shared secret: " in out
    secret = out.rsplit(": ", 1)[1].strip()
    assert len(secret) >= 24
    rc, out = borne(tmp_path, "nas-list")
    assert rc == 0 and "nas-46042-01\t192.0.2.10\tINSEE 46042\tCoA 3799\t-" in out, out


def test_nas_add_of_a_uam_gateway(tmp_path: Path) -> None:
    """--uam-secret registers a UAM gateway's uamsecret (listed as UAM, never printed);
    a too short one is refused."""
    args = ("nas-add", "nas-46042-02", "--insee", "46042", "--address", "192.0.2.11")
    rc, out = borne(tmp_path, *args, "--uam-secret", "abc")
    assert rc == 2 and "UAM secret must be 8 to 200" in out, out
    rc, out = borne(tmp_path, *args, "--uam-secret", "uam-secret-of-the-gateway")
    assert rc == 0, out
    rc, out = borne(tmp_path, "nas-list")
    assert rc == 0 and "nas-46042-02\t192.0.2.11\tINSEE 46042\tCoA 3799\tUAM" in out, out
    assert "uam-secret-of-the-gateway" not in out


def test_bad_input_gets_a_clear_error(tmp_path: Path) -> None:
    """A bad address, a short secret and an unknown NAS are refused with exit code 2."""
    rc, out = borne(tmp_path, "nas-add", "nas-1", "--insee", "46042", "--address", "nope")
    assert rc == 2 and "not an IP address" in out
    rc, out = borne(
        tmp_path,
        "nas-add",
        "nas-1",
        "--insee",
        "46042",
        "--address",
        "192.0.2.1",
        "--secret",
        "short",
    )
    assert rc == 2 and "at least 16" in out
    rc, out = borne(tmp_path, "disconnect", "--nas", "nas-x", "--session-id", "s")
    assert rc == 2 and "NAS inconnu / unknown NAS: nas-x" in out


def test_forget_device(tmp_path: Path) -> None:
    """forget-device deletes a remembered device (any MAC spelling); a bad MAC: exit 2."""
    rc, out = borne(tmp_path, "nas-list")  # creates and migrates the database
    assert rc == 0, out
    settings = load_settings(None, database={"url": f"sqlite+aiosqlite:///{tmp_path / 's.db'}"})

    async def remember_then_find(remember: bool) -> bool:
        db = await open_database(settings.database.url.get_secret_value())
        try:
            devices = KnownDevices(db, settings.radius.device_key.get_secret_value(), "v")
            if remember:
                await devices.remember("02:00:00:00:00:aa", Terms("", "v"), now=1e9, hours=24)
            return await devices.find("02:00:00:00:00:aa") is not None
        finally:
            await db.aclose()

    assert asyncio.run(remember_then_find(True))
    rc, out = borne(tmp_path, "forget-device", "02-00-00-00-00-AA")
    assert rc == 0 and "device forgotten" in out, out
    assert not asyncio.run(remember_then_find(False))
    rc, out = borne(tmp_path, "forget-device", "02-00-00-00-00-AA")
    assert rc == 0 and "device not known" in out, out
    rc, out = borne(tmp_path, "forget-device", "nope")
    assert rc == 2 and "not a MAC address" in out, out
