#!/usr/bin/env bash
# Release check on the Pi's own software: install and run the daemon in an emulated Debian arm64 root (the
# base of 64-bit Raspberry Pi OS) exactly as the README's "Deploy on a Raspberry Pi" says, and compare its
# events with the x86 run of the same commit.
#
#   sudo tools/pi-check.sh --release bookworm|trixie [--x86-python PY] [--cache DIR] [--rebuild]
#   make pi-check RELEASE=bookworm          (the same, with PY = the Makefile's base-install venv)
#
# Steps (one summary line each at the end):
#   tools       qemu-user-static and mmdebstrap (apt-get install when missing), binfmt for aarch64 registered
#   root        a Debian arm64 root from the host apt's mirror with the README's apt packages (built in, so a
#               rerun need not emulate their installation again), cached as a folder in --cache (default ~/.cache/emotion-edge/pi-check); rebuilt when the list changes
#   clone       a fresh copy of that root, user `pi` (sudo, as on Raspberry Pi OS), `git clone` of HEAD
#   apt         the README's `apt install` line(s), minus python3-picamera2 (Raspberry Pi's archive only),
#               plus the dependency of it that shapes the install: apt's NumPy
#   install     `sudo systemd/install.sh --no-start` as pi (systemd is not PID 1 in a chroot)
#   wheels      what pip installed, with platform tags; fails on a wheel built here or on TensorFlow
#   check       `emotion-edge --check-config` as the service user; the detector it reports and its weights
#   samples     the daemon as the service user on the shipped sample photos, compared with x86
#   video       the same on a short generated video (lossless FFV1, so both decode the same pixels)
#
# Emulation artefacts handled here, not in the product: qemu-user passes the host's /proc/cpuinfo through
# and LiteRT's CPU detection then crashes inside Interpreter(), so a Pi 4's cpuinfo is bind-mounted over
# it; qemu's default `max` CPU gives wrong int8 results in XNNPACK, so QEMU_CPU=cortex-a72 (kept by sudo).
# Needs root (mmdebstrap, chroot, mounts). Only HEAD is cloned: commit first.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=tools/debian-root.sh
source "$REPO/tools/debian-root.sh"
RELEASE=""
X86_PYTHON=""
CACHE=${PI_CHECK_CACHE:-${HOME:-/root}/.cache/emotion-edge/pi-check}
REBUILD=0
QEMU_CPU_MODEL=cortex-a72

die() {
    echo "error: $*" >&2
    exit 2
}
say() { echo "pi-check: $*" >&2; }

while [ $# -gt 0 ]; do
    case "$1" in
    --release) [ $# -ge 2 ] || die "--release needs a value"; RELEASE=$2; shift 2 ;;
    --x86-python) [ $# -ge 2 ] || die "--x86-python needs a value"; X86_PYTHON=$2; shift 2 ;;
    --cache) [ $# -ge 2 ] || die "--cache needs a value"; CACHE=$2; shift 2 ;;
    --rebuild) REBUILD=1; shift ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option '$1' (see --help)" ;;
    esac
