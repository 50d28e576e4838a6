"""Face data sets from disk -> uint8 arrays through the preprocessing contract, with an on-disk cache.

Three layouts are recognised from the path alone:

    folders  PATH/{train,test,val|validation}/<label>/*.jpg   (the Kaggle FER-2013 layout)
    csv      PATH is fer2013.csv with columns emotion,pixels[,Usage]
    classes  PATH/<label>/*.jpg                               (a user's own labels; one "train" split)

Labels always come from the data as sorted names, never from positions, so the csv and the folder
layout of FER-2013 give the same label list. No TensorFlow here: convert/ and tests import this cheaply.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edge.capture.imagefile import ImageRefused, load_image
from edge.config import SourceConfig
from edge.files import write_bytes_atomic
from edge.preprocess import face_to_input

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".pgm", ".ppm", ".pbm", ".tif", ".tiff", ".webp"}
# Split folder names of the Kaggle layout -> the split key we use.
SPLIT_FOLDERS = {"train": "train", "test": "test", "val": "val", "valid": "val", "validation": "val"}
# fer2013.csv's ids are not alphabetical; map them to names, then order names alphabetically.
FER_CSV_NAMES = {0: "angry", 1: "disgust", 2: "fear", 3: "happy", 4: "sad", 5: "surprise", 6: "neutral"}
CSV_USAGE = {"Training": "train", "PublicTest": "test", "PrivateTest": "privatetest"}
CACHE_VERSION = 2  # bump when the cached layout or the decoding changes (2: EXIF orientation)


class DataError(Exception):
    """A data set problem the user can fix; the message names the path and the problem."""


@dataclass
class Split:
    images: np.ndarray  # (N, H, W) uint8, already through edge.preprocess (gray, resized)
    labels: np.ndarray  # (N,) int64 indices into Dataset.labels
    files: list[str]  # source file (or "csv:row") per image

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices: np.ndarray) -> Split:
        indices = np.asarray(indices, dtype=np.int64)
        return Split(self.images[indices], self.labels[indices], [self.files[i] for i in indices])


@dataclass
class Dataset:
    labels: list[str]
    splits: dict[str, Split]
    format: str  # "folders" | "csv" | "classes"
    source: str
    skipped: list[tuple[str, str]]  # (file, reason) for unreadable/corrupt files
    size: tuple[int, int] = (48, 48)  # (height, width) of every image
    from_cache: bool = False  # True when the arrays came from the cache instead of decoding


def default_cache_dir() -> Path:
    # Not EMOTION_EDGE_*: the daemon reads every variable under that prefix as config and rejects unknown ones.
    if os.environ.get("EMOTION_TRAIN_CACHE"):
        return Path(os.environ["EMOTION_TRAIN_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "emotion-edge"


# ---------------------------------------------------------------------------------------------- public API


def load_dataset(path, size=(48, 48), cache_dir=None, use_cache=True) -> Dataset:
    """Load a data set in any of the three layouts; decoded arrays are cached (keyed by the files' stats)."""
    path = Path(path).expanduser()
    size = (int(size[0]), int(size[1]))
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    if path.is_file():
        if path.suffix.lower() != ".csv":
            raise DataError(f"{path}: expected a folder of face images or a .csv file (emotion,pixels,Usage)")
        layout, plan = "csv", None
        stat = path.stat()
        fingerprint = {"csv": [stat.st_mtime_ns, stat.st_size]}
    else:
        layout, plan = _plan_folders(path)
        fingerprint = {
            split: {label: files for label, (files, _) in labels.items()} for split, labels in plan.items()
        }
    key = _cache_key(path, size, layout, fingerprint)
    cache_file = Path(cache_dir or default_cache_dir()) / f"{path.name or 'data'}-{key}.npz"
    if use_cache:
        cached = _read_cache(cache_file, path, size)
        if cached is not None:
            return cached
    dataset = _load_csv(path, size) if layout == "csv" else _decode_folders(path, layout, plan, size)
    if use_cache:
        _write_cache(cache_file, dataset)
    return dataset


def split_for_validation(ds: Dataset, val_fraction=0.1, seed=1337) -> tuple[Split, Split, str]:
    """(train, validation, name of the validation split): the data's own val, else its test, else a
    seeded stratified slice of train (named "train-holdout")."""
    if "train" not in ds.splits:
        raise DataError(f"{ds.source}: has no training split (found {sorted(ds.splits)})")
    train = ds.splits["train"]
    for name in ("val", "test"):
        if name in ds.splits and len(ds.splits[name]):
            return train, ds.splits[name], name
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"validation fraction must be between 0 and 1, got {val_fraction}")
    rng = np.random.default_rng(seed)
    val_idx = []
    for cls in np.unique(train.labels):
        members = rng.permutation(np.flatnonzero(train.labels == cls))
        # A class with a single image stays in train: it cannot be learned and validated at once.
        take = min(len(members) - 1, max(1, int(round(len(members) * val_fraction))))
        val_idx.extend(members[:take].tolist())
    val_mask = np.zeros(len(train), bool)
    val_mask[val_idx] = True
    if not val_mask.any() or val_mask.all():
        raise DataError(f"{ds.source}: too few images to hold out a validation set")
    return train.subset(np.flatnonzero(~val_mask)), train.subset(np.flatnonzero(val_mask)), "train-holdout"


