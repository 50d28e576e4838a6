"""The SD-card image's own units (systemd/image/): systemd accepts them, and they run in the order the
image depends on. `make boot-check` checks the same order at a real boot, from the units' timestamps.

The settings step must finish before anything reads what it writes: the network (the host name goes out
with DHCP, wpa_supplicant reads the Wi-Fi network), sshd (the authorized key) and the daemon (config.yaml,
the MQTT password). It runs in sysinit, after the local file systems (/boot/firmware, where the file is).
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edge.notices import NOTICES_PATH
from tests.deploy.test_systemd_unit import parse_unit

REPO = Path(__file__).resolve().parents[2]
IMAGE = REPO / "systemd" / "image"
UNITS = ["emotion-edge-settings.service", "emotion-edge-growroot.service"]

needs_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed (CI installs systemd)"
)


def unit(name: str) -> dict[str, dict[str, list[str]]]:
    return parse_unit((IMAGE / name).read_text())


def words(values: list[str]) -> set[str]:
    return {word for value in values for word in value.split()}


def stubbed_copies(tmp_path: Path, names: list[str]) -> list[Path]:
    """Each unit in tmp_path with its programs pointing at an existing stub (verify wants them to exist)."""
    stub = tmp_path / "stub"
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    paths = []
    for name in names:
        source = (REPO / "systemd" / name) if name == "emotion-edge.service" else IMAGE / name
        text = source.read_text()
        for program in ("/opt/emotion-edge/venv/bin/python", "/opt/emotion-edge/venv/bin/emotion-edge",
                        "/usr/local/lib/emotion-edge/growroot"):  # fmt: skip
            text = text.replace(program, str(stub))
        (tmp_path / name).write_text(text)
        paths.append(tmp_path / name)
    return paths


@needs_analyze
def test_systemd_analyze_verify_is_clean(tmp_path):
    paths = stubbed_copies(tmp_path, [*UNITS, "emotion-edge.service"])
    result = subprocess.run(
        ["systemd-analyze", "verify", *map(str, paths)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), result.stderr


@needs_analyze
def test_verify_catches_a_broken_image_unit(tmp_path):
    (path,) = stubbed_copies(tmp_path, ["emotion-edge-settings.service"])
    path.write_text(path.read_text().replace("RemainAfterExit=yes", "RemainAfterExt=yes"))
    result = subprocess.run(
        ["systemd-analyze", "verify", str(path)], capture_output=True, text=True, timeout=60
    )
    assert "RemainAfterExt" in result.stdout + result.stderr


def test_the_settings_step_runs_in_sysinit_before_whatever_reads_its_files():
    u = unit("emotion-edge-settings.service")
    assert u["Unit"]["DefaultDependencies"] == ["no"]
    assert words(u["Unit"]["After"]) == {"local-fs.target"}  # only what is up before sysinit
    assert "/boot/firmware" in words(u["Unit"]["RequiresMountsFor"])
    before = words(u["Unit"]["Before"])
    for reader in ("network-pre.target", "sysinit.target", "systemd-networkd.service", "wpa_supplicant@wlan0.service",
                   "ssh.service", "emotion-edge.service", "shutdown.target"):  # fmt: skip
        assert reader in before, reader
    assert words(u["Unit"]["Wants"]) == {"network-pre.target"}  # network-pre is passive: pulled in by us
    assert u["Install"]["WantedBy"] == ["sysinit.target"]
    assert u["Service"]["Type"] == ["oneshot"] and u["Service"]["RemainAfterExit"] == ["yes"]
    # The daemon only orders itself after the network: it never requires the settings step, so a bad file
    # (or a step that failed) cannot keep it from starting on the settings it has.
    daemon = parse_unit((REPO / "systemd" / "emotion-edge.service").read_text())
    assert "emotion-edge-settings.service" not in words(daemon["Unit"].get("Requires", []))
    assert "network-online.target" in words(daemon["Unit"]["After"])


def test_growroot_runs_once_the_root_is_writable_and_before_the_local_file_systems():
    grow = unit("emotion-edge-growroot.service")
    assert grow["Unit"]["DefaultDependencies"] == ["no"]
    assert words(grow["Unit"]["After"]) == {"systemd-remount-fs.service"}  # / is writable, nothing else yet
    assert {"local-fs.target", "sysinit.target"} <= words(grow["Unit"]["Before"])
    assert grow["Install"]["WantedBy"] == ["sysinit.target"]


def test_paths_agree_between_the_units_the_script_the_daemon_and_the_image_build():
    spec = importlib.util.spec_from_file_location("emotion_edge_settings", IMAGE / "emotion_edge_settings.py")
    script = importlib.util.module_from_spec(spec)
    sys.modules["emotion_edge_settings"] = script
    spec.loader.exec_module(script)
    assert Path(script.NOTICES) == NOTICES_PATH  # what the step writes is what the daemon reads
    settings_unit = unit("emotion-edge-settings.service")
    assert settings_unit["Unit"]["ConditionPathExists"] == [script.SETTINGS_FILE]
    wpa = parse_unit(
        (IMAGE / "rootfs/etc/systemd/system/wpa_supplicant@wlan0.service.d/emotion-edge.conf").read_text()
    )
    assert wpa["Unit"]["ConditionPathExists"] == [script.WPA_CONF]
    assert words(wpa["Unit"]["After"]) == {"emotion-edge-settings.service"}
    build = (REPO / "tools" / "image.sh").read_text()
    (program,) = re.findall(r"\S+emotion_edge_settings\.py", settings_unit["Service"]["ExecStart"][0])
    assert f'"$IMG/emotion_edge_settings.py" {program}' in build
    assert '"$IMG/growroot" /usr/local/lib/emotion-edge/growroot' in build
    for name in UNITS:
        assert f"/etc/systemd/system/{name}" in build


def test_the_network_waits_for_any_one_link_and_ssh_takes_keys_only():
    wait = parse_unit(
        (
            IMAGE / "rootfs/etc/systemd/system/systemd-networkd-wait-online.service.d/emotion-edge.conf"
        ).read_text()
    )
    assert wait["Service"]["ExecStart"][0] == ""  # reset, then replaced
    assert "--any" in wait["Service"]["ExecStart"][1].split()
    sshd = (IMAGE / "rootfs/etc/ssh/sshd_config.d/emotion-edge.conf").read_text()
    for line in ("PasswordAuthentication no", "KbdInteractiveAuthentication no", "PermitRootLogin no"):
        assert f"\n{line}\n" in f"\n{sshd}"
