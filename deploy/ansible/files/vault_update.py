"""rotate.yml's vault writer: put an AP's new credentials into its ansible-vault file.

Run on the machine running Ansible, with the Python that runs Ansible (ansible-core's
``VaultLib``, no other dependency). The new values arrive as a JSON object on standard
input (never on the command line); the file is decrypted if it exists, the values are
replaced (other variables are kept), and the result is encrypted again and written
atomically with mode 0600. Prints ``updated <path>``; exits 1 with the reason otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import yaml
from ansible.errors import AnsibleError
from ansible.parsing.vault import VaultLib, VaultSecret


def update(path: Path, password_file: Path, values: dict[str, str]) -> None:
    """Merge ``values`` into the vault file ``path``."""
    secret = VaultSecret(password_file.read_bytes().strip())
    vault = VaultLib([("default", secret)])
    data: dict[str, Any] = {}
    if path.exists():
        loaded = yaml.safe_load(vault.decrypt(path.read_bytes()))
        if loaded is not None and not isinstance(loaded, dict):
            raise ValueError(f"{path} does not hold a mapping")
        data = dict(loaded or {})
    data.update(values)
    text = "---\n" + yaml.safe_dump(data, default_flow_style=False, sort_keys=True)
    sealed = vault.encrypt(text)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.new")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(sealed)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def main() -> int:
    """Read the values on stdin and update the vault."""
    p = argparse.ArgumentParser(prog="vault_update")
    p.add_argument("--vault-file", required=True, type=Path)
    p.add_argument("--vault-password-file", required=True, type=Path)
    args = p.parse_args()
    try:
        values = json.loads(sys.stdin.read())
        if not isinstance(values, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in values.items()
        ):
            raise ValueError("standard input must be a JSON object of strings")
        update(args.vault_file, args.vault_password_file, values)
    except (OSError, ValueError, yaml.YAMLError, AnsibleError) as exc:
        print(f"cannot update {args.vault_file}: {exc}", file=sys.stderr)
        return 1
    print(f"updated {args.vault_file}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
