"""Measured ranges for training degradations (`emotion-train --degrade-*`, train/degrade.py).

Two measurements, each printed with the range it sets:

1. **Face sizes**: how small a face the daemon's detector still finds, so how small the crops it hands the
   model get. Whole photos of the dev set (a face with hair and background) are pasted into 640x480 frames at
   several sizes, the frame goes through `make_detector` (the daemon's default), and for each found face the
   crop's side in frame pixels is what the eye framing of the model contract cuts (eye distance / framing
   eye_distance). The smallest crop side the detector finds in at least a quarter of the frames is the lower
   end of the small-face range (`--degrade-face-px`); above the model's 48 px a crop is sampled down and is
   clean.
2. **Image statistics** of crops: FER-2013 `train/` against the daemon's crops of the photo dev set's train
   half (train/photos.py): sharpness (variance of the Laplacian over the crop's variance, so contrast does not
   count), noise (Immerkaer's estimate of a Gaussian sigma), brightness (mean) and contrast (standard
   deviation), their 5th/50th/95th percentiles, and the JPEG quality of the photo files (from their
   quantisation tables). Each range is the one that takes FER's median crop to the photo crops' 5th or 95th
   percentile: the blur sigma that brings FER's median sharpness down to the photos' 5th percentile, the
   noise that added to FER's median reaches the photos' 95th (none if FER is the noisier), the gamma that
   moves FER's median brightness to the photos' 5th/95th, the contrast factor that takes FER's median
   contrast to the photos' 5th, and the photo files' 5th-percentile JPEG quality.

No room-camera recordings are in the data; a user with some can point --frames at a folder of frames, whose
faces (found by the detector, cut as the daemon cuts them) are measured the same way. Night-time infrared
frames are not in any of the data either: the low-contrast and gamma ranges cover flat grey images, not IR's
particular look.

    .venv/bin/python -m benchmarks.camera_degradations --json camera_degradations.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import cv2
import numpy as np

from benchmarks.common import REPO
from edge.align import DEFAULT_FRAMING
from edge.capture.sources import read_image
from edge.config import DetectorConfig
from edge.detect import largest, make_detector
from edge.preprocess import faces_to_batch, to_gray

FRAME = (480, 640)
FOUND_AT_ALL = 0.25  # a size the detector finds one time in four still reaches the model often
PASTE_PX = (32, 40, 48, 56, 64, 80, 96, 128, 160)  # side of the pasted photo; its face is about 60% of it
FER = REPO.parent / "shared" / "data" / "fer2013"
PHOTOS = REPO.parent / "shared" / "data" / "photos"
LAPLACE_NOISE = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float32)


def sharpness(face: np.ndarray) -> float:
    x = face.astype(np.float32)
    return float(cv2.Laplacian(x, cv2.CV_32F).var() / max(x.var(), 1e-6))


def noise_sigma(face: np.ndarray) -> float:
    """Immerkaer (1996): the mean absolute response to a Laplacian-difference mask, as a Gaussian sigma."""
    x = face.astype(np.float32)
    response = cv2.filter2D(x, -1, LAPLACE_NOISE)[1:-1, 1:-1]
    h, w = x.shape
    return float(math.sqrt(math.pi / 2) * np.abs(response).sum() / (6 * (w - 2) * (h - 2)))


def statistics(faces: np.ndarray) -> dict:
    values = {
        "sharpness": [sharpness(f) for f in faces],
        "noise": [noise_sigma(f) for f in faces],
        "mean": [float(f.mean()) for f in faces],
        "std": [float(f.std()) for f in faces],
    }
    return {
        k: {p: float(np.percentile(v, q)) for p, q in (("p5", 5), ("p50", 50), ("p95", 95))}
        for k, v in values.items()
    }


def jpeg_quality(path: Path) -> float | None:
    """The libjpeg quality whose scaled standard luminance table is nearest the file's (None if not JPEG)."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            tables = getattr(image, "quantization", None)
    except OSError:
        return None
    if not tables:
        return None
    ours = np.asarray(tables[0], np.float64)
    base = np.asarray(STANDARD_LUMINANCE, np.float64)
    best, best_err = None, math.inf
    for q in range(1, 101):
        scale = 5000 / q if q < 50 else 200 - 2 * q
        table = np.clip(np.floor((base * scale + 50) / 100), 1, 255)
        err = np.abs(np.sort(table) - np.sort(ours)).mean()  # zig-zag vs natural order: compare sorted
        if err < best_err:
            best, best_err = q, err
    return float(best)


STANDARD_LUMINANCE = [
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
]  # fmt: skip


def face_sizes(detector, photos: list[np.ndarray], rng) -> list[dict]:
    """Per pasted size: share of frames whose face was found, and the crop side (frame px) the daemon cuts."""
    rows = []
    for px in PASTE_PX:
        found, sides = 0, []
        for photo in photos:
            frame = np.clip(128 + rng.normal(0, 8, FRAME), 0, 255).astype(np.uint8)
            small = cv2.resize(photo, (px, px), interpolation=cv2.INTER_AREA)
            x, y = int(rng.integers(0, FRAME[1] - px)), int(rng.integers(0, FRAME[0] - px))
            frame[y : y + px, x : x + px] = small
            face = largest(detector.detect(cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)))
            if face is None or not (x <= face.box[0] + face.box[2] / 2 <= x + px):
                continue
            found += 1
            if face.eyes is not None:
                (lx, ly), (rx, ry) = face.eyes
                sides.append(math.hypot(rx - lx, ry - ly) / DEFAULT_FRAMING.eye_distance)
        rows.append(
            {
                "paste_px": px,
                "found": found / len(photos),
                "crop_side_px_median": float(np.median(sides)) if sides else None,
            }
        )
    return rows


