"""Home Assistant MQTT discovery: the device and its entities appear in Home Assistant with no YAML there.

One retained JSON config message per entity (Home Assistant's single-component discovery), on
`<discovery prefix>/<component>/<device_id>/<object_id>/config`, all under one device. Single-component, not the
one-message device discovery Home Assistant added in 2024.11: every release since 2023.8 (the event entity)
reads these, the two schemes are equally supported today, and one entity's config can change or go alone.
The entities read the topics the daemon publishes anyway (nothing extra is sent per frame):

- from the retained `state`: presence (occupancy), faces, emotion (enum), confidence, camera (problem) and one
  score per emotion (percent; disabled until a user enables the ones they want graphs of). They expire
  (unavailable) after three missed state heartbeats (`publish.state_heartbeat_s`), when it is on;
- from `change` (one message per appeared / changed / left): the `Face` event entity, and device triggers
  (a face appeared / left; an emotion shown) for the automation editor;
- from `stats`: the diagnostics of DIAGNOSTICS, one line per stats key, announced while stats are on.

All of them follow the daemon's retained `status` topic (`online`/`offline`, last will `offline`). The
configs are sent on every (re)connect and again whenever Home Assistant announces itself by publishing
`online` on `<discovery prefix>/status` (its birth message, e.g. after a restart that lost retained
messages).
"""

from __future__ import annotations

import json
import logging
import math
import re
import socket
from importlib import metadata
from typing import Any, NamedTuple

from edge.publish.base import device_topic_base

log = logging.getLogger(__name__)

HA_ONLINE = "online"
EVENT_TYPES = ("appeared", "changed", "left")
EXPIRE_AFTER_HEARTBEATS = 3  # one late or lost message must not make the entities flap to unavailable


class Diagnostic(NamedTuple):
    """A diagnostic sensor on one `stats` key: `path` is where its value is in the stats JSON."""

    object_id: str
    name: str
    path: str
    unit: str | None
    device_class: str | None
    state_class: str | None
    icon: str
    enabled: bool  # enabled by default; the others are one click away in Home Assistant


# The stats keys Home Assistant shows, one line each. The counters of dropped events and of the MQTT outage
# buffer may be missing from a stats payload (`| default(none)` in the template): the sensor is then unknown.
DIAGNOSTICS = (
    Diagnostic("processed_fps", "Processed frame rate", "processed_fps", "fps", None, "measurement", "mdi:speedometer", True),
    Diagnostic("input_fps", "Camera frame rate", "input_fps", "fps", None, "measurement", "mdi:camera-timer", False),
    Diagnostic("dropped_frames", "Dropped frames", "dropped_frames", None, None, "total_increasing", "mdi:image-off-outline", False),
    Diagnostic("classify_latency", "Classify latency", "latency_ms.classify.p50", "ms", "duration", "measurement", "mdi:timer-outline", True),
    Diagnostic("frame_latency", "Frame latency", "latency_ms.total.p50", "ms", "duration", "measurement", "mdi:timer-outline", False),
    Diagnostic("rss_mb", "Memory", "rss_mb", "MiB", "data_size", "measurement", "mdi:memory", True),
    Diagnostic("cpu_temp_c", "CPU temperature", "cpu_temp_c", "°C", "temperature", "measurement", "mdi:thermometer", True),
    Diagnostic("uptime_s", "Uptime", "uptime_s", "s", "duration", "total_increasing", "mdi:clock-outline", False),
    Diagnostic("reconnects", "MQTT reconnects", "reconnects", None, None, "total_increasing", "mdi:lan-pending", True),
    Diagnostic("events_dropped", "Events dropped", "events_dropped", None, None, "total_increasing", "mdi:alert-circle-outline", True),
    Diagnostic("mqtt_buffered", "MQTT buffered events", "mqtt_buffered", None, None, "measurement", "mdi:tray-full", True),
)  # fmt: skip


def _package_version() -> str:
    try:
        return metadata.version("emotion-edge")
    except metadata.PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown"


def _topics(config) -> dict[str, str]:
    base = device_topic_base(config.mqtt, config.device_id)
    return {kind: f"{base}/{kind}" for kind in ("state", "status", "stats", "change")}


def label_id(label: str) -> str:
    """A label as it may appear in object ids and unique ids: [a-z0-9_]."""
    return re.sub(r"[^a-z0-9_]+", "_", label.lower()).strip("_") or "label"


def configuration_url(config) -> str | None:
    """The device page's link: mqtt.discovery.configuration_url, else the preview page when other machines
    can reach it (a loopback bind cannot be opened from Home Assistant's browser), else None."""
    if config.mqtt.discovery.configuration_url:
        return config.mqtt.discovery.configuration_url
    preview = config.preview
    if not preview.enabled:
        return None
    from edge.preview.address import is_loopback

    host = preview.host
    if is_loopback(host):
        return None
    if host in ("0.0.0.0", "::", ""):
        host = socket.gethostname()
    return f"http://{'[' + host + ']' if ':' in host else host}:{preview.port}/"


def _expire_after(interval_s: float) -> dict[str, int]:
    return {"expire_after": math.ceil(EXPIRE_AFTER_HEARTBEATS * interval_s)} if interval_s > 0 else {}


