"""The daemon's typed configuration: defaults < YAML file < environment < command-line flags.

Every key has a type and a range. Each layer is checked on its own before it is merged, so an error names
the dotted key, what was expected, what was given and where it came from, e.g.
`mqtt.port: must be an integer in 1..65535, got 'abc' (from EMOTION_EDGE_MQTT__PORT)`. Unknown keys are
errors too: a typo in a config file must not silently fall back to a default.

Environment: `EMOTION_EDGE_<SECTION>__<KEY>` (nested sections add another `__`), `EMOTION_EDGE_DEVICE_ID`, and
`EMOTION_EDGE_CONFIG` for the config file path. When `mqtt.password` is unset and systemd's
`$CREDENTIALS_DIRECTORY/mqtt_password` exists (LoadCredential=), the password is read from there.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import reprlib
import socket
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from edge.files import not_utf8_hint, path_problem, read_secret, read_text_limited

DEFAULT_CONFIG_PATH = "/etc/emotion-edge/config.yaml"
ENV_PREFIX = "EMOTION_EDGE_"
ENV_CONFIG_PATH = "EMOTION_EDGE_CONFIG"
CREDENTIAL_NAME = "mqtt_password"
SECRET_KEYS = {"mqtt.password"}
MASK = "********"
OUTPUT_NAMES = ("stdout", "mqtt")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_DEVICE_ID_RE = re.compile(r"^[a-z0-9_-]{1,64}$")


class ConfigError(ValueError):
    """Invalid configuration; the message names the dotted key and the source of the bad value."""


# Every topic is a prefix plus a few levels. MQTT caps a topic at 65,535 bytes (a longer will topic breaks the
# CONNECT packet inside paho's thread, which then dies) and Mosquitto refuses more than 200 levels (the
# client is disconnected, reconnects, and is disconnected again, for good); these caps stay far inside both.
MAX_PREFIX_BYTES = 1024
MAX_PREFIX_LEVELS = 64


def _topic_prefix_problem(value: str) -> str | None:
    """A topic prefix: no MQTT wildcards, no control characters (a NUL makes the broker drop the client), no
    leading `$` (brokers reserve `$SYS/...`: clients may not publish there) and no leading or trailing slash."""
    if re.search(r"[#+]", value) or value.startswith(("/", "$")) or value.endswith("/"):
        return "must be a topic prefix without # or +, not starting with / or $ and not ending with /"
    problem = _text_problem(value)
    if problem:
        return problem
    if len(value.encode("utf-8")) > MAX_PREFIX_BYTES or value.count("/") >= MAX_PREFIX_LEVELS:
        return (
            f"must be a topic prefix of at most {MAX_PREFIX_BYTES} bytes and {MAX_PREFIX_LEVELS} levels "
            f"(brokers refuse longer topics), got {len(value.encode('utf-8'))} bytes, {value.count('/') + 1} levels"
        )
    return None


def _utf8_problem(value: str) -> str | None:
    """MQTT strings go on the wire as UTF-8: a non-UTF-8 byte from the environment or argv (kept by Python as
    a lone surrogate) would fail later, inside paho's thread."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"is not valid UTF-8 text (character {exc.start + 1})"
    return None


def _text_problem(value: str) -> str | None:
    """A name that goes into MQTT topics or ids: UTF-8 and no control characters (a NUL ends the session)."""
    if re.search(r"[\x00-\x1f\x7f]", value):
        return "must not contain control characters"
    return _utf8_problem(value)


