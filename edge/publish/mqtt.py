"""MQTT publisher (paho-mqtt 2.x): events, retained state and availability, resilient to broker outages.

Topics under `<topic_prefix>/<device_id>/`: `events` (not retained), `change` (one message per appeared /
changed / left change of an event, not retained: what Home Assistant's event entity and device triggers read),
`state` (retained), `status` (retained `online`/`offline`, with `offline` as the last will, so a crash or power
loss still shows as offline) and `stats` (not retained).

paho runs its network loop in its own thread (`connect_async` + `loop_start`) and reconnects by itself with
a 1..60 s backoff. The processing loop only ever enqueues: while connected it calls paho's non-blocking
`publish`; while disconnected events wait in a bounded deque (oldest dropped and counted) that is flushed
in order on reconnect. (paho re-sends its own unacknowledged messages only after on_connect has returned, so
events in flight at the drop arrive after the buffered ones; the README tells subscribers to order by
frame_index.) `change` messages are sent only while connected, never buffered: they trigger automations,
and a trigger replayed minutes late (after an outage) would do the wrong thing; the events keep the history.
Every (re)connect publishes `online`, the last retained state, runs the connect hooks (Home Assistant
discovery) and re-subscribes.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt

from edge.publish.base import Publisher, PublishError, device_topic_base, to_json

log = logging.getLogger(__name__)

ONLINE = "online"
OFFLINE = "offline"
_KEEPALIVE_TIMEOUT = 141  # paho's reason code when no CONNACK (or PINGRESP) came within the keepalive
TOPIC_KINDS = ("events", "change", "state", "status", "stats")


def change_messages(event: dict[str, Any]) -> list[dict[str, Any]]:
    """One `change` message per change of an event: its kind as `event_type` (the key Home Assistant's MQTT
    event entity reads; the other keys become the event's attributes), the face's emotion, the previous one
    (for `changed`), its confidence while it is in view, and when and on which frame it happened."""
    confidence = {face["track_id"]: face.get("confidence") for face in event.get("faces", [])}
    return [
        {
            "event_type": change["kind"],
            "track_id": change["track_id"],
            "emotion": change["emotion"],
            "previous": change.get("previous"),
            "confidence": confidence.get(change["track_id"]),
            "timestamp": event["timestamp"],
            "frame_index": event["frame_index"],
        }
        for change in event.get("changes", [])
    ]


def authenticated_client(cfg, client_id: str) -> mqtt.Client:
    """A paho client with the config's credentials and TLS settings; not connected yet."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
    if cfg.username is not None:
        client.username_pw_set(cfg.username, cfg.password)
    if cfg.tls.enabled:
        try:
            client.tls_set(
                ca_certs=cfg.tls.ca_certs,
                certfile=cfg.tls.certfile,
                keyfile=cfg.tls.keyfile,
                cert_reqs=ssl.CERT_REQUIRED,
            )
        except (OSError, ssl.SSLError, ValueError) as exc:
            raise PublishError(f"mqtt.tls: cannot load the TLS files: {exc}") from None
        client.tls_insecure_set(cfg.tls.insecure)
    return client


class MqttPublisher(Publisher):
    name = "mqtt"

    def __init__(self, mqtt_config, device_id: str):
        self.config = mqtt_config
        self.device_id = device_id
        base = device_topic_base(mqtt_config, device_id)
        self.topics = {kind: f"{base}/{kind}" for kind in TOPIC_KINDS}
        self.client_id = mqtt_config.client_id or f"emotion-edge-{device_id}"
        self.address = f"{mqtt_config.host}:{mqtt_config.port}"
        # One lock orders everything that decides "publish now or buffer": the processing thread's
        # publish_event and paho's on_connect flush, so events leave in the order they were made.
        self._lock = threading.RLock()
        self._connected = False
        self._ever_connected = False
        # The kinds of failure this outage has been reported as (empty while connected). Each is logged once,
        # not once per 1..60 s retry, and a new kind (the broker came back with a bad certificate) is logged
        # too. A set, not the last kind: some failures alternate between two kinds from one retry to the next
        # (a broker's TLS alert read before or after its hang-up), which must not log every retry for days.
        self._reported: set[str] = set()
        self._refused = False  # the broker answered the last attempt with a refusal (already reported)
        self._paho_error: str | None = None  # paho's last socket error (it only reports it to on_log)
        self._closing = False
        self._buffer: collections.deque[str] = collections.deque()
        self._last_state: str | None = None
        self._connect_hooks: list[Callable[[MqttPublisher], None]] = []
        self._subscriptions: dict[str, Callable[[str, bytes], None]] = {}
        self._reconnects = 0
        self._dropped = 0
        self._outage_drops = 0  # lost in this outage: the first is said at once, the total on reconnect
        self._left_at_close = 0  # events still buffered when close() gave up: never delivered
        self._network_thread: threading.Thread | None = None
        self.published_events = 0
        self._client = self._make_client()

    # --- set-up --------------------------------------------------------------------------------------------

    def _make_client(self) -> mqtt.Client:
        cfg = self.config
        client = authenticated_client(cfg, self.client_id)
        # Set before connecting: the broker publishes this if we vanish without a clean disconnect.
        client.will_set(self.topics["status"], OFFLINE, qos=1, retain=True)
        client.reconnect_delay_set(min_delay=1, max_delay=60)
        # paho's own queue (messages past the in-flight window on a slow or half-open link) is unbounded by
        # default; over months that is a memory leak. Bound it like our outage buffer (+ state/stats room).
        client.max_queued_messages_set(max(100, cfg.buffer_size + 100))
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_log = self._on_paho_log
        return client

    def start(self) -> None:
        try:
            self._client.connect_async(self.config.host, self.config.port, keepalive=self.config.keepalive)
        except (OSError, ValueError) as exc:
            raise PublishError(f"mqtt: cannot connect to {self.address}: {exc}") from None
        self._client.loop_start()
        self._network_thread = getattr(self._client, "_thread", None)  # paho forgets it when it ends
        log.info("MQTT publisher for %s connecting to %s as %s", self.device_id, self.address, self.client_id)

    # --- hooks for other modules (Home Assistant discovery) --------------------------------------------------

    def add_connect_hook(self, fn: Callable[[MqttPublisher], None]) -> None:
        """fn(publisher) runs on every (re)connect, after `online` is published. Runs now if connected."""
        with self._lock:
            self._connect_hooks.append(fn)
            connected = self._connected
        if connected:
            self._run_hook(fn)

    def subscribe(self, topic: str, callback: Callable[[str, bytes], None]) -> None:
        """callback(topic, payload) for messages on `topic`; re-subscribed on every connect."""
        with self._lock:
            self._subscriptions[topic] = callback
            connected = self._connected

        def on_message(client, userdata, message):
            try:
                callback(message.topic, bytes(message.payload))
            except Exception:  # a bad callback must not kill paho's network thread
                log.exception("MQTT subscription callback for %s failed", topic)

        self._client.message_callback_add(topic, on_message)
        if connected:
            self._client.subscribe(topic, qos=1)

    def publish_raw(
        self, topic: str, payload: str | bytes, retain: bool = False, qos: int | None = None
    ) -> bool:
        """Publish now if connected (True); while disconnected nothing is queued (False): connect hooks
        re-publish what must be there after a reconnect."""
        with self._lock:
            if not self._connected:
                return False
            info = self._client.publish(
                topic, payload, qos=self.config.qos if qos is None else qos, retain=retain
            )
        return info.rc in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN)

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def reconnects(self) -> int:
        return self._reconnects

    @property
    def dropped_events(self) -> int:
        return self._dropped

    @property
    def buffered_events(self) -> int:
        return len(self._buffer)

    def broken(self) -> str | None:
        # paho's network thread ends only on loop_stop(); anything else (an exception inside it) would leave
        # the daemon running with MQTT silent for good and `online` still retained.
        thread = self._network_thread
        if thread is not None and not thread.is_alive() and not self._closing:
            return f"MQTT: the network thread for {self.address} has stopped; nothing can be published"
        return None

    def delivery_failure(self) -> str | None:
        if not self._ever_connected:
            return f"never connected to the broker {self.address}"
        lost = self._dropped + self._left_at_close
        return f"{lost} events were not delivered to {self.address}" if lost else None

    # --- the processing loop's side: never blocks ---------------------------------------------------------------

    def publish_event(self, event: dict[str, Any]) -> None:
        payload = to_json(event)
        with self._lock:
            if self._connected and not self._buffer:
                self._send(self.topics["events"], payload)
                for change in change_messages(event):  # live only: see the module docstring
                    self._client.publish(self.topics["change"], to_json(change), qos=self.config.qos)
                return
            if self.config.buffer_size == 0:
                self._drop("mqtt.buffer_size is 0")
                return
            if len(self._buffer) >= self.config.buffer_size:
                self._buffer.popleft()  # the oldest is the least useful
                self._drop(f"the outage buffer is full ({self.config.buffer_size} events, mqtt.buffer_size)")
            self._buffer.append(payload)

    def _drop(self, why: str) -> None:
        """Count one lost event; the first of an outage is said at once, the total when the broker is back."""
        self._dropped += 1
        self._outage_drops += 1
        if self._outage_drops == 1:
            log.warning(
                "MQTT: %s; dropping the oldest events until %s is back (counted in stats events_dropped)",
                why, self.address,
            )  # fmt: skip

    def publish_state(self, state: dict[str, Any]) -> None:
        payload = to_json(state)
        with self._lock:
            self._last_state = payload  # re-published (retained) on every connect
            if self._connected:
                self._client.publish(self.topics["state"], payload, qos=self.config.qos, retain=True)

    def publish_stats(self, stats: dict[str, Any]) -> None:
        with self._lock:
            if self._connected:  # stale stats are worthless: never buffered
                self._client.publish(self.topics["stats"], to_json(stats), qos=0, retain=False)

    def _send(self, topic: str, payload: str) -> None:
        info = self._client.publish(topic, payload, qos=self.config.qos, retain=False)
        if info.rc == mqtt.MQTT_ERR_QUEUE_SIZE:  # paho's bounded queue is full (a long half-open link)
            self._drop("paho's send queue is full (the link is stalled)")
            return
        self.published_events += 1

    # --- paho's network thread ----------------------------------------------------------------------------------

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            # Refused (bad credentials, ...): paho retries; say it once per outage, not per retry.
            self._refused = True
            hint = ""
            if reason_code.value in (4, 5, 134, 135):  # bad user name or password / not authorized (3.1.1, 5)
                hint = " (check mqtt.username and mqtt.password)"
            self._report(
                f"refused:{reason_code}",
                "MQTT broker %s refused the connection: %s%s; retrying",
                self.address, reason_code, hint,
            )  # fmt: skip
            return
        with self._lock:
            if self._closing:
                return
            if self._ever_connected:
                self._reconnects += 1
                log.info("MQTT reconnected to %s (%d buffered events)", self.address, len(self._buffer))
            else:
                log.info("MQTT connected to %s", self.address)
            if self._outage_drops:
                log.warning(
                    "MQTT: %d events were dropped while %s was away (%d dropped since start)",
                    self._outage_drops, self.address, self._dropped,
                )  # fmt: skip
                self._outage_drops = 0
            self._ever_connected = True
            self._reported.clear()
            self._refused = False
            client.publish(self.topics["status"], ONLINE, qos=1, retain=True)
            if self._last_state is not None:
                client.publish(self.topics["state"], self._last_state, qos=self.config.qos, retain=True)
            while self._buffer:
                self._send(self.topics["events"], self._buffer.popleft())
            self._connected = True
            hooks = list(self._connect_hooks)
            topics = list(self._subscriptions)
        for topic in topics:
            client.subscribe(topic, qos=1)
        for hook in hooks:
            self._run_hook(hook)

    def _run_hook(self, hook) -> None:
        try:
            hook(self)
        except Exception:  # discovery trouble must not take events down with it
            log.exception("MQTT connect hook %r failed", hook)

    def _report(self, kind: str, message: str, *args) -> None:
        if kind not in self._reported:
            log.warning(message, *args)
            self._reported.add(kind)

    def _on_connect_fail(self, client, userdata):
        # paho calls this from inside its `except OSError` around the connect (and does not pass the
        # error on): sys.exc_info() is that error. A TLS failure is a configuration problem, not an
        # unreachable broker, and must say so.
        exc = sys.exc_info()[1]
        if isinstance(exc, ssl.SSLCertVerificationError):
            self._report(
                f"tls:{exc.verify_message}",
                "MQTT broker %s: TLS certificate verification failed (%s); check mqtt.tls.ca_certs "
                "(and the broker's host name against its certificate); retrying",
                self.address, exc.verify_message or exc,
            )  # fmt: skip
        elif isinstance(exc, ssl.SSLError):
            self._report(
                f"tls:{exc.reason}",
                "MQTT broker %s: TLS handshake failed (%s); check the mqtt.tls settings; retrying",
                self.address, exc,
            )  # fmt: skip
        else:
            detail = f" ({exc})" if exc is not None else ""
            self._report("down", "MQTT broker %s unreachable, retrying%s", self.address, detail)

    def _on_paho_log(self, client, userdata, level, buf):
        if level == mqtt.MQTT_LOG_ERR:
            self._paho_error = buf

    def _on_disconnect(self, client, userdata, disconnect_flags, reason_code, properties):
        # No self._lock here: paho may call this while holding its own message mutex (a write failing
        # right after CONNACK), and publish_event holds self._lock while waiting for that mutex; taking
        # ours here would deadlock both threads. Only this thread and _on_connect (same thread) write it.
        was_connected = self._connected
        self._connected = False
        error, self._paho_error = self._paho_error, None
        if self._closing:
            return
        if was_connected:
            log.warning(
                "MQTT connection to %s lost (%s); buffering events, retrying", self.address, reason_code
            )
            self._reported.add("down")
        elif self._refused:
            self._refused = False  # on_connect reported the refusal
        elif getattr(reason_code, "value", None) == _KEEPALIVE_TIMEOUT:
            # paho gave up waiting for CONNACK: something accepted TCP and never answered (not an MQTT
            # broker, a TLS port spoken to in plain text, a frozen broker). Not a certificate matter.
            self._report(
                "silent",
                "MQTT broker %s accepted the connection but did not answer within %d s (mqtt.keepalive); "
                "is that port an MQTT listener%s? retrying",
                self.address, self.config.keepalive,
                "" if self.config.tls.enabled else ", and a plain-text one (mqtt.tls.enabled is false)",
            )  # fmt: skip
        else:
            # The broker hung up before accepting us: with mutual TLS that is how a missing or untrusted
            # client certificate shows (TLS 1.3 checks it after the client's handshake has finished).
            # Keyed without the error text: whether paho reads the broker's alert or only the hang-up
            # after it is a race, so the text changes between retries of the same outage.
            hint = (
                "mqtt.tls.certfile/keyfile if it requires client certificates, or "
                if self.config.tls.enabled
                else ""
            )
            self._report(
                "dropped",
                "MQTT broker %s closed the connection before accepting it (%s); check %sthe broker's log; retrying",
                self.address, error or reason_code, hint,
            )  # fmt: skip

    # --- shutdown -----------------------------------------------------------------------------------------------

    def close(self, timeout: float = 1.0) -> None:
        """Publish `offline` (retained), wait up to `timeout` s for the broker to confirm it, disconnect.

        Unconfirmed (a slow link, paho's in-flight window still full), a clean DISCONNECT would make the
        broker discard the last will too and leave `online` retained for good; the connection is dropped
        instead, so the broker publishes the will, `offline`.
        """
        deadline = time.monotonic() + timeout
        # A short run (a folder of photos) can end before the first connect completes: give the broker
        # part of the budget to accept the connection, so on_connect flushes the buffer before `offline`.
        while self._buffer and not self._connected and time.monotonic() < deadline - 0.25:
            if any(kind.startswith("refused:") for kind in list(self._reported)):
                break  # the broker said no (credentials): waiting for paho's next try would not change that
            time.sleep(0.05)
        with self._lock:
            connected = self._connected
            self._closing = True
            info = None
            if connected:
                info = self._client.publish(self.topics["status"], OFFLINE, qos=1, retain=True)
        confirmed = False
        if info is not None:
            try:
                info.wait_for_publish(max(0.05, deadline - time.monotonic()))
            except (RuntimeError, ValueError) as exc:
                log.warning("MQTT: could not publish offline status: %s", exc)
            # is_published() raises when paho's queue refused the message (rc QUEUE_SIZE): not confirmed.
            confirmed = info.rc == mqtt.MQTT_ERR_SUCCESS and info.is_published()
            if not confirmed:
                log.warning(
                    "MQTT: offline status not confirmed by %s within %.1f s; dropping the connection so "
                    "the broker publishes the last will instead",
                    self.address, timeout,
                )  # fmt: skip
        self._left_at_close = len(self._buffer)
        if self._buffer:
            log.warning("MQTT: %d buffered events were not delivered (broker unreachable)", len(self._buffer))
        # paho's thread may be asleep in its reconnect backoff (1 s steps) or in a TCP connect to a dead host;
        # it is a daemon thread, so stop it in the background and bound our wait.
        stopper = threading.Thread(target=self._client.loop_stop, name="mqtt-stop", daemon=True)
        if connected and not confirmed:
            # loop_stop first: it sets paho's terminate flag, so the dropped link is not reconnected (paho
            # waits at least reconnect min_delay, 1 s, before trying, and checks the flag meanwhile).
            stopper.start()
            _drop_socket(self._client.socket())
        else:
            self._client.disconnect()
            stopper.start()
        stopper.join(max(0.1, deadline - time.monotonic()))


def _drop_socket(sock) -> None:
    """End the TCP connection without an MQTT DISCONNECT (the broker then publishes the last will)."""
    if sock is None:
        return
    with contextlib.suppress(OSError):  # already gone: the broker has seen the connection end anyway
        sock.shutdown(socket.SHUT_RDWR)
