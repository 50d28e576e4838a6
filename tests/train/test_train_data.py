"""train.data: the three layouts, conversion through the preprocessing contract, skipping, errors, cache."""

from __future__ import annotations

import csv
import os
import struct
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.capture.sources import read_image
from edge.preprocess import face_to_input
from tests.support.fakefaces import FER_CSV_IDS, FER_LABELS, write_fer_csv, write_folder_dataset
from train.data import DataError, load_dataset, split_for_validation, stratified_sample

REPO = Path(__file__).resolve().parents[2]
FER = REPO.parent / "shared" / "data" / "fer2013"
CUSTOM_LABELS = ["anger", "happy", "sad", "surprise", "disgust", "shock", "normal"]


def load(path, tmp_path, **kwargs):
    return load_dataset(path, cache_dir=tmp_path / "cache", **kwargs)


def test_kaggle_folders_layout(tmp_path):
    root = write_folder_dataset(tmp_path / "fer", splits={"train": 4, "test": 2, "validation": 1})
    ds = load(root, tmp_path)
    assert ds.format == "folders"
    assert ds.labels == FER_LABELS
    assert list(ds.splits) == ["train", "val", "test"]
    train = ds.splits["train"]
    assert train.images.shape == (28, 48, 48) and train.images.dtype == np.uint8
    assert np.bincount(train.labels).tolist() == [4] * 7
    # Each label index points at the folder the image came from.
    for file, label in zip(train.files, train.labels, strict=True):
        assert Path(file).parent.name == ds.labels[label]
    # Pixels are exactly what the shared preprocessing contract makes of the file.
    first = cv2.imread(train.files[0], cv2.IMREAD_UNCHANGED)
    assert np.array_equal(train.images[0], face_to_input(first, None, (48, 48))[:, :, 0])
    _, val, name = split_for_validation(ds)
    assert name == "val" and len(val) == 7


def test_csv_layout_maps_fer_ids_to_alphabetical_names(tmp_path):
    path = write_fer_csv(tmp_path / "fer2013.csv", {"Training": 3, "PublicTest": 2, "PrivateTest": 1})
    ds = load(path, tmp_path)
    assert ds.format == "csv"
    assert ds.labels == FER_LABELS  # same list as the folder layout, whatever the csv ids are
    assert {k: len(v) for k, v in ds.splits.items()} == {"train": 21, "test": 14, "privatetest": 7}
    # Read the csv back: every row's original id must land on the label of the same name.
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    id_to_name = {v: k for k, v in FER_CSV_IDS.items()}
    train = ds.splits["train"]
    for i, file in enumerate(train.files):
        row = rows[int(file.split(":")[1]) - 1]
        assert ds.labels[train.labels[i]] == id_to_name[int(row["emotion"])]
        assert np.array_equal(train.images[i].reshape(-1), np.array(row["pixels"].split(), dtype=np.uint8))
    _, val, name = split_for_validation(ds)
    assert name == "test" and len(val) == 14


def test_class_folders_with_own_labels_and_holdout(tmp_path):
    root = write_folder_dataset(tmp_path / "mine", labels=CUSTOM_LABELS, splits=None)
    ds = load(root, tmp_path)
    assert ds.format == "classes"
    assert ds.labels == sorted(CUSTOM_LABELS)
    assert list(ds.splits) == ["train"]
    train, val, name = split_for_validation(ds, val_fraction=0.2, seed=3)
    assert name == "train-holdout"
    assert len(train) + len(val) == 7 * 30
    assert np.bincount(val.labels).tolist() == [6] * 7  # stratified
    assert not set(train.files) & set(val.files)
    again = split_for_validation(ds, val_fraction=0.2, seed=3)[1]
    assert again.files == val.files  # seeded


def test_corrupt_files_skipped_and_counted(tmp_path):
    root = write_folder_dataset(tmp_path / "d", labels=["a", "b"], splits=None)
    (root / "a" / "broken.jpg").write_bytes(b"\xff\xd8 this is not a jpeg")
    (root / "b" / "empty.png").write_bytes(b"")
    (root / "b" / "notes.txt").write_text("not an image")
    ds = load(root, tmp_path)
    assert sorted(Path(f).name for f, _ in ds.skipped) == ["broken.jpg", "empty.png", "notes.txt"]
    assert all(reason for _, reason in ds.skipped)
    assert len(ds.splits["train"]) == 60


