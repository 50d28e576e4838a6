"""MQTT user name + password against a real Mosquitto that refuses anonymous clients.

The broker gets `allow_anonymous false` and a password file made by `mosquitto_passwd`; the publisher is
checked on its own (exact payload delivered, a wrong password reported once) and the daemon end to end with
the password from systemd's credential directory and from the environment, never printed.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess

import pytest

from edge.config import MqttConfig
from edge.publish.base import to_json
from edge.publish.mqtt import MqttPublisher
from testbed.daemonproc import (
    DaemonProcess,
    MjpegServer,
    daemon_args,
    live_frame,
    run_daemon,
    write_config,
    write_photo_folder,
)
from testbed.mosquitto import MosquittoBroker, Subscriber, find_mosquitto, wait_until

DEVICE = "test-pi"
BASE = f"emotion/{DEVICE}"
USER = "edge-user"
SECRET = "s3cret-Pa55:word"  # a ':' too: the password file format must not trip over it


def _find_mosquitto_passwd() -> str | None:
    found = shutil.which("mosquitto_passwd")
    if found:
        return found
    for candidate in ("/usr/bin/mosquitto_passwd", "/usr/sbin/mosquitto_passwd"):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


@pytest.fixture
def auth_broker(tmp_path):
    binary, passwd = find_mosquitto(), _find_mosquitto_passwd()
    if binary is None:
        pytest.skip("mosquitto is not installed (apt install mosquitto; .ci/run installs it)")
    if passwd is None:
        pytest.skip("mosquitto_passwd is not installed (it ships with the mosquitto package)")
    workdir = tmp_path / "broker"
    workdir.mkdir()
    password_file = workdir / "passwords"
    subprocess.run([passwd, "-b", "-c", str(password_file), USER, SECRET], check=True, capture_output=True)
    broker = MosquittoBroker(
        binary, workdir, extra_config=["allow_anonymous false", f"password_file {password_file}"]
    ).start()
    try:
        yield broker
    finally:
        broker.stop()


def _subscriber(broker, topics=f"{BASE}/#") -> Subscriber:
    return Subscriber(broker, topics, username=USER, password=SECRET)


def _count_in_log(records, text: str) -> int:
    return sum(1 for r in records if text in r.getMessage())


# --- the publisher on its own ------------------------------------------------------------------------------


def test_right_credentials_deliver_the_exact_event_payload(auth_broker):
    event = {"frame_index": 7, "emotion": "happy", "confidence": 0.875, "note": "ünïcode"}
    publisher = MqttPublisher(
        MqttConfig(host=auth_broker.host, port=auth_broker.port, username=USER, password=SECRET), DEVICE
    )
    with _subscriber(auth_broker) as sub:
        publisher.start()
        try:
            sub.wait_topic(f"{BASE}/status", b"online", timeout=10)
            publisher.publish_event(event)
            _, payload, retained = sub.wait_topic(f"{BASE}/events", timeout=10)
            assert payload == to_json(event).encode("utf-8") and not retained
            assert json.loads(payload) == event
        finally:
            publisher.close(timeout=2)


@pytest.mark.backoff
def test_wrong_password_is_reported_once_and_retried(auth_broker, caplog):
    caplog.set_level(logging.INFO, logger="edge.publish.mqtt")
    publisher = MqttPublisher(
        MqttConfig(host=auth_broker.host, port=auth_broker.port, username=USER, password="wrong"), DEVICE
    )
    publisher.start()
    try:
        publisher.publish_event({"frame_index": 0})  # buffered, never raises
        # It really kept trying: a third attempt (paho retries after 1 s, then 2 s) comes only once the
        # publisher has handled the second refusal, so its log below is complete for two of them.
        assert wait_until(lambda: auth_broker.log_count("not authorised") >= 3, timeout=30), (
            auth_broker.log_path.read_text()
        )
        assert not publisher.connected and publisher.buffered_events == 1
        refused = [r.getMessage() for r in caplog.records if "refused the connection" in r.getMessage()]
        assert len(refused) == 1, [r.getMessage() for r in caplog.records]
        assert _count_in_log(caplog.records, "before accepting it") == 0  # the hang-up after a refusal
        assert f"{auth_broker.host}:{auth_broker.port}" in refused[0]
        assert "mqtt.username and mqtt.password" in refused[0] and "wrong" not in refused[0]
        assert not any(r.exc_info for r in caplog.records)
    finally:
        publisher.close(timeout=1)


# --- the daemon end to end -----------------------------------------------------------------------------------


def _auth_config(tmp_path, broker, password_line: str = ""):
    return write_config(
        tmp_path,
        f"mqtt:\n  host: {broker.host}\n  port: {broker.port}\n  username: {USER}\n{password_line}"
        "  discovery:\n    enabled: false\nstats:\n  interval_s: 0\n",
    )


def _password_env(tmp_path, where: str, password: str) -> dict[str, str]:
    if where == "env":
        return {"EMOTION_EDGE_MQTT__PASSWORD": password}
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    # systemd's LoadCredential= copies the file verbatim; an editor adds the trailing newline.
    (credentials / "mqtt_password").write_text(password + "\n")
    return {"CREDENTIALS_DIRECTORY": str(credentials)}


@pytest.mark.parametrize("where", ["credentials_directory", "env"])
def test_daemon_password_from_credential_or_env_delivers_and_is_never_printed(
    auth_broker, tiny_model_path, tmp_path, where
):
    expected = write_photo_folder(tmp_path / "photos")
    env = _password_env(tmp_path, where, SECRET)
    args = daemon_args(_auth_config(tmp_path, auth_broker), tiny_model_path, str(tmp_path / "photos"),
                       "--publish", "mqtt", "--policy", "change")  # fmt: skip

    shown = run_daemon([*args, "--print-config"], env=env)
    assert shown.returncode == 0, shown.stderr
    assert SECRET not in shown.stdout + shown.stderr
    assert "password: '********'" in shown.stdout and f"username: {USER}" in shown.stdout

    with _subscriber(auth_broker) as sub:
        result = run_daemon(args, env=env)
        assert result.returncode == 0, result.stderr
        sub.wait_topic(f"{BASE}/status", b"offline", timeout=10)
        files = [e["file"] for e in sub.json_payloads(f"{BASE}/events")]
        assert files == sorted(f for f, n in expected.items() if n)
    assert "refused" not in result.stderr and SECRET not in result.stderr + result.stdout


@pytest.mark.backoff
def test_daemon_with_a_wrong_password_keeps_running_and_says_so_once(auth_broker, tiny_model_path, tmp_path):
    env = _password_env(tmp_path, "env", "not-the-password")
    with MjpegServer(live_frame(), fps=8) as camera:
        args = daemon_args(_auth_config(tmp_path, auth_broker), tiny_model_path, camera.url,
                           "--publish", "mqtt", "--policy", "every")  # fmt: skip
        daemon = DaemonProcess(args, tmp_path, env=env)
        try:
            daemon.wait_stderr("refused the connection", timeout=60)
            # Two more paho retries (1 s, 2 s backoff), as the broker saw them.
            assert wait_until(lambda: auth_broker.log_count("not authorised") >= 3, timeout=30)
            assert daemon.proc.poll() is None
            log = daemon.stderr
            assert log.count("refused the connection") == 1, log[-3000:]
            assert "check mqtt.username and mqtt.password" in log
            assert "Traceback" not in log and "not-the-password" not in log
            daemon.proc.send_signal(signal.SIGTERM)
            assert daemon.proc.wait(timeout=10) == 0
        finally:
            daemon.stop()


def test_a_mistyped_password_is_not_echoed_in_the_error(tmp_path):
    """`password: 123456` parses as a number: the error must name the key but never show the value."""
    from edge.config import ConfigError, load_config

    path = write_config(tmp_path, f"mqtt:\n  username: {USER}\n  password: 90210731\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    message = str(info.value)
    assert message.startswith("mqtt.password: must be a non-empty string") and str(path) in message
    assert "90210731" not in message and "a int (value hidden)" in message


def test_forget_uses_the_configs_credentials_and_names_a_refusal(auth_broker, tmp_path, capsys):
    from edge.cli import main
    from testbed.mosquitto import publish_retained

    publish_retained(auth_broker, {f"{BASE}/state": b"{}"}, username=USER, password=SECRET)
    broker = f"device_id: {DEVICE}\npublish:\n  outputs: [mqtt]\nmqtt:\n  host: {auth_broker.host}\n"
    broker += f"  port: {auth_broker.port}\n  username: {USER}\n"
    wrong = write_config(tmp_path, broker + "  password: not-the-password\n", name="wrong.yaml")
    assert main(["forget", "--config", str(wrong), "--timeout", "5"]) == 2
    err = capsys.readouterr().err
    assert "refused the connection" in err and "check mqtt.username and mqtt.password" in err
    assert "not-the-password" not in err

    right = write_config(tmp_path, broker + f"  password: '{SECRET}'\n", name="right.yaml")
    assert main(["forget", "--config", str(right)]) == 0
    assert capsys.readouterr().out.split() == [f"{BASE}/state"]
    with _subscriber(auth_broker) as sub:
        assert sub.retained() == {}
