"""benchmarks/framing_noise.py: the crop-unit arithmetic on known eye positions, and the script on real faces
(scikit-image's astronaut, never the shared photos)."""

from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest

from edge.align import DEFAULT_FRAMING
from testbed.facesdata import portrait
from tests.support import benchscripts


def load():
    return benchscripts.load("framing_noise")


def test_differences_are_measured_in_crop_units():
    diff = load().framing_difference
    reference = np.array([[100.0, 120.0], [160.0, 120.0]])  # 60 px apart, level
    assert diff(reference, reference) == pytest.approx((0, 0, 0, 0), abs=1e-9)
    # 6 px right and 3 px down is a tenth and a twentieth of the eye distance, which is eye_distance of the crop.
    shift = diff(reference, reference + [6.0, 3.0])
    assert shift[:2] == pytest.approx(
        (0.1 * DEFAULT_FRAMING.eye_distance, 0.05 * DEFAULT_FRAMING.eye_distance)
    )
    centre = reference.mean(axis=0)
    wider = centre + (reference - centre) * 1.2
    assert diff(reference, wider)[2] == pytest.approx(math.log(1.2))
    turn = math.radians(5)
    rotation = np.array([[math.cos(turn), -math.sin(turn)], [math.sin(turn), math.cos(turn)]])
    tilted = centre + (reference - centre) @ rotation.T  # the right-hand eye 5 degrees lower
    assert diff(reference, tilted)[3] == pytest.approx(5.0)


def test_the_script_measures_small_noise_on_real_faces(tmp_path):
    for i, height in enumerate((260, 320)):
        (tmp_path / "happy").mkdir(exist_ok=True)
        cv2.imwrite(str(tmp_path / "happy" / f"astro_{i}.jpg"), portrait(height)[0])
    out = tmp_path / "noise.json"
    done = benchscripts.run("framing_noise", "--data", tmp_path, "--copies", 3, "--json", out, timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    assert result["photos"] == 2 and result["pairs"] + result["copies_without_eyes"] == 6
    # The same face re-detected after a known rescale/shift/rotation lands within a few percent of the crop.
    assert result["shift_x"]["p95_abs"] < 0.08 and result["shift_y"]["p95_abs"] < 0.08
    assert result["roll_degrees"]["p95_abs"] < 10 and result["log_scale"]["p95_abs"] < 0.3


def test_no_photos_is_an_error(tmp_path):
    done = benchscripts.run("framing_noise", "--data", tmp_path)
    assert done.returncode == 2 and done.stderr.startswith("error: ") and "Traceback" not in done.stderr
