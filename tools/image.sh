#!/usr/bin/env bash
# A flashable SD-card image for a Raspberry Pi 3 / 4 / 400 / Zero 2 W with a USB (UVC) webcam: Debian
# (trixie, arm64) from Debian's own packages, with Raspberry Pi firmware and kernel packages as Debian's
# raspi images have them (salsa.debian.org/raspi-team/image-specs), and emotion-edge installed by the same
# systemd/install.sh users run. Settings come from emotion-edge.txt on its FAT partition (docs/image.md).
#
#   sudo tools/image.sh [--out DIR] [--cache DIR] [--x86-python PY] [--rebuild] [--skip-xz]
#   make image                     (the same, with PY = the Makefile's base-install venv)
#
# Steps (one summary line each at the end):
#   tools     mmdebstrap, qemu-user-static, dosfstools, mtools, e2fsprogs, fdisk, xz (apt when missing)
#   root      the Debian arm64 root (IMAGE_PACKAGES below), built by mmdebstrap under qemu-user and cached
#             in --cache (default ~/.cache/emotion-edge/image), keyed by the package list: a change rebuilds
#   install   a copy of it; `git clone` of HEAD into /usr/local/src/emotion-edge, then
#             `systemd/install.sh --no-start` there (systemd is not PID 1 in a chroot: it enables, never starts)
#   system    the image's own files (systemd/image/): the settings step, root growth, networkd +
#             wpa_supplicant, mDNS, user `pi` with no password, no SSH host keys; the camera default
#             (/dev/video0) set by the settings step itself; host keys, machine-id, apt lists removed
#   check     `emotion-edge --check-config` as the service user inside the image (emulated)
#   disk      the raw image: MBR, FAT RASPIFIRM + ext4 RASPIROOT (tools/image_layout.py; no loop devices)
#   xz        the .img.xz users flash, and its .sha256
#
# Outputs: DIR/emotion-edge-trixie-arm64.img.xz (+ .sha256, and image.txt: this summary); --skip-xz leaves
# the raw .img there instead (quicker while iterating: `make boot-check IMAGE=build/image/....img`). Needs root
# (mmdebstrap, chroot, mounts). Only HEAD is installed: commit first. Heavy steps run under nice -n 10.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=tools/debian-root.sh
source "$REPO/tools/debian-root.sh"

RELEASE=trixie
OUT=$REPO/build/image
CACHE=${IMAGE_CACHE:-${HOME:-/root}/.cache/emotion-edge/image}
X86_PYTHON=""
REBUILD=0
SKIP_XZ=0
XZ_THREADS=${XZ_THREADS:-2}  # the build machine is shared: more threads would take cores from others
QEMU_CPU_MODEL=cortex-a72    # qemu's default `max` CPU gives wrong int8 results in XNNPACK (pi-check)

