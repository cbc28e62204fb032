"""verify.yml's broker probe: does the broker refuse an AP's publish on another AP's topic?

Run on the machine running Ansible, with borne's Python (paho-mqtt >= 2.1). It connects
with the AP's own login (password on standard input, never on the command line) under a
client id of its own, so the real agent stays connected, and publishes one QoS 1
message to ``borne/v1/ap/<ap>-probe/status``. MQTT 5 (§3.4.2.1): mosquitto answers a
publish the ACL forbids with PUBACK reason 135, "Not authorized".

Prints ``refused`` and exits 0 when the broker refused it; prints ``accepted`` or
``cannot connect: <reason>`` and exits 1 otherwise. The broker's CA may be given in
``BORNE_PROBE_CA_PEM``.
"""

from __future__ import annotations

import argparse
import os
import secrets
import ssl
import sys
import threading
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

NOT_AUTHORIZED = 135


def main() -> int:
    """Probe once and report."""
    p = argparse.ArgumentParser(prog="mqtt_acl_probe")
    p.add_argument("--host", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--ap", required=True)
    p.add_argument("--username", default=None, help="the AP's MQTT login (default: --ap)")
    p.add_argument("--tls", action="store_true")
    p.add_argument("--timeout", type=float, default=10.0)
    args = p.parse_args()
    password = sys.stdin.readline().rstrip("\r\n")
    connected = threading.Event()
    acked = threading.Event()
    result: dict[str, Any] = {}

    def on_connect(_c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        result["connect"] = reason
        connected.set()

    def on_publish(_c: Any, _u: Any, _mid: int, reason: Any, _p: Any) -> None:
        result["puback"] = reason.value
        acked.set()

    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"{args.ap}-verify-{secrets.token_hex(4)}",
        protocol=mqtt.MQTTv5,
    )
    client.username_pw_set(args.username or args.ap, password)
    if args.tls:
        client.tls_set_context(
            ssl.create_default_context(cadata=os.environ.get("BORNE_PROBE_CA_PEM") or None)
        )
    client.on_connect = on_connect
    client.on_publish = on_publish
    try:
        client.connect(args.host, args.port)
    except OSError as exc:
        print(f"cannot connect: {exc}")
        return 1
    client.loop_start()
    try:
        if not connected.wait(args.timeout) or result["connect"].is_failure:
            print(f"cannot connect: {result.get('connect', 'no answer')}")
            return 1
        client.publish(f"borne/v1/ap/{args.ap}-probe/status", b"acl-probe", qos=1)
        if not acked.wait(args.timeout):
            print("cannot connect: no PUBACK")
            return 1
        refused = result["puback"] == NOT_AUTHORIZED
        print("refused" if refused else "accepted")
        return 0 if refused else 1
    finally:
        client.disconnect()
        client.loop_stop()


if __name__ == "__main__":
    raise SystemExit(main())
