"""One MQTT connection driven by paho-mqtt in a thread of its own, with jittered backoff.

Shared by the agent and the controller's bridge. paho's network loop runs in a daemon
thread that this module owns; callbacks run in that thread, so callers hand work over
to their own thread or event loop (the controller uses ``call_soon_threadsafe``).
Reconnection uses capped full-jitter backoff so that 320 agents coming back after a
broker restart do not all knock at the same second. Standard library + paho-mqtt only.
"""

from __future__ import annotations

import logging
import random
import ssl
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

__all__ = ["LinkOptions", "MqttLink", "backoff_delay"]

logger = logging.getLogger(__name__)


def backoff_delay(attempt: int, cap_s: float, rng: random.Random | None = None) -> float:
    """Full-jitter delay before reconnect attempt ``attempt`` (0-based), at most ``cap_s``."""
    r = rng or random
    return max(0.05, r.uniform(0, min(cap_s, 0.5 * 1.5 ** min(attempt, 20))))


@dataclass
class LinkOptions:
    """How to reach the broker and who we are."""

    client_id: str
    host: str = "127.0.0.1"
    port: int = 1883
    keepalive_s: int = 30
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: bool = False
    ca_file: str | None = None
    clean_session: bool = False
    mqtt5: bool = False
    manual_ack: bool = False
    backoff_cap_s: float = 30.0
    max_queued: int = 100_000


Will = tuple[str, bytes, int, bool]


