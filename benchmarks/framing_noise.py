"""Framing noise: how much the daemon's crop of the same face moves when the camera's view of it changes.

Training augmentation should reproduce the jitter of the deployed crop, so this measures it on real photos
(default ../shared/data/photos; read its README). Each photo is detected as the daemon detects it (`auto`,
the largest face, its eyes), then again in K copies that are rescaled, shifted and rotated by known amounts
(what a person moving in front of a camera does). The eyes found in a copy are mapped back into the photo
with the inverse of the known transform and then into the model-input crop that DEFAULT_FRAMING cuts from
the original's eyes. The difference between the two is the framing noise, in crop units:

- shift: where the eye centre lands, as a fraction of the crop side (x and y),
- scale: the ratio of the two eye distances (the crop's zoom),
- roll: the residual tilt after alignment, in degrees (both crops are levelled by their own eyes).

Each number is a difference of two noisy detections, so one detection's own spread is about 1/sqrt(2) of it;
both are printed. Photos where either detection has no eyes are counted, not measured.

    .venv/bin/python -m benchmarks.framing_noise [--data DIR] [--limit 600] [--copies 4] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import cv2
import numpy as np

from benchmarks.common import DEV_PHOTOS
from edge.align import DEFAULT_FRAMING, eye_angle, eye_transform
from edge.capture.sources import read_image
from edge.config import DetectorConfig
from edge.detect import largest, make_detector

EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
# How the copies differ from the photo: a person a little nearer or further, off centre, with the head tilted.
SCALE_RANGE = (0.75, 1.1)
SHIFT_RANGE = 0.06  # +- fraction of the photo's side
ROTATE_RANGE = 12.0  # +- degrees


def largest_eyes(detector, image):
    face = largest([d for d in detector.detect(image) if d.eyes is not None])
    return None if face is None else np.array(face.eyes, np.float64)


def random_view(image: np.ndarray, rng: np.random.Generator):
    """A rescaled, shifted, rotated copy of the photo (edges repeated) and the 2x3 matrix that made it."""
    height, width = image.shape[:2]
    scale = rng.uniform(*SCALE_RANGE)
    angle = rng.uniform(-ROTATE_RANGE, ROTATE_RANGE)
    matrix = cv2.getRotationMatrix2D((width / 2, height / 2), angle, scale)
    matrix[:, 2] += rng.uniform(-SHIFT_RANGE, SHIFT_RANGE, 2) * (width, height)
    copy = cv2.warpAffine(
        image, matrix, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
    return copy, matrix


def framing_difference(reference_eyes: np.ndarray, eyes: np.ndarray, size: int = 48) -> tuple[float, ...]:
    """(shift x, shift y, log scale, roll degrees) of `eyes` in the crop that `reference_eyes` frame."""
    crop = eye_transform(tuple(map(tuple, reference_eyes)), DEFAULT_FRAMING, (size, size))
    in_crop = eyes @ crop[:, :2].T + crop[:, 2]
    centre = in_crop.mean(axis=0) / size
    distance = np.linalg.norm(in_crop[1] - in_crop[0]) / size
    roll = eye_angle(tuple(map(tuple, in_crop)))
    return (
        float(centre[0] - 0.5),
        float(centre[1] - DEFAULT_FRAMING.eye_y),
        float(math.log(distance / DEFAULT_FRAMING.eye_distance)),
        float(roll),
    )


def measure(paths, detector, copies: int, seed: int) -> tuple[np.ndarray, dict]:
    rng = np.random.default_rng(seed)
    rows, counts = [], {"photos": len(paths), "no_eyes": 0, "copies_without_eyes": 0}
    for path in paths:
        image = read_image(path)
        reference = largest_eyes(detector, image) if image is not None else None
        if reference is None:
            counts["no_eyes"] += 1
            continue
        for _ in range(copies):
            copy, matrix = random_view(image, rng)
            eyes = largest_eyes(detector, copy)
            if eyes is None:
                counts["copies_without_eyes"] += 1
                continue
            back = cv2.invertAffineTransform(matrix)
            rows.append(framing_difference(reference, eyes @ back[:, :2].T + back[:, 2]))
    return np.array(rows).reshape(-1, 4), counts


def summarise(rows: np.ndarray) -> dict:
    names = ("shift_x", "shift_y", "log_scale", "roll_degrees")
    summary = {}
    for name, values in zip(names, rows.T, strict=True):
        spread = np.abs(values - np.median(values))
        summary[name] = {
            "median": float(np.median(values)),
            "std": float(values.std()),
            "p95_abs": float(np.percentile(np.abs(values), 95)),
            "per_detection_std": float(values.std() / math.sqrt(2)),
            "per_detection_p95_abs": float(np.percentile(spread, 95) / math.sqrt(2)),
        }
    return summary


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DEV_PHOTOS), help="<label>/ folders of photos")
    parser.add_argument(
        "--limit", type=int, default=600, help="a seeded random sample of this many (0 = all)"
    )
    parser.add_argument("--copies", type=int, default=4, help="transformed copies per photo")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    root = Path(args.data)
    paths = sorted(p for p in root.glob("*/*") if p.suffix.lower() in EXTENSIONS) if root.is_dir() else []
    if not paths or args.limit < 0 or args.copies < 1:
        print(f"error: need photos under {root}/<label>/, --limit >= 0 and --copies >= 1", file=sys.stderr)
        return 2
    if args.limit:
        paths = [
            paths[i] for i in sorted(np.random.default_rng(args.seed).permutation(len(paths))[: args.limit])
        ]
    rows, counts = measure(paths, make_detector(DetectorConfig()), args.copies, args.seed)
    if not len(rows):
        print("error: no photo gave eyes in both views", file=sys.stderr)
        return 2
    summary = summarise(rows)
    print(f"{len(rows)} view pairs from {counts['photos']} photos in {root} ({counts})")
    print(f"{'':14s} {'median':>8s} {'std':>7s} {'p95|x|':>7s}  one detection: {'std':>7s} {'p95':>7s}")
    for name, s in summary.items():
        print(
            f"{name:14s} {s['median']:8.4f} {s['std']:7.4f} {s['p95_abs']:7.4f}  {'':15s}"
            f"{s['per_detection_std']:7.4f} {s['per_detection_p95_abs']:7.4f}"
        )
    if args.json:
        Path(args.json).write_text(
            json.dumps({"data": str(root), **counts, "pairs": len(rows), **summary}, indent=2)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
