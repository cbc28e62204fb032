"""Ansible filter ``borne_mosquitto_hash``: a mosquitto 2 password-file hash, reproducibly.

``mosquitto_passwd`` draws a random salt, so a role that called it would rewrite the
password file (and reload the broker) at every run. This filter computes the same
format (``$7$<iterations>$<salt>$<hash>``: PBKDF2-HMAC-SHA512, 12-byte salt, 64-byte
key, as mosquitto 2.0's ``pw_sha512_pbkdf2``) with a salt derived from the user name and
the password: still unique per login, stable across runs while the password is. Pure
function; no file or network access.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable
from typing import Any

ITERATIONS = 101  # mosquitto_passwd's default for $7$ (mosquitto 2.0)


def borne_mosquitto_hash(password: str, username: str, iterations: int = ITERATIONS) -> str:
    """The password-file entry's hash part for ``username``/``password``."""
    salt = hmac.new(password.encode(), b"borne/mosquitto-salt/" + username.encode(), "sha512")
    salt_bytes = salt.digest()[:12]
    key = hashlib.pbkdf2_hmac("sha512", password.encode(), salt_bytes, iterations, 64)
    salt_b64 = base64.b64encode(salt_bytes).decode()
    key_b64 = base64.b64encode(key).decode()
    return f"$7${iterations}${salt_b64}${key_b64}"


class FilterModule:
    """Ansible's entry point for filter plugins."""

    def filters(self) -> dict[str, Callable[..., Any]]:
        """The filters this module provides."""
        return {"borne_mosquitto_hash": borne_mosquitto_hash}
