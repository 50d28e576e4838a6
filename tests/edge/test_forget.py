"""`emotion-edge forget` against a real Mosquitto: what a device left retained goes, nothing else does.

End to end, the real daemon leaves its discovery configs, state and status on the broker and `forget` (a
subprocess, as a user or the uninstaller runs it) clears exactly those. The rest checks the edges: stale
configs from an older version, other devices, a former device_id, a device still online, a broker that is
not there.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from edge.cli import main
from edge.config import load_config
from edge.publish.homeassistant import discovery_messages
from testbed.daemonproc import daemon_env, write_config, write_photo_folder
from testbed.mosquitto import Subscriber, free_port, publish_retained
from tests.support.fakefaces import FER_LABELS

STATE = b'{"device_id":"kitchen-pi","face_count":0}'


def forget_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "edge.cli", "forget", *args],
        env=daemon_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )


def retained(broker) -> dict[str, bytes]:
    with Subscriber(broker, "#") as sub:
        return sub.retained()


def mqtt_config(tmp_path, broker, device_id: str = "kitchen-pi", extra: str = ""):
    return write_config(
        tmp_path,
        f"device_id: {device_id}\npublish:\n  outputs: [mqtt]\n"
        f"mqtt:\n  host: {broker.host}\n  port: {broker.port}\n{extra}",
    )


def test_forget_clears_everything_the_daemon_left_retained(mosquitto, tiny_model_path, tmp_path):
    photos = tmp_path / "photos"
    write_photo_folder(photos)
    config = mqtt_config(tmp_path, mosquitto, "e2e-pi", "stats:\n  interval_s: 0\n")
    daemon = subprocess.run(
        [sys.executable, "-m", "edge.cli", "--config", str(config), "--source", str(photos)]
        + ["--model", str(tiny_model_path)],
        env=daemon_env(),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert daemon.returncode == 0, daemon.stderr[-3000:]
    left = retained(mosquitto)
    # What the daemon announced (stats off: no diagnostics) with the model's labels, plus state and status.
    announced = discovery_messages(load_config(config, environ={}), FER_LABELS)
    expected = {"emotion/e2e-pi/status", "emotion/e2e-pi/state", *(topic for topic, _ in announced)}
    assert any("/device_automation/" in topic for topic in expected)
    assert set(left) == expected and left["emotion/e2e-pi/status"] == b"offline"

    result = forget_cli("--config", str(config))
    assert result.returncode == 0, result.stderr
    assert set(result.stdout.split()) == expected
    assert f"cleared {len(expected)} retained messages of device e2e-pi" in result.stderr
    assert retained(mosquitto) == {}


def test_stale_configs_go_and_other_devices_stay(mosquitto, tmp_path):
    ours = {
        "emotion/kitchen-pi/state": STATE,
        "emotion/kitchen-pi/status": b"offline",
        "homeassistant/sensor/kitchen-pi/emotion/config": b"{}",
        "homeassistant/sensor/kitchen-pi/sensor_from_an_old_version/config": b"{}",
        "homeassistant/binary_sensor/kitchen-pi/present/config": b"{}",
    }
    others = {
        "emotion/kitchen-pi-2/state": STATE,  # same beginning, another device
        "emotion/other-pi/status": b"online",
        "homeassistant/sensor/other-pi/emotion/config": b"{}",
        "homeassistant/light/kitchen/config": b"{}",  # not ours at all
        "zigbee/kitchen-pi/state": b"on",  # another prefix
    }
    publish_retained(mosquitto, {**ours, **others})
    assert main(["forget", "--config", str(mqtt_config(tmp_path, mosquitto))]) == 0
    assert retained(mosquitto) == others


def test_a_former_device_id_is_forgotten_by_name(mosquitto, tmp_path, capsys):
    publish_retained(
        mosquitto,
        {"emotion/old-name/state": STATE, "homeassistant/sensor/old-name/emotion/config": b"{}"},
    )
    config = mqtt_config(tmp_path, mosquitto, "new-name")
    assert main(["forget", "--config", str(config), "--device-id", "old-name"]) == 0
    assert capsys.readouterr().out.split() == [
        "homeassistant/sensor/old-name/emotion/config",
        "emotion/old-name/state",
    ]
    assert retained(mosquitto) == {}


def test_a_device_still_online_is_left_alone_unless_forced(mosquitto, tmp_path, capsys):
    left = {"emotion/kitchen-pi/status": b"online", "emotion/kitchen-pi/state": STATE}
    publish_retained(mosquitto, left)
    config = str(mqtt_config(tmp_path, mosquitto))
    assert main(["forget", "--config", config]) == 2
    err = capsys.readouterr().err
    assert (
        "device 'kitchen-pi' is online" in err and "systemctl stop emotion-edge" in err and "--force" in err
    )
    assert retained(mosquitto) == left
    assert main(["forget", "--config", config, "--force"]) == 0
    assert retained(mosquitto) == {}


def test_an_unreachable_broker_is_a_clear_error(tmp_path):
    port = free_port()  # nothing listens there
    config = write_config(
        tmp_path, f"publish:\n  outputs: [mqtt]\nmqtt:\n  host: 127.0.0.1\n  port: {port}\n"
    )
    result = forget_cli("--config", str(config), "--timeout", "3")
    assert result.returncode == 2
    assert f"error: cannot connect to the MQTT broker at 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--timeout", "0"], "--timeout must be more than 0 seconds"),
        (["--device-id", "Bad/Id"], "device_id"),
    ],
)
def test_bad_arguments_are_named(tmp_path, args, message):
    config = write_config(tmp_path, "publish:\n  outputs: [mqtt]\n")
    result = forget_cli("--config", str(config), *args)
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr


def test_a_config_without_mqtt_has_nothing_to_clear(tmp_path):
    config = write_config(tmp_path, "publish:\n  outputs: [stdout]\n")
    result = forget_cli("--config", str(config))
    assert result.returncode == 0 and "nothing to clear" in result.stderr and "--mqtt-host" in result.stderr
    # Naming a broker means "clear it anyway": here there is none, so that is an error again.
    port = str(free_port())
    result = forget_cli(
        "--config", str(config), "--mqtt-host", "127.0.0.1", "--mqtt-port", port, "--timeout", "3"
    )
    assert result.returncode == 2 and "cannot connect" in result.stderr


def test_forget_is_in_the_help():
    result = forget_cli("--help")
    assert result.returncode == 0 and "Home Assistant" in result.stdout and "--device-id" in result.stdout