def _host_problem(host: str) -> str | None:
    """A name the resolver accepts: paho resolves it in its network thread, which dies (for good) on an IDNA
    error, so a label over 63 characters or a non-ASCII name that cannot be encoded must be refused here."""
    problem = _text_problem(host)
    if problem:
        return problem
    if "://" in host:
        return "is a URL; give the host name alone (e.g. broker.lan), the port in mqtt.port, TLS in mqtt.tls"
    if ":" in host:  # an IPv6 address literal is not a DNS name
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            name, _, port = host.rpartition(":")
            if port.isdigit() and ":" not in name:
                return f"names a port; give the host name alone ({name}) and the port in mqtt.port ({port})"
            return "is neither a host name nor an IP address"
        return None
    try:
        encoded = host.encode("idna")
    except UnicodeError:
        return "is not a valid host name (each dot-separated part 1..63 characters)"
    if len(encoded) > 253:
        return "is not a valid host name (longer than 253 characters)"
    return None


def _spec(
    default, kind, *, lo=None, hi=None, choices=None, nullable=False, pattern=None, factory=None, check=None
):
    """A dataclass field carrying its validation rule (kind: int, float, str, bool, list). `check(value)`
    returns what is wrong with a string value, or None."""
    meta = {"kind": kind, "lo": lo, "hi": hi, "choices": choices, "nullable": nullable, "pattern": pattern}
    meta["check"] = check
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def default_device_id() -> str:
    """The hostname made safe for MQTT topics and Home Assistant ids: lower case, [a-z0-9_-] only."""
    name = re.sub(r"[^a-z0-9_-]+", "-", socket.gethostname().lower()).strip("-")
    return name[:64] or "emotion-edge"


@dataclass
class SourceConfig:
    uri: str = _spec("picamera2", str)
    width: int | None = _spec(640, int, lo=16, hi=8192, nullable=True)
    height: int | None = _spec(480, int, lo=16, hi=8192, nullable=True)
    fps: float | None = _spec(15, float, lo=0.1, hi=240, nullable=True)
    # Files as a camera would give them (--realtime): a video at its own frame rate, a picture a second, so
    # the preview page and the stats can be watched; off, files are read as fast as the pipeline takes them.
    realtime: bool = _spec(False, bool)
    reopen_backoff_max_s: float = _spec(30, float, lo=0.1, hi=3600)
    # Image files (a photo or a folder) over either limit are skipped and counted, never decoded: a small PNG
    # can claim 30000x30000 pixels (1.9 GB to decode). 40 Mpx is a full-size photo of today's phones.
    max_image_mb: float = _spec(50, float, lo=0.001, hi=100_000)
    max_image_mpx: float = _spec(40, float, lo=0.001, hi=10_000)


@dataclass
class ModelConfig:
    path: str | None = _spec(None, str, nullable=True)  # None = the shipped edge/models/default.tflite
    threads: int = _spec(2, int, lo=1, hi=64)


DETECTOR_TYPES = ("auto", "yunet", "blazeface_full", "blazeface", "haar", "lbp")


