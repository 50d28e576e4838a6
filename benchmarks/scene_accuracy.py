"""Scene accuracy: labelled face crops pasted into 640x480 frames, found by the daemon's detector and
classified by its model the way the daemon does it. A face the detector misses counts as wrong.

`emotion-convert evaluate` scores the model on ready-made face crops; a camera gives the daemon whole frames,
so what users get is detection recall times the accuracy on the detector's crops. Each face of the split is
enlarged to --face-px, pasted at a random place into a background (flat grey, a scikit-image photo without
people, or a dark room with a dimmed face), and the frame goes through `make_detector(...).detect`, then
`faces_to_batch` (faces with eyes framed from them as the model's contract says, the others by their box and
each --margin), then the classifier. Detector variants are compared in one run:

    .venv/bin/python -m benchmarks.scene_accuracy --data ../shared/data/fer2013 --split test --limit 600 \\
        --detector auto --detector haar --detector haar:scale_factor=1.1 [--margin 0,0.1] [--json out.json]

Tune on `--split train` and choose on `test`, as for the model.

FER-2013's tight crops (no hair, no neck, hard edges) understate a detector trained on faces in context: CNN
detectors miss many small ones. `--photos` pastes whole photos from a `<label>/` folder instead (default data:
../shared/data/photos, a face with its hair, forehead and some background): `--face-px` is then the pasted
photo's side, of which the face is about 80%.

    .venv/bin/python -m benchmarks.scene_accuracy --photos --limit 600 --face-px 120,180,250 \
        --detector auto --detector haar

`--room` builds what a room camera sees instead: 640x480 frames holding one to four dev photos each, scaled so
their faces are 24-200 px wide (equal numbers in each size bin), pasted into a background (a wall, a lit
wall, a scikit-image photo without people), with camera noise; half the frames in colour (the dev set's colour
photos), half grey (every photo, as a grey or infrared camera sees it), one in DIM_EVERY dimmed. Each photo's
face is placed where at least two of REFERENCE_DETECTORS agree on it at the photo's own size (photos where
they do not, or where they agree on a second face, are left out and counted). It reports, per detector, the
faces found by face-width bin, false faces per frame, end-to-end accuracy and detect ms:

    .venv/bin/python -m benchmarks.scene_accuracy --room --split held-out --frames 600 \
        --detector yunet --detector blazeface_full --detector haar [--json out.json]
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

from benchmarks.common import parse_detector
from convert.model_io import to_model_order
from edge.capture.sources import read_image
from edge.classify import EmotionClassifier
from edge.config import DetectorConfig
from edge.daemon import default_model_path
from edge.detect import DetectorError, make_detector
from edge.preprocess import faces_to_batch, to_gray
from edge.track import iou
from train.data import DataError, load_dataset

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
    from benchmarks.common import DEV_PHOTOS
    from benchmarks.photo_accuracy import load_photos

    args.data = args.data or str(DEV_PHOTOS)
    paths, targets, _ = load_photos(Path(args.data), classifier.labels, args.limit, args.seed)
    images = [read_image(p) for p in paths]
    keep = [i for i, image in enumerate(images) if image is not None]
    return [to_gray(images[i]) for i in keep], targets[keep], None


# --- room scenes (--room) ---------------------------------------------------------------------------------

ROOM_BINS = (24, 32, 48, 64, 96, 140, 200)  # face-width bin edges, pixels: [24, 32), [32, 48), ... [140, 200]
REFERENCE_DETECTORS = ("yunet", "blazeface_full", "haar")
AGREE_IOU = 0.3  # two reference detections of one face overlap at least this much (boxes differ in style)
DIM_EVERY = 6  # one frame in DIM_EVERY is a dim room (everything at DIM_GAIN, camera noise on top)
DIM_GAIN = 0.3
NOISE = 3.0  # camera noise, grey levels (standard deviation)
MAX_FACES = 4
GAP = 8  # pixels kept free between two pasted photos


def reference_face(image, detectors) -> tuple | None:
    """The photo's face at its own size: the mean box of the largest face that at least two detectors find.

    None when no two agree, or when two agree on a second face (a second person in the photo would be a
    "false" face in the scene).
    """
    found = [d.box for detector in detectors for d in detector.detect(image)]
    clusters: list[list] = []
    for box in sorted(found, key=lambda b: -b[2] * b[3]):
        home = next((c for c in clusters if iou(c[0], box) >= AGREE_IOU), None)
        if home is None:
            clusters.append([box])
        else:
            home.append(box)
    agreed = [c for c in clusters if len(c) >= 2]
    if len(agreed) != 1:
        return None
    return tuple(float(v) for v in np.mean(agreed[0], axis=0))


def is_colour(image: np.ndarray) -> bool:
    """A photo with colour in it (not a grey photo stored as three equal channels)."""
    if image.ndim != 3 or image.shape[2] < 3:
        return False
    return float(np.abs(image[..., 0].astype(np.int16) - image[..., 1]).mean()) > 1.5


def load_room_photos(args, classifier):
    """(photos, reference boxes, targets, colour flags, left-out count) of the dev photos' --split."""
    from benchmarks.common import DEV_PHOTOS
    from benchmarks.photo_accuracy import load_photos

    args.data = args.data or str(DEV_PHOTOS)
    paths, targets, _ = load_photos(Path(args.data), classifier.labels, 0, args.seed, args.split)
    referees = [make_detector(replace(DetectorConfig(), type=kind)) for kind in REFERENCE_DETECTORS]
    rng = np.random.default_rng(args.seed)
    order = rng.permutation(len(paths))
    photos, boxes, kept, colour, left_out = [], [], [], [], 0
    for i in order:
        image = read_image(paths[i])
        if image is None:
            continue
        if not is_colour(image) and sum(1 for c in colour if not c) >= args.limit:
            continue  # enough grey photos; every colour photo is kept (there are few)
        box = reference_face(image, referees)
        if box is None:
            left_out += 1
            continue
        photos.append(image if image.ndim == 2 else image[..., :3])
        boxes.append(box)
        kept.append(targets[i])
        colour.append(is_colour(image))
    return photos, boxes, np.asarray(kept), np.asarray(colour), left_out


