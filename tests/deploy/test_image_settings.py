"""The SD-card image's settings step (systemd/image/emotion_edge_settings.py): emotion-edge.txt as editors
save it, every bad value named with its line, and what it writes where, in a temporary root (--root).

The root comes from systemd/install.sh --root --skip-venv (the config.yaml the image has), plus the image's
login user `pi`. `make boot-check` runs the same step at a real boot under systemd.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import importlib.util
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from edge.config import load_config

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "systemd" / "image" / "emotion_edge_settings.py"
TEMPLATE = REPO / "systemd" / "image" / "emotion-edge.txt"
INSTALL = REPO / "systemd" / "install.sh"

spec = importlib.util.spec_from_file_location("emotion_edge_settings", SCRIPT)
settings = importlib.util.module_from_spec(spec)
sys.modules["emotion_edge_settings"] = settings  # dataclasses look their module up there
spec.loader.exec_module(settings)

KEY = (
    "ssh-ed25519 "
    + base64.b64encode(b"\0\0\0\x0bssh-ed25519\0\0\0\x20" + bytes(range(32))).decode()
    + " me@laptop"
)
KEY2 = "ssh-ed25519 " + base64.b64encode(b"\0\0\0\x0bssh-ed25519\0\0\0\x20" + bytes(range(1, 33))).decode()


@pytest.fixture
def root(tmp_path):
    target = tmp_path / "root"
    target.mkdir()
    subprocess.run(
        ["bash", str(INSTALL), "--root", str(target), "--skip-venv"], check=True, capture_output=True
    )
    (target / "etc/passwd").write_text(
        "root:x:0:0:root:/root:/bin/bash\npi:x:1000:1000::/home/pi:/bin/bash\n"
    )
    (target / "etc/hostname").write_text("emotion-edge\n")
    (target / "etc/hosts").write_text("127.0.0.1\tlocalhost\n127.0.1.1\temotion-edge\n")
    (target / "boot/firmware").mkdir(parents=True)
    return target


def write_settings(root: Path, data: bytes | str) -> Path:
    path = root / "boot/firmware/emotion-edge.txt"
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return path


def apply(root: Path) -> subprocess.CompletedProcess:
    """The step's main() into the root, with the unit's umask 077: exit status, stdout, stderr. In-process
    (the step is quick; a process a test would be most of the time); one test below runs it as a process."""
    out, err = io.StringIO(), io.StringIO()
    umask = os.umask(0o077)
    journal = os.environ.pop("JOURNAL_STREAM", None)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = settings.main(["--root", str(root)])
    finally:
        os.umask(umask)
        if journal is not None:
            os.environ["JOURNAL_STREAM"] = journal
    return subprocess.CompletedProcess([], code, out.getvalue(), err.getvalue())


def test_as_a_process_it_exits_0_on_a_bad_value_with_a_warning_and_no_traceback(root):
    # A bad value is the user's to fix: the Pi comes up on the good ones (no failed unit, no degraded system).
    write_settings(root, "mqtt_port=abc\nmqtt_host=broker\nmqtt_username=u\n")
    env = {k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"}
    # -I as in the unit: edge comes from the venv's install, not from the current folder.
    result = subprocess.run([sys.executable, "-I", str(SCRIPT), "--root", str(root)], capture_output=True,
                            text=True, env=env, cwd=root)  # fmt: skip
    assert result.returncode == 0 and "Traceback" not in result.stderr
    assert (
        "warning: emotion-edge.txt line 1: mqtt_port: must be an integer in 1..65535, got 'abc'"
        in result.stderr
    )
    assert 'applied mqtt.host: "broker"' in result.stdout


def config_of(root: Path):
    return load_config(
        root / "etc/emotion-edge/config.yaml",
        environ={"CREDENTIALS_DIRECTORY": str(root / "etc/emotion-edge")},
    )


def notices(root: Path) -> list[str]:
    path = root / "run/emotion-edge-settings/notices"
    return path.read_text().splitlines() if path.exists() else []


def test_the_shipped_file_parses_clean_and_documents_every_setting():
    entries, problems = settings.parse(TEMPLATE.read_bytes())
    assert entries == {} and problems == []  # everything commented out: a fresh card changes nothing
    text = TEMPLATE.read_text()
    for key in settings.SETTINGS:
        assert f"\n#{key}=" in text, f"{key} is not offered in emotion-edge.txt"


def test_what_windows_and_mac_editors_save_is_read_as_meant():
    data = (
        "\ufeff# saved by Notepad\r\n"
        "Hostname = Kitchen-Pi  \r\n"
        "wifi-ssid: “My net”\r\n"  # TextEdit's smart quotes, a YAML habit, a dash for the underscore
        "\u00a0mqtt_host=broker.lan\u00a0\r\n"  # no-break spaces pasted from a web page
        "mqtt_password='  spaced  '\r"  # an old Mac line end; quotes keep the spaces
        "camera=rtsp://user:pw@cam:554/stream\n"  # the first = or : ends the name
        "; an ini-style comment\r\n"
    ).encode()
    entries, problems = settings.parse(data)
    assert problems == []
    values = {key: [e.value for e in found] for key, found in entries.items()}
    assert values == {
        "hostname": ["Kitchen-Pi"],
        "wifi_ssid": ["My net"],
        "mqtt_host": ["broker.lan"],
        "mqtt_password": ["  spaced  "],
        "camera": ["rtsp://user:pw@cam:554/stream"],
    }


def test_notepad_unicode_utf16_is_read_and_written_back_as_utf8():
    data = "hostname=attic\r\nmqtt_password=s3cret\r\n".encode("utf-16")
    entries, problems = settings.parse(data)
    assert problems == [] and entries["hostname"][0].value == "attic"
    stripped = settings.strip_secrets(data, {"mqtt_password"})
    assert stripped.startswith(b"\xef\xbb\xbfhostname=attic\r\n#mqtt_password=  (moved into place on ")
    assert b"s3cret" not in stripped


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("mqtt_port=abc", "line 2: mqtt_port: must be an integer in 1..65535, got 'abc'; not applied"),
        ("mqtt_port=70000", "line 2: mqtt_port: must be an integer in 1..65535, got 70000; not applied"),
        ("hostname=My Pi!", "line 2: hostname: must be 1-63 letters, digits or '-', not starting or ending with "
         "'-', got 'My Pi!' (e.g. 'my-pi'); not applied"),
        ("device_id=Kitchen Pi", "line 2: device_id: must be 1-64 of a-z, 0-9, _ and -, got 'Kitchen Pi' "
         "(e.g. 'kitchen-pi'); not applied"),
        ("wifi_country=Britain", "line 2: wifi_country: must be a two-letter country code (ISO 3166, e.g. GB, US, "
         "DE), got 'Britain'; not applied"),
        ("wifi_password=short", "line 2: wifi_password: a WPA passphrase has 8-63 plain ASCII characters (this one "
         "has 5 characters); empty means an open network; not applied"),
        ("wifi_ssid=" + "x" * 33, "line 2: wifi_ssid: must be a network name of 1-32 bytes"),
        ("mqtt_host=bad host", "line 2: mqtt_host: must be a non-empty string matching ^\\S+$, got 'bad host'"),
        ("ssh_authorized_key=AAAAC3Nza me@laptop", "line 2: ssh_authorized_key: must be one public key line"),
        ("ssh_authorized_key=" + KEY[:40], "line 2: ssh_authorized_key: the ssh-ed25519 key is damaged"),
        ("ssh_authorized_key=ssh-rsa AAAA!!!!", "line 2: ssh_authorized_key: the ssh-rsa key is not valid base64"),
        ("camera=picamera2", "line 2: camera: the camera module needs Raspberry Pi OS's libcamera and picamera2"),
        ("mqtt_hots=broker", "line 2: unknown setting 'mqtt_hots' (did you mean mqtt_host?); line ignored"),
        ("colour=blue", "line 2: unknown setting 'colour' (known: hostname, ssh_authorized_key, "),
        ("just some words", "line 2: 'just some words' is not a setting (name=value); line ignored"),
        ("mqtt_host=a\r\nmqtt_host=b", "lines 2 and 3: mqtt_host is given 2 times; none applied"),
        (b"hostname=caf\xe9", "line 2: is not UTF-8 text (save the file as UTF-8); line ignored"),
    ],
)  # fmt: skip
def test_each_bad_value_is_named_with_its_line_and_not_applied(root, line, message):
    raw = line if isinstance(line, bytes) else line.encode()
    write_settings(root, b"# first line\r\n" + raw + b"\r\nmqtt_username=kept\r\n")
    before = (root / "etc/emotion-edge/config.yaml").read_text()
    result = apply(root)
    assert result.returncode == 0
    assert "Traceback" not in result.stderr
    assert any(message in n for n in notices(root)), notices(root)
    notice = root / "run/emotion-edge-settings/notices"  # the daemon reads it as its own user
    assert (notice.stat().st_mode & 0o777, notice.parent.stat().st_mode & 0o777) == (0o644, 0o755)
    assert f"warning: emotion-edge.txt {message}" in result.stderr
    # The rest of the file still applies; the bad value left the config as it was.
    after = (root / "etc/emotion-edge/config.yaml").read_text()
    assert after == before.replace("  # username: null\n", '  username: "kept"\n')


def test_secrets_never_appear_in_a_message(root):
    write_settings(root, "wifi_password=ünïcode-pässword\nmqtt_password=line\x01break\nmqtt_username=u\n")
    result = apply(root)
    text = result.stdout + result.stderr + "\n".join(notices(root))
    assert result.returncode == 0
    assert "pässword" not in text and "line\x01break" not in text
    assert (
        "wifi_password: a WPA passphrase has 8-63 plain ASCII characters (this one has 16 characters, "
        "not all of them plain ASCII)" in text
    )
    assert (
        root / "etc/emotion-edge/mqtt_password"
    ).read_bytes() == b"line\x01break"  # any text is a password


def test_a_full_file_lands_where_the_system_reads_it(root):
    path = write_settings(
        root,
        "\ufeffhostname=attic\r\n"
        f"ssh_authorized_key={KEY}\r\n"
        "wifi_country=gb\r\nwifi_ssid=IEEE\r\nwifi_password=password\r\n"
        "mqtt_host=homeassistant.local\r\nmqtt_port=1884\r\nmqtt_username=emotion\r\nmqtt_password=s3cret pw\r\n"
        "device_id=Attic-Pi\r\ncamera=/dev/video1\r\n",
    )
    result = apply(root)
    assert result.returncode == 0, result.stderr
    assert notices(root) == []

    config = config_of(root)  # the daemon's own loader, with the password as its systemd credential
    assert (config.device_id, config.source.uri) == ("attic-pi", "/dev/video1")
    assert (config.mqtt.host, config.mqtt.port, config.mqtt.username) == (
        "homeassistant.local",
        1884,
        "emotion",
    )
    assert config.mqtt.password == "s3cret pw"
    assert config.publish.outputs == ["stdout", "mqtt"]
    password = root / "etc/emotion-edge/mqtt_password"
    assert password.read_bytes() == b"s3cret pw" and oct(password.stat().st_mode & 0o777) == "0o600"
    # config.yaml keeps its comments: only the lines for these keys changed.
    text = (root / "etc/emotion-edge/config.yaml").read_text()
    assert "# Names this device in MQTT topics" in text and '\n  host: "homeassistant.local"\n' in text

    wpa = (root / "etc/wpa_supplicant/wpa_supplicant-wlan0.conf").read_text()
    # IEEE 802.11i's own test vector: passphrase "password", SSID "IEEE".
    assert "psk=f42c6fc52df0ebef9ebb4b90b38a5f902e83fe1b135a70e23aed762e9710a12e" in wpa
    assert "country=GB" in wpa and f"ssid={b'IEEE'.hex()}" in wpa and "password\n" not in wpa
    assert oct((root / "etc/wpa_supplicant/wpa_supplicant-wlan0.conf").stat().st_mode & 0o777) == "0o600"

    assert (root / "etc/hostname").read_text() == "attic\n"
    assert (root / "etc/hosts").read_text() == "127.0.0.1\tlocalhost\n127.0.1.1\tattic\n"
    keys = root / "home/pi/.ssh/authorized_keys"
    assert keys.read_text() == KEY + "\n" and oct(keys.stat().st_mode & 0o777) == "0o600"

    # The FAT file: both passwords replaced by a note, every other byte as it was (BOM, CRLF).
    after = path.read_bytes()
    assert b"s3cret" not in after and b"wifi_password=password" not in after
    assert after.startswith(b"\xef\xbb\xbfhostname=attic\r\n")
    assert after.count(b"moved into place on ") == 2 and after.count(b"\r\n") == 11
    assert settings.parse(after) == (settings.parse(after)[0], [])  # still a valid settings file


def tree_state(root: Path) -> dict[str, tuple]:
    state = {}
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            path = Path(dirpath, name)
            if path.is_symlink():
                continue
            st = path.stat()
            state[str(path.relative_to(root))] = (
                hashlib.sha256(path.read_bytes()).hexdigest(),
                st.st_mtime_ns,
                st.st_mode,
            )
    return state


def test_every_boot_after_the_first_changes_nothing(root):
    write_settings(root, f"hostname=attic\nssh_authorized_key={KEY}\nwifi_country=DE\nwifi_ssid=Home\n"
                         "wifi_password=hunter2hunter2\nmqtt_host=broker\nmqtt_password=pw\nmqtt_username=u\n")  # fmt: skip
    assert apply(root).returncode == 0
    before = tree_state(root)
    second = apply(root)
    assert second.returncode == 0 and second.stdout == ""  # nothing applied: nothing said
    assert tree_state(root) == before
    # The Wi-Fi network stays without its password in the file; the country can still change.
    write_settings(root, (root / "boot/firmware/emotion-edge.txt").read_text().replace("DE", "FR"))
    assert apply(root).returncode == 0
    wpa = (root / "etc/wpa_supplicant/wpa_supplicant-wlan0.conf").read_text()
    assert "country=FR" in wpa and "psk=" + settings.wpa_psk("Home", "hunter2hunter2") in wpa


def test_a_new_network_without_a_password_is_refused_and_an_empty_one_is_open(root):
    write_settings(root, "wifi_country=GB\nwifi_ssid=Cafe\n")
    result = apply(root)
    assert result.returncode == 0
    assert any("wifi_ssid 'Cafe' has no wifi_password" in n for n in notices(root))
    write_settings(root, "wifi_country=GB\nwifi_ssid=Cafe\nwifi_password=\n")
    assert apply(root).returncode == 0
    wpa = (root / "etc/wpa_supplicant/wpa_supplicant-wlan0.conf").read_text()
    assert "key_mgmt=NONE" in wpa and "psk=" not in wpa


def test_keys_are_added_never_removed(root):
    keys = root / "home/pi/.ssh/authorized_keys"
    keys.parent.mkdir(parents=True)
    keys.write_text(KEY2 + " added-by-ssh-copy-id\n")
    write_settings(root, f"ssh_authorized_key={KEY}\nssh_authorized_key={KEY2}\n")
    assert apply(root).returncode == 0
    assert keys.read_text() == f"{KEY2} added-by-ssh-copy-id\n{KEY}\n"


def test_a_combination_the_daemon_would_refuse_is_not_written_and_the_password_still_leaves_the_fat(root):
    write_settings(root, "mqtt_host=broker\nmqtt_password=orphan\n")  # a password needs a user name
    before = (root / "etc/emotion-edge/config.yaml").read_bytes()
    result = apply(root)
    assert result.returncode == 0
    assert any("the daemon would refuse these settings: mqtt.password: is set but mqtt.username is not" in n
               for n in notices(root))  # fmt: skip
    assert (root / "etc/emotion-edge/config.yaml").read_bytes() == before
    assert (root / "etc/emotion-edge/mqtt_password").read_bytes() == b""
    text = (root / "boot/firmware/emotion-edge.txt").read_text()
    assert "orphan" not in text and "#mqtt_password=  (NOT applied (see the journal), removed anyway" in text


def test_a_config_edited_into_another_layout_is_left_alone_with_a_message(root):
    config = root / "etc/emotion-edge/config.yaml"
    config.write_text("mqtt: {host: old.lan, port: 1883}\n")
    write_settings(root, "mqtt_host=new.lan\n")
    result = apply(root)
    assert result.returncode == 0
    assert config.read_text() == "mqtt: {host: old.lan, port: 1883}\n"
    assert any("could not set mqtt.host in it" in n for n in notices(root))


def test_set_yaml_value_uncomments_the_default_line_or_adds_one():
    text = (
        "# top\n# device_id: kitchen-pi\n\nmqtt:\n  # host: localhost\n  tls:\n    # enabled: false\nlog:\n"
    )
    out = settings.set_yaml_value(text, "mqtt.host", "b.lan")
    assert out == text.replace("  # host: localhost", '  host: "b.lan"')
    out = settings.set_yaml_value(out, "device_id", "pi-1")
    assert '\ndevice_id: "pi-1"\n' in out
    out = settings.set_yaml_value(out, "mqtt.port", 1884)  # no line for it: added under the section
    assert "mqtt:\n  port: 1884\n" in out
    out = settings.set_yaml_value(out, "source.uri", "/dev/video0")  # no section: appended
    assert yaml.safe_load(out) == {"device_id": "pi-1", "mqtt": {"port": 1884, "host": "b.lan", "tls": None},
                                   "log": None, "source": {"uri": "/dev/video0"}}  # fmt: skip


def test_the_shared_host_name_is_a_warning_not_an_error(root):
    write_settings(root, "mqtt_host=broker\n")
    result = apply(root)
    assert result.returncode == 0
    assert any("hostname and device_id are the image's default 'emotion-edge'" in n for n in notices(root))


def test_no_file_no_notices(root):
    (root / "run/emotion-edge-settings").mkdir(parents=True)
    (root / "run/emotion-edge-settings/notices").write_text("stale\n")
    result = apply(root)
    assert result.returncode == 0 and notices(root) == []
    assert "none (nothing to apply)" in result.stdout


def test_a_huge_or_binary_file_is_refused(root):
    write_settings(root, b"\0" * (settings.MAX_BYTES + 1))
    result = apply(root)
    assert result.returncode == 0 and "larger than 64 KiB: not a settings file" in result.stderr


def test_a_settings_file_the_step_cannot_read_is_an_error_exit_1(root):
    # Not the user's value but the step unable to do its job: the unit fails, so the system shows it.
    (root / "boot/firmware/emotion-edge.txt").mkdir(parents=True)
    result = apply(root)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "error: " in result.stderr and "emotion-edge.txt: cannot read it: Is a directory" in result.stderr
    assert any("cannot read it" in n for n in notices(root))