def discovery_messages(
    config, labels: list[str] | tuple[str, ...], every_entity: bool = False
) -> list[tuple[str, dict[str, Any]]]:
    """(topic, payload) for every discovery config; pure, so the exact messages are easy to check.

    `config` is the daemon's `edge.config.Config`; `labels` the classifier's labels in output order (the
    emotion sensor's states, plus "none" when no face is in view; one score sensor and one trigger each).
    `every_entity`: also the diagnostics when stats are off (what `forget` must clear either way).
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
    url = configuration_url(config)
    if url:
        device["configuration_url"] = url
    origin = {"name": "emotion-edge", "sw_version": version}
    common = {
        "availability": [
            {"topic": topics["status"], "payload_available": "online", "payload_not_available": "offline"}
        ],
        "device": device,
        "origin": origin,
    }
    stats_interval = config.stats.interval_s
    entities = {
        **_state_entities(topics["state"], labels, _expire_after(config.publish.state_heartbeat_s)),
        ("event", "face"): _face_event(topics["change"]),
    }
    if stats_interval > 0 or every_entity:
        entities.update(_diagnostics(topics["stats"], _expire_after(stats_interval)))
    messages = []
    for (component, object_id), entity in entities.items():
        payload = {**entity, "unique_id": f"{id_base}_{object_id}", **common}
        messages.append((f"{prefix}/{component}/{device_id}/{object_id}/config", payload))
    for trigger_id, trigger in _device_triggers(topics["change"], labels).items():
        payload = {**trigger, "device": device, "origin": origin}
        messages.append((f"{prefix}/device_automation/{device_id}/{trigger_id}/config", payload))
    return messages


def _state_entities(state: str, labels, expire: dict) -> dict[tuple[str, str], dict[str, Any]]:
    """The entities on the retained state, by (component, object id)."""
    in_view = "value_json.face_count > 0"
    # `present` rides out a few missed frames (edge/emit.py build_state); a state retained by a daemon from
    # before it has none, and then a face in view is presence.
    present = f"value_json.get('present', {in_view})"
    entities: dict[tuple[str, str], dict[str, Any]] = {
        ("binary_sensor", "presence"): {
            "name": "Presence",
            "device_class": "occupancy",
            "value_template": f"{{{{ 'ON' if {present} else 'OFF' }}}}",
        },
        ("sensor", "face_count"): {
            "name": "Faces",
            "value_template": "{{ value_json.face_count }}",
            "state_class": "measurement",
            "icon": "mdi:account-multiple",
        },
        ("sensor", "emotion"): {
            "name": "Emotion",
            "value_template": "{{ value_json.dominant_emotion }}",
            "device_class": "enum",
            "options": [*labels, "none"],
            "icon": "mdi:emoticon-outline",
        },
        ("sensor", "confidence"): {
            "name": "Confidence",
            "value_template": (
                "{{ (value_json.dominant_confidence * 100) | round(1)"
                " if value_json.dominant_confidence is not none else none }}"
            ),
            **_percent("mdi:gauge"),
        },
        ("binary_sensor", "camera"): {
            "name": "Camera",
            "device_class": "problem",
            "entity_category": "diagnostic",
            "value_template": "{{ 'ON' if value_json.get('camera') == 'away' else 'OFF' }}",
        },
    }
    for label in labels:
        entities[("sensor", f"score_{label_id(label)}")] = {
            "name": f"{label.capitalize()} score",
            "value_template": (
                f"{{{{ (value_json.scores[{json.dumps(label)}] * 100) | round(1) if {in_view} else none }}}}"
            ),
            **_percent("mdi:chart-bell-curve"),
            "enabled_by_default": False,  # seven graphs most users never open; each is one click away
        }
    return {key: {"state_topic": state, **entity, **expire} for key, entity in entities.items()}


def _percent(icon: str) -> dict[str, Any]:
    return {
        "unit_of_measurement": "%",
        "state_class": "measurement",
        "suggested_display_precision": 0,
        "icon": icon,
    }


def _face_event(change: str) -> dict[str, Any]:
    """The event entity: fires on every `change` message; its attributes are the message's other keys."""
    return {
        "name": "Face",
        "state_topic": change,
        "event_types": list(EVENT_TYPES),
        "icon": "mdi:face-recognition",
    }


def _diagnostics(stats: str, expire: dict) -> dict[tuple[str, str], dict[str, Any]]:
    entities = {}
    for diag in DIAGNOSTICS:
        entity: dict[str, Any] = {
            "name": diag.name,
            "state_topic": stats,
            "value_template": f"{{{{ value_json.{diag.path} | default(none) }}}}",
            "entity_category": "diagnostic",
            "icon": diag.icon,
        }
        for key, value in (
            ("unit_of_measurement", diag.unit),
            ("device_class", diag.device_class),
            ("state_class", diag.state_class),
        ):
            if value is not None:
                entity[key] = value
        if not diag.enabled:
            entity["enabled_by_default"] = False
        entities[("sensor", diag.object_id)] = {**entity, **expire}
    return entities


def _device_triggers(change: str, labels) -> dict[str, dict[str, Any]]:
    """Device triggers for the automation editor ("When Emotion edge ...: "face" appeared"). An emotion trigger
    fires when a face appears with it or changes to it."""
    triggers = {
        f"face_{kind}": {"type": kind, "subtype": "face", "value_template": "{{ value_json.event_type }}",
                         "payload": kind}
        for kind in ("appeared", "left")
    }  # fmt: skip
    for label in labels:
        triggers[f"emotion_{label_id(label)}"] = {
            "type": "emotion",
            "subtype": label,
            "value_template": "{{ value_json.emotion if value_json.event_type != 'left' else '' }}",
            "payload": label,
        }
    return {
        trigger_id: {"automation_type": "trigger", "topic": change, **trigger}
        for trigger_id, trigger in triggers.items()
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
            "Home Assistant discovery: %d configs sent under %s/", len(encoded), config.mqtt.discovery.prefix
        )

    def on_ha_status(topic: str, payload: bytes) -> None:
        if payload.decode("utf-8", "replace").strip() == HA_ONLINE:
            publish_all(publisher)

    publisher.add_connect_hook(publish_all)
    publisher.subscribe(ha_status_topic(config), on_ha_status)
    return messages
