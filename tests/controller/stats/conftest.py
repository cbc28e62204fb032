"""Real statistics servers for the store tests: InfluxDB 1.x and VictoriaMetrics.

Each fixture starts its own instance from the Debian package (``influxdb``,
``victoria-metrics``; tests/run.sh installs them) on free loopback ports, in a temporary
directory, and stops it by PID after the test. A missing binary skips the test locally
and fails it in CI (``require``).
"""

from __future__ import annotations

import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.testbed import _stop_process, free_port, require, wait_for


@dataclass
class Server:
    """A started server: its base URL and process."""

    url: str
    proc: subprocess.Popen[bytes]
    log: Path


def _ready(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=1) as resp:
        return bool(200 <= resp.status < 300)


def _start(argv: list[str], log: Path, ping: str, url: str) -> Server:
    fh = log.open("wb")
    proc = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    fh.close()
    server = Server(url, proc, log)
    try:
        wait_for(lambda: proc.poll() is None and _ready(ping), timeout=30, message=argv[0])
    except TimeoutError:
        _stop_process(proc)
        pytest.fail(f"{argv[0]} did not start: {log.read_text(errors='replace')[-2000:]}")
    return server


@pytest.fixture
def influxdb1(tmp_path: Path) -> Iterator[Server]:
    """InfluxDB 1.x (``influxd``) on ``127.0.0.1:<free port>``, data in tmp_path."""
    binary = shutil.which("influxd") or require("influxd (Debian package influxdb)")
    http, rpc = free_port(), free_port()
    conf = tmp_path / "influxdb.conf"
    conf.write_text(
        f"""reporting-disabled = true
bind-address = "127.0.0.1:{rpc}"
[meta]
  dir = "{tmp_path}/meta"
[data]
  dir = "{tmp_path}/data"
  wal-dir = "{tmp_path}/wal"
  query-log-enabled = false
[http]
  bind-address = "127.0.0.1:{http}"
  log-enabled = false
"""
    )
    url = f"http://127.0.0.1:{http}"
    server = _start([binary, "-config", str(conf)], tmp_path / "influxd.log", f"{url}/ping", url)
    try:
        yield server
    finally:
        _stop_process(server.proc)


@pytest.fixture
def victoria(tmp_path: Path) -> Iterator[Server]:
    """VictoriaMetrics single-node on ``127.0.0.1:<free port>``, data in tmp_path."""
    binary = shutil.which("victoria-metrics") or require(
        "victoria-metrics (Debian package victoria-metrics)"
    )
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [
        binary,
        f"-storageDataPath={tmp_path}/vm",
        f"-httpListenAddr=127.0.0.1:{port}",
        # Statistics are back-filled days: keep them whatever their age.
        "-retentionPeriod=100y",
        "-search.disableCache",
    ]
    server = _start(argv, tmp_path / "vm.log", f"{url}/health", url)
    try:
        yield server
    finally:
        _stop_process(server.proc)