def stratified_sample(split: Split, n: int, seed: int) -> Split:
    """A class-stratified subset of n images (all of them when n >= len): class proportions are kept and
    every class present gets at least one image when n allows."""
    n = int(n)
    if n >= len(split):
        return split.subset(np.arange(len(split)))
    if n <= 0:
        raise ValueError(f"sample size must be positive, got {n}")
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(split.labels, return_counts=True)
    exact = counts * n / counts.sum()
    quota = np.floor(exact).astype(int)
    # Largest remainder method, then make sure rare classes are not rounded away.
    for i in np.argsort(-(exact - quota))[: n - quota.sum()]:
        quota[i] += 1
    if n >= len(classes):
        for i in np.flatnonzero(quota == 0):
            donor = int(np.argmax(quota))
            quota[donor] -= 1
            quota[i] += 1
    chosen = []
    for cls, q in zip(classes, quota, strict=True):
        members = np.flatnonzero(split.labels == cls)
        chosen.extend(rng.choice(members, size=int(q), replace=False).tolist())
    return split.subset(np.sort(np.asarray(chosen, dtype=np.int64)))


# --------------------------------------------------------------------------------------------- folder layouts


def _image_entries(folder: Path) -> tuple[list[list], list[tuple[str, str]]]:
    """[[name, mtime_ns, size], ...] of image files in folder, plus non-image files as skipped."""
    files, skipped = [], []
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.name.startswith(".") or not entry.is_file():
                continue
            if os.path.splitext(entry.name)[1].lower() in IMAGE_EXTENSIONS:
                stat = entry.stat()
                files.append([entry.name, stat.st_mtime_ns, stat.st_size])
            else:
                skipped.append((str(folder / entry.name), "not an image file (extension)"))
    files.sort()
    return files, skipped


