"""``borne demo``: everything in one process, then the installed command in a fresh venv.

The in-process test runs the real thing (embedded amqtt broker, SQLite, controller,
portal, dashboards, agents in threads, visitors over HTTP) on free ports. The slow test
installs the project into a brand-new virtual environment and drives ``borne demo`` as
a user would, Ctrl-C included.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import sqlalchemy as sa

from controller.demo import DemoError, DemoInfo, run_demo
from controller.registry import lot_communes
from controller.storage import open_database
from controller.storage.schema import access_points, sessions
from tests.testbed import free_port

ROOT = Path(__file__).resolve().parents[2]
# Generous bounds for a loaded CI machine; every wait below polls and returns as soon as
# its condition holds (about 1 s for a first session on a laptop).
READY_S = 60.0
SESSION_S = 30.0


async def _poll(check: Callable[[], Awaitable[Any]], within: float, what: str) -> Any:
    """Await ``check()`` until it returns something truthy; fail after ``within`` s."""
    deadline = time.monotonic() + within
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = await check()
        except (aiohttp.ClientError, OSError) as exc:
            last, result = exc, None
        if result:
            return result
        await asyncio.sleep(0.1)
    raise AssertionError(f"{what}: not within {within:g} s (last error: {last})")


async def _run_until(check: Callable[[DemoInfo], Awaitable[None]], **kwargs: Any) -> DemoInfo:
    """Run the demo, await ``check(info)`` once it is ready, then stop it cleanly."""
    stop = asyncio.Event()
    ready: asyncio.Future[DemoInfo] = asyncio.get_running_loop().create_future()

    async def on_ready(info: DemoInfo) -> None:
        ready.set_result(info)

    async with asyncio.timeout(READY_S + SESSION_S + 60), asyncio.TaskGroup() as tg:
        demo = tg.create_task(run_demo(stop=stop, on_ready=on_ready, **kwargs), name="demo")
        try:
            started: set[asyncio.Future[Any]] = {ready, demo}
            done, _ = await asyncio.wait(
                started, timeout=READY_S, return_when=asyncio.FIRST_COMPLETED
            )
            assert ready in done, "the demo did not become ready"
            await check(ready.result())
        finally:
            # Stop it the normal way, even when a check failed, and let it finish.
            stop.set()
            await asyncio.wait({demo}, timeout=60)
    return ready.result()


async def test_demo_serves_portal_dashboard_and_simulated_sessions(tmp_path: Path) -> None:
    """The demo's portal and dashboard answer, and simulated visitors open real sessions."""
    database = f"sqlite+aiosqlite:///{tmp_path / 'demo.db'}"

    async def check(info: DemoInfo) -> None:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{info.portal_url}/healthz") as resp:
                assert resp.status == 200
                assert await resp.text() == "ok"
            async with http.get(info.try_url) as resp:
                page = await resp.text()
                assert resp.status == 200
                assert 'name="consent"' in page and 'method="post"' in page
            async with http.get(info.dashboard_url) as resp:
                assert resp.status == 200
                assert "<title>borne — tableau de bord</title>" in await resp.text()

            async def open_sessions() -> list[dict[str, Any]]:
                async with http.get(f"{info.dashboard_url}api/sessions") as resp:
                    data = await resp.json()
                return list(data["sessions"])

            found = await _poll(open_sessions, SESSION_S, "a simulated session")
            assert {s["ap_id"] for s in found} <= set(info.ap_ids)
            assert all("mac" not in s and "ip" not in s for s in found)

            async def fleet_online() -> bool:
                async with http.get(f"{info.dashboard_url}api/fleet") as resp:
                    summary = (await resp.json())["summary"]
                return bool(summary["hotspots_online"] == len(info.ap_ids))

            await _poll(fleet_online, SESSION_S, "every simulated hotspot online")
        assert info.visitors.logged_in >= 1
        assert info.visitors.crashed == 0

    info = await _run_until(
        check,
        aps=6,
        portal_port=0,
        dashboard_port=0,
        visitors_per_minute=600,
        database=database,
        seed=20260601,
    )
    insee = {c.name: c.insee for c in lot_communes()}
    assert info.ap_ids[:3] == tuple(
        f"ap-{insee[name]}-01" for name in ("Rocamadour", "Padirac", "Saint-Cirq-Lapopie")
    )

    # After the stop: the agents' goodbyes were recorded, the sessions came from the portal.
    db = await open_database(database)
    try:
        async with db.connect() as conn:
            states = dict(
                (await conn.execute(sa.select(access_points.c.ap_id, access_points.c.state))).all()
            )
            methods = (
                (await conn.execute(sa.select(sessions.c.auth_method).distinct())).scalars().all()
            )
    finally:
        await db.aclose()
    assert set(states) == set(info.ap_ids)
    assert set(states.values()) == {"offline"}
    assert "click-through" in methods