done
case "$RELEASE" in bookworm | trixie) ;; *) die "--release must be bookworm or trixie, got '$RELEASE'" ;; esac
[ "$(id -u)" = 0 ] || die "run as root (mmdebstrap, chroot and mounts need it)"
X86_PYTHON=${X86_PYTHON:-$REPO/.venv-edge/bin/python}
# Absolute (without resolving the venv's symlink to the base interpreter): later steps run from other folders.
case $X86_PYTHON in /*) ;; *) X86_PYTHON=$PWD/$X86_PYTHON ;; esac
[ -x "$X86_PYTHON" ] || die "--x86-python '$X86_PYTHON' is not an executable (make .venv-edge/.installed)"
"$X86_PYTHON" -c 'import cv2, edge' 2>/dev/null || die "$X86_PYTHON cannot import cv2 and edge (the base install)"
COMMIT=$(git -C "$REPO" rev-parse HEAD)
git -C "$REPO" diff --quiet HEAD -- edge systemd pyproject.toml README.md ||
    say "warning: uncommitted changes are not checked (the root gets a clone of HEAD $COMMIT)"

# shellcheck source=tools/steps.sh
source "$REPO/tools/steps.sh"
print_summary() {
    local status=$?
    close_open_step "$status"
    cleanup_mounts
    echo "pi-check $RELEASE, commit ${COMMIT:0:12}, $(date -u +%Y-%m-%dT%H:%MZ):"
    printf '  %s\n' "${SUMMARY[@]}"
    [ "$status" = 0 ] && echo "pi-check $RELEASE: PASS" || echo "pi-check $RELEASE: FAIL"
}
trap print_summary EXIT

# --- tools ---------------------------------------------------------------------------------------------
ensure_tools() {
    ensure_apt_tools mmdebstrap:mmdebstrap qemu-aarch64-static:qemu-user-static
    ensure_binfmt_aarch64
    done_step "$(qemu-aarch64-static --version | head -n 1), mmdebstrap $(mmdebstrap --version | cut -d' ' -f2)"
}

# --- the README's apt packages ---------------------------------------------------------------------------
# Every `sudo apt install -y ...` line of the deploy section, options and comments dropped.
readme_apt_packages() {
    sed -n '/<!-- section:deploy -->/,/<!-- \/section:deploy -->/p' "$REPO/README.md" |
        sed -n 's/^sudo apt install -y \([^#]*\).*/\1/p' | tr ' ' '\n' | grep -v '^-' | grep -v '^$' | sort -u
}

build_root() {
    local key packages
    # systemd (its systemctl enables the unit offline), sudo and useradd (passwd: not in Trixie's required set)
    # as on Raspberry Pi OS.
    packages="ca-certificates,passwd,sudo,systemd,python3,$(IFS=,; echo "${APT_PACKAGES[*]}")"
    # apt lists kept for the apt step.
    key=$(debian_root_key "$RELEASE" main "$packages" --skip=cleanup/apt/lists)
    BASE=$CACHE/$RELEASE-$key.base
    if [ -d "$BASE" ] && [ "$REBUILD" = 0 ]; then
        done_step "cached $BASE ($(du -sh "$BASE" 2>/dev/null | cut -f1))"
        return
    fi
    say "building the $RELEASE arm64 root from $(host_mirror) (emulated: ~15 min)"
    debian_root_build "$RELEASE" "$BASE" "$CACHE/$RELEASE-build.log" main "$packages" --skip=cleanup/apt/lists ||
        fail_step "mmdebstrap failed: see $CACHE/$RELEASE-build.log"
    done_step "built $BASE ($(du -sh "$BASE" 2>/dev/null | cut -f1))"
}

