"""Home Assistant MQTT discovery: the device and its sensors appear in Home Assistant with no YAML there.

Per Home Assistant's MQTT discovery protocol, each entity is one retained JSON config message on
`<discovery prefix>/sensor/<device_id>/<object_id>/config`. The sensors read the topics the daemon already
publishes (nothing extra is sent per frame):

- `emotion`: the dominant emotion (an enum sensor) from the retained `state` topic; attributes: the
  scores of the largest face, face_count and confidence;
- `face_count`: faces in view, from `state`;
- `processed_fps`, `classify_latency` (p50, ms): from `stats`, as diagnostic sensors.

All of them follow the daemon's retained `status` topic (`online`/`offline`, last will `offline`). The
configs are sent on every (re)connect and again whenever Home Assistant announces itself by publishing
`online` on `<discovery prefix>/status` (its birth message, e.g. after a restart that lost retained
messages).
"""

from __future__ import annotations

import json
import logging
from importlib import metadata
from typing import Any

from edge.publish.base import device_topic_base

log = logging.getLogger(__name__)

COMPONENT = "sensor"
HA_ONLINE = "online"


def _package_version() -> str:
    try:
        return metadata.version("emotion-edge")
    except metadata.PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown"


def _topics(config) -> dict[str, str]:
    base = device_topic_base(config.mqtt, config.device_id)
    return {kind: f"{base}/{kind}" for kind in ("state", "status", "stats")}


def discovery_messages(config, labels: list[str] | tuple[str, ...]) -> list[tuple[str, dict[str, Any]]]:
    """(topic, payload) for every discovery config; pure, so the exact messages are easy to check.

    `config` is the daemon's `edge.config.Config`; `labels` the classifier's labels in output order (the
    possible states of the emotion sensor, plus "none" when no face is in view).
    """
    device_id = config.device_id
    prefix = config.mqtt.discovery.prefix
    topics = _topics(config)
    version = _package_version()
    # unique_id and identifiers derive from device_id only, so they survive restarts and reinstalls and
    # Home Assistant keeps the entities' history and customisations.
    id_base = f"emotion_edge_{device_id.replace('-', '_')}"
    device = {
        "identifiers": [id_base],
        "name": f"Emotion edge {device_id}",
        "manufacturer": "emotion-edge",
        "model": "Facial-emotion detector (int8 TFLite)",
        "sw_version": version,
    }
    common = {
        "availability": [
            {"topic": topics["status"], "payload_available": "online", "payload_not_available": "offline"}
        ],
        "device": device,
        "origin": {"name": "emotion-edge", "sw_version": version},
    }
    messages = []
    for object_id, sensor in _sensors(topics, labels).items():
        payload = {**sensor, "unique_id": f"{id_base}_{object_id}", **common}
        messages.append((f"{prefix}/{COMPONENT}/{device_id}/{object_id}/config", payload))
    return messages


def _sensors(topics: dict[str, str], labels) -> dict[str, dict[str, Any]]:
    """Each sensor's own part of its config, by object id: what it reads from which topic."""
    return {
        "emotion": {
            "name": "Emotion",
            "state_topic": topics["state"],
            "value_template": "{{ value_json.dominant_emotion }}",
            "device_class": "enum",
            "options": [*labels, "none"],
            "json_attributes_topic": topics["state"],
            "json_attributes_template": (
                "{{ dict(value_json.scores, face_count=value_json.face_count,"
                " confidence=value_json.dominant_confidence) | tojson }}"
            ),
            "icon": "mdi:emoticon-outline",
        },
        "face_count": {
            "name": "Faces",
            "state_topic": topics["state"],
            "value_template": "{{ value_json.face_count }}",
            "state_class": "measurement",
            "icon": "mdi:account-multiple",
        },
        "processed_fps": {
            "name": "Processed frame rate",
            "state_topic": topics["stats"],
            "value_template": "{{ value_json.processed_fps }}",
            "unit_of_measurement": "fps",
            "state_class": "measurement",
            "entity_category": "diagnostic",
            "icon": "mdi:speedometer",
        },
        "classify_latency": {
            "name": "Classify latency",
            "state_topic": topics["stats"],
            "value_template": "{{ value_json.latency_ms.classify.p50 }}",
            "unit_of_measurement": "ms",
            "device_class": "duration",
            "state_class": "measurement",
            "entity_category": "diagnostic",
            "icon": "mdi:timer-outline",
        },
    }


def ha_status_topic(config) -> str:
    """Where Home Assistant publishes its birth (`online`) and will (`offline`) messages."""
    return f"{config.mqtt.discovery.prefix}/status"


def attach(publisher, config, labels) -> list[tuple[str, dict[str, Any]]]:
    """Wire discovery into an MQTT publisher (see edge/publish/mqtt.py for the hooks).

    Returns the messages it will send ([] when mqtt.discovery.enabled is false).
    """
    if not config.mqtt.discovery.enabled:
        return []
    messages = discovery_messages(config, labels)
    encoded = [(topic, json.dumps(payload, separators=(",", ":"))) for topic, payload in messages]

    def publish_all(pub) -> None:
        # Retained and QoS 1: Home Assistant may start after us and must still find every config.
        for topic, payload in encoded:
            pub.publish_raw(topic, payload, retain=True, qos=1)
        log.info(
            "Home Assistant discovery: %d sensors sent under %s/", len(encoded), config.mqtt.discovery.prefix
        )

    def on_ha_status(topic: str, payload: bytes) -> None:
        if payload.decode("utf-8", "replace").strip() == HA_ONLINE:
            publish_all(publisher)

    publisher.add_connect_hook(publish_all)
    publisher.subscribe(ha_status_topic(config), on_ha_status)
    return messages
