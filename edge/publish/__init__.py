"""Publishers chosen by `publish.outputs`: `stdout` (JSON Lines) and `mqtt`."""

from __future__ import annotations

from edge.publish.base import Publisher, PublishError


def make_publishers(config, stop_event=None, labels=None, finite: bool = False) -> list[Publisher]:
    """One publisher per configured output, in the configured order. MQTT is imported only when used.
    `stop_event` is set when stdout, the only output, is closed by its reader (`| head -1`). With the
    classifier's `labels`, the MQTT publisher also sends Home Assistant discovery (mqtt.discovery.enabled)
    on every connect: its hooks are in place before it is started, so the very first connect has them.
    `finite` (a file or folder source): stdout waits for a slow reader instead of dropping events."""
    publishers: list[Publisher] = []
    for name in config.publish.outputs:
        if name == "stdout":
            from edge.publish.stdout import StdoutPublisher

            only = stop_event is not None and config.publish.outputs == ["stdout"]
            publishers.append(
                StdoutPublisher(
                    on_closed=stop_event.set if only else None, wait_for_reader=finite, stop_event=stop_event
                )
            )
        elif name == "mqtt":
            from edge.publish import homeassistant
            from edge.publish.mqtt import MqttPublisher

            mqtt = MqttPublisher(config.mqtt, config.device_id)
            if labels is not None:
                homeassistant.attach(mqtt, config, labels)
            publishers.append(mqtt)
        else:  # the config validator only lets known names through
            raise PublishError(f"publish.outputs: unknown output {name!r}")
    return publishers


__all__ = ["PublishError", "Publisher", "make_publishers"]