def blur_for(fer: np.ndarray, target: float) -> float:
    """The Gaussian sigma that brings FER's median sharpness down to `target`."""
    for sigma in np.arange(0.1, 3.01, 0.05):
        blurred = [cv2.GaussianBlur(f.astype(np.float32), (0, 0), float(sigma)) for f in fer]
        if np.median([sharpness(b) for b in blurred]) <= target:
            return round(float(sigma), 2)
    return 3.0


def daemon_crops(detector, paths: list[Path]) -> np.ndarray:
    crops = []
    for path in paths:
        image = read_image(path)
        if image is None:
            continue
        face = largest(detector.detect(image))
        if face is not None:
            crops.append(
                faces_to_batch(image, [face.box], (48, 48), 0.1, [face.eyes], DEFAULT_FRAMING)[0, :, :, 0]
            )
    return np.stack(crops)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fer", default=str(FER), help="FER-2013 folder (its train/ is measured)")
    parser.add_argument("--photos", default=str(PHOTOS), help="<label>/ photos; their train half is measured")
    parser.add_argument("--frames", help="a folder of your own camera frames, measured like the photos")
    parser.add_argument("--detector", default="auto", help="detector type (the daemon's default: auto)")
    parser.add_argument("--limit", type=int, default=300, help="photos per measurement (seeded sample)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    from train.data import load_dataset
    from train.photos import TRAIN, load_photo_dataset, person_of, split_of

    rng = np.random.default_rng(args.seed)
    detector = make_detector(DetectorConfig(type=args.detector))
    photo_paths = sorted(
        p for p in Path(args.photos).glob("*/*") if p.suffix.lower() in (".jpg", ".jpeg", ".png")
    )
    photo_paths = [p for p in photo_paths if split_of(person_of(p.name)) == TRAIN]
    sample = [
        photo_paths[i]
        for i in np.sort(rng.choice(len(photo_paths), min(args.limit, len(photo_paths)), replace=False))
    ]
    gray = [to_gray(img) for img in (read_image(p) for p in sample) if img is not None]

    sizes = face_sizes(detector, gray, rng)
    fer = load_dataset(args.fer).splits["train"].images
    fer = fer[np.sort(rng.choice(len(fer), min(2000, len(fer)), replace=False))]
    photos = load_photo_dataset(args.photos).splits[TRAIN].images
    measured = {"fer_train": statistics(fer), "photo_crops": statistics(photos)}
    if args.frames:
        frames = sorted(
            p for p in Path(args.frames).rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png")
        )
        measured["frames"] = statistics(daemon_crops(detector, frames))
    target = measured.get("frames", measured["photo_crops"])
    qualities = [q for q in (jpeg_quality(p) for p in sample) if q is not None]
    fer50 = measured["fer_train"]
    smallest = next(
        (row for row in sizes if row["found"] >= FOUND_AT_ALL and row["crop_side_px_median"]), None
    )
    gamma_lo = math.log(target["mean"]["p5"] / 255) / math.log(fer50["mean"]["p50"] / 255)
    gamma_hi = math.log(target["mean"]["p95"] / 255) / math.log(fer50["mean"]["p50"] / 255)
    ranges = {
        "degrade_face_px": int(round(smallest["crop_side_px_median"])) if smallest else None,
        "degrade_blur": blur_for(fer, target["sharpness"]["p5"]),
        # Noise to add on top of FER's own: none where FER's crops are already noisier than the target's.
        "degrade_noise": round(
            math.sqrt(max(0.0, target["noise"]["p95"] ** 2 - fer50["noise"]["p50"] ** 2)), 1
        ),
        "degrade_jpeg": int(np.percentile(qualities, 5)) if qualities else None,
        "degrade_gamma": round(max(gamma_lo, 1 / gamma_hi, 1 / gamma_lo, gamma_hi), 2),
        "degrade_contrast": round(min(1.0, target["std"]["p5"] / fer50["std"]["p50"]), 2),
    }
    print(
        f"detector {getattr(detector, 'name', args.detector)}: pasted photo side -> found, crop side (frame px)"
    )
    for row in sizes:
        side = row["crop_side_px_median"]
        print(
            f"  {row['paste_px']:4d} px: found {row['found']:6.1%}, crop side {side if side is None else round(side)}"
        )
    print(f"{'statistic':10s} " + " ".join(f"{name:>26s}" for name in measured))
    for key in ("sharpness", "noise", "mean", "std"):
        cells = [f"{m[key]['p5']:7.2f} {m[key]['p50']:8.2f} {m[key]['p95']:8.2f}" for m in measured.values()]
        print(f"{key:10s} " + " ".join(f"{c:>26s}" for c in cells))
    print(
        f"JPEG quality of {len(qualities)} photo files: p5 {ranges['degrade_jpeg']}, median {np.median(qualities) if qualities else None}"
    )
    print("ranges: " + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in ranges.items()))
    if args.json:
        report = {
            "detector": getattr(detector, "name", args.detector),
            "face_sizes": sizes,
            "statistics": measured,
        }
        report.update(jpeg_quality={"files": len(qualities), "p5": ranges["degrade_jpeg"]}, ranges=ranges)
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
