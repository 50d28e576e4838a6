"""The publisher interface: where events, the retained state and stats go (stdout, MQTT, ...).

The daemon's processing loop calls these from its own thread and must never wait on a network, so every
implementation only writes a line or enqueues: anything that can block belongs to the publisher's own thread.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from typing import Any


class PublishError(RuntimeError):
    """A publisher cannot be set up (bad TLS files, ...); the message says which setting is wrong."""


def device_topic_base(mqtt_config, device_id: str) -> str:
    """`<topic_prefix>/<device_id>`: every topic of one device (events, state, status, stats) is under it."""
    return f"{mqtt_config.topic_prefix}/{device_id}"


def to_json(payload: dict[str, Any]) -> str:
    """Compact JSON for the wire; allow_nan=False so a NaN score fails loudly instead of writing invalid JSON."""
    return json.dumps(payload, separators=(",", ":"), allow_nan=False)


class Publisher(ABC):
    name = "publisher"

    def start(self) -> None:  # noqa: B027 - optional hook, most publishers need no setup
        """Open connections or threads. Must not block on an unreachable remote end."""

    @abstractmethod
    def publish_event(self, event: dict[str, Any]) -> None:
        """One event (schema v1)."""

    def publish_state(self, state: dict[str, Any]) -> None:  # noqa: B027 - optional
        """The current state of the view (faces in view, dominant emotion); kept as the latest value."""

    def publish_stats(self, stats: dict[str, Any]) -> None:  # noqa: B027 - optional
        """Periodic health figures."""

    def close(self, timeout: float = 1.0) -> None:  # noqa: B027 - optional
        """Flush and release, waiting at most `timeout` seconds."""

    def delivery_failure(self) -> str | None:
        """After close(): why events of this run did not all reach their destination, or None."""
        return None

    def broken(self) -> str | None:
        """While running: why this output can never deliver again without a restart, or None."""
        return None

    @property
    def reconnects(self) -> int:
        return 0

    @property
    def dropped_events(self) -> int:
        return 0
