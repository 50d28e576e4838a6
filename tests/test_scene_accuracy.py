"""benchmarks/scene_accuracy.py on a tiny labelled folder: a real face (scikit-image's astronaut) and drawn ones."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests import benchscripts, facesdata
from tests.fakefaces import make_faces


def write_faces(root: Path) -> Path:
    """test/happy: the astronaut's face and its mirror image; test/neutral: two drawn faces."""
    face = cv2.resize(facesdata.astronaut_face_gray(), (48, 48), interpolation=cv2.INTER_AREA)
    drawn, _ = make_faces(1, labels=["neutral", "sad"])
    for label, images in (("happy", [face, face[:, ::-1]]), ("neutral", list(drawn))):
        folder = root / "test" / label
        folder.mkdir(parents=True)
        for i, image in enumerate(images):
            cv2.imwrite(str(folder / f"{i}.png"), np.ascontiguousarray(image))
    return root


def run_script(*args):
    return benchscripts.run("scene_accuracy", *args)


def test_pastes_finds_and_scores_every_scene(tmp_path):
    data = write_faces(tmp_path / "faces")
    out = tmp_path / "scene.json"
    done = run_script(
        "--data",
        str(data),
        "--detector",
        "haar",
        "--face-px",
        "96,144",
        "--margin",
        "0,0.1",
        "--json",
        str(out),
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    assert report["split"] == "test" and report["faces"] == 4
    rows = {(r["background"], r["face_px"]): r for r in report["results"]}
    assert set(rows) == {(b, px) for b in ("flat", "photo", "dark") for px in (96, 144)}
    for row in rows.values():
        assert row["detector"] == "haar" and row["faces"] == 4
        assert row["false_per_frame"] >= 0.0 and row["detect_ms_median"] > 0
        for margin in ("0.0", "0.1"):
            found_right = row["accuracy_of_found"][margin] * row["found"]
            assert abs(row["end_to_end"][margin] - found_right) < 1e-9
            assert row["end_to_end"][margin] <= row["found"]
    # The astronaut, a real frontal face, is found on every background at both sizes, mirrored or not.
    assert all(row["found_by_label"]["happy"] == 1.0 for row in rows.values()), rows
    assert all(set(row["found_by_label"]) == {"happy", "neutral"} for row in rows.values())
    assert "end-to-end by margin" in done.stdout


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--detector", "haar:min_neighbours=3"], "detector.min_neighbours: unknown key"),
        (["--detector", "haar:scale_factor=0.5"], "detector.scale_factor: must be"),
        (["--detector", "sonar"], "detector.type: must be"),
        (["--limit", "0"], "--limit"),
        (["--split", "val"], "no split 'val'"),
    ],
)
def test_bad_arguments_are_named_without_a_traceback(tmp_path, args, named):
    data = write_faces(tmp_path / "faces")
    done = run_script("--data", str(data), *args)
    assert done.returncode == 2
    assert named in done.stderr and "Traceback" not in done.stderr
