"""``apply_config`` on the agent's side: versions, idempotence and the applied state.

The controller numbers each AP's configuration; the agent remembers the last version it
applied and a digest of its settings (``<state_dir>/config-<ap_id>.json``, replaced
atomically), and reports the version in its ``status``. For a command:

* an older version than the applied one is refused (``stale version``): commands may
  arrive out of order, the newest settings stay;
* settings already applied (same digest, files as wanted) are acknowledged ``unchanged``
  and nothing restarts, whatever the version number;
* otherwise the gateway writes its files (on OpenWrt: its UCI packages, see
  :mod:`agents._uci`) and restarts the daemons whose file or package changed, and the
  result is ``applied``. When the state is unknown (first apply, or a previous
  attempt wrote the files but failed to restart: its digest is cleared), the next
  attempt rewrites and restarts everything.

Standard library only.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Final, Literal

from agents._gwconf import config_problems
from agents.contract import ApplyConfigArgs, canonical_bytes
from agents.gateway import Gateway, GatewayError

__all__ = ["ConfigApplier", "settings_digest"]

logger = logging.getLogger(__name__)

Result = Literal["applied", "unchanged"]

# Fields added to ApplyConfigArgs after its first release: left out of the digest when
# 0, so that settings which do not use them keep the digest, hence the version, they had.
_LATER_FIELDS: Final = ("idle_timeout_minutes",)


def settings_digest(args: ApplyConfigArgs) -> str:
    """SHA-256 of the settings without their version number."""
    fields = dataclasses.asdict(args)
    fields.pop("version")
    for name in _LATER_FIELDS:
        if not fields[name]:
            del fields[name]
    return hashlib.sha256(canonical_bytes(fields)).hexdigest()


class ConfigApplier:
    """Applies versioned gateway settings once; ``state_file`` None keeps them in memory."""

    def __init__(self, gateway: Gateway, state_file: Path | None) -> None:
        self._gateway = gateway
        self._state_file = state_file
        self.version: int | None = None
        self._digest: str | None = None
        self._load()

    def _load(self) -> None:
        if self._state_file is None:
            return
        try:
            data = json.loads(self._state_file.read_text())
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            logger.warning("applied configuration state unreadable, starting empty: %s", exc)
            return
        if isinstance(data, dict) and isinstance(data.get("version"), int):
            self.version = data["version"]
            digest = data.get("digest")
            self._digest = digest if isinstance(digest, str) else None

    def _save(self) -> None:
        if self._state_file is None:
            return
        self._state_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._state_file.with_suffix(".tmp")
        with tmp.open("w") as fh:
            json.dump({"version": self.version, "digest": self._digest}, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self._state_file)

    def apply(self, args: ApplyConfigArgs) -> Result:
        """Apply ``args``; return ``applied`` or ``unchanged``.

        Raises:
            GatewayError: the settings are invalid, older than the applied ones, or the
                gateway could not apply them.
        """
        problems = config_problems(args)
        if problems:
            raise GatewayError("bad settings: " + "; ".join(problems)[:180])
        if self.version is not None and args.version < self.version:
            raise GatewayError(f"stale version {args.version} (applied: {self.version})")
        digest = settings_digest(args)
        try:
            # Forced when the state is unknown: first run, or the last attempt failed.
            changed = self._gateway.apply_config(args, force=self._digest is None)
        except GatewayError:
            self._digest = None
            self._save()
            raise
        self.version, self._digest = args.version, digest
        self._save()
        if changed:
            logger.info("configuration version %d applied", args.version)
        return "applied" if changed else "unchanged"