def room_background(colour: bool, kind: int, photos, rng) -> np.ndarray:
    """A 640x480 background: a plain wall (0), a wall lit from one side (1), or a photo without people (2)."""
    height, width = FRAME
    if kind == 2:
        frame = photos[int(rng.integers(len(photos)))].astype(np.float32)
        return frame if colour else cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
    tint = rng.uniform(0.75, 1.25, 3) if colour else np.ones(1)
    level = rng.uniform(50, 210) * tint
    if kind == 1:
        ramp = np.linspace(rng.uniform(0.4, 0.8), rng.uniform(1.0, 1.3), width, dtype=np.float32)
        level = level * (ramp if rng.random() < 0.5 else ramp[::-1])[None, :, None]
    frame = np.broadcast_to(level, (height, width, len(tint))).astype(np.float32)
    return frame if colour else frame[..., 0]


def colour_backgrounds() -> list[np.ndarray]:
    """scikit-image's photos without a human face, in colour where they have it, at 640x480 (BGR)."""
    import skimage.data

    frames = []
    for name in PHOTOS:
        image = getattr(skimage.data, name)()
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR if image.ndim == 3 else cv2.COLOR_GRAY2BGR)
        frames.append(cv2.resize(image, FRAME[::-1], interpolation=cv2.INTER_AREA))
    return frames


def face_bin(width: float) -> int:
    """The ROOM_BINS bin a face width falls in (the last bin includes its upper edge)."""
    return min(int(np.searchsorted(ROOM_BINS, width, side="right")) - 1, len(ROOM_BINS) - 2)


def place(sizes, rng) -> list[tuple[int, int]]:
    """Top-left corners for rectangles of (width, height) `sizes` inside the frame, apart by GAP; a rectangle
    that finds no free place in 50 tries is left out (its corner is None)."""
    height, width = FRAME
    taken, corners = [], []
    for w, h in sizes:
        corner = None
        for _ in range(50):
            x, y = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
            if all(
                x + w + GAP <= a or a + c + GAP <= x or y + h + GAP <= b or b + d + GAP <= y
                for a, b, c, d in taken
            ):
                corner = (x, y)
                taken.append((x, y, w, h))
                break
        corners.append(corner)
    return corners


def paste(frame: np.ndarray, photo: np.ndarray, x: int, y: int) -> None:
    """The photo into the frame at (x, y), as the other scenes paste faces (and the held-back scenes do)."""
    frame[y : y + photo.shape[0], x : x + photo.shape[1]] = photo