def test_colour_and_odd_size_images_are_converted(tmp_path):
    root = write_folder_dataset(tmp_path / "d", labels=["a", "b"], splits=None)
    rng = np.random.default_rng(0)
    colour = rng.integers(0, 255, (100, 80, 3), dtype=np.uint8)
    cv2.imwrite(str(root / "a" / "colour.png"), colour)
    ds = load(root, tmp_path, size=(32, 40))
    train = ds.splits["train"]
    assert train.images.shape[1:] == (32, 40)
    index = next(i for i, f in enumerate(train.files) if f.endswith("colour.png"))
    assert np.array_equal(train.images[index], face_to_input(colour, None, (32, 40))[:, :, 0])


def _with_exif_orientation(jpeg: bytes, orientation: int) -> bytes:
    """The JPEG with an EXIF APP1 segment holding only an Orientation tag, as a phone camera writes it."""
    ifd = struct.pack("<H", 1) + struct.pack("<HHIHH", 0x0112, 3, 1, orientation, 0) + struct.pack("<I", 0)
    payload = b"Exif\x00\x00" + b"II*\x00" + struct.pack("<I", 8) + ifd
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + jpeg[2:]


def test_exif_orientation_is_honoured_as_the_daemon_does(tmp_path):
    """A phone photo stored sideways with Orientation=6 must be trained on upright, exactly as the daemon
    will see the same file: the preprocessing contract covers decoding too."""
    root = write_folder_dataset(tmp_path / "d", labels=["a", "b"], splits=None)
    stored = np.full((40, 60), 200, np.uint8)
    stored[:, :10] = 0  # dark left edge as stored; after a 90 degree clockwise turn it is the top edge
    jpeg = cv2.imencode(".jpg", stored, [cv2.IMWRITE_JPEG_QUALITY, 100])[1].tobytes()
    (root / "a" / "phone.jpg").write_bytes(_with_exif_orientation(jpeg, 6))
    train = load(root, tmp_path).splits["train"]
    face = train.images[next(i for i, f in enumerate(train.files) if f.endswith("phone.jpg"))]
    assert face[:4].mean() < 60 and face[:, :4].mean() > 100  # dark on top, not on the left
    assert np.array_equal(face, face_to_input(read_image(root / "a" / "phone.jpg"), None, (48, 48))[:, :, 0])


def test_stratified_sample_keeps_every_class(tmp_path):
    ds = load(write_folder_dataset(tmp_path / "d", labels=["a", "b", "c"], splits=None), tmp_path)
    split = ds.splits["train"]
    keep = np.r_[
        np.flatnonzero(split.labels == 0),
        np.flatnonzero(split.labels == 1)[:3],
        np.flatnonzero(split.labels == 2)[:6],
    ]
    skewed = split.subset(keep)  # 30 / 3 / 6
    sample = stratified_sample(skewed, 13, seed=1)
    assert len(sample) == 13
    counts = np.bincount(sample.labels, minlength=3)
    assert counts.min() >= 1 and counts[0] > counts[2] >= counts[1]
    assert sample.files == stratified_sample(skewed, 13, seed=1).files
    assert len(stratified_sample(skewed, 1000, seed=1)) == len(skewed)


def write_csv(path, rows, header=("emotion", "pixels", "Usage")):
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def test_bad_inputs_raise_clear_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty folder"):
        load(tmp_path / "empty", tmp_path)
    with pytest.raises(DataError, match="no such file"):
        load(tmp_path / "missing", tmp_path)
    single = write_folder_dataset(tmp_path / "single", labels=["happy"], splits=None)
    with pytest.raises(DataError, match="only one class"):
        load(single, tmp_path)
    hollow = write_folder_dataset(tmp_path / "hollow", labels=["a", "b"], splits=None)
    (hollow / "c").mkdir()
    with pytest.raises(DataError, match="'c' holds no images"):
        load(hollow, tmp_path)
    mismatch = write_folder_dataset(tmp_path / "mismatch", labels=["a", "b"], splits={"train": 2})
    write_folder_dataset(tmp_path / "mismatch", labels=["a", "b", "c"], splits={"test": 1})
    with pytest.raises(DataError, match=r"split 'test' has labels not in train: \['c'\]"):
        load(mismatch, tmp_path)
    good = " ".join(["7"] * 2304)
    bad_row = write_csv(
        tmp_path / "bad.csv", [[0, good, "Training"], [3, good, "Training"], [4, "1 2 3", "Training"]]
    )
    with pytest.raises(DataError, match=r"row 3 .*has 3 pixels, expected 2304"):
        load(bad_row, tmp_path)
    no_pixels = write_csv(tmp_path / "cols.csv", [[0, "Training"]], header=("emotion", "Usage"))
    with pytest.raises(DataError, match=r"missing csv column\(s\) \['pixels'\]"):
        load(no_pixels, tmp_path)


def _rename_to_latin1(root):
    os.rename(os.fsencode(root / "b"), os.fsencode(root) + b"/gl\xfccklich")
    return root


