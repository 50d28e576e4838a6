"""Home Assistant MQTT discovery: the messages themselves, their templates rendered on real state payloads,
and their delivery through a real Mosquitto. (`make ha-check` runs them in a real Home Assistant.)"""

from __future__ import annotations

import json
import time

import jinja2
import paho.mqtt.client as mqtt
import pytest

from edge.config import Config, DiscoveryConfig, MqttConfig, PreviewConfig
from edge.emit import CAMERA_AWAY, build_state
from edge.publish.homeassistant import DIAGNOSTICS, attach, configuration_url, discovery_messages
from edge.publish.mqtt import MqttPublisher, change_messages
from testbed.mosquitto import Subscriber, wait_until
from tests.support.fakefaces import FER_LABELS

STATE_ENTITIES = {
    ("binary_sensor", "presence"),
    ("sensor", "face_count"),
    ("sensor", "emotion"),
    ("sensor", "confidence"),
    ("binary_sensor", "camera"),
    *(("sensor", f"score_{label}") for label in FER_LABELS),
}
DIAGNOSTIC_IDS = {("sensor", diag.object_id) for diag in DIAGNOSTICS}
TRIGGERS = {"face_appeared", "face_left", *(f"emotion_{label}" for label in FER_LABELS)}
AVAILABILITY = [
    {"topic": "emotion/kitchen-pi/status", "payload_available": "online", "payload_not_available": "offline"}
]


def make_config(device_id="kitchen-pi", broker=None, **discovery) -> Config:
    mqtt_kwargs = {"discovery": DiscoveryConfig(**discovery)}
    if broker is not None:
        mqtt_kwargs.update(host=broker.host, port=broker.port)
    return Config(device_id=device_id, mqtt=MqttConfig(**mqtt_kwargs))


def entities(messages) -> dict[tuple[str, str], dict]:
    """(component, object id) -> payload, for every entity config (not the device triggers)."""
    out = {}
    for topic, payload in messages:
        _, component, _, object_id, _ = topic.split("/")
        if component != "device_automation":
            out[(component, object_id)] = payload
    return out


def triggers(messages) -> dict[str, dict]:
    return {t.split("/")[3]: p for t, p in messages if t.split("/")[1] == "device_automation"}


def render(template: str, payload: dict) -> str:
    """A value template as Home Assistant renders it: Jinja with the message's JSON as `value_json`."""
    return jinja2.Environment().from_string(template).render(value_json=payload)


def face(track_id, box, emotion, scores) -> dict:
    return {
        "track_id": track_id,
        "box": box,
        "emotion": emotion,
        "confidence": scores[emotion],
        "scores": scores,
    }


HAPPY = dict.fromkeys(FER_LABELS, 0.0) | {"happy": 0.9141, "neutral": 0.0542, "sad": 0.0317}


def test_every_entity_and_trigger_on_its_documented_topic():
    messages = discovery_messages(make_config(), FER_LABELS)
    assert set(entities(messages)) == STATE_ENTITIES | DIAGNOSTIC_IDS | {("event", "face")}
    assert set(triggers(messages)) == TRIGGERS
    assert len(messages) == len(STATE_ENTITIES) + len(DIAGNOSTICS) + 1 + len(TRIGGERS)
    for topic, payload in messages:
        assert topic.startswith("homeassistant/") and topic.split("/")[2] == "kitchen-pi"
        assert topic.endswith("/config") and len(topic.split("/")) == 5
        assert payload["device"]["identifiers"] == ["emotion_edge_kitchen_pi"]
        assert {"name", "manufacturer", "model", "sw_version"} <= set(payload["device"])
        assert payload["origin"]["name"] == "emotion-edge"
        json.dumps(payload, allow_nan=False)  # must go on the wire as plain JSON
    for (_, object_id), payload in entities(messages).items():
        assert payload["unique_id"] == f"emotion_edge_kitchen_pi_{object_id}"
        assert payload["availability"] == AVAILABILITY