def room_scene(index: int, pool, backgrounds, seed: int):
    """Frame `index` of the run: (uint8 frame, [(face box, target)], colour, dim), the same for every detector."""
    photos, boxes, targets, colour_flags = pool
    rng = np.random.default_rng([seed, index])
    colour, dim = index % 2 == 0, rng.random() < 1 / DIM_EVERY
    frame = room_background(colour, index // 2 % 3, backgrounds, rng)
    choices = np.flatnonzero(colour_flags) if colour else np.arange(len(photos))
    count = int(rng.integers(1, MAX_FACES + 1))
    # Face widths: bins drawn without repeats (each bin equally likely), log-uniform inside one.
    bins = rng.permutation(len(ROOM_BINS) - 1)[:count]
    widths = [float(np.exp(rng.uniform(np.log(ROOM_BINS[b]), np.log(ROOM_BINS[b + 1])))) for b in bins]
    picks = [int(rng.choice(choices)) for _ in widths]
    scaled = []
    for width, pick in sorted(zip(widths, picks, strict=True), reverse=True):  # largest first: they fit
        scale = width / boxes[pick][2]
        photo = photos[pick]
        size = (max(1, round(photo.shape[1] * scale)), max(1, round(photo.shape[0] * scale)))
        if size[0] > FRAME[1] or size[1] > FRAME[0]:
            continue
        small = cv2.resize(photo, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        if colour and small.ndim == 2:
            small = cv2.cvtColor(small, cv2.COLOR_GRAY2BGR)
        elif not colour and small.ndim == 3:
            small = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY)
        scaled.append((small, scale, pick))
    faces = []
    for (small, scale, pick), corner in zip(
        scaled, place([s.shape[1::-1] for s, _, _ in scaled], rng), strict=True
    ):
        if corner is None:
            continue
        paste(frame, small, *corner)
        bx, by, bw, bh = boxes[pick]
        faces.append(
            ((corner[0] + bx * scale, corner[1] + by * scale, bw * scale, bh * scale), int(targets[pick]))
        )
    if dim:
        frame = frame * DIM_GAIN
    frame = frame + rng.normal(0, NOISE, frame.shape)
    return np.clip(frame, 0, 255).astype(np.uint8), faces, colour, dim


def match(detections, faces) -> tuple[list, int]:
    """Each face's detection (or None) and the count of false faces.

    A face takes the nearest detection whose centre lies within FOUND_WITHIN face widths of its centre; each
    detection serves one face; every detection left over (off every face, or a second one on a face) is false.
    """
    pairs = sorted(
        (centre_offset(d.box, box), f, k)
        for f, (box, _) in enumerate(faces)
        for k, d in enumerate(detections)
    )
    taken_f, taken_d, chosen = set(), set(), [None] * len(faces)
    for offset, f, k in pairs:
        if offset < FOUND_WITHIN and f not in taken_f and k not in taken_d:
            taken_f.add(f)
            taken_d.add(k)
            chosen[f] = detections[k]
    return chosen, len(detections) - len(taken_d)


def score_room(detector, classifier, frames: int, pool, backgrounds, seed: int) -> dict:
    """One detector over the run's frames: per face its bin, colour, dim, found and right; per frame false faces
    and detect time, summed up by summarise_room."""
    framing = classifier.contract.face_framing
    margin = classifier.contract.crop_margin
    records, false_faces, seconds = [], [], []
    scanned_before = getattr(
        detector, "scanned_px", None
    )  # YuNet: the network's pixels, second looks included
    for index in range(frames):
        frame, faces, colour, dim = room_scene(index, pool, backgrounds, seed)
        start = time.perf_counter()
        detections = detector.detect(frame)
        seconds.append(time.perf_counter() - start)
        chosen, false = match(detections, faces)
        false_faces.append(false)
        found = [d for d in chosen if d is not None]
        right = iter([])
        if found:
            batch = faces_to_batch(
                frame, [d.box for d in found], classifier.input_size, margin, [d.eyes for d in found], framing
            )
            right = iter(classifier.classify(batch).argmax(axis=1))
        for (box, target), d in zip(faces, chosen, strict=True):
            correct = d is not None and int(next(right)) == target
            records.append(
                {
                    "bin": face_bin(box[2]),
                    "colour": colour,
                    "dim": dim,
                    "found": d is not None,
                    "right": correct,
                }
            )
    summary = summarise_room(records, false_faces, seconds)
    if scanned_before is not None:
        summary["scanned_px_per_frame"] = (detector.scanned_px - scanned_before) / max(1, frames)
    return summary


def summarise_room(records: list[dict], false_faces: list[int], seconds: list[float]) -> dict:
    """Found rate by (colour|grey) x face-width bin, also >= 32 px, 24-32 px and dim; false faces per frame;
    end to end (right / all faces); median detect ms."""

    def rates(subset):
        n = len(subset)
        return {
            "faces": n,
            "found": sum(r["found"] for r in subset) / n if n else None,
            "end_to_end": sum(r["right"] for r in subset) / n if n else None,
        }

    out: dict = {"frames": len(false_faces), "faces": len(records)}
    for mode, flag in (("colour", True), ("grey", False)):
        group = [r for r in records if r["colour"] == flag]
        out[mode] = {
            "all": rates(group),
            "24-32": rates([r for r in group if r["bin"] == 0]),
            ">=32": rates([r for r in group if r["bin"] >= 1]),
            "dim": rates([r for r in group if r["dim"]]),
            "by_bin": {
                f"{ROOM_BINS[b]}-{ROOM_BINS[b + 1]}": rates([r for r in group if r["bin"] == b])
                for b in range(len(ROOM_BINS) - 1)
            },
        }
    out["all"] = rates(records)
    out["false_per_frame"] = sum(false_faces) / max(1, len(false_faces))
    out["detect_ms_median"] = 1000 * statistics.median(seconds) if seconds else 0.0
    return out


def _percent(value, width: int) -> str:
    return f"{'n/a':>{width}s}" if value is None else f"{value:{width}.1%}"


def run_room(args, specs_and_detectors, classifier) -> list[dict]:
    """--room: every detector over the same frames; prints one block per detector and returns the rows."""
    photos, boxes, targets, colour, left_out = load_room_photos(args, classifier)
    if not colour.any() or colour.all():
        raise ValueError(f"--room needs colour and grey photos in {args.data} ({args.split})")
    print(
        f"{len(photos)} photos of {args.data} ({args.split}; {int(colour.sum())} in colour), {left_out} left out "
        f"(no two of {', '.join(REFERENCE_DETECTORS)} agree on one face); {args.frames} frames of 640x480"
    )
    pool, backgrounds = (photos, boxes, targets, colour), colour_backgrounds()
    bins = [f"{ROOM_BINS[b]}-{ROOM_BINS[b + 1]}" for b in range(len(ROOM_BINS) - 1)]
    print(
        f"{'detector':34s} {'':6s} "
        + " ".join(f"{b:>7s}" for b in bins)
        + f" {'dim':>6s} {'false':>6s} {'e2e':>6s} {'ms':>6s}"
    )
    rows = []
    for spec, detector in specs_and_detectors:
        row = score_room(detector, classifier, args.frames, pool, backgrounds, args.seed)
        row.update(detector=spec, left_out=left_out)
        rows.append(row)
        for mode in ("colour", "grey"):
            part = row[mode]
            found = " ".join(_percent(part["by_bin"][b]["found"], 7) for b in bins)
            print(
                f"{spec:34s} {mode:6s} {found} {_percent(part['dim']['found'], 6)} {row['false_per_frame']:6.3f} "
                f"{_percent(part['all']['end_to_end'], 6)} {row['detect_ms_median']:6.1f}",
                flush=True,
            )
    return rows


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
    parser.add_argument(
        "--room", action="store_true", help="room-camera scenes from the dev photos (see above)"
    )
    parser.add_argument("--frames", type=int, default=600, help="--room: frames to build (half colour)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    if args.room:
        return main_room(args)
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


def main_room(args) -> int:
    """--room: the photos of --split (default test means all: the dev photos have train and held-out halves)."""
    try:
        if args.frames < 1 or args.limit < 1:
            raise ValueError("--frames and --limit must be at least 1")
        args.split = {"test": "all"}.get(args.split, args.split)
        if args.split not in ("all", "train", "held-out"):
            raise ValueError(f"--room --split takes all, train or held-out, got {args.split!r}")
        detectors = [(spec, make_detector(parse_detector(spec))) for spec in args.detector or ["auto"]]
        classifier = EmotionClassifier(args.model or default_model_path())
        rows = run_room(args, detectors, classifier)
    except (ValueError, DetectorError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        report = {
            "room": True,
            "data": args.data,
            "split": args.split,
            "frames": args.frames,
            "results": rows,
        }
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