@dataclass
class DetectorConfig:
    # auto = yunet when its weights (shipped in edge/models/) are there, else blazeface_full, else haar, with a
    # warning. yunet: OpenCV Zoo's YuNet CNN on OpenCV's DNN, the frame scanned at its own resolution, with eye
    # landmarks (faces aligned from the eyes); blazeface_full: MediaPipe's full-range CNN on a 192x192 copy of
    # the frame, with eyes; blazeface: its short-range sibling (faces within ~2 m); haar/lbp: OpenCV cascades
    # (box only).
    type: str = _spec("auto", str, choices=DETECTOR_TYPES)
    # A full scan costs several times what classifying a tracked face does (docs/benchmarks.md): detecting every
    # 3rd frame and following boxes in between keeps a live camera near its frame rate. Photos are always
    # detected (each is independent).
    every_n_frames: int = _spec(3, int, lo=1, hi=1000)
    # Between full scans, look for each tracked face only in a small crop around its last box (a few ms per
    # face with Haar; BlazeFace just scans the frame): boxes follow the face and a face that left is missed.
    # false = reuse the last boxes unchanged (cheapest, but stale).
    roi_redetect: bool = _spec(True, bool)
    # Detections narrower than this (frame pixels) are dropped. A face 2-3 m from a 640x480 camera is ~40 px
    # wide and YuNet finds faces from ~20 px; Haar's smallest window at detect_width 320 is 48 px anyway.
    min_face_px: int = _spec(20, int, lo=8, hi=4096)
    detect_width: int = _spec(320, int, lo=32, hi=8192)
    # 1.2 between cascade scales halves the scan of 1.1 for a ~1-3 px wobble in the box.
    scale_factor: float = _spec(1.2, float, lo=1.01, hi=2.0)
    # OpenCV's own default. It found more faces than 5 in the same scan time without more false faces
    # (benchmarks/scene_accuracy.py; figures in docs/benchmarks.md).
    min_neighbors: int = _spec(3, int, lo=0, hi=100)
    # BlazeFace's score threshold (MediaPipe's own default). On the photo dev set it found clearly more faces
    # than 0.6 without more false faces on photo scenes (benchmarks/photo_accuracy.py; docs/benchmarks.md).
    min_confidence: float = _spec(0.5, float, lo=0.0, hi=1.0)
    blazeface_model: str | None = _spec(None, str, nullable=True)
    # YuNet: a face scoring this in a full scan is accepted at once. Small faces score low at the frame's own
    # size: those between yunet_candidate_threshold and this are looked at again on a crop enlarged around
    # them, and accepted if they score yunet_crop_score_threshold there (also the score a tracked face needs
    # in its crop between full scans). Candidate at or above the score threshold = no second look. Chosen on
    # the room-camera scenes' train half (benchmarks/scene_accuracy.py --room, docs/detectors.md).
    yunet_score_threshold: float = _spec(0.8, float, lo=0.05, hi=1.0)
    yunet_candidate_threshold: float = _spec(0.1, float, lo=0.01, hi=1.0)
    yunet_crop_score_threshold: float = _spec(0.5, float, lo=0.05, hi=1.0)
    # Frames wider than this are shrunk to it before YuNet scans them: its cost grows with the pixel count
    # (a cap for slow Pis and large cameras; a face shrinks with the frame, so small ones are lost first).
    yunet_max_width: int = _spec(640, int, lo=64, hi=8192)
    yunet_model: str | None = _spec(None, str, nullable=True)  # None = the shipped edge/models/ weights


@dataclass
class TrackingConfig:
    iou_threshold: float = _spec(0.3, float, lo=0.0, hi=1.0)
    max_missing_frames: int = _spec(5, int, lo=0, hi=10000)
    smoothing: float = _spec(0.6, float, lo=0.0, hi=0.99)
    hysteresis: float = _spec(0.1, float, lo=0.0, hi=1.0)
    tta_flip: bool = _spec(False, bool)


@dataclass
class PublishConfig:
    outputs: list[str] = _spec(None, list, choices=OUTPUT_NAMES, factory=lambda: ["stdout"])
    policy: str = _spec("change", str, choices=("every", "change"))
    max_rate_hz: float = _spec(0, float, lo=0.0, hi=1000.0)  # 0 = unlimited
    # The retained state (what Home Assistant's entities read) goes out at once when what it says changes (faces
    # in view, their emotions, the camera). Scores alone send it again only once one has moved by score_deadband
    # since the last one sent (at most once a second): Home Assistant's recorder writes a row per change, and a
    # face held still should write none. Scores and confidence are rounded to score_decimals (2 = whole percent).
    score_deadband: float = _spec(0.05, float, lo=0.0, hi=1.0)
    score_decimals: int = _spec(2, int, lo=0, hi=6)
    # Unchanged, the state is sent again this often (0 = never): Home Assistant marks the entities that read it
    # unavailable after three missed heartbeats (expire_after), so a daemon that hangs without dropping its
    # connection does not leave "someone is here" standing. Same-state updates add no recorder rows.
    state_heartbeat_s: float = _spec(60, float, lo=0.0, hi=86400.0)