def test_the_state_entities_exact_configs():
    found = entities(discovery_messages(make_config(), FER_LABELS))
    common = {"state_topic": "emotion/kitchen-pi/state", "expire_after": 180}  # 3 x the 60 s heartbeat
    own = {key: {k: v for k, v in found[key].items() if k not in ("availability", "device", "origin")}
           for key in found}  # fmt: skip
    assert own[("binary_sensor", "presence")] == {
        **common, "name": "Presence", "device_class": "occupancy",
        "value_template": "{{ 'ON' if value_json.get('present', value_json.face_count > 0) else 'OFF' }}",
        "unique_id": "emotion_edge_kitchen_pi_presence",
    }  # fmt: skip
    assert own[("sensor", "emotion")] == {
        **common, "name": "Emotion", "value_template": "{{ value_json.dominant_emotion }}",
        "device_class": "enum", "options": [*FER_LABELS, "none"], "icon": "mdi:emoticon-outline",
        "unique_id": "emotion_edge_kitchen_pi_emotion",
    }  # fmt: skip
    assert own[("binary_sensor", "camera")]["device_class"] == "problem"
    assert own[("binary_sensor", "camera")]["entity_category"] == "diagnostic"
    happy = own[("sensor", "score_happy")]
    assert happy["unit_of_measurement"] == "%" and happy["state_class"] == "measurement"
    assert happy["enabled_by_default"] is False and happy["name"] == "Happy score"
    assert own[("sensor", "confidence")]["unit_of_measurement"] == "%"
    assert "enabled_by_default" not in own[("sensor", "confidence")]
    # No entity carries the scores as attributes: they changed every second and each change is a recorder row.
    assert not any("json_attributes_topic" in payload for payload in found.values())
    assert own[("event", "face")] == {
        "name": "Face", "state_topic": "emotion/kitchen-pi/change",
        "event_types": ["appeared", "changed", "left"], "icon": "mdi:face-recognition",
        "unique_id": "emotion_edge_kitchen_pi_face",
    }  # fmt: skip


def test_state_templates_render_what_home_assistant_must_show():
    found = entities(discovery_messages(make_config(), FER_LABELS))

    def shown(state) -> dict:
        return {key[1]: render(p["value_template"], state) for key, p in found.items() if key[0] != "event"
                and p["state_topic"].endswith("/state")}  # fmt: skip

    one = build_state("kitchen-pi", FER_LABELS, [face(1, [10, 10, 80, 80], "happy", HAPPY)], decimals=2)
    values = shown(one)
    assert values["presence"] == "ON" and values["face_count"] == "1" and values["emotion"] == "happy"
    assert values["confidence"] == "91.0" and values["camera"] == "OFF"
    assert (
        values["score_happy"] == "91.0" and values["score_neutral"] == "5.0" and values["score_sad"] == "3.0"
    )
    assert values["score_angry"] == "0.0"
    nobody = shown(build_state("kitchen-pi", FER_LABELS, []))
    assert nobody["presence"] == "OFF" and nobody["emotion"] == "none" and nobody["face_count"] == "0"
    # "None" is what Home Assistant's MQTT sensors read as unknown: no 0 % scores while nobody is there.
    assert nobody["confidence"] == "None" and nobody["score_happy"] == "None"
    away = shown(build_state("kitchen-pi", FER_LABELS, [], camera=CAMERA_AWAY))
    assert away["camera"] == "ON" and away["presence"] == "OFF"
    # A face missed on the last frame but still tracked: present, though none is in view to score.
    missed = shown(build_state("kitchen-pi", FER_LABELS, [], present=True))
    assert missed["presence"] == "ON" and missed["face_count"] == "0" and missed["score_happy"] == "None"
    before = {k: v for k, v in one.items() if k != "present"}  # retained by a daemon from before `present`
    assert shown(before)["presence"] == "ON" and shown({**before, "face_count": 0})["presence"] == "OFF"
    assert shown({**one, "camera": "ok"})["camera"] == "OFF"
    older = {k: v for k, v in one.items() if k != "camera"}  # a state from before the camera field
    assert shown(older)["camera"] == "OFF"


def test_diagnostics_one_per_stats_key_and_they_tolerate_missing_counters():
    found = entities(discovery_messages(make_config(), FER_LABELS))
    stats = {"processed_fps": 7.5, "input_fps": 15.0, "dropped_frames": 3, "rss_mb": 101.2, "cpu_temp_c": None,
             "uptime_s": 120.5, "reconnects": 1, "latency_ms": {"classify": {"p50": 1.2}, "total": {"p50": 9.8}}}  # fmt: skip
    values = {}
    for diag in DIAGNOSTICS:
        payload = found[("sensor", diag.object_id)]
        assert (
            payload["state_topic"] == "emotion/kitchen-pi/stats"
            and payload["entity_category"] == "diagnostic"
        )
        assert payload["expire_after"] == 90  # 3 x stats.interval_s
        assert payload.get("enabled_by_default", True) is diag.enabled
        assert payload.get("unit_of_measurement") == diag.unit
        values[diag.object_id] = render(payload["value_template"], stats)
    assert values["processed_fps"] == "7.5" and values["classify_latency"] == "1.2"
    assert values["frame_latency"] == "9.8" and values["rss_mb"] == "101.2" and values["reconnects"] == "1"
    # Missing or null (no thermal zone; the counters before they are in the stats): unknown, not an error.
    assert values["cpu_temp_c"] == values["events_dropped"] == values["mqtt_buffered"] == "None"
    assert (
        render(found[("sensor", "events_dropped")]["value_template"], {**stats, "events_dropped": 4}) == "4"
    )
    assert render(found[("sensor", "mqtt_buffered")]["value_template"], {**stats, "mqtt_buffered": 0}) == "0"


