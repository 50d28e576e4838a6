"""MqttPublisher against a real Mosquitto: availability, retained state, buffering across outages, hooks."""

from __future__ import annotations

import json
import logging
import time

import pytest

from edge.config import MqttConfig
from edge.publish.mqtt import MqttPublisher
from testbed.mosquitto import Subscriber, wait_until
from tests.support.slowlink import SlowLink

DEVICE = "test-pi"
BASE = f"emotion/{DEVICE}"


def _publisher(broker, **overrides) -> MqttPublisher:
    config = MqttConfig(host=broker.host, port=broker.port, **overrides)
    return MqttPublisher(config, DEVICE)


def test_online_events_state_and_clean_offline(mosquitto):
    publisher = _publisher(mosquitto)
    with Subscriber(mosquitto, f"{BASE}/#") as sub:
        publisher.start()
        sub.wait_topic(f"{BASE}/status", b"online")
        for i in range(5):
            publisher.publish_event({"frame_index": i})
        publisher.publish_state({"face_count": 1})
        publisher.publish_stats({"uptime_s": 1.0})
        sub.wait_topic(f"{BASE}/stats")
        sub.wait_for(lambda m: m[0] == f"{BASE}/events" and json.loads(m[1])["frame_index"] == 4)
        assert [e["frame_index"] for e in sub.json_payloads(f"{BASE}/events")] == [0, 1, 2, 3, 4]
        assert sub.json_payloads(f"{BASE}/state") == [{"face_count": 1}]
        publisher.close(timeout=2)
        sub.wait_topic(f"{BASE}/status", b"offline")
    # A subscriber arriving later sees the retained values: state and offline.
    with Subscriber(mosquitto, f"{BASE}/#") as late:
        late.wait_topic(f"{BASE}/status", b"offline", retain=True)
        _, payload, retained = late.wait_topic(f"{BASE}/state")
        assert retained and json.loads(payload) == {"face_count": 1}
        late.barrier()  # every retained message has arrived by now
        assert late.count(f"{BASE}/events") == 0  # events are not retained


def test_broker_restart_buffers_in_order_and_republishes(mosquitto, caplog):
    caplog.set_level(logging.INFO, logger="edge.publish.mqtt")
    publisher = _publisher(mosquitto, buffer_size=3)
    hook_calls = []
    publisher.add_connect_hook(lambda p: hook_calls.append(p.connected))
    publisher.start()
    try:
        assert wait_until(lambda: publisher.connected)
        with Subscriber(mosquitto, f"{BASE}/state") as before:
            publisher.publish_state({"face_count": 2})
            before.wait_topic(f"{BASE}/state")  # the broker has it: the restart below is what loses it
        mosquitto.stop()  # the broker forgets everything: persistence is off
        assert wait_until(lambda: not publisher.connected)
        for i in range(5):
            publisher.publish_event({"frame_index": i})
        assert publisher.buffered_events == 3 and publisher.dropped_events == 2
        mosquitto.start()
        with Subscriber(mosquitto, f"{BASE}/#") as sub:
            # paho's backoff after the outage is 1..2 s; then online, the state again and the buffer in order.
            sub.wait_topic(f"{BASE}/status", b"online", timeout=20)
            sub.wait_for(lambda m: m[0] == f"{BASE}/events" and json.loads(m[1])["frame_index"] == 4)
            assert [e["frame_index"] for e in sub.json_payloads(f"{BASE}/events")] == [2, 3, 4]
            sub.wait_topic(f"{BASE}/state")
            assert sub.json_payloads(f"{BASE}/state")[-1] == {"face_count": 2}
        assert publisher.reconnects == 1
        assert hook_calls == [True, True]
        assert any("connection to" in r.getMessage() and "lost" in r.getMessage() for r in caplog.records)
    finally:
        publisher.close(timeout=1)


