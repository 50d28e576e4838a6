"""A real Mosquitto broker for tests: started on a free localhost port, stopped (and restartable) on demand.

The MQTT tests talk to the real thing, not a mock: reconnects, retained messages and last wills are
broker behaviour, so only a broker can show that the daemon gets them right. `find_mosquitto()` returns
None when the binary is missing; the conftest fixture then skips with a clear reason (CI installs it).
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt


def find_mosquitto() -> str | None:
    """The mosquitto binary on PATH or in /usr/sbin (Debian puts it there, outside a normal user's PATH)."""
    found = shutil.which("mosquitto")
    if found:
        return found
    for candidate in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def wait_until(predicate, timeout: float = 15.0) -> bool:
    """Poll predicate() until it is true (True) or `timeout` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


class MosquittoBroker:
    """One mosquitto process on 127.0.0.1:<port>; `stop()` and `start()` again reuse the same port."""

    def __init__(
        self, binary: str, workdir: Path, port: int | None = None, extra_config: str | list[str] = ""
    ):
        """`extra_config`: mosquitto.conf lines appended after the listener line, so listener settings
        (cafile, certfile, require_certificate) apply to it and global ones (password_file) to the broker."""
        self.binary = binary
        self.workdir = Path(workdir)
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self.config_path = self.workdir / "mosquitto.conf"
        self.log_path = self.workdir / "mosquitto.log"
        self._proc: subprocess.Popen | None = None
        extra = extra_config if isinstance(extra_config, str) else "\n".join(extra_config)
        # An auth test sets `allow_anonymous false` itself; anonymous access stays the default otherwise.
        anonymous = "" if "allow_anonymous" in extra else "allow_anonymous true\n"
        # A soak keeps its subscriber's session (queued QoS 1 messages) across broker restarts: it asks for it.
        persistence = "" if "persistence " in extra else "persistence false\n"
        # Started as root (CI containers), mosquitto drops to the `mosquitto` user before it reads key and
        # password files, which then cannot be read in the test's private tmp dir. Stay the test's own user
        # (no effect when not root).
        user = pwd.getpwuid(os.getuid()).pw_name
        self.config_path.write_text(
            f"user {user}\n"
            f"listener {self.port} 127.0.0.1\n"
            f"{extra.rstrip()}\n"
            f"{anonymous}"
            f"{persistence}"
            "log_dest stderr\n"
            "log_type error\nlog_type warning\nlog_type notice\n"
        )

    def log_count(self, text: str) -> int:
        """How many times the broker's log says `text` (one line per refused connection, for instance)."""
        return self.log_path.read_text(errors="replace").count(text) if self.log_path.exists() else 0

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 10.0) -> MosquittoBroker:
        if self.running:
            return self
        log = open(self.log_path, "ab")  # noqa: SIM115 - kept open for the broker's lifetime
        self._proc = subprocess.Popen(
            [self.binary, "-c", str(self.config_path)], stdout=log, stderr=subprocess.STDOUT
        )
        log.close()  # the child holds its own copy of the descriptor
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited at start: {self.log_path.read_text(errors='replace')}")
            if _port_open(self.port):
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"mosquitto did not listen on port {self.port} within {timeout} s")

    def stop(self) -> None:
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=5)
        self._proc = None
        # After a restart the daemon must reconnect to the same port: wait until the old socket is gone.
        deadline = time.monotonic() + 5
        while _port_open(self.port) and time.monotonic() < deadline:
            time.sleep(0.05)