class MqttLink:
    """A paho client with its own network thread and reconnect policy."""

    def __init__(
        self,
        options: LinkOptions,
        *,
        on_connect: Callable[[MqttLink], None] | None = None,
        on_message: Callable[[mqtt.MQTTMessage], None] | None = None,
        on_disconnect: Callable[[MqttLink], None] | None = None,
        on_publish: Callable[[int], None] | None = None,
        on_subscribe: Callable[[int, list[ReasonCode]], None] | None = None,
        will: Will | None = None,
    ) -> None:
        self.options = options
        self.connected = threading.Event()
        self.reconnects = 0
        # Held while paho opens a connection and while anyone publishes: paho sets its
        # socket before it has written CONNECT, and a PUBLISH slipping in between is
        # refused by the broker (the link would then hang until the keep-alive expires).
        self._io_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._user_on_connect = on_connect
        self._user_on_message = on_message
        self._user_on_disconnect = on_disconnect
        self._user_on_publish = on_publish
        self._user_on_subscribe = on_subscribe
        self._attempt = 0
        self._grace = 10
        protocol = mqtt.MQTTv5 if options.mqtt5 else mqtt.MQTTv311
        kwargs: dict[str, Any] = {}
        if not options.mqtt5:
            kwargs["clean_session"] = options.clean_session
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=options.client_id,
            protocol=protocol,
            manual_ack=options.manual_ack,
            reconnect_on_failure=False,
            **kwargs,
        )
        self.client.max_queued_messages_set(options.max_queued)
        self.client.max_inflight_messages_set(100)
        if options.username:
            self.client.username_pw_set(options.username, options.password)
        if options.tls:
            ctx = ssl.create_default_context(cafile=options.ca_file)
            self.client.tls_set_context(ctx)
        if will is not None:
            self.client.will_set(will[0], will[1], qos=will[2], retain=will[3])
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        if on_publish is not None:
            self.client.on_publish = self._on_publish
        if on_subscribe is not None:
            self.client.on_subscribe = self._on_subscribe

    # paho callbacks (network thread) -------------------------------------------------
    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            logger.warning("broker refused the connection: %s", reason)
            return
        self._attempt = 0
        self.connected.set()
        logger.info("connected to %s:%d", self.options.host, self.options.port)
        if self._user_on_connect is not None:
            self._user_on_connect(self)

    def _on_disconnect(
        self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        was = self.connected.is_set()
        self.connected.clear()
        if was:
            log = logger.info if self._stop.is_set() else logger.warning
            log("disconnected from the broker: %s", reason)
            if self._user_on_disconnect is not None:
                self._user_on_disconnect(self)

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        # QoS 1: called when the broker's PUBACK for ``mid`` arrived (MQTT 3.1.1 §4.3.2).
        assert self._user_on_publish is not None
        self._user_on_publish(mid)

    def _on_subscribe(
        self, client: Any, userdata: Any, mid: int, reasons: list[ReasonCode], props: Any
    ) -> None:
        # The broker's SUBACK: one reason code per filter, a failure when it refused it.
        assert self._user_on_subscribe is not None
        self._user_on_subscribe(mid, reasons)

    def _on_message(self, client: Any, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        if self._user_on_message is None:
            return
        try:
            self._user_on_message(msg)
        except Exception:
            # The crash guard of the connection: a bug in a handler must not kill the
            # network thread (which would silently stop all traffic).
            logger.exception("message handler crashed on topic %s", msg.topic[:120])

    # lifecycle -----------------------------------------------------------------------
    def start(self) -> None:
        """Start the network thread; it connects and reconnects until :meth:`stop`."""
        self._thread = threading.Thread(
            target=self._run, name=f"mqtt[{self.options.client_id}]", daemon=True
        )
        self._thread.start()

    def _run(self) -> None:
        first = True
        while not self._stop.is_set():
            try:
                with self._io_lock:
                    if first:
                        self.client.connect(
                            self.options.host, self.options.port, self.options.keepalive_s
                        )
                        first = False
                    else:
                        self.client.reconnect()
            except (OSError, ssl.SSLError, ValueError) as exc:
                first = False if isinstance(exc, OSError) else first
                self._pause(f"cannot connect to {self.options.host}:{self.options.port}: {exc}")
                continue
            rc = mqtt.MQTT_ERR_SUCCESS
            # After stop() the loop keeps running until paho has written DISCONNECT
            # (loop() then reports NO_CONN), so that the broker does not send the Will.
            while rc == mqtt.MQTT_ERR_SUCCESS and self._grace > 0:
                rc = self.client.loop(timeout=0.2)
                if self._stop.is_set():
                    self._grace -= 1
            if self._stop.is_set():
                break
            self.connected.clear()
            self._pause(f"connection lost ({mqtt.error_string(rc)})")

    def _pause(self, why: str) -> None:
        delay = backoff_delay(self._attempt, self.options.backoff_cap_s)
        self._attempt += 1
        self.reconnects += 1
        logger.info("%s; retrying in %.1f s", why, delay)
        self._stop.wait(delay)

    def stop(self, timeout: float = 5.0) -> None:
        """Disconnect cleanly (no Last Will) and join the thread."""
        self._stop.set()
        try:
            self.client.disconnect()
        except OSError as exc:
            logger.debug("disconnect: %s", exc)
        if self._thread is not None:
            self._thread.join(timeout)
        self.connected.clear()

    def kill(self) -> None:
        """Drop the socket without DISCONNECT, as a crash would (the broker sends the Will)."""
        self._grace = 0
        self._stop.set()
        sock = self.client.socket()
        if sock is not None:
            sock.close()
        if self._thread is not None:
            self._thread.join(5.0)

    # operations (thread-safe in paho) ------------------------------------------------
    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> Any:
        """Queue a message; QoS 1 messages wait in paho's queue while disconnected."""
        with self._io_lock:
            return self.client.publish(topic, payload, qos=qos, retain=retain)

    def subscribe(self, topic_filters: str | Sequence[str], qos: int = 1) -> int | None:
        """Subscribe to one or several filters in one SUBSCRIBE packet (call from
        ``on_connect`` so that it is renewed after each reconnect); returns the packet's
        id, which ``on_subscribe`` receives with the broker's answer, or None when the
        packet could not be sent (the connection dropped: the next one subscribes)."""
        filters = [topic_filters] if isinstance(topic_filters, str) else list(topic_filters)
        rc, mid = self.client.subscribe([(f, qos) for f in filters])
        if mid is None:
            logger.warning("subscription not sent: %s", mqtt.error_string(rc))
        return mid

    def ack(self, mid: int, qos: int) -> None:
        """Send the PUBACK of a message received with ``manual_ack``."""
        self.client.ack(mid, qos)