def test_device_triggers_fire_on_the_change_messages_they_describe():
    found = triggers(discovery_messages(make_config(), FER_LABELS))
    event = {"timestamp": "2026-12-02T00:00:00.000Z", "frame_index": 7, "faces": [face(3, [0, 0, 9, 9], "happy", HAPPY)],
             "changes": [{"track_id": 3, "kind": "appeared", "emotion": "happy", "previous": None},
                         {"track_id": 2, "kind": "left", "emotion": "sad", "previous": None}]}  # fmt: skip
    appeared, left = change_messages(event)
    assert appeared == {"event_type": "appeared", "track_id": 3, "emotion": "happy", "previous": None,
                        "confidence": 0.9141, "timestamp": "2026-12-02T00:00:00.000Z", "frame_index": 7}  # fmt: skip
    assert left["event_type"] == "left" and left["confidence"] is None

    def fires(trigger_id, message) -> bool:
        trigger = found[trigger_id]
        return render(trigger["value_template"], message) == trigger["payload"]

    assert found["face_appeared"] == {
        "automation_type": "trigger", "topic": "emotion/kitchen-pi/change", "type": "appeared", "subtype": "face",
        "value_template": "{{ value_json.event_type }}", "payload": "appeared",
        "device": found["face_appeared"]["device"], "origin": found["face_appeared"]["origin"],
    }  # fmt: skip
    assert fires("face_appeared", appeared) and not fires("face_appeared", left)
    assert fires("face_left", left) and not fires("face_left", appeared)
    assert fires("emotion_happy", appeared) and not fires("emotion_sad", appeared)
    assert not fires("emotion_sad", left)  # a face that left does not "show" its last emotion
    changed = {**appeared, "event_type": "changed", "emotion": "surprise", "previous": "happy"}
    assert fires("emotion_surprise", changed)


def test_expiry_follows_the_heartbeat_and_diagnostics_follow_stats():
    config = make_config()
    config.publish.state_heartbeat_s = 0
    config.stats.interval_s = 0
    messages = discovery_messages(config, FER_LABELS)
    assert not any("expire_after" in payload for _, payload in messages)
    assert not DIAGNOSTIC_IDS & set(entities(messages))  # nothing would ever fill them
    every = entities(discovery_messages(config, FER_LABELS, every_entity=True))
    assert set(every) >= DIAGNOSTIC_IDS  # what `forget` clears
    config.publish.state_heartbeat_s = 10.4
    presence = entities(discovery_messages(config, FER_LABELS))[("binary_sensor", "presence")]
    assert presence["expire_after"] == 32


def test_configuration_url_points_at_a_preview_other_machines_can_open(monkeypatch):
    config = make_config()
    assert configuration_url(config) is None  # preview off
    config.preview = PreviewConfig(enabled=True, host="127.0.0.1", port=8080)
    assert configuration_url(config) is None  # loopback: Home Assistant's browser cannot open it
    config.preview = PreviewConfig(enabled=True, host="0.0.0.0", port=8081)
    monkeypatch.setattr("socket.gethostname", lambda: "kitchen-pi")
    assert configuration_url(config) == "http://kitchen-pi:8081/"
    config.preview = PreviewConfig(enabled=True, host="192.168.1.20", port=8080)
    assert configuration_url(config) == "http://192.168.1.20:8080/"
    config.mqtt.discovery.configuration_url = "https://pi.example/"
    assert configuration_url(config) == "https://pi.example/"
    device = discovery_messages(config, FER_LABELS)[0][1]["device"]
    assert device["configuration_url"] == "https://pi.example/"
    assert "configuration_url" not in discovery_messages(make_config(), FER_LABELS)[0][1]["device"]