# The image's Debian packages. Firmware (raspi-firmware, Wi-Fi) is in non-free-firmware.
COMPONENTS="main non-free-firmware"
IMAGE_PACKAGES=(
    systemd systemd-sysv udev dbus libpam-systemd systemd-resolved systemd-timesyncd
    kmod iproute2 iputils-ping netbase procps less nano sudo passwd ca-certificates
    e2fsprogs dosfstools fdisk cloud-guest-utils
    linux-image-arm64 initramfs-tools zstd raspi-firmware firmware-brcm80211 wireless-regdb wpasupplicant
    openssh-server
    python3 python3-venv git v4l-utils mosquitto-clients
)
# No documentation, manuals or translations on a headless appliance (copyright files stay).
MMDEBSTRAP_OPTIONS=(
    --dpkgopt=path-exclude=/usr/share/doc/* --dpkgopt=path-include=/usr/share/doc/*/copyright
    --dpkgopt=path-exclude=/usr/share/man/* --dpkgopt=path-exclude=/usr/share/info/*
    --dpkgopt=path-exclude=/usr/share/locale/* --dpkgopt=path-include=/usr/share/locale/locale.alias
)
# By label: the card may be mmcblk0 or mmcblk1, or a USB disk. The FAT partition is `nofail`: a Pi left alone
# must boot, settings or not, rather than stop in an emergency shell nobody sees. Written before the kernel
# package is installed (an essential hook), so its initramfs carries fsck for the root.
FSTAB="LABEL=RASPIROOT / ext4 rw,noatime,errors=remount-ro 0 1
LABEL=RASPIFIRM /boot/firmware vfat rw,noatime,umask=0022,nofail 0 2"
MMDEBSTRAP_OPTIONS+=("--essential-hook=printf '%s\n' '$FSTAB' >\"\$1/etc/fstab\"")
IMAGE_NAME=emotion-edge-$RELEASE-arm64
SRC=/usr/local/src/emotion-edge  # the clone install.sh runs from, kept for `git pull` + install.sh

die() {
    echo "error: $*" >&2
    exit 2
}
say() { echo "image: $*" >&2; }

while [ $# -gt 0 ]; do
    case "$1" in
    --out) [ $# -ge 2 ] || die "--out needs a value"; OUT=$2; shift 2 ;;
    --cache) [ $# -ge 2 ] || die "--cache needs a value"; CACHE=$2; shift 2 ;;
    --x86-python) [ $# -ge 2 ] || die "--x86-python needs a value"; X86_PYTHON=$2; shift 2 ;;
    --rebuild) REBUILD=1; shift ;;
    --skip-xz) SKIP_XZ=1; shift ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option '$1' (see --help)" ;;
    esac
done
[ "$(id -u)" = 0 ] || die "run as root (mmdebstrap, chroot and mounts need it)"
X86_PYTHON=${X86_PYTHON:-$REPO/.venv-edge/bin/python}
case $X86_PYTHON in /*) ;; *) X86_PYTHON=$PWD/$X86_PYTHON ;; esac
[ -x "$X86_PYTHON" ] || die "--x86-python '$X86_PYTHON' is not an executable (make .venv-edge/.installed)"
"$X86_PYTHON" -c 'import yaml' 2>/dev/null || die "$X86_PYTHON cannot import yaml (the base install)"
case $OUT in /*) ;; *) OUT=$PWD/$OUT ;; esac
COMMIT=$(git -C "$REPO" rev-parse HEAD)
git -C "$REPO" diff --quiet HEAD -- edge systemd tools pyproject.toml ||
    say "warning: uncommitted changes are not in the image (it gets a clone of HEAD $COMMIT)"

# shellcheck source=tools/steps.sh
source "$REPO/tools/steps.sh"
STARTED=$(date +%s)
print_summary() {
    local status=$?
    close_open_step "$status"
    cleanup_mounts
    {
        echo "image $RELEASE, commit ${COMMIT:0:12}, $(date -u +%Y-%m-%dT%H:%MZ), $(($(date +%s) - STARTED)) s in all:"
        printf '  %s\n' "${SUMMARY[@]}"
        [ "$status" = 0 ] && echo "image: PASS $OUT/$IMAGE_NAME.img$([ "$SKIP_XZ" = 1 ] || echo .xz)" || echo "image: FAIL"
    } | tee "$CACHE/image.txt"
    [ "$status" != 0 ] || cp "$CACHE/image.txt" "$OUT/image.txt"
}
mkdir -p "$CACHE"
trap print_summary EXIT

# in_stage CMD: a shell inside the image being built, as root, with the emulated CPU set.
in_stage() {
    chroot "$R" /usr/bin/env -i HOME=/root USER=root LANG=C.UTF-8 \
        PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin QEMU_CPU=$QEMU_CPU_MODEL \
        ${PIP_CERT:+PIP_CERT=$PIP_CERT} bash -c "$1"
}

# --- tools -------------------------------------------------------------------------------------------------
begin tools "host tools and binfmt"
ensure_apt_tools mmdebstrap:mmdebstrap qemu-aarch64-static:qemu-user-static mkfs.vfat:dosfstools mcopy:mtools \
    mkfs.ext4:e2fsprogs sfdisk:fdisk xz:xz-utils git:git
ensure_binfmt_aarch64
done_step "mmdebstrap $(mmdebstrap --version | cut -d' ' -f2), $(qemu-aarch64-static --version | head -n 1 | cut -d' ' -f1-3)"

# --- root ----------------------------------------------------------------------------------------------------
begin root "Debian $RELEASE arm64 root with the Raspberry Pi firmware and kernel packages"
PACKAGES=$(IFS=,; echo "${IMAGE_PACKAGES[*]}")
KEY=$(debian_root_key "$RELEASE" "$COMPONENTS" "$PACKAGES" "${MMDEBSTRAP_OPTIONS[@]}")
BASE=$CACHE/$RELEASE-$KEY.base
if [ -d "$BASE" ] && [ "$REBUILD" = 0 ]; then
    done_step "cached $BASE ($(du -xsh "$BASE" | cut -f1))"
else
    say "building it from $(host_mirror) (emulated: 20-40 min)"
    debian_root_build "$RELEASE" "$BASE" "$CACHE/$RELEASE-build.log" "$COMPONENTS" "$PACKAGES" \
        "${MMDEBSTRAP_OPTIONS[@]}" || fail_step "mmdebstrap failed: see $CACHE/$RELEASE-build.log"
    done_step "built $BASE ($(du -xsh "$BASE" | cut -f1))"
fi

# --- install -------------------------------------------------------------------------------------------------
begin install "install.sh --no-start in a copy of the root"
STAGE=$CACHE/$RELEASE-stage
R=$STAGE/root
for m in $(mounts_under "$STAGE"); do umount -l "$m" || true; done
[ -z "$(mounts_under "$STAGE")" ] || fail_step "cannot unmount what a previous run left under $STAGE"
rm -rf --one-file-system "$STAGE"
mkdir -p "$R"
nice -n 10 cp -a "$BASE/." "$R/"
pi4_cpuinfo >"$STAGE/cpuinfo-pi4"
mount_for_chroot "$R" "$STAGE/cpuinfo-pi4"
mkdir -p "$CACHE/pip-$RELEASE" "$R/root/.cache/pip"
mount --bind "$CACHE/pip-$RELEASE" "$R/root/.cache/pip" && MOUNTS+=("$R/root/.cache/pip")
rm -f "$R/etc/resolv.conf"
cp -L /etc/resolv.conf "$R/etc/resolv.conf"
git clone --quiet --no-hardlinks "$REPO" "$R$SRC"
git -C "$R$SRC" checkout --quiet "$COMMIT"
git -C "$R$SRC" remote set-url origin https://github.com/emotion-edge/emotion-edge.git
# pip must reach PyPI over TLS; where the root's CA store cannot verify it (a proxy with its own CA), hand
# pip the host's bundle for the build (removed afterwards).
if ! in_stage "python3 -c 'import urllib.request as u; u.urlopen(\"https://pypi.org/simple/pip/\", timeout=60)'" \
    >/dev/null 2>&1; then
    cp /etc/ssl/certs/ca-certificates.crt "$R/etc/ssl/image-build-host-ca.crt"
    PIP_CERT=/etc/ssl/image-build-host-ca.crt
    say "pip cannot verify PyPI with the root's CA store: using the host's bundle for the build"
fi
nice -n 10 chroot "$R" /usr/bin/env -i HOME=/root LANG=C.UTF-8 PATH=/usr/sbin:/usr/bin:/sbin:/bin \
    QEMU_CPU=$QEMU_CPU_MODEL ${PIP_CERT:+PIP_CERT=$PIP_CERT} "$SRC/systemd/install.sh" --no-start \
    >"$STAGE/install.log" 2>&1 || { tail -n 20 "$STAGE/install.log" >&2; fail_step "install.sh failed: $STAGE/install.log"; }
[ -L "$R/etc/systemd/system/multi-user.target.wants/emotion-edge.service" ] ||
    fail_step "install.sh did not enable emotion-edge.service"
skipped=$(sed -n 's/.*skip (systemd is not running): systemctl //p' "$STAGE/install.log" | paste -sd, -)
done_step "$(grep -c . "$STAGE/install.log") lines of install.log; unit enabled; not run (no systemd): ${skipped:-none}"

# --- system --------------------------------------------------------------------------------------------------
begin system "the image's own files"
IMG=$REPO/systemd/image
put() { install -D -m "$1" "$2" "$R$3"; }  # put MODE SOURCE TARGET
put 0644 "$IMG/emotion-edge-settings.service" /etc/systemd/system/emotion-edge-settings.service
put 0644 "$IMG/emotion-edge-growroot.service" /etc/systemd/system/emotion-edge-growroot.service
put 0755 "$IMG/emotion_edge_settings.py" /usr/local/lib/emotion-edge/emotion_edge_settings.py
put 0755 "$IMG/growroot" /usr/local/lib/emotion-edge/growroot
# Every file under systemd/image/rootfs/ goes to the same path in the image (networkd, resolved, sshd, sudo,
# the Wi-Fi and wait-online drop-ins, the console's /etc/issue).
(cd "$IMG/rootfs" && find . -type f -print0) | while IFS= read -r -d '' file; do
    mode=0644
    case $file in ./etc/sudoers.d/*) mode=0440 ;; esac
    put $mode "$IMG/rootfs/$file" "/${file#./}"
done
mkdir -p "$R/etc/systemd/system/sys-subsystem-net-devices-wlan0.device.wants"
# Started when the Pi's Wi-Fi appears (none on a Pi without it, or in qemu), and only with a network written.
ln -sf /usr/lib/systemd/system/wpa_supplicant@.service \
    "$R/etc/systemd/system/sys-subsystem-net-devices-wlan0.device.wants/wpa_supplicant@wlan0.service"
in_stage "systemctl enable --quiet emotion-edge-settings.service emotion-edge-growroot.service \
    systemd-networkd.service systemd-resolved.service systemd-timesyncd.service"
# SSH host keys: none ship (removed below); openssh's own sshd-keygen.service makes them on the first boot.
[ -L "$R/etc/systemd/system/ssh.service.wants/sshd-keygen.service" ] ||
    fail_step "openssh-server's sshd-keygen.service is not enabled: nothing would make the host keys"
# The one login: `pi`, no password (`*` is no valid password, and unlike `!` no lock either, so SSH keys
# work), sudo without one (sudoers.d/010_pi-nopasswd), the journal readable (adm), the camera (video).
in_stage "useradd --create-home --groups sudo,adm,video --shell /bin/bash pi && usermod -p '*' pi"
echo emotion-edge >"$R/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\temotion-edge\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' >"$R/etc/hosts"
printf '%s\n' "$FSTAB" >"$R/etc/fstab"
# raspi-firmware writes config.txt and cmdline.txt from these at every kernel or firmware upgrade (and
# copies the kernel, initrd and device trees to /boot/firmware). Root by label (the card may be mmcblk0
# or mmcblk1, or a USB disk); no cma= (a Pi 4 may not boot with one, and a headless Pi with a USB webcam
# needs no contiguous pool: the device tree's default stays); boot messages on HDMI and the serial port,
# decided here rather than by probing the build host's /dev; no first-boot prompt on the console.
sed -i -e 's|^#\?ROOTPART=.*|ROOTPART="LABEL=RASPIROOT"|' -e 's|^#\?CMA=.*|CMA=0|' \
    -e 's|^#\?CONSOLES=.*|CONSOLES="ttyS1,115200 tty0"|' "$R/etc/default/raspi-firmware"
echo "systemd.firstboot=no" >"$R/etc/default/raspi-extra-cmdline"
in_stage "DEB_MAINT_PARAMS=configure /etc/kernel/postinst.d/z50-raspi-firmware" \
    >"$STAGE/firmware.log" 2>&1 || fail_step "raspi-firmware's kernel hook failed: $STAGE/firmware.log"
grep -q 'root=LABEL=RASPIROOT' "$R/boot/firmware/cmdline.txt" || fail_step "cmdline.txt does not boot by label"
# Apt from Debian's own mirror (not the build host's), with the firmware component.
rm -f "$R"/etc/apt/sources.list "$R"/etc/apt/sources.list.d/*
cat >"$R/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: http://deb.debian.org/debian
Suites: $RELEASE $RELEASE-updates
Components: $COMPONENTS
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: $RELEASE-security
Components: $COMPONENTS
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
# The camera default: a USB webcam. Set by the settings step itself, into config.yaml as it would on a Pi.
printf 'camera=/dev/video0\n' >"$STAGE/image-defaults.txt"
PYTHONPATH=$R$SRC "$X86_PYTHON" "$IMG/emotion_edge_settings.py" --root "$R" --file "$STAGE/image-defaults.txt" \
    >"$STAGE/defaults.log" 2>&1 || { cat "$STAGE/defaults.log" >&2; fail_step "the settings step refused the image's defaults"; }
grep -q '^  uri: "/dev/video0"' "$R/etc/emotion-edge/config.yaml" || fail_step "config.yaml's source.uri is not /dev/video0"
install -m 0644 "$IMG/emotion-edge.txt" "$R/boot/firmware/emotion-edge.txt"
done_step "units enabled: settings, growroot, networkd, resolved, timesyncd; user pi (no password); source /dev/video0"

# --- check ---------------------------------------------------------------------------------------------------
begin check "--check-config as the service user (emulated)"
in_stage "runuser -u emotion-edge -- /opt/emotion-edge/venv/bin/emotion-edge --check-config --config /etc/emotion-edge/config.yaml" \
    >"$STAGE/check.txt" 2>&1 || { cat "$STAGE/check.txt" >&2; fail_step "--check-config failed in the image"; }
# The default detector is auto's pick, YuNet, from the weights the package installed (auto falls back to
# BlazeFace when they are missing, which --check-config alone would pass); they must be the repository's.
grep -q 'detector: yunet (/opt/emotion-edge/venv/.*/edge/models/face_detection_yunet_2023mar.onnx), chosen by auto:' \
    "$STAGE/check.txt" || { tail -n 1 "$STAGE/check.txt" >&2; fail_step "the image's detector is not YuNet from the installed package"; }
