"""The test harness itself, proved with real components only.

openNDS, dnsmasq, busybox udhcpc, curl and mosquitto run for real in network namespaces
(``tests/testbed.py``); PostgreSQL is the cluster started by ``tests/run.sh``.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import re
import socket
import subprocess
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from tests.testbed import (
    AP_LAN_IP,
    LEASE_FILE,
    ROOT_IP,
    UPSTREAM_BODY,
    UPSTREAM_IP,
    Hotspot,
    MosquittoBroker,
    decode_fas,
    fas_fields,
    free_port,
)

UPSTREAM_URL = f"http://{UPSTREAM_IP}/"
MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


# --------------------------------------------------------------------------- helpers


def _mqtt_round_trip(host: str, port: int, topic: str, payload: bytes) -> mqtt.MQTTMessage:
    """Subscribe then publish at QoS 1 with paho-mqtt; return the message received."""
    received: list[mqtt.MQTTMessage] = []
    got = threading.Event()
    subscribed = threading.Event()

    def on_subscribe(
        _c: mqtt.Client, _u: Any, _mid: int, _codes: list[ReasonCode], _p: Properties | None
    ) -> None:
        subscribed.set()

    def on_message(_c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        received.append(msg)
        got.set()

    sub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="testbed-sub")
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="testbed-pub")
    sub.on_subscribe = on_subscribe
    sub.on_message = on_message
    sub.connect(host, port)
    sub.loop_start()
    try:
        sub.subscribe(topic, qos=1)
        assert subscribed.wait(10), "no SUBACK"
        pub.connect(host, port)
        pub.loop_start()
        try:
            info = pub.publish(topic, payload, qos=1)
            info.wait_for_publish(timeout=10)
            assert info.is_published(), "no PUBACK"
            assert got.wait(10), "message not delivered"
        finally:
            pub.disconnect()
            pub.loop_stop()
    finally:
        sub.disconnect()
        sub.loop_stop()
    return received[0]


@pytest.fixture
def root_http_server() -> Iterator[Callable[[int], str]]:
    """Start tiny HTTP servers in the root namespace on 10.46.2.1 (a stand-in portal)."""
    servers: list[http.server.HTTPServer] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = f"portal-ok {self.client_address[0]}".encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    def start(port: int) -> str:
        server = http.server.HTTPServer((ROOT_IP, port), Handler)
        servers.append(server)
        threading.Thread(target=server.serve_forever, name=f"portal:{port}", daemon=True).start()
        return f"http://{ROOT_IP}:{port}/"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def _ns_exists(name: str) -> bool:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return any(line.split()[:1] == [name] for line in out.splitlines())


def _link_exists(name: str) -> bool:
    return subprocess.run(["ip", "link", "show", name], capture_output=True).returncode == 0


def _md5(path: str) -> str | None:
    p = Path(path)
    return hashlib.md5(p.read_bytes()).hexdigest() if p.exists() else None


# --------------------------------------------------------------------------- netns


@pytest.mark.netns
def test_client_gets_dhcp_lease_from_gateway(hotspot: Hotspot) -> None:
    """The client gets its address by DHCP from dnsmasq on the AP, after openNDS started."""
    assert hotspot.client_ip is not None
    assert hotspot.client_ip.startswith("10.46.1.")
    assert 100 <= int(hotspot.client_ip.rsplit(".", 1)[1]) <= 200
    assert MAC_RE.match(hotspot.mac)
    leases = Path(LEASE_FILE).read_text()
    assert f"{hotspot.client_mac} {hotspot.client_ip}" in leases
    route = hotspot.run_in("cl", "ip", "route", "show", "default", check=True).stdout
    assert f"via {AP_LAN_IP}" in route


@pytest.mark.netns
def test_unauthorised_client_is_redirected_to_fas(make_hotspot: Callable[..., Hotspot]) -> None:
    """Before authorisation openNDS answers 307 to the FAS, with the client and gateway in `fas`."""
    port = free_port()
    hs = make_hotspot(fas_port=port, gateway_name="ap-46201-07", faspath="/fas/")
    res = hs.curl_from_client(UPSTREAM_URL)
    assert res.status == 307, res
    assert res.location is not None
    assert res.location.startswith(f"http://{ROOT_IP}:{port}/fas/?fas="), res.location
    fields = decode_fas(res.location)
    assert fields["clientmac"] == hs.client_mac
    assert fields["clientip"] == hs.client_ip
    assert fields["gatewayname"] == "ap-46201-07"
    assert fields["gatewayaddress"] == f"{AP_LAN_IP}:2050"
    assert fields["clientif"] == "lan0"
    assert urllib.parse.unquote(fields["originurl"]) == UPSTREAM_URL
    assert re.fullmatch(r"[0-9a-f]{64}", fields["hid"])
    assert fas_fields(res.location).startswith("hid=")


@pytest.mark.netns
def test_ndsctl_auth_lets_client_through_and_deauth_closes(hotspot: Hotspot) -> None:
    """`ndsctl auth <mac>` in the ap namespace opens the upstream; `ndsctl deauth` closes it."""
    mac = hotspot.client_mac
    assert mac
    assert hotspot.curl_from_client(UPSTREAM_URL).status == 307

    out = hotspot.run_in(hotspot.ap_namespace, "ndsctl", "auth", mac, "10", check=True).stdout
    assert "authenticated" in out
    res = hotspot.curl_from_client(UPSTREAM_URL)
    assert (res.status, res.body.strip()) == (200, UPSTREAM_BODY)
    entry = hotspot.client_entry()
    assert entry is not None and entry["state"] == "Authenticated"

    hotspot.ndsctl("deauth", mac)
    res = hotspot.curl_from_client(UPSTREAM_URL)
    assert res.status == 307
    assert res.location and res.location.startswith(hotspot.fas_url + "?fas=")


@pytest.mark.netns
def test_ndsctl_json_lists_client_with_string_fields(hotspot: Hotspot) -> None:
    """`ndsctl json` is JSON listing the client by MAC; every value is a string."""
    hotspot.curl_from_client(UPSTREAM_URL)  # openNDS learns the client on its first request
    raw = hotspot.run_in("ap", "ndsctl", "json", check=True).stdout
    data = json.loads(raw)
    assert data["client_list_length"] == "1"
    entry = data["clients"][hotspot.client_mac]
    assert entry["mac"] == hotspot.client_mac
    assert entry["ip"] == hotspot.client_ip
    assert entry["state"] == "Preauthenticated"
    assert entry["gatewayname"] == hotspot.gateway_name
    assert entry["session_start"] == "0"
    assert entry["session_end"] == "null"
    assert all(isinstance(v, str) for v in entry.values())
    assert Path(hotspot.ndsctl_socket).is_socket()

    hotspot.ndsctl("auth", hotspot.mac, "10", "100", "200", "1000", "2000", "sess-1")
    entry = hotspot.ndsctl_json(hotspot.client_mac)
    assert entry["state"] == "Authenticated"
    assert int(entry["session_end"]) - int(entry["session_start"]) == 600
    assert entry["custom"] == "sess-1"
    assert entry["upload_rate_limit_threshold"] == "100"
    assert entry["download_rate_limit_threshold"] == "200"
    assert (entry["upload_quota"], entry["download_quota"]) == ("1000", "2000")


@pytest.mark.netns
def test_portal_in_root_namespace_reachable_from_preauthenticated_client(
    hotspot: Hotspot, root_http_server: Callable[[int], str]
) -> None:
    """A server on 10.46.2.1:<fasport> in the root namespace answers a preauthenticated client."""
    url = root_http_server(hotspot.fas_port)
    res = hotspot.curl_from_client(url)
    assert res.status == 200, res
    assert res.body == f"portal-ok {hotspot.client_ip}"
    other = hotspot.curl_from_client(f"http://{ROOT_IP}:{free_port()}/", max_time=3)
    assert other.status != 200  # only the FAS port is open before authorisation
    from_ap = hotspot.run_in("ap", "curl", "-sS", "--max-time", "5", url, check=True).stdout
    assert from_ap.startswith("portal-ok 10.46.2.2")


@pytest.mark.netns
def test_broker_on_root_link_reachable_from_ap(hotspot: Hotspot) -> None:
    """An agent in the ap namespace publishes (QoS 1) to a broker on 10.46.2.1 in the root one."""
    broker = hotspot.start_broker()
    received: list[bytes] = []
    got = threading.Event()

    def on_message(_c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        received.append(bytes(msg.payload))
        got.set()

    sub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="root-sub")
    sub.on_message = on_message
    sub.connect(broker.host, broker.port)
    sub.loop_start()
    try:
        sub.subscribe("borne/v1/ap/ap-46201-01/status", qos=1)
        hotspot.wait_for(
            lambda: hotspot.run_in(
                "ap", "mosquitto_pub", "-h", ROOT_IP, "-p", str(broker.port), "-q", "1",
                "-t", "borne/v1/ap/ap-46201-01/status", "-m", "online",
            ).returncode == 0 and got.wait(2),
            timeout=15,
            message="message from the ap namespace",
        )  # fmt: skip
    finally:
        sub.disconnect()
        sub.loop_stop()
    assert received[0] == b"online"


@pytest.mark.netns
def test_teardown_removes_everything(tmp_path: Path) -> None:
    """Teardown leaves no namespace, link, process, lease or socket, and /etc is untouched."""
    before = {p: _md5(p) for p in ("/etc/dnsmasq.conf", "/etc/hosts", "/etc/opennds/opennds.conf")}
    with Hotspot(fas_port=free_port(), workdir=tmp_path / "hs") as hs:
        pids = [proc.pid for _, proc in hs._procs]
        names = (hs.ns.inet, hs.ns.ap, hs.ns.cl)
        assert all(_ns_exists(n) for n in names)
        assert _link_exists(hs.ns.root_link)
        assert hs.curl_from_client(UPSTREAM_URL).status == 307
    assert not any(_ns_exists(n) for n in names)
    assert not _link_exists(hs.ns.root_link)
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert not Path(LEASE_FILE).exists()
    assert not Path(hs.ndsctl_socket).exists()
    route = subprocess.run(["ip", "route", "show", "10.46.1.0/24"], capture_output=True, text=True)
    assert route.stdout.strip() == ""
    assert {p: _md5(p) for p in before} == before
    with socket.socket() as s, pytest.raises(OSError):  # the address left the root ns
        s.bind((ROOT_IP, 0))


# --------------------------------------------------------------------------- broker


@pytest.mark.broker
def test_mosquitto_fixture_round_trip_qos1(mosquitto: MosquittoBroker) -> None:
    """A QoS 1 message published to the session broker reaches a QoS 1 subscriber."""
    msg = _mqtt_round_trip(mosquitto.host, mosquitto.port, "borne/test/roundtrip", b"hello")
    assert (msg.topic, msg.payload, msg.qos) == ("borne/test/roundtrip", b"hello", 1)


@pytest.mark.broker
def test_mosquitto_fixture_stop_start_keeps_port(mosquitto: MosquittoBroker) -> None:
    """`stop()` makes the broker unreachable; `start()` serves again on the same port."""
    port, old_pid = mosquitto.port, mosquitto.pid
    mosquitto.stop()
    assert mosquitto.pid is None
    with pytest.raises(OSError):
        socket.create_connection((mosquitto.host, port), timeout=1).close()
    mosquitto.start()
    assert mosquitto.port == port and mosquitto.pid not in (None, old_pid)
    msg = _mqtt_round_trip(mosquitto.host, port, "borne/test/restart", b"again")
    assert msg.payload == b"again"


# --------------------------------------------------------------------------- PostgreSQL


@pytest.mark.postgres
async def test_postgres_url_connects(postgres_url: str) -> None:
    """The PostgreSQL URL of the fixture opens an asyncpg connection through SQLAlchemy."""
    from sqlalchemy import make_url, text
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(postgres_url)
    try:
        async with engine.connect() as conn:
            row = (await conn.execute(text("select current_database(), current_user, 1"))).one()
    finally:
        await engine.dispose()
    url = make_url(postgres_url)
    assert tuple(row) == (url.database, url.username, 1)