def test_ids_are_stable_per_device_and_prefixes_are_configurable():
    first = discovery_messages(make_config("pi-a"), FER_LABELS)
    assert first == discovery_messages(make_config("pi-a"), FER_LABELS)
    other = discovery_messages(make_config("pi-b"), FER_LABELS)
    ids_a = {payload["unique_id"] for _, payload in first if "unique_id" in payload}
    ids_b = {payload["unique_id"] for _, payload in other if "unique_id" in payload}
    assert len(ids_a) == len(STATE_ENTITIES) + len(DIAGNOSTICS) + 1 and not ids_a & ids_b

    config = make_config("pi-a", prefix="ha")
    config.mqtt.topic_prefix = "home/cams"
    messages = discovery_messages(config, ["happy", "Sad face"])
    found = entities(messages)
    assert ("sensor", "score_sad_face") in found  # a label becomes an id of [a-z0-9_]
    assert render(found[("sensor", "score_sad_face")]["value_template"],
                  {"face_count": 1, "scores": {"Sad face": 0.25}}) == "25.0"  # fmt: skip
    topic = next(t for t, _ in messages if t.endswith("/emotion/config"))
    assert topic == "ha/sensor/pi-a/emotion/config"
    assert found[("sensor", "emotion")]["state_topic"] == "home/cams/pi-a/state"
    assert found[("sensor", "emotion")]["options"] == ["happy", "Sad face", "none"]


def test_disabled_discovery_registers_nothing():
    class Recorder:
        def __getattr__(self, name):
            raise AssertionError(f"discovery disabled, but it used publisher.{name}")

    assert attach(Recorder(), make_config(enabled=False), FER_LABELS) == []


def _configs(sub) -> list[tuple[str, dict, bool]]:
    return [
        (topic, json.loads(payload), retained)
        for topic, payload, retained in list(sub.messages)
        if topic.startswith("homeassistant/") and topic.endswith("/config")
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
    count = len(expected)
    with Subscriber(mosquitto, "homeassistant/#") as early:  # the configs have reached the broker
        assert wait_until(lambda: len(_configs(early)) >= count), early.messages
    # A subscriber that arrives later (Home Assistant starting after the Pi) finds every config retained.
    with Subscriber(mosquitto, "homeassistant/#") as sub:
        assert wait_until(lambda: len(_configs(sub)) >= count), sub.messages
        received = _configs(sub)
        assert sorted((t, p) for t, p, _ in received) == sorted(expected)
        assert all(retained for _, _, retained in received)

        # Home Assistant's will (`offline`) must not trigger anything; its birth (`online`) re-sends all.
        ha = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="fake-home-assistant")
        ha.connect(mosquitto.host, mosquitto.port)
        ha.loop_start()
        try:
            ha.publish("homeassistant/status", "offline", qos=1).wait_for_publish(5)
            sub.barrier()
            assert len(_configs(sub)) == count
            ha.publish("homeassistant/status", "online", qos=1).wait_for_publish(5)
            assert wait_until(lambda: len(_configs(sub)) >= 2 * count), [t for t, _, _ in _configs(sub)]
            resent = _configs(sub)[count:]
            # Live (not retained-on-subscribe) deliveries of the same configs.
            assert sorted((t, p) for t, p, _ in resent) == sorted(expected)
        finally:
            ha.loop_stop()
            ha.disconnect()

        # The entities' state_topic really is where the publisher puts the state.
        state_topic = entities(expected)[("sensor", "emotion")]["state_topic"]
        with Subscriber(mosquitto, state_topic) as state_sub:
            publisher.publish_state({"dominant_emotion": "happy", "face_count": 1})
            _, payload, _ = state_sub.wait_topic(state_topic)
            assert json.loads(payload)["dominant_emotion"] == "happy"


