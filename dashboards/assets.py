"""The charting library: installed from npm at set-up, never committed, served by the app.

Apache ECharts (``echarts`` on npm, Apache-2.0, an Apache Software Foundation project)
draws the usage charts and the flows' Sankey view. ``borne dashboard assets install``
runs npm into a data directory (``[dashboard] assets_dir``); the dashboards serve the
library's browser bundle from there at ``/assets/echarts.min.js``. Without it the pages
keep their server-drawn SVG charts and tables: nothing depends on the script.

The version is pinned; npm checks the package's integrity (SHA-512 of the tarball, from
the registry's metadata) and records it in the directory's ``package-lock.json``.
"""

from __future__ import annotations

import base64
import dataclasses
import gzip
import hashlib
import json
import shutil
import subprocess
from pathlib import Path
from typing import Final

__all__ = [
    "ECHARTS_VERSION",
    "AssetError",
    "Bundle",
    "bundle_path",
    "install",
    "load_bundle",
]

ECHARTS_VERSION: Final = "6.1.0"
PACKAGE: Final = "echarts"
# Inside the install directory, where npm puts the browser bundle.
_BUNDLE: Final = Path("node_modules") / PACKAGE / "dist" / "echarts.min.js"
# The URL the pages load it from.
URL: Final = "/assets/echarts.min.js"
NPM_TIMEOUT_S: Final = 600.0


class AssetError(Exception):
    """The library could not be installed (message in French / English)."""


@dataclasses.dataclass(frozen=True, slots=True)
class Bundle:
    """The library's browser bundle, in memory, ready to serve.

    Attributes:
        body: the script.
        gzipped: the same, gzip-compressed once (served to browsers that accept it).
        etag: a strong validator (SHA-256 of the body).
        version: the installed version.
    """

    body: bytes
    gzipped: bytes
    etag: str
    version: str


def bundle_path(directory: Path) -> Path:
    """Where the bundle is inside an install directory."""
    return directory / _BUNDLE


def install(directory: Path, npm: str | None = None, version: str = ECHARTS_VERSION) -> Path:
    """Install the pinned library with npm into ``directory``; the bundle's path.

    Runs ``npm install --prefix DIRECTORY --ignore-scripts echarts@VERSION`` (npm checks
    the package's integrity), then checks that the bundle and the pinned version are there.

    Raises:
        AssetError: npm missing or failing, or the bundle absent or not the one npm
            verified.
    """
    npm = npm or shutil.which("npm")
    if npm is None:
        raise AssetError("npm introuvable (paquet Debian npm) / npm not found")
    directory.mkdir(parents=True, exist_ok=True)
    argv = [
        npm,
        "install",
        "--prefix",
        str(directory),
        "--ignore-scripts",
        "--no-audit",
        "--no-fund",
        "--save-exact",
        f"{PACKAGE}@{version}",
    ]
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=NPM_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise AssetError(f"npm a échoué / npm failed: {exc}") from exc
    if done.returncode != 0:
        raise AssetError(f"npm a échoué / npm failed ({done.returncode}): {done.stderr[-800:]}")
    path = bundle_path(directory)
    if not path.is_file():
        raise AssetError(f"bundle absent après npm / bundle missing: {path}")
    installed = _installed_version(directory)
    if installed != version:
        raise AssetError(f"version {installed!r} installée, {version} attendue / wrong version")
    return path


def _installed_version(directory: Path) -> str | None:
    try:
        meta = json.loads((directory / "node_modules" / PACKAGE / "package.json").read_text())
    except (OSError, ValueError):
        return None
    version = meta.get("version")
    return version if isinstance(version, str) else None


def load_bundle(directory: Path | None) -> Bundle | None:
    """The installed bundle, or None when the library was not installed there.

    Blocking (reads about 1 MB and compresses it): call it at start-up, in a thread.
    """
    if directory is None:
        return None
    path = bundle_path(directory)
    try:
        body = path.read_bytes()
    except OSError:
        return None
    version = _installed_version(directory) or "?"
    digest = hashlib.sha256(body).digest()
    etag = '"' + base64.urlsafe_b64encode(digest).decode().rstrip("=") + '"'
    return Bundle(body, gzip.compress(body, 6, mtime=0), etag, version)