@pytest.mark.backoff
def test_broker_down_at_start_warns_once_then_connects(mosquitto, caplog):
    caplog.set_level(logging.INFO, logger="edge.publish.mqtt")
    mosquitto.stop()
    publisher = _publisher(mosquitto)
    publisher.start()
    try:
        publisher.publish_event({"frame_index": 0})  # never blocks, never raises
        time.sleep(3.5)  # several retries (1 s, 2 s backoff)
        unreachable = [r for r in caplog.records if "unreachable, retrying" in r.getMessage()]
        assert len(unreachable) == 1, [r.getMessage() for r in caplog.records]
        assert f"{mosquitto.host}:{mosquitto.port}" in unreachable[0].getMessage()
        assert not any(r.exc_info for r in caplog.records)
        mosquitto.start()
        with Subscriber(mosquitto, f"{BASE}/events") as sub:
            sub.wait_topic(f"{BASE}/events", timeout=20)
        assert publisher.reconnects == 0  # the first successful connect is not a reconnect
    finally:
        publisher.close(timeout=1)


def test_subscribe_and_publish_raw_survive_reconnect(mosquitto):
    publisher = _publisher(mosquitto)
    received = []
    publisher.subscribe("homeassistant/status", lambda topic, payload: received.append((topic, payload)))
    publisher.add_connect_hook(lambda p: p.publish_raw("homeassistant/sensor/x/config", "{}", retain=True))
    publisher.start()
    try:
        # The hook ran: the subscriber sees its config live or, when it subscribed later, retained.
        with Subscriber(mosquitto, "homeassistant/sensor/#") as sub:
            sub.wait_topic("homeassistant/sensor/x/config", b"{}")
        mosquitto.stop()
        assert wait_until(lambda: not publisher.connected)
        assert publisher.publish_raw("a/b", "x") is False  # nothing queued while away
        mosquitto.start()
        with Subscriber(mosquitto, "homeassistant/sensor/#") as sub:
            # The hook ran again on reconnect. The publisher subscribes before it runs its hooks, on the same
            # connection, so once the hook's message is here the broker has the re-subscription too.
            sub.wait_topic("homeassistant/sensor/x/config", b"{}", timeout=30)
        with Subscriber(mosquitto, "homeassistant/sensor/#") as sub:
            # the (non-persistent) broker holds the config retained again
            sub.wait_topic("homeassistant/sensor/x/config", b"{}", retain=True)
            sub.client.publish("homeassistant/status", "online", qos=1).wait_for_publish(5)
            assert wait_until(lambda: received == [("homeassistant/status", b"online")])
    finally:
        publisher.close(timeout=1)


def test_offline_survives_a_congested_link_through_the_last_will(mosquitto):
    """A stop while PUBACKs lag (paho's in-flight window full, `offline` still queued) must not leave
    `online` retained: a clean DISCONNECT would discard the will, so the publisher drops the link."""
    with SlowLink(mosquitto.port) as link:
        publisher = MqttPublisher(MqttConfig(host=link.host, port=link.port), DEVICE)
        with Subscriber(mosquitto, f"{BASE}/status") as sub:
            publisher.start()
            sub.wait_topic(f"{BASE}/status", b"online")
            link.delay = 3.0
            for i in range(30):  # past paho's 20-message in-flight window
                publisher.publish_event({"frame_index": i})
            publisher.close(timeout=0.5)
            sub.wait_topic(f"{BASE}/status", b"offline", timeout=10)
    with Subscriber(mosquitto, f"{BASE}/status") as late:
        late.wait_topic(f"{BASE}/status", b"offline", retain=True)
        late.barrier()
        assert [m[1] for m in late.messages] == [b"offline"]


def test_events_paho_refuses_when_its_queue_is_full_count_as_dropped(mosquitto):
    """On a link that stopped acknowledging, paho's bounded queue (100 messages here) fills up: what it
    refuses is lost and must be counted as dropped, not as published."""
    with SlowLink(mosquitto.port) as link:
        publisher = MqttPublisher(MqttConfig(host=link.host, port=link.port, buffer_size=0), DEVICE)
        publisher.start()
        try:
            assert wait_until(lambda: publisher.connected)
            time.sleep(0.3)  # the `online` PUBACK is in
            link.delay = 60.0
            for i in range(150):
                publisher.publish_event({"frame_index": i})
            assert (publisher.published_events, publisher.dropped_events) == (100, 50)
        finally:
            publisher.close(timeout=0.3)
