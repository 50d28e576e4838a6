"""Seeded fuzzing of what a user or an attacker hands the daemon: config files (also YAML anchors and aliases,
in files and variables), environment variables, model files, model contracts (sidecar JSON), image files in
a folder source, video files, and HTTP requests to the preview page before its token is checked.

    python -m tests.support.fuzzinputs --seed 21 --seconds 20 [--json OUT] [--only N]

Each case is built from `random.Random(f"{seed}-{index}")`, so case N is the same on every machine and
`--only N` replays it; the run stops starting cases after `--seconds`. Cases run in this one process through
`edge.cli.main` (hundreds of cases in seconds instead of one interpreter start each), with stdout, stderr
and the environment swapped per case. Every case must end with exit 0 or 2, exactly one `error: ` line when
it is 2 (a folder or video source may also end with exit 1 and one `source stopped:` line: a file damaged
mid-way), no traceback (escaped from main, or logged by a thread) and no hang; the peak RSS of the whole run
must stay bounded (a hostile image decoded would add gigabytes). Preview cases go to one preview server
with a token in this process: each request must be answered or closed in time, never with a 200 before the
token, by a bounded number of threads, and without an exception other than a dropped connection in the
handler. The summary is one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import os
import random
import resource
import signal
import struct
import sys
import tempfile
import time
import traceback
from pathlib import Path

import cv2
import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[2]
MODEL = REPO / "edge" / "models" / "default.tflite"
CASE_TIMEOUT_S = 30
KINDS = ("config", "env", "model", "sidecar", "images", "aliases", "video", "preview")
PREVIEW_TOKEN = "fuzz-token-0123456789"


def peak_rss_mb() -> float:
    """This process's peak RSS. VmHWM, not ru_maxrss: Linux carries ru_maxrss across exec, so a child of a
    large process (pytest with TensorFlow loaded) would start with its parent's peak."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --- random values ----------------------------------------------------------------------------------------


def random_text(rng: random.Random, surrogates: bool = False) -> str:
    pools = [
        "abcdefghijklmnopqrstuvwxyz0123456789",
        "-_./:@ #+$%&*!?",
        "\x00\x01\n\r\t\x1b\x7f",
        "éü中文🙂\u202e\ufeff",
    ]
    if surrogates:
        pools.append("\udcff\udc80")
    pool = "".join(rng.sample(pools, rng.randint(1, len(pools))))
    length = rng.choice([0, 1, 3, 10, 63, 64, 70, 300, 5000])
    return "".join(rng.choice(pool) for _ in range(length))


