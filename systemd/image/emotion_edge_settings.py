"""The SD-card image's settings step: /boot/firmware/emotion-edge.txt -> this Pi's settings, at every boot.

The file sits on the card's FAT partition, so any computer can edit it before the card goes into the Pi. It
is read by emotion-edge-settings.service before the network and the daemon start; what it sets is written
where the system reads it:

    hostname               /etc/hostname, /etc/hosts (127.0.1.1) and the running host name
    ssh_authorized_key     /home/pi/.ssh/authorized_keys (added, never removed; repeatable)
    wifi_country/ssid/password   /etc/wpa_supplicant/wpa_supplicant-wlan0.conf (the passphrase as its PSK)
    mqtt_host/port/username, device_id, camera   /etc/emotion-edge/config.yaml (one line each, in place)
    mqtt_password          /etc/emotion-edge/mqtt_password, the systemd credential the unit loads

Secrets (wifi_password, mqtt_password) are removed from the FAT partition once read: their line becomes a
comment saying where they went. Everything else stays, is applied again at every boot and changes nothing
when it is already in place. A bad value is reported with its line and what is wrong, and not applied;
the rest still is. Problems go to the journal (as warnings) and to NOTICES, which the daemon repeats in its
status, its --check-config and the preview page (edge/notices.py). A bad value is the user's to fix and the
system comes up on the good ones, so it leaves exit status 0 (no failed unit, no `degraded` system); exit
status 1 (an error) only when the step itself could not do its job: the file unreadable, a password left on
the FAT partition because it could not be rewritten.

    emotion_edge_settings.py [--file FILE] [--root DIR]

--root DIR applies to the tree at DIR (an image being built, tests): files only, the running system's host
name is left alone. Runs with the daemon's venv Python: values are checked by edge.config's own rules.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import dataclasses
import datetime
import difflib
import hashlib
import json
import os
import re
import socket
import sys
import tempfile
from pathlib import Path

import yaml

from edge.config import CREDENTIAL_NAME, ConfigError, load_config, validate_layer

SETTINGS_FILE = "/boot/firmware/emotion-edge.txt"
NOTICES = "/run/emotion-edge-settings/notices"  # edge/notices.py reads it
CONFIG = "/etc/emotion-edge/config.yaml"
PASSWORD = "/etc/emotion-edge/" + CREDENTIAL_NAME
WPA_CONF = "/etc/wpa_supplicant/wpa_supplicant-wlan0.conf"
LOGIN_USER = "pi"  # the image's one login, by SSH key only
MAX_BYTES = 64 * 1024  # far more than any settings file; a binary dropped there is refused, not parsed
# The image's own host name: on two Pis it would be one MQTT device.
IMAGE_HOSTNAME = "emotion-edge"


@dataclasses.dataclass(frozen=True)
class Setting:
    secret: bool = False  # removed from the FAT partition once read; its value never printed
    repeatable: bool = False


SETTINGS = {
    "hostname": Setting(),
    "ssh_authorized_key": Setting(repeatable=True),
    "wifi_country": Setting(),
    "wifi_ssid": Setting(),
    "wifi_password": Setting(secret=True),
    "mqtt_host": Setting(),
    "mqtt_port": Setting(),
    "mqtt_username": Setting(),
    "mqtt_password": Setting(secret=True),
    "device_id": Setting(),
    "camera": Setting(),
}


class Bad(ValueError):
    """A value that cannot be applied; the message says what is wrong (never the value of a secret)."""


@dataclasses.dataclass
class Entry:
    line: int  # 1-based, as an editor shows it
    key: str
    value: str


@dataclasses.dataclass
class Report:
    applied: list[str] = dataclasses.field(default_factory=list)
    problems: list[str] = dataclasses.field(default_factory=list)  # bad values: not applied, said, exit 0
    failures: list[str] = dataclasses.field(default_factory=list)  # the step could not do its job: exit 1
    warnings: list[str] = dataclasses.field(default_factory=list)  # applied, but worth saying
    moved: set[str] = dataclasses.field(default_factory=set)  # secrets now in place on the Pi


# --- reading the file ----------------------------------------------------------------------------------------

QUOTES = {'"': '"', "'": "'", "\u201c": "\u201d", "\u201d": "\u201d", "\u2018": "\u2019", "\u2019": "\u2019"}


def decode_lines(data: bytes) -> tuple[list[tuple[bytes, str | None]], str]:
    """The file's lines as (raw bytes with its line ending, text or None when not decodable) and the
    encoding. UTF-8 with or without a BOM (Notepad), UTF-16 with a BOM (Notepad's "Unicode"); any line
    ending (Windows CRLF, old Mac CR, Unix LF)."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        text = data.decode("utf-16")
        return [(line.encode("utf-8"), _clean(line)) for line in text.splitlines(keepends=True)], "utf-16"
    lines = []
    for raw in data.splitlines(keepends=True):
        try:
            lines.append((raw, _clean(raw.decode("utf-8"))))
        except UnicodeDecodeError:
            lines.append((raw, None))
    if lines and lines[0][1] is not None:
        lines[0] = (lines[0][0], lines[0][1].removeprefix("\ufeff"))
    return lines, "utf-8"


def _clean(line: str) -> str:
    # str.strip() also drops the no-break spaces word processors and web pages put in pasted text.
    return line.strip().strip("\ufeff\u200b")


def split_line(text: str) -> tuple[str, str] | None:
    """(normalised name, raw value) of a `name=value` or `name: value` line, None for anything else. The
    first = or : ends the name, so values keep theirs (rtsp://host:554/, passwords)."""
    match = re.match(r"([^=:]*)[=:](.*)", text)
    if not match or not match.group(1).strip():
        return None
    return re.sub(r"[\s-]+", "_", match.group(1).strip().lower()), match.group(2).strip()


def parse(data: bytes, name: str = "emotion-edge.txt") -> tuple[dict[str, list[Entry]], list[str]]:
    """name=value (or name: value) lines; # or ; starts a comment line. Returns the entries by key and the
    problems found (unknown names, lines that are not settings, a setting given twice)."""
    entries: dict[str, list[Entry]] = {}
    problems = []
    lines, _ = decode_lines(data)
    for number, (_, text) in enumerate(lines, 1):
        where = f"{name} line {number}"
        if text is None:
            problems.append(f"{where}: is not UTF-8 text (save the file as UTF-8); line ignored")
            continue
        if not text or text.startswith(("#", ";")):
            continue
        split = split_line(text)
        if split is None:
            shown = text if len(text) <= 40 else text[:37] + "..."
            problems.append(f"{where}: {shown!r} is not a setting (name=value); line ignored")
            continue
        key, value = split
        if key not in SETTINGS:
            hint = difflib.get_close_matches(key, SETTINGS, n=1)
            also = f" (did you mean {hint[0]}?)" if hint else f" (known: {', '.join(SETTINGS)})"
            problems.append(f"{where}: unknown setting {key!r}{also}; line ignored")
            continue
        entries.setdefault(key, []).append(Entry(number, key, _unquote(value)))
    for key, found in list(entries.items()):
        if len(found) > 1 and not SETTINGS[key].repeatable:
            numbers = " and ".join(str(e.line) for e in found)
            problems.append(f"{name} lines {numbers}: {key} is given {len(found)} times; none applied")
            del entries[key]
    return entries, problems


def _unquote(value: str) -> str:
    """One pair of quotes around the whole value goes, straight or curly (editors that 'smarten' them)."""
    if len(value) >= 2 and value[0] in QUOTES and value[-1] == QUOTES[value[0]]:
        return value[1:-1]
    if len(value) >= 2 and value[0] in "\u201c\u201d" and value[-1] in "\u201c\u201d":
        return value[1:-1]
    return value


# --- checking values: edge.config's rules where the daemon has one ---------------------------------------------

SSH_KEY_TYPES = (
    "ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com", "sk-ecdsa-sha2-nistp256@openssh.com",
)  # fmt: skip


def _config_value(dotted: str, value) -> object:
    """The value as the daemon's config would hold it, or Bad with the config's own message."""
    *sections, key = dotted.split(".")
    layer: dict = {key: value}
    for section in reversed(sections):
        layer = {section: layer}
    try:
        checked = validate_layer(layer)
    except ConfigError as exc:
        raise Bad(str(exc).split(": ", 1)[1]) from None
    for part in dotted.split("."):
        checked = checked[part]
    return checked


def check_hostname(value: str) -> str:
    name = value.lower()
    if not re.fullmatch(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", name):
        hint = re.sub(r"[^a-z0-9-]+", "-", name).strip("-")[:63]
        hint = f" (e.g. {hint!r})" if hint else ""
        raise Bad(
            f"must be 1-63 letters, digits or '-', not starting or ending with '-', got {value!r}{hint}"
        )
    return name


def check_ssh_key(value: str) -> str:
    parts = value.split()
    if len(parts) < 2 or parts[0] not in SSH_KEY_TYPES:
        raise Bad(
            "must be one public key line as in ~/.ssh/id_ed25519.pub: a type (ssh-ed25519, ssh-rsa, "
            f"ecdsa-sha2-...), the key and an optional comment; got one starting {value[:20]!r}"
        )
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except (binascii.Error, ValueError):
        raise Bad(f"the {parts[0]} key is not valid base64 (cut short, or a line break pasted in?)") from None
    # The blob starts with its own type, length-prefixed: a key cut short or mixed up fails here.
    name = parts[0].encode()
    if blob[:4] != len(name).to_bytes(4, "big") or blob[4 : 4 + len(name)] != name or len(blob) < 32:
        raise Bad(f"the {parts[0]} key is damaged (its data does not start with its type: cut short?)")
    return " ".join(parts)


def check_country(value: str) -> str:
    code = value.upper()
    if not re.fullmatch(r"[A-Z]{2}", code):
        raise Bad(f"must be a two-letter country code (ISO 3166, e.g. GB, US, DE), got {value!r}")
    return code


def check_ssid(value: str) -> str:
    if not value or len(value.encode()) > 32 or re.search(r"[\x00-\x1f\x7f]", value):
        raise Bad(f"must be a network name of 1-32 bytes without control characters, got {value!r}")
    return value


def check_wifi_password(value: str) -> str:
    if value == "" or re.fullmatch(r"[0-9a-fA-F]{64}", value):
        return value
    plain = not re.search(r"[^\x20-\x7e]", value)
    if not 8 <= len(value) <= 63 or not plain:
        raise Bad(
            f"a WPA passphrase has 8-63 plain ASCII characters (this one has {len(value)} characters"
            f"{'' if plain else ', not all of them plain ASCII'}); empty means an open network"
        )
    return value


def check_port(value: str) -> int:
    return _config_value("mqtt.port", int(value) if value.isdigit() else value)


def check_mqtt_password(value: str) -> str:
    _config_value("mqtt.password", value or None)
    if "\n" in value or "\r" in value:
        raise Bad("must be one line")
    return value


def check_device_id(value: str) -> str:
    try:
        return _config_value("device_id", value.lower())
    except Bad:
        hint = re.sub(r"[^a-z0-9_-]+", "-", value.lower()).strip("-")[:64]
        also = f" (e.g. {hint!r})" if hint else ""
        raise Bad(f"must be 1-64 of a-z, 0-9, _ and -, got {value!r}{also}") from None


def check_camera(value: str) -> str:
    if value.lower().startswith("picamera2"):
        raise Bad(
            "the camera module needs Raspberry Pi OS's libcamera and picamera2, which this Debian image "
            "does not have: use a USB webcam (/dev/video0), or Raspberry Pi OS with systemd/install.sh"
        )
    return _config_value("source.uri", value)


CHECKS = {
    "hostname": check_hostname,
    "ssh_authorized_key": check_ssh_key,
    "wifi_country": check_country,
    "wifi_ssid": check_ssid,
    "wifi_password": check_wifi_password,
    "mqtt_host": lambda v: _config_value("mqtt.host", v),
    "mqtt_port": check_port,
    "mqtt_username": lambda v: _config_value("mqtt.username", v),
    "mqtt_password": check_mqtt_password,
    "device_id": check_device_id,
    "camera": check_camera,
}


def check(entries: dict[str, list[Entry]], name: str, report: Report) -> dict[str, list]:
    """Each value through its check: good ones by key (a list: ssh_authorized_key repeats), bad ones
    reported. An empty value means "not set" for everything but the secrets ("no password")."""
    good: dict[str, list] = {}
    for key, found in entries.items():
        for entry in found:
            if entry.value == "" and not SETTINGS[key].secret:
                continue
            try:
                value = CHECKS[key](entry.value)
                good.setdefault(key, []).append(value)
            except Bad as exc:
                report.problems.append(f"{name} line {entry.line}: {key}: {exc}; not applied")
    return good


# --- writing files -------------------------------------------------------------------------------------------


def write_atomic(path: Path, data: bytes, mode: int, owner: tuple[int, int] | None = None) -> bool:
    """Replace path with data (temp file + fsync + rename: never half a file); False when it already holds
    exactly that. The mode and owner are set before the rename, so a secret is never readable by others."""
    try:
        if path.read_bytes() == data and (path.stat().st_mode & 0o7777) == mode:
            return False
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        if owner is not None and os.geteuid() == 0:
            os.chown(tmp, *owner)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return True


def owner_of(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_uid, st.st_gid


def passwd_entry(root: Path, user: str) -> tuple[int, int, str] | None:
    """(uid, gid, home) of `user` in root's /etc/passwd (not the running system's, under --root)."""
    try:
        for line in (root / "etc/passwd").read_text().splitlines():
            fields = line.split(":")
            if len(fields) >= 7 and fields[0] == user:
                return int(fields[2]), int(fields[3]), fields[5]
    except FileNotFoundError:
        pass
    return None


# --- applying: one function a kind of setting ---------------------------------------------------------------


def apply_hostname(root: Path, name: str, live: bool, report: Report) -> None:
    changed = write_atomic(root / "etc/hostname", f"{name}\n".encode(), 0o644)
    hosts = root / "etc/hosts"
    try:
        lines = hosts.read_text().splitlines()
    except FileNotFoundError:
        lines = ["127.0.0.1\tlocalhost"]
    # 127.0.1.1 is Debian's line for the machine's own name (sudo resolves it on every call).
    kept = [line for line in lines if not re.match(r"127\.0\.1\.1\s", line)]
    kept.insert(min(1, len(kept)), f"127.0.1.1\t{name}")
    changed |= write_atomic(hosts, ("\n".join(kept) + "\n").encode(), 0o644)
    if live and socket.gethostname() != name:
        socket.sethostname(name)
        changed = True
    if changed:
        report.applied.append(f"hostname: {name}")


def apply_ssh_keys(root: Path, keys: list[str], report: Report) -> None:
    user = passwd_entry(root, LOGIN_USER)
    if user is None:
        report.problems.append(
            f"ssh_authorized_key: there is no user {LOGIN_USER!r} on this system; not applied"
        )
        return
    uid, gid, home = user
    ssh_dir = root / home.lstrip("/") / ".ssh"
    path = ssh_dir / "authorized_keys"
    try:
        existing = path.read_text()
    except FileNotFoundError:
        existing = ""
    have = {tuple(line.split()[:2]) for line in existing.splitlines() if len(line.split()) >= 2}
    new = [key for key in dict.fromkeys(keys) if tuple(key.split()[:2]) not in have]
    ssh_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(ssh_dir, 0o700)
    if os.geteuid() == 0:
        os.chown(ssh_dir, uid, gid)
    text = (
        existing + ("" if not existing or existing.endswith("\n") else "\n") + "".join(k + "\n" for k in new)
    )
    if write_atomic(path, text.encode(), 0o600, (uid, gid)) and new:
        report.applied.append(f"ssh_authorized_key: {len(new)} key(s) added for {LOGIN_USER}")


def wpa_psk(ssid: str, passphrase: str) -> str:
    """WPA-PSK's key from the passphrase (IEEE 802.11i: PBKDF2-SHA1, 4096 rounds), as wpa_passphrase
    prints it: the passphrase itself is then stored nowhere."""
    if re.fullmatch(r"[0-9a-fA-F]{64}", passphrase):
        return passphrase.lower()
    return hashlib.pbkdf2_hmac("sha1", passphrase.encode(), ssid.encode(), 4096, 32).hex()


def read_wpa(path: Path) -> dict[str, str]:
    """country, ssid and psk (or key_mgmt=NONE) from a file this step wrote."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    found = dict(re.findall(r"^\s*(country|ssid|psk|key_mgmt)=(\S+)\s*$", text, re.M))
    if "ssid" in found:
        try:
            found["ssid"] = bytes.fromhex(found["ssid"]).decode()
        except ValueError:
            found.pop("ssid")
    return found


def render_wpa(country: str | None, ssid: str | None, psk: str | None) -> bytes:
    lines = ["# Written by emotion-edge-settings from emotion-edge.txt on the FAT partition: edit that file.",
             "ctrl_interface=DIR=/run/wpa_supplicant GROUP=netdev", "update_config=0"]  # fmt: skip
    if country:
        lines.append(f"country={country}")
    if ssid is not None:
        # The name in hex: no quoting rules to get wrong for names with quotes or non-ASCII characters.
        lines += ["network={", f"    ssid={ssid.encode().hex()}", "    scan_ssid=1"]
        lines += [f"    psk={psk}"] if psk else ["    key_mgmt=NONE"]
        lines.append("}")
    return ("\n".join(lines) + "\n").encode()


def apply_wifi(root: Path, good: dict[str, list], name: str, report: Report) -> None:
    path = root / WPA_CONF.lstrip("/")
    current = read_wpa(path)
    country = good.get("wifi_country", [current.get("country")])[0]
    ssid = good.get("wifi_ssid", [None])[0]
    password = good.get("wifi_password", [None])[0]
    if ssid is None and password is not None:
        report.problems.append(f"{name}: wifi_password is given without a valid wifi_ssid; not applied")
        password = None
    if ssid is not None and password is None:
        if current.get("ssid") != ssid:  # a new network and no password: there is nothing to join with
            report.problems.append(
                f"{name}: wifi_ssid {ssid!r} has no wifi_password (write `wifi_password=` with nothing after "
                "it for an open network); Wi-Fi not changed"
            )
            ssid = None
        psk = current.get("psk")
    else:
        psk = wpa_psk(ssid, password) if password else None
    if ssid is None:  # keep the network that is configured (the country may still change)
        ssid = current.get("ssid")
        psk = current.get("psk")
    if country is None and ssid is not None:
        report.warnings.append(f"{name}: wifi_country is not set: the Wi-Fi may stay off until it is")
    if ssid is None and country is None:
        return
    if password is not None and ssid is not None:
        report.moved.add("wifi_password")
    if write_atomic(path, render_wpa(country, ssid, psk), 0o600):
        report.applied.append(f"wifi: {ssid!r}" + (f", country {country}" if country else ""))


# --- config.yaml: one line each, in place ------------------------------------------------------------------------


def render_yaml(value) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(value) + "]"
    if isinstance(value, int):
        return str(value)
    return json.dumps(value, ensure_ascii=False)  # a JSON string is a YAML double-quoted scalar


def set_yaml_value(text: str, dotted: str, value) -> str | None:
    """`text` with `dotted` (`device_id` or `section.key`) set to value, keeping every other line: the
    commented line `  # key: default` that the installed config.yaml has becomes `  key: value`. None for a
    layout it does not know (a section written in flow style: `mqtt: {host: x}`)."""
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    *sections, key = dotted.split(".")
    rendered = render_yaml(value)
    if not sections:
        start, end, indent = 0, len(lines), ""
    else:
        header = next(
            (i for i, line in enumerate(lines) if re.match(rf"{sections[0]}:\s*(#.*)?$", line)), None
        )
        if header is None:
            if any(line.startswith(f"{sections[0]}:") for line in lines):
                return None
            return "".join(lines) + f"{sections[0]}:\n  {key}: {rendered}\n"
        start = header + 1
        end = next((i for i in range(start, len(lines)) if re.match(r"[^\s#]", lines[i])), len(lines))
        indent = "  "
    pattern = re.compile(rf"{indent}(#\s?)?{re.escape(key)}:(\s|$)")
    for i in range(start, end):
        if pattern.match(lines[i]):
            lines[i] = f"{indent}{key}: {rendered}\n"
            return "".join(lines)
    lines.insert(start, f"{indent}{key}: {rendered}\n")
    return "".join(lines)


def lookup(data, dotted: str):
    for part in dotted.split("."):
        if not isinstance(data, dict) or part not in data:
            return None
        data = data[part]
    return data


CONFIG_KEYS = {  # settings-file key -> config.yaml key
    "device_id": "device_id",
    "camera": "source.uri",
    "mqtt_host": "mqtt.host",
    "mqtt_port": "mqtt.port",
    "mqtt_username": "mqtt.username",
}


def apply_config(root: Path, good: dict[str, list], name: str, report: Report) -> None:
    """config.yaml and the MQTT password, together: written only when the daemon would accept the result
    (load_config, with the new password as its credential), so a bad combination never reaches it."""
    path = root / CONFIG.lstrip("/")
    try:
        text = path.read_text()
        current = yaml.safe_load(text) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        report.problems.append(f"{CONFIG}: cannot read it ({exc}); MQTT, device_id and camera not applied")
        return
    wanted = {CONFIG_KEYS[k]: v[0] for k, v in good.items() if k in CONFIG_KEYS}
    if "mqtt.host" in wanted:  # a broker named here means: publish to it
        outputs = lookup(current, "publish.outputs") or ["stdout"]
        if isinstance(outputs, list) and "mqtt" not in outputs:
            wanted["publish.outputs"] = [*outputs, "mqtt"]
    new, missed = text, []
    for dotted, value in wanted.items():
        if lookup(current, dotted) != value:
            edited = set_yaml_value(new, dotted, value)
            new, missed = (new, [*missed, dotted]) if edited is None else (edited, missed)
    password = good.get("mqtt_password", [None])[0]
    password_path = root / PASSWORD.lstrip("/")
    if new == text and password is None and not missed:
        return
    try:
        parsed = yaml.safe_load(new) or {}
    except yaml.YAMLError:
        parsed = {}
    missed += [
        dotted for dotted, value in wanted.items() if lookup(parsed, dotted) != value and dotted not in missed
    ]
    if missed:  # a hand-edited layout the line editor does not know (flow style, other indentation)
        report.problems.append(
            f"{CONFIG}: could not set {', '.join(missed)} in it (edited into a layout this step does not "
            "know): set them there yourself; MQTT, device_id and camera not applied"
        )
        return
    with tempfile.TemporaryDirectory() as scratch:
        trial = Path(scratch) / "config.yaml"
        trial.write_text(new)
        credentials = Path(scratch) / "credentials"
        credentials.mkdir()
        if password is not None:
            (credentials / CREDENTIAL_NAME).write_text(password)
        elif password_path.exists():
            (credentials / CREDENTIAL_NAME).write_bytes(password_path.read_bytes())
        try:
            load_config(trial, environ={"CREDENTIALS_DIRECTORY": str(credentials)})
        except ConfigError as exc:
            report.problems.append(f"{name}: the daemon would refuse these settings: {exc}; not applied")
            return
    owner = owner_of(path)
    if write_atomic(path, new.encode(), path.stat().st_mode & 0o7777, owner):
        report.applied += [f"{dotted}: {render_yaml(v)}" for dotted, v in wanted.items()]
    if password is not None:
        if write_atomic(password_path, password.encode(), 0o600, (0, 0)):
            report.applied.append(
                f"mqtt_password: moved to {PASSWORD}" if password else "mqtt_password: none"
            )
        report.moved.add("mqtt_password")


def warn_shared_name(root: Path, good: dict[str, list], name: str, report: Report) -> None:
    try:
        current = yaml.safe_load((root / CONFIG.lstrip("/")).read_text()) or {}
        hostname = (root / "etc/hostname").read_text().strip()
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return
    outputs = lookup(current, "publish.outputs") or []
    if "mqtt" in outputs and not lookup(current, "device_id") and hostname == IMAGE_HOSTNAME:
        report.warnings.append(
            f"{name}: hostname and device_id are the image's default {IMAGE_HOSTNAME!r}: a second Pi made from "
            "this image would be the same MQTT and Home Assistant device; set hostname= or device_id="
        )


# --- secrets off the FAT partition ------------------------------------------------------------------------------


def strip_secrets(data: bytes, moved: set[str]) -> bytes:
    """The file with every secret's line replaced by a comment (same line ending), the rest byte for byte.
    A secret that was bad, or given twice, goes too: it must not stay readable on the FAT partition."""
    lines, encoding = decode_lines(data)
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    out = []
    for raw, text in lines:
        split = split_line(text) if text and not text.startswith(("#", ";")) else None
        if split is None or split[0] not in SETTINGS or not SETTINGS[split[0]].secret:
            out.append(raw)
            continue
        key = split[0]
        ending = raw[len(raw.rstrip(b"\r\n")) :] or b"\n"
        what = "moved into place" if key in moved else "NOT applied (see the journal), removed anyway"
        out.append(f"#{key}=  ({what} on {when}; write a new one here to change it)".encode() + ending)
    text = b"".join(out)
    if text == b"".join(raw for raw, _ in lines):
        return data
    # A UTF-16 file comes back as UTF-8 (with the BOM Windows editors use to recognise it).
    return b"\xef\xbb\xbf" + text if encoding == "utf-16" else text


def write_notices(root: Path, report: Report) -> None:
    path = root / NOTICES.lstrip("/")
    said = report.failures + report.problems + report.warnings
    if not said:
        path.unlink(missing_ok=True)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o755)  # the daemon (its own user) reads it; the unit's umask is 077
    write_atomic(path, "".join(f"{m}\n" for m in said).encode(), 0o644)


def run(settings_file: Path, root: Path, live: bool) -> Report:
    report = Report()
    name = settings_file.name
    try:
        with open(settings_file, "rb") as handle:
            data = handle.read(MAX_BYTES + 1)
    except FileNotFoundError:
        write_notices(root, report)
        return report
    except OSError as exc:
        report.failures.append(f"{settings_file}: cannot read it: {exc.strerror}")
        write_notices(root, report)
        return report
    if len(data) > MAX_BYTES:
        report.problems.append(f"{settings_file}: larger than {MAX_BYTES // 1024} KiB: not a settings file")
        write_notices(root, report)
        return report
    entries, report.problems = parse(data, name)
    good = check(entries, name, report)
    if "hostname" in good:
        apply_hostname(root, good["hostname"][0], live, report)
    if "ssh_authorized_key" in good:
        apply_ssh_keys(root, good["ssh_authorized_key"], report)
    if any(k in good for k in ("wifi_country", "wifi_ssid", "wifi_password")):
        apply_wifi(root, good, name, report)
    apply_config(root, good, name, report)
    warn_shared_name(root, good, name, report)
    stripped = strip_secrets(data, report.moved)
    if stripped != data:
        try:
            # Same mode the FAT mount gives every file; a FAT rename replaces the old entry in one step.
            write_atomic(settings_file, stripped, settings_file.stat().st_mode & 0o7777)
            report.applied.append(f"{name}: passwords removed from it")
        except OSError as exc:
            report.failures.append(f"{settings_file}: could not remove the passwords from it: {exc.strerror}")
    write_notices(root, report)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--file", default=None, help=f"the settings file (default {SETTINGS_FILE} under --root)"
    )
    parser.add_argument("--root", default="/", help="apply to this tree, files only (image builds, tests)")
    args = parser.parse_args(argv)
    root = Path(args.root)
    live = root.resolve() == Path("/")
    settings_file = Path(args.file) if args.file else root / SETTINGS_FILE.lstrip("/")
    report = run(settings_file, root, live)
    for line in report.applied:
        print(f"applied {line}")
    journal = bool(os.environ.get("JOURNAL_STREAM"))  # then a <N> prefix is the line's priority
    for line in report.failures:
        print(f"<3>{line}" if journal else f"error: {line}", file=sys.stderr)
    for line in report.problems + report.warnings:
        print(f"<4>{line}" if journal else f"warning: {line}", file=sys.stderr)
    if not settings_file.exists():
        print(f"{settings_file}: none (nothing to apply)")
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
