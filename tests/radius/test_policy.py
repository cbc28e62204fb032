"""Who gets an Access-Accept and with which limits: the commune's own idle timeout and
data quota in the reply, against a real ``radclient``."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from controller.config import Settings, load_settings
from controller.storage import Database
from radius import AccessPolicy
from radius._policy import limits_at
from tests.radius.conftest import MASTER, Running, radclient

MAC_AUTH = (
    'User-Name = "{m}"\nUser-Password = "{m}"\nCalling-Station-Id = "{m}"\n'
    "Message-Authenticator = 0x00\n"
)


@pytest.fixture
def radius_settings(tmp_path: Path) -> Settings:
    """Rocamadour (46201) has its own idle timeout and data quota; the rest of the
    territory has ``[radius]``'s."""
    return load_settings(
        None,
        database={"url": f"sqlite+aiosqlite:///{tmp_path / 'state.db'}"},
        command_master_key=MASTER,
        sessions={"acct_interval_s": 60, "session_minutes": 120, "up_kbps": 2000},
        radius={
            "enabled": True,
            "auth_port": 1,
            "acct_port": 1,
            "idle_timeout_s": 600,
            "max_total_mb": 2000,
        },
        portal={"communes": {"46201": {"idle_timeout_s": 120, "quota_mb": 300}}},
    )


def test_limits_of_a_commune_and_of_the_rest(radius_settings: Settings) -> None:
    """A commune's own idle timeout and quota win; elsewhere ``[radius]``'s apply, and
    an openNDS login keeps the gateway's default quota (0 in ``authorize``)."""
    own = limits_at(radius_settings, "46201")
    assert (own.idle_timeout_s, own.quota_mb, own.radius_quota_mb) == (120, 300, 300)
    assert own.quota_kb == 300 * 1_000_000 // 1024
    other = limits_at(radius_settings, "46042")
    assert (other.idle_timeout_s, other.quota_mb, other.radius_quota_mb) == (600, None, 2000)
    assert other.quota_kb == 0
    assert limits_at(radius_settings, None) == other
    assert (own.minutes, own.up_kbps) == (other.minutes, other.up_kbps) == (120, 2000)


def test_a_commune_may_lift_the_quota() -> None:
    """``quota_mb = 0`` at a commune means no quota there, even with a global one."""
    settings = load_settings(
        None,
        radius={"max_total_mb": 2000, "idle_timeout_s": 900},
        portal={"communes": {"46102": {"quota_mb": 0, "idle_timeout_s": 0}}},
    )
    at = limits_at(settings, "46102")
    assert (at.radius_quota_mb, at.quota_kb, at.idle_timeout_s) == (0, 0, 0)


async def test_mac_auth_and_pap_replies_carry_the_communes_limits(
    radius_server: Running, radius_db: Database, radius_settings: Settings
) -> None:
    """At a NAS of Rocamadour, a MAC-authenticated device and a UAM credential without
    limits of its own get Rocamadour's Idle-Timeout and data quota; a credential's own
    quota (a voucher's) still wins."""
    policy = AccessPolicy(radius_db, radius_settings)
    now = time.time()
    await policy.devices.remember(
        "02:00:00:00:00:aa", await policy.devices.terms_in_force("46201"), now=now, hours=24
    )
    known = await radclient(radius_server.auth_port, "auth", MAC_AUTH.format(m="02-00-00-00-00-AA"))
    assert "Received Access-Accept" in known.out, known.out
    assert "Idle-Timeout = 120" in known.out, known.out
    assert "ChilliSpot-Max-Total-Octets = 300000000" in known.out, known.out
    await policy.add_credential("uam-a", "pw-a", now + 60, 30)
    await policy.add_credential("uam-b", "pw-b", now + 60, 30, quota_mb=50)
    pap = 'User-Name = "{u}"\nUser-Password = "{p}"\nMessage-Authenticator = 0x00\n'
    plain = await radclient(radius_server.auth_port, "auth", pap.format(u="uam-a", p="pw-a"))
    assert "Received Access-Accept" in plain.out, plain.out
    assert "Idle-Timeout = 120" in plain.out and "Session-Timeout = 1800" in plain.out
    assert "ChilliSpot-Max-Total-Octets = 300000000" in plain.out, plain.out
    voucher = await radclient(radius_server.auth_port, "auth", pap.format(u="uam-b", p="pw-b"))
    assert "ChilliSpot-Max-Total-Octets = 50000000" in voucher.out, voucher.out
    assert "Idle-Timeout = 120" in voucher.out, voucher.out