prepare_root() {
    cleanup_mounts
    R=$CACHE/$RELEASE-run
    # Never delete through a mount: a /dev bind left by a killed run would take the host's devices with it.
    local m
    for m in $(mounts_under "$R"); do umount -l "$m" || true; done
    [ -z "$(mounts_under "$R")" ] || fail_step "cannot unmount what a previous run left under $R"
    rm -rf --one-file-system "$R"
    mkdir -p "$R"
    nice -n 10 cp -a "$BASE/." "$R/"
    pi4_cpuinfo >"$CACHE/cpuinfo-pi4"
    mount_for_chroot "$R" "$CACHE/cpuinfo-pi4"
    mkdir -p "$CACHE/pip-$RELEASE" "$R/root/.cache/pip"
    mount --bind "$CACHE/pip-$RELEASE" "$R/root/.cache/pip" && MOUNTS+=("$R/root/.cache/pip")
    cp -L /etc/resolv.conf "$R/etc/resolv.conf"
    echo pi-check >"$R/etc/hostname"
    # sudo resolves the host name, which under chroot is still the host's.
    echo "127.0.1.1 pi-check $(uname -n)" >>"$R/etc/hosts"
    # As on Raspberry Pi OS: a first user `pi` with password-less sudo. sudo keeps the emulation setting and
    # pip's log/CA variables (its env_reset would otherwise drop them for the service user's processes).
    chroot "$R" useradd --create-home --groups sudo,video --shell /bin/bash pi
    printf 'pi ALL=(ALL) NOPASSWD: ALL\nDefaults env_keep += "QEMU_CPU PIP_LOG PIP_CERT"\n' >"$R/etc/sudoers.d/010_pi-check"
    chmod 0440 "$R/etc/sudoers.d/010_pi-check"
    git clone --quiet --no-hardlinks "$REPO" "$R/home/pi/emotion-edge"
    git -C "$R/home/pi/emotion-edge" checkout --quiet "$COMMIT"
    chown -R "$(awk -F: '$1=="pi"{print $3":"$4}' "$R/etc/passwd")" "$R/home/pi"
    mkdir -p "$R/tmp/pi-check" "$CACHE/$RELEASE-out"
    chmod 1777 "$R/tmp/pi-check"
    OUT=$CACHE/$RELEASE-out
    rm -f "$OUT"/*
}

# in_root CMD: a shell in pi's clone with the emulated CPU set. It runs as root: the README's commands are
# `sudo ...`, and a setuid sudo cannot raise a user inside qemu-user (the host's binfmt registration has no
# C flag, so the kernel starts qemu with the caller's credentials); sudo from root works as on a Pi,
# including `sudo -u emotion-edge`.
in_root() {
    chroot "$R" /usr/bin/env -i HOME=/root USER=root LANG=C.UTF-8 \
        PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin QEMU_CPU=$QEMU_CPU_MODEL \
        ${PIP_CERT:+PIP_CERT=$PIP_CERT} PIP_LOG=/tmp/pi-check/pip.log \
        bash -c "cd /home/pi/emotion-edge && $1"
}

run_tools() { begin tools "qemu + mmdebstrap + binfmt"; ensure_tools; }

run_root() {
    begin root "Debian $RELEASE arm64 root"
    mapfile -t APT_PACKAGES < <(readme_apt_packages)
    [ ${#APT_PACKAGES[@]} -gt 0 ] || fail_step "no 'sudo apt install -y' line found in README.md's deploy section"
    SKIPPED=()
    local kept=() p
    for p in "${APT_PACKAGES[@]}"; do
        # picamera2 (and libcamera's Python bindings) are in Raspberry Pi's archive, not Debian's.
        if [ "$p" = python3-picamera2 ]; then SKIPPED+=("$p"); else kept+=("$p"); fi
    done
    APT_PACKAGES=("${kept[@]}")
    build_root
}

run_clone() {
    begin clone "fresh root, user pi, git clone of $COMMIT"
    prepare_root
    done_step "$(git -c safe.directory="*" -C "$R/home/pi/emotion-edge" log -1 --format="%h %s" | cut -c1-60)"
}

# What python3-picamera2 brings along that matters to the install: apt's NumPy (1.24 on Bookworm, 2.2 on
# Trixie), visible in the venv through --system-site-packages; install.sh pins the venv to it on NumPy 1.x.
PICAMERA2_STAND_IN=python3-numpy

run_apt() {
    begin apt "the README's apt packages"
    in_root "sudo apt-get install -y -q --no-install-recommends ${APT_PACKAGES[*]} $PICAMERA2_STAND_IN" \
        >"$OUT/apt.log" 2>&1 || fail_step "apt install failed: $OUT/apt.log"
    local numpy
    numpy=$(in_root "dpkg-query -W -f '\${Version}' python3-numpy")
    done_step "${APT_PACKAGES[*]}; not in Debian: ${SKIPPED[*]:-none} (its python3-numpy $numpy installed instead)"
}

run_install() {
    begin install "sudo systemd/install.sh --no-start"
    # pip must reach PyPI over TLS; where the root's CA store cannot verify it (a proxy with its own CA),
    # hand pip the host's bundle.
    if ! in_root "python3 -c 'import urllib.request as u; u.urlopen(\"https://pypi.org/simple/pip/\", timeout=60)'" \
        >/dev/null 2>&1; then
        cp /etc/ssl/certs/ca-certificates.crt "$R/etc/ssl/pi-check-host-ca.crt"
        PIP_CERT=/etc/ssl/pi-check-host-ca.crt
        say "pip cannot verify PyPI with the root's CA store: using the host's bundle (PIP_CERT)"
    fi
    in_root "sudo systemd/install.sh --no-start" >"$OUT/install.log" 2>&1 ||
        { tail -n 20 "$OUT/install.log" >&2; fail_step "install.sh failed: $OUT/install.log"; }
    cp "$R/tmp/pi-check/pip.log" "$OUT/pip.log"
    [ -L "$R/etc/systemd/system/multi-user.target.wants/emotion-edge.service" ] ||
        fail_step "install.sh did not enable emotion-edge.service"
    local pins skipped
    pins=$(sed -n 's/.*(pip constraints \(.*\))$/\1/p' "$OUT/install.log")
    skipped=$(sed -n 's/.*skip (systemd is not running): systemctl //p' "$OUT/install.log" | paste -sd, -)
    done_step "venv, config and unit installed, unit enabled; pins: ${pins:-none}; not run (no systemd): ${skipped:-none}"
}

run_wheels() {
    begin wheels "what pip chose"
    in_root "/opt/emotion-edge/venv/bin/python -I" >"$OUT/wheels.txt" 2>&1 <<'EOF' || fail_step "cannot list the venv"
import importlib.metadata as md, importlib.util, sys, sysconfig
venv = sysconfig.get_paths()["purelib"]
for dist in sorted(md.distributions(path=[venv]), key=lambda d: d.metadata["Name"].lower()):
    tags = " ".join(dist.read_text("WHEEL").split("Tag: ")[1:]).split() if dist.read_text("WHEEL") else ["?"]
    print(f"{dist.metadata['Name']}=={dist.version} {','.join(tags)}")
print(f"numpy the daemon imports: {__import__('numpy').__version__} from {__import__('numpy').__file__}")
print("tensorflow importable" if importlib.util.find_spec("tensorflow") else "tensorflow: not importable")
EOF
    sed 's/^/    /' "$OUT/wheels.txt" >&2
    # pip logs "Building wheel for NAME" for every sdist it builds; only our own package may be built.
    local built
    built=$(grep -o 'Building wheel for [^ ]*' "$OUT/pip.log" | awk '{print $4}' | sort -u | grep -vx 'emotion-edge' || true)
    [ -z "$built" ] || fail_step "built from source: $(echo "$built" | tr '\n' ' ')"
    ! grep -qiE '^(tensorflow|tf-|tf_)[^ :]*==' "$OUT/wheels.txt" || fail_step "TensorFlow is in the venv"
    grep -qx 'tensorflow: not importable' "$OUT/wheels.txt" || fail_step "TensorFlow is importable in the venv"
    local key numpy
    key=$(grep -iE '^(ai-edge-litert|ai_edge_litert|opencv-python-headless)==' "$OUT/wheels.txt" |
        awk '{split($2, t, ","); print $1 " " t[1]}' | paste -sd';' -)
    numpy=$(sed -n 's/^numpy the daemon imports: \([^ ]*\) from .*\/\(dist-packages\|site-packages\)\/.*/\1 (\2)/p' "$OUT/wheels.txt")
    done_step "$(grep -cE '^[^ ]+==' "$OUT/wheels.txt") wheels, none built here, no TensorFlow; $key; numpy $numpy"
}

