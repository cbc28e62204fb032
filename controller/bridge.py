"""The controller's MQTT bridge: paho in its own thread, an asyncio queue on our side.

paho's network thread never touches the event loop except through
``run_coroutine_threadsafe``; when the bounded queue is full, that thread waits, stops
reading the socket, and TCP backpressure reaches the broker (nothing is dropped).
Messages are acknowledged to the broker (manual PUBACK) only after the controller has
stored their effects, so a crash before that gets them redelivered.

The bridge is *subscribed* once the broker's SUBACK grants every agent topic: before
that, what an agent publishes has no subscriber and the broker drops it (MQTT 3.1.1
§3.3.5); a persistent session (``clean_session=False``) keeps the subscription from
then on, across restarts of the controller. A refused filter (the broker's ACL) is
logged as an error and counted: nothing of that topic would ever arrive.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.reasoncodes import ReasonCode

from agents._mqtt_io import LinkOptions, MqttLink
from agents.contract import AGENT_KINDS, controller_subscription
from controller.config import MqttSettings

__all__ = ["Bridge", "Incoming", "link_options"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Incoming:
    """One message received from the broker, to be acknowledged with :meth:`Bridge.ack`."""

    topic: str
    payload: bytes
    mid: int
    qos: int
    retained: bool


def link_options(settings: MqttSettings, client_id: str, **extra: Any) -> LinkOptions:
    """Connection options for the configured broker (one place reads the MQTT settings)."""
    return LinkOptions(
        client_id=client_id,
        host=settings.host,
        port=settings.port,
        keepalive_s=settings.keepalive_s,
        username=settings.username,
        password=settings.password.get_secret_value() if settings.password else None,
        tls=settings.tls,
        ca_file=str(settings.ca_file) if settings.ca_file else None,
        **extra,
    )


class Bridge:
    """Subscribes to every agent topic and hands messages to the event loop."""

    def __init__(self, settings: MqttSettings, *, backoff_cap_s: float = 30.0) -> None:
        self.settings = settings
        self.queue: asyncio.Queue[Incoming] = asyncio.Queue(maxsize=settings.queue_size)
        self._loop: asyncio.AbstractEventLoop | None = None
        self.filters = [controller_subscription(k, settings.share_group) for k in AGENT_KINDS]
        # Set when the broker has granted every filter on the current connection.
        self.subscribed = threading.Event()
        self.subscriptions_refused = 0
        self._subscribe_mid: int | None = None
        self.link = MqttLink(
            link_options(
                settings,
                settings.client_id,
                clean_session=False,
                mqtt5=settings.share_group is not None,
                manual_ack=True,
                backoff_cap_s=backoff_cap_s,
            ),
            on_connect=self._on_connect,
            on_message=self._on_message,
            on_disconnect=lambda link: self.subscribed.clear(),
            on_subscribe=self._on_subscribe,
        )

    def _on_connect(self, link: MqttLink) -> None:
        self.subscribed.clear()
        self._subscribe_mid = link.subscribe(self.filters, qos=1)

    def _on_subscribe(self, mid: int, reasons: list[ReasonCode]) -> None:
        if mid != self._subscribe_mid:
            return
        refused = [f for f, r in zip(self.filters, reasons, strict=False) if r.is_failure]
        if refused or len(reasons) != len(self.filters):
            self.subscriptions_refused += 1
            logger.error(
                "the broker refused the subscription to %s: no message of these topics "
                "reaches the controller (check the broker's ACL for %s)",
                ", ".join(refused) or f"{len(self.filters) - len(reasons)} filters",
                self.settings.username or "this client",
            )
            return
        self.subscribed.set()
        logger.info("subscribed to the agents' topics (%d filters)", len(self.filters))

    def _on_message(self, msg: mqtt.MQTTMessage) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        item = Incoming(msg.topic, bytes(msg.payload), msg.mid, msg.qos, bool(msg.retain))
        fut = asyncio.run_coroutine_threadsafe(self.queue.put(item), loop)
        while True:
            try:
                fut.result(timeout=1.0)
                return
            except concurrent.futures.TimeoutError:
                if loop.is_closed() or not loop.is_running():
                    fut.cancel()
                    return

    def start(self) -> None:
        """Connect (in the background) and start feeding :attr:`queue`."""
        self._loop = asyncio.get_running_loop()
        self.link.start()

    async def wait_subscribed(self, within_s: float) -> bool:
        """Wait until the broker has granted every agent topic; False after ``within_s``."""
        return await asyncio.to_thread(self.subscribed.wait, within_s)

    def ack(self, item: Incoming) -> None:
        """Acknowledge a processed message to the broker."""
        if item.qos > 0:
            self.link.ack(item.mid, item.qos)

    async def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        """Publish a controller message (commands) without blocking the loop.

        paho's publish may wait for the link's lock while a connection is being opened.
        """
        await asyncio.to_thread(self.link.publish, topic, payload, qos)

    async def aclose(self) -> None:
        """Disconnect without blocking the loop."""
        await asyncio.to_thread(self.link.stop)
