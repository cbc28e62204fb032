"""Gateway helpers: what a restart of openNDS must give back, atomic file replacement."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from agents.gateway import GatewayError, replace_file, restore_plan

NOW = 1_790_000_000.0


def ndsctl_json(**clients: dict[str, str]) -> str:
    return json.dumps({"client_length": len(clients), "clients": clients})


def test_each_logged_in_client_gets_back_what_it_had_left() -> None:
    """As ``ndsctl json`` of openNDS 9.10 shows it: strings, ``null`` for unset limits."""
    text = ndsctl_json(
        a={
            "mac": "02:00:00:00:00:0a",
            "state": "Authenticated",
            "session_end": str(int(NOW) + 419),
            "upload_rate_limit_threshold": "500",
            "download_rate_limit_threshold": "null",
            "upload_quota": "null",
            "download_quota": "10000",
            "download_this_session": "2500",
            "upload_this_session": "0",
        },
        b={"mac": "02:00:00:00:00:0b", "state": "Preauthenticated", "session_end": "null"},
        c={"mac": "02:00:00:00:00:0c", "state": "Authenticated", "session_end": str(int(NOW) - 5)},
        d={"mac": "02:00:00:00:00:0d", "state": "Authenticated", "session_end": "null"},
        e={"mac": "not-a-mac", "state": "Authenticated"},
    )
    assert restore_plan(text, NOW) == {
        # 419 s left: 7 minutes (rounded up); the rest of the download quota.
        "02:00:00:00:00:0a": ["7", "500", "0", "0", "7500"],
        # openNDS shows unlimited values (0 at login) as null: 0 again.
        "02:00:00:00:00:0d": ["0", "0", "0", "0", "0"],
    }


def test_garbage_from_ndsctl_is_an_error() -> None:
    with pytest.raises(GatewayError):
        restore_plan("pgrep: noise", NOW)
    assert restore_plan(json.dumps({"clients": "x"}), NOW) == {}


def test_replace_file_keeps_the_mode_and_leaves_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "opennds.conf"
    path.write_text("old\n")
    path.chmod(0o640)
    replace_file(str(path), "new\n")
    assert path.read_text() == "new\n" and (path.stat().st_mode & 0o777) == 0o640
    assert os.listdir(tmp_path) == ["opennds.conf"]
    with pytest.raises(GatewayError, match="cannot write"):
        replace_file(str(tmp_path / "missing-dir" / "x.conf"), "x")
