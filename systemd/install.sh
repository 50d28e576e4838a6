#!/usr/bin/env bash
# Install (or remove) emotion-edge as a systemd service on a Raspberry Pi (or any systemd Linux).
#
#   sudo systemd/install.sh                 install from the repository this script lives in, enable, start
#   sudo systemd/install.sh --uninstall     remove the unit, the venv and the user; keep an edited config;
#                                           clear the device's retained MQTT messages (emotion-edge forget)
#   sudo systemd/install.sh --uninstall --purge   also remove /etc/emotion-edge and /var/lib/emotion-edge
#
# Options:
#   --prefix DIR     where the venv goes (default /opt/emotion-edge; the unit's paths follow it)
#   --source DIR     install the package from this source tree (default: the repository around this script)
#   --wheel FILE     install the package from this wheel instead
#   --python PY      the interpreter that creates the venv (default python3; >= 3.10)
#   --pip-args ARGS  extra arguments for `pip install` (e.g. "--no-index --find-links /srv/wheels")
#   --no-enable      do not enable the service at boot (implies --no-start)
#   --no-start       enable but do not (re)start now
#   --skip-venv      do not create the venv or run pip (tests; the unit then points at a venv that may not exist)
#   --root DIR       install into DIR as if it were / (tests, dry runs). Nothing on the running system
#                    is touched: user/group creation and `systemctl daemon-reload/start` are only printed
#                    ("skip (--root): ..."), enabling uses `systemctl --root DIR` (works offline), and
#                    file ownership stays with the caller. A venv made under --root embeds DIR in its
#                    paths: it is for testing, not for copying into an image.
#
# Without systemd as PID 1 (a chroot, a container, an image being built; tested as sd_booted(3) does, by
# /run/systemd/system) the files are installed and the unit is enabled offline as usual, but `systemctl
# daemon-reload/start/restart` are only printed ("skip (systemd is not running): ..."): there is no
# service manager to ask, and the unit starts at the next boot.
#
# Idempotent: a second run with the same inputs changes no file (it compares before writing, and re-runs pip
# only when the package source changed: a fingerprint is kept in PREFIX/.source-fingerprint).
set -euo pipefail
# Whatever the caller's umask (000 in some sudo or CI setups), what this creates (the venv the service runs
# from, /etc/emotion-edge, the unit) must not be writable by other users: the modes below assume 022.
umask 022

SERVICE=emotion-edge
SERVICE_USER=emotion-edge
UNIT_NAME=emotion-edge.service
DEFAULT_PREFIX=/opt/emotion-edge
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

ROOT=""
PREFIX=$DEFAULT_PREFIX
PREFIX_GIVEN=0
SOURCE=""
WHEEL=""
PYTHON=python3
PIP_ARGS=""
ENABLE=1
START=1
SKIP_VENV=0
UNINSTALL=0
PURGE=0
SCRATCH=()  # temporary files and folders, removed however the script ends
trap 'rm -rf "${SCRATCH[@]}"' EXIT

die() {
    echo "error: $*" >&2
    exit 2
}
say() { echo "emotion-edge install: $*"; }

need_value() { [ $# -ge 2 ] && [ -n "$2" ] || die "$1 needs a value"; }

while [ $# -gt 0 ]; do
    case "$1" in
    --root) need_value "$@"; ROOT=$2; shift 2 ;;
    --prefix) need_value "$@"; PREFIX=$2; PREFIX_GIVEN=1; shift 2 ;;
    --source) need_value "$@"; SOURCE=$2; shift 2 ;;
    --wheel) need_value "$@"; WHEEL=$2; shift 2 ;;
    --python) need_value "$@"; PYTHON=$2; shift 2 ;;
    --pip-args) [ $# -ge 2 ] || die "--pip-args needs a value"; PIP_ARGS=$2; shift 2 ;;
    --no-enable) ENABLE=0; START=0; shift ;;
    --no-start) START=0; shift ;;
    --skip-venv) SKIP_VENV=1; shift ;;
    --uninstall) UNINSTALL=1; shift ;;
    --purge) PURGE=1; shift ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option '$1' (see --help)" ;;
    esac
done