YUNET=$(find "$R/opt/emotion-edge/venv" -path '*/edge/models/face_detection_yunet_2023mar.onnx' | head -n 1)
yunet_sha=$(sha256sum "$YUNET" | cut -c1-64)
[ "$yunet_sha" = "$(sha256sum "$R$SRC/edge/models/face_detection_yunet_2023mar.onnx" | cut -c1-64)" ] \
    || fail_step "the installed YuNet weights differ from the repository's"
classifier=$(tail -n 1 "$STAGE/check.txt" | sed -n 's/^config OK: classifier: \([^;]*\);.*/\1/p')
done_step "config OK: classifier $classifier; detector yunet (auto), weights in the venv, sha256 ${yunet_sha:0:12}"

# What is made on first boot, or belongs to the build alone, leaves the image. The machine id: systemd makes
# one at first boot and treats that boot as the first (ConditionFirstBoot=), which is when openssh's
# sshd-keygen.service makes this Pi's own host keys.
cleanup_mounts
rm -f "$R"/etc/ssh/ssh_host_*_key "$R"/etc/ssh/ssh_host_*_key.pub "$R/etc/ssl/image-build-host-ca.crt"
rm -f "$R/etc/machine-id" "$R/var/lib/dbus/machine-id" "$R/var/lib/systemd/random-seed"
echo uninitialized >"$R/etc/machine-id"
ln -sf ../run/systemd/resolve/stub-resolv.conf "$R/etc/resolv.conf"
rm -rf "$R"/var/lib/apt/lists/* "$R"/var/cache/apt/*.bin "$R"/var/cache/apt/archives/*.deb "$R"/root/.cache \
    "$R"/tmp/* "$R"/var/tmp/* "$R"/var/log/*.log "$R"/var/log/apt/*
find "$R/var/log" -type f -name '*.journal' -delete

# --- disk ----------------------------------------------------------------------------------------------------
begin disk "MBR, FAT RASPIFIRM + ext4 RASPIROOT, without loop devices"
mkdir -p "$STAGE/firmware" "$OUT"
mv "$R"/boot/firmware/* "$STAGE/firmware/"  # the FAT partition's; in the root, /boot/firmware is its mount point
LABEL_ID=0x${COMMIT:0:8}
[ "$LABEL_ID" != 0x00000000 ] || LABEL_ID=0x5eed0ee1
nice -n 10 python3 "$REPO/tools/image_layout.py" --firmware "$STAGE/firmware" --root "$R" \
    --out "$STAGE/$IMAGE_NAME.img" --label-id "$LABEL_ID" >"$STAGE/layout.txt" 2>&1 ||
    { cat "$STAGE/layout.txt" >&2; fail_step "assembling the image failed"; }
done_step "$(sed "s|$STAGE/||" "$STAGE/layout.txt")"

# --- xz ------------------------------------------------------------------------------------------------------
if [ "$SKIP_XZ" = 1 ]; then
    # An earlier build's .img.xz is not this build's: left there, `make boot-check` would boot it under this
    # build's commit (the one .commit file names both).
    rm -f "$OUT/$IMAGE_NAME.img.xz" "$OUT/$IMAGE_NAME.img.xz.sha256"
    mv "$STAGE/$IMAGE_NAME.img" "$OUT/$IMAGE_NAME.img"
    echo "$COMMIT" >"$OUT/$IMAGE_NAME.commit"
    exit 0
fi
begin xz "compress with xz -T$XZ_THREADS"
rm -f "$OUT/$IMAGE_NAME.img"  # a raw image an earlier --skip-xz run left: not this build's
nice -n 10 xz -T"$XZ_THREADS" -6 -c "$STAGE/$IMAGE_NAME.img" >"$OUT/$IMAGE_NAME.img.xz.partial"
mv "$OUT/$IMAGE_NAME.img.xz.partial" "$OUT/$IMAGE_NAME.img.xz"
(cd "$OUT" && sha256sum "$IMAGE_NAME.img.xz" >"$IMAGE_NAME.img.xz.sha256")
raw=$(stat -c %s "$STAGE/$IMAGE_NAME.img")
rm -f "$STAGE/$IMAGE_NAME.img"
done_step "$IMAGE_NAME.img.xz: $(($(stat -c %s "$OUT/$IMAGE_NAME.img.xz") >> 20)) MiB ($((raw >> 20)) MiB raw); sha256 $(cut -c1-16 "$OUT/$IMAGE_NAME.img.xz.sha256")..."
echo "$COMMIT" >"$OUT/$IMAGE_NAME.commit"
