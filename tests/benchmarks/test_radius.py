"""Benchmark: RADIUS accounting, borne against FreeRADIUS 3.2 (Debian) in the same run.

The same load generator (``tests/benchmarks/radius_load.py``, a process of its own)
sends Start/Interim/Stop for SESSIONS sessions with WINDOW requests outstanding, first to
FreeRADIUS (Debian's default configuration in a temporary copy, detail files on, on
loopback ports), then to borne (full processing: sessions, outbox events in SQLite, each
Accounting-Response only after its record is committed and the WAL synced to disk). Both must answer
everything and store every record; the figures go to ``docs/BENCHMARKS.md``.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from controller.config import load_settings
from controller.registry import Commune, Registry
from controller.storage import open_database
from controller.storage.schema import session_events, sessions
from radius import NasRegistry, build_server
from tests.testbed import free_port, require

pytestmark = pytest.mark.slow

SECRET = "testing123-bench-secret"
SESSIONS = int(os.environ.get("BORNE_BENCH_RADIUS_SESSIONS", "4000"))
WINDOW = int(os.environ.get("BORNE_BENCH_RADIUS_WINDOW", "200"))
RESULT_FILE = os.environ.get("BORNE_BENCH_RADIUS_RESULT")
FREERADIUS_CONF = Path("/etc/freeradius/3.0")
ROOT = Path(__file__).resolve().parents[2]
# Looked up at import: no file-system calls in the event loop.
FREERADIUS_BIN = shutil.which("freeradius", path=os.defpath + ":/usr/sbin")
HAVE_CONF = FREERADIUS_CONF.exists()


def _site(text: str, auth_port: int, acct_port: int) -> str:
    """The default virtual server listening on loopback only (no IPv6 listeners)."""
    out: list[str] = []
    block: list[str] | None = None
    for line in text.splitlines():
        if block is None and line.startswith("listen {"):
            block = [line]
            continue
        if block is not None:
            block.append(line)
            if line.startswith("}"):
                body = "\n".join(block)
                if not re.search(r"^\s*ipv6addr\s*=", body, re.M):
                    auth = re.search(r"^\s*type\s*=\s*auth\b", body, re.M)
                    port = auth_port if auth else acct_port
                    body = re.sub(r"^(\s*)ipaddr = \*", r"\1ipaddr = 127.0.0.1", body, flags=re.M)
                    body = re.sub(r"^(\s*)port = 0", rf"\g<1>port = {port}", body, flags=re.M)
                    out.append(body)
                block = None
            continue
        out.append(line)
    return "\n".join(out) + "\n"


def _freeradius_config(base: Path, auth_port: int, acct_port: int) -> Path:
    raddb = base / "raddb"
    shutil.copytree(FREERADIUS_CONF, raddb, symlinks=True)
    (base / "log").mkdir()
    (base / "run").mkdir()
    conf = (raddb / "radiusd.conf").read_text()
    lines = []
    for line in conf.splitlines():
        key = line.strip().split(" ", 1)[0]
        if key == "logdir":
            line = f"logdir = {base / 'log'}"
        elif key == "run_dir":
            line = f"run_dir = {base / 'run'}"
        elif key in ("user", "group"):
            line = "#" + line  # run as the invoking user, in the temporary folder
        lines.append(line)
    (raddb / "radiusd.conf").write_text("\n".join(lines) + "\n")
    (raddb / "sites-enabled" / "inner-tunnel").unlink(missing_ok=True)  # holds :18120
    site = raddb / "sites-enabled" / "default"
    text = site.read_text()
    site.unlink()
    site.write_text(_site(text, auth_port, acct_port))
    (raddb / "clients.conf").write_text(
        f"client bench {{\n ipaddr = 127.0.0.1\n secret = {SECRET}\n}}\n"
    )
    return raddb


async def _load(port: int, nas_id: str) -> dict[str, float]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.benchmarks.radius_load",
        "127.0.0.1",
        str(port),
        SECRET,
        str(SESSIONS),
        str(WINDOW),
        nas_id,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await proc.communicate()
    assert proc.returncode == 0
    return dict(json.loads(out))


async def _status(port: int) -> bool:
    proc = await asyncio.create_subprocess_exec(
        "radclient",
        "-r",
        "1",
        "-t",
        "0.5",
        f"127.0.0.1:{port}",
        "status",
        SECRET,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate(b"Message-Authenticator = 0x00\n")
    return b"Received" in out


@pytest.fixture
async def freeradius(tmp_path: Path) -> AsyncIterator[tuple[int, Path]]:
    """FreeRADIUS 3.2 (Debian's default configuration) on loopback; yields its acct port
    and its log folder (detail files under ``radacct/``). Stopped by PID."""
    binary = FREERADIUS_BIN
    if binary is None or not HAVE_CONF:
        require("freeradius (Debian package freeradius; tests/run.sh installs it)")
    auth, acct = free_port(), free_port()
    raddb = await asyncio.to_thread(_freeradius_config, tmp_path, auth, acct)
    proc = await asyncio.create_subprocess_exec(
        binary,
        "-f",
        "-d",
        str(raddb),
        "-l",
        str(tmp_path / "radiusd.log"),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        for _ in range(40):
            if await _status(auth):
                break
            await asyncio.sleep(0.25)
        else:
            pytest.fail("FreeRADIUS did not answer Status-Server")
        yield acct, tmp_path / "log"
    finally:
        if proc.returncode is None:
            os.kill(proc.pid, signal.SIGTERM)
            await proc.wait()


def _detail_records(log: Path) -> int:
    return sum(
        p.read_text(errors="replace").count("Acct-Session-Id")
        for p in (log / "radacct").rglob("detail-*")
    )


async def test_accounting_throughput_against_freeradius(
    freeradius: tuple[int, Path], db_url: str
) -> None:
    """borne answers accounting at a rate comparable to FreeRADIUS's, losing nothing, with
    every record durably stored: on SQLite (the writer thread and its group commit) and on
    PostgreSQL (Debian's default cluster: ``fsync`` and ``synchronous_commit`` on; each
    batch one transaction through the async engine)."""
    fr_port, fr_log = freeradius
    fr = await _load(fr_port, "nas-bench")
    assert fr["lost"] == 0, fr
    assert await asyncio.to_thread(_detail_records, fr_log) >= 3 * SESSIONS

    settings = load_settings(None, database={"url": db_url}, radius={"enabled": True})
    db = await open_database(db_url)
    try:
        reg = Registry(db, "bench-master-key")
        await reg.add_communes([Commune("46201", "Rocamadour", 1.6, 44.8)])
        await reg.add_access_point("nas-bench", "46201", "bench")
        await NasRegistry(db).add("nas-bench", "127.0.0.1", SECRET)
        server = await build_server(settings, db)
        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(server.run("127.0.0.1", 0, 0), name="radius-bench")
            await server.ready.wait()
            borne = await _load(server.addresses["acct"][1], "nas-bench")
            task.cancel()
        async with db.connect() as conn:
            stopped = (
                await conn.execute(
                    sa.select(sa.func.count())
                    .select_from(sessions)
                    .where(sessions.c.stopped_at.is_not(None), sessions.c.up_bytes == 2**32 + 5000)
                )
            ).scalar()
            events = (
                await conn.execute(sa.select(sa.func.count()).select_from(session_events))
            ).scalar()
    finally:
        await db.aclose()
    ratio = borne["rps"] / fr["rps"]
    report = {
        "database": db.engine.dialect.name,
        "sessions": SESSIONS,
        "window": WINDOW,
        "freeradius": fr,
        "borne": borne,
        "borne_batches": server.writer.commits,
        "borne_wal_syncs": server.writer.syncs,
        "ratio": ratio,
    }
    print(json.dumps(report, indent=1))
    if RESULT_FILE:
        await asyncio.to_thread(Path(RESULT_FILE).write_text, json.dumps(report, indent=1))
    assert borne["lost"] == 0, borne
    assert stopped == SESSIONS and events == 4 * SESSIONS
    if db.engine.dialect.name == "sqlite":
        # Every answer waited for a WAL sync: the group commit, not a commit without fsync.
        assert server.writer.threaded and 1 <= server.writer.syncs <= server.writer.commits
    else:
        assert not server.writer.threaded  # PostgreSQL's own durable commit
    # The goal is 0.5x, measured on SQLite 0.60-0.79x at window 64 and 0.98-2.57x at
    # window 200 (docs/BENCHMARKS.md). The ratio moves with the machine's load (earlier
    # designs measured 0.20x in a busy minute), so the test guards against a regression
    # to per-record processing (0.04x) rather than failing a busy run on noise. The
    # PostgreSQL figure is reported (docs/BENCHMARKS.md), not guarded: on this machine it
    # is bound by PostgreSQL's own CPU per row, beside the generator and borne.
    if db.engine.dialect.name == "sqlite":
        assert ratio >= 0.2, report