case "$PREFIX" in /*) ;; *) die "--prefix must be an absolute path, got '$PREFIX'" ;; esac
PREFIX=${PREFIX%/}
[ -n "$PREFIX" ] || die "--prefix must not be /"
if [ -n "$ROOT" ]; then
    [ -d "$ROOT" ] || die "--root directory '$ROOT' does not exist"
    ROOT=$(cd "$ROOT" && pwd)
    [ "$ROOT" != / ] || ROOT=""
fi
[ "$PURGE" = 0 ] || [ "$UNINSTALL" = 1 ] || die "--purge only goes with --uninstall"
[ -z "$SOURCE" ] || [ -z "$WHEEL" ] || die "give --source or --wheel, not both"
if [ -z "$ROOT" ] && [ "$(id -u)" != 0 ]; then
    die "run as root (sudo), or give --root DIR to install into a directory tree"
fi

# --uninstall without --prefix: the installed unit knows where the venv went, so a custom prefix is found
# (and its venv and service user removed) even when the user no longer remembers it.
if [ "$UNINSTALL" = 1 ] && [ "$PREFIX_GIVEN" = 0 ] && [ -f "$ROOT/etc/systemd/system/$UNIT_NAME" ]; then
    installed=$(sed -n 's|^ExecStart=\(/.*\)/venv/bin/emotion-edge .*|\1|p' "$ROOT/etc/systemd/system/$UNIT_NAME" | head -n 1)
    if [ -n "$installed" ] && [ "$installed" != "$PREFIX" ]; then
        say "the installed unit runs from $installed: uninstalling that prefix"
        PREFIX=$installed
    fi
fi

# Paths as the running service sees them, and where this script writes them.
ETC_DIR=/etc/$SERVICE
UNIT_PATH=/etc/systemd/system/$UNIT_NAME
STATE_DIR=/var/lib/$SERVICE
VENV=$PREFIX/venv
R_PREFIX=$ROOT$PREFIX
R_VENV=$ROOT$VENV
R_ETC=$ROOT$ETC_DIR
R_UNIT=$ROOT$UNIT_PATH
MARKER=$R_PREFIX/.created-user  # present when this installer created the service user

# Run a command that changes the live system; with --root only say what it would have been.
system() {
    if [ -n "$ROOT" ]; then
        say "skip (--root): $(printf '%q ' "$@")"
    else
        "$@"
    fi
}

systemctl_cmd() {
    if ! command -v systemctl >/dev/null 2>&1; then
        say "skip (no systemctl): systemctl $*"
    elif [ -z "$ROOT" ] && [ ! -d /run/systemd/system ]; then
        case "$1" in
        enable | disable) systemctl --quiet "$@" ;;  # works on the unit files alone
        *) say "skip (systemd is not running): systemctl $*" ;;
        esac
    elif [ -n "$ROOT" ]; then
        case "$1" in
        enable | disable) systemctl --root="$ROOT" --quiet "$@" ;;
        *) say "skip (--root): systemctl $*" ;;
        esac
    else
        systemctl "$@"
    fi
}

# Set by the steps below when they changed something (functions never signal it through their exit
# status: `if step; then` would switch off `set -e` inside the whole step).
CHANGED=0

# Write file $2's content to $1 with mode $3, only if it differs (so a re-run keeps even the mtime).
install_if_changed() {
    local target=$1 content=$2 mode=$3
    if [ -f "$target" ] && cmp -s "$content" "$target"; then
        if [ "$(stat -c %a "$target")" != "${mode#0}" ]; then chmod "$mode" "$target"; fi
        return 0
    fi
    mkdir -p "$(dirname "$target")"
    install -m "$mode" "$content" "$target.tmp.$$"
    mv -f "$target.tmp.$$" "$target" # atomic: the service never sees half a file
    CHANGED=1
    say "installed ${target#"$ROOT"}"
}

# The unit with its paths following --prefix.
render_unit() {
    sed "s#$DEFAULT_PREFIX/#$PREFIX/#g" "$SCRIPT_DIR/$UNIT_NAME"
}

source_fingerprint() {
    if [ -n "$WHEEL" ]; then
        sha256sum "$WHEEL" | cut -d' ' -f1
    else
        # Everything that goes into the wheel: the packages and the build metadata.
        (cd "$SOURCE" && find edge train convert pyproject.toml README.md -type f \
            ! -path '*/__pycache__/*' ! -name '*.pyc' -print0 2>/dev/null |
            LC_ALL=C sort -z | xargs -0 sha256sum) | sha256sum | cut -d' ' -f1
    fi
}

create_user() {
    if getent group video >/dev/null 2>&1 || [ -n "$ROOT" ]; then :; else
        system groupadd --system video
    fi
    if [ -z "$ROOT" ] && id "$SERVICE_USER" >/dev/null 2>&1; then
        # Existing user (ours from an earlier run, or made by hand): just make sure it may use the camera.
        if ! id -nG "$SERVICE_USER" | tr ' ' '\n' | grep -qx video; then
            usermod -a -G video "$SERVICE_USER"
            say "added $SERVICE_USER to group video"
        fi
        return
    fi
    system useradd --system --user-group --groups video --home-dir "$STATE_DIR" --no-create-home \
        --shell /usr/sbin/nologin --comment "emotion-edge daemon" "$SERVICE_USER"
    if [ -z "$ROOT" ]; then
        mkdir -p "$R_PREFIX"
        : >"$MARKER"
        say "created system user $SERVICE_USER (groups: $SERVICE_USER, video)"
    fi
}

install_package() {
    local fingerprint stamp=$R_PREFIX/.source-fingerprint
    if [ "$SKIP_VENV" = 1 ]; then
        say "skip (--skip-venv): venv $VENV and pip install"
        return 0
    fi
    command -v "$PYTHON" >/dev/null 2>&1 || die "'$PYTHON' not found (apt install python3 python3-venv)"
    "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' ||
        die "$PYTHON is $("$PYTHON" -V 2>&1); emotion-edge needs Python 3.10 or newer"
    "$PYTHON" -c 'import venv, ensurepip' 2>/dev/null ||
        die "$PYTHON cannot create venvs (sudo apt install python3-venv)"
    fingerprint=$(source_fingerprint)
    if [ -x "$R_VENV/bin/emotion-edge" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$fingerprint" ]; then
        say "package unchanged in $VENV"
        return 0
    fi
    if [ ! -x "$R_VENV/bin/python" ]; then
        # --system-site-packages: apt's python3-picamera2 (and libcamera bindings) must stay importable.
        mkdir -p "$R_PREFIX"
        "$PYTHON" -m venv --system-site-packages "$R_VENV"
        say "created venv $VENV"
    fi
    # Bookworm's apt NumPy 1.x is visible through --system-site-packages, and Picamera2's compiled helpers
    # (simplejpeg) are built against it. OpenCV >= 4.11 wheels require NumPy 2 and pip would shadow apt's
    # NumPy with it, breaking picamera2; so keep NumPy 1.x and an OpenCV that supports it (4.10).
    local constraints=""
    if "$R_VENV/bin/python" -I -c 'import sys, numpy; sys.exit(int(numpy.__version__.split(".")[0]) >= 2)' 2>/dev/null; then
        constraints=$(mktemp)
        SCRATCH+=("$constraints")
        printf 'numpy<2\nopencv-python-headless<4.11\n' >"$constraints"
        say "system NumPy is 1.x: keeping it (pip constraints numpy<2, opencv-python-headless<4.11)"
    fi
    # pip builds a source tree in place: under sudo that leaves root-owned build/ and *.egg-info in the user's
    # clone (a later `make run` as the user then fails). Remove what this build added, nothing that was there.
    local leftovers=()
    if [ -z "$WHEEL" ]; then
        for path in "$SOURCE/build" "$SOURCE/emotion_edge.egg-info"; do
            [ -e "$path" ] || leftovers+=("$path")
        done
    fi
    # A source tree is built into a wheel once, and both installs below take that wheel: each pip install of
    # a tree would build it again (slow on a Pi).
    local package=$WHEEL wheel_dir=""
    if [ -z "$package" ]; then
        wheel_dir=$(mktemp -d)
        SCRATCH+=("$wheel_dir")
        # shellcheck disable=SC2086  # PIP_ARGS is deliberately split into words
        "$R_VENV/bin/python" -m pip wheel --quiet --disable-pip-version-check --no-deps $PIP_ARGS \
            -w "$wheel_dir" "$SOURCE" || { rm -rf "${leftovers[@]}"; die "could not build a wheel of $SOURCE"; }
        package=$(ls "$wheel_dir"/emotion_edge-*.whl)
    fi
    # The base package only: no [train] extra, so no TensorFlow on the device.
    # shellcheck disable=SC2086
    "$R_VENV/bin/python" -m pip install --quiet --disable-pip-version-check ${constraints:+-c "$constraints"} \
        $PIP_ARGS "$package"
    # The fingerprint changed, but the version may not have (every build is 0.1.0 until a release): pip calls
    # a rebuilt wheel of an installed version "already satisfied" and keeps the old code. So reinstall the
    # package itself (not its dependencies), and only after the install above succeeded: a failed upgrade
    # (no network for a new dependency) leaves the previous version in place and working.
    # shellcheck disable=SC2086
    "$R_VENV/bin/python" -m pip install --quiet --disable-pip-version-check --force-reinstall --no-deps \
        $PIP_ARGS "$package"
    [ ${#leftovers[@]} -eq 0 ] || rm -rf "${leftovers[@]}"
    # The default model is package data; without it the service cannot start with model.path: null.
    # -I: import the installed package, never a source tree in the current directory.
    "$R_VENV/bin/python" -I - <<'EOF' || die "the installed package lacks edge/models/default.tflite + default.json"
import importlib.util, pathlib, sys
spec = importlib.util.find_spec("edge")
models = pathlib.Path(spec.origin).parent / "models"
sys.exit(0 if (models / "default.tflite").is_file() and (models / "default.json").is_file() else 1)
EOF
    if "$R_VENV/bin/python" -I -c 'import importlib.util, sys; sys.exit(importlib.util.find_spec("tensorflow") is None)'; then
        say "warning: tensorflow is importable in $VENV (from the system site-packages?); the daemon does not need it"
    fi
    echo "$fingerprint" >"$stamp.tmp"
    mv -f "$stamp.tmp" "$stamp"
    CHANGED=1
    say "installed the emotion-edge package into $VENV"
}

install_config() {
    local tmp
    mkdir -p "$R_ETC"
    chmod 0755 "$R_ETC"
    if [ -e "$R_ETC/config.yaml" ]; then
        say "keeping existing $ETC_DIR/config.yaml"
    else
        install -m 0640 "$SCRIPT_DIR/config.example.yaml" "$R_ETC/config.yaml.tmp.$$"
        mv "$R_ETC/config.yaml.tmp.$$" "$R_ETC/config.yaml"
        say "wrote $ETC_DIR/config.yaml (edit it, then: systemctl restart $SERVICE)"
    fi
    # The daemon runs as $SERVICE_USER and must read its config; others need not (it may name a user).
    [ -n "$ROOT" ] || chgrp "$SERVICE_USER" "$R_ETC/config.yaml"
    # LoadCredential= fails the unit when the file is missing, so it always exists; empty = no password.
    # Only root (systemd) reads it; the service gets a private copy in $CREDENTIALS_DIRECTORY.
    create_empty_secret mqtt_password "the MQTT password"
    create_empty_secret preview_token "a token for the preview page on a non-loopback preview.host"
}

create_empty_secret() {
    local tmp
    if [ ! -e "$R_ETC/$1" ]; then
        tmp=$(mktemp "$R_ETC/.$1.XXXXXX")
        chmod 0600 "$tmp"
        mv "$tmp" "$R_ETC/$1"
        say "created empty $ETC_DIR/$1 (put $2 there, mode 0600)"
    fi
}

install_unit() {
    local tmp
    tmp=$(mktemp)
    render_unit >"$tmp"
    install_if_changed "$R_UNIT" "$tmp" 0644
    rm -f "$tmp"
}

do_install() {
    if [ -n "$WHEEL" ]; then
        [ -f "$WHEEL" ] || die "--wheel file '$WHEEL' does not exist"
        WHEEL=$(cd "$(dirname "$WHEEL")" && pwd)/$(basename "$WHEEL")
    else
        SOURCE=${SOURCE:-$(dirname "$SCRIPT_DIR")}
        [ -f "$SOURCE/pyproject.toml" ] && [ -d "$SOURCE/edge" ] ||
            die "--source '$SOURCE' is not an emotion-edge source tree (no pyproject.toml / edge/)"
        SOURCE=$(cd "$SOURCE" && pwd)
        # Checked before anything is created, so a tree without the shipped model leaves no half install.
        if [ "$SKIP_VENV" = 0 ]; then
            [ -f "$SOURCE/edge/models/default.tflite" ] && [ -f "$SOURCE/edge/models/default.json" ] ||
                die "$SOURCE/edge/models/default.tflite (+ .json) is missing: the service's default model"
        fi
    fi
    create_user
    install_package
    install_config
    install_unit
    # systemd creates it on first start (StateDirectory=), but `--check-config` run by hand before that (a
    # debug.snapshot_dir under it) needs it now; systemd adopts an existing one.
    system install -d -o "$SERVICE_USER" -g "$SERVICE_USER" -m 0750 "$STATE_DIR"
    if [ "$CHANGED" = 1 ]; then systemctl_cmd daemon-reload; fi
    if [ "$ENABLE" = 1 ]; then
        systemctl_cmd enable "$UNIT_NAME"
    fi
    if [ "$START" = 1 ]; then
        # Restart only when something new was installed; otherwise just make sure it runs.
        if [ "$CHANGED" = 1 ]; then systemctl_cmd restart "$UNIT_NAME"; else systemctl_cmd start "$UNIT_NAME"; fi
    fi
    say "done. Logs: journalctl -u $SERVICE -f   Status: systemctl status $SERVICE"
}

# trim TEXT: TEXT without leading and trailing whitespace
trim() {
    local s=$1
    s=${s#"${s%%[![:space:]]*}"}
    printf '%s' "${s%"${s##*[![:space:]]}"}"
}

# The daemon leaves its Home Assistant discovery configs, state and status retained on the MQTT broker;
# without this Home Assistant would show the removed device for good. Runs with the config, env file and
# password the service used; a broker that cannot be reached only earns a warning (the uninstall goes on).
forget_on_broker() {
    [ -x "$R_VENV/bin/emotion-edge" ] && [ -f "$R_ETC/config.yaml" ] || return 0
    local settings=() line key value
    if [ -f "$R_ETC/env" ]; then  # the unit's EnvironmentFile: only the daemon's own variables
        while IFS= read -r line || [ -n "$line" ]; do
            # Read as systemd reads it (systemd.exec, EnvironmentFile=) for one-line values: whitespace around
            # the key and the value dropped, then one pair of quotes around the whole value.
            case "$line" in *=*) ;; *) continue ;; esac
            key=$(trim "${line%%=*}") value=$(trim "${line#*=}")
            case "$key" in EMOTION_EDGE_*) ;; *) continue ;; esac
            case "$value" in \"*\" | \'*\') value=${value:1:${#value}-2} ;; esac
            settings+=("$key=$value")
        done <"$R_ETC/env"
    fi
    if ! env ${settings[@]+"${settings[@]}"} CREDENTIALS_DIRECTORY="$R_ETC" \
        "$R_VENV/bin/emotion-edge" forget --config "$R_ETC/config.yaml" --timeout 10 >/dev/null; then
        say "warning: the MQTT broker still holds this device's retained messages; Home Assistant keeps showing"
        say "  it until you delete the device there (Settings > Devices & services > MQTT)"
    fi
}

do_uninstall() {
    local created_user=0
    [ -f "$MARKER" ] && created_user=1
    if [ -f "$R_UNIT" ]; then
        [ -n "$ROOT" ] || systemctl stop "$UNIT_NAME" 2>/dev/null || true
        systemctl_cmd disable "$UNIT_NAME"
        rm -f "$R_UNIT"
        systemctl_cmd daemon-reload
        say "removed $UNIT_PATH"
    fi
    forget_on_broker  # after the stop (a running daemon would publish it all again), before the venv goes
    if [ -d "$R_PREFIX" ]; then
        rm -rf "$R_VENV" "$R_PREFIX/.source-fingerprint" "$MARKER"
        rmdir "$R_PREFIX" 2>/dev/null || say "kept $PREFIX (holds files this installer did not put there)"
        say "removed $VENV"
    fi
    if [ -d "$R_ETC" ]; then
        if [ "$PURGE" = 1 ]; then
            rm -rf "$R_ETC"
            say "purged $ETC_DIR"
        else
            # Remove only what is still exactly as installed; keep anything the user edited.
            if [ -f "$R_ETC/config.yaml" ] && cmp -s "$SCRIPT_DIR/config.example.yaml" "$R_ETC/config.yaml"; then
                rm -f "$R_ETC/config.yaml"
            fi
            for secret in mqtt_password preview_token; do
                if [ -f "$R_ETC/$secret" ] && [ ! -s "$R_ETC/$secret" ]; then
                    rm -f "$R_ETC/$secret"
                fi
            done
            rmdir "$R_ETC" 2>/dev/null || say "kept $ETC_DIR (edited config, password or token; --purge removes it)"
        fi
    fi
    if [ "$PURGE" = 1 ] && [ -d "$ROOT$STATE_DIR" ]; then
        rm -rf "${ROOT:?}$STATE_DIR"
        say "purged $STATE_DIR"
    fi
    if [ -n "$ROOT" ]; then
        system userdel "$SERVICE_USER"
    elif [ "$created_user" = 1 ] && id "$SERVICE_USER" >/dev/null 2>&1; then
        userdel "$SERVICE_USER"
        say "removed user $SERVICE_USER"
    fi
    say "uninstalled"
}

if [ "$UNINSTALL" = 1 ]; then do_uninstall; else do_install; fi