async def test_demo_refuses_a_busy_port() -> None:
    """A port already in use is a clear DemoError, in French and English."""
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        with pytest.raises(DemoError, match=rf"impossible d'écouter .*:{port}.* cannot listen"):
            await run_demo(aps=1, portal_port=port, dashboard_port=0, visitors_per_minute=0)


@pytest.mark.parametrize(
    "kwargs",
    [{"aps": 0}, {"aps": 401}, {"visitors_per_minute": -1.0}, {"portal_port": 70000}],
)
async def test_demo_refuses_bad_arguments(kwargs: dict[str, Any]) -> None:
    """Out-of-range arguments are refused before anything starts."""
    with pytest.raises(DemoError):
        await run_demo(**{"portal_port": 0, "dashboard_port": 0, **kwargs})


# -- the installed command --------------------------------------------------------------------


def _copy_tree(dest: Path) -> Path:
    """The working tree without caches, venvs and build leftovers (a clean source)."""
    ignore = shutil.ignore_patterns(
        ".git",
        ".venv",
        "venv",
        "build",
        "dist",
        "*.egg-info",
        "__pycache__",
        ".pytest_cache",
        ".mypy_cache",
        ".ruff_cache",
        ".hypothesis",
        "*.db",
        "*.db-*",
    )
    src = dest / "src"
    shutil.copytree(ROOT, src, ignore=ignore)
    return src


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return int(resp.status), resp.read().decode()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read().decode()


def _wait(
    check: Callable[[], Any], timeout: float, what: str, proc: subprocess.Popen[bytes]
) -> Any:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"borne demo exited early with {proc.returncode}"
        try:
            result = check()
        except (OSError, ValueError) as exc:
            last, result = exc, None
        if result:
            return result
        time.sleep(0.2)
    raise AssertionError(f"{what}: not within {timeout:g} s (last error: {last})")


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_installed_borne_demo_runs_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    """Freshly pip-installed, ``borne demo`` serves, makes sessions and exits 0 on Ctrl-C."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    src = _copy_tree(tmp_path)
    pip = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "--no-input",
            "-q",
            str(src),
        ],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert pip.returncode == 0, pip.stdout[-4000:] + pip.stderr[-4000:]

    portal, dashboard = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BORNE__")}
    out = (tmp_path / "demo.out").open("wb")
    proc = subprocess.Popen(
        [
            str(venv / "bin" / "borne"),
            "demo",
            "--portal-port",
            str(portal),
            "--dashboard-port",
            str(dashboard),
            "--aps",
            "6",
            "--visitors-per-minute",
            "300",
        ],
        cwd=tmp_path,
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    try:
        base = f"http://127.0.0.1:{portal}"
        board = f"http://127.0.0.1:{dashboard}"
        _wait(lambda: _get(f"{base}/healthz") == (200, "ok"), READY_S, "the portal", proc)
        _wait(lambda: _get(f"{board}/")[0] == 200, READY_S, "the dashboard", proc)

        def sessions() -> int:
            status, body = _get(f"{board}/api/sessions")
            return int(json.loads(body)["count"]) if status == 200 else 0

        _wait(sessions, SESSION_S, "a simulated session", proc)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        out.close()
    text = (tmp_path / "demo.out").read_text(errors="replace")
    assert f"{base}/fas/" in text and f"{board}/" in text, text
    assert text.index("Portail captif") < text.index("Captive portal"), text
    assert "Démonstration arrêtée. / Demo stopped." in text, text
    assert "Traceback" not in text, text
