"""Test harness library: a real hotspot in network namespaces, and a real mosquitto broker.

This module builds the topology of ``docs/TESTBED.md`` (see ``tests/README.md``) with real
components only: openNDS as the captive gateway, dnsmasq as its DHCP server, busybox
``udhcpc`` as the phone's DHCP client, a tiny HTTP server as "the internet", plus a veth
pair that lets processes of the root namespace (the controller's captive portal, an MQTT
broker) be reached from the access point and, through it, from the client::

    [inet] inet0 10.46.0.2/24 --- apwan 10.46.0.1/24 [ap] lan0 10.46.1.1/24 --- cl0 DHCP [cl]
     http :80 "upstream-ok"          openNDS on lan0 (:2050), dnsmasq DHCP
                                     ctl0 10.46.2.2/30
                                         |
                           [root ns] bt<pid>n<k> 10.46.2.1/30   (portal, broker, tests)

It is a library, not a test file: fixtures in ``tests/conftest.py`` wrap it. It must not
touch anything outside the namespaces and files it creates: openNDS's helper that edits
``/etc/dnsmasq.conf`` and ``/etc/hosts`` and restarts the host's dnsmasq is replaced, in
openNDS's private mount namespace only, by a stub; every process is stopped by its PID and
every namespace deleted at teardown, also when the build or the test fails.

openNDS facts this module relies on (openNDS 9.10, Debian 12):

* ``ndsctl`` ignores ``-s`` and talks to ``<runtime dir>/ndsctl.sock``, the runtime dir
  being the first tmpfs among /tmp, /run, /var (else /tmp): ``/tmp`` on the reference
  machine, ``/run`` on a systemd host. openNDS reads the DHCP leases from
  ``/tmp/dhcp.leases``. Both paths are global, so one hotspot runs per machine at a time,
  serialised by ``fcntl.flock`` on ``/tmp/borne-testbed.lock``.
* openNDS needs the legacy iptables backend; it is put first on openNDS's ``PATH`` here
  (``tests/run.sh`` also selects it system-wide).
* openNDS appends a serial-number suffix to ``GatewayName`` unless
  ``enable_serial_number_suffix 0``; the gateway name is the access point id, so it is off.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fcntl
import functools
import hashlib
import itertools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import pytest

__all__ = [
    "AP_LAN_IP",
    "AP_ROOT_IP",
    "AP_WAN_IP",
    "GATEWAY_PORT",
    "LEASE_FILE",
    "LOCK_FILE",
    "ROOT_IP",
    "UPSTREAM_BODY",
    "UPSTREAM_IP",
    "Hotspot",
    "HttpResult",
    "MosquittoBroker",
    "decode_fas",
    "fas_fields",
    "free_port",
    "nds_runtime_dir",
    "ndsctl_socket_path",
    "require",
    "wait_for",
]

T = TypeVar("T")

REQUIRE_ALL_ENV = "BORNE_REQUIRE_ALL"

UPSTREAM_IP = "10.46.0.2"  # the "internet" host, in the inet namespace
AP_WAN_IP = "10.46.0.1"  # the access point's upstream side
AP_LAN_IP = "10.46.1.1"  # the access point's client side (openNDS gateway address)
ROOT_IP = "10.46.2.1"  # root namespace side of the root<->ap link: portal, broker
AP_ROOT_IP = "10.46.2.2"  # ap namespace side of the root<->ap link
CLIENT_NET = "10.46.1.0/24"
GATEWAY_PORT = 2050  # openNDS's own web server on AP_LAN_IP
UPSTREAM_BODY = "upstream-ok"

LEASE_FILE = "/tmp/dhcp.leases"  # the only lease file openNDS 9.10 reads on Debian
LOCK_FILE = "/tmp/borne-testbed.lock"
# Runtime files openNDS and ndsctl leave in /tmp; removed at teardown.
# Runtime files openNDS 9.10 keeps in its runtime directory (see nds_runtime_dir()).
_NDS_RUNTIME_FILES = ("ndsdebuglevel", "ndscids")
_NDSCTL_LOCK = "/tmp/ndsctl.lock"  # fixed in ndsctl
_NDS_LIB = "/usr/lib/opennds/libopennds.sh"

_NDS_DNSCONFIG = "/usr/lib/opennds/dnsconfig.sh"
_NDS_SYSTEM_CONF = "/etc/opennds/opennds.conf"

_REQUIRED_PROGRAMS = (
    "ip", "opennds", "ndsctl", "dnsmasq", "busybox", "curl", "unshare", "mount", "nft", "ss",
)  # fmt: skip
_NS_RE = re.compile(r"^borne-tb-(\d+)-(\d+)-(inet|ap|cl)$")
_ROOT_LINK_RE = re.compile(r"^bt(\d+)n(\d+)$")
_BUILD_COUNTER = itertools.count(1)
_ACTIVE_LOCK = threading.Lock()
_active: Hotspot | None = None


# --------------------------------------------------------------------------- helpers


def require(what: str) -> NoReturn:
    """Skip the current test because a prerequisite is missing, or fail it in CI.

    With ``BORNE_REQUIRE_ALL=1`` (set by ``tests/run.sh``) a missing prerequisite is a
    failure, so that CI never skips a test silently.

    Args:
        what: the missing prerequisite, in words a developer can act on.
    """
    if os.environ.get(REQUIRE_ALL_ENV) == "1":
        pytest.fail(
            f"missing prerequisite: {what} ({REQUIRE_ALL_ENV}=1 turns skips into failures)",
            pytrace=False,
        )
    pytest.skip(f"missing prerequisite: {what}")


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that was free on ``host`` a moment ago (bind to port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_for(
    condition: Callable[[], T | None],
    *,
    timeout: float = 10.0,
    interval: float = 0.1,
    message: str = "condition",
) -> T:
    """Call ``condition`` until it returns a truthy value, and return that value.

    The value returned is truthy, so never ``None``: a condition typed ``X | None``
    gives an ``X``.

    Exceptions raised by ``condition`` count as "not yet"; the last one is chained to
    the ``TimeoutError`` raised when ``timeout`` seconds have passed.

    Args:
        condition: a callable without arguments.
        timeout: deadline in seconds.
        interval: pause between attempts in seconds.
        message: what is awaited, for the error message.

    Raises:
        TimeoutError: the condition did not hold before the deadline.
    """
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while True:
        try:
            value = condition()
        except Exception as exc:
            last_exc = exc
        else:
            if value:
                return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {message}") from last_exc
        time.sleep(interval)


def _port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stop_process(proc: subprocess.Popen[Any], timeout: float = 5.0) -> None:
    """Stop a child started with ``start_new_session=True``: its process group, by PID."""
    if proc.poll() is None:
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, timeout)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            try:
                proc.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
    # Helpers a daemon left in its group (openNDS's shell scripts) go too.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def _tail(path: Path, lines: int = 60) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"<{path}: {exc}>"
    return "\n".join(text.splitlines()[-lines:])


# --------------------------------------------------------------------------- openNDS paths


def _nds_lib(*args: str) -> str:
    res = subprocess.run([_NDS_LIB, *args], capture_output=True, text=True, timeout=20)
    return res.stdout.splitlines()[0].strip() if res.stdout.strip() else ""


def nds_runtime_dir() -> str:
    """openNDS's runtime directory: the first of /tmp, /run, /var that is a tmpfs, else /tmp.

    openNDS 9.10 and ndsctl both ask ``libopennds.sh tmpfs``; on a systemd machine
    (tmpfs /run, disk /tmp) this is ``/run``, in many containers ``/tmp``.
    """
    return _nds_lib("tmpfs") or "/tmp"


def ndsctl_socket_path() -> str:
    """The socket ``ndsctl`` talks to: ``<runtime dir>/<ndsctlsocket option or ndsctl.sock>``.

    ``ndsctl -s`` is ignored; the option comes from ``/etc/opennds/opennds.conf``.
    """
    name = _nds_lib("get_option_from_config", "ndsctlsocket") or "ndsctl.sock"
    return f"{nds_runtime_dir()}/{name}"


# --------------------------------------------------------------------------- FAS query


def fas_fields(url_or_fas: str) -> str:
    """Return the decoded ``fas`` string of an openNDS redirect (FAS level 1).

    Args:
        url_or_fas: the ``Location`` URL of openNDS's 307, or the bare base64 value.
    """
    value = url_or_fas
    if "fas=" in url_or_fas:
        query = urllib.parse.urlsplit(url_or_fas).query
        values = urllib.parse.parse_qs(query).get("fas")
        if not values:
            raise ValueError(f"no fas= parameter in {url_or_fas!r}")
        value = values[0]
    value = value.strip()
    return base64.b64decode(value + "=" * (-len(value) % 4)).decode()


def decode_fas(url_or_fas: str) -> dict[str, str]:
    """Decode the ``fas`` query of an openNDS redirect into its ``key=value`` fields.

    openNDS 9.10 joins the fields with ``", "``; values stay as openNDS sent them
    (``gatewayname``, ``gatewayurl`` and ``originurl`` are percent-encoded). Pieces
    without ``=`` (openNDS appends ``(null)`` placeholders) are dropped.
    """
    fields: dict[str, str] = {}
    for part in fas_fields(url_or_fas).split(", "):
        key, sep, value = part.partition("=")
        if sep:
            fields[key.strip()] = value
    return fields


# --------------------------------------------------------------------------- mosquitto


class MosquittoBroker:
    """A real mosquitto broker run in the foreground as a child process.

    ``stop()`` and ``start()`` keep the same address and port, for outage tests.
    Anonymous access, no persistence; its log is ``<workdir>/mosquitto.log``.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        extra_conf: Sequence[str] = (),
        binary: str | None = None,
    ) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.host = host
        self.port = port if port is not None else free_port(host)
        self.binary = binary or shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.conf_path = self.workdir / "mosquitto.conf"
        self.log_path = self.workdir / "mosquitto.log"
        self.conf_path.write_text(
            "\n".join(
                [
                    f"listener {self.port} {self.host}",
                    "allow_anonymous true",
                    "persistence false",
                    # stdout goes to log_path: a file opened by us, so no permission
                    # problem after mosquitto drops root for the "mosquitto" user.
                    "log_dest stdout",
                    "log_type all",
                    "connection_messages true",
                    "log_timestamp_format %Y-%m-%dT%H:%M:%S",
                    *extra_conf,
                    "",
                ]
            )
        )
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """PID of the running broker, or None when stopped."""
        return self._proc.pid if self.running and self._proc else None

    @property
    def running(self) -> bool:
        """True while the broker process is alive."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def url(self) -> str:
        """``mqtt://host:port``."""
        return f"mqtt://{self.host}:{self.port}"

    def start(self, timeout: float = 10.0) -> MosquittoBroker:
        """Start the broker (no-op when running) and wait until the port accepts.

        Raises:
            RuntimeError: mosquitto exited or never listened.
        """
        if self.running:
            return self
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                [self.binary, "-c", str(self.conf_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        proc = self._proc
        try:
            wait_for(
                lambda: proc.poll() is not None or _port_open(self.host, self.port),
                timeout=timeout,
                interval=0.05,
                message=f"mosquitto on {self.host}:{self.port}",
            )
        except TimeoutError:
            self.stop()
            raise RuntimeError(
                f"mosquitto did not listen on {self.host}:{self.port}:\n{_tail(self.log_path)}"
            ) from None
        if proc.poll() is not None:
            raise RuntimeError(f"mosquitto exited with {proc.returncode}:\n{_tail(self.log_path)}")
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the broker by its PID (SIGTERM, then SIGKILL) and wait for it."""
        if self._proc is not None:
            _stop_process(self._proc, timeout=timeout)
        self._proc = None

    def log_text(self) -> str:
        """The broker's log so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def __enter__(self) -> MosquittoBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"MosquittoBroker({self.host}:{self.port}, pid={self.pid})"


# --------------------------------------------------------------------------- hotspot


@dataclass(frozen=True)
class HttpResult:
    """What ``curl`` in the client namespace got.

    ``status`` is 0 when curl got no HTTP answer; ``curl_exit`` and ``error`` say why
    (7: connection refused, 28: timeout).
    """

    status: int
    headers: dict[str, str]
    body: str
    raw_body: bytes
    curl_exit: int
    error: str = ""

    @property
    def location(self) -> str | None:
        """The ``Location`` header, if any."""
        return self.headers.get("location")


@dataclass
class _Names:
    inet: str
    ap: str
    cl: str
    root_link: str


@dataclass
class Hotspot:
    """A real openNDS hotspot in three network namespaces, reachable from the root one.

    Use as a context manager, or call ``build()`` and ``teardown()``. Only one hotspot
    can exist per machine at a time (openNDS's global paths); ``build()`` waits for
    ``/tmp/borne-testbed.lock`` up to ``lock_timeout`` seconds.

    Args:
        fas_port: port of the captive portal (FAS) that openNDS redirects clients to.
        gateway_name: openNDS ``GatewayName``: the access point id.
        fasremoteip: address of the FAS; by default the root namespace side of the
            root<->ap link, where the controller's portal listens.
        faspath: path of the FAS URL.
        faskey: the FAS shared secret.
        fas_secure_enabled: openNDS FAS level (1: base64 ``fas`` query, ``hid`` hashed
            with ``faskey``).
        extra_config: more openNDS config lines (``"checkinterval 5"``, ...).
        workdir: where configs and logs go; a temporary directory by default (removed
            at teardown unless ``keep_workdir``).
        client_mac: force the client's MAC (lower case); random by default.
        connect_client: run DHCP on the client during ``build()``.
        lock_timeout: seconds to wait for another hotspot of this machine to end.
    """

    fas_port: int
    gateway_name: str = "ap-46201-01"
    fasremoteip: str = ROOT_IP
    faspath: str = "/portal/"
    faskey: str = "borne-testbed-faskey"
    fas_secure_enabled: int = 1
    extra_config: Sequence[str] = ()
    workdir: Path | None = None
    keep_workdir: bool = False
    client_mac: str | None = None
    connect_client: bool = True
    lock_timeout: float = 90.0

    client_ip: str | None = field(default=None, init=False)
    gateway_mac: str | None = field(default=None, init=False)
    ns: _Names = field(init=False)
    _procs: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list, init=False)
    _brokers: list[MosquittoBroker] = field(default_factory=list, init=False)
    _lock_fd: int | None = field(default=None, init=False)
    _ndsctl_socket: str | None = field(default=None, init=False)
    _nds_runtime_dir: str | None = field(default=None, init=False)
    _own_workdir: bool = field(default=False, init=False)
    _built: bool = field(default=False, init=False)
    _torn_down: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        pid, k = os.getpid(), next(_BUILD_COUNTER) % 1000
        self.ns = _Names(
            inet=f"borne-tb-{pid}-{k}-inet",
            ap=f"borne-tb-{pid}-{k}-ap",
            cl=f"borne-tb-{pid}-{k}-cl",
            root_link=f"bt{pid}n{k}",  # at most 13 chars (IFNAMSIZ is 16)
        )
        if self.client_mac is not None:
            self.client_mac = self.client_mac.lower()

    # ------------------------------------------------------------------ public API

    @property
    def fas_url(self) -> str:
        """The URL openNDS sends unauthenticated clients to, without the query."""
        return f"http://{self.fasremoteip}:{self.fas_port}{self.faspath}"

    @property
    def gateway_address(self) -> str:
        """openNDS's ``gatewayaddress`` (``10.46.1.1:2050``)."""
        return f"{AP_LAN_IP}:{GATEWAY_PORT}"

    @property
    def ndsctl_socket(self) -> str:
        """The socket openNDS listens on, where ``ndsctl`` looks (see ``ndsctl_socket_path``)."""
        return self._ndsctl_socket or ndsctl_socket_path()

    @property
    def ap_namespace(self) -> str:
        """Name of the access point's namespace: run the agent with ``ip netns exec``."""
        return self.ns.ap

    @property
    def mac(self) -> str:
        """The client's MAC address (lower case), known once built.

        Raises:
            RuntimeError: the client has no address yet (``build()`` not run).
        """
        if self.client_mac is None:
            raise RuntimeError("hotspot not built: no client MAC yet")
        return self.client_mac

    @property
    def files(self) -> Path:
        """The working directory (configs, logs, ``udhcpc.sh``), known once built.

        Raises:
            RuntimeError: ``build()`` has not run.
        """
        return self._workdir

    @property
    def logs(self) -> dict[str, Path]:
        """Log file of each process started so far, by name."""
        return {name: self._workdir / f"{name}.log" for name, _ in self._procs}

    def build(self) -> Hotspot:
        """Create namespaces, links and processes; tear everything down on failure."""
        if self._built:
            return self
        self._check_prerequisites()
        global _active
        with _ACTIVE_LOCK:
            if _active is not None:
                raise RuntimeError(
                    f"a hotspot is already running in this process ({_active.ns.ap}); "
                    "openNDS's global paths allow one at a time"
                )
            _active = self
        self._built = True
        try:
            self._acquire_lock()
            self._nds_runtime_dir = nds_runtime_dir()
            self._ndsctl_socket = ndsctl_socket_path()
            self._sweep_stale()
            self._check_free()
            self._prepare_workdir()
            self._build_network()
            self._start_upstream()
            self._start_dnsmasq()
            self._start_opennds()
            if self.connect_client:
                self.dhcp_client()
        except BaseException:
            self.teardown()
            raise
        return self

    def teardown(self) -> None:
        """Stop every process by PID, delete the namespaces and openNDS's /tmp files.

        Idempotent. Raises ``RuntimeError`` after cleaning up what it could if some
        step failed.
        """
        global _active
        if self._torn_down or not self._built:
            return
        self._torn_down = True
        errors: list[str] = []

        def step(what: str, fn: Callable[[], object]) -> None:
            try:
                fn()
            except Exception as exc:
                errors.append(f"{what}: {exc!r}")

        for broker in reversed(self._brokers):
            step(f"stop {broker!r}", broker.stop)
        for name, proc in reversed(self._procs):
            step(f"stop {name} (pid {proc.pid})", functools.partial(_stop_process, proc))
        for ns in (self.ns.cl, self.ns.ap, self.ns.inet):
            step(f"kill leftovers in {ns}", functools.partial(self._kill_ns_pids, ns))
        step("delete root link", lambda: self._delete_root_link(self.ns.root_link))
        for ns in (self.ns.cl, self.ns.ap, self.ns.inet):
            step(f"delete {ns}", functools.partial(self._delete_ns, ns))
        step("remove /tmp files", self._remove_tmp_files)
        if self._own_workdir and not self.keep_workdir and self.workdir is not None:
            step("remove workdir", lambda: shutil.rmtree(self._workdir, ignore_errors=True))
        step("release lock", self._release_lock)
        with _ACTIVE_LOCK:
            if _active is self:
                _active = None
        if errors:
            raise RuntimeError("hotspot teardown incomplete: " + "; ".join(errors))

    def __enter__(self) -> Hotspot:
        return self.build()

    def __exit__(self, *exc: object) -> None:
        self.teardown()

    def run_in(
        self,
        ns: str | None,
        *argv: str,
        timeout: float = 30.0,
        check: bool = False,
        input: str | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run a command in a namespace and return its result (text, captured).

        Args:
            ns: ``"inet"``, ``"ap"``, ``"cl"``, a full namespace name, or None for the
                root namespace.
            argv: the command.
            timeout: seconds before ``subprocess.TimeoutExpired``.
            check: raise ``subprocess.CalledProcessError`` on a non-zero exit.
            input: text fed to stdin.
            env: environment (default: inherited).
        """
        cmd = [*self._ns_prefix(ns), *argv]
        return subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=check,
            input=input,
            env=env,
            stdin=None if input is not None else subprocess.DEVNULL,
        )

    async def arun_in(
        self, ns: str | None, *argv: str, deadline: float = 30.0, check: bool = False
    ) -> subprocess.CompletedProcess[str]:
        """``run_in`` in a worker thread, so the test's event loop keeps serving."""
        return await asyncio.to_thread(self.run_in, ns, *argv, timeout=deadline, check=check)

    def start_in(
        self,
        ns: str | None,
        *argv: str,
        name: str | None = None,
        env: dict[str, str] | None = None,
        cwd: str | Path | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start a long-running process in a namespace; it is stopped at teardown.

        stdout and stderr go to ``<workdir>/<name>.log`` (see ``logs``). The process
        gets its own process group; stop it early with ``stop(proc)``.
        """
        name = name or Path(argv[0]).name
        existing = {n for n, _ in self._procs}
        base, i = name, 1
        while name in existing:
            i += 1
            name = f"{base}-{i}"
        log_path = self._workdir / f"{name}.log"
        with log_path.open("ab") as log:
            proc = subprocess.Popen(
                [*self._ns_prefix(ns), *argv],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=cwd,
                start_new_session=True,
            )
        self._procs.append((name, proc))
        return proc

    def stop(self, proc: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
        """Stop a process started with ``start_in`` (its process group, by PID)."""
        _stop_process(proc, timeout=timeout)

    def start_broker(self, **kwargs: Any) -> MosquittoBroker:
        """Start a mosquitto broker on ``10.46.2.1`` (reachable from the ap namespace).

        It runs in the root namespace and is stopped at teardown.
        """
        broker = MosquittoBroker(
            self._workdir / f"mosquitto-{len(self._brokers) + 1}", host=ROOT_IP, **kwargs
        )
        self._brokers.append(broker)
        return broker.start()

    def dhcp_client(self, timeout: float = 30.0) -> str:
        """Get the client's address by DHCP (``busybox udhcpc``); return it."""
        res = self.run_in(
            "cl",
            "busybox", "udhcpc", "-i", "cl0", "-f", "-n", "-q",
            "-t", "10", "-T", "1", "-A", "1",
            "-s", str(self._workdir / "udhcpc.sh"),
            timeout=timeout,
        )  # fmt: skip
        if res.returncode != 0:
            raise RuntimeError(f"udhcpc failed ({res.returncode}): {res.stdout}{res.stderr}")
        self.client_ip = wait_for(
            lambda: self._ipv4_of("cl", "cl0"), timeout=5, message="client address"
        )
        return self.client_ip

    def curl_from_client(
        self,
        url: str,
        *curl_args: str,
        max_time: float = 10.0,
        timeout: float | None = None,
    ) -> HttpResult:
        """Fetch ``url`` with curl in the client namespace (no redirects followed).

        Args:
            url: the URL.
            curl_args: more curl options (``-L``, ``-H``, ``--data``...).
            max_time: curl's ``--max-time``.
            timeout: subprocess deadline (default ``max_time + 10``).
        """
        fd, tmp = tempfile.mkstemp(prefix="curl-", dir=self._workdir)
        os.close(fd)
        body_path, head_path = Path(tmp + ".body"), Path(tmp + ".head")
        try:
            res = self.run_in(
                "cl",
                "curl", "-sS", "--max-time", f"{max_time:g}",
                "-o", str(body_path), "-D", str(head_path), "-w", "%{http_code}",
                *curl_args, url,
                timeout=timeout if timeout is not None else max_time + 10,
            )  # fmt: skip
            raw = body_path.read_bytes() if body_path.exists() else b""
            head = head_path.read_text(errors="replace") if head_path.exists() else ""
        finally:
            for p in (Path(tmp), body_path, head_path):
                p.unlink(missing_ok=True)
        code = res.stdout.strip()
        return HttpResult(
            status=int(code) if code.isdigit() else 0,
            headers=_parse_last_headers(head),
            body=raw.decode(errors="replace"),
            raw_body=raw,
            curl_exit=res.returncode,
            error=res.stderr.strip(),
        )

    async def acurl_from_client(
        self, url: str, *curl_args: str, max_time: float = 10.0
    ) -> HttpResult:
        """``curl_from_client`` in a worker thread: use it when the portal under test
        runs in the test's own event loop."""
        return await asyncio.to_thread(self.curl_from_client, url, *curl_args, max_time=max_time)

    def ndsctl(
        self, *args: str, check: bool = True, timeout: float = 20.0
    ) -> subprocess.CompletedProcess[str]:
        """Run ``ndsctl`` in the ap namespace (stderr carries openNDS's pgrep noise)."""
        return self.run_in("ap", "ndsctl", *args, check=check, timeout=timeout)

    def ndsctl_json(self, client: str | None = None) -> dict[str, Any]:
        """``ndsctl json [client]`` parsed (every value is a JSON string)."""
        args = ("json", client) if client else ("json",)
        out: dict[str, Any] = json.loads(self.ndsctl(*args).stdout)
        return out

    def client_entry(self, mac: str | None = None) -> dict[str, Any] | None:
        """This client's entry of ``ndsctl json``, or None when openNDS does not list it."""
        mac = (mac or self.client_mac or "").lower()
        clients: dict[str, Any] = self.ndsctl_json().get("clients", {})
        entry: dict[str, Any] | None = clients.get(mac)
        return entry

    def auth_token(self, hid: str) -> str:
        """The ``tok`` a FAS returns to ``/opennds_auth/``: sha256(hid + faskey) in hex."""
        return hashlib.sha256((hid + self.faskey).encode()).hexdigest()

    def wait_for(
        self,
        condition: Callable[[], T | None],
        *,
        timeout: float = 10.0,
        interval: float = 0.2,
        message: str = "condition",
    ) -> T:
        """Module ``wait_for`` (poll ``condition`` until truthy or the deadline)."""
        return wait_for(condition, timeout=timeout, interval=interval, message=message)

    def log_tails(self, lines: int = 40) -> str:
        """The last lines of every process log, for failure reports."""
        parts = [f"--- {name} ({p}) ---\n{_tail(p, lines)}" for name, p in self.logs.items()]
        parts += [f"--- {b!r} ---\n{_tail(b.log_path, lines)}" for b in self._brokers]
        return "\n".join(parts)

    # ------------------------------------------------------------------ build steps

    @property
    def _workdir(self) -> Path:
        if self.workdir is None:
            raise RuntimeError("hotspot not built")
        return Path(self.workdir)

    def _ns_prefix(self, ns: str | None) -> list[str]:
        if ns is None or ns == "root":
            return []
        full = {"inet": self.ns.inet, "ap": self.ns.ap, "cl": self.ns.cl}.get(ns, ns)
        return ["ip", "netns", "exec", full]

    @staticmethod
    def _check_prerequisites() -> None:
        if os.geteuid() != 0:
            require("root (network namespaces; run tests/run.sh as root)")
        missing = [
            b
            for b in _REQUIRED_PROGRAMS
            if shutil.which(b) is None and not Path("/usr/sbin", b).exists()
        ]
        if not any(Path(d, "iptables-legacy").exists() for d in ("/usr/sbin", "/sbin")):
            missing.append("iptables-legacy")
        if not Path(_NDS_DNSCONFIG).exists() or not Path(_NDS_SYSTEM_CONF).exists():
            missing.append(f"{_NDS_DNSCONFIG} and {_NDS_SYSTEM_CONF} (Debian opennds)")
        if missing:
            require("programs " + ", ".join(missing) + " (tests/run.sh installs them)")

    def _acquire_lock(self) -> None:
        fd = os.open(LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + self.lock_timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise TimeoutError(
                        f"another hotspot holds {LOCK_FILE} for more than {self.lock_timeout:g}s"
                    ) from None
                time.sleep(0.2)
        self._lock_fd = fd
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {self.ns.ap}\n".encode())

    def _release_lock(self) -> None:
        if self._lock_fd is not None:
            fd, self._lock_fd = self._lock_fd, None
            try:
                fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)

    def _sweep_stale(self) -> None:
        """Remove what a killed earlier run left (its namespaces and root link).

        Runs under the lock, and only touches names this module generates whose
        creating process is gone.
        """
        res = subprocess.run(["ip", "-j", "netns", "list"], capture_output=True, text=True)
        names = [n["name"] for n in json.loads(res.stdout or "[]")]
        for name in names:
            m = _NS_RE.match(name)
            if m and not _pid_alive(int(m.group(1))):
                self._kill_ns_pids(name)
                self._delete_ns(name)
        res = subprocess.run(["ip", "-j", "link", "show"], capture_output=True, text=True)
        for link in json.loads(res.stdout or "[]"):
            m = _ROOT_LINK_RE.match(link.get("ifname", ""))
            if m and not _pid_alive(int(m.group(1))):
                self._delete_root_link(link["ifname"])
        # A stale socket of a killed openNDS: remove; a live one is another gateway.
        sock = self.ndsctl_socket
        if os.path.exists(sock):
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                try:
                    s.connect(sock)
                except OSError:
                    pass
                else:
                    raise RuntimeError(
                        f"an openNDS outside this testbed answers on {sock}; stop it first"
                    )
        self._remove_tmp_files()

    def _check_free(self) -> None:
        res = subprocess.run(["ip", "-j", "-4", "addr", "show"], capture_output=True, text=True)
        for link in json.loads(res.stdout or "[]"):
            for addr in link.get("addr_info", []):
                if addr.get("local", "").startswith("10.46."):
                    raise RuntimeError(
                        f"{link['ifname']} of the root namespace already has {addr['local']}: "
                        "the testbed needs 10.46.0.0/16 for itself"
                    )

    def _prepare_workdir(self) -> None:
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="borne-testbed-"))
            self._own_workdir = True
        wd = self._workdir
        wd.mkdir(parents=True, exist_ok=True)
        # Legacy iptables first on openNDS's PATH (see TESTBED.md fact 1).
        shim = wd / "bin"
        shim.mkdir(exist_ok=True)
        for tool in ("iptables", "ip6tables", "iptables-save", "iptables-restore",
                     "ip6tables-save", "ip6tables-restore"):  # fmt: skip
            target = next(
                (Path(d, tool.replace("tables", "tables-legacy", 1)) for d in ("/usr/sbin", "/sbin")
                 if Path(d, tool.replace("tables", "tables-legacy", 1)).exists()),
                None,
            )  # fmt: skip
            link = shim / tool
            if target is not None and not link.exists():
                link.symlink_to(target)
        # openNDS 9.10's health check looks for its rules with nft; with legacy iptables it
        # never finds them and runs "systemctl restart opennds", which on a systemd host
        # would start the host's own openNDS. These stubs on its PATH make that a no-op.
        for tool in ("systemctl", "service"):
            stub_path = shim / tool
            stub_path.write_text(_SERVICE_STUB)
            stub_path.chmod(0o755)
        www = wd / "www"
        www.mkdir(exist_ok=True)
        (www / "index.html").write_text(UPSTREAM_BODY)
        script = wd / "udhcpc.sh"
        script.write_text(_UDHCPC_SCRIPT)
        script.chmod(0o755)
        stub = wd / "dnsconfig-stub.sh"
        stub.write_text(_DNSCONFIG_STUB)
        stub.chmod(0o755)
        (wd / "opennds.conf").write_text(self._opennds_conf())

    def _opennds_conf(self) -> str:
        lines = [
            "# openNDS 9.10 configuration written by tests/testbed.py",
            "GatewayInterface lan0",
            f"GatewayName {self.gateway_name}",
            "enable_serial_number_suffix 0",
            f"gatewayport {GATEWAY_PORT}",
            "login_option_enabled 0",
            f"fasremoteip {self.fasremoteip}",
            f"fasport {self.fas_port}",
            f"faspath {self.faspath}",
            f"faskey {self.faskey}",
            f"fas_secure_enabled {self.fas_secure_enabled}",
            # Without these rules openNDS rejects DHCP from clients that join after it
            # started: its built-in users-to-router set only allows port 2050.
            "FirewallRuleSet users-to-router {",
            "    FirewallRule allow udp port 53",
            "    FirewallRule allow tcp port 53",
            "    FirewallRule allow udp port 67",
            "}",
            *self.extra_config,
            "",
        ]
        return "\n".join(lines)

    def _ip(self, *args: str, ns: str | None = None) -> None:
        cmd = ["ip", *(["-n", ns] if ns else []), *args]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
        if res.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed: {res.stderr.strip()}")

    def _sysctl(self, ns: str | None, key: str, value: str) -> None:
        res = self.run_in(ns, "sysctl", "-q", "-w", f"{key}={value}", timeout=10)
        if res.returncode != 0:
            # sysctl may live in /usr/sbin only; write /proc/sys directly instead.
            path = "/proc/sys/" + key.replace(".", "/")
            res = self.run_in(ns, "sh", "-c", f"echo {value} > {path}", timeout=10)
            if res.returncode != 0:
                raise RuntimeError(f"sysctl {key}={value} in {ns}: {res.stderr.strip()}")

    def _build_network(self) -> None:
        n = self.ns
        for ns in (n.inet, n.ap, n.cl):
            self._ip("netns", "add", ns)
        # Create each veth pair directly inside its namespaces: no name clash in root.
        veth = ("type", "veth", "peer", "name")
        self._ip("link", "add", "apwan", *veth, "inet0", "netns", n.inet, ns=n.ap)
        self._ip("link", "add", "lan0", *veth, "cl0", "netns", n.cl, ns=n.ap)
        self._ip("link", "add", n.root_link, *veth, "ctl0", "netns", n.ap)
        if self.client_mac:
            self._ip("link", "set", "cl0", "address", self.client_mac, ns=n.cl)
        # Quiet IPv6 (router solicitations, DAD): openNDS 9.10 does not handle it anyway.
        for ns in (n.inet, n.ap, n.cl):
            self._sysctl(ns, "net.ipv6.conf.all.disable_ipv6", "1")
            self._sysctl(ns, "net.ipv6.conf.default.disable_ipv6", "1")
        self._sysctl(None, f"net.ipv6.conf.{n.root_link}.disable_ipv6", "1")
        self._ip("addr", "add", f"{UPSTREAM_IP}/24", "dev", "inet0", ns=n.inet)
        self._ip("addr", "add", f"{AP_WAN_IP}/24", "dev", "apwan", ns=n.ap)
        self._ip("addr", "add", f"{AP_LAN_IP}/24", "dev", "lan0", ns=n.ap)
        self._ip("addr", "add", f"{AP_ROOT_IP}/30", "dev", "ctl0", ns=n.ap)
        self._ip("addr", "add", f"{ROOT_IP}/30", "dev", n.root_link)
        for ns, links in (
            (n.inet, ("lo", "inet0")),
            (n.ap, ("lo", "apwan", "lan0", "ctl0")),
            (n.cl, ("lo", "cl0")),
        ):
            for link in links:
                self._ip("link", "set", link, "up", ns=ns)
        self._ip("link", "set", n.root_link, "up")
        self._ip("route", "add", CLIENT_NET, "via", AP_WAN_IP, ns=n.inet)
        self._ip("route", "add", "default", "via", UPSTREAM_IP, ns=n.ap)
        # The root namespace reaches the clients through the AP (portal replies).
        self._ip("route", "add", CLIENT_NET, "via", AP_ROOT_IP, "dev", n.root_link)
        self._sysctl(n.ap, "net.ipv4.ip_forward", "1")
        self.client_mac = wait_for(lambda: self._mac_of("cl", "cl0"), timeout=5, message="cl0 MAC")
        self.gateway_mac = self._mac_of("ap", "lan0")

    def _start_upstream(self) -> None:
        self.start_in(
            "inet",
            sys.executable, "-m", "http.server", "80",
            "--bind", UPSTREAM_IP, "--directory", str(self._workdir / "www"),
            name="upstream-http",
        )  # fmt: skip
        wait_for(
            lambda: (
                self.run_in("ap", "curl", "-s", "--max-time", "2", f"http://{UPSTREAM_IP}/").stdout
                == UPSTREAM_BODY
            ),
            timeout=15,
            interval=0.2,
            message=f"upstream HTTP server on {UPSTREAM_IP}:80",
        )

    def _start_dnsmasq(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(LEASE_FILE)
        proc = self.start_in(
            "ap",
            "dnsmasq", "--no-daemon", "--conf-file=/dev/null", "--no-hosts", "--no-resolv",
            "--port=0", "--interface=lan0", "--bind-interfaces", "--except-interface=lo",
            "--dhcp-range=10.46.1.100,10.46.1.200,255.255.255.0,12h",
            f"--dhcp-option=option:router,{AP_LAN_IP}",
            f"--dhcp-leasefile={LEASE_FILE}", "--dhcp-authoritative", "--no-ping",
            "--log-dhcp", "--log-facility=-",
            f"--pid-file={self._workdir / 'dnsmasq.pid'}",
            name="dnsmasq",
        )  # fmt: skip
        wait_for(
            lambda: (
                proc.poll() is not None
                or ":67 " in self.run_in("ap", "ss", "-lun").stdout
                or "DHCP, IP range" in _tail(self.logs["dnsmasq"])
            ),
            timeout=10,
            message="dnsmasq DHCP socket",
        )
        if proc.poll() is not None:
            raise RuntimeError(f"dnsmasq exited:\n{_tail(self.logs['dnsmasq'])}")

    def _start_opennds(self) -> None:
        wd = self._workdir
        # Private mount namespace: openNDS and its helper scripts see our config at the
        # path they read it from, and a stub instead of the helper that would edit the
        # host's /etc/dnsmasq.conf and /etc/hosts and restart the host's dnsmasq.
        script = (
            f'set -e; mount --bind "$1" {_NDS_DNSCONFIG}; mount --bind "$2" {_NDS_SYSTEM_CONF}; '
            f"exec opennds -f -d 2 -c {_NDS_SYSTEM_CONF} -w {self.ndsctl_socket}"
        )
        env = dict(os.environ)
        env["PATH"] = f"{wd / 'bin'}:/usr/sbin:/usr/bin:/sbin:/bin"
        proc = self.start_in(
            "ap",
            "unshare", "--mount", "--propagation", "private", "--",
            "sh", "-c", script, "sh", str(wd / "dnsconfig-stub.sh"), str(wd / "opennds.conf"),
            name="opennds", env=env,
        )  # fmt: skip
        log = self.logs["opennds"]

        def ready() -> bool:
            if proc.poll() is not None:
                raise _Fatal(f"opennds exited with {proc.returncode}")
            if "openNDS is now running" not in log.read_text(errors="replace"):
                return False
            return self.ndsctl("status", check=False, timeout=10).returncode == 0

        try:
            wait_for(ready, timeout=30, interval=0.2, message="openNDS to run")
        except (TimeoutError, _Fatal) as exc:
            raise RuntimeError(f"openNDS did not start: {exc}\n{_tail(log)}") from exc

    # ------------------------------------------------------------------ teardown steps

    @staticmethod
    def _kill_ns_pids(ns: str) -> None:
        res = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True)
        if res.returncode != 0:
            return
        pids = [int(p) for p in res.stdout.split() if p.isdigit()]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if pids:
            wait_for(
                lambda: (
                    not subprocess.run(
                        ["ip", "netns", "pids", ns], capture_output=True, text=True
                    ).stdout.split()
                ),
                timeout=10,
                message=f"processes of {ns} to exit",
            )

    @staticmethod
    def _delete_root_link(name: str) -> None:
        res = subprocess.run(["ip", "link", "show", name], capture_output=True, text=True)
        if res.returncode == 0:
            subprocess.run(["ip", "link", "del", name], capture_output=True, text=True, check=True)

    @staticmethod
    def _delete_ns(name: str) -> None:
        listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        if any(line.split()[:1] == [name] for line in listed.splitlines()):
            subprocess.run(["ip", "netns", "del", name], capture_output=True, text=True, check=True)

    def _remove_tmp_files(self) -> None:
        runtime = self._nds_runtime_dir or nds_runtime_dir()
        files = (LEASE_FILE, _NDSCTL_LOCK, self.ndsctl_socket)
        for path in (*files, *(f"{runtime}/{name}" for name in _NDS_RUNTIME_FILES)):
            p = Path(path)
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)

    # ------------------------------------------------------------------ queries

    def _link_info(self, ns: str, dev: str) -> dict[str, Any]:
        full = self._ns_prefix(ns)[-1]
        res = self.run_in(None, "ip", "-n", full, "-j", "addr", "show", "dev", dev, check=True)
        info: list[dict[str, Any]] = json.loads(res.stdout)
        return info[0]

    def _mac_of(self, ns: str, dev: str) -> str:
        return str(self._link_info(ns, dev)["address"]).lower()

    def _ipv4_of(self, ns: str, dev: str) -> str | None:
        for addr in self._link_info(ns, dev).get("addr_info", []):
            if addr.get("family") == "inet":
                return str(addr["local"])
        return None


