"""The test tree mirrors the source: ``pkg/_mod.py`` → ``tests/pkg/test_mod.py``."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("controller", "captive_portal", "agents", "radius", "dashboards")
# Test folders that cut across packages on purpose.
CROSS_CUTTING = {"e2e", "benchmarks"}


def _test_files() -> list[Path]:
    return sorted(p for p in (ROOT / "tests").rglob("test_*.py") if p.parent != ROOT / "tests")


@pytest.mark.parametrize("path", _test_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_each_test_module_names_a_source_module(path: Path) -> None:
    """A test module under tests/<pkg>/ is named after a module of <pkg>."""
    rel = path.relative_to(ROOT / "tests")
    if rel.parts[0] in CROSS_CUTTING:
        return
    assert rel.parts[0] in PACKAGES, f"{rel}: tests/<package>/ only"
    package = ROOT.joinpath(*rel.parts[:-1])
    name = path.stem.removeprefix("test_")
    candidates = [package / f"{name}.py", package / f"_{name}.py", package / name]
    assert any(c.exists() for c in candidates), f"{rel}: no module {name} in {package.name}/"


def test_every_package_is_tested() -> None:
    """Each top-level package with code has tests."""
    for pkg in PACKAGES:
        has_code = any(p.name != "__init__.py" for p in (ROOT / pkg).glob("*.py"))
        if has_code:
            assert list((ROOT / "tests" / pkg).glob("test_*.py")), f"{pkg} has no tests"
