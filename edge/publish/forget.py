"""`emotion-edge forget`: clear what a device left retained on the MQTT broker, so Home Assistant drops it.

The daemon leaves retained messages on purpose: its Home Assistant discovery configs, `state` and `status`,
so that a subscriber connecting later still finds them. After an uninstall or a `device_id` change they
would stay for good, and Home Assistant would keep showing a device that no longer exists. An empty retained
message deletes a retained message, and an empty discovery config deletes the entity (Home Assistant's MQTT
discovery protocol).

What is cleared: every retained message under `<topic_prefix>/<device_id>/#` and
`<discovery prefix>/+/<device_id>/+/config` (so configs of sensors an older version announced go too), plus
the topics this version publishes retained, even if none showed up. The broker sends a subscription's
retained messages before anything published later on the same connection, so a marker message published
after subscribing tells when they have all arrived.
"""

from __future__ import annotations

import ssl
import threading
import time
import uuid
from dataclasses import dataclass, field

import paho.mqtt.client as mqtt

from edge.publish.base import PublishError, device_topic_base
from edge.publish.homeassistant import discovery_messages
from edge.publish.mqtt import ONLINE, authenticated_client


class ForgetError(RuntimeError):
    """The retained messages could not be cleared; the message says why and what to do."""


@dataclass
class ForgetResult:
    address: str
    cleared: list[str] = field(default_factory=list)  # topics that held a retained message, now empty
    found: dict[str, bytes] = field(default_factory=dict)  # what the broker held, by topic


def retained_topics(config) -> tuple[list[str], list[str]]:
    """(subscriptions that find this device's retained messages, topics this version retains)."""
    device_id = config.device_id
    base = device_topic_base(config.mqtt, device_id)
    prefix = config.mqtt.discovery.prefix
    subscriptions = [f"{base}/#", f"{prefix}/+/{device_id}/+/config"]
    # Per-label configs (score sensors, emotion triggers) are found by the subscription; every other config of
    # this version is cleared even if it did not show up, the diagnostics too when stats are off now.
    ours = [f"{base}/status", f"{base}/state"]
    ours += [topic for topic, _ in discovery_messages(config, [], every_entity=True)]
    return subscriptions, ours


def forget(config, timeout: float = 10.0, force: bool = False) -> ForgetResult:
    """Delete the device's retained messages on the configured broker; waits at most ~`timeout` s per step.

    Refuses (ForgetError) while the device's `status` is `online` unless `force`: a running daemon would
    publish everything again on its next reconnect.
    """
    subscriptions, ours = retained_topics(config)
    session = _Session(config, timeout)
    session.connect()
    try:
        found = session.read_retained(subscriptions)
        status = found.get(f"{device_topic_base(config.mqtt, config.device_id)}/status", b"")
        if status.decode("utf-8", "replace") == ONLINE and not force:
            raise ForgetError(
                f"device {config.device_id!r} is online on {session.address}: its daemon is running and would "
                "publish everything again. Stop it first (sudo systemctl stop emotion-edge), or pass --force"
            )
        for topic in subscriptions:
            session.client.unsubscribe(topic)  # our own empty messages need not come back
        # Discovery configs first: Home Assistant then removes the entities before it sees them go offline.
        to_clear = sorted(set(found) | set(ours), key=lambda topic: (topic in ours[:2], topic))
        session.clear(to_clear)
        return ForgetResult(session.address, [topic for topic in to_clear if topic in found], found)
    finally:
        session.close()


class _Session:
    """`forget`'s one connection: its callbacks collect the retained messages until a marker comes back."""

    def __init__(self, config, timeout: float):
        cfg = config.mqtt
        self.cfg = cfg
        self.timeout = timeout
        self.address = f"{cfg.host}:{cfg.port}"
        self.marker = f"{device_topic_base(cfg, config.device_id)}/forget-{uuid.uuid4().hex}"
        self.found: dict[str, bytes] = {}
        self._connected = threading.Event()
        self._marker_seen = threading.Event()
        self._refusal: list[str] = []
        try:
            client = authenticated_client(
                cfg, f"emotion-edge-{config.device_id}-forget-{uuid.uuid4().hex[:8]}"
            )
        except PublishError as exc:
            raise ForgetError(str(exc)) from None
        client.on_connect = self._on_connect
        client.on_message = self._on_message
        client.connect_timeout = timeout
        self.client = client

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            hint = " (check mqtt.username and mqtt.password)" if reason_code.value in (4, 5, 134, 135) else ""
            self._refusal.append(f"{reason_code}{hint}")
        self._connected.set()

    def _on_message(self, client, userdata, message):
        if message.topic == self.marker:
            self._marker_seen.set()
        elif message.retain and message.payload and not self._marker_seen.is_set():
            self.found[message.topic] = message.payload

    def connect(self) -> None:
        """Connect and start paho's thread; close() is due only once this has returned."""
        try:
            self.client.connect(self.cfg.host, self.cfg.port, keepalive=max(10, int(self.timeout) * 2))
        except (OSError, ssl.SSLError, ValueError) as exc:
            raise ForgetError(f"cannot connect to the MQTT broker at {self.address}: {exc}") from None
        self.client.loop_start()

    def read_retained(self, subscriptions: list[str]) -> dict[str, bytes]:
        """What the broker holds retained under `subscriptions`, by topic."""
        if not self._connected.wait(self.timeout):
            raise ForgetError(f"the MQTT broker at {self.address} did not answer within {self.timeout:g} s")
        if self._refusal:
            raise ForgetError(f"the MQTT broker at {self.address} refused the connection: {self._refusal[0]}")
        # QoS 0 both ways: retained messages and the marker then leave the broker strictly in order.
        for topic in subscriptions:
            self.client.subscribe(topic, qos=0)
        self.client.publish(self.marker, b"", qos=0, retain=False)
        if not self._marker_seen.wait(self.timeout):
            raise ForgetError(
                f"the MQTT broker at {self.address} did not echo a test message within {self.timeout:g} s"
            )
        return self.found

    def clear(self, topics: list[str]) -> None:
        """An empty retained message on each topic, in order, each confirmed by the broker."""
        infos = [self.client.publish(topic, b"", qos=1, retain=True) for topic in topics]
        deadline = time.monotonic() + self.timeout
        for topic, info in zip(topics, infos, strict=True):
            if not _confirmed(info, deadline):
                raise ForgetError(
                    f"the MQTT broker at {self.address} did not confirm clearing {topic} in time"
                )

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _confirmed(info: mqtt.MQTTMessageInfo, deadline: float) -> bool:
    """Wait until the broker acknowledged a QoS 1 publish; paho raises when the message never left."""
    try:
        info.wait_for_publish(max(0.0, deadline - time.monotonic()))
        return info.is_published()
    except (RuntimeError, ValueError):
        return False
