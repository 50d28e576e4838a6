"""edge.config: precedence, validation messages that name the key, secrets, and the CLI's config commands."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from edge.config import MASK, ConfigError, load_config
from edge.model_contract import ContractError, load_contract

REPO = Path(__file__).resolve().parents[2]


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_defaults_without_any_file_or_env():
    config = load_config(environ={})  # the default /etc path is missing here: that is fine
    assert config.mqtt.port == 1883 and config.mqtt.topic_prefix == "emotion"
    assert config.publish.outputs == ["stdout"] and config.publish.policy == "change"
    assert config.detector.type == "auto" and config.model.path is None
    assert config.device_id and set(config.device_id) <= set("abcdefghijklmnopqrstuvwxyz0123456789_-")


def test_precedence_file_then_env_then_flags(tmp_path):
    path = _write(tmp_path, "mqtt:\n  host: broker.lan\n  port: 1000\n  qos: 0\npublish:\n  policy: every\n")
    env = {"EMOTION_EDGE_MQTT__PORT": "2000", "EMOTION_EDGE_MQTT__QOS": "2"}
    config = load_config(path, environ=env, overrides={"mqtt": {"port": 3000}})
    assert config.mqtt.host == "broker.lan"  # file only
    assert config.mqtt.qos == 2  # env beats file
    assert config.mqtt.port == 3000  # flag beats env
    assert config.publish.policy == "every"
    assert config.mqtt.tls.enabled is False  # untouched nested defaults survive a partial section


def test_env_nested_list_bool_and_verbatim_strings():
    env = {
        "EMOTION_EDGE_MQTT__TLS__ENABLED": "true",
        "EMOTION_EDGE_PUBLISH__OUTPUTS": "stdout,mqtt",
        "EMOTION_EDGE_MQTT__USERNAME": "pi",
        "EMOTION_EDGE_MQTT__PASSWORD": "0123",  # must stay a string, not become the number 123
        "EMOTION_EDGE_DEVICE_ID": "kitchen-pi",
        "EMOTION_EDGE_LOG__LEVEL": "debug",
    }
    config = load_config(environ=env)
    assert config.mqtt.tls.enabled is True
    assert config.publish.outputs == ["stdout", "mqtt"]
    assert config.mqtt.password == "0123"
    assert config.device_id == "kitchen-pi" and config.log.level == "DEBUG"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("mqtt:\n  prot: 1883\n", "mqtt.prot: unknown key"),
        ("colour: red\n", "colour: unknown key"),
        ("mqtt:\n  port: abc\n", "mqtt.port: must be an integer in 1..65535, got 'abc'"),
        ("mqtt:\n  port: 70000\n", "mqtt.port: must be an integer in 1..65535, got 70000"),
        ("mqtt:\n  port: true\n", "mqtt.port: must be an integer"),
        ("tracking:\n  smoothing: 1.5\n", "tracking.smoothing: must be a number in 0.0..0.99, got 1.5"),
        (
            "detector:\n  type: yolo\n",
            "detector.type: must be one of auto, yunet, blazeface_full, blazeface, haar, lbp, got 'yolo'",
        ),
        ("publish:\n  outputs: [stdout, kafka]\n", "publish.outputs: must be a list drawn from"),
        ("mqtt:\n  tls:\n    enabled: yes please\n", "mqtt.tls.enabled: must be true or false"),
        ("mqtt: 5\n", "mqtt: must be a mapping"),
        ("device_id: Kitchen Pi\n", "device_id: must be a non-empty string matching"),
        ("mqtt:\n  topic_prefix: a/#\n", "mqtt.topic_prefix:"),
        ("publish:\n  score_deadband: 5\n", "publish.score_deadband: must be a number in 0.0..1.0, got 5"),
        (
            "publish:\n  state_heartbeat_s: -1\n",
            "publish.state_heartbeat_s: must be a number in 0.0..86400.0",
        ),
        (
            "mqtt:\n  discovery:\n    configuration_url: pi.lan:8080\n",
            "mqtt.discovery.configuration_url: must be an http:// or https:// URL, got 'pi.lan:8080'",
        ),
    ],
)
def test_bad_values_are_named_with_their_file(tmp_path, text, message):
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert message in str(info.value)
    assert str(path) in str(info.value)


def test_bad_env_value_names_the_variable():
    with pytest.raises(ConfigError, match=r"mqtt\.port: .*'abc' \(from EMOTION_EDGE_MQTT__PORT\)"):
        load_config(environ={"EMOTION_EDGE_MQTT__PORT": "abc"})
    with pytest.raises(ConfigError, match=r"mqtt\.hots: unknown key \(from EMOTION_EDGE_MQTT__HOTS\)"):
        load_config(environ={"EMOTION_EDGE_MQTT__HOTS": "x"})


def test_missing_explicit_file_is_an_error_and_bad_yaml_says_where(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml", environ={})
    path = _write(tmp_path, "mqtt:\n  port: [1\n")
    with pytest.raises(ConfigError, match=r"not valid YAML at line \d+"):
        load_config(path, environ={})


def test_password_from_systemd_credential_unless_set(tmp_path):
    (tmp_path / "mqtt_password").write_text("s3cret\n")
    env = {"CREDENTIALS_DIRECTORY": str(tmp_path), "EMOTION_EDGE_MQTT__USERNAME": "pi"}
    assert load_config(environ=env).mqtt.password == "s3cret"
    env["EMOTION_EDGE_MQTT__PASSWORD"] = "from-env"
    assert load_config(environ=env).mqtt.password == "from-env"


def test_yaml_dump_masks_password_and_round_trips(tmp_path):
    config = load_config(
        environ={"EMOTION_EDGE_MQTT__USERNAME": "pi", "EMOTION_EDGE_MQTT__PASSWORD": "hunter2"}
    )
    text = config.to_yaml()
    assert "hunter2" not in text and yaml.safe_load(text)["mqtt"]["password"] == MASK
    # The printed config (with the secret removed) is itself a valid config file.
    data = yaml.safe_load(text)
    data["mqtt"]["password"] = None
    data["mqtt"]["username"] = None
    again = load_config(_write(tmp_path, yaml.safe_dump(data)), environ={})
    assert again.to_dict() == dict(
        config.to_dict(), mqtt=dict(config.to_dict()["mqtt"], password=None, username=None)
    )


def _cli(*args, env_extra=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMOTION_EDGE_")}
    env.update(env_extra or {})
    return subprocess.run(
        [sys.executable, "-m", "edge.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=120,
    )


def test_cli_print_config_masks_secret_and_applies_flags(tmp_path):
    path = _write(tmp_path, "mqtt:\n  username: pi\n  password: hunter2\n")
    result = _cli("--config", str(path), "--mqtt-port", "1999", "--publish", "stdout", "--publish", "mqtt",
                  "--print-config", env_extra={"EMOTION_EDGE_MQTT__HOST": "envhost"})  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "hunter2" not in result.stdout + result.stderr
    printed = yaml.safe_load(result.stdout)
    assert printed["mqtt"]["password"] == MASK
    assert printed["mqtt"]["port"] == 1999 and printed["mqtt"]["host"] == "envhost"
    assert printed["publish"]["outputs"] == ["stdout", "mqtt"]
    assert printed["source"]["realtime"] is False  # files as fast as possible unless asked
    realtime = _cli("--config", str(path), "--source", "demo", "--realtime", "--print-config")
    assert yaml.safe_load(realtime.stdout)["source"] == {**printed["source"], "uri": "demo", "realtime": True}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--mqtt-port", "abc"],
            "error: mqtt.port: must be an integer in 1..65535, got 'abc' (from the command line)",
        ),
        (["--policy", "sometimes"], "error: publish.policy: must be one of every, change"),
        (
            ["--config", "/nonexistent/emotion.yaml"],
            "error: config file /nonexistent/emotion.yaml does not exist",
        ),
    ],
)
def test_cli_bad_input_exits_2_without_traceback(args, message):
    result = _cli(*args, "--print-config")
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_files_not_in_utf8_are_named_not_a_traceback(tmp_path):
    """An editor set to Windows-1252 saves 'é' as one byte: config, credential and model contract alike."""
    latin1 = "# caméra du salon\nmqtt:\n  host: broker\n".encode("latin-1")
    (tmp_path / "config.yaml").write_bytes(latin1)
    result = _cli("--config", str(tmp_path / "config.yaml"), "--print-config")
    assert result.returncode == 2 and result.stdout == ""
    assert f"error: config file {tmp_path / 'config.yaml'} is not UTF-8 text (byte 5)" in result.stderr
    assert "save the file as UTF-8" in result.stderr and "Traceback" not in result.stderr

    (tmp_path / "mqtt_password").write_bytes("mot-de-passe-é".encode("latin-1"))
    env = {"CREDENTIALS_DIRECTORY": str(tmp_path), "EMOTION_EDGE_MQTT__USERNAME": "pi"}
    with pytest.raises(ConfigError, match=r"mqtt.password: credential .*mqtt_password is not UTF-8"):
        load_config(environ=env)

    (tmp_path / "model.json").write_bytes(b'{"labels": ["\xe9"]}')
    with pytest.raises(ContractError, match=r"model.json is not UTF-8 text \(byte 13\)"):
        load_contract(tmp_path / "model.tflite")