class _Fatal(Exception):
    """A wait that cannot succeed any more (the awaited process died)."""


def _parse_last_headers(head: str) -> dict[str, str]:
    """Headers of the last response in a ``curl -D`` dump (lower-case names)."""
    blocks = [b for b in re.split(r"\r?\n\r?\n", head) if b.strip()]
    headers: dict[str, str] = {}
    if not blocks:
        return headers
    for line in blocks[-1].splitlines()[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return headers


_UDHCPC_SCRIPT = """#!/bin/sh
# busybox udhcpc event script: configure the address, mask and default route it got.
case "$1" in
    deconfig)
        ip -4 addr flush dev "$interface"
        ip link set "$interface" up
        ;;
    bound|renew)
        ip -4 addr flush dev "$interface"
        ip addr add "$ip/$mask" dev "$interface"
        if [ -n "$router" ]; then
            ip route replace default via "${router%% *}" dev "$interface"
        fi
        ;;
esac
exit 0
"""

_SERVICE_STUB = """#!/bin/sh
# Test stub first on openNDS's PATH: the testbed starts and stops openNDS itself.
echo "testbed: ignored: $(basename "$0") $*" >&2
exit 0
"""

_DNSCONFIG_STUB = """#!/bin/sh
# Test stub bind-mounted over /usr/lib/opennds/dnsconfig.sh in openNDS's private mount
# namespace: the real script edits the host's /etc/dnsmasq.conf and /etc/hosts and
# restarts the host's dnsmasq. The testbed's dnsmasq needs none of that.
printf "%s" "done"
exit 0
"""
