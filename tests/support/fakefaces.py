"""Procedurally drawn faces whose brows and mouth encode the class: a small data set a CNN can learn.

Tests never ship FER-2013. These faces give train/ and convert/ something real to learn in seconds:
each class has its own brow tilt and mouth shape, and every image varies in position, scale, tone and
noise so that memorising pixels does not work.
"""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np

FER_LABELS = ["angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"]
# The original fer2013.csv ids (0 angry ... 6 neutral): not the alphabetical order on disk.
FER_CSV_IDS = {"angry": 0, "disgust": 1, "fear": 2, "happy": 3, "sad": 4, "surprise": 5, "neutral": 6}

# Per class: (brow style, mouth style). Seven distinct pairs.
_STYLES = [
    ("v", "tight"),  # 0
    ("flat", "wavy"),  # 1
    ("raised", "wide"),  # 2
    ("flat", "smile"),  # 3
    ("flat", "tight"),  # 4
    ("inv_v", "frown"),  # 5
    ("raised", "o"),  # 6
]


def make_face(class_index: int, rng: np.random.Generator, size: int = 48) -> np.ndarray:
    """One grayscale uint8 face of shape (size, size) for the class at `class_index` (0..6)."""
    scale = 4  # draw at 4x and shrink, so lines are anti-aliased like a real photo
    n = size * scale
    background = int(rng.integers(20, 90))
    skin = int(rng.integers(140, 230))
    img = np.full((n, n), background, np.uint8)
    cx = n / 2 + rng.normal(0, n * 0.03)
    cy = n / 2 + rng.normal(0, n * 0.03)
    r = n * rng.uniform(0.36, 0.44)
    cv2.ellipse(img, (int(cx), int(cy)), (int(r * 0.85), int(r)), 0, 0, 360, skin, -1)
    dark = int(max(0, skin - rng.integers(100, 140)))
    thick = max(2, int(scale * rng.uniform(1.2, 1.8)))

    eye_y = cy - r * 0.2
    eye_dx = r * 0.35
    for side in (-1, 1):
        cv2.circle(img, (int(cx + side * eye_dx), int(eye_y)), int(r * 0.08), dark, -1)

    brow, mouth = _STYLES[class_index % len(_STYLES)]
    brow_y = eye_y - r * 0.2
    tilt = r * rng.uniform(0.1, 0.16)
    for side in (-1, 1):
        inner = (cx + side * eye_dx * 0.4, brow_y)
        outer = (cx + side * eye_dx * 1.5, brow_y)
        if brow == "v":  # inner ends pulled down
            inner = (inner[0], inner[1] + tilt)
        elif brow == "inv_v":  # inner ends pulled up
            inner = (inner[0], inner[1] - tilt)
        elif brow == "raised":
            inner, outer = (inner[0], inner[1] - tilt), (outer[0], outer[1] - tilt)
        cv2.line(img, (int(inner[0]), int(inner[1])), (int(outer[0]), int(outer[1])), dark, thick)

    my = cy + r * 0.45
    mw = r * rng.uniform(0.35, 0.45)
    if mouth == "tight":
        cv2.line(img, (int(cx - mw), int(my)), (int(cx + mw), int(my)), dark, thick)
    elif mouth == "smile":
        cv2.ellipse(img, (int(cx), int(my - r * 0.12)), (int(mw), int(r * 0.2)), 0, 20, 160, dark, thick)
    elif mouth == "frown":
        cv2.ellipse(img, (int(cx), int(my + r * 0.15)), (int(mw), int(r * 0.18)), 0, 200, 340, dark, thick)
    elif mouth == "o":
        cv2.ellipse(img, (int(cx), int(my)), (int(mw * 0.45), int(r * 0.18)), 0, 0, 360, dark, -1)
    elif mouth == "wide":
        cv2.rectangle(img, (int(cx - mw), int(my - r * 0.06)), (int(cx + mw), int(my + r * 0.08)), dark, -1)
    elif mouth == "wavy":
        xs = np.linspace(cx - mw, cx + mw, 9)
        ys = my + np.where(np.arange(9) % 2 == 0, -1, 1) * r * 0.06
        pts = np.stack([xs, ys], 1).astype(np.int32)
        cv2.polylines(img, [pts], False, dark, thick)

    angle = rng.uniform(-8, 8)
    m = cv2.getRotationMatrix2D((n / 2, n / 2), angle, 1.0)
    img = cv2.warpAffine(img, m, (n, n), borderMode=cv2.BORDER_REPLICATE)
    img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32)
    img = img * rng.uniform(0.8, 1.2) + rng.normal(0, 6, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def make_faces(n_per_class: int, labels=FER_LABELS, seed: int = 0, size: int = 48):
    """(images (N, size, size) uint8, label indices (N,)) with classes interleaved."""
    rng = np.random.default_rng(seed)
    images, targets = [], []
    for _ in range(n_per_class):
        for index in range(len(labels)):
            images.append(make_face(index, rng, size))
            targets.append(index)
    return np.stack(images), np.asarray(targets, np.int64)


def write_folder_dataset(
    root: Path, labels=FER_LABELS, splits: dict[str, int] | None = None, seed: int = 0, ext: str = "png"
) -> Path:
    """Kaggle-style `<split>/<label>/<n>.<ext>`; splits maps split name -> images per class.

    With splits=None, writes a flat `<label>/<n>.<ext>` folder (a user's own labelled faces).
    """
    root = Path(root)
    plan = splits if splits is not None else {"": 30}
    for offset, (split, n_per_class) in enumerate(plan.items()):
        images, targets = make_faces(n_per_class, labels, seed=seed + offset)
        for i, (image, target) in enumerate(zip(images, targets, strict=True)):
            folder = root / split / labels[target] if split else root / labels[target]
            folder.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(folder / f"{split or 'img'}_{i:05d}.{ext}"), image)
    return root


def write_fer_csv(path: Path, n_per_class: dict[str, int] | None = None, seed: int = 0) -> Path:
    """A tiny fer2013.csv (emotion,pixels,Usage) using the original label ids."""
    n_per_class = n_per_class or {"Training": 20, "PublicTest": 6, "PrivateTest": 4}
    rng = np.random.default_rng(seed)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["emotion", "pixels", "Usage"])
        for usage, count in n_per_class.items():
            for _ in range(count):
                for index, label in enumerate(FER_LABELS):
                    pixels = make_face(index, rng).reshape(-1)
                    writer.writerow([FER_CSV_IDS[label], " ".join(map(str, pixels)), usage])
    return Path(path)
