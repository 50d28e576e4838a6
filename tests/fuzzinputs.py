"""Seeded fuzzing of what a user or an attacker hands the daemon: config files, environment variables,
model files, model contracts (sidecar JSON) and image files in a folder source.

    python -m tests.fuzzinputs --seed 21 --seconds 20 [--json OUT] [--only N]

Each case is built from `random.Random(f"{seed}-{index}")`, so case N is the same on every machine and
`--only N` replays it; the run stops starting cases after `--seconds`. Cases run in this one process through
`edge.cli.main` (hundreds of cases in seconds instead of one interpreter start each), with stdout, stderr
and the environment swapped per case. Every case must end with exit 0 or 2, exactly one `error: ` line when
it is 2, no traceback (escaped from main, or logged by a thread) and no hang; the peak RSS of the whole run
must stay bounded (a hostile image decoded would add gigabytes). The summary is one JSON object on stdout.
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
import shutil
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

REPO = Path(__file__).resolve().parent.parent
MODEL = REPO / "edge" / "models" / "default.tflite"
CASE_TIMEOUT_S = 30
KINDS = ("config", "env", "model", "sidecar", "images")


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
    shutil.copy(MODEL.with_suffix(".json"), work / "model.json")
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


BUILDERS = {"config": config_case, "env": env_case, "model": model_case, "sidecar": sidecar_case,
            "images": images_case}  # fmt: skip


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


def check(code: int | None, stderr: str, escaped: str | None) -> str | None:
    """What is wrong with a case's outcome, or None."""
    if escaped:
        return "escaped main: " + escaped[-2000:]
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
    while True:
        rng = random.Random(f"{seed}-{index}")
        kind = KINDS[index % len(KINDS)]
        with tempfile.TemporaryDirectory(prefix="fuzz-") as tmp:
            argv, env = BUILDERS[kind](rng, Path(tmp))
            code, stderr, escaped = run_case(argv, env)
        counts[kind] += 1
        codes[str(code)] = codes.get(str(code), 0) + 1
        problem = check(code, stderr, escaped)
        if problem:
            failures.append({"case": index, "kind": kind, "problem": problem, "stderr": stderr[-1500:]})
        if baseline is None:
            baseline = peak_rss_mb()
        if peak_rss_mb() > (jumps[-1][1] if jumps else baseline) + 50:  # which cases raised the peak
            jumps.append((index, round(peak_rss_mb())))
        index += 1
        if only is not None or time.monotonic() - start >= seconds:
            break
    peak = peak_rss_mb()
    if peak > rss_limit_mb:
        failures.append(
            {"case": None, "kind": "all", "problem": f"peak RSS {peak:.0f} MB > {rss_limit_mb} MB"}
        )
    return {"seed": seed, "cases": sum(counts.values()), "by_kind": counts, "exit_codes": codes,
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