EDGE=/opt/emotion-edge/venv/bin/emotion-edge
CONFIG=/etc/emotion-edge/config.yaml

run_check() {
    begin check "--check-config as the service user"
    in_root "sudo -u emotion-edge $EDGE --check-config --config $CONFIG" >"$OUT/check.txt" 2>&1 ||
        { cat "$OUT/check.txt" >&2; fail_step "--check-config failed"; }
    DETECTOR=$(sed -n 's/.*detector: \([A-Za-z0-9_-]*\).*/\1/p' "$OUT/check.txt" | tail -n 1)
    [ -n "$DETECTOR" ] || fail_step "--check-config did not name a detector: $(tail -n 1 "$OUT/check.txt")"
    # The detector it reported, built from the installed config, names its weight file.
    local weights
    weights=$(in_root "sudo -u emotion-edge /opt/emotion-edge/venv/bin/python -I -c '
from edge.config import load_config
from edge.detect import make_detector
d = make_detector(load_config(\"$CONFIG\").detector)
print(getattr(d, \"path\", None) or getattr(d, \"model_path\", \"\"))'" 2>>"$OUT/check.txt" | tail -n 1)
    [ -n "$weights" ] && [ -s "$R$weights" ] || fail_step "detector $DETECTOR: weight file '$weights' missing or empty"
    done_step "detector $DETECTOR, weights $(basename "$weights") ($(stat -c %s "$R$weights") B); $(grep -o 'classifier: [^;]*' "$OUT/check.txt" | tail -n 1)"
}

SCORE_STEP=""
score_step() {
    # One int8 step of the classifier's output: its output tensor's quantization scale.
    PYTHONPATH=$R/home/pi/emotion-edge "$X86_PYTHON" -c '
from edge.interpreter import load_interpreter
from edge.daemon import default_model_path
interp, _ = load_interpreter(default_model_path())
print(interp.get_output_details()[0]["quantization"][0] or 1 / 256)'
}

# run_daemon NAME SOURCE_ARM SOURCE_X86: the daemon on both, events compared.
run_daemon() {
    local name=$1 arm_source=$2 x86_source=$3 flags="--publish stdout --policy every --device-id pi-check"
    in_root "sudo -u emotion-edge $EDGE --config $CONFIG --source $arm_source $flags" \
        >"$OUT/$name-arm64.jsonl" 2>"$OUT/$name-arm64.log" ||
        { tail -n 5 "$OUT/$name-arm64.log" >&2; fail_step "the daemon failed on arm64: $OUT/$name-arm64.log"; }
    (cd "$R/home/pi/emotion-edge" && PYTHONPATH=$PWD "$X86_PYTHON" -m edge.cli --config "$R$CONFIG" \
        --source "$x86_source" $flags) >"$OUT/$name-x86.jsonl" 2>"$OUT/$name-x86.log" ||
        fail_step "the daemon failed on x86: $OUT/$name-x86.log"
    SCORE_STEP=${SCORE_STEP:-$(score_step)}
    python3 "$REPO/tools/pi_compare.py" "$OUT/$name-x86.jsonl" "$OUT/$name-arm64.jsonl" \
        --score-step "$SCORE_STEP" >"$OUT/$name-compare.txt" 2>&1 || { cat "$OUT/$name-compare.txt" >&2; fail_step "$(tail -n 1 "$OUT/$name-compare.txt")"; }
    done_step "$(tail -n 1 "$OUT/$name-compare.txt")"
}

run_samples() {
    begin samples "the daemon on the shipped sample photos"
    local site
    site=$(in_root "/opt/emotion-edge/venv/bin/python -I -c 'import edge, os; print(os.path.dirname(edge.__file__))'")
    run_daemon samples "$site/samples" "$R/home/pi/emotion-edge/edge/samples"
}

run_video() {
    begin video "the daemon on a generated video"
    # 48 frames at 640x480: the samples in turn, panned a few pixels a frame (tracking and ROI re-detection
    # run too). FFV1 is lossless, so the two OpenCV builds decode identical pixels.
    "$X86_PYTHON" - "$R/home/pi/emotion-edge/edge/samples" "$R/tmp/pi-check/clip.avi" <<'EOF' || fail_step "cannot write the video"
import sys, pathlib, cv2, numpy as np
images = [cv2.imread(str(p)) for p in sorted(pathlib.Path(sys.argv[1]).glob("*.jpg"))]
writer = cv2.VideoWriter(sys.argv[2], cv2.VideoWriter_fourcc(*"FFV1"), 10, (640, 480))
assert writer.isOpened(), "no FFV1 encoder"
for image in images:
    image = cv2.resize(image, (640, 480))
    for step in range(24):
        writer.write(np.roll(image, (step * 3, step * 2), axis=(1, 0)))
writer.release()
EOF
    chmod 0644 "$R/tmp/pi-check/clip.avi"
    run_daemon video /tmp/pi-check/clip.avi "$R/tmp/pi-check/clip.avi"
}

run_tools
run_root
run_clone
run_apt
run_install
run_wheels
run_check
run_samples
run_video
