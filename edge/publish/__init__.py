"""Publishers chosen by `publish.outputs`: `stdout` (JSON Lines) and `mqtt`."""

from __future__ import annotations

from edge.publish.base import Publisher, PublishError


def make_publishers(config) -> list[Publisher]:
    """One publisher per configured output, in the configured order. MQTT is imported only when used."""
    publishers: list[Publisher] = []
    for name in config.publish.outputs:
        if name == "stdout":
            from edge.publish.stdout import StdoutPublisher

            publishers.append(StdoutPublisher())
        elif name == "mqtt":
            from edge.publish.mqtt import MqttPublisher

            publishers.append(MqttPublisher(config.mqtt, config.device_id))
        else:  # the config validator only lets known names through
            raise PublishError(f"publish.outputs: unknown output {name!r}")
    return publishers


__all__ = ["PublishError", "Publisher", "make_publishers"]
