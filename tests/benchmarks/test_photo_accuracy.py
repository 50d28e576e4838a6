"""benchmarks/photo_accuracy.py on a tiny labelled photo folder: real faces (scikit-image's astronaut) and a
photo with no face in it, so found / end-to-end / per-label arithmetic is checked against known answers."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from testbed import facesdata
from tests.support import benchscripts


def write_photos(root: Path) -> Path:
    """happy/: the astronaut (a smiling face) twice, one of them mirrored; neutral/: a photo with no face;
    contempt/: a label the model does not have (skipped and counted)."""
    frame, _ = facesdata.one_face_frame()
    folders = {
        "happy": [frame, frame[:, ::-1]],
        "neutral": [facesdata.no_face_frame()],
        "contempt": [frame],
    }
    for label, images in folders.items():
        (root / label).mkdir(parents=True)
        for i, image in enumerate(images):
            cv2.imwrite(str(root / label / f"p{i}.jpg"), np.ascontiguousarray(image))
    (root / "happy" / "notes.txt").write_text("not a photo\n")
    return root


def run_script(*args):
    return benchscripts.run("photo_accuracy", *args)


def test_detectors_and_framings_side_by_side(tmp_path):
    data = write_photos(tmp_path / "photos")
    out = tmp_path / "photos.json"
    done = run_script(
        "--data",
        str(data),
        "--detector",
        "haar",
        "--framing",
        "contract",
        "--framing",
        "box:margin=0.1",
        "--per-label",
        "--json",
        str(out),
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    assert report["photos"] == 3 and report["skipped_labels"] == {"contempt": 1}
    rows = {r["framing"]: r for r in report["results"]}
    assert set(rows) == {"contract", "box:margin=0.1"}
    for row in rows.values():
        assert row["detector"] == "haar" and row["photos"] == 3
        # Both astronauts are found and the faceless photo is not: found is exactly 2 of 3.
        assert row["found"] == pytest.approx(2 / 3)
        assert row["per_label"]["happy"] == {
            "photos": 2,
            "found": 1.0,
            "recall": row["per_label"]["happy"]["recall"],
        }
        assert row["per_label"]["neutral"]["found"] == 0.0 and row["per_label"]["neutral"]["recall"] == 0.0
        assert row["end_to_end"] == pytest.approx(row["accuracy_of_found"] * row["found"])
        assert row["end_to_end"] == pytest.approx(row["per_label"]["happy"]["recall"] * 2 / 3)
        assert row["detect_ms"] > 0
    assert "happy (2): found 100%" in done.stdout


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--detector", "haar:min_neighbours=3"], "detector.min_neighbours: unknown key"),
        (["--framing", "box:margin=3"], "'crop_margin' must be a number in 0..1"),
        (["--framing", "eyes:eye_distance=0.36"], "'eye_y' must be a number"),
        (["--framing", "zoom"], "--framing zoom: expected contract"),
        (["--limit", "-1"], "--limit"),
    ],
)
def test_bad_arguments_are_named_without_a_traceback(tmp_path, args, named):
    data = write_photos(tmp_path / "photos")
    done = run_script("--data", str(data), *args)
    assert done.returncode == 2, done.stdout
    assert named in done.stderr and "Traceback" not in done.stderr


def test_a_folder_without_the_models_labels_is_refused(tmp_path):
    (tmp_path / "cats").mkdir()
    done = run_script("--data", str(tmp_path))
    assert done.returncode == 2 and "no photos in folders named after the model's labels" in done.stderr


def load_benchmark():
    return benchscripts.load("photo_accuracy")


def test_confusion_matrix_and_per_label_scores_count_missed_faces_as_misses_only():
    labels = ["angry", "happy", "neutral"]
    targets = np.array([0, 0, 1, 1, 1, 2, 2, 2])
    predicted = np.array([0, 1, 1, 1, -1, 1, 2, -1])  # -1: no face found
    report = load_benchmark().confusion_report(targets, predicted, labels)
    assert report["columns"] == ["angry", "happy", "neutral", "no face"]
    assert report["confusion"] == [[1, 1, 0, 0], [0, 2, 0, 1], [0, 1, 1, 1]]
    happy = report["per_class"]["happy"]
    assert happy["support"] == 3
    assert happy["precision"] == pytest.approx(2 / 4) and happy["recall"] == pytest.approx(2 / 3)
    assert happy["f1"] == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))
    assert report["per_class"]["angry"] == {
        "precision": 1.0,
        "recall": 0.5,
        "f1": pytest.approx(2 / 3),
        "support": 2,
    }
    assert (
        report["per_class"]["neutral"]["precision"] == 1.0
    )  # the missed neutral face is nobody's prediction


def test_held_out_split_scores_only_people_never_trained_on(tmp_path):
    from train.photos import HELD_OUT, split_of

    frame, _ = facesdata.one_face_frame()
    people = [f"Someone_{i}" for i in range(12)]
    for i, person in enumerate(people):
        folder = tmp_path / "photos" / ("happy" if i % 2 else "neutral")
        folder.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folder / f"{person}_0001.jpg"), frame)
    held = sorted(p for p in people if split_of(p) == HELD_OUT)
    assert 0 < len(held) < len(people)  # the fixture covers both halves
    out = tmp_path / "held.json"
    done = run_script("--data", str(tmp_path / "photos"), "--split", "held-out", "--json", str(out))
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    assert report["split"] == "held-out" and report["photos"] == len(held)
    row = report["results"][0]
    assert sum(map(sum, row["confusion"])) == len(held)
    assert len(row["confusion"][0]) == len(row["columns"]) == len(row["per_class"]) + 1
    happy = sum(1 for i, p in enumerate(people) if i % 2 and p in held)
    assert row["per_class"]["happy"]["support"] == happy
