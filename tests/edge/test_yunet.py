"""YuNet (`detector.type: yunet`, the `auto` default) on real photographs: scikit-image's astronaut scaled down
into 640x480 frames as a room camera sees a face a few metres away, in colour and grey."""

from __future__ import annotations

import math
import re

import cv2
import numpy as np
import pytest

from edge.align import DEFAULT_FRAMING, cut_aligned, eye_transform
from edge.config import ConfigError, DetectorConfig, load_config
from edge.detect import DetectorError, describe, make_detector
from edge.detect import yunet as yunet_module
from testbed import facesdata
from tests.edge.test_detect import iou, matched


def small_face_frame(face_px: int, grey: bool, background: int = 110, at=(380, 260)):
    """The astronaut's head and shoulders shrunk so the face is face_px wide, in a 640x480 frame.

    Returns (frame, the face box, the eyes where a detector should put them): the eyes are found once on a
    large copy of the portrait and mapped through the known scale and shift.
    """
    big, big_box = facesdata.portrait(520)
    reference = max(
        make_detector(DetectorConfig(type="yunet")).detect(big), key=lambda d: iou(d.box, big_box)
    )
    scale = face_px / big_box[2]
    small = cv2.resize(
        big, (round(big.shape[1] * scale), round(big.shape[0] * scale)), interpolation=cv2.INTER_AREA
    )
    frame = np.full((480, 640, 3), background, np.uint8)
    x, y = at
    frame[y : y + small.shape[0], x : x + small.shape[1]] = small[: 480 - y, : 640 - x]
    box = (x + round(big_box[0] * scale), y + round(big_box[1] * scale), face_px, face_px)
    eyes = tuple(
        (x + ex * small.shape[1] / big.shape[1], y + ey * small.shape[0] / big.shape[0])
        for ex, ey in reference.eyes
    )
    return (cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY) if grey else frame), box, eyes


def eye_error(found, expected) -> float:
    """The larger of the two eyes' distance from where they should be, in eye distances."""
    distance = math.dist(*expected)
    return max(math.dist(a, b) for a, b in zip(found, expected, strict=True)) / distance


@pytest.mark.parametrize("grey", [False, True], ids=["colour", "grey"])
@pytest.mark.parametrize("face_px", [24, 32, 48, 80])
def test_small_faces_are_found_and_aligned_from_their_eyes(face_px, grey):
    """A face 24-80 px wide in a 640x480 frame (a person 1-4 m from a Pi camera): BlazeFace full range sees
    it at under a third of that size in its 192 px input; YuNet scans the frame as it is."""
    frame, box, eyes = small_face_frame(face_px, grey)
    detections = make_detector(DetectorConfig(type="yunet")).detect(frame)
    assert matched(detections, [box], threshold=0.4) == 1, (detections, box)
    face = max(detections, key=lambda d: iou(d.box, box))
    # A pixel is ~0.1 of the eye distance of a 24 px face: the eyes are placed to within ~3 pixels there.
    assert eye_error(face.eyes, eyes) < (0.3 if face_px <= 32 else 0.15), (face.eyes, eyes)
    # Aligned from the found eyes, the 48x48 crop the classifier gets has the true eyes within a tenth of its
    # side of where the framing puts them.
    matrix = eye_transform(face.eyes, DEFAULT_FRAMING, (48, 48))
    for (x, y), side in zip(eyes, (-1, 1), strict=True):
        cx, cy = matrix @ np.array([x, y, 1.0])
        assert abs(cx - 24 * (1 + side * DEFAULT_FRAMING.eye_distance)) < 4.8
        assert abs(cy - 48 * DEFAULT_FRAMING.eye_y) < 4.8
    gray = frame if grey else cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
    assert cut_aligned(gray, face.eyes, DEFAULT_FRAMING, (48, 48)).shape == (48, 48)


def test_blazeface_full_range_loses_the_small_grey_face_yunet_finds():
    # Why auto moved: the same 32 px grey face, the default's old detector and the new one.
    frame, box, _ = small_face_frame(32, grey=True)
    assert matched(make_detector(DetectorConfig(type="yunet")).detect(frame), [box], 0.4) == 1
    old = make_detector(DetectorConfig(type="blazeface_full", min_face_px=8)).detect(frame)
    assert matched(old, [box], 0.4) == 0