def _label_folders(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _plan_folders(path: Path) -> tuple[str, dict]:
    """Find the layout and list every image: {split: {label: (entries, skipped)}}."""
    subdirs = _label_folders(path)
    if not subdirs:
        raise DataError(f"{path}: empty folder: expected class folders (<label>/*.jpg) or train/ and test/")
    split_dirs = [d for d in subdirs if d.name.lower() in SPLIT_FOLDERS]
    if split_dirs:
        layout, roots = "folders", {}
        for d in split_dirs:
            key = SPLIT_FOLDERS[d.name.lower()]
            if key in roots:
                raise DataError(f"{path}: both {roots[key].name}/ and {d.name}/ hold the {key} split")
            roots[key] = d
        order = ["train", "val", "test"]
        roots = dict(sorted(roots.items(), key=lambda item: order.index(item[0])))
    else:
        layout, roots = "classes", {"train": path}
    plan = {}
    for split, root in roots.items():
        labels = _label_folders(root)
        if not labels:
            raise DataError(f"{root}: no class folders inside (expected {root}/<label>/*.jpg)")
        plan[split] = {}
        for label_dir in labels:
            _check_label_name(label_dir)
            entries, skipped = _image_entries(label_dir)
            if not entries:
                raise DataError(f"{label_dir}: the label folder '{label_dir.name}' holds no images")
            plan[split][label_dir.name] = (entries, skipped)
    _check_label_sets({split: sorted(labels) for split, labels in plan.items()}, path)
    return layout, plan


def _check_label_name(label_dir: Path) -> None:
    """A label becomes JSON, a plot title and an MQTT payload: it must be text. A folder name that is not
    UTF-8 (a Windows zip unpacked on Linux) would fail only at the end of training, in the reports."""
    try:
        label_dir.name.encode("utf-8")
    except UnicodeEncodeError:
        shown = label_dir.name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        raise DataError(
            f"{label_dir.parent}: the label folder name {shown!r} is not UTF-8 text; rename it "
            "(e.g. `convmv -f latin1 -t utf8`)"
        ) from None


def _check_label_sets(split_labels: dict[str, list[str]], path) -> list[str]:
    reference_split = "train" if "train" in split_labels else sorted(split_labels)[0]
    reference = split_labels[reference_split]
    for split, labels in split_labels.items():
        if labels != reference:
            missing = sorted(set(reference) - set(labels))
            extra = sorted(set(labels) - set(reference))
            parts = [
                f"lacks {missing}" if missing else "",
                f"has labels not in {reference_split}: {extra}" if extra else "",
            ]
            raise DataError(
                f"{path}: split '{split}' {' and '.join(p for p in parts if p)}; every split needs the same labels"
            )
    if len(reference) < 2:
        raise DataError(f"{path}: only one class ({reference}); training needs at least two labelled folders")
    return reference


_LIMITS = SourceConfig()  # the daemon's default image limits (source.max_image_mb, source.max_image_mpx)


def _decode_image(file: str, size: tuple[int, int]) -> tuple[np.ndarray | None, str]:
    try:
        # The daemon's decoder, with its default size limits: a hostile file is refused before decoding.
        image = load_image(file, _LIMITS.max_image_mb, _LIMITS.max_image_mpx)
        return face_to_input(image, None, size)[:, :, 0], ""
    except ImageRefused as exc:
        return None, f"not used: {exc}"
    except (OSError, ValueError, cv2.error) as exc:
        return None, f"cannot read image: {exc}"


def _decode_folders(path: Path, layout: str, plan: dict, size: tuple[int, int]) -> Dataset:
    roots = {"train": path} if layout == "classes" else None
    labels = sorted(next(iter(plan.values())))
    skipped: list[tuple[str, str]] = []
    jobs = []  # (split, label index, file)
    for split, by_label in plan.items():
        split_root = roots[split] if roots else _split_root(path, split)
        for label, (entries, non_images) in by_label.items():
            skipped.extend(non_images)
            for name, _, _ in entries:
                jobs.append((split, labels.index(label), str(split_root / label / name)))
    # OpenCV releases the GIL while decoding, so threads give real parallelism here.
    with ThreadPoolExecutor(max_workers=min(16, (os.cpu_count() or 2) * 2)) as pool:
        results = list(pool.map(lambda job: _decode_image(job[2], size), jobs, chunksize=256))
    collected: dict[str, tuple[list, list, list]] = {split: ([], [], []) for split in plan}
    for (split, label_index, file), (image, reason) in zip(jobs, results, strict=True):
        if image is None:
            skipped.append((file, reason))
            continue
        images, targets, files = collected[split]
        images.append(image)
        targets.append(label_index)
        files.append(file)
    splits = {}
    for split, (images, targets, files) in collected.items():
        present = sorted({labels[t] for t in targets})
        if present != labels:
            raise DataError(
                f"{path}: in split '{split}', no readable images for {sorted(set(labels) - set(present))}"
            )
        splits[split] = Split(np.stack(images), np.asarray(targets, np.int64), files)
    return Dataset(labels, splits, layout, str(path), skipped, size)


def _split_root(path: Path, split: str) -> Path:
    for d in _label_folders(path):
        if SPLIT_FOLDERS.get(d.name.lower()) == split:
            return d
    raise DataError(f"{path}: split folder for '{split}' vanished while loading")


# ------------------------------------------------------------------------------------------------------ csv


def _parse_csv(handle, path: Path, size: tuple[int, int]) -> dict[str, tuple[list, list, list]]:
    """{split: (images, label names, row ids)}; the first bad row raises DataError naming its number."""
    collected: dict[str, tuple[list, list, list]] = {}
    expected_pixels = side = None
    reader = csv.DictReader(handle)
    try:
        columns = [c.strip() for c in (reader.fieldnames or [])]
        missing = [c for c in ("emotion", "pixels") if c not in columns]
        if missing:
            raise DataError(
                f"{path}: missing csv column(s) {missing}; expected a header 'emotion,pixels,Usage'"
            )
        reader.fieldnames = columns
        for row_number, row in enumerate(reader, start=1):
            where = f"{path}: row {row_number} (line {reader.line_num})"
            try:
                emotion_id = int(row["emotion"])
            except (TypeError, ValueError):
                raise DataError(f"{where}: emotion {row['emotion']!r} is not an integer id 0..6") from None
            if emotion_id not in FER_CSV_NAMES:
                raise DataError(f"{where}: emotion id {emotion_id} is not one of 0..6")
            usage = (row.get("Usage") or "Training").strip()
            if usage not in CSV_USAGE:
                raise DataError(f"{where}: Usage {usage!r} is not one of {sorted(CSV_USAGE)}")
            try:
                pixels = np.array((row["pixels"] or "").split(), dtype=np.int64)
            except ValueError:
                raise DataError(f"{where}: 'pixels' must be space-separated integers") from None
            if expected_pixels is None:
                expected_pixels = pixels.size
                side = math.isqrt(expected_pixels)
                if side < 8 or side * side != expected_pixels:
                    raise DataError(f"{where}: has {pixels.size} pixels, not a square image (48x48 = 2304)")
            if pixels.size != expected_pixels:
                raise DataError(f"{where}: has {pixels.size} pixels, expected {expected_pixels}")
            if pixels.min() < 0 or pixels.max() > 255:
                raise DataError(f"{where}: pixel values must be in 0..255")
            image = pixels.astype(np.uint8).reshape(side, side)
            images, names, files = collected.setdefault(CSV_USAGE[usage], ([], [], []))
            images.append(face_to_input(image, None, size)[:, :, 0])
            names.append(FER_CSV_NAMES[emotion_id])
            files.append(f"csv:{row_number}")
    except csv.Error as exc:
        raise DataError(f"{path}: malformed csv near line {reader.line_num}: {exc}") from None
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a UTF-8 text csv file (save it as 'CSV UTF-8')") from None
    return collected


def _load_csv(path: Path, size: tuple[int, int]) -> Dataset:
    try:
        # utf-8-sig: Excel's "CSV UTF-8" starts with a byte-order mark, which would hide the first column.
        with open(path, newline="", encoding="utf-8-sig") as handle:
            collected = _parse_csv(handle, path, size)
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror}") from None
    if not collected:
        raise DataError(f"{path}: the csv holds no rows")
    labels = _check_label_sets(
        {split: sorted(set(names)) for split, (_, names, _) in collected.items()}, path
    )
    index = {label: i for i, label in enumerate(labels)}
    splits = {
        split: Split(np.stack(images), np.array([index[n] for n in names], np.int64), files)
        for split, (images, names, files) in collected.items()
    }
    return Dataset(labels, splits, "csv", str(path), [], size)


