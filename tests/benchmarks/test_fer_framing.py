"""benchmarks/fer_framing.py on FER-style crops made from a real face (scikit-image's astronaut)."""

from __future__ import annotations

import json

import cv2
import pytest

from testbed import facesdata
from tests.support import benchscripts


def test_eyes_of_tight_crops_are_measured_in_crop_units(tmp_path):
    face = cv2.resize(facesdata.astronaut_face_gray(), (48, 48), interpolation=cv2.INTER_AREA)
    folder = tmp_path / "faces" / "train" / "happy"
    folder.mkdir(parents=True)
    for i, image in enumerate((face, face[:, ::-1])):
        cv2.imwrite(str(folder / f"{i}.png"), image.copy())
    (tmp_path / "faces" / "train" / "sad").mkdir()
    cv2.imwrite(str(tmp_path / "faces" / "train" / "sad" / "0.png"), face)
    out = tmp_path / "framing.json"
    done = benchscripts.run("fer_framing", "--data", tmp_path / "faces", "--limit", 3, "--json", out)
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    assert report["faces"] == 3 and report["found"] == 3
    # A tight crop's eyes sit near the middle, in its upper half, about a third of the side apart.
    assert report["eye_x"]["median"] == pytest.approx(0.5, abs=0.08)
    assert 0.25 < report["eye_y"]["median"] < 0.5 and 0.25 < report["eye_distance"]["median"] < 0.5
    assert "eye_distance  median" in done.stdout


@pytest.mark.parametrize(("args", "named"), [(["--limit", "0"], "--limit"), (["--split", "val"], "no split")])
def test_bad_arguments_are_one_error_line(tmp_path, args, named):
    (tmp_path / "train" / "happy").mkdir(parents=True)
    (tmp_path / "train" / "sad").mkdir(parents=True)
    face = cv2.resize(facesdata.astronaut_face_gray(), (48, 48))
    for label in ("happy", "sad"):
        cv2.imwrite(str(tmp_path / "train" / label / "0.png"), face)
    done = benchscripts.run("fer_framing", "--data", tmp_path, *args)
    assert done.returncode == 2 and named in done.stderr and "Traceback" not in done.stderr