def test_landmarks_are_two_eyes_nose_and_mouth_corners_of_an_upright_face():
    frame, truth = facesdata.one_face_frame()
    (face,) = make_detector(DetectorConfig(type="yunet")).detect(frame)
    x, y, w, h = face.box
    assert iou(face.box, truth[0]) > 0.5 and 0.5 < face.score <= 1.0
    assert len(face.keypoints) == 5
    (lx, ly), (rx, ry) = face.eyes
    nose, mouth_a, mouth_b = face.keypoints[2:]
    assert lx < nose[0] < rx and abs(ly - ry) < 0.1 * w
    assert (ly + ry) / 2 < nose[1] < min(mouth_a[1], mouth_b[1]) < y + h
    assert all(isinstance(v, int) for v in face.box)


def test_a_face_wider_than_the_cap_is_found_in_frame_pixels():
    """Frames wider than yunet_max_width are scanned shrunk; boxes and eyes come back in frame pixels."""
    frame, truth = facesdata.one_face_frame()
    big = cv2.resize(frame, (1920, 1440))
    detector = make_detector(DetectorConfig(type="yunet", yunet_max_width=640))
    (face,) = detector.detect(big)
    assert detector.scanned_px == 640 * 480
    assert iou(face.box, tuple(3 * v for v in truth[0])) > 0.5
    (native,) = make_detector(DetectorConfig(type="yunet")).detect(frame)
    assert eye_error(face.eyes, [(3 * x, 3 * y) for x, y in native.eyes]) < 0.05


def test_min_face_px_and_score_threshold_drop_what_they_should():
    frame, box, _ = small_face_frame(32, grey=False)
    assert make_detector(DetectorConfig(type="yunet", min_face_px=40)).detect(frame) == []
    one_look = {"yunet_score_threshold": 0.999, "yunet_candidate_threshold": 1.0}  # no second look
    assert make_detector(DetectorConfig(type="yunet", **one_look)).detect(frame) == []


@pytest.mark.parametrize(("face_px", "grey", "gain"), [(22, True, 1.0), (20, False, 0.5)])
def test_a_small_face_scoring_low_in_the_scan_is_accepted_from_its_enlarged_crop(face_px, grey, gain):
    """At the frame's own size this face scores under the score threshold (~0.25-0.75); enlarged twice in the
    crop around it, it scores ~0.9: the second look accepts it, with the crop's (sharper) eyes."""
    frame, box, eyes = small_face_frame(face_px, grey)
    frame = (frame * gain).astype(np.uint8)  # 0.5: a dim room
    settings = {"min_face_px": 12}  # YuNet's box of a 20 px face is 17 px wide
    one_look = make_detector(DetectorConfig(type="yunet", yunet_candidate_threshold=1.0, **settings))
    assert matched(one_look.detect(frame), [box], threshold=0.3) == 0
    detector = make_detector(DetectorConfig(type="yunet", **settings))
    found = detector.detect(frame)
    assert matched(found, [box], threshold=0.3) == 1, found
    face = max(found, key=lambda d: iou(d.box, box))
    assert face.score >= detector.crop_score_threshold and eye_error(face.eyes, eyes) < 0.3
    second_looks = (detector.scanned_px - 640 * 480) / yunet_module.ROI_SIDE**2
    assert second_looks == int(second_looks) and 1 <= second_looks <= yunet_module.MAX_SECOND_LOOKS


def _shifted(frame, box, dx):
    return np.roll(frame, dx, axis=1), (box[0] + dx, box[1], box[2], box[3])


@pytest.mark.parametrize("face_px", [32, 90, 200])
def test_roi_refinds_a_moved_face_with_its_eyes_from_one_small_crop(face_px):
    frame, box, _ = small_face_frame(face_px, grey=False, at=(200, 60))
    detector = make_detector(DetectorConfig(type="yunet"))
    (full,) = detector.detect(frame)
    moved, expected = _shifted(frame, full.box, 12)
    detector.scanned_px = 0
    found = detector.detect_roi(moved, [full.box])
    assert len(found) == 1 and iou(found[0].box, expected) > 0.6, (found, expected)
    assert found[0].box != full.box  # it followed the face, not the old box handed back
    assert eye_error(found[0].eyes, [(x + 12, y) for x, y in full.eyes]) < 0.1
    assert detector.scanned_px == yunet_module.ROI_SIDE**2  # one small crop, not the frame
    assert detector.detect_roi(facesdata.no_face_frame(), [full.box]) == []  # gone: nothing


def test_roi_one_detection_per_face_a_box_off_the_frame_and_a_crowd_is_a_full_scan():
    frame, truth = facesdata.two_faces_frame()
    detector = make_detector(DetectorConfig(type="yunet"))
    boxes = [max(detector.detect(frame), key=lambda d, t=t: iou(d.box, t)).box for t in truth]
    found = detector.detect_roi(frame, [boxes[0], boxes[1], boxes[0], (-900, -900, 50, 50)])
    assert len(found) == 2 and matched(found, truth) == 2, found
    full_scans = []
    detector.detect = lambda image: full_scans.append(image) or []
    detector.detect_roi(frame, [boxes[0]] * 19)  # 19 crops cost as much as the 640x480 scan
    assert len(full_scans) == 1


