"""tools/image_layout.py: where the SD-card image's partitions go, and a real (tiny) image assembled from two
folders with the same tools `make image` uses, read back without mounting it.

The shared root builder (tools/debian-root.sh) is checked here too: its cache key must follow the package
list, not the order it is written in.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("image_layout", REPO / "tools" / "image_layout.py")
layout = importlib.util.module_from_spec(spec)
sys.modules["image_layout"] = layout
spec.loader.exec_module(layout)

MIB = 1 << 20
TOOLS = ("mkfs.vfat", "mcopy", "mtype", "mkfs.ext4", "debugfs", "sfdisk")
PATH = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
needs_tools = pytest.mark.skipif(
    any(shutil.which(t, path=PATH) is None for t in TOOLS),
    reason="needs dosfstools, mtools, e2fsprogs and fdisk (apt install dosfstools mtools e2fsprogs fdisk)",
)


def test_plan_follows_debians_raspi_layout_and_fits_the_content():
    plan = layout.plan(firmware_bytes=80 * MIB, root_bytes=1500 * MIB)
    fw, root = plan.firmware, plan.root
    assert (fw.start, fw.end, fw.type, fw.label) == (4 * MIB, 512 * MIB, "c", "RASPIFIRM")
    assert (root.start, root.type, root.label) == (512 * MIB, "83", "RASPIROOT")
    assert root.size % (4 * MIB) == 0 and plan.size == root.end
    assert root.size >= 1500 * MIB * 1.15 + 256 * MIB
    assert root.size < 1500 * MIB * 1.15 + 256 * MIB + 4 * MIB  # aligned up, not more


def test_plan_refuses_firmware_that_does_not_fit():
    with pytest.raises(layout.LayoutError, match=r"the firmware folder holds 600 MiB: more than its 508 MiB"):
        layout.plan(firmware_bytes=600 * MIB, root_bytes=MIB)


def test_sfdisk_script_is_exact_and_checks_the_disk_id():
    plan = layout.plan(0, 0)
    assert layout.sfdisk_script(plan, 0x1234ABCD) == (
        "label: dos\nlabel-id: 0x1234abcd\nunit: sectors\n\n"
        "start=8192, size=1040384, type=c\n"
        f"start=1048576, size={plan.root.size // 512}, type=83\n"
    )
    with pytest.raises(layout.LayoutError, match="32 bits"):
        layout.sfdisk_script(plan, 0)


def test_tree_bytes_counts_files_and_links_without_following_them(tmp_path):
    (tmp_path / "a").write_bytes(b"x" * 10_000)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b").write_bytes(b"y" * 5000)
    (tmp_path / "big-link").symlink_to("/usr")  # followed, this would count the host's /usr
    assert layout.tree_bytes(tmp_path) == 15_000 + 4096 * 3


@needs_tools
def test_a_real_image_from_two_folders(tmp_path):
    firmware = tmp_path / "firmware"
    (firmware / "overlays").mkdir(parents=True)
    (firmware / "config.txt").write_text("arm_64bit=1\n")
    (firmware / "overlays" / "x.dtbo").write_bytes(b"\xd0\x0d\xfe\xed")
    root = tmp_path / "root"
    (root / "etc" / "emotion-edge").mkdir(parents=True)
    (root / "etc" / "hostname").write_text("emotion-edge\n")
    secret = root / "etc" / "emotion-edge" / "mqtt_password"
    secret.write_text("pw")
    secret.chmod(0o600)
    (root / "etc" / "link").symlink_to("hostname")
    out = tmp_path / "out" / "disk.img"
    result = subprocess.run(
        [sys.executable, str(REPO / "tools" / "image_layout.py"), "--firmware", str(firmware), "--root", str(root),
         "--out", str(out), "--label-id", "0x5eed0ee1"], capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "RASPIFIRM 508 MiB at 4 MiB, RASPIROOT 260 MiB at 512 MiB" in result.stdout
    table = json.loads(subprocess.run(["sfdisk", "--json", str(out)], capture_output=True, text=True).stdout)
    table = table["partitiontable"]
    assert (table["label"], table["id"]) == ("dos", "0x5eed0ee1")
    assert [(p["start"], p["type"]) for p in table["partitions"]] == [(8192, "c"), (1048576, "83")]
    assert out.stat().st_size == 772 * MIB
    assert out.stat().st_blocks * 512 < 100 * MIB  # sparse: the empty space costs nothing until written

    fat = f"{out}@@{4 * MIB}"
    mtype = subprocess.run(["mtype", "-i", fat, "::/overlays/x.dtbo"], capture_output=True)
    assert mtype.stdout == b"\xd0\x0d\xfe\xed"
    label = subprocess.run(["mlabel", "-s", "-i", fat, "::"], capture_output=True, text=True).stdout
    assert "RASPIFIRM" in label
    ext4 = f"{out}?offset={512 * MIB}"
    debugfs = ["debugfs", "-R"]
    assert (
        subprocess.run([*debugfs, "cat /etc/hostname", ext4], capture_output=True, text=True).stdout
        == "emotion-edge\n"
    )
    stat = subprocess.run(
        [*debugfs, "stat /etc/emotion-edge/mqtt_password", ext4], capture_output=True, text=True
    )
    assert "Mode:  0600" in stat.stdout  # modes (and owners) travel with the tree
    link = subprocess.run([*debugfs, "stat /etc/link", ext4], capture_output=True, text=True).stdout
    assert 'Fast link dest: "hostname"' in link
    volume = subprocess.run(["dumpe2fs", "-h", ext4], capture_output=True, text=True).stdout
    assert "Filesystem volume name:   RASPIROOT" in volume and "Block size:               4096" in volume


def test_a_missing_folder_is_one_clear_error(tmp_path):
    result = subprocess.run(
        [sys.executable, str(REPO / "tools" / "image_layout.py"), "--firmware", str(tmp_path / "nope"),
         "--root", str(tmp_path), "--out", str(tmp_path / "x.img")], capture_output=True, text=True,
    )  # fmt: skip
    assert (
        result.returncode == 2 and result.stderr == f"error: --firmware {tmp_path / 'nope'} is not a folder\n"
    )


def root_key(*args: str) -> str:
    script = f'source "{REPO}/tools/debian-root.sh"; debian_root_key "$@"'
    result = subprocess.run(["bash", "-c", script, "key", *args], capture_output=True, text=True, check=True)
    return result.stdout.strip()


def test_the_root_cache_key_follows_the_package_list_not_its_order():
    base = root_key("trixie", "main non-free-firmware", "systemd,python3,git", "--dpkgopt=x")
    assert len(base) == 12
    assert root_key("trixie", "main non-free-firmware", "git,systemd,python3", "--dpkgopt=x") == base
    assert root_key("trixie", "main non-free-firmware", "systemd,python3,git,nano", "--dpkgopt=x") != base
    assert root_key("bookworm", "main non-free-firmware", "systemd,python3,git", "--dpkgopt=x") != base
    assert root_key("trixie", "main", "systemd,python3,git", "--dpkgopt=x") != base
    assert root_key("trixie", "main non-free-firmware", "systemd,python3,git") != base
