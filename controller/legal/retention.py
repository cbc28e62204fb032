"""Forgetting on time: the purge that destroys day keys, and legal holds.

CPCE L34-1 II and L39-3 I 1° make keeping data past its retention an offence, like not
keeping it. The purge destroys, for each day past retention, the keys that open it
(crypto-shredding: the ciphertext left on disk and in backups can no longer be read by
anyone) and appends a signed statement naming the destroyed keys. The records' hashes
stay, so the days still verify.

A legal hold (L34-1 III bis rapid retention, or a seizure) keeps named records past
their day's purge: they are decrypted once and re-encrypted under a key of the hold's
own, wrapped by the master key, until the hold is released (its key destroyed in turn).
This module reads the settings' durations but no clock: ``now`` is passed in.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import secrets
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from controller.config import LegalSettings
from controller.legal.errors import LegalError
from controller.legal.keys import unwrap, wrap
from controller.legal.records import LegalRecord
from controller.legal.store import Found, LegalStore

__all__ = ["Hold", "due", "list_holds", "place_hold", "purge", "read_hold", "release_hold"]

_HOLD_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def _age_days(day: str, now: float) -> int:
    d = dt.date.fromisoformat(day)
    return (dt.datetime.fromtimestamp(now, dt.UTC).date() - d).days


def due(day: str, now: float, settings: LegalSettings) -> list[str]:
    """The key purposes of ``day`` that must be destroyed at ``now``.

    A day's records are written at or after their connection, so a day is kept
    ``retention_days`` full days after its own date (the 1 year runs from the connection).
    """
    age = _age_days(day, now)
    if age > settings.retention_days:
        return ["identity", "traffic", "index"]
    if not settings.national_security_decree and age > settings.traffic_retention_days:
        return ["traffic"]
    return []


def purge(store: LegalStore, settings: LegalSettings, now: float) -> list[dict[str, Any]]:
    """Destroy every key past retention; return the signed statements (blocking)."""
    out = []
    for day in store.days():
        purposes = due(day, now, settings)
        if purposes:
            store.seal(day, now)
            statement = store.shred(day, purposes, now)
            if statement is not None:
                out.append(statement)
    return out


@dataclass(frozen=True)
class Hold:
    """A legal hold: its name (the requisition or seizure reference) and its records."""

    name: str
    records: list[Found]


def _hold_dir(store: LegalStore, name: str) -> Any:
    if not _HOLD_NAME.fullmatch(name):
        raise LegalError("a hold name is 1-64 letters, digits, '.', '_' or '-'")
    return store.directory / "holds" / name


def place_hold(store: LegalStore, name: str, day: str, seqs: list[int]) -> int:
    """Copy records of ``day`` under the hold ``name`` (blocking); return how many.

    Raises:
        LegalError: a bad name, or the day is already shredded.
    """
    path = _hold_dir(store, name)
    path.mkdir(parents=True, exist_ok=True)
    key_file = path / "hold.key"
    if key_file.exists():
        key = unwrap(store.provider, name, "hold", key_file.read_bytes())
    else:
        key = secrets.token_bytes(32)
        key_file.write_bytes(wrap(store.provider, name, "hold", key))
    found = store.read(day, seqs)
    hashes = store._stored_hashes(day)
    aes = AESGCM(key)
    lines = []
    for f in found:
        nonce = secrets.token_bytes(12)
        plain = json.dumps(f.record.as_dict(), sort_keys=True).encode()
        ct = aes.encrypt(nonce, plain, f"{name}|{f.day}|{f.seq}".encode())
        lines.append(
            json.dumps(
                {
                    "day": f.day,
                    "seq": f.seq,
                    "leaf_hash": hashes[f.seq].hex(),
                    "ct": (nonce + ct).hex(),
                }
            )
        )
    with (path / "records.jsonl").open("a") as fh:
        fh.write("".join(line + "\n" for line in lines))
        fh.flush()
        os.fsync(fh.fileno())
    return len(lines)


def read_hold(store: LegalStore, name: str) -> Hold:
    """The records kept by a hold (decrypted with the hold's key)."""
    path = _hold_dir(store, name)
    key_file = path / "hold.key"
    if not key_file.exists():
        raise LegalError(f"no hold {name!r} (or it was released)")
    aes = AESGCM(unwrap(store.provider, name, "hold", key_file.read_bytes()))
    out = []
    for line in (path / "records.jsonl").read_text().splitlines():
        e = json.loads(line)
        blob = bytes.fromhex(e["ct"])
        plain = aes.decrypt(blob[:12], blob[12:], f"{name}|{e['day']}|{e['seq']}".encode())
        out.append(Found(e["day"], e["seq"], LegalRecord(**json.loads(plain))))
    return Hold(name, out)


def release_hold(store: LegalStore, name: str) -> None:
    """Release a hold: its key is destroyed, its copies become unreadable."""
    key_file = _hold_dir(store, name) / "hold.key"
    if key_file.exists():
        key_file.write_bytes(bytes(len(key_file.read_bytes())))
        key_file.unlink()


def list_holds(store: LegalStore) -> list[str]:
    """Names of the holds in force."""
    base = store.directory / "holds"
    if not base.exists():
        return []
    return sorted(p.name for p in base.iterdir() if (p / "hold.key").exists())
