"""Master key providers and wrapping of day keys."""

from __future__ import annotations

import base64
import stat
from pathlib import Path

import pytest

from controller.legal.errors import KeyError_
from controller.legal.keys import (
    MasterKey,
    generate_signing_key,
    load_signing_key,
    parse_master_key,
    unwrap,
    wrap,
)


def test_wrapped_key_is_bound_to_its_day_and_purpose() -> None:
    """A wrapped key unwraps for its own day and purpose only, and only with its master."""
    m = MasterKey.from_text(MasterKey.new_text())
    blob = wrap(m, "2026-09-21", "identity", b"k" * 32)
    assert unwrap(m, "2026-09-21", "identity", blob) == b"k" * 32
    for day, purpose in (("2026-09-22", "identity"), ("2026-09-21", "traffic")):
        with pytest.raises(KeyError_):
            unwrap(m, day, purpose, blob)
    with pytest.raises(KeyError_):
        unwrap(MasterKey.from_text(MasterKey.new_text()), "2026-09-21", "identity", blob)


@pytest.mark.parametrize("text", ["", "not base64!", base64.b64encode(b"short").decode()])
def test_malformed_master_keys_are_refused(text: str) -> None:
    """A master key must be base64 of 32 bytes."""
    with pytest.raises(KeyError_):
        parse_master_key(text)


def test_master_key_file_and_signing_key_file(tmp_path: Path) -> None:
    """Keys load from files; the signing key is written 0600; a missing file is an error."""
    (tmp_path / "m.key").write_text(MasterKey.new_text() + "\n")
    assert len(MasterKey.from_file(tmp_path / "m.key").master_key()) == 32
    with pytest.raises(KeyError_):
        MasterKey.from_file(tmp_path / "missing.key")
    pub = generate_signing_key(tmp_path / "s.pem")
    assert stat.S_IMODE((tmp_path / "s.pem").stat().st_mode) == 0o600
    assert load_signing_key(tmp_path / "s.pem").public_key() == pub
    (tmp_path / "bad.pem").write_text("nope")
    with pytest.raises(KeyError_):
        load_signing_key(tmp_path / "bad.pem")