class Subscriber:
    """A real paho client that records every message it receives, for assertions.

    `messages` is a list of (topic, payload bytes, retain flag) in arrival order. `username`/`password`
    and `tls` (keyword arguments of paho's `tls_set`) are for brokers that demand them.
    """

    def __init__(
        self,
        broker: MosquittoBroker,
        topics: str | list[str] = "#",
        client_id: str | None = None,
        username: str | None = None,
        password: str | None = None,
        tls: dict | None = None,
    ):
        self.broker = broker
        self.topics = [topics] if isinstance(topics, str) else list(topics)
        self.messages: list[tuple[str, bytes, bool]] = []
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._subscribed = threading.Event()
        self._acked: set[int] = set()  # SUBACKed message ids
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=client_id or f"test-sub-{time.monotonic_ns()}"
        )
        if username is not None:
            self.client.username_pw_set(username, password)
        if tls is not None:
            self.client.tls_set(**tls)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        client.subscribe([(topic, 1) for topic in self.topics])

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties):
        with self._changed:
            self._acked.add(mid)
            self._changed.notify_all()
        self._subscribed.set()

    def _on_message(self, client, userdata, message):
        with self._changed:
            self.messages.append((message.topic, bytes(message.payload), bool(message.retain)))
            self._changed.notify_all()

    def __enter__(self) -> Subscriber:
        self.client.connect(self.broker.host, self.broker.port, keepalive=30)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            raise RuntimeError("test subscriber could not subscribe")
        return self

    def __exit__(self, *exc) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def wait_for(self, predicate, timeout: float = 15.0):
        """Wait until predicate(message) is true for some message; return that (topic, payload, retain)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            seen = 0
            while True:
                for message in self.messages[seen:]:
                    if predicate(message):
                        return message
                seen = len(self.messages)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    topics = [m[0] for m in self.messages[-20:]]
                    raise TimeoutError(f"no matching MQTT message within {timeout} s; last topics: {topics}")
                self._changed.wait(remaining)

    def wait_topic(self, topic: str, payload: bytes | None = None, timeout: float = 15.0, retain=None):
        def match(message):
            return (
                message[0] == topic
                and (payload is None or message[1] == payload)
                and (retain is None or message[2] == retain)
            )

        return self.wait_for(match, timeout)

    def barrier(self, timeout: float = 15.0) -> None:
        """Return once every message the broker queued for this subscriber so far has arrived, so a test can
        assert that something did not come without sleeping: a message on a private topic, subscribed and
        published now, makes the round trip behind them (the broker keeps one connection's messages in
        order). It is not kept in `messages`."""
        topic = f"tests/barrier/{time.monotonic_ns()}"
        _, mid = self.client.subscribe(topic, 1)
        with self._changed:
            if not self._changed.wait_for(lambda: mid in self._acked, timeout):
                raise TimeoutError(f"no SUBACK for {topic} within {timeout} s")
        self.client.publish(topic, b"barrier", qos=1)
        self.wait_topic(topic, timeout=timeout)
        with self._lock:
            self.messages = [m for m in self.messages if m[0] != topic]
        self.client.unsubscribe(topic)

    def count(self, topic: str) -> int:
        with self._lock:
            return sum(1 for m in self.messages if m[0] == topic)

    def json_payloads(self, topic: str) -> list[dict]:
        with self._lock:
            return [json.loads(m[1]) for m in self.messages if m[0] == topic]

    def retained(self) -> dict[str, bytes]:
        """Everything the broker holds retained under this subscriber's topics, read to the end: a marker
        published after subscribing arrives after the retained messages (QoS 1 on one connection keeps order)."""
        marker = f"test-marker/{time.monotonic_ns()}"
        self._subscribed.clear()
        self.client.subscribe(marker, qos=1)
        if not self._subscribed.wait(10):
            raise RuntimeError("test subscriber could not subscribe to its marker topic")
        self.client.publish(marker, b"end", qos=1)
        self.wait_topic(marker, b"end", timeout=10)
        with self._lock:
            return {topic: payload for topic, payload, retain in self.messages if retain and payload}


def publish_retained(broker: MosquittoBroker, messages: dict[str, bytes], **auth) -> None:
    """Leave `messages` retained on the broker, as an earlier run of some client would have."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"test-pub-{time.monotonic_ns()}")
    if auth:
        client.username_pw_set(auth["username"], auth["password"])
    client.connect(broker.host, broker.port, keepalive=30)
    client.loop_start()
    try:
        for info in [
            client.publish(topic, payload, qos=1, retain=True) for topic, payload in messages.items()
        ]:
            info.wait_for_publish(10)
    finally:
        client.disconnect()
        client.loop_stop()
