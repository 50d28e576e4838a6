"""Soft labels: crowd votes per image (FER+) as training targets and as a second set of test labels.

FER-2013's labels are one annotator's; FER+ (Barsoum et al., ICMI 2016; microsoft/FERPlus, MIT) has ten crowd
votes for each of its images. A soft-labels file is a CSV with a `file` column (the image's path relative to
the data folder, e.g. `train/angry/Training_10118481.jpg`) and one column of votes per class, named as the data's
labels or by FER+'s names (happiness, sadness, anger); any other columns (FER+'s contempt, unknown, NF) are
votes for none of the classes. A folder means every *.csv in it (../shared/data/ferplus: train.csv, test.csv).

Rows are joined to images by path; an image without a row keeps its original label (the photo source, and the
FER images FER+ could not match). What a training target is, given an image's votes:

    target = (1 - mix) * one_hot(original label) + mix * votes over the classes

where the votes for none of the classes are either dropped (`renormalise`: the class votes are renormalised)
or counted for the original label (`original`). An image with no class votes at all keeps its original label.

For evaluation, `majority_labels` gives FER+'s majority label (its paper's "majority voting" scheme): single
stray votes are dropped, and the image counts only when one of the classes then holds more than half of the
remaining votes (3,154 of FER-2013's 3,589 test/ faces).
"""

from __future__ import annotations

import csv
from pathlib import Path, PurePosixPath

import numpy as np

from train.data import DataError

# FER+'s column names -> FER-2013's label names (the project's).
ALIASES = {"happiness": "happy", "sadness": "sad", "anger": "angry"}
OTHER_VOTES = ("renormalise", "original")  # what votes for none of the classes do in a target
STRAY_VOTES = 1  # FER+ majority: a class with this many votes or fewer is a stray vote, dropped


class SoftLabels:
    """Votes (N, C) over the data's labels, plus the votes for none of them (N, columns), keyed by path."""

    def __init__(self, labels: list[str], keys: list[tuple[str, ...]], votes: np.ndarray, other: np.ndarray):
        self.labels = list(labels)
        self.votes = np.asarray(votes, np.float64)
        self.other = np.asarray(other, np.float64).reshape(len(self.votes), -1)
        self.index = {key: i for i, key in enumerate(keys)}
        self.depths = sorted({len(key) for key in keys})

    def __len__(self) -> int:
        return len(self.votes)

    def rows_for(self, files: list[str]) -> np.ndarray:
        """Row index per image file (-1 where the file has no row), matched on the row's trailing path
        components, so however the data folder is spelt the join is the same."""
        found = np.full(len(files), -1, np.int64)
        for i, file in enumerate(files):
            parts = PurePosixPath(Path(file).as_posix()).parts
            for depth in self.depths:
                row = self.index.get(tuple(parts[-depth:]))
                if row is not None:
                    found[i] = row
                    break
        return found


def load_soft_labels(path, labels: list[str]) -> SoftLabels:
    """A soft-labels CSV, or every *.csv of a folder, with vote columns for each of `labels`."""
    path = Path(path).expanduser()
    files = sorted(path.glob("*.csv")) if path.is_dir() else [path]
    if not files or not all(f.is_file() for f in files):
        raise DataError(f"--soft-labels {path}: expected a .csv file or a folder of them (e.g. FER+'s)")
    keys, votes, other = [], [], []
    widths = set()
    for file in files:
        before = len(other)
        _read_votes(file, labels, keys, votes, other)
        widths |= {len(row) for row in other[before:]}
    if not keys:
        raise DataError(f"--soft-labels {path}: no rows")
    if len(widths) > 1:
        raise DataError(f"--soft-labels {path}: the files have different columns")
    width = widths.pop()
    return SoftLabels(
        labels, keys, np.asarray(votes), np.asarray(other, np.float64).reshape(len(keys), width)
    )


def _read_votes(file: Path, labels: list[str], keys: list, votes: list, other: list) -> None:
    try:
        with open(file, newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            header = [ALIASES.get(c.strip(), c.strip()) for c in next(reader, [])]
            if "file" not in header:
                raise DataError(f"{file}: no 'file' column (header: {header})")
            missing = [label for label in labels if label not in header]
            if missing:
                raise DataError(f"{file}: no vote column for {missing} (header: {header})")
            file_col = header.index("file")
            class_cols = [header.index(label) for label in labels]
            other_cols = [i for i, c in enumerate(header) if i != file_col and i not in class_cols]
            for line, row in enumerate(reader, start=2):
                try:
                    numbers = [float(row[i]) for i in class_cols + other_cols]
                except (IndexError, ValueError):
                    raise DataError(f"{file}: line {line}: votes must be numbers ({row})") from None
                if min(numbers, default=0) < 0:
                    raise DataError(f"{file}: line {line}: negative votes ({row})")
                keys.append(PurePosixPath(row[file_col].strip().replace("\\", "/")).parts)
                votes.append(numbers[: len(class_cols)])
                other.append(numbers[len(class_cols) :])
    except OSError as exc:
        raise DataError(f"{file}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise DataError(f"{file}: not a UTF-8 text csv file") from None


def training_targets(
    soft: SoftLabels, files: list[str], labels: np.ndarray, mix: float, other_votes: str
) -> tuple[np.ndarray, int]:
    """(N, C) float32 targets for images `files` with original `labels`, and how many images had votes."""
    if other_votes not in OTHER_VOTES:
        raise ValueError(f"other_votes must be one of {OTHER_VOTES}, got {other_votes!r}")
    k = len(soft.labels)
    one_hot = np.eye(k, dtype=np.float64)[np.asarray(labels, np.int64)]
    rows = soft.rows_for(files)
    has = rows >= 0
    votes = np.zeros((len(files), k))
    votes[has] = soft.votes[rows[has]]
    if other_votes == "original":
        votes[has] += one_hot[has] * soft.other[rows[has]].sum(axis=1, keepdims=True)
    total = votes.sum(axis=1, keepdims=True)
    usable = has & (total[:, 0] > 0)
    dist = np.where(usable[:, None], votes / np.maximum(total, 1e-12), one_hot)
    targets = (1.0 - mix) * one_hot + mix * dist
    return targets.astype(np.float32), int(usable.sum())


def majority_labels(soft: SoftLabels, files: list[str]) -> np.ndarray:
    """FER+'s majority label per image (index into soft.labels), -1 where it has none: no row, or after dropping
    stray votes no class (nor "none of them") holds more than half of the remaining votes."""
    rows = soft.rows_for(files)
    out = np.full(len(files), -1, np.int64)
    has = rows >= 0
    votes = np.column_stack([soft.votes[rows[has]], soft.other[rows[has]]])
    kept = np.where(votes <= STRAY_VOTES, 0.0, votes)
    top = kept.argmax(axis=1)
    # A majority for contempt, unknown or not-a-face (a column past the classes) gives no class label.
    clear = (kept.max(axis=1) > kept.sum(axis=1) / 2) & (top < len(soft.labels))
    out[np.flatnonzero(has)[clear]] = top[clear]
    return out