def test_change_messages_go_out_live_one_per_change_and_are_never_buffered(mosquitto, discovering_publisher):
    publisher, expected = discovering_publisher
    assert wait_until(lambda: publisher.connected)
    topic = entities(expected)[("event", "face")]["state_topic"]
    event = {"schema_version": 1, "timestamp": "2026-12-02T00:00:00.000Z", "frame_index": 5,
             "faces": [face(1, [0, 0, 9, 9], "happy", HAPPY), face(2, [20, 0, 9, 9], "happy", HAPPY)],
             "changes": [{"track_id": 1, "kind": "appeared", "emotion": "happy", "previous": None},
                         {"track_id": 2, "kind": "appeared", "emotion": "happy", "previous": None}]}  # fmt: skip
    with Subscriber(mosquitto, ["emotion/test-pi/change", "emotion/test-pi/events"]) as sub:
        publisher.publish_event(event)
        assert wait_until(lambda: sub.count(topic) == 2 and sub.count("emotion/test-pi/events") == 1)
        assert [json.loads(p) for t, p, r in sub.messages if t == topic] == change_messages(event)
        assert not any(r for _, _, r in sub.messages)  # nothing retained: a trigger is a moment
    mosquitto.stop()
    assert wait_until(lambda: not publisher.connected)
    publisher.publish_event(event)  # buffered: the event waits, its changes do not
    mosquitto.start()
    with Subscriber(mosquitto, ["emotion/test-pi/change", "emotion/test-pi/events"]) as sub:
        assert wait_until(lambda: publisher.connected, timeout=30)
        sub.wait_topic("emotion/test-pi/events")
        sub.barrier()
        assert sub.count(topic) == 0


def test_configs_come_back_after_a_broker_restart(mosquitto, discovering_publisher):
    # persistence false: the restarted broker has forgotten every retained config; the connect hook restores them.
    publisher, expected = discovering_publisher
    assert wait_until(lambda: publisher.connected)
    mosquitto.stop()
    assert wait_until(lambda: not publisher.connected)
    mosquitto.start()
    assert wait_until(lambda: publisher.connected, timeout=30)
    with Subscriber(mosquitto, "homeassistant/#") as sub:
        # By topic: a config still in flight when the broker went away is re-sent by paho (QoS 1) beside the
        # connect hook's copy, and Home Assistant keeps the last one; every config must come back, unchanged.
        assert wait_until(lambda: len({t for t, _, _ in _configs(sub)}) >= len(expected)), sub.messages
        assert {t: p for t, p, _ in _configs(sub)} == dict(expected)


def test_the_daemon_announces_itself_to_home_assistant(tmp_path, mosquitto, tiny_model_path):
    # End to end: `emotion-edge --publish mqtt` over a photo folder leaves the discovery configs (with the
    # model's labels) and its availability retained on the broker for Home Assistant to find later.
    import os
    import subprocess
    import sys

    from testbed.facesdata import write_photo_folder

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
    started = time.monotonic()
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    count = len(STATE_ENTITIES) + 1 + len(TRIGGERS)  # stats are off: no diagnostics
    with Subscriber(mosquitto, ["homeassistant/#", "emotion/e2e-pi/#"]) as sub:
        assert wait_until(lambda: len(_configs(sub)) >= count), (time.monotonic() - started, sub.messages)
        configs = {topic: payload for topic, payload, _ in _configs(sub)}
        assert len(configs) == count
        emotion = configs["homeassistant/sensor/e2e-pi/emotion/config"]
        assert emotion["options"] == [*FER_LABELS, "none"]
        assert emotion["availability"][0]["topic"] == "emotion/e2e-pi/status"
        sub.wait_topic("emotion/e2e-pi/status", b"offline", retain=True)
        state = json.loads(sub.wait_topic("emotion/e2e-pi/state", retain=True)[1])
        assert state["camera"] == "ok" and set(state["scores"]) == set(FER_LABELS)
        assert all(round(v, 2) == v for v in state["scores"].values())  # publish.score_decimals: 2


def test_the_publisher_discovery_and_forget_put_a_device_under_one_topic_base():
    """Three modules name a device's topics; one function (edge.publish.base.device_topic_base) builds the base."""
    from edge.publish.forget import retained_topics

    config = Config(device_id="pi-1")
    config.mqtt.topic_prefix = "home/emotion"
    publisher = MqttPublisher(config.mqtt, config.device_id)
    assert publisher.topics == {
        k: f"home/emotion/pi-1/{k}" for k in ("events", "change", "state", "status", "stats")
    }
    found = discovery_messages(config, ["happy", "sad"])
    reads = {p.get("state_topic") or p.get("topic") for _, p in found}
    assert reads == {publisher.topics[k] for k in ("state", "stats", "change")}
    assert all(p["availability"][0]["topic"] == publisher.topics["status"] for p in entities(found).values())
    subscriptions, ours = retained_topics(config)
    assert "home/emotion/pi-1/#" in subscriptions and "homeassistant/+/pi-1/+/config" in subscriptions
    assert {publisher.topics["status"], publisher.topics["state"]} <= set(ours)