@dataclass
class TlsConfig:
    enabled: bool = _spec(False, bool)
    ca_certs: str | None = _spec(None, str, nullable=True)
    certfile: str | None = _spec(None, str, nullable=True)
    keyfile: str | None = _spec(None, str, nullable=True)
    insecure: bool = _spec(False, bool)  # skip host name verification (self-signed test brokers only)


def _url_problem(value: str) -> str | None:
    """A link Home Assistant shows on the device page: it accepts http(s) URLs only."""
    if not re.fullmatch(r"https?://[^\s/]+(/\S*)?", value):
        return "must be an http:// or https:// URL"
    return _text_problem(value)


@dataclass
class DiscoveryConfig:
    enabled: bool = _spec(True, bool)
    prefix: str = _spec("homeassistant", str, check=_topic_prefix_problem)
    # The device page's "Visit" link. null = the preview page when it is on and bound to an address other
    # machines can reach (http://<this host name>:<port>/ for 0.0.0.0); none otherwise.
    configuration_url: str | None = _spec(None, str, nullable=True, check=_url_problem)


@dataclass
class MqttConfig:
    host: str = _spec("localhost", str, pattern=r"^\S+$", check=_host_problem)
    port: int = _spec(1883, int, lo=1, hi=65535)
    client_id: str | None = _spec(None, str, nullable=True, check=_text_problem)  # None = emotion-edge-<id>
    username: str | None = _spec(None, str, nullable=True, check=_text_problem)
    password: str | None = _spec(None, str, nullable=True, check=_utf8_problem)
    tls: TlsConfig = field(default_factory=TlsConfig)
    qos: int = _spec(1, int, lo=0, hi=2)
    topic_prefix: str = _spec("emotion", str, check=_topic_prefix_problem)
    keepalive: int = _spec(30, int, lo=5, hi=3600)
    buffer_size: int = _spec(1000, int, lo=0, hi=1_000_000)  # events kept while the broker is away
    discovery: DiscoveryConfig = field(default_factory=DiscoveryConfig)


@dataclass
class StatsConfig:
    interval_s: float = _spec(30, float, lo=0.0, hi=86400.0)  # 0 = no periodic stats


@dataclass
class LogConfig:
    level: str = _spec("INFO", str, choices=LOG_LEVELS)


@dataclass
class DebugConfig:
    snapshot_dir: str | None = _spec(None, str, nullable=True)  # opt-in: nothing is written otherwise
    # Only the newest this many files are kept: an SD card is small and a debug setting gets forgotten.
    snapshot_limit: int = _spec(1000, int, lo=1, hi=1_000_000)


@dataclass
class PreviewConfig:
    """The live preview page (edge/preview/): off by default; frames leave the process only while it is on."""

    enabled: bool = _spec(False, bool)
    # Loopback by default (reach it over an SSH tunnel); any other address needs a token.
    host: str = _spec("127.0.0.1", str, pattern=r"^\S+$")
    port: int = _spec(8080, int, lo=1, hi=65535)
    # Frames drawn and JPEG-encoded per second while someone watches (a Pi core is shared with detection).
    max_fps: float = _spec(5, float, lo=0.1, hi=30)
    max_clients: int = _spec(4, int, lo=1, hi=64)
    # A file holding the token (password); else $CREDENTIALS_DIRECTORY/preview_token (systemd LoadCredential=).
    token_file: str | None = _spec(None, str, nullable=True)


