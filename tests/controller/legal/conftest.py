"""Fixtures for the legal log: a store in a temporary folder with its own keys."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from controller.legal.keys import MasterKey
from controller.legal.records import LegalRecord
from controller.legal.store import LegalStore

T0 = 1_790_000_000.0  # 2026-09-21 UTC


def record(i: int, **changes: Any) -> LegalRecord:
    """A plausible record number ``i``; ``changes`` replaces fields (checked by
    ``dataclasses.replace``: an unknown name is a TypeError)."""
    plausible = LegalRecord(
        session_id=str(i),
        event="start",
        auth_method="click",
        auth_ref=f"cmd-{i}",
        client_mac=f"02:00:00:00:{i // 256 % 256:02x}:{i % 256:02x}",
        private_ip=f"10.46.1.{i % 200 + 10}",
        public_ip="192.0.2.1",
        port_start=1024 + (i % 100) * 512,
        port_end=1024 + (i % 100) * 512 + 511,
        start_ms=int(T0 * 1000) + i,
        stop_ms=None,
        gateway="ap-46201-01",
        commune="46201",
        up_bytes=0,
        down_bytes=0,
        terminate_cause=None,
    )
    return dataclasses.replace(plausible, **changes)


@pytest.fixture
def master() -> MasterKey:
    """A random master key."""
    return MasterKey.from_text(MasterKey.new_text())


@pytest.fixture
def signing() -> Ed25519PrivateKey:
    """A random signing key."""
    return Ed25519PrivateKey.generate()


@pytest.fixture
def store(tmp_path: Path, master: MasterKey, signing: Ed25519PrivateKey) -> LegalStore:
    """An empty store with checkpoints at every batch."""
    return LegalStore(tmp_path / "legal", master, signing, checkpoint_s=0.0)
