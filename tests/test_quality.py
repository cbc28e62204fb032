"""Static checks run with the tests: ruff (lint and format), mypy --strict on code and tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ["agents", "controller", "captive_portal", "radius", "dashboards"]
TESTS = ROOT / "tests"
# Test directories mypy does not check yet, and why. Every other module and package
# of tests/ is checked, a new one included.
TESTS_NOT_YET_TYPED = {
    "agents": "test_contract.py reads the agent's MQTT Will through a monkeypatched "
    "MqttLink that agents.agent does not export (Agent.link_will is set by the test)",
}


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


def typed_tests() -> list[str]:
    """The modules and packages of tests/ that mypy checks: all but TESTS_NOT_YET_TYPED."""
    return [
        str(path.relative_to(ROOT))
        for path in sorted(TESTS.iterdir())
        if path.suffix == ".py"
        or ((path / "__init__.py").is_file() and path.name not in TESTS_NOT_YET_TYPED)
    ]


def test_tests_not_yet_typed_are_test_packages() -> None:
    """Each directory left out of mypy exists (a stale entry would hide nothing)."""
    for name in TESTS_NOT_YET_TYPED:
        assert (TESTS / name / "__init__.py").is_file(), name
    assert "tests/testbed.py" in typed_tests() and "tests/e2e" in typed_tests()


def test_mypy_strict_is_clean() -> None:
    """mypy --strict (configured in pyproject.toml) accepts every package and the tests."""
    out = run("mypy", *PACKAGES, *typed_tests())
    assert out.returncode == 0, out.stdout + out.stderr