def test_auto_is_yunet_and_says_why(monkeypatch, caplog):
    detector = make_detector(DetectorConfig(type="auto"))
    assert detector.name == "yunet"
    assert describe(detector).startswith(
        f"yunet ({yunet_module.SHIPPED_DIR / yunet_module.MODEL_FILE}), chosen by auto"
    )
    assert "chosen by" not in describe(make_detector(DetectorConfig(type="yunet")))  # asked for by name


def test_auto_falls_back_with_a_warning_when_the_weights_are_missing(monkeypatch, caplog):
    from edge.detect import blazeface

    monkeypatch.setattr(yunet_module, "SHIPPED_DIR", yunet_module.SHIPPED_DIR / "gone")
    with caplog.at_level("WARNING"):
        detector = make_detector(DetectorConfig(type="auto"))
    assert detector.name == "blazeface_full"
    assert (
        "YuNet weights are missing" in caplog.text and "falling back to BlazeFace full range" in caplog.text
    )
    assert "fallback" in describe(detector)
    frame, truth = facesdata.one_face_frame()
    assert matched(detector.detect(frame), truth) == 1  # the fallback still works
    with pytest.raises(DetectorError, match="face_detection_yunet_2023mar.onnx not found"):
        make_detector(DetectorConfig(type="yunet"))  # asked for by name: no silent fallback
    monkeypatch.setattr(blazeface, "SHIPPED_DIR", blazeface.SHIPPED_DIR / "gone")
    caplog.clear()
    with caplog.at_level("WARNING"):
        assert make_detector(DetectorConfig(type="auto")).name == "haar"
    assert "falling back to the Haar cascade" in caplog.text


def test_a_model_file_that_is_not_yunet_is_a_clear_error(tmp_path):
    bad = tmp_path / "not-a-model.onnx"
    bad.write_bytes(b"\x00" * 64)
    with pytest.raises(DetectorError, match="not a YuNet ONNX model OpenCV"):
        make_detector(DetectorConfig(type="yunet", yunet_model=str(bad)))
    with pytest.raises(DetectorError, match="does not exist"):
        make_detector(DetectorConfig(type="yunet", yunet_model=str(tmp_path / "nope.onnx")))


def test_the_shipped_weights_are_the_ones_the_readme_names():
    import hashlib

    path = yunet_module.default_model_path()
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    readme = (path.parent / "README.md").read_text()
    assert digest in readme and (path.parent / "LICENSE-opencv-zoo-yunet.txt").is_file()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("detector:\n  yunet_score: 0.5\n", "detector.yunet_score: unknown key"),
        ("detector:\n  type: yunet2\n", "detector.type: must be one of auto, yunet, blazeface_full"),
        (
            "detector:\n  yunet_score_threshold: 1.5\n",
            "detector.yunet_score_threshold: must be a number in 0.05..1.0, got 1.5",
        ),
        (
            "detector:\n  yunet_max_width: 32\n",
            "detector.yunet_max_width: must be an integer in 64..8192, got 32",
        ),
        ("detector:\n  yunet_max_width: wide\n", "detector.yunet_max_width: must be an integer"),
        ("detector:\n  yunet_model: 7\n", "detector.yunet_model: must be a non-empty string"),
        (
            "detector:\n  yunet_candidate_threshold: 0\n",
            "detector.yunet_candidate_threshold: must be a number in 0.01..1.0, got 0",
        ),
        (
            "detector:\n  yunet_crop_score_threshold: [0.5]\n",
            "detector.yunet_crop_score_threshold: must be a number in 0.05..1.0, got [0.5]",
        ),
    ],
)
def test_bad_yunet_settings_are_named(tmp_path, text, message):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="^" + re.escape(message)):
        load_config(path, environ={})


def test_yunet_settings_load_from_file_and_env(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("detector:\n  type: yunet\n  yunet_score_threshold: 0.6\n")
    config = load_config(path, environ={"EMOTION_EDGE_DETECTOR__YUNET_MAX_WIDTH": "480"})
    assert (config.detector.type, config.detector.yunet_score_threshold) == ("yunet", 0.6)
    assert config.detector.yunet_max_width == 480
    detector = make_detector(config.detector)
    assert detector.scan_size((640, 480)) == (480, 360) and detector.score_threshold == 0.6
