"""The charting library: installed by real npm from the registry, served by the app; the
pages without it keep their server-drawn charts."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import pytest

from dashboards.assets import ECHARTS_VERSION, AssetError, bundle_path, install, load_bundle
from tests.testbed import require


@pytest.fixture(scope="session")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ECharts installed once by ``install`` (npm) into a temporary directory."""
    npm = shutil.which("npm") or require("npm (Debian package npm)")
    directory = tmp_path_factory.mktemp("assets")
    try:
        install(directory, npm)
    except AssetError as exc:
        require(f"echarts from npm ({exc})")
    return directory


def test_install_puts_the_pinned_bundle_and_load_reads_it(installed: Path) -> None:
    """npm installs the pinned version; the bundle is loaded with its gzip and ETag."""
    path = bundle_path(installed)
    assert path.is_file() and path.stat().st_size > 500_000
    lock = (installed / "package-lock.json").read_text()
    assert f'"version": "{ECHARTS_VERSION}"' in lock and '"integrity": "sha512-' in lock
    bundle = load_bundle(installed)
    assert bundle is not None and bundle.version == ECHARTS_VERSION
    assert gzip.decompress(bundle.gzipped) == bundle.body
    assert b"echarts" in bundle.body[:5000] and bundle.etag.startswith('"')


def test_no_install_means_no_bundle(tmp_path: Path) -> None:
    """An empty or missing directory gives None (the pages fall back), never an error."""
    assert load_bundle(tmp_path) is None
    assert load_bundle(tmp_path / "absent") is None
    assert load_bundle(None) is None


def test_install_reports_a_failing_npm(tmp_path: Path) -> None:
    """A version npm cannot find is a clear error, not a half-installed directory served."""
    npm = shutil.which("npm") or require("npm (Debian package npm)")
    with pytest.raises(AssetError, match="npm"):
        install(tmp_path / "bad", npm, version="0.0.0-does-not-exist")
    with pytest.raises(AssetError, match="npm"):
        install(tmp_path / "none", str(tmp_path / "no-such-npm"))
