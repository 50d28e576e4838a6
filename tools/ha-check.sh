#!/usr/bin/env bash
# Check the Home Assistant side against a real Home Assistant: its core in a native Debian root (current
# releases need a newer Python than the host's), a real Mosquitto on the host and the daemon on a live
# stream, all on localhost. The checks themselves are tools/ha_check.py; this script makes the root.
#
#   sudo tools/ha-check.sh [--release forky|trixie|bookworm] [--ha-version V] [--cache DIR] [--rebuild]
#                          [--screenshot FILE] [--python PY] [--edge-python PY]
#   make ha-check                      (the same, with the Makefile's venvs)
#
# Steps:
#   tools    mmdebstrap (apt-get install when missing)
#   root     a Debian amd64 root from the host apt's mirror with the release's Python, a compiler (a few Home
#            Assistant requirements have no wheel for the newest Python), libturbojpeg; cached as a folder in
#            --cache (default ~/.cache/emotion-edge/ha-check), rebuilt when the package list changes
#   venv     homeassistant==V and the requirements of every integration it sets up here (its default set,
#            frontend, mqtt, recorder, history, logbook and what onboarding adds), under its own package
#            constraints; cached in the root
#   check    tools/ha_check.py: onboarding and the MQTT config flow through Home Assistant's own APIs, then the
#            device, its entities and their behaviour through its REST and WebSocket APIs (see that file)
#
# Home Assistant runs with --skip-pip, so a missing requirement fails the check instead of being fetched at
# run time: a second run needs no network. Needs root (mmdebstrap, chroot, mounts).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RELEASE=forky
# The newest Home Assistant when this was written; Debian forky's Python 3.14 runs it (2026.3 on need 3.14.2).
HA_VERSION=2026.11.0
CACHE=${HA_CHECK_CACHE:-${HOME:-/root}/.cache/emotion-edge/ha-check}
REBUILD=0
SCREENSHOT=""
PYTHON=$REPO/.venv/bin/python
EDGE_PYTHON=$REPO/.venv-edge/bin/python

die() {
    echo "error: $*" >&2
    exit 2
}
say() { echo "ha-check: $*" >&2; }

while [ $# -gt 0 ]; do
    case "$1" in
    --release) [ $# -ge 2 ] || die "--release needs a value"; RELEASE=$2; shift 2 ;;
    --ha-version) [ $# -ge 2 ] || die "--ha-version needs a value"; HA_VERSION=$2; shift 2 ;;
    --cache) [ $# -ge 2 ] || die "--cache needs a value"; CACHE=$2; shift 2 ;;
    --screenshot) [ $# -ge 2 ] || die "--screenshot needs a value"; SCREENSHOT=$2; shift 2 ;;
    --python) [ $# -ge 2 ] || die "--python needs a value"; PYTHON=$2; shift 2 ;;
    --edge-python) [ $# -ge 2 ] || die "--edge-python needs a value"; EDGE_PYTHON=$2; shift 2 ;;
    --rebuild) REBUILD=1; shift ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option '$1' (see --help)" ;;
    esac
