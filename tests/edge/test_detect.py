"""Face detectors on real photographs (scikit-image astronaut) with known face positions."""

from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np
import pytest

from edge.config import DetectorConfig
from edge.detect import DetectorError, make_detector
from edge.detect.blazeface import VARIANTS, make_anchors, weighted_nms
from edge.detect.cascade import find_cascade
from testbed import facesdata


def iou(a, b) -> float:
    ax1, ay1, bx1, by1 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    w = max(0, min(ax1, bx1) - max(a[0], b[0]))
    h = max(0, min(ay1, by1) - max(a[1], b[1]))
    inter = w * h
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def matched(detections, truth, threshold=0.5) -> int:
    """How many known faces have a detection overlapping them by at least `threshold` IoU."""
    return sum(any(iou(d.box, t) >= threshold for d in detections) for t in truth)


def _lbp_available() -> bool:
    try:
        find_cascade("lbp")
    except DetectorError:
        return False
    return True


DETECTORS = [
    "haar",
    pytest.param(
        "lbp", marks=pytest.mark.skipif(not _lbp_available(), reason="no LBP cascade in this OpenCV")
    ),
    "blazeface",
    "blazeface_full",
    "yunet",
]


@pytest.mark.parametrize("kind", DETECTORS)
def test_finds_the_astronaut_in_source_pixels(kind):
    frame, truth = facesdata.one_face_frame()
    detections = make_detector(DetectorConfig(type=kind)).detect(frame)
    assert matched(detections, truth) == 1, detections
    best = max(detections, key=lambda d: iou(d.box, truth[0]))
    assert all(isinstance(v, int) for v in best.box)
    assert 0.0 < best.score <= 1.0


@pytest.mark.parametrize("kind", DETECTORS)
def test_finds_both_faces(kind):
    frame, truth = facesdata.two_faces_frame()
    detections = make_detector(DetectorConfig(type=kind)).detect(frame)
    assert matched(detections, truth) == 2, detections


@pytest.mark.parametrize("kind", DETECTORS)
def test_no_face_scene_gives_nothing(kind):
    assert make_detector(DetectorConfig(type=kind)).detect(facesdata.no_face_frame()) == []


def test_haar_twenty_faces_at_full_detect_width():
    frame, truth = facesdata.twenty_faces_frame()
    detector = make_detector(DetectorConfig(type="haar", detect_width=frame.shape[1]))
    assert matched(detector.detect(frame), truth) == 20


def test_min_face_px_is_in_source_pixels():
    frame, truth = facesdata.one_face_frame()  # the face is about 89 px wide
    assert matched(make_detector(DetectorConfig(type="haar", min_face_px=60)).detect(frame), truth) == 1
    assert make_detector(DetectorConfig(type="haar", min_face_px=200)).detect(frame) == []


def test_detect_width_downscale_maps_boxes_back_to_a_4k_frame():
    import cv2

    frame, truth = facesdata.one_face_frame()
    big = cv2.resize(frame, (3840, 2880))
    big_truth = [tuple(v * 6 for v in truth[0])]
    detections = make_detector(DetectorConfig(type="haar", min_face_px=200)).detect(big)
    assert matched(detections, big_truth) == 1


@pytest.mark.parametrize("kind", ["haar", "blazeface", "blazeface_full", "yunet"])
@pytest.mark.parametrize(
    "frame",
    [
        np.zeros((1, 1, 3), np.uint8),
        np.zeros((1, 1), np.uint8),
        np.zeros((3, 2000, 3), np.uint8),
        np.full((480, 640), 30000, np.uint16),
        np.zeros((480, 640, 4), np.uint8),
    ],
    ids=["1x1", "1x1-gray", "3x2000", "16bit", "bgra"],
)
def test_odd_frames_do_not_crash(kind, frame):
    assert make_detector(DetectorConfig(type=kind)).detect(frame) == []


@pytest.mark.parametrize("kind", ["haar", "blazeface", "blazeface_full", "yunet"])
def test_gray_and_bgra_photos_still_detect(kind):
    import cv2

    frame, truth = facesdata.one_face_frame()
    detector = make_detector(DetectorConfig(type=kind))
    assert matched(detector.detect(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)), truth) == 1
    assert matched(detector.detect(cv2.cvtColor(frame, cv2.COLOR_BGR2BGRA)), truth) == 1


def test_lbp_missing_is_a_clear_error():
    if _lbp_available():
        pytest.skip("this OpenCV has LBP cascades")
    with pytest.raises(DetectorError, match="opencv-data"):
        make_detector(DetectorConfig(type="lbp"))


