"""Home Assistant MQTT discovery: the messages themselves, and their delivery through a real Mosquitto."""

from __future__ import annotations

import json
import time

import paho.mqtt.client as mqtt
import pytest

from edge.config import Config, DiscoveryConfig, MqttConfig
from edge.publish.homeassistant import attach, discovery_messages
from edge.publish.mqtt import MqttPublisher
from tests.fakefaces import FER_LABELS
from tests.mosquitto import Subscriber, wait_until

SENSORS = {"emotion", "face_count", "processed_fps", "classify_latency"}


def make_config(device_id="kitchen-pi", broker=None, **discovery) -> Config:
    mqtt_kwargs = {"discovery": DiscoveryConfig(**discovery)}
    if broker is not None:
        mqtt_kwargs.update(host=broker.host, port=broker.port)
    return Config(device_id=device_id, mqtt=MqttConfig(**mqtt_kwargs))


def by_object_id(messages) -> dict[str, tuple[str, dict]]:
    return {topic.split("/")[-2]: (topic, payload) for topic, payload in messages}


def test_one_retained_config_per_sensor_on_the_documented_topics():
    messages = by_object_id(discovery_messages(make_config(), FER_LABELS))
    assert set(messages) == SENSORS
    for object_id, (topic, payload) in messages.items():
        assert topic == f"homeassistant/sensor/kitchen-pi/{object_id}/config"
        assert payload["unique_id"] == f"emotion_edge_kitchen_pi_{object_id}"
        assert payload["availability"] == [
            {
                "topic": "emotion/kitchen-pi/status",
                "payload_available": "online",
                "payload_not_available": "offline",
            }
        ]
        assert payload["device"]["identifiers"] == ["emotion_edge_kitchen_pi"]
        assert {"name", "manufacturer", "model", "sw_version"} <= set(payload["device"])
        assert payload["origin"]["name"] == "emotion-edge"
        json.dumps(payload, allow_nan=False)  # must go on the wire as plain JSON


def test_sensors_read_the_daemons_state_and_stats_topics():
    messages = by_object_id(discovery_messages(make_config(), FER_LABELS))
    emotion = messages["emotion"][1]
    assert emotion["state_topic"] == emotion["json_attributes_topic"] == "emotion/kitchen-pi/state"
    assert emotion["value_template"] == "{{ value_json.dominant_emotion }}"
    assert emotion["device_class"] == "enum" and emotion["options"] == [*FER_LABELS, "none"]
    assert "value_json.scores" in emotion["json_attributes_template"]
    assert "face_count" in emotion["json_attributes_template"]
    faces = messages["face_count"][1]
    assert faces["state_topic"] == "emotion/kitchen-pi/state" and faces["state_class"] == "measurement"
    for object_id, field in (
        ("processed_fps", "processed_fps"),
        ("classify_latency", "latency_ms.classify.p50"),
    ):
        sensor = messages[object_id][1]
        assert sensor["state_topic"] == "emotion/kitchen-pi/stats"
        assert sensor["value_template"] == f"{{{{ value_json.{field} }}}}"
        assert sensor["entity_category"] == "diagnostic" and sensor["state_class"] == "measurement"
    assert messages["classify_latency"][1]["unit_of_measurement"] == "ms"
    assert "entity_category" not in emotion and "entity_category" not in faces


def test_ids_are_stable_per_device_and_prefixes_are_configurable():
    first = discovery_messages(make_config("pi-a"), FER_LABELS)
    assert first == discovery_messages(make_config("pi-a"), FER_LABELS)
    other = discovery_messages(make_config("pi-b"), FER_LABELS)
    ids_a = {payload["unique_id"] for _, payload in first}
    ids_b = {payload["unique_id"] for _, payload in other}
    assert len(ids_a) == 4 and not ids_a & ids_b

    config = make_config("pi-a", prefix="ha")
    config.mqtt.topic_prefix = "home/cams"
    messages = by_object_id(discovery_messages(config, ["happy", "sad"]))
    topic, payload = messages["emotion"]
    assert topic == "ha/sensor/pi-a/emotion/config"
    assert payload["state_topic"] == "home/cams/pi-a/state"
    assert payload["options"] == ["happy", "sad", "none"]


def test_disabled_discovery_registers_nothing():
    class Recorder:
        def __getattr__(self, name):
            raise AssertionError(f"discovery disabled, but it used publisher.{name}")

    assert attach(Recorder(), make_config(enabled=False), FER_LABELS) == []


def _configs(sub) -> list[tuple[str, dict, bool]]:
    return [
        (topic, json.loads(payload), retained)
        for topic, payload, retained in list(sub.messages)
        if topic.startswith("homeassistant/sensor/") and topic.endswith("/config")
    ]


@pytest.fixture
def discovering_publisher(mosquitto):
    config = make_config("test-pi", broker=mosquitto)
    publisher = MqttPublisher(config.mqtt, config.device_id)
    messages = attach(publisher, config, FER_LABELS)
    publisher.start()
    yield publisher, messages
    publisher.close(timeout=2)


