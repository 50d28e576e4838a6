"""Photo accuracy: the daemon's detector, framing and classifier over real labelled photos of people.

`emotion-convert evaluate` scores the model on ready-made 48x48 crops; users point a camera at people. This
runs each photo of a `<label>/*.jpg|png` folder (default ../shared/data/photos, 2,849 photos; read its README)
through what the daemon does with a frame: the image decoded as the folder source decodes it, the detector
(`make_detector`, settings checked by the daemon's own config validation), the face cut as the model's contract
says (or as each --framing says), the classifier. The largest detection is taken as the photo's labelled face;
a photo with none counts as wrong end to end. Detectors and framings are compared in one run:

    .venv/bin/python -m benchmarks.photo_accuracy --detector haar --detector blazeface_full \\
        --framing contract --framing box:margin=0.1 --framing eyes:eye_distance=0.36,eye_y=0.4 [--json out.json]

Framing specs: `contract` (the model's own), `box:margin=M` (the detector box grown by M on each side), and
`eyes:eye_distance=D,eye_y=Y[,align=false]` (edge/align.py; detectors without eyes fall back to the box).
Labels are matched to the model's by name; labels the model does not know are skipped and counted.
`--split held-out` scores only the person-disjoint half that `emotion-train --photos` never trains on
(train/photos.py); `--json` also holds each row's confusion matrix and per-label precision/recall/F1.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import yaml

from benchmarks.common import DEV_PHOTOS, parse_detector
from edge.align import Framing
from edge.capture.sources import read_image
from edge.classify import EmotionClassifier
from edge.daemon import default_model_path
from edge.detect import DetectorError, largest, make_detector
from edge.model_contract import ContractError, ModelContract
from edge.preprocess import faces_to_batch
from train.photos import person_of, split_of

EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


def parse_framing(spec: str, contract: ModelContract) -> tuple[float, Framing | None]:
    """'contract' | 'box:margin=0.1' | 'eyes:eye_distance=0.36,eye_y=0.4' -> (box margin, eye framing or None).

    Checked by the model contract's own validation, so a framing that could not ship is refused here too.
    """
    kind, _, rest = spec.partition(":")
    values = {}
    for item in filter(None, rest.split(",")):
        key, _, value = item.partition("=")
        values[key.strip()] = yaml.safe_load(value)
    if kind == "contract" and not values:
        return float(contract.crop_margin), contract.face_framing
    if kind == "box" and set(values) <= {"margin"}:
        checked = ModelContract(labels=contract.labels, crop_margin=values.get("margin", 0.0))
        checked.validate(f"--framing {spec}")
        return float(checked.crop_margin), None
    if kind == "eyes":
        margin = float(contract.crop_margin)
        return margin, Framing.from_dict(values, f"--framing {spec}")
    raise ValueError(
        f"--framing {spec}: expected contract, box:margin=M or eyes:eye_distance=D,eye_y=Y[,align=B]"
    )


def in_split(path: Path, split: str) -> bool:
    """Whether a photo belongs to the --split asked for: the person-disjoint halves of train/photos.py, the
    same ones `emotion-train --photos` trains on (train) and holds out (held-out)."""
    return split == "all" or split_of(person_of(path.name)) == split


def load_photos(root: Path, labels: list[str], limit: int, seed: int, split: str = "all"):
    """(paths, label indices in model order, skipped label names): every photo of the split, or a seeded
    sample of them."""
    if not root.is_dir():
        raise ValueError(f"{root} is not a folder of <label>/ photo folders")
    paths, targets, skipped = [], [], {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in EXTENSIONS and in_split(p, split))
        if folder.name not in labels:
            skipped[folder.name] = len(files)
            continue
        paths += files
        targets += [labels.index(folder.name)] * len(files)
    if not paths:
        raise ValueError(
            f"{root}: no photos{'' if split == 'all' else ' of the ' + split + ' half'} in folders named after "
            f"the model's labels {labels}"
        )
    order = np.random.default_rng(seed).permutation(len(paths))[:limit] if limit else np.arange(len(paths))
    order = np.sort(order)
    return [paths[i] for i in order], np.asarray(targets)[order], skipped


def detect_all(detector, paths):
    """Per photo: (image, the largest detection or None, seconds). Unreadable photos are None."""
    results = []
    for path in paths:
        image = read_image(path)
        if image is None:
            results.append((None, None, 0.0))
            continue
        start = time.perf_counter()
        detections = detector.detect(image)
        seconds = time.perf_counter() - start
        results.append((image, largest(detections), seconds))
    return results


def macro_f1(targets: np.ndarray, predicted: np.ndarray, classes: int) -> float:
    """Mean F1 over the labels present in `targets`; predicted -1 (no face) is wrong for every label."""
    scores = []
    for c in np.unique(targets):
        tp = np.sum((predicted == c) & (targets == c))
        fp, fn = np.sum((predicted == c) & (targets != c)), np.sum((predicted != c) & (targets == c))
        scores.append(2 * tp / max(1, 2 * tp + fp + fn))
    return float(np.mean(scores))


def confusion_report(targets: np.ndarray, predicted: np.ndarray, labels: list[str]) -> dict:
    """The confusion matrix (rows = true label, columns = predicted label, then "no face") and per-label
    precision/recall/F1/support. A photo with no face found (-1) is a miss for its label's recall and is
    nobody's prediction, so it lowers no label's precision."""
    k = len(labels)
    confusion = np.zeros((k, k + 1), np.int64)
    np.add.at(confusion, (targets, np.where(predicted < 0, k, predicted)), 1)
    per_class = {}
    for c, label in enumerate(labels):
        tp, support, called = confusion[c, c], confusion[c].sum(), confusion[:, c].sum()
        precision, recall = tp / called if called else 0.0, tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[label] = {
            "precision": float(precision),
            "recall": float(recall),
            "f1": float(f1),
            "support": int(support),
        }
    return {"columns": [*labels, "no face"], "confusion": confusion.tolist(), "per_class": per_class}


def score(classifier, detected, targets, margin: float, framing: Framing | None) -> dict:
    labels = classifier.labels
    predicted = np.full(len(targets), -1)
    for i, (image, detection, _) in enumerate(detected):
        if detection is None:
            continue
        batch = faces_to_batch(
            image, [detection.box], classifier.input_size, margin, [detection.eyes], framing
        )
        predicted[i] = int(classifier.classify(batch)[0].argmax())
    found = predicted >= 0
    right = predicted == targets
    per_label = {}
    for c, label in enumerate(labels):
        mask = targets == c
        if mask.any():
            per_label[label] = {
                "photos": int(mask.sum()),
                "found": float(found[mask].mean()),
                "recall": float(right[mask].mean()),
            }
    return {
        "photos": len(targets),
        "found": float(found.mean()),
        "accuracy_of_found": float(right[found].mean()) if found.any() else 0.0,
        "end_to_end": float(right.mean()),
        "macro_f1": macro_f1(targets, predicted, len(labels)),
        "per_label": per_label,
        **confusion_report(targets, predicted, labels),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DEV_PHOTOS), help="<label>/ folders of photos")
    parser.add_argument("--model", help="a .tflite with its .json contract (default: the shipped model)")
    parser.add_argument("--detector", action="append", help="type[:key=value,...]; repeat to compare")
    parser.add_argument("--framing", action="append", help="contract | box:margin=M | eyes:...; repeat")
    parser.add_argument("--limit", type=int, default=0, help="a seeded random sample of this many (0 = all)")
    parser.add_argument("--per-label", action="store_true", help="also print found and recall per label")
    parser.add_argument(
        "--split",
        choices=("all", "held-out", "train"),
        default="all",
        help="score only one person-disjoint half (train/photos.py; emotion-train --photos trains on 'train')",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    try:
        if args.limit < 0:
            raise ValueError("--limit must be 0 (all) or positive")
        classifier = EmotionClassifier(args.model or default_model_path())
        framings = [(s, *parse_framing(s, classifier.contract)) for s in args.framing or ["contract"]]
        detectors = [(s, make_detector(parse_detector(s))) for s in args.detector or ["auto"]]
        paths, targets, skipped = load_photos(
            Path(args.data), classifier.labels, args.limit, args.seed, args.split
        )
    except (ValueError, DetectorError, ContractError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    counts = ", ".join(f"{lab} {int(np.sum(targets == i))}" for i, lab in enumerate(classifier.labels))
    print(
        f"{len(paths)} photos ({args.split}) from {args.data}: {counts}"
        + (f"; skipped labels {skipped}" if skipped else "")
    )
    print(
        f"{'detector':30s} {'framing':44s} {'found':>6s} {'ms':>5s} {'acc|found':>9s} {'e2e':>6s} {'F1':>5s}"
    )
    results = []
    for spec, detector in detectors:
        detected = detect_all(detector, paths)
        ms = 1000 * statistics.median(s for _, _, s in detected)
        for framing_spec, margin, framing in framings:
            row = score(classifier, detected, targets, margin, framing)
            row.update(
                detector=spec, name=getattr(detector, "name", spec), framing=framing_spec, detect_ms=ms
            )
            results.append(row)
            print(
                f"{spec:30s} {framing_spec:44s} {row['found']:6.1%} {ms:5.1f} {row['accuracy_of_found']:9.1%} "
                f"{row['end_to_end']:6.1%} {row['macro_f1']:5.3f}",
                flush=True,
            )
            if args.per_label:
                print(
                    "    "
                    + ", ".join(
                        f"{k} ({v['photos']}): found {v['found']:.0%} recall {v['recall']:.0%}"
                        for k, v in row["per_label"].items()
                    )
                )
    if args.json:
        report = {
            "data": str(args.data),
            "split": args.split,
            "photos": len(paths),
            "skipped_labels": skipped,
            "results": results,
        }
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
