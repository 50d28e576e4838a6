"""Real photos of people as a training source, cut the way the daemon cuts faces from camera frames.

FER-2013's ready-made 48x48 crops are registered by hand; the daemon's crops come from a detector and the
eye framing (edge/align.py). A `<label>/*.jpg` folder of photos (e.g. ../shared/data/photos) becomes a
two-split Dataset here:

- **person-disjoint halves**: a person is the file name without its trailing `_NNNN` (`George_W_Bush_0042.jpg`
  -> `George_W_Bush`); `facial-expressions_*` files are single images, each its own person. A person goes to
  the held-out half when a seeded hash of the name falls below HELD_OUT_FRACTION, so the split is the same on
  every machine and run, and no person is on both sides (benchmarks/photo_accuracy.py --split uses this too);
- **the daemon's crop**: each photo decoded as the daemon decodes it, run through `make_detector` (default
  `auto`), the largest face cut by `faces_to_batch` with the eyes and DEFAULT_FRAMING (or the box and
  DEFAULT_BOX_MARGIN when the detector has no eyes). Photos with no face are skipped and counted.

Crops are cached like train/data.py's decoded arrays, keyed by every file's size and mtime, the detector and
the framing. No TensorFlow here.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np

from edge.align import DEFAULT_BOX_MARGIN, DEFAULT_FRAMING, Framing
from edge.capture.imagefile import ImageRefused, load_image
from edge.config import DetectorConfig, SourceConfig
from edge.detect import largest
from edge.preprocess import faces_to_batch
from train.data import (
    DataError,
    Dataset,
    Split,
    _cache_key,
    _image_entries,
    _label_folders,
    _read_cache,
    _write_cache,
    default_cache_dir,
)

HELD_OUT_FRACTION = 0.5
SPLIT_SALT = (
    "emotion-edge photos v1"  # changing it reshuffles who is held out: never, once models are compared
)
TRAIN, HELD_OUT = "train", "held-out"
PHOTO_CACHE_VERSION = 1  # bump when the cut changes in a way the key below does not see
_SERIAL = re.compile(r"_\d+$")
_LIMITS = SourceConfig()


def person_of(file_name: str) -> str:
    """The person a photo shows: its name without extension and trailing `_NNNN`; `facial-expressions_*`
    files are each their own person (the source says nothing about who they show)."""
    stem = Path(file_name).stem
    if stem.lower().startswith("facial-expressions"):
        return stem
    return _SERIAL.sub("", stem)


def split_of(person: str) -> str:
    """TRAIN or HELD_OUT for a person, from a hash of the name alone (deterministic, machine-independent)."""
    digest = hashlib.sha256(f"{SPLIT_SALT}\0{person}".encode()).digest()
    return HELD_OUT if int.from_bytes(digest[:8], "big") / 2**64 < HELD_OUT_FRACTION else TRAIN


def detector_config(detector: str = "auto") -> DetectorConfig:
    return DetectorConfig(type=detector)


def cut_face(image: np.ndarray, detector, size: tuple[int, int], framing: Framing) -> np.ndarray | None:
    """The largest face of a photo as the daemon cuts it: uint8 (H, W), or None when no face is found."""
    face = largest(detector.detect(image))
    if face is None:
        return None
    batch = faces_to_batch(image, [face.box], size, DEFAULT_BOX_MARGIN, [face.eyes], framing)
    return batch[0, :, :, 0]


def load_photo_dataset(
    path,
    size=(48, 48),
    detector: str = "auto",
    framing: Framing = DEFAULT_FRAMING,
    cache_dir=None,
    use_cache=True,
) -> Dataset:
    """A Dataset with splits TRAIN and HELD_OUT of the daemon's crops of a `<label>/` photo folder."""
    from edge.detect import DetectorError, make_detector

    path = Path(path).expanduser()
    if not path.is_dir():
        raise DataError(f"{path}: not a folder of <label>/ photo folders")
    plan = {}
    for folder in _label_folders(path):
        entries, _ = _image_entries(folder)
        if entries:
            plan[folder.name] = entries
    if len(plan) < 2:
        raise DataError(f"{path}: needs at least two <label>/ folders of photos, found {sorted(plan)}")
    try:
        face_detector = make_detector(detector_config(detector))
    except (DetectorError, ValueError) as exc:
        raise DataError(f"photos detector {detector!r}: {exc}") from None
    cut = {"detector": getattr(face_detector, "name", detector), "framing": framing.to_dict()}
    key = _cache_key(path, size, f"photos-{PHOTO_CACHE_VERSION}", {"files": plan, "cut": cut})
    cache_file = Path(cache_dir or default_cache_dir()) / f"{path.name or 'photos'}-crops-{key}.npz"
    if use_cache:
        cached = _read_cache(cache_file, path, size)
        if cached is not None:
            return cached
    dataset = _cut_all(path, plan, face_detector, size, framing)
    if use_cache:
        _write_cache(cache_file, dataset)
    return dataset


def _cut_all(path: Path, plan: dict, detector, size, framing: Framing) -> Dataset:
    labels = sorted(plan)
    collected = {TRAIN: ([], [], []), HELD_OUT: ([], [], [])}
    skipped: list[tuple[str, str]] = []
    for label in labels:
        for name, _, _ in plan[label]:
            file = str(path / label / name)
            try:
                image = load_image(file, _LIMITS.max_image_mb, _LIMITS.max_image_mpx)
            except (ImageRefused, OSError, ValueError) as exc:
                skipped.append((file, f"cannot read image: {exc}"))
                continue
            face = cut_face(image, detector, size, framing)
            if face is None:
                skipped.append((file, "no face found"))
                continue
            images, targets, files = collected[split_of(person_of(name))]
            images.append(face)
            targets.append(labels.index(label))
            files.append(file)
    splits = {}
    for split, (images, targets, files) in collected.items():
        if not images:
            raise DataError(f"{path}: no face found in any photo of the {split} half")
        splits[split] = Split(np.stack(images), np.asarray(targets, np.int64), files)
    return Dataset(labels, splits, "photos", str(path), skipped, tuple(size))


def relabel(split: Split, from_labels: list[str], to_labels: list[str], source: str) -> Split:
    """The split with its label indices mapped by name onto `to_labels` (another source's label order)."""
    unknown = sorted(set(from_labels) - set(to_labels))
    if unknown:
        raise DataError(f"{source}: labels {unknown} are not among the training data's labels {to_labels}")
    mapping = np.array([to_labels.index(label) for label in from_labels], np.int64)
    return Split(split.images, mapping[split.labels], list(split.files))
