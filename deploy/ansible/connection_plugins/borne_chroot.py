"""Ansible connection to a directory holding a root file system (``chroot``), ansible-core only.

Why it exists: the ``community.general.chroot`` plugin is not part of ansible-core and
Ansible Galaxy is not always reachable from the machines that build AP images or run the
tests. This plugin does the minimum: each command runs as ``chroot <root> /bin/sh -c``,
files go in and out through ``dd`` run inside the root (so that symlinks resolve inside
it, never on the host). It needs root on the machine running ``ansible-playbook``. It
starts no service and mounts nothing.

Use: ``ansible_connection: borne_chroot`` and ``ansible_host: /path/to/root``.
"""

from __future__ import annotations

import os
import shlex
import subprocess

from ansible.errors import AnsibleError
from ansible.plugins.connection import ConnectionBase

DOCUMENTATION = """
    name: borne_chroot
    short_description: run tasks inside a root file system with chroot (ansible-core only)
    description:
        - Runs commands with chroot(8) in a directory holding a root file system, for
          example a Debian root made with debootstrap, an AP image being prepared, or the
          test suite's Debian root.
    author: borne
    options:
        remote_addr:
            description: path of the root file system
            default: inventory_hostname
            type: str
            vars:
                - name: inventory_hostname
                - name: ansible_host
    extends_documentation_fragment:
        - connection_pipelining
"""

_CHUNK = 65536


class Connection(ConnectionBase):  # type: ignore[misc]
    """Run commands and copy files inside a chroot."""

    transport = "borne_chroot"
    has_pipelining = True
    default_user = "root"

    def _root(self) -> str:
        root = str(self.get_option("remote_addr"))
        if not os.path.isdir(root):
            raise AnsibleError(f"borne_chroot: {root} is not a directory")
        if not os.path.exists(os.path.join(root, "bin", "sh")):
            raise AnsibleError(f"borne_chroot: {root} has no /bin/sh")
        return root

    def _connect(self) -> Connection:
        if os.geteuid() != 0:
            raise AnsibleError("borne_chroot: chroot needs root on the machine running Ansible")
        self._root()
        self._connected = True
        return self

    def _run(self, cmd: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            ["chroot", self._root(), "/bin/sh", "-c", cmd],
            input=stdin,
            capture_output=True,
            check=False,
        )

    def exec_command(
        self, cmd: str, in_data: bytes | None = None, sudoable: bool = False
    ) -> tuple[int, bytes, bytes]:
        """Run ``cmd`` with /bin/sh inside the root."""
        super().exec_command(cmd, in_data=in_data, sudoable=sudoable)
        proc = self._run(cmd, in_data if in_data is not None else b"")
        return proc.returncode, proc.stdout, proc.stderr

    def put_file(self, in_path: str, out_path: str) -> None:
        """Copy a local file to ``out_path`` inside the root."""
        super().put_file(in_path, out_path)
        with open(in_path, "rb") as fh:
            data = fh.read()
        proc = self._run(f"dd of={shlex.quote(out_path)} bs={_CHUNK} status=none", data)
        if proc.returncode != 0:
            raise AnsibleError(f"borne_chroot: cannot write {out_path}: {proc.stderr!r}")

    def fetch_file(self, in_path: str, out_path: str) -> None:
        """Copy ``in_path`` from inside the root to a local file."""
        super().fetch_file(in_path, out_path)
        proc = self._run(f"dd if={shlex.quote(in_path)} bs={_CHUNK} status=none")
        if proc.returncode != 0:
            raise AnsibleError(f"borne_chroot: cannot read {in_path}: {proc.stderr!r}")
        with open(out_path, "wb") as fh:
            fh.write(proc.stdout)

    def close(self) -> None:
        """Nothing to close: each command is its own process."""
        self._connected = False
