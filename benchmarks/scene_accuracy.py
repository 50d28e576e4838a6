"""Scene accuracy: labelled face crops pasted into 640x480 frames, found by the daemon's detector and
classified by its model the way the daemon does it. A face the detector misses counts as wrong.

`emotion-convert evaluate` scores the model on ready-made face crops; a camera gives the daemon whole frames,
so what users get is detection recall times the accuracy on the detector's crops. Each face of the split is
enlarged to --face-px, pasted at a random place into a background (flat grey, a scikit-image photo without
people, or a dark room with a dimmed face), and the frame goes through `make_detector(...).detect`, then
`faces_to_batch` (faces with eyes framed from them as the model's contract says, the others by their box and
each --margin), then the classifier. Detector variants are compared in one run:

    .venv/bin/python benchmarks/scene_accuracy.py --data ../shared/data/fer2013 --split test --limit 600 \\
        --detector auto --detector haar --detector haar:scale_factor=1.1 [--margin 0,0.1] [--json out.json]

Tune on `--split train` and choose on `test`, as for the model.

FER-2013's tight crops (no hair, no neck, hard edges) understate a detector trained on faces in context: CNN
detectors miss many small ones. `--photos` pastes whole photos from a `<label>/` folder instead (default data:
../shared/data/photos, a face with its hair, forehead and some background): `--face-px` is then the pasted
photo's side, of which the face is about 80%.

    .venv/bin/python benchmarks/scene_accuracy.py --photos --limit 600 --face-px 120,180,250 \
        --detector auto --detector haar
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from convert.model_io import to_model_order  # noqa: E402
from edge.capture.sources import read_image  # noqa: E402
from edge.classify import EmotionClassifier  # noqa: E402
from edge.config import DetectorConfig, validate_layer  # noqa: E402
from edge.daemon import default_model_path  # noqa: E402
from edge.detect import DetectorError, make_detector  # noqa: E402
from edge.preprocess import faces_to_batch, to_gray  # noqa: E402
from train.data import DataError, load_dataset  # noqa: E402

FRAME = (480, 640)  # (height, width): the daemon's default camera size
# scikit-image photos with no human face in them (its "camera" and "astronaut" have one).
PHOTOS = ("coffee", "rocket", "chelsea", "brick", "grass", "gravel", "page", "moon", "text")
BACKGROUNDS = ("flat", "photo", "dark")
FOUND_WITHIN = 0.5  # a detection whose centre is this close (in face widths, per axis) has found the face


def photo_backgrounds() -> list[np.ndarray]:
    import skimage.data

    frames = []
    for name in PHOTOS:
        image = getattr(skimage.data, name)()
        if image.ndim == 3:
            image = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        frames.append(cv2.resize(image, FRAME[::-1], interpolation=cv2.INTER_AREA))
    return frames


def make_scene(face: np.ndarray, face_px: int, background: str, photos, rng) -> tuple[np.ndarray, tuple]:
    """One grey frame holding `face` resized to face_px; returns it and the face's [x, y, w, h]."""
    height, width = FRAME
    if background == "flat":
        frame = np.clip(128 + rng.normal(0, 8, FRAME), 0, 255).astype(np.uint8)
    elif background == "dark":
        frame = np.clip(40 + rng.normal(0, 4, FRAME), 0, 255).astype(np.uint8)
    else:
        frame = photos[int(rng.integers(len(photos)))].copy()
    shrink = face.shape[0] > face_px
    big = cv2.resize(face, (face_px, face_px), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    if background == "dark":
        big = (big * 0.35).astype(np.uint8)
    x, y = int(rng.integers(0, width - face_px + 1)), int(rng.integers(0, height - face_px + 1))
    frame[y : y + face_px, x : x + face_px] = big
    return frame, (x, y, face_px, face_px)


def centre_offset(box, face) -> float:
    """How far the box's centre lies from the pasted face's centre, in face widths (per axis, the larger).

    A detection whose centre falls inside the face (under FOUND_WITHIN) has found it, however it frames it:
    detectors frame faces differently, and what that does to accuracy is what the scores measure.
    """
    dx = abs(box[0] + box[2] / 2 - face[0] - face[2] / 2)
    dy = abs(box[1] + box[3] / 2 - face[1] - face[3] / 2)
    return max(dx, dy) / face[2]


def parse_detector(spec: str) -> DetectorConfig:
    """'haar' or 'haar:scale_factor=1.1,min_neighbors=4' -> a DetectorConfig, checked as the daemon's config is."""
    kind, _, overrides = spec.partition(":")
    layer = {"type": kind}
    for item in filter(None, overrides.split(",")):
        key, _, value = item.partition("=")
        layer[key.strip()] = yaml.safe_load(value)  # "1.1" -> 1.1, "3" -> 3, as in the YAML config
    checked = validate_layer(layer, f" (from --detector {spec})", DetectorConfig, "detector.")
    return replace(DetectorConfig(), **checked)


def score(detector, classifier, faces, targets, face_px, background, photos, margins, seed) -> dict:
    """Run one detector over one kind of scene; counts, found faces per label and the median detection time."""
    rng = np.random.default_rng([seed, face_px, BACKGROUNDS.index(background)])
    framing = classifier.contract.face_framing
    found, false_boxes, seconds = 0, 0, []
    correct = dict.fromkeys(margins, 0)
    labels = classifier.labels
    found_by_label, faces_by_label = np.zeros(len(labels)), np.bincount(targets, minlength=len(labels))
    for face, target in zip(faces, targets, strict=True):
        frame, truth = make_scene(face, face_px, background, photos, rng)
        start = time.perf_counter()
        detections = detector.detect(frame)
        seconds.append(time.perf_counter() - start)
        offsets = [centre_offset(d.box, truth) for d in detections]
        best = int(np.argmin(offsets)) if offsets else -1
        false_boxes += sum(o >= FOUND_WITHIN for o in offsets)
        if best < 0 or offsets[best] >= FOUND_WITHIN:
            continue
        found += 1
        found_by_label[target] += 1
        face = detections[best]
        for margin in margins:  # a detector that finds the eyes frames from them, as the contract says
            batch = faces_to_batch(frame, [face.box], classifier.input_size, margin, [face.eyes], framing)
            correct[margin] += int(classifier.classify(batch)[0].argmax() == target)
    n = len(faces)
    return {
        "faces": n,
        "found": found / n,
        "false_per_frame": false_boxes / n,
        "found_by_label": {
            label: found_by_label[i] / faces_by_label[i]
            for i, label in enumerate(labels)
            if faces_by_label[i]
        },
        "detect_ms_median": 1000 * statistics.median(seconds),
        "accuracy_of_found": {str(m): correct[m] / max(1, found) for m in margins},
        "end_to_end": {str(m): correct[m] / n for m in margins},
    }


def load_crops(args, classifier):
    """A seeded sample of a FER-style split: (48x48 faces, targets in model order, accuracy on the crops)."""
    if not args.data:
        raise ValueError("--data is required (FER-2013 folders), or --photos")
    dataset = load_dataset(args.data, size=classifier.input_size)
    if args.split not in dataset.splits:
        raise ValueError(f"no split {args.split!r} in {args.data} (it has {sorted(dataset.splits)})")
    split = dataset.splits[args.split]
    rng = np.random.default_rng(args.seed)
    chosen = np.sort(rng.permutation(len(split))[: args.limit])
    faces = split.images[chosen]
    targets = to_model_order(split.labels[chosen], dataset.labels, classifier.labels)
    crops = classifier.classify(faces[..., None]) if len(faces) else np.empty((0, 1))
    return faces, targets, float((crops.argmax(axis=1) == targets).mean())


def load_photo_faces(args, classifier):
    """A seeded sample of whole photos from <label>/ folders, gray: (images, targets, None)."""
    from photo_accuracy import DEFAULT_DATA, load_photos

    args.data = args.data or str(DEFAULT_DATA)
    paths, targets, _ = load_photos(Path(args.data), classifier.labels, args.limit, args.seed)
    images = [read_image(p) for p in paths]
    keep = [i for i, image in enumerate(images) if image is not None]
    return [to_gray(images[i]) for i in keep], targets[keep], None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="labelled faces (FER-2013 folders or <label>/ folders)")
    parser.add_argument("--photos", action="store_true", help="paste whole photos of a <label>/ folder")
    parser.add_argument("--split", default="test", help="split to paste (default test)")
    parser.add_argument("--model", help="a .tflite with its .json contract (default: the shipped model)")
    parser.add_argument("--limit", type=int, default=600, help="faces to use, a seeded random sample")
    parser.add_argument("--face-px", default="96,144", help="comma-separated pasted face sizes in pixels")
    parser.add_argument("--backgrounds", default=",".join(BACKGROUNDS), help="flat, photo and/or dark")
    parser.add_argument(
        "--detector", action="append", help="type[:key=value,...] of detector settings; repeat to compare"
    )
    parser.add_argument("--margin", default="", help="crop margins to try (default: the model's own)")
    parser.add_argument("--per-label", action="store_true", help="also print the found faces per label")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    try:
        sizes = [int(v) for v in args.face_px.split(",")]
        backgrounds = args.backgrounds.split(",")
        if any(b not in BACKGROUNDS for b in backgrounds) or any(not 48 <= s <= min(FRAME) for s in sizes):
            raise ValueError(f"--backgrounds takes {BACKGROUNDS}; --face-px 48..{min(FRAME)}")
        if args.limit < 1:
            raise ValueError("--limit must be at least 1")
        specs = args.detector or ["auto"]
        detectors = [(spec, make_detector(parse_detector(spec))) for spec in specs]
        classifier = EmotionClassifier(args.model or default_model_path())
        margins = [float(v) for v in args.margin.split(",")] if args.margin else []
        margins = margins or [classifier.contract.crop_margin]
        if args.photos:
            faces, targets, direct = load_photo_faces(args, classifier)
        else:
            faces, targets, direct = load_crops(args, classifier)
    except (ValueError, DetectorError, DataError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    what = f"whole photos from {args.data}" if args.photos else f"faces of '{args.split}'"
    print(f"{len(faces)} {what}; on the crops themselves: " + ("n/a" if direct is None else f"{direct:.1%}"))
    print(
        f"{'detector':42s} {'scene':6s} {'px':>4s} {'found':>6s} {'false':>6s} {'ms':>6s}  end-to-end by margin"
    )
    photos = photo_backgrounds() if "photo" in backgrounds else None  # decoded once for every row
    results = []
    for spec, detector in detectors:
        for background in backgrounds:
            for face_px in sizes:
                row = score(
                    detector, classifier, faces, targets, face_px, background, photos, margins, args.seed
                )
                row.update(detector=spec, background=background, face_px=face_px)
                results.append(row)
                by_margin = "  ".join(f"{m}: {v:.1%}" for m, v in row["end_to_end"].items())
                print(
                    f"{spec:42s} {background:6s} {face_px:4d} {row['found']:6.1%} "
                    f"{row['false_per_frame']:6.2f} {row['detect_ms_median']:6.1f}  {by_margin}",
                    flush=True,
                )
                if args.per_label:
                    print("    found: " + ", ".join(f"{k} {v:.0%}" for k, v in row["found_by_label"].items()))
    if args.json:
        split = "photos" if args.photos else args.split
        report = {"split": split, "faces": len(faces), "crop_accuracy": direct, "results": results}
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