def random_value(rng: random.Random, depth: int = 0):
    choice = rng.randrange(16)
    if choice == 0:
        return rng.randint(-5, 70000)
    if choice == 1:
        return rng.choice([10**30, -(10**30), 2**63])
    if choice == 2:
        return rng.uniform(-1e6, 1e6)
    if choice == 3:
        return rng.choice([float("nan"), float("inf"), -float("inf"), 1e308, 5e-324])
    if choice == 4:
        return rng.choice([True, False, None])
    if choice in (5, 6, 7):
        return random_text(rng)
    if choice == 8 and depth < 3:
        return [random_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    if choice == 9 and depth < 3:
        return {random_text(rng)[:10] or "k": random_value(rng, depth + 1) for _ in range(rng.randint(0, 3))}
    if choice == 10:
        return rng.choice(["stdout", "mqtt", "stdout,mqtt", "every", "change", "haar", "lbp", "DEBUG"])
    if choice == 11:
        return rng.choice(["0x1F", "1_000", "1e3", ".inf", "~", "yes", "no", "on", "0o17", "2026-11-29"])
    nested: object = 1
    for _ in range(rng.choice([5, 20, 60])):
        nested = [nested]
    return nested


def deep_text(rng: random.Random) -> str:
    """Nesting far past Python's recursion limit, which only text can carry to the parsers."""
    depth = rng.choice([2000, 100_000])
    return rng.choice(["[" * depth, "{a: " * depth, "- " * depth, '{"a": ' * depth])


def mutate_bytes(rng: random.Random, data: bytes) -> bytes:
    data = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        op = rng.randrange(5)
        if op == 0 and data:  # flip bytes
            for _ in range(rng.randint(1, 16)):
                data[rng.randrange(len(data))] = rng.randrange(256)
        elif op == 1 and data:  # truncate
            del data[rng.randrange(len(data)) :]
        elif op == 2 and data:  # zero a run
            start = rng.randrange(len(data))
            data[start : start + rng.randint(1, 4096)] = bytes(min(len(data) - start, rng.randint(1, 4096)))
        elif op == 3:  # insert junk
            at = rng.randrange(len(data) + 1)
            data[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
        elif op == 4 and data:  # duplicate a chunk
            start = rng.randrange(len(data))
            data[start:start] = data[start : start + rng.randint(1, 256)]
    return bytes(data)


def _setting_names(cls=None, prefix: str = "") -> list[str]:
    from edge.config import Config, _section_class

    cls = cls or Config
    names = []
    for f in dataclasses.fields(cls):
        if "kind" in f.metadata:
            names.append(prefix + f.name)
        else:
            names += _setting_names(_section_class(cls, f.name), f"{prefix}{f.name}.")
    return names


# --- the cases --------------------------------------------------------------------------------------------


def config_case(rng: random.Random, work: Path) -> tuple[list[str], dict]:
    from edge.config import Config

    data = Config().to_dict(mask_secrets=False)
    out: dict = {}
    for dotted in rng.sample(_setting_names(), rng.randint(1, 8)):
        *sections, key = dotted.split(".")
        node, src = out, data
        for section in sections:
            node, src = node.setdefault(section, {}), src[section]
        node[key] = random_value(rng) if rng.random() < 0.5 else src[key]
    if rng.random() < 0.1:
        out[random_text(rng)[:20] or "x"] = random_value(rng)
    text = yaml.safe_dump(out, allow_unicode=rng.random() < 0.5)
    raw = text.encode("utf-8", "surrogatepass")
    if rng.random() < 0.4:
        raw = mutate_bytes(rng, raw)
    if rng.random() < 0.1:
        raw = raw + raw  # every key twice
    if rng.random() < 0.05:
        raw = b"\xef\xbb\xbf" + raw
    if rng.random() < 0.05:
        raw = rng.choice([b"", b"mqtt:\n  host: ", b"source:\n  uri: "]) + deep_text(rng).encode()
    path = work / "config.yaml"
    path.write_bytes(raw)
    return ["--config", str(path), "--check-config"], {}


def env_case(rng: random.Random, work: Path) -> tuple[list[str], dict]:
    env = {}
    for dotted in rng.sample(_setting_names(), rng.randint(1, 4)):
        value = random_value(rng)
        text = value if isinstance(value, str) else json.dumps(value) if rng.random() < 0.5 else str(value)
        if rng.random() < 0.2:
            text = random_text(rng, surrogates=True)
        elif rng.random() < 0.05:
            text = deep_text(rng)
        # No NUL: an environment cannot carry one.
        env["EMOTION_EDGE_" + dotted.upper().replace(".", "__")] = text[:100_000].replace("\x00", "")
    if rng.random() < 0.1:
        name = (random_text(rng)[:12] or "X").upper().replace("\x00", "").replace("=", "")
        env["EMOTION_EDGE_" + name] = "1"
    config = work / "empty.yaml"
    config.write_text("stats:\n  interval_s: 0\n")
    return ["--config", str(config), "--check-config"], env


def model_case(rng: random.Random, work: Path) -> tuple[list[str], dict]:
    path = work / "model.tflite"
    data = MODEL.read_bytes()
    if rng.random() < 0.1:
        data = b"\x00\x00\x00\x00TFL3" + bytes(rng.randrange(256) for _ in range(rng.randint(0, 2000)))
    else:
        data = mutate_bytes(rng, data[: rng.choice([len(data), 64, 4096])])
    path.write_bytes(data)
    contract = json.loads(MODEL.with_suffix(".json").read_text())
    if rng.random() < 0.5:  # without its checksum the damaged model reaches the interpreter itself
        contract.pop("sha256", None)
    (work / "model.json").write_text(json.dumps(contract))
    config = work / "empty.yaml"
    config.write_text("stats:\n  interval_s: 0\n")
    return ["--config", str(config), "--check-config", "--model", str(path)], {}


def sidecar_case(rng: random.Random, work: Path) -> tuple[list[str], dict]:
    contract = json.loads(MODEL.with_suffix(".json").read_text())
    for _ in range(rng.randint(1, 3)):
        key = rng.choice([*contract, "labels", "labels", "input_height", "crop_margin", "new"])
        op = rng.randrange(4)
        if op == 0:
            contract.pop(key, None)
        elif op == 1:
            contract[key] = random_value(rng)
        elif op == 2 and isinstance(contract.get("labels"), list):
            labels = contract["labels"]
            contract["labels"] = rng.choice([labels[:1], labels + labels[:1], [*labels[:-1], random_value(rng)],
                                             [f"l{i}" for i in range(rng.choice([2, 7, 1000]))]])  # fmt: skip
        else:
            contract[key] = rng.choice([0, 7, 48, 513, -1, 48.0, True, "48", None])
    text = json.dumps(contract, allow_nan=True).encode("utf-8", "surrogatepass")
    if rng.random() < 0.3:
        text = mutate_bytes(rng, text)
    if rng.random() < 0.05:
        text = deep_text(rng).encode()
    os.link(MODEL, work / "model.tflite")
    (work / "model.json").write_bytes(text)
    config = work / "empty.yaml"
    config.write_text("stats:\n  interval_s: 0\n")
    return ["--config", str(config), "--check-config", "--model", str(work / "model.tflite")], {}


def _patch_size(rng: random.Random, data: bytes) -> bytes:
    """Claim a huge (or zero) size in the header, as a decompression bomb would."""
    data = bytearray(data)
    width, height = rng.choice([(60000, 60000), (30000, 30000), (0, 100), (65535, 1), (7000, 7000)])
    if data[:4] == b"\x89PNG" and len(data) >= 24:
        data[16:24] = struct.pack(">II", width, height)
    elif data[:2] == b"BM" and len(data) >= 26:
        data[18:26] = struct.pack("<ii", width, height)
    elif data[:2] == b"\xff\xd8":
        at = max(data.find(b"\xff\xc0"), data.find(b"\xff\xc2"))
        if at > 0 and len(data) >= at + 9:
            data[at + 5 : at + 9] = struct.pack(">HH", min(height, 65535), min(width, 65535))
    return bytes(data)


def image_bytes(rng: random.Random) -> bytes:
    ext = rng.choice([".png", ".jpg", ".bmp", ".webp", ".tiff", ".ppm", ".pgm"])
    h, w = rng.randint(1, 160), rng.randint(1, 160)
    gray = ext == ".pgm" or (ext != ".ppm" and rng.random() < 0.3)
    image = np.random.default_rng(rng.randrange(2**32)).integers(
        0, 255, (h, w) if gray else (h, w, 3), np.uint8
    )
    ok, encoded = cv2.imencode(ext, image)
    data = encoded.tobytes() if ok else b""
    roll = rng.random()
    if roll < 0.25:
        return _patch_size(rng, data)
    if roll < 0.65:
        return mutate_bytes(rng, data)
    if roll < 0.7:
        return rng.choice([b"", b"GIF89a\xff\xff\xff\xff", b"RIFF\x00\x00\x00\x00WEBPVP8X" + b"\xff" * 20])
    return data


def images_case(rng: random.Random, work: Path) -> tuple[list[str], dict]:
    folder = work / "photos"
    folder.mkdir()
    extensions = [".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".pgm", ".ppm", ".pnm"]
    for i in range(rng.randint(1, 4)):
        (folder / f"{i}{rng.choice(extensions)}").write_bytes(image_bytes(rng))
    config = work / "run.yaml"
    config.write_text("stats:\n  interval_s: 0\nlog:\n  level: WARNING\n")
    argv = ["--config", str(config), "--source", str(folder), "--policy", "every", "--publish", "stdout"]
    return [*argv, "--device-id", "fuzz", "--model", str(MODEL)], {}


def alias_yaml(rng: random.Random) -> tuple[str, str]:
    """A YAML document of anchors and aliases: lists of aliases of earlier anchors (some of them alias bombs
    a few hundred bytes long), now and then one that refers to itself; and the name of its last anchor."""
    lines, names = [], []
    for level in range(rng.randint(1, 10)):
        name = f"a{level}"
        fan = rng.randint(1, 12)
        if names and rng.random() < 0.9:
            items = [f"*{rng.choice(names[-2:])}" for _ in range(fan)]
        else:
            items = [rng.choice(["lol", "1", "true", "stdout", "x" * rng.randint(1, 50)]) for _ in range(fan)]
        if rng.random() < 0.05:
            items.append(f"*{name}")  # refers to itself (a YAML error, or a recursive structure)
        lines.append(f"{name}: &{name} [{', '.join(items)}]")
        names.append(name)
    return "\n".join(lines) + "\n", names[-1]


def aliases_case(rng: random.Random, work: Path) -> tuple[list[str], dict]:
    from edge.config import Config

    text, last = alias_yaml(rng)
    target = rng.choice(_setting_names())
    *sections, key = target.split(".")
    config = work / "config.yaml"
    env = {}
    roll = rng.random()
    if roll < 0.4:  # the alias as a setting's value, where the validator looks at it
        body = "".join(f"{'  ' * i}{part}:\n" for i, part in enumerate(sections))
        config.write_text(text + body + f"{'  ' * len(sections)}{key}: *{last}\n")
    elif roll < 0.6:  # a whole section aliased to another (unknown keys) or to a list
        section = rng.choice([f.name for f in dataclasses.fields(Config) if "kind" not in f.metadata])
        config.write_text(f"mqtt: &m\n  host: broker\n  port: 1883\n{section}: *m\n" if rng.random() < 0.5
                          else text + f"{section}: *{last}\n")  # fmt: skip
    else:  # in a variable, as a flow sequence
        flow = "[" + ", ".join(line.split(": ", 1)[1] for line in text.splitlines()) + "]"
        env["EMOTION_EDGE_" + target.upper().replace(".", "__")] = flow
        config.write_text("stats:\n  interval_s: 0\n")
    return ["--config", str(config), "--check-config"], env


def _avi_claiming(data: bytes, width: int, height: int) -> bytes:
    """An AVI whose main and stream headers claim another frame size than its frames have."""
    data = bytearray(data)
    at = data.find(b"avih")
    if at >= 0 and len(data) >= at + 48:
        data[at + 40 : at + 48] = struct.pack("<II", width, height)
    at = data.find(b"strf")
    if at >= 0 and len(data) >= at + 20:
        data[at + 12 : at + 20] = struct.pack("<ii", width, height)
    return bytes(data)


def video_case(rng: random.Random, work: Path) -> tuple[list[str], dict]:
    width, height = rng.choice([(32, 24), (64, 48), (160, 120), (320, 240)])
    frames = [np.random.default_rng(rng.randrange(2**32)).integers(0, 255, (height, width, 3), np.uint8)
              for _ in range(rng.randint(1, 8))]  # fmt: skip
    kind = rng.choice(["avi", "avi", "avi", "mjpg", "text", "junk"])
    path = work / rng.choice(["clip.avi", "clip.mp4", "clip.dat", "clip", "clip.txt", "clip.mjpg"])
    if kind == "avi":
        raw = work / "raw.avi"
        writer = cv2.VideoWriter(str(raw), cv2.VideoWriter_fourcc(*"MJPG"), 10, (width, height))
        for frame in frames:
            writer.write(frame)
        writer.release()
        data = raw.read_bytes()
        roll = rng.random()
        if roll < 0.3:
            data = _avi_claiming(data, *rng.choice([(8192, 8192), (60000, 60000), (0, 0), (7000, 7000)]))
        elif roll < 0.7:
            data = mutate_bytes(rng, data)
    elif kind == "mjpg":  # a raw MJPEG stream: JPEGs end to end, the first one's header perhaps a bomb's
        data = b"".join(cv2.imencode(".jpg", frame)[1].tobytes() for frame in frames)
        if rng.random() < 0.4:
            data = _patch_size(rng, data)
        path = work / "clip.mjpg"
    elif kind == "text":
        data = ("hello, this is not a video\n" * rng.randint(1, 400)).encode()
    else:
        data = bytes(rng.randrange(256) for _ in range(rng.choice([0, 1, 100, 5000])))
    path.write_bytes(data)
    limit = rng.choice(["", "source:\n  max_image_mpx: 0.01\n", "source:\n  max_image_mpx: 40\n"])
    config = work / "run.yaml"
    config.write_text(f"stats:\n  interval_s: 0\nlog:\n  level: WARNING\n{limit}")
    argv = ["--config", str(config), "--source", str(path), "--policy", "every", "--publish", "stdout"]
    return [*argv, "--device-id", "fuzz", "--model", str(MODEL)], {}


def preview_request(rng: random.Random) -> bytes:
    """One request as a client or an attacker would send it: methods, paths, header floods, every kind of
    Authorization, raw junk, a head cut short."""
    import base64

    if rng.random() < 0.1:
        return bytes(rng.randrange(256) for _ in range(rng.choice([0, 1, 10, 3000, 70000])))
    odd = rng.random() < 0.3  # the request line itself broken, or a sane one with odd headers
    method = rng.choice(["HEAD", "POST", "PUT", "OPTIONS", "G\x00T", "get", "X" * 300]) if odd else "GET"
    path = rng.choice(["/", "/stream.mjpg", "/api/status", "/index.html", "/nope"])
    if odd and rng.random() < 0.5:
        path = rng.choice(["/../../etc/passwd", "*", "/" + "a" * rng.choice([10, 5000, 70000]),
                           "/api/status?x=" + random_text(rng)[:100]])  # fmt: skip
    version = (
        rng.choice(["HTTP/0.9", "HTTP/2.0", "", "HTTP/1.1 extra"])
        if odd
        else rng.choice(["HTTP/1.1", "HTTP/1.0"])
    )
    headers = []
    auth = rng.random()
    if auth < 0.3:
        headers.append(
            f"Authorization: Bearer {PREVIEW_TOKEN if rng.random() < 0.5 else random_text(rng)[:40]}"
        )
    elif auth < 0.6:
        secret = PREVIEW_TOKEN if rng.random() < 0.5 else random_text(rng)[:40]
        user = random_text(rng)[:10]
        encoded = base64.b64encode(f"{user}:{secret}".encode("utf-8", "surrogatepass")).decode()
        headers.append(f"Authorization: Basic {encoded if rng.random() < 0.8 else encoded[:-3] + '!!'}")
    elif auth < 0.7:
        headers.append("Authorization: " + random_text(rng)[:300])
    if rng.random() < 0.8:
        headers.append(f"Host: {rng.choice(['localhost', '127.0.0.1:8080', 'evil.example', '', '[::1]'])}")
    for _ in range(rng.choice([0, 0, 0, 1, 3, 5, 50, 120])):
        headers.append(f"X-{random_text(rng)[:10] or 'k'}: {'v' * rng.choice([1, 10, 100, 2000, 20000])}")
    head = f"{method} {path} {version}\r\n" + "".join(h + "\r\n" for h in headers)
    data = head.encode("utf-8", "surrogatepass") + (b"\r\n" if rng.random() < 0.9 else b"")
    if rng.random() < 0.1:
        data = data[: rng.randrange(len(data) + 1)]  # cut short, then the client waits
    return data


def preview_case(rng: random.Random, work: Path) -> tuple[list[str], dict]:
    return ["preview"], {"request": preview_request(rng).hex()}


BUILDERS = {"config": config_case, "env": env_case, "model": model_case, "sidecar": sidecar_case,
            "images": images_case, "aliases": aliases_case, "video": video_case,
            "preview": preview_case}  # fmt: skip


# --- running one case --------------------------------------------------------------------------------------


class _Hang(Exception):
    pass


def _alarm(_signum, _frame):
    raise _Hang()


def run_case(argv: list[str], env: dict[str, str]) -> tuple[int | None, str, str | None]:
    """(exit code or None, stderr, the traceback that escaped main or None)."""
    from edge import cli

    stdout, stderr = io.StringIO(), io.StringIO()
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update({k: v for k, v in saved.items() if not k.startswith("EMOTION_EDGE_")})
    os.environ.update(env)
    escaped = None
    signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(CASE_TIMEOUT_S)
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            code = cli.main(argv)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 2
    except _Hang:
        code, escaped = None, f"no answer within {CASE_TIMEOUT_S} s"
    except BaseException:
        code, escaped = None, traceback.format_exc()
    finally:
        signal.alarm(0)
        os.environ.clear()
        os.environ.update(saved)
    return code, stderr.getvalue(), escaped


def _carries_token(request: bytes) -> bool:
    from edge.preview.auth import authorized

    for line in request.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"authorization":
            return authorized(value.decode("latin-1").strip(), PREVIEW_TOKEN)
    return False


def _status_code(status: str) -> str:
    """ "HTTP/1.0 401 Unauthorized" -> "401"; no status line: "closed" or "other"."""
    parts = status.split()
    return (
        parts[1] if len(parts) > 1 and parts[0].startswith("HTTP/") else ("closed" if not status else "other")
    )


class PreviewTarget:
    """One preview server with a token for every preview case; records what its handler threads raised."""

    def __init__(self, work: Path):
        import logging

        from edge.config import Config, PreviewConfig
        from edge.preview.server import start_preview

        (work / "token").write_text(PREVIEW_TOKEN)
        with contextlib.closing(__import__("socket").socket()) as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        config = Config()
        config.preview = PreviewConfig(
            enabled=True, port=self.port, token_file=str(work / "token"), max_clients=2
        )
        self.server = start_preview(config, "fuzz", ["a", "b"], publishers=[])
        self.failures: list[str] = []
        target = self

        class Recorder(logging.Handler):
            def emit(self, record):
                if record.exc_info and not isinstance(record.exc_info[1], OSError):
                    target.failures.append("".join(traceback.format_exception(*record.exc_info))[-1500:])

        self._recorder = Recorder(level=logging.DEBUG)
        logging.getLogger("edge.preview").addHandler(self._recorder)
        logging.getLogger("edge.preview").setLevel(logging.DEBUG)

    def request(self, data: bytes) -> tuple[int | None, str, str | None]:
        """(0 served, 2 refused, None no answer in time; the status line; what went wrong, or None)."""
        import socket

        self.failures.clear()
        answer = b""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=15) as sock:
                with contextlib.suppress(OSError):
                    sock.sendall(data)
                    sock.shutdown(socket.SHUT_WR)  # a cut-short head then ends, as the client hangs up
                with contextlib.suppress(OSError):
                    while len(answer) < 4096 and (chunk := sock.recv(4096)):
                        answer += chunk
                        if b"\r\n\r\n" in answer and b"multipart/x-mixed-replace" in answer:
                            break  # a stream: its first part is enough
        except TimeoutError:
            return None, "", "no answer or close within 15 s"
        status = answer.split(b"\r\n", 1)[0].decode("latin-1")
        problem = self.failures[0] if self.failures else None
        if status.startswith("HTTP/1.0 200") and not _carries_token(data):
            problem = f"200 without the token: {data[:200]!r}"
        threads = self.server._httpd.open_connections
        if threads > self.server._httpd.max_connections:
            problem = f"{threads} connections open, more than the cap {self.server._httpd.max_connections}"
        return (0 if status.startswith("HTTP/1.0 200") else 2), status, problem

    def close(self) -> None:
        import logging

        logging.getLogger("edge.preview").removeHandler(self._recorder)
        self.server.close()


def check(code: int | None, stderr: str, escaped: str | None, kind: str = "") -> str | None:
    """What is wrong with a case's outcome, or None."""
    if kind == "preview":  # an HTTP answer, not a command's exit: PreviewTarget.request judged it
        return escaped
    if escaped:
        return "escaped main: " + escaped[-2000:]
    if code == 1 and kind in ("images", "video"):  # a source that failed mid-way: one line says why
        stopped = [line for line in stderr.splitlines() if "ERROR edge.daemon: source stopped: " in line]
        return (
            None if len(stopped) == 1 and "Traceback" not in stderr else f"exit 1 with {len(stopped)} reasons"
        )
    if code not in (0, 2):
        return f"exit code {code}"
    if "Traceback" in stderr:
        return "a traceback in the output"
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    if code == 2 and len(errors) != 1:
        return f"exit 2 with {len(errors)} error lines"
    if code == 0 and errors:
        return "exit 0 with an error line"
    return None


def fuzz(seed: int, seconds: float, only: int | None = None, rss_limit_mb: float = 600) -> dict:
    import logging

    logging.getLogger().setLevel(logging.WARNING)
    start = time.monotonic()
    counts = dict.fromkeys(KINDS, 0)
    codes: dict[str, int] = {}
    failures = []
    baseline = None
    jumps: list[tuple[int, int]] = []
    index = only if only is not None else 0
    statuses: dict[str, int] = {}
    preview_dir = tempfile.TemporaryDirectory(prefix="fuzz-preview-")
    preview = PreviewTarget(Path(preview_dir.name))
    while True:
        rng = random.Random(f"{seed}-{index}")
        kind = KINDS[index % len(KINDS)]
        with tempfile.TemporaryDirectory(prefix="fuzz-") as tmp:
            argv, env = BUILDERS[kind](rng, Path(tmp))
            if kind == "preview":
                code, status, problem = preview.request(bytes.fromhex(env["request"]))
                statuses[_status_code(status)] = statuses.get(_status_code(status), 0) + 1
                stderr, escaped = status, problem and f"preview: {problem}"
            else:
                code, stderr, escaped = run_case(argv, env)
        counts[kind] += 1
        if kind != "preview":
            codes[str(code)] = codes.get(str(code), 0) + 1
        problem = check(code, stderr, escaped, kind)
        if problem:
            failures.append({"case": index, "kind": kind, "problem": problem, "stderr": stderr[-1500:]})
        if baseline is None:
            baseline = peak_rss_mb()
        if peak_rss_mb() > (jumps[-1][1] if jumps else baseline) + 50:  # which cases raised the peak
            jumps.append((index, round(peak_rss_mb())))
        index += 1
        if only is not None or time.monotonic() - start >= seconds:
            break
    preview.close()
    preview_dir.cleanup()
    peak = peak_rss_mb()
    if peak > rss_limit_mb:
        failures.append(
            {"case": None, "kind": "all", "problem": f"peak RSS {peak:.0f} MB > {rss_limit_mb} MB"}
        )
    return {"seed": seed, "cases": sum(counts.values()), "by_kind": counts, "exit_codes": codes,
            "preview_statuses": statuses,
            "seconds": round(time.monotonic() - start, 1), "peak_rss_mb": round(peak, 1),
            "rss_after_first_case_mb": round(baseline or 0, 1), "peak_raised_by": jumps, "failures": failures}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=21)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--only", type=int, help="replay one case by its index")
    parser.add_argument("--rss-limit-mb", type=float, default=600)
    parser.add_argument("--json", metavar="OUT", help="also write the summary here")
    args = parser.parse_args(argv)
    real_stdout = sys.stdout
    summary = fuzz(args.seed, args.seconds, args.only, args.rss_limit_mb)
    text = json.dumps(summary, indent=1)
    if args.json:
        Path(args.json).write_text(text + "\n")
    print(text, file=real_stdout)
    return 1 if summary["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