def test_configs_are_retained_on_the_broker_and_resent_when_home_assistant_comes_online(
    mosquitto, discovering_publisher
):
    publisher, expected = discovering_publisher
    with Subscriber(mosquitto, "homeassistant/#") as early:  # the configs have reached the broker
        assert wait_until(lambda: len(_configs(early)) >= 4), early.messages
    # A subscriber that arrives later (Home Assistant starting after the Pi) finds every config retained.
    with Subscriber(mosquitto, "homeassistant/#") as sub:
        assert wait_until(lambda: len(_configs(sub)) >= 4), sub.messages
        received = _configs(sub)
        assert sorted((t, p) for t, p, _ in received) == sorted(expected)
        assert all(retained for _, _, retained in received)
        for _, payload, _ in received:
            assert payload["state_topic"].startswith("emotion/test-pi/")
            assert payload["unique_id"].startswith("emotion_edge_test_pi_")
            assert payload["availability"][0]["topic"] == "emotion/test-pi/status"
            assert payload["device"]["identifiers"] == ["emotion_edge_test_pi"]

        # Home Assistant's will (`offline`) must not trigger anything; its birth (`online`) re-sends all.
        ha = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="fake-home-assistant")
        ha.connect(mosquitto.host, mosquitto.port)
        ha.loop_start()
        try:
            ha.publish("homeassistant/status", "offline", qos=1).wait_for_publish(5)
            time.sleep(0.5)
            assert len(_configs(sub)) == 4
            ha.publish("homeassistant/status", "online", qos=1).wait_for_publish(5)
            assert wait_until(lambda: len(_configs(sub)) >= 8), [t for t, _, _ in _configs(sub)]
            resent = _configs(sub)[4:]
            # Live (not retained-on-subscribe) deliveries of the same configs.
            assert sorted((t, p) for t, p, _ in resent) == sorted(expected)
        finally:
            ha.loop_stop()
            ha.disconnect()

        # The sensors' state_topic really is where the publisher puts the state.
        state_topic = by_object_id(expected)["emotion"][1]["state_topic"]
        with Subscriber(mosquitto, state_topic) as state_sub:
            publisher.publish_state({"dominant_emotion": "happy", "face_count": 1})
            _, payload, _ = state_sub.wait_topic(state_topic)
            assert json.loads(payload)["dominant_emotion"] == "happy"


def test_configs_come_back_after_a_broker_restart(mosquitto, discovering_publisher):
    # persistence false: the restarted broker has forgotten every retained config; the connect hook restores them.
    publisher, expected = discovering_publisher
    assert wait_until(lambda: publisher.connected)
    mosquitto.stop()
    assert wait_until(lambda: not publisher.connected)
    mosquitto.start()
    assert wait_until(lambda: publisher.connected, timeout=30)
    with Subscriber(mosquitto, "homeassistant/#") as sub:
        assert wait_until(lambda: len(_configs(sub)) >= 4), sub.messages
        assert sorted((t, p) for t, p, _ in _configs(sub)) == sorted(expected)


def test_the_daemon_announces_itself_to_home_assistant(tmp_path, mosquitto, tiny_model_path):
    # End to end: `emotion-edge --publish mqtt` over a photo folder leaves the discovery configs (with the
    # model's labels) and its availability retained on the broker for Home Assistant to find later.
    import os
    import subprocess
    import sys

    from tests.facesdata import write_photo_folder

    photos = tmp_path / "photos"
    write_photo_folder(photos)
    config = tmp_path / "config.yaml"
    config.write_text(
        f"device_id: e2e-pi\nmqtt:\n  host: {mosquitto.host}\n  port: {mosquitto.port}\nstats:\n  interval_s: 0\n"
    )
    command = [sys.executable, "-m", "edge.cli", "--config", str(config), "--source", str(photos)]
    command += ["--model", str(tiny_model_path), "--publish", "mqtt"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("NOTIFY_SOCKET", None)
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    with Subscriber(mosquitto, ["homeassistant/#", "emotion/e2e-pi/status"]) as sub:
        assert wait_until(lambda: len(_configs(sub)) >= 4), sub.messages
        configs = {topic: payload for topic, payload, _ in _configs(sub)}
        emotion = configs["homeassistant/sensor/e2e-pi/emotion/config"]
        assert emotion["options"] == [*FER_LABELS, "none"]
        assert emotion["availability"][0]["topic"] == "emotion/e2e-pi/status"
        sub.wait_topic("emotion/e2e-pi/status", b"offline", retain=True)


def test_the_publisher_discovery_and_forget_put_a_device_under_one_topic_base():
    """Three modules name a device's topics; one function (edge.publish.base.device_topic_base) builds the base."""
    from edge.publish.forget import retained_topics

    config = Config(device_id="pi-1")
    config.mqtt.topic_prefix = "home/emotion"
    publisher = MqttPublisher(config.mqtt, config.device_id)
    assert publisher.topics == {k: f"home/emotion/pi-1/{k}" for k in ("events", "state", "status", "stats")}
    sensors = [payload for _, payload in discovery_messages(config, ["happy", "sad"])]
    assert {p["state_topic"] for p in sensors} <= {publisher.topics["state"], publisher.topics["stats"]}
    assert all(p["availability"][0]["topic"] == publisher.topics["status"] for p in sensors)
    subscriptions, ours = retained_topics(config)
    assert "home/emotion/pi-1/#" in subscriptions
    assert {publisher.topics["status"], publisher.topics["state"]} <= set(ours)