@dataclass
class Config:
    device_id: str = _spec(None, str, pattern=_DEVICE_ID_RE.pattern, factory=default_device_id)
    source: SourceConfig = field(default_factory=SourceConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    publish: PublishConfig = field(default_factory=PublishConfig)
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    stats: StatsConfig = field(default_factory=StatsConfig)
    log: LogConfig = field(default_factory=LogConfig)
    debug: DebugConfig = field(default_factory=DebugConfig)
    preview: PreviewConfig = field(default_factory=PreviewConfig)

    def to_dict(self, mask_secrets: bool = True) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        if mask_secrets:
            for dotted in SECRET_KEYS:
                section, key = dotted.split(".")
                if data[section][key] is not None:
                    data[section][key] = MASK
        return data

    def to_yaml(self, mask_secrets: bool = True) -> str:
        return yaml.safe_dump(self.to_dict(mask_secrets), sort_keys=False, default_flow_style=False)


# --- validation -------------------------------------------------------------------------------------------


_SECTIONS = {
    (Config, "source"): SourceConfig,
    (Config, "model"): ModelConfig,
    (Config, "detector"): DetectorConfig,
    (Config, "tracking"): TrackingConfig,
    (Config, "publish"): PublishConfig,
    (Config, "mqtt"): MqttConfig,
    (Config, "stats"): StatsConfig,
    (Config, "log"): LogConfig,
    (Config, "debug"): DebugConfig,
    (Config, "preview"): PreviewConfig,
    (MqttConfig, "tls"): TlsConfig,
    (MqttConfig, "discovery"): DiscoveryConfig,
}


def _section_class(cls, name: str):
    return _SECTIONS[(cls, name)]


def _fields(cls) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls)}


def _describe(rule: dict) -> str:
    kind = rule["kind"]
    if rule["choices"] and kind is list:
        text = f"a list drawn from {list(rule['choices'])}"
    elif rule["choices"]:
        text = "one of " + ", ".join(rule["choices"])
    elif kind is int:
        text = "an integer" + (f" in {rule['lo']}..{rule['hi']}" if rule["lo"] is not None else "")
    elif kind is float:
        text = "a number" + (f" in {rule['lo']}..{rule['hi']}" if rule["lo"] is not None else "")
    elif kind is bool:
        text = "true or false"
    else:
        text = "a non-empty string" + (" matching " + rule["pattern"] if rule["pattern"] else "")
    return text + (" or null" if rule["nullable"] else "")


class _Broken(Exception):
    """A value breaks its rule: what is wrong when a rule's `check` says so, else nothing (the rule says it).
    `_check_value` words the message: it knows the key and where the value came from."""


def _as_bool(value: Any, rule: dict) -> bool:
    if not isinstance(value, bool):
        raise _Broken
    return value


def _as_number(value: Any, rule: dict) -> int | float:
    kind = rule["kind"]
    # bool is an int subclass in Python; `port: true` is a mistake, not 1.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _Broken
    if kind is int and not (isinstance(value, int) or float(value).is_integer()):
        raise _Broken
    value = int(value) if kind is int else float(value)
    if rule["lo"] is not None and not rule["lo"] <= value <= rule["hi"]:
        raise _Broken
    return value


def _as_list(value: Any, rule: dict) -> list[str]:
    if isinstance(value, str):  # "stdout,mqtt" from a flag or an env var
        value = [part.strip() for part in value.split(",") if part.strip()]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise _Broken
    value = [v.strip().lower() for v in value]
    if any(v not in rule["choices"] for v in value):
        raise _Broken
    return list(dict.fromkeys(value))  # drop repeats, keep order


def _as_string(value: Any, rule: dict) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _Broken
    if rule["choices"]:
        normalised = value.upper() if rule["choices"] == LOG_LEVELS else value.lower()
        if normalised not in rule["choices"]:
            raise _Broken
        return normalised
    # fullmatch: `$` in re.match also matches before a trailing newline, and "ab\n" is not a device id.
    if rule["pattern"] and not re.fullmatch(rule["pattern"], value):
        raise _Broken
    problem = rule["check"](value) if rule.get("check") else None
    if problem:
        raise _Broken(problem)
    return value


_NORMALISERS = {bool: _as_bool, int: _as_number, float: _as_number, list: _as_list, str: _as_string}


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxdict, _REPR.maxstring, _REPR.maxother = 3, 6, 6, 80, 80


