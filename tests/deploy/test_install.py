"""systemd/install.sh into a temporary root: what lands where, idempotence, uninstall, bad input.

With `--root DIR` the installer never touches the running system (user creation and `systemctl start` are
only printed, enabling uses the offline `systemctl --root`); `--skip-venv` leaves out pip for the fast
tests. One `slow` test does a real install of the base package into a venv.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from edge.config import Config, load_config
from testbed.mosquitto import Subscriber, publish_retained

REPO = Path(__file__).resolve().parents[2]
INSTALL = REPO / "systemd" / "install.sh"
EXAMPLE = REPO / "systemd" / "config.example.yaml"
UNIT_SRC = REPO / "systemd" / "emotion-edge.service"
UNIT = "etc/systemd/system/emotion-edge.service"
WANTS = "etc/systemd/system/multi-user.target.wants/emotion-edge.service"
CONFIG = "etc/emotion-edge/config.yaml"
PASSWORD = "etc/emotion-edge/mqtt_password"
PREVIEW_TOKEN = "etc/emotion-edge/preview_token"
HAS_SYSTEMCTL = shutil.which("systemctl") is not None


def run_install(
    root: Path, *args: str, check: bool = True, env: dict | None = None
) -> subprocess.CompletedProcess:
    result = subprocess.run(
        ["bash", str(INSTALL), "--root", str(root), *args],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def tree_state(root: Path) -> dict[str, tuple]:
    """Every entry under root: type, mode, content hash or link target, and mtime (a rewrite counts)."""
    state = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            st = path.lstat()
            rel = str(path.relative_to(root))
            if path.is_symlink():
                state[rel] = ("link", os.readlink(path))
            elif path.is_dir():
                state[rel] = ("dir", oct(st.st_mode & 0o7777))
            else:
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
                state[rel] = ("file", oct(st.st_mode & 0o7777), digest, st.st_mtime_ns)
    return state


@pytest.fixture
def root(tmp_path):
    target = tmp_path / "root"
    target.mkdir()
    return target


def test_fresh_install_puts_every_file_in_place(root):
    passwd_before = Path("/etc/passwd").read_bytes()
    result = run_install(root, "--skip-venv")

    unit = root / UNIT
    assert unit.read_text() == UNIT_SRC.read_text()
    assert oct(unit.stat().st_mode & 0o777) == "0o644"
    config = root / CONFIG
    assert config.read_text() == EXAMPLE.read_text()
    assert oct(config.stat().st_mode & 0o777) == "0o640"
    for secret in (PASSWORD, PREVIEW_TOKEN):  # LoadCredential= needs them; empty = none
        assert (root / secret).read_bytes() == b"" and oct((root / secret).stat().st_mode & 0o777) == "0o600"
    if HAS_SYSTEMCTL:
        assert os.readlink(root / WANTS) == "/etc/systemd/system/emotion-edge.service"
    # --root never changes the running system: the user is only printed, nothing is started.
    assert "skip (--root): useradd --system" in result.stdout
    assert "skip (--root): systemctl restart emotion-edge.service" in result.stdout
    assert Path("/etc/passwd").read_bytes() == passwd_before
    assert not (root / "opt").exists(), "--skip-venv must not create the venv"


def test_second_run_changes_nothing(root):
    run_install(root, "--skip-venv")
    before = tree_state(root)
    second = run_install(root, "--skip-venv")
    assert tree_state(root) == before
    assert "installed" not in second.stdout and "daemon-reload" not in second.stdout
    assert "keeping existing /etc/emotion-edge/config.yaml" in second.stdout


def test_existing_config_and_password_survive_install_and_uninstall(root):
    (root / "etc/emotion-edge").mkdir(parents=True)
    (root / CONFIG).write_text("mqtt:\n  host: broker.lan\n")
    (root / PASSWORD).write_text("s3cret\n")
    (root / PREVIEW_TOKEN).write_text("a-long-preview-token\n")
    run_install(root, "--skip-venv")
    assert (root / CONFIG).read_text() == "mqtt:\n  host: broker.lan\n"
    assert (root / PASSWORD).read_text() == "s3cret\n"
    assert (root / PREVIEW_TOKEN).read_text() == "a-long-preview-token\n"

    result = run_install(root, "--uninstall")
    assert not (root / UNIT).exists() and not (root / WANTS).is_symlink()
    assert (root / CONFIG).read_text() == "mqtt:\n  host: broker.lan\n"
    assert (root / PASSWORD).read_text() == "s3cret\n"
    assert (root / PREVIEW_TOKEN).read_text() == "a-long-preview-token\n"
    assert "--purge removes it" in result.stdout

    run_install(root, "--uninstall", "--purge")
    assert not (root / "etc/emotion-edge").exists()


def test_uninstall_removes_exactly_what_install_added(root):
    # A root as on a real system: /opt and /etc/systemd/system exist (and stay) before the install.
    (root / "opt").mkdir()
    (root / "etc/systemd/system").mkdir(parents=True)
    (root / "etc/systemd/system/other.service").write_text("[Service]\nExecStart=/bin/true\n")
    before = tree_state(root)
    run_install(root, "--skip-venv")
    assert tree_state(root) != before
    fake_venv = root / "opt/emotion-edge/venv/bin"  # as if pip had run
    fake_venv.mkdir(parents=True)
    (fake_venv / "emotion-edge").write_text("#!/bin/sh\n")
    result = run_install(root, "--uninstall")
    assert tree_state(root) == before, result.stdout
    assert "skip (--root): userdel emotion-edge" in result.stdout


def test_uninstall_asks_the_installed_daemon_to_clear_the_broker_and_goes_on_if_it_cannot(root, tmp_path):
    run_install(root, "--skip-venv")
    (root / "etc/emotion-edge/env").write_text(
        "# overrides, read as systemd reads an EnvironmentFile=\n"
        "# EMOTION_EDGE_MQTT__PORT=1884\n"
        '  EMOTION_EDGE_MQTT__HOST = "broker.lan"  \n'
        "EMOTION_EDGE_DEVICE_ID='attic pi'\n"
        "EMOTION_EDGE_MQTT__USERNAME=pi \n"
        "OTHER=no\n"
    )
    record = tmp_path / "forget-call.txt"
    fake = root / "opt/emotion-edge/venv/bin/emotion-edge"  # stands in for the installed daemon
    fake.parent.mkdir(parents=True)
    fake.write_text(
        "#!/bin/sh\n"
        f'{{ echo "$*"; echo "cred=$CREDENTIALS_DIRECTORY"; echo "host=$EMOTION_EDGE_MQTT__HOST"; '
        f'echo "id=$EMOTION_EDGE_DEVICE_ID"; echo "user=$EMOTION_EDGE_MQTT__USERNAME"; '
        f'echo "port=${{EMOTION_EDGE_MQTT__PORT:-unset}}"; echo "other=${{OTHER:-unset}}"; }} > {record}\n'
        "echo 'error: cannot connect to the MQTT broker at broker.lan:1883' >&2\nexit 2\n"
    )
    fake.chmod(0o755)
    result = run_install(root, "--uninstall")
    etc = root / "etc/emotion-edge"
    assert record.read_text().splitlines() == [
        f"forget --config {etc}/config.yaml --timeout 10",
        f"cred={etc}",  # where the unit's LoadCredential= would have put mqtt_password
        "host=broker.lan",  # quotes and the whitespace around them are not part of the value
        "id=attic pi",  # a value with a space arrives whole
        "user=pi",
        "port=unset",  # a commented-out line stays out
        "other=unset",  # only the daemon's own variables
    ]
    assert "cannot connect to the MQTT broker" in result.stderr
    assert "warning: the MQTT broker still holds this device's retained messages" in result.stdout
    assert not (root / UNIT).exists() and not (root / "opt/emotion-edge").exists()
    assert "uninstalled" in result.stdout


def test_prefix_and_no_enable(root):
    run_install(root, "--skip-venv", "--prefix", "/srv/ee", "--no-enable")
    unit = (root / UNIT).read_text()
    assert "ExecStart=/srv/ee/venv/bin/emotion-edge --config /etc/emotion-edge/config.yaml" in unit
    assert "/opt/emotion-edge" not in unit
    assert not (root / WANTS).is_symlink()
    # --uninstall without --prefix finds the custom prefix in the installed unit and removes its venv too.
    (root / "srv/ee/venv/bin").mkdir(parents=True, exist_ok=True)
    (root / "srv/ee/venv/bin/python").write_text("")
    result = run_install(root, "--uninstall")
    assert "the installed unit runs from /srv/ee: uninstalling that prefix" in result.stdout
    assert not (root / UNIT).exists() and not (root / "srv/ee").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--bogus"], "unknown option '--bogus'"),
        (["--prefix", "relative/dir"], "--prefix must be an absolute path"),
        (
            ["--source", "/nonexistent-source"],
            "--source '/nonexistent-source' is not an emotion-edge source tree",
        ),
        (["--wheel", "/nonexistent.whl"], "--wheel file '/nonexistent.whl' does not exist"),
        (["--purge"], "--purge only goes with --uninstall"),
        (["--prefix"], "--prefix needs a value"),
    ],
)
def test_bad_arguments_fail_clearly_and_write_nothing(root, args, message):
    result = run_install(root, *args, check=False)
    assert result.returncode == 2
    assert f"error: {message}" in result.stderr
    assert list(root.iterdir()) == []


def test_missing_root_directory_is_an_error(tmp_path):
    result = run_install(tmp_path / "absent", check=False)
    assert result.returncode == 2 and "does not exist" in result.stderr


def test_example_config_lists_every_key_commented_out_with_its_default(tmp_path):
    # As installed, it sets nothing: every key follows the installed version's defaults, so an upgrade that
    # improves a default reaches devices whose config.yaml was written by an older install.
    assert load_config(path=EXAMPLE, environ={}).to_dict(mask_secrets=False) == Config().to_dict(
        mask_secrets=False
    )
    text = EXAMPLE.read_text()

    # Uncommenting every key gives a valid, complete config holding exactly the defaults.
    uncommented = re.sub(r"^(\s*)# ([a-z_]+: )", r"\1\2", text, flags=re.MULTILINE)
    written = yaml.safe_load(uncommented)

    def keys(tree, prefix=""):
        for key, value in tree.items():
            if isinstance(value, dict):
                yield from keys(value, f"{prefix}{key}.")
            else:
                yield f"{prefix}{key}"

    defaults = Config().to_dict(mask_secrets=False)
    assert set(keys(written)) == set(keys(defaults))
    # As shipped, only section headers are active (each an empty mapping), never a key.
    sections = {k.rsplit(".", 1)[0] for k in keys(defaults) if "." in k}
    assert set(keys(yaml.safe_load(text))) <= sections, "keys must ship commented out"
    assert {"source", "mqtt.tls"} <= set(keys(yaml.safe_load(text)))
    (tmp_path / "all.yaml").write_text(uncommented)
    loaded = load_config(path=tmp_path / "all.yaml", environ={}).to_dict(mask_secrets=False)
    assert loaded == dict(defaults, device_id="kitchen-pi")  # the one example that is not a default


def test_the_empty_password_file_means_no_password(tmp_path):
    # install.sh creates an empty mqtt_password so that LoadCredential= never fails the unit.
    (tmp_path / "mqtt_password").write_text("")
    config = load_config(path=EXAMPLE, environ={"CREDENTIALS_DIRECTORY": str(tmp_path)})
    assert config.mqtt.password is None
    (tmp_path / "mqtt_password").write_text("s3cret\n")
    env = {"CREDENTIALS_DIRECTORY": str(tmp_path), "EMOTION_EDGE_MQTT__USERNAME": "pi"}
    assert load_config(path=EXAMPLE, environ=env).mqtt.password == "s3cret"


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_real_install_has_a_working_daemon_and_no_tensorflow(root, mosquitto):
    # The base package from this repository into PREFIX/venv (pip's cache makes this ~1 min).
    result = run_install(root, "--no-enable")
    venv = root / "opt/emotion-edge/venv"
    assert "installed the emotion-edge package" in result.stdout
    help_run = subprocess.run(
        [str(venv / "bin/emotion-edge"), "--help"], capture_output=True, text=True, timeout=120
    )
    assert help_run.returncode == 0 and "--config" in help_run.stdout, help_run.stderr
    no_tf = subprocess.run(
        [str(venv / "bin/python"), "-I", "-c", "import tensorflow"], capture_output=True, text=True
    )
    assert no_tf.returncode != 0 and "No module named 'tensorflow'" in no_tf.stderr
    # The shipped default model came with the package.
    models = subprocess.run(
        [
            str(venv / "bin/python"),
            "-I",
            "-c",
            "import edge, pathlib; print(pathlib.Path(edge.__file__).parent)",
        ],
        capture_output=True,
        text=True,
    )
    installed = Path(models.stdout.strip())
    assert installed.is_relative_to(venv), installed
    assert (installed / "models/default.tflite").is_file() and (installed / "models/default.json").is_file()
    # So did the detectors' weights (YuNet, the default, and BlazeFace), with no TensorFlow-declaring package
    # and no --no-deps step.
    for weights in (
        "face_detection_yunet_2023mar.onnx",
        "face_detection_full_range.tflite",
        "face_detection_short_range.tflite",
    ):
        assert (installed / "models" / weights).stat().st_size > 100_000, weights
    # Unchanged source: the second run skips pip and changes nothing.
    before = tree_state(root)
    again = run_install(root, "--no-enable")
    assert "package unchanged" in again.stdout
    assert tree_state(root) == before

    # Uninstall clears what the daemon left retained on the broker, reading the broker from the env file
    # as the service would; another device's messages stay.
    (root / CONFIG).write_text("device_id: pi-gone\npublish:\n  outputs: [mqtt]\nmqtt:\n  host: 127.0.0.1\n")
    (root / "etc/emotion-edge/env").write_text(f"EMOTION_EDGE_MQTT__PORT={mosquitto.port}\n")
    other = {"emotion/pi-stays/state": b"{}"}
    publish_retained(
        mosquitto,
        {"emotion/pi-gone/state": b"{}", "homeassistant/sensor/pi-gone/emotion/config": b"{}", **other},
    )
    gone = run_install(root, "--uninstall")
    assert "cleared 2 retained messages of device pi-gone" in gone.stderr, gone.stdout + gone.stderr
    with Subscriber(mosquitto, "#") as sub:
        assert sub.retained() == other


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_rebuilt_wheel_of_the_same_version_replaces_the_installed_code(root, tmp_path):
    """Every build is version 0.1.0 until a release: pip calls a rebuilt wheel "already installed" unless
    the installer force-reinstalls the package, and the service would restart on the old code."""
    source = tmp_path / "src"
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    for name in filter(None, tracked.decode().split("\0")):
        if (REPO / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, source / name)

    def build(tag: str) -> Path:
        out = tmp_path / tag
        subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(out), str(source)],
            check=True,
            timeout=600,
        )
        (wheel,) = out.glob("emotion_edge-*.whl")
        return wheel

    def installed_marker() -> str:
        python = root / "opt/emotion-edge/venv/bin/python"
        probe = "import edge; print(getattr(edge, 'REBUILD_MARKER', 'none'))"
        return subprocess.run([str(python), "-I", "-c", probe], capture_output=True, text=True).stdout.strip()

    first = build("first")
    run_install(root, "--no-enable", "--wheel", str(first))
    assert installed_marker() == "none"
    with open(source / "edge/__init__.py", "a") as handle:
        handle.write("\nREBUILD_MARKER = 'second'\n")
    second = build("second")
    assert second.name == first.name  # same version, same file name: only the content differs
    result = run_install(root, "--no-enable", "--wheel", str(second))
    assert "installed the emotion-edge package" in result.stdout
    assert installed_marker() == "second"

    # From a source tree, the build leaves nothing in it (under sudo it would be root-owned in a user's clone).
    for made_by_pip_wheel in (source / "build", *source.glob("*.egg-info")):
        shutil.rmtree(made_by_pip_wheel)
    (source / "edge/__init__.py").write_text(
        (source / "edge/__init__.py").read_text() + "REBUILD_MARKER = 'src'\n"
    )
    scratch = tmp_path / "scratch"  # the installer's temporary wheel folder goes here, and must go away
    scratch.mkdir()
    run_install(root, "--no-enable", "--source", str(source), env={**os.environ, "TMPDIR": str(scratch)})
    assert installed_marker() == "src"
    assert not (source / "build").exists() and not list(source.glob("*.egg-info"))
    assert not list(scratch.iterdir())