def test_csv_with_a_byte_order_mark_loads(tmp_path):
    """Excel's "CSV UTF-8" starts with a BOM; it must not hide the 'emotion' column."""
    good = " ".join(["7"] * 2304)
    path = write_csv(tmp_path / "bom.csv", [[0, good, "Training"], [3, good, "Training"]])
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    assert load(path, tmp_path).labels == ["angry", "happy"]


@pytest.mark.parametrize(
    "make_data, message",
    [
        (lambda tmp: (tmp / "empty").mkdir() or tmp / "empty", "empty folder"),
        (lambda tmp: write_folder_dataset(tmp / "one", labels=["happy"], splits=None), "only one class"),
        (
            lambda tmp: write_csv(
                tmp / "bad.csv", [[0, " ".join(["1"] * 2304), "Training"], [1, "1 2", "Training"]]
            ),
            "row 2",
        ),
        (  # Excel's "Unicode text" / PowerShell's Out-File
            lambda tmp: (
                (tmp / "u16.csv").write_bytes("emotion,pixels,Usage\n0,1 2,Training\n".encode("utf-16"))
                and tmp / "u16.csv"
            ),
            "not a UTF-8 text csv file",
        ),
        (  # a Windows zip unpacked on Linux: the folder name is Latin-1 bytes
            lambda tmp: _rename_to_latin1(write_folder_dataset(tmp / "mine", labels=["a", "b"], splits=None)),
            "is not UTF-8 text",
        ),
    ],
    ids=["empty-folder", "single-class", "bad-csv-row", "utf16-csv", "latin1-label-folder"],
)
def test_cli_reports_bad_data_without_traceback(tmp_path, make_data, message):
    data = make_data(tmp_path)
    out = tmp_path / "run"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "train.cli",
            "--data",
            str(data),
            "--out",
            str(out),
            "--cache-dir",
            str(tmp_path / "c"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and message in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert not out.exists()  # nothing half-written


def test_cache_hit_and_invalidation(tmp_path):
    root = write_folder_dataset(tmp_path / "d", labels=["a", "b"], splits=None)
    first = load(root, tmp_path)
    assert not first.from_cache
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 1
    second = load(root, tmp_path)
    assert second.from_cache
    assert second.labels == first.labels and second.splits["train"].files == first.splits["train"].files
    assert np.array_equal(second.splits["train"].images, first.splits["train"].images)
    # Changing one file's content (and so its size/mtime) must invalidate the cache.
    changed = Path(first.splits["train"].files[0])
    cv2.imwrite(str(changed), np.full((48, 48), 255, np.uint8))
    os.utime(changed, ns=(changed.stat().st_atime_ns, changed.stat().st_mtime_ns + 10**9))
    third = load(root, tmp_path)
    assert not third.from_cache
    assert (third.splits["train"].images[0] == 255).all()
    # So must a new file.
    cv2.imwrite(str(root / "b" / "extra.png"), np.zeros((48, 48), np.uint8))
    fourth = load(root, tmp_path)
    assert not fourth.from_cache and len(fourth.splits["train"]) == 61
    assert not load(root, tmp_path, use_cache=False).from_cache


def test_cache_dir_variable_is_honoured_and_not_read_as_daemon_config(tmp_path, monkeypatch):
    # The daemon treats every EMOTION_EDGE_* variable as config and rejects unknown keys, so a cache
    # variable under that prefix would stop emotion-edge from starting on a machine that also trains.
    from edge.config import load_config
    from train.data import default_cache_dir

    monkeypatch.setenv("EMOTION_TRAIN_CACHE", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    assert load_config(None).source.uri  # the daemon's config loads with the variable set


def test_csv_cache_invalidated_when_file_changes(tmp_path):
    path = write_fer_csv(tmp_path / "f.csv", {"Training": 2})
    assert not load(path, tmp_path).from_cache
    assert load(path, tmp_path).from_cache
    write_fer_csv(path, {"Training": 3})
    reloaded = load(path, tmp_path)
    assert not reloaded.from_cache and len(reloaded.splits["train"]) == 21


@pytest.mark.fer
@pytest.mark.skipif(not FER.is_dir(), reason="FER-2013 not found at ../shared/data/fer2013")
def test_real_fer2013_loads_and_caches(tmp_path):
    ds = load(FER, tmp_path)
    assert ds.format == "folders" and ds.labels == FER_LABELS
    assert len(ds.splits["train"]) > 20000 and len(ds.splits["test"]) > 3000
    assert ds.splits["train"].images.shape[1:] == (48, 48)
    assert np.bincount(ds.splits["train"].labels).min() > 100  # every class present, disgust the rarest
    cached = load(FER, tmp_path)
    assert cached.from_cache and len(cached.splits["train"]) == len(ds.splits["train"])
