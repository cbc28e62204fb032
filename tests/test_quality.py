"""Static checks run with the tests: ruff (lint and format), mypy --strict on code and tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ["agents", "controller", "captive_portal", "radius", "dashboards"]


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def test_ruff_lint_is_clean() -> None:
    """ruff finds nothing in the source and the tests."""
    out = run("ruff", "check", ".")
    assert out.returncode == 0, out.stdout + out.stderr


def test_ruff_format_is_clean() -> None:
    """The code is formatted as ruff formats it."""
    out = run("ruff", "format", "--check", ".")
    assert out.returncode == 0, out.stdout + out.stderr


def test_mypy_strict_is_clean() -> None:
    """mypy --strict (configured in pyproject.toml) accepts every package and the tests."""
    out = run("mypy", *PACKAGES, "tests")
    assert out.returncode == 0, out.stdout + out.stderr