done
case "$RELEASE" in
forky) PY=python3.14 ;;
trixie) PY=python3.13 ;;
bookworm) PY=python3.11 ;;
*) die "--release must be forky, trixie or bookworm, got '$RELEASE'" ;;
esac
[[ $HA_VERSION =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || die "--ha-version must look like 2026.11.0, got '$HA_VERSION'"
[ "$(id -u)" = 0 ] || die "run as root (mmdebstrap, chroot and mounts need it)"
# Absolute, without resolving a venv's symlink to its base interpreter: the checks run from other folders.
case $PYTHON in /*) ;; *) PYTHON=$PWD/$PYTHON ;; esac
case $EDGE_PYTHON in /*) ;; *) EDGE_PYTHON=$PWD/$EDGE_PYTHON ;; esac
for py in "$PYTHON" "$EDGE_PYTHON"; do
    [ -x "$py" ] || die "'$py' is not an executable (make .venv/.installed .venv-edge/.installed)"
done
"$PYTHON" -c 'import selenium, websocket, paho.mqtt' 2>/dev/null || die "$PYTHON lacks the dev extra (selenium)"

STEP_WIDTH=6
# shellcheck source=tools/steps.sh
source "$REPO/tools/steps.sh"
# host_mirror, MOUNTS, cleanup_mounts, mounts_under
# shellcheck source=tools/debian-root.sh
source "$REPO/tools/debian-root.sh"
print_summary() {
    local status=$?
    close_open_step "$status"
    cleanup_mounts
    echo "ha-check $RELEASE, Home Assistant $HA_VERSION, commit $(git -C "$REPO" rev-parse --short=12 HEAD), $(date -u +%Y-%m-%dT%H:%MZ):"
    printf '  %s\n' "${SUMMARY[@]}"
    [ "$status" = 0 ] && echo "ha-check: PASS" || echo "ha-check: FAIL"
}
trap print_summary EXIT

begin tools "mmdebstrap"
if ! command -v mmdebstrap >/dev/null; then
    say "installing mmdebstrap with apt"
    { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q mmdebstrap >/dev/null; } ||
        fail_step "apt-get install mmdebstrap failed"
fi
done_step "mmdebstrap $(mmdebstrap --version | cut -d' ' -f2)"

begin root "Debian $RELEASE amd64 root with $PY"
MIRROR=$(host_mirror)
PACKAGES="ca-certificates,$PY,$PY-venv,$PY-dev,g++,libturbojpeg0"
KEY=$(printf '%s\n' "$RELEASE" "$MIRROR" "$PACKAGES" | sha256sum | cut -c1-12)
ROOT=$CACHE/$RELEASE-$KEY.root
for m in $(mounts_under "$ROOT") $(mounts_under "$ROOT.tmp"); do umount -l "$m" || true; done  # a killed run's
if [ -d "$ROOT" ] && [ "$REBUILD" = 0 ]; then
    done_step "cached $ROOT ($(du -sh "$ROOT" 2>/dev/null | cut -f1))"
else
    mkdir -p "$CACHE"
    rm -rf --one-file-system "$ROOT.tmp"
    # Native amd64, so no emulation: a minute or two. Testing releases carry a Valid-Until date that a
    # snapshot mirror outlives; the packages are still signed.
    nice -n 10 mmdebstrap --quiet --variant=apt --aptopt='Acquire::Check-Valid-Until "false"' \
        --include="$PACKAGES" "$RELEASE" "$ROOT.tmp" "deb $MIRROR $RELEASE main" \
        >"$CACHE/$RELEASE-build.log" 2>&1 ||
        { rm -rf --one-file-system "$ROOT.tmp"; fail_step "mmdebstrap failed: see $CACHE/$RELEASE-build.log"; }
    rm -rf --one-file-system "$ROOT"
    mv "$ROOT.tmp" "$ROOT"
    done_step "built $ROOT ($(du -sh "$ROOT" 2>/dev/null | cut -f1))"
fi

# The root's /proc, /dev and /sys; the host's CA bundle for pip (a proxy's own CA is in it, not in the root's).
mount -t proc proc "$ROOT/proc" && MOUNTS+=("$ROOT/proc")
mount --rbind /dev "$ROOT/dev" && MOUNTS+=("$ROOT/dev")
mount -t sysfs sysfs "$ROOT/sys" && MOUNTS+=("$ROOT/sys")
mkdir -p "$CACHE/pip" "$ROOT/root/.cache/pip"
mount --bind "$CACHE/pip" "$ROOT/root/.cache/pip" && MOUNTS+=("$ROOT/root/.cache/pip")
cp -L /etc/resolv.conf "$ROOT/etc/resolv.conf"
cp -L /etc/ssl/certs/ca-certificates.crt "$ROOT/etc/ssl/ha-check-host-ca.crt"
in_root() {
    chroot "$ROOT" /usr/bin/env -i HOME=/root LANG=C.UTF-8 PATH=/usr/local/bin:/usr/bin:/bin \
        PIP_CERT=/etc/ssl/ha-check-host-ca.crt PIP_DISABLE_PIP_VERSION_CHECK=1 "$@"
}

begin venv "homeassistant==$HA_VERSION and its integrations' requirements"
VENV=/opt/ha-$HA_VERSION
# What onboarding's core-config step sets up for a new user (weather, radio, text-to-speech).
ONBOARDING="met radio_browser google_translate shopping_list tts"
if [ -f "$ROOT$VENV/.complete" ] && [ "$REBUILD" = 0 ]; then
    done_step "cached $VENV ($(du -sh "$ROOT$VENV" 2>/dev/null | cut -f1))"
else
    rm -rf "$ROOT$VENV"
    in_root "$PY" -m venv "$VENV"
    LOG=$CACHE/venv-$HA_VERSION.log
    # Releases before 2025 did not pin josepy, and the cloud client's acme breaks on josepy 2 (released later).
    old_pins=()
    [ "${HA_VERSION%%.*}" -ge 2025 ] || old_pins=("josepy<2")
    in_root nice -n 10 "$VENV/bin/pip" install -q "homeassistant==$HA_VERSION" "${old_pins[@]}" >"$LOG" 2>&1 ||
        fail_step "pip install homeassistant==$HA_VERSION failed (does $PY satisfy its Requires-Python?): $LOG"
    cp "$REPO/tools/ha_requirements.py" "$ROOT/tmp/ha_requirements.py"
    in_root "$VENV/bin/python" /tmp/ha_requirements.py mqtt config recorder history logbook $ONBOARDING \
        >"$ROOT/tmp/ha-requirements.txt" 2>>"$LOG" || fail_step "cannot list the integrations' requirements: $LOG"
    constraints=$VENV/lib/$PY/site-packages/homeassistant/package_constraints.txt
    in_root nice -n 10 "$VENV/bin/pip" install -q -r /tmp/ha-requirements.txt "${old_pins[@]}" -c "$constraints" >>"$LOG" 2>&1 ||
        fail_step "pip install of the integrations' requirements failed: $LOG"
    touch "$ROOT$VENV/.complete"
    done_step "$(in_root "$VENV/bin/pip" list 2>/dev/null | tail -n +3 | wc -l) packages, $(wc -l <"$ROOT/tmp/ha-requirements.txt") of them integrations' requirements"
fi

begin check "tools/ha_check.py"
RESULT=$CACHE/result-$RELEASE-$HA_VERSION.json
args=(--root "$ROOT" --hass "$VENV/bin/hass" --edge-python "$EDGE_PYTHON" --out "$RESULT")
[ -n "$SCREENSHOT" ] && args+=(--screenshot "$SCREENSHOT")
"$PYTHON" "$REPO/tools/ha_check.py" "${args[@]}" || fail_step "see the lines above; logs in $ROOT/tmp/ha-check"
done_step "$("$PYTHON" -c 'import json, sys; print(json.load(open(sys.argv[1]))["summary"])' "$RESULT")"