def _shown(value: Any) -> str:
    """The value as the message shows it. A list or mapping is shown in part: its full repr could be far
    larger than the file it came from (YAML aliases repeat one value many times)."""
    return _REPR.repr(value) if isinstance(value, (list, dict, tuple, set)) else repr(value)


def _check_value(dotted: str, value: Any, rule: dict, origin: str) -> Any:
    """Return the normalised value or raise ConfigError naming the key, the rule and the value."""

    # An error goes to the journal: never echo a secret (`password: 123456` in YAML is an int, not a string).
    given = f"a {type(value).__name__} (value hidden)" if dotted in SECRET_KEYS else _shown(value)
    if len(given) > 100:  # one readable line, whatever was pasted into the variable
        given = f"{given[:80]}... ({len(given)} characters)"
    if value is None and rule["nullable"]:
        return None
    try:
        if value is None:
            raise _Broken
        value = _NORMALISERS.get(rule["kind"], _as_string)(value, rule)
    except _Broken as broken:
        problem = broken.args[0] if broken.args else f"must be {_describe(rule)}"
        raise ConfigError(f"{dotted}: {problem}, got {given}{origin}") from None
    return value


def validate_layer(data: Any, origin: str = "", cls=Config, prefix: str = "") -> dict[str, Any]:
    """Check one partial layer (file, env or flags) against the schema; return it normalised."""
    where = prefix.rstrip(".") or "config"
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: must be a mapping of keys, got {type(data).__name__}{origin}")
    known = _fields(cls)
    out: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if not isinstance(key, str) or key not in known:
            raise ConfigError(f"{dotted}: unknown key{origin} (known in {where}: {', '.join(known)})")
        f = known[key]
        if "kind" not in f.metadata:  # a nested section; one whose keys are all commented out is empty
            out[key] = validate_layer(
                {} if value is None else value, origin, _section_class(cls, key), f"{dotted}."
            )
        else:
            out[key] = _check_value(dotted, value, f.metadata, origin)
    return out


def _merge(base: dict, layer: dict) -> dict:
    merged = dict(base)
    for key, value in layer.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _build(cls, data: dict):
    kwargs = {}
    for name, f in _fields(cls).items():
        if "kind" not in f.metadata:
            kwargs[name] = _build(_section_class(cls, name), data.get(name, {}))
        elif name in data:
            kwargs[name] = data[name]
    return cls(**kwargs)


# --- sources of values ---------------------------------------------------------------------------------------


def read_yaml_file(path: str | os.PathLike, explicit: bool) -> dict[str, Any]:
    """The YAML layer. A missing default file is fine (defaults apply); a missing explicit file is an error."""
    path = Path(path)
    try:
        text = read_text_limited(path, "config file")
    except FileNotFoundError:
        if explicit:
            raise ConfigError(f"config file {path} does not exist") from None
        return {}
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"config file {path} is not UTF-8 text (byte {exc.start}): {not_utf8_hint(exc)}"
        ) from None
    except ValueError as exc:  # larger than any config (`--config /dev/zero`)
        raise ConfigError(str(exc)) from None
    try:
        data = _load_yaml(text)
    except RecursionError:
        raise ConfigError(f"config file {path} is not a config: nested too deeply") from None
    except YamlTooLarge as exc:
        raise ConfigError(f"config file {path} is not a config: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(
            f"config file {path} is not valid YAML{at}: {getattr(exc, 'problem', exc)}"
        ) from None
    if data is None:
        return {}
    return validate_layer(data, f" (in {path})")


# A config has a few dozen values. YAML aliases (`*name`) repeat a value without copying it, so 370 bytes of
# aliases of aliases stand for a billion values: harmless until something walks or prints them all. The
# document is refused before it is built when its values, every alias counted in full, exceed this.
MAX_YAML_VALUES = 10_000