def test_blazeface_bad_model_path_is_a_clear_error(tmp_path):
    with pytest.raises(DetectorError, match="does not exist"):
        make_detector(DetectorConfig(type="blazeface", blazeface_model=str(tmp_path / "nope.tflite")))


def test_blazeface_anchor_layout():
    anchors = make_anchors()
    assert anchors.shape == (896, 2)
    np.testing.assert_allclose(anchors[0], [0.5 / 16, 0.5 / 16])  # 16x16 grid, 2 per cell first
    np.testing.assert_allclose(anchors[512], [0.5 / 8, 0.5 / 8])  # then 8x8 grid, 6 per cell


def test_weighted_nms_merges_overlaps_and_keeps_separate_boxes():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], np.float32)
    merged = weighted_nms(boxes, np.array([0.9, 0.6, 0.8], np.float32))
    assert len(merged) == 2
    (first, s1), (second, s2) = merged
    assert s1 == pytest.approx(0.9) and s2 == pytest.approx(0.8)
    np.testing.assert_allclose(first, [0.4, 0.4, 10.4, 10.4], atol=1e-4)  # 0.9/0.6 weighted mean


def test_unknown_type_is_rejected():
    with pytest.raises(DetectorError, match="unknown detector type"):
        make_detector(replace(DetectorConfig(), type="yolo"))


def _shifted(frame, box, dx):
    """The frame moved dx pixels right (a face that moved between frames) and the box moved with it."""
    return np.roll(frame, dx, axis=1), (box[0] + dx, box[1], box[2], box[3])


def matched_box(detections, truth_box):
    """The detection's box that overlaps a known face best."""
    return max(detections, key=lambda d: iou(d.box, truth_box)).box


def test_haar_roi_refinds_a_moved_face_from_a_small_crop():
    frame, truth = facesdata.one_face_frame()
    detector = make_detector(DetectorConfig(type="haar"))
    full = matched_box(detector.detect(frame), truth[0])
    full_scan_px = detector.scanned_px
    moved, expected = _shifted(frame, full, 15)
    detector.scanned_px = 0
    found = detector.detect_roi(moved, [full])
    assert len(found) == 1 and iou(found[0].box, expected) > 0.5, found
    assert found[0].box != full  # the box followed the face: it is not the old box handed back
    assert detector.scanned_px * 5 < full_scan_px  # one crop around the face, not the frame


def test_haar_roi_gives_nothing_where_the_face_has_gone():
    frame, truth = facesdata.one_face_frame()
    detector = make_detector(DetectorConfig(type="haar"))
    box = matched_box(detector.detect(frame), truth[0])
    assert detector.detect_roi(facesdata.no_face_frame(), [box]) == []
    assert detector.detect_roi(frame, []) == []


def test_haar_roi_one_detection_per_face_even_for_duplicate_boxes():
    frame, truth = facesdata.two_faces_frame()
    detector = make_detector(DetectorConfig(type="haar"))
    boxes = [matched_box(detector.detect(frame), t) for t in truth]
    found = detector.detect_roi(frame, [boxes[0], boxes[1], boxes[0]])
    assert len(found) == 2 and matched(found, truth) == 2, found


def test_haar_roi_in_a_crowd_is_a_full_scan():
    frame, truth = facesdata.twenty_faces_frame()
    detector = make_detector(DetectorConfig(type="haar"))
    full_scans = []
    detector.detect = lambda image: full_scans.append(image) or []
    detector.detect_roi(frame, truth)  # 20 crops would cost more than one 320-wide scan
    assert len(full_scans) == 1
    detector.detect_roi(frame, truth[:1])
    assert len(full_scans) == 1


def test_blazeface_roi_scans_the_whole_frame():
    frame, truth = facesdata.two_faces_frame()
    detector = make_detector(DetectorConfig(type="blazeface"))
    assert matched(detector.detect_roi(frame, truth[:1]), truth) == 2  # it still sees the other face


@pytest.mark.parametrize("wall", [30, 128, 220])
@pytest.mark.parametrize("face_px", [96, 144])
def test_haar_finds_a_face_in_front_of_a_plain_wall(face_px, wall):
    # A plain wall fills most of the frame. Equalising the whole frame's histogram (as this detector once
    # did) stretched the wall's few grey levels over the full range and crushed the face: it missed all six.
    face = facesdata.astronaut_face_gray()
    rng = np.random.default_rng(face_px + wall)
    frame = np.clip(wall + rng.normal(0, 6, (480, 640)), 0, 255).astype(np.uint8)
    frame[100 : 100 + face_px, 200 : 200 + face_px] = cv2.resize(face, (face_px, face_px))
    truth = [(200, 100, face_px, face_px)]
    assert matched(make_detector(DetectorConfig(type="haar")).detect(frame), truth) == 1


