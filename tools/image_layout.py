"""The SD-card image's disk: an MBR with a FAT32 firmware partition and an ext4 root, assembled from two
folders without loop devices or mounts (mkfs.vfat + mcopy, mkfs.ext4 -d, sfdisk, dd), so it runs in a
container or chroot as well as on a workstation.

    python3 tools/image_layout.py --firmware DIR --root DIR --out IMAGE [--label-id HEX]

The layout follows Debian's Raspberry Pi images (salsa.debian.org/raspi-team/image-specs): the firmware
partition from 4 MiB to 512 MiB labelled RASPIFIRM (the Pi's boot ROM reads the first FAT partition of an
MBR disk; room for two kernels and initrds during an upgrade), the root from 512 MiB labelled RASPIROOT,
sized to its content plus headroom: the Pi grows it to the card at its first boot. Everything is aligned to
4 MiB, the erase-block size SD cards are tuned for. Standard library only: it runs on the build host.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

MIB = 1 << 20
ALIGN = 4 * MIB
FIRMWARE_START = 4 * MIB
FIRMWARE_END = 512 * MIB
# ext4's own structures (inode tables, journal, reserved blocks) and room for the first boot's journal and
# logs before the root is grown: measured against `mkfs.ext4 -d` failing with "Could not allocate block".
ROOT_OVERHEAD = 1.15
ROOT_HEADROOM = 256 * MIB
FAT32_MIN = 33 * MIB  # below ~32 MiB mkfs.vfat cannot make FAT32 with 512-byte sectors
SECTOR = 512
MBR_FAT32_LBA = "c"  # W95 FAT32 (LBA): what the Pi's boot ROM looks for
MBR_LINUX = "83"


class LayoutError(ValueError):
    """The content does not fit the layout (a firmware folder over the partition, for instance)."""


@dataclasses.dataclass(frozen=True)
class Partition:
    start: int  # bytes from the start of the disk
    size: int
    type: str  # MBR type, hex
    label: str

    @property
    def end(self) -> int:
        return self.start + self.size


@dataclasses.dataclass(frozen=True)
class Layout:
    firmware: Partition
    root: Partition

    @property
    def size(self) -> int:
        return self.root.end


def align_up(value: int, to: int = ALIGN) -> int:
    return -(-value // to) * to


def plan(firmware_bytes: int, root_bytes: int) -> Layout:
    """Where each partition goes for this much content (apparent bytes, as `du --apparent-size -sb`)."""
    if firmware_bytes < 0 or root_bytes < 0:
        raise LayoutError("content sizes cannot be negative")
    firmware = Partition(FIRMWARE_START, FIRMWARE_END - FIRMWARE_START, MBR_FAT32_LBA, "RASPIFIRM")
    # FAT32 clusters and the two FAT copies take a few percent; the rest of the partition must hold it.
    if math.ceil(firmware_bytes * 1.05) + MIB > firmware.size:
        raise LayoutError(
            f"the firmware folder holds {firmware_bytes / MIB:.0f} MiB: more than its "
            f"{firmware.size // MIB} MiB partition (are old kernels left in /boot/firmware?)"
        )
    root_size = align_up(math.ceil(root_bytes * ROOT_OVERHEAD) + ROOT_HEADROOM)
    root = Partition(FIRMWARE_END, root_size, MBR_LINUX, "RASPIROOT")
    return Layout(firmware, root)


def sfdisk_script(layout: Layout, label_id: int) -> str:
    """The partition table in sfdisk's input format (sectors), with a fixed disk identifier so the same
    content makes the same image."""
    if not 0 < label_id < 1 << 32:
        raise LayoutError(f"an MBR disk identifier is 32 bits and not 0, got {label_id:#x}")
    lines = ["label: dos", f"label-id: {label_id:#010x}", "unit: sectors", ""]
    for part in (layout.firmware, layout.root):
        if part.start % SECTOR or part.size % SECTOR:
            raise LayoutError(f"{part.label}: not on a sector boundary")
        lines.append(f"start={part.start // SECTOR}, size={part.size // SECTOR}, type={part.type}")
    return "\n".join(lines) + "\n"


def tree_bytes(folder: Path) -> int:
    """Apparent size of everything under folder: each file's bytes, a block for each folder and link. Links
    are not followed, other file systems (a /proc mounted inside) not entered."""
    total = 0
    device = folder.stat().st_dev
    for dirpath, dirnames, filenames in os.walk(folder):
        total += 4096
        kept = []
        for name in dirnames:
            st = os.lstat(os.path.join(dirpath, name))
            if os.path.islink(os.path.join(dirpath, name)):
                total += 4096
            elif st.st_dev == device:
                kept.append(name)
        dirnames[:] = kept
        for name in filenames:
            path = os.path.join(dirpath, name)
            total += 4096 if os.path.islink(path) else os.lstat(path).st_size
    return total


def run(command: list[str]) -> None:
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(
            f"{command[0]} failed ({result.returncode}): {(result.stderr or result.stdout).strip()}"
        )


def make_fat(folder: Path, image: Path, part: Partition) -> None:
    image.unlink(missing_ok=True)
    run(["mkfs.vfat", "-F", "32", "-n", part.label, "-C", str(image), str(part.size // 1024)])
    entries = sorted(str(p) for p in folder.iterdir())
    if entries:  # mcopy -s: folders (overlays/) recursively; -p keeps the dates; -Q stops at the first error
        run(["mcopy", "-i", str(image), "-s", "-p", "-Q", *entries, "::/"])


def make_ext4(folder: Path, image: Path, part: Partition) -> None:
    image.unlink(missing_ok=True)
    # -d copies the tree in, owners and modes as they are (the build runs as root); -m 1: 1% reserved (5% of a
    # large card is gigabytes nobody gets back); the Pi's first boot grows it to the card.
    run(
        [
            "mkfs.ext4",
            "-q",
            "-F",
            "-b",
            "4096",
            "-L",
            part.label,
            "-m",
            "1",
            "-d",
            str(folder),
            str(image),
            f"{part.size // 1024}k",
        ]
    )


def assemble(firmware_dir: Path, root_dir: Path, out: Path, label_id: int) -> Layout:
    layout = plan(tree_bytes(firmware_dir), tree_bytes(root_dir))
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".layout-") as scratch:
        fat, ext4 = Path(scratch) / "firmware.vfat", Path(scratch) / "root.ext4"
        make_fat(firmware_dir, fat, layout.firmware)
        make_ext4(root_dir, ext4, layout.root)
        partial = out.with_name(out.name + ".partial")
        partial.unlink(missing_ok=True)
        with open(partial, "wb") as handle:
            handle.truncate(layout.size)
        result = subprocess.run(
            ["sfdisk", "--quiet", "--no-reread", "--no-tell-kernel", str(partial)],
            input=sfdisk_script(layout, label_id), capture_output=True, text=True,
        )  # fmt: skip
        if result.returncode != 0:
            raise RuntimeError(f"sfdisk failed: {result.stderr.strip()}")
        for part, image in ((layout.firmware, fat), (layout.root, ext4)):
            run(["dd", f"if={image}", f"of={partial}", "bs=4M", f"seek={part.start // ALIGN}",
                 "conv=notrunc,sparse", "status=none"])  # fmt: skip
        os.replace(partial, out)
    return layout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Assemble the SD-card image from a firmware and a root folder."
    )
    parser.add_argument("--firmware", required=True, type=Path, help="what goes on the FAT partition")
    parser.add_argument("--root", required=True, type=Path, help="the root file system's tree")
    parser.add_argument("--out", required=True, type=Path, help="the raw image to write")
    parser.add_argument("--label-id", default="0x5eed0ee1", help="MBR disk identifier (hex)")
    args = parser.parse_args(argv)
    for name in ("firmware", "root"):
        if not getattr(args, name).is_dir():
            print(f"error: --{name} {getattr(args, name)} is not a folder", file=sys.stderr)
            return 2
    try:
        label_id = int(args.label_id, 16)
        layout = assemble(args.firmware, args.root, args.out, label_id)
    except (LayoutError, ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(
        f"{args.out}: {layout.size / MIB:.0f} MiB; {layout.firmware.label} {layout.firmware.size // MIB} MiB "
        f"at {layout.firmware.start // MIB} MiB, {layout.root.label} {layout.root.size // MIB} MiB at "
        f"{layout.root.start // MIB} MiB"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
