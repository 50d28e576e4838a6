"""Where FER-2013's crops put the eyes: the framing a classifier trained on them expects.

Each 48x48 face of a FER-style folder is enlarged 3x and set in a mid-grey 320x320 frame (the detector needs
some context around a tight crop), BlazeFace full range finds its landmarks, and the eye centre and eye
distance are mapped back into crop units (fractions of the crop's side), with the head's roll. The medians are
edge/align.py's reference point for `framing` (eye_distance, eye_y); the framing shipped was then chosen on real
photos (python -m benchmarks.photo_accuracy --framing eyes:...):

    .venv/bin/python -m benchmarks.fer_framing --data ../shared/data/fer2013 --split train --limit 1500
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from edge.align import eye_angle
from edge.config import DetectorConfig
from edge.detect import largest, make_detector
from train.data import DataError, load_dataset

ENLARGE = 3  # 48 px faces become 144 px, a size the full-range model finds reliably
FRAME_SIDE = 320


def eye_framing(face: np.ndarray, detector) -> tuple[float, float, float, float] | None:
    """(eye centre x, eye centre y, eye distance) in crop units and the roll in degrees, or None if not found."""
    import cv2

    side = face.shape[0] * ENLARGE
    offset = (FRAME_SIDE - side) // 2
    frame = np.full((FRAME_SIDE, FRAME_SIDE), 128, np.uint8)
    frame[offset : offset + side, offset : offset + side] = cv2.resize(face, (side, side))
    found = largest([d for d in detector.detect(frame) if d.eyes is not None])
    if found is None:
        return None
    (lx, ly), (rx, ry) = found.eyes
    centre_x, centre_y = ((lx + rx) / 2 - offset) / side, ((ly + ry) / 2 - offset) / side
    return centre_x, centre_y, float(np.hypot(rx - lx, ry - ly)) / side, eye_angle(found.eyes)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="FER-2013 folders (or any <split>/<label>/ face crops)")
    parser.add_argument("--split", default="train")
    parser.add_argument("--limit", type=int, default=1500, help="faces, a seeded random sample")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    try:
        if args.limit < 1:
            raise ValueError("--limit must be at least 1")
        dataset = load_dataset(args.data, size=(48, 48))
        if args.split not in dataset.splits:
            raise ValueError(f"no split {args.split!r} in {args.data} (it has {sorted(dataset.splits)})")
    except (ValueError, DataError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    images = dataset.splits[args.split].images
    chosen = np.random.default_rng(args.seed).permutation(len(images))[: args.limit]
    detector = make_detector(DetectorConfig(type="blazeface_full"))
    rows = [r for r in (eye_framing(images[i], detector) for i in chosen) if r is not None]
    report = {"faces": len(chosen), "found": len(rows)}
    print(f"{len(rows)} of {len(chosen)} faces of '{args.split}' found")
    columns = np.array(rows).reshape(-1, 4).T  # four empty columns when no face was found
    for name, column in zip(("eye_x", "eye_y", "eye_distance", "roll_degrees"), columns, strict=True):
        if not len(column):
            continue
        p10, median, p90 = (float(v) for v in np.percentile(column, [10, 50, 90]))
        report[name] = {"p10": p10, "median": median, "p90": p90}
        print(f"{name:13s} median {median:7.3f}   p10 {p10:7.3f}   p90 {p90:7.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