# ---------------------------------------------------------------------------------------------------- cache


def _cache_key(path: Path, size, layout: str, fingerprint) -> str:
    blob = json.dumps([CACHE_VERSION, str(path.resolve()), list(size), layout, fingerprint], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def _read_cache(cache_file: Path, path: Path, size) -> Dataset | None:
    if not cache_file.is_file():
        return None
    try:
        with np.load(cache_file, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            splits = {
                name: Split(
                    data[f"{name}/images"], data[f"{name}/labels"].astype(np.int64), meta["files"][name]
                )
                for name in meta["splits"]
            }
        skipped = [tuple(item) for item in meta["skipped"]]
        return Dataset(
            meta["labels"], splits, meta["format"], str(path), skipped, tuple(size), from_cache=True
        )
    except (OSError, ValueError, KeyError, json.JSONDecodeError) as exc:
        log.warning("ignoring unreadable cache %s (%s); decoding again", cache_file, exc)
        return None


def _write_cache(cache_file: Path, ds: Dataset) -> None:
    meta = {
        "labels": ds.labels,
        "format": ds.format,
        "splits": list(ds.splits),
        "files": {name: split.files for name, split in ds.splits.items()},
        "skipped": [list(item) for item in ds.skipped],
    }
    arrays = {"meta": np.array(json.dumps(meta))}
    for name, split in ds.splits.items():
        arrays[f"{name}/images"] = split.images
        arrays[f"{name}/labels"] = split.labels
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(cache_file, buffer.getvalue())
    except OSError as exc:
        # A cache is an optimisation: a read-only home must not stop training.
        log.warning("cannot write data cache %s: %s", cache_file, exc)