class YamlTooLarge(yaml.YAMLError):
    """A YAML document whose aliases expand past MAX_YAML_VALUES, or refer to themselves."""


def _expanded_values(node, memo: dict[int, int], open_nodes: set[int]) -> int:
    """How many values `node` stands for once every alias in it is counted in full (linear in the nodes)."""
    key = id(node)
    if key in memo:
        return memo[key]
    if key in open_nodes:
        raise YamlTooLarge("an alias refers to the value it is part of")
    open_nodes.add(key)
    total = 1
    if isinstance(node, yaml.SequenceNode):
        total += sum(_expanded_values(child, memo, open_nodes) for child in node.value)
    elif isinstance(node, yaml.MappingNode):
        total += sum(_expanded_values(k, memo, open_nodes) + _expanded_values(v, memo, open_nodes)
                     for k, v in node.value)  # fmt: skip
    open_nodes.discard(key)
    memo[key] = total
    if total > MAX_YAML_VALUES:
        raise YamlTooLarge(f"it stands for more than {MAX_YAML_VALUES} values once its aliases are expanded")
    return total


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping: YAML keeps the last silently, so a second
    `mqtt:` section further down would quietly undo the first. It also refuses a document whose aliases
    expand past MAX_YAML_VALUES, before building it."""

    def construct_document(self, node):
        _expanded_values(node, {}, set())
        return super().construct_document(node)

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, (str, int, float, bool)) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"the key {key!r} appears twice in one section", key_node.start_mark
                )
            if isinstance(key, (str, int, float, bool)):
                seen.add(key)
        return super().construct_mapping(node, deep)


def _load_yaml(text: str):
    return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass


def _env_target(parts: list[str]) -> tuple[type, dataclasses.Field] | None:
    cls = Config
    for i, part in enumerate(parts):
        f = _fields(cls).get(part)
        if f is None:
            return None
        if "kind" in f.metadata:
            return (cls, f) if i == len(parts) - 1 else None
        cls = _section_class(cls, part)
    return None


def env_layer(environ: dict[str, str]) -> dict[str, Any]:
    """`EMOTION_EDGE_MQTT__PORT=1884` -> {"mqtt": {"port": 1884}}. Values are parsed as YAML scalars for
    numbers, booleans and lists; string keys (passwords!) are taken verbatim so "0123" stays "0123"."""
    layer: dict[str, Any] = {}
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX) or name == ENV_CONFIG_PATH:
            continue
        raw = environ[name]
        if len(raw) > 65536:  # bounds the YAML parse below; no setting is anywhere near this long
            raise ConfigError(f"{name}: value is {len(raw)} characters long, more than any setting takes")
        parts = name[len(ENV_PREFIX) :].lower().split("__")
        target = _env_target(parts)
        origin = f" (from {name})"
        if target is None:
            dotted = ".".join(parts)
            raise ConfigError(f"{dotted}: unknown key{origin}")
        _, f = target
        if f.metadata["kind"] is str:
            value: Any = None if raw == "" and f.metadata["nullable"] else raw
        elif f.metadata["kind"] is list:
            value = raw
        else:
            try:
                value = _load_yaml(raw) if raw.strip() else None
            except (yaml.YAMLError, RecursionError):  # not a scalar: the validator names the variable
                value = raw
        node = layer
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
        layer = validate_layer(layer, origin)  # name the variable in any error
    return layer


def _credential_password(environ: dict[str, str]) -> str | None:
    directory = environ.get("CREDENTIALS_DIRECTORY")
    if not directory:
        return None
    # install.sh always creates the file (LoadCredential= fails the unit when it is missing),
    # so an empty file means "no password", not an empty one.
    text = read_secret(Path(directory) / CREDENTIAL_NAME, "mqtt.password", "credential", ConfigError)
    return (text or "").rstrip("\r\n") or None


def load_config(
    path: str | os.PathLike | None = None,
    environ: dict[str, str] | None = None,
    overrides: dict[str, Any] | None = None,
) -> Config:
    """Build the effective configuration. `overrides` are the command-line flags (highest precedence)."""
    environ = dict(os.environ if environ is None else environ)
    explicit = path is not None or bool(environ.get(ENV_CONFIG_PATH))
    file_path = path if path is not None else environ.get(ENV_CONFIG_PATH) or DEFAULT_CONFIG_PATH
    merged = read_yaml_file(file_path, explicit)
    merged = _merge(merged, env_layer(environ))
    if overrides:
        merged = _merge(merged, validate_layer(overrides, " (from the command line)"))
    config = _build(Config, merged)
    if config.mqtt.password is None:
        config.mqtt.password = _credential_password(environ)
    _check_combinations(config)
    return config


def _check_combinations(config: Config) -> None:
    tls = config.mqtt.tls
    if tls.keyfile and not tls.certfile:
        raise ConfigError(
            "mqtt.tls.keyfile: is set but mqtt.tls.certfile is not (a client key needs its certificate)"
        )
    if config.mqtt.password is not None and config.mqtt.username is None:
        raise ConfigError("mqtt.password: is set but mqtt.username is not")


def check_files(config: Config) -> None:
    """Files named by the config must exist (for --check-config and before connecting). The preview's token
    file is checked by edge.preview.auth.load_token, which edge.daemon.load_components calls."""
    tls = config.mqtt.tls
    if tls.enabled:
        for key in ("ca_certs", "certfile", "keyfile"):
            value = getattr(tls, key)
            problem = path_problem(value) if value is not None else None
            if problem:
                raise ConfigError(f"mqtt.tls.{key}: file {problem}")
        _check_tls_loadable(tls)
    for key in ("blazeface_model", "yunet_model"):
        value = getattr(config.detector, key)
        problem = path_problem(value) if value is not None else None
        if problem:
            raise ConfigError(f"detector.{key}: file {problem}")
    if config.debug.snapshot_dir:
        problem = check_snapshot_dir(config.debug.snapshot_dir)
        if problem:
            raise ConfigError(f"debug.snapshot_dir: {problem}")


def check_snapshot_dir(directory: str) -> str | None:
    """Why `directory` cannot hold snapshots, or None when it can (it may be created on first use)."""
    path = Path(directory)
    existing = path
    problem = path_problem(existing, "folder")
    if problem is not None and problem.endswith("is not a folder"):
        return f"{directory} exists and is not a folder"
    while (
        problem is not None and "does not exist" in problem
    ):  # the nearest ancestor is where it would be made
        existing = existing.parent
        problem = path_problem(existing, "folder")
    if problem is not None:
        return problem
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{existing} is not writable by this user (under systemd use /var/lib/emotion-edge/...)"
    return None


def _check_tls_loadable(tls: TlsConfig) -> None:
    """Load the TLS files the way the MQTT client will, so --check-config catches a file that exists but is
    not a certificate, or a key that does not match its certificate (otherwise only the start fails)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if tls.ca_certs is not None:
        try:
            context.load_verify_locations(cafile=tls.ca_certs)
        except (ssl.SSLError, OSError, ValueError) as exc:
            raise ConfigError(
                f"mqtt.tls.ca_certs: {tls.ca_certs} holds no usable CA certificate ({exc})"
            ) from None
    if tls.certfile is not None:
        try:
            # A passphrase-protected key would make OpenSSL prompt on the terminal: refuse it instead.
            context.load_cert_chain(tls.certfile, tls.keyfile, password=lambda: b"")
        except (ssl.SSLError, OSError, ValueError) as exc:
            key = tls.keyfile or tls.certfile
            raise ConfigError(
                f"mqtt.tls.certfile: cannot load the client certificate {tls.certfile} with the key {key} "
                f"(not PEM, not matching, or protected by a passphrase: {exc})"
            ) from None
