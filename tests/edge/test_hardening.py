"""Hostile and mistaken input (issue 21): each case ends in one `error:` line or a counted skip, never a
traceback, a silently dead output or unbounded memory. The daemon runs as a subprocess on the shipped model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edge.config import ConfigError, load_config
from edge.model_contract import ContractError, load_contract

REPO = Path(__file__).resolve().parents[2]


def _cli(*args: str, env: dict | None = None, **kwargs) -> subprocess.CompletedProcess:
    from testbed.daemonproc import daemon_env

    if "stdout" not in kwargs:
        kwargs["capture_output"] = True
    return subprocess.run(
        [sys.executable, "-m", "edge.cli", *args],
        cwd=REPO,
        env=daemon_env(env),
        timeout=60,
        **kwargs,
    )


def assert_one_error(result: subprocess.CompletedProcess, text: str) -> None:
    stderr = result.stderr if isinstance(result.stderr, str) else result.stderr.decode(errors="replace")
    assert result.returncode == 2, stderr
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and text in errors[0], stderr


# --- item 1 and 3: names that paho or the broker would choke on later -----------------------------------


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"mqtt": {"host": "a" * 70 + ".lan"}}, "mqtt.host: is not a valid host name"),
        ({"mqtt": {"host": "b" * 250 + ".example.org"}}, "mqtt.host: is not a valid host name"),
        ({"device_id": "ab\n"}, "device_id: must be"),
        ({"mqtt": {"topic_prefix": "emo\x00tion"}}, "mqtt.topic_prefix: must not contain control characters"),
        ({"mqtt": {"discovery": {"prefix": "home\x00"}}}, "mqtt.discovery.prefix: must not contain control"),
        ({"mqtt": {"topic_prefix": "$SYS"}}, "mqtt.topic_prefix: must be a topic prefix"),
        ({"mqtt": {"topic_prefix": "a/b/"}}, "mqtt.topic_prefix: must be a topic prefix"),
        ({"mqtt": {"client_id": "pi\r\n"}}, "mqtt.client_id: must not contain control characters"),
    ],
)
def test_names_that_would_break_mqtt_later_are_refused_now(override, message):
    with pytest.raises(ConfigError, match=message.replace("$", r"\$").replace(".", r"\.")):
        load_config(environ={}, overrides=override)


def test_good_names_still_pass():
    config = load_config(
        environ={},
        overrides={"mqtt": {"host": "broker-1.home.lan", "topic_prefix": "home/emo$tion"}, "device_id": "ab"},
    )
    assert config.mqtt.host == "broker-1.home.lan" and config.mqtt.topic_prefix == "home/emo$tion"
    assert load_config(environ={}, overrides={"mqtt": {"host": "fd00::1"}}).mqtt.host == "fd00::1"
    assert load_config(environ={}, overrides={"mqtt": {"host": "bücher.lan"}}).mqtt.host == "bücher.lan"


def test_long_host_name_fails_check_config_instead_of_killing_the_mqtt_thread(tmp_path):
    from testbed.daemonproc import write_config

    config = write_config(tmp_path)
    result = _cli("--config", str(config), "--check-config", "--publish", "mqtt", "--mqtt-host",
                  "a" * 70 + ".lan", text=True)  # fmt: skip
    assert_one_error(result, "mqtt.host: is not a valid host name")


# --- item 6: inputs that used to end in a traceback --------------------------------------------------------


def test_deeply_nested_yaml_and_json_are_errors_not_recursion(tmp_path):
    deep = "[" * 100_000
    (tmp_path / "deep.yaml").write_text(deep)
    assert_one_error(
        _cli("--config", str(tmp_path / "deep.yaml"), "--print-config", text=True), "nested too deeply"
    )
    env_value = "[" * 60_000  # under the length cap: the YAML scalar parse itself must survive it
    with pytest.raises(ConfigError, match=r"mqtt\.port: must be an integer.*\.\.\. \(60002 characters\)"):
        load_config(environ={"EMOTION_EDGE_MQTT__PORT": env_value})
    (tmp_path / "m.json").write_text(deep)
    with pytest.raises(ContractError, match="nested too deeply"):
        load_contract(tmp_path / "m.tflite")


def test_endless_config_file_is_refused_after_a_bounded_read():
    assert_one_error(_cli("--config", "/dev/zero", "--print-config", text=True), "larger than 1024 KiB")


def test_non_utf8_password_from_the_environment_is_named_not_echoed(tmp_path):
    from testbed.daemonproc import write_config

    env = {"EMOTION_EDGE_MQTT__USERNAME": "pi", "EMOTION_EDGE_MQTT__PASSWORD": "s\udcffcret"}
    result = _cli("--config", str(write_config(tmp_path)), "--check-config", env=env, text=True)
    assert_one_error(result, "mqtt.password: is not valid UTF-8 text")
    assert "cret" not in result.stderr


def test_bench_json_to_a_folder_and_forget_with_infinite_timeout(tmp_path):
    from testbed.daemonproc import write_config

    config = str(write_config(tmp_path))
    photo = str(REPO / "edge" / "samples" / "astronaut_640x480.jpg")
    result = _cli("bench", "--config", config, "--source", photo, "--frames", "1", "--json", str(tmp_path),
                  text=True)  # fmt: skip
    assert_one_error(result, f"--json: {tmp_path} is a folder")
    for value in ("inf", "nan", "1e9"):
        result = _cli("forget", "--config", config, "--mqtt-host", "127.0.0.1", "--timeout", value, text=True)
        assert_one_error(result, "--timeout must be")


# --- item 10: messages ---------------------------------------------------------------------------------------


def test_duplicate_yaml_keys_are_refused_with_the_line(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("mqtt:\n  host: a\nstats:\n  interval_s: 0\nmqtt:\n  port: 1884\n")
    with pytest.raises(ConfigError, match=r"line 5, column 1: the key 'mqtt' appears twice"):
        load_config(path, environ={})
    path.write_text("mqtt:\n  host: a\n  host: b\n")
    with pytest.raises(ConfigError, match=r"line 3, column 3: the key 'host' appears twice"):
        load_config(path, environ={})


def _contract(tmp_path: Path, **changes) -> Path:
    data = json.loads((REPO / "edge" / "models" / "default.json").read_text())
    data.update(changes)
    (tmp_path / "m.json").write_text(json.dumps(data))
    return tmp_path / "m.tflite"


def test_contract_crop_margin_true_and_repeated_keys_are_refused(tmp_path):
    with pytest.raises(ContractError, match="'crop_margin' must be a number in 0..1, got True"):
        load_contract(_contract(tmp_path, crop_margin=True))
    (tmp_path / "m.json").write_text('{"format": "emotion-edge-model/1", "labels": ["a", "b"], "labels": []}')
    with pytest.raises(ContractError, match="the key 'labels' appears twice"):
        load_contract(tmp_path / "m.tflite")


def test_input_shape_error_prints_plain_integers(tmp_path):
    import shutil

    from edge.classify import EmotionClassifier
    from edge.interpreter import ModelLoadError

    shutil.copy(REPO / "edge" / "models" / "default.tflite", tmp_path / "m.tflite")
    _contract(tmp_path, input_height=64, input_width=64)
    with pytest.raises(ModelLoadError) as info:
        EmotionClassifier(tmp_path / "m.tflite")
    assert "input shape [1, 48, 48, 1] is not one face image [1, 64, 64, 1]" in str(info.value)


# --- item 4 and 6: stdout that goes away, is closed, or is full --------------------------------------------


def test_live_run_piped_into_head_ends_cleanly(tmp_path):
    import shlex

    from testbed.daemonproc import MjpegServer, daemon_args, daemon_env, live_frame, write_config

    model = REPO / "edge" / "models" / "default.tflite"
    with MjpegServer(live_frame(), fps=20) as camera:
        args = daemon_args(write_config(tmp_path), model, camera.url, "--policy", "every")
        command = f"set -o pipefail; {shlex.join(args)} | head -1"
        result = subprocess.run(["bash", "-c", command], capture_output=True, text=True, cwd=REPO,
                                env=daemon_env(), timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == 1 and json.loads(result.stdout)["faces"]
    assert "stdout was closed by its reader; stopping" in result.stderr
    assert "Traceback" not in result.stderr and "Exception ignored" not in result.stderr


@pytest.mark.parametrize("what", ["daemon", "print-config"])
def test_stdout_closed_or_full_is_one_error_line(tmp_path, what):
    from testbed.daemonproc import daemon_env, write_config

    args = ["--config", str(write_config(tmp_path))]
    if what == "daemon":
        args += ["--source", str(REPO / "edge" / "samples"), "--policy", "every"]
    else:
        args += ["--print-config"]
    with open("/dev/full", "w") as full:
        result = _cli(*args, text=False, stdout=full, stderr=subprocess.PIPE)
    assert_one_error(result, "write" + (" events" if what == "daemon" else "") + " to stdout: No space left")
    closed = subprocess.run(
        [sys.executable, "-m", "edge.cli", *args],
        cwd=REPO,
        stderr=subprocess.PIPE,
        text=True,
        timeout=60,
        env=daemon_env(),
        preexec_fn=lambda: os.close(1),
    )
    assert_one_error(closed, "stdout is closed")


# --- item 7 and 9: signals -------------------------------------------------------------------------------------


def test_sighup_is_a_clean_stop_that_publishes_offline(mosquitto, tmp_path):
    import signal

    from testbed.daemonproc import DaemonProcess, MjpegServer, daemon_args, live_frame, write_config
    from testbed.mosquitto import Subscriber

    config = write_config(tmp_path, f"mqtt:\n  host: {mosquitto.host}\n  port: {mosquitto.port}\n"
                                    "  discovery:\n    enabled: false\nstats:\n  interval_s: 0\n")  # fmt: skip
    model = REPO / "edge" / "models" / "default.tflite"
    with MjpegServer(live_frame(), fps=10) as camera, Subscriber(mosquitto, "emotion/test-pi/#") as sub:
        daemon = DaemonProcess(daemon_args(config, model, camera.url, "--publish", "mqtt"), tmp_path)
        try:
            sub.wait_topic("emotion/test-pi/status", b"online", timeout=60)
            daemon.proc.send_signal(signal.SIGHUP)
            assert daemon.proc.wait(timeout=10) == 0, daemon.stderr
            sub.wait_topic("emotion/test-pi/status", b"offline", timeout=5)
            assert "SIGHUP received, stopping" in daemon.stderr and "Traceback" not in daemon.stderr
        finally:
            daemon.stop()


def test_sigterm_during_the_first_open_of_a_silent_stream_is_answered_at_once(tmp_path):
    """The stream accepts the connection and says nothing: FFmpeg's open waits for its 5 s timeout, and a
    signal handler in the thread that waits cannot run until it returns. systemd allows 2 s for a stop."""
    import signal
    import socket
    import time

    from testbed.daemonproc import DaemonProcess, daemon_args, write_config

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        server.settimeout(60)
        url = f"http://127.0.0.1:{server.getsockname()[1]}/stream.mjpg"
        model = REPO / "edge" / "models" / "default.tflite"
        daemon = DaemonProcess(daemon_args(write_config(tmp_path), model, url), tmp_path)
        try:
            connection, _ = server.accept()  # the daemon is inside its first open now
            with connection:
                time.sleep(0.3)  # past the request: FFmpeg waits for the response
                signalled = time.monotonic()
                daemon.proc.send_signal(signal.SIGTERM)
                rc = daemon.proc.wait(timeout=20)
                took = time.monotonic() - signalled
            assert rc == 0 and "Traceback" not in daemon.stderr, daemon.stderr
            assert took < 2.0, f"SIGTERM took {took:.2f} s to end the run"
        finally:
            daemon.stop()


# --- item 8: the installer's umask -------------------------------------------------------------------------


def test_installer_creates_nothing_world_writable_under_umask_000(tmp_path):
    import shutil
    import stat

    if shutil.which("systemctl") is None:
        pytest.skip("systemctl is not installed (CI installs systemd)")
    root = tmp_path / "root"
    root.mkdir(mode=0o755)
    script = REPO / "systemd" / "install.sh"
    result = subprocess.run(["bash", "-c", f'umask 000 && bash "{script}" --root "{root}" --skip-venv --no-start'],
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    created = [p for p in root.rglob("*") if not p.is_symlink()]
    assert any(p.name == "config.yaml" for p in created)
    writable = [str(p.relative_to(root)) for p in created if p.stat().st_mode & stat.S_IWOTH]
    assert writable == []


# --- item 5 and 10: MQTT that delivered nothing, and a broker that never answers ----------------------------


def test_finite_run_whose_mqtt_delivered_nothing_exits_3(tmp_path, mosquitto):
    from testbed.daemonproc import daemon_args, run_daemon, write_config, write_photo_folder
    from testbed.mosquitto import MosquittoBroker, find_mosquitto

    model = REPO / "edge" / "models" / "default.tflite"
    photos = tmp_path / "photos"
    write_photo_folder(photos)
    (tmp_path / "closed").mkdir()
    closed = MosquittoBroker(
        find_mosquitto(), tmp_path / "closed", extra_config="allow_anonymous false"
    ).start()
    try:
        for broker, code in ((mosquitto, 0), (closed, 3)):
            config = write_config(tmp_path, f"mqtt:\n  host: {broker.host}\n  port: {broker.port}\n"
                                            "stats:\n  interval_s: 0\n")  # fmt: skip
            result = run_daemon(daemon_args(config, model, str(photos), "--publish", "mqtt"), timeout=60)
            assert result.returncode == code, result.stderr
            assert "Traceback" not in result.stderr
        assert "refused the connection" in result.stderr
        assert (
            f"mqtt: never connected to the broker {closed.host}:{closed.port}; exit code 3" in result.stderr
        )
    finally:
        closed.stop()


@pytest.mark.backoff  # waits out paho's keepalive (~5 s)
def test_a_silent_broker_is_not_blamed_on_client_certificates(caplog):
    """Something accepts TCP on the MQTT port and never answers: paho gives up after the keepalive."""
    import logging
    import socket

    from edge.config import MqttConfig
    from edge.publish.mqtt import MqttPublisher
    from testbed.mosquitto import wait_until

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(4)
        publisher = MqttPublisher(
            MqttConfig(host="127.0.0.1", port=server.getsockname()[1], keepalive=5), "t"
        )
        with caplog.at_level(logging.WARNING, logger="edge.publish.mqtt"):
            publisher.start()
            try:
                assert wait_until(lambda: "did not answer" in caplog.text, timeout=20), caplog.text
            finally:
                publisher.close(timeout=0.5)
    assert "accepted the connection but did not answer within 5 s (mqtt.keepalive)" in caplog.text
    assert "certfile" not in caplog.text
