"""Keys of the legal log: the master key providers, the day keys, the signing key.

Each day has three random keys: ``identity`` and ``traffic`` (AES-256-GCM data keys of
the two parts of a record) and ``index`` (MAC key of the blind search index). They are
stored only wrapped (AES-256-GCM) by a master key that never sits in the log's
directory nor in the state database: it comes from a file or from the environment (a
pluggable :class:`MasterKeyProvider`). Destroying a day's wrapped key destroys the day's
data in every copy, backups included (crypto-shredding).

The signing key (Ed25519) signs the daily tree heads, the shredding statements and the
exports. This module does not decide when a key is destroyed (see ``store``).
"""

from __future__ import annotations

import base64
import binascii
import os
import secrets
from pathlib import Path
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from controller.legal.errors import KeyError_

__all__ = [
    "PURPOSES",
    "MasterKey",
    "MasterKeyProvider",
    "generate_signing_key",
    "load_signing_key",
    "parse_master_key",
    "public_key_bytes",
    "unwrap",
    "wrap",
]

PURPOSES = ("identity", "traffic", "index")


class MasterKeyProvider(Protocol):
    """Gives the master key (key-encryption key); HSM or KMS providers fit here too."""

    def master_key(self) -> bytes:
        """The 32-byte master key."""
        ...


def parse_master_key(text: str) -> bytes:
    """Decode a master key written in base64 (32 bytes).

    Raises:
        KeyError_: it is not base64 of exactly 32 bytes.
    """
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise KeyError_("the master key is not base64") from exc
    if len(raw) != 32:
        raise KeyError_("the master key must be 32 bytes (base64 of 32 random bytes)")
    return raw


class MasterKey:
    """A master key already in memory (from the environment through the settings)."""

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise KeyError_("the master key must be 32 bytes")
        self._key = key

    @classmethod
    def from_text(cls, text: str) -> MasterKey:
        """A master key from its base64 text.

        Raises:
            KeyError_: malformed.
        """
        return cls(parse_master_key(text))

    @classmethod
    def from_file(cls, path: Path) -> MasterKey:
        """Read a base64 master key from a file (keep it 0600, outside the log's folder).

        Raises:
            KeyError_: missing or malformed.
        """
        try:
            return cls(parse_master_key(path.read_text()))
        except OSError as exc:
            raise KeyError_(f"cannot read the master key file {path}: {exc}") from exc

    @staticmethod
    def new_text() -> str:
        """A fresh random master key, base64."""
        return base64.b64encode(secrets.token_bytes(32)).decode()

    def master_key(self) -> bytes:
        """The 32-byte master key."""
        return self._key


def _aad(day: str, purpose: str) -> bytes:
    return f"borne-legal-key|{day}|{purpose}".encode()


def wrap(provider: MasterKeyProvider, day: str, purpose: str, key: bytes) -> bytes:
    """Wrap a day key: nonce (12 bytes) then AES-256-GCM ciphertext bound to day and purpose."""
    nonce = secrets.token_bytes(12)
    return nonce + AESGCM(provider.master_key()).encrypt(nonce, key, _aad(day, purpose))


def unwrap(provider: MasterKeyProvider, day: str, purpose: str, blob: bytes) -> bytes:
    """Unwrap a day key.

    Raises:
        KeyError_: wrong master key, or a blob of another day or purpose.
    """
    try:
        return AESGCM(provider.master_key()).decrypt(blob[:12], blob[12:], _aad(day, purpose))
    except (InvalidTag, ValueError) as exc:
        raise KeyError_(f"cannot unwrap the {purpose} key of {day} (wrong master key?)") from exc


def generate_signing_key(path: Path) -> Ed25519PublicKey:
    """Write a new Ed25519 private key (PEM, mode 0600) and return its public key."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    return key.public_key()


def load_signing_key(path: Path) -> Ed25519PrivateKey:
    """Read the Ed25519 private key.

    Raises:
        KeyError_: missing, unreadable or not an Ed25519 key.
    """
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError) as exc:
        raise KeyError_(f"cannot read the signing key {path}: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyError_(f"{path} is not an Ed25519 private key")
    return key


def public_key_bytes(key: Ed25519PublicKey) -> bytes:
    """The raw 32 bytes of a public key."""
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