@pytest.mark.parametrize("gain", [0.15, 0.1])
def test_haar_finds_faces_in_a_very_dark_frame(gain):
    # The two faces a few dozen grey levels deep: without a contrast stretch the cascade finds neither.
    frame, truth = facesdata.two_faces_frame()
    dark = (frame.astype(np.float32) * gain).astype(np.uint8)
    assert matched(make_detector(DetectorConfig(type="haar")).detect(dark), truth) == 2


def test_full_range_anchor_layout():
    anchors = make_anchors(VARIANTS["full"])
    assert anchors.shape == (2304, 2)  # one anchor per cell of a 48x48 grid
    assert np.allclose(anchors[0], [0.5 / 48, 0.5 / 48]) and np.allclose(anchors[-1], [47.5 / 48, 47.5 / 48])


def test_blazeface_full_asked_for_by_name_without_its_weights_is_an_error(monkeypatch):
    # `auto` falls back (tests/edge/test_yunet.py); a detector named in the config does not, silently.
    from edge.detect import blazeface

    monkeypatch.setattr(blazeface, "SHIPPED_DIR", blazeface.SHIPPED_DIR / "gone")  # weights missing
    with pytest.raises(DetectorError, match="face_detection_full_range.tflite not found"):
        make_detector(DetectorConfig(type="blazeface_full"))


def test_full_range_finds_a_face_filling_the_frame():
    """A close-up (a doorbell camera, a portrait photo) is at the full-range model's limit (it finds 2% of the
    photo dev set's faces); when it finds nothing, the short-range model looks for a close face."""
    x, y, w, h = facesdata.ASTRONAUT_FACE
    face = cv2.resize(facesdata.astronaut_bgr()[y - 10 : y + h + 10, x - 10 : x + w + 10], (400, 400))
    detector = make_detector(DetectorConfig(type="blazeface_full"))
    detector.full.detect = lambda image: []  # as it does on most close-ups
    found = detector.detect(face)
    assert len(found) == 1 and found[0].box[2] > 250 and found[0].eyes is not None


def test_full_range_finds_faces_a_sixth_of_the_frame_wide_and_haar_does_not_beat_it():
    frame, truth = facesdata.two_faces_frame()
    small = cv2.resize(frame, (frame.shape[1] // 2, frame.shape[0] // 2), interpolation=cv2.INTER_AREA)
    halved = [tuple(v // 2 for v in box) for box in truth]
    found = make_detector(DetectorConfig(type="blazeface_full", min_face_px=20)).detect(small)
    assert matched(found, halved) == 2, (found, halved)


def test_full_range_roi_refinds_a_moved_face_with_its_eyes_from_a_crop():
    frame, truth = facesdata.one_face_frame()
    detector = make_detector(DetectorConfig(type="blazeface_full"))
    full = matched_box(detector.detect(frame), truth[0])
    moved, expected = _shifted(frame, full, 15)
    seen = []
    short_detect = detector.short.detect
    detector.short.detect = lambda image: seen.append(image.shape) or short_detect(image)
    found = detector.detect_roi(moved, [full])
    assert len(found) == 1 and iou(found[0].box, expected) > 0.5, found
    (lx, _), (rx, _) = found[0].eyes
    assert expected[0] < lx < rx < expected[0] + expected[2]  # landmarks in frame pixels, inside the face
    assert len(seen) == 1 and seen[0][0] * seen[0][1] < frame.shape[0] * frame.shape[1] / 4  # one small crop
    assert detector.detect_roi(facesdata.no_face_frame(), [full]) == []


def test_full_range_roi_with_three_tracked_faces_is_a_full_scan():
    frame, truth = facesdata.twenty_faces_frame()
    detector = make_detector(DetectorConfig(type="blazeface_full"))
    full_scans = []
    detector.detect = lambda image: full_scans.append(image) or []
    detector.detect_roi(frame, truth[:3])
    assert len(full_scans) == 1


@pytest.mark.parametrize("height", [100, 160, 260])  # faces of about 37, 58 and 95 px
def test_full_range_finds_small_faces_in_a_colour_frame(height):
    """A face ~1/17 of a 640x480 frame's width (a person a few metres from the camera) is found in colour."""
    portrait, box = facesdata.portrait(height)
    frame = np.full((480, 640, 3), 110, np.uint8)
    frame[100 : 100 + portrait.shape[0], 200 : 200 + portrait.shape[1]] = portrait
    truth = (box[0] + 200, box[1] + 100, box[2], box[3])
    found = make_detector(DetectorConfig(type="blazeface_full", min_face_px=20)).detect(frame)
    assert matched(found, [truth], threshold=0.4) == 1, (found, truth)
