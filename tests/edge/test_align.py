"""Eye landmarks, alignment and framing on a real face photograph (scikit-image's astronaut)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from edge.align import Framing, cut_aligned, eye_angle, eye_transform
from edge.config import DetectorConfig
from edge.detect import make_detector
from edge.model_contract import ContractError, ModelContract
from testbed import facesdata

FRAMING = Framing(eye_distance=0.36, eye_y=0.43)


def rotated_astronaut(degrees: float) -> np.ndarray:
    """The 512x512 photo turned by `degrees` (counter-clockwise on screen) about its face, padded to 640x640."""
    image = cv2.copyMakeBorder(facesdata.astronaut_bgr(), 64, 64, 64, 64, cv2.BORDER_REPLICATE)
    x, y, w, h = facesdata.ASTRONAUT_FACE
    centre = (x + 64 + w / 2, y + 64 + h / 2)
    matrix = cv2.getRotationMatrix2D(centre, degrees, 1.0)
    return cv2.warpAffine(image, matrix, image.shape[1::-1], borderMode=cv2.BORDER_REPLICATE)


def the_face(detector, frame):
    detections = detector.detect(frame)
    assert detections, "no face found"
    return max(detections, key=lambda d: d.box[2] * d.box[3])


def test_landmarks_sit_where_a_face_has_them():
    frame, truth = facesdata.one_face_frame()
    face = the_face(make_detector(DetectorConfig(type="blazeface_full")), frame)
    (lx, ly), (rx, ry) = face.eyes
    nose, mouth = face.keypoints[2], face.keypoints[3]
    x, y, w, h = face.box
    assert lx < rx and abs(ly - ry) < 0.1 * w  # two eyes side by side, upright face
    for px, py in (face.eyes[0], face.eyes[1], nose, mouth):
        assert x <= px <= x + w and y <= py <= y + h
    assert (ly + ry) / 2 < nose[1] < mouth[1]  # eyes above the nose above the mouth
    assert 0.25 * w < rx - lx < 0.6 * w


@pytest.mark.parametrize("degrees", [-30, -15, 15, 30])
def test_a_rotated_face_comes_back_level(degrees):
    detector = make_detector(DetectorConfig(type="blazeface_full", min_face_px=20))
    upright = the_face(detector, rotated_astronaut(0))
    face = the_face(detector, rotated_astronaut(degrees))
    # The photo turned counter-clockwise on screen: the eye on the right rises, so the eye line's angle is -deg
    # (BlazeFace's landmarks under-read a 30 degree roll by ~5 degrees, and wobble by 2-4 with the pixels).
    tolerance = max(4, abs(degrees) / 4)
    assert eye_angle(face.eyes) == pytest.approx(eye_angle(upright.eyes) - degrees, abs=tolerance)
    crop = cut_aligned(
        cv2.cvtColor(rotated_astronaut(degrees), cv2.COLOR_BGR2GRAY), face.eyes, FRAMING, (96, 96)
    )
    # Found again in the aligned crop (padded so the detector sees a face in a scene), the eyes are level and
    # where the framing put them.
    padded = cv2.copyMakeBorder(crop, 96, 96, 96, 96, cv2.BORDER_REPLICATE)
    again = the_face(detector, padded)
    assert abs(eye_angle(again.eyes)) < tolerance
    (lx, ly), (rx, ry) = again.eyes
    assert ((lx + rx) / 2 - 96) / 96 == pytest.approx(0.5, abs=0.06)
    assert ((ly + ry) / 2 - 96) / 96 == pytest.approx(FRAMING.eye_y, abs=0.06)
    assert (rx - lx) / 96 == pytest.approx(FRAMING.eye_distance, abs=0.06)


def test_the_eyes_land_exactly_where_the_framing_says():
    eyes = ((210.0, 140.0), (290.0, 180.0))  # tilted 26.6 degrees, 89.4 px apart
    matrix = eye_transform(eyes, Framing(eye_distance=0.4, eye_y=0.35), (48, 48))
    mapped = [matrix @ np.array([x, y, 1.0]) for x, y in eyes]
    (lx, ly), (rx, ry) = mapped
    assert ly == pytest.approx(ry, abs=1e-6)  # level
    assert rx - lx == pytest.approx(0.4 * 48, abs=1e-6)
    assert ((lx + rx) / 2, ly) == (pytest.approx(24.0), pytest.approx(0.35 * 48))
    unaligned = eye_transform(eyes, Framing(eye_distance=0.4, eye_y=0.35, align=False), (48, 48))
    assert unaligned[0, 1] == pytest.approx(0.0)  # scale and shift only: the tilt is kept


def test_a_large_face_is_shrunk_without_aliasing():
    """A 600 px face cut to 48 px: fine stripes average to grey, as area averaging does, instead of aliasing."""
    stripes = np.zeros((800, 800), np.uint8)
    stripes[:, ::2] = 255  # one-pixel stripes: pure aliasing bait
    eyes = ((300.0, 350.0), (500.0, 350.0))
    crop = cut_aligned(stripes, eyes, Framing(eye_distance=0.36, eye_y=0.4), (48, 48))
    assert crop.shape == (48, 48)
    assert abs(float(crop.mean()) - 127.5) < 6 and crop.std() < 6  # a plain bilinear warp gives 0/255 bands


def test_a_face_at_the_frame_edge_repeats_the_edge_instead_of_black():
    frame = np.full((100, 100), 200, np.uint8)
    crop = cut_aligned(frame, ((2.0, 50.0), (22.0, 50.0)), FRAMING, (48, 48))
    assert crop.min() == 200


def test_framing_lives_in_the_contract_and_is_checked():
    contract = ModelContract(labels=["a", "b"], framing=FRAMING.to_dict()).validate()
    assert contract.face_framing == FRAMING
    again = ModelContract.from_dict(contract.to_dict())
    assert again.face_framing == FRAMING
    old = {k: v for k, v in contract.to_dict().items() if k != "framing"}  # a contract from before framing
    assert ModelContract.from_dict(old).face_framing is None
    for bad, named in (
        ({"eye_distance": 2.0, "eye_y": 0.4}, "'eye_distance' must be a number in 0.1..0.9"),
        ({"eye_distance": 0.36}, "'eye_y' must be a number"),
        ({"eye_distance": 0.36, "eye_y": 0.4, "align": "yes"}, "'align' must be true or false"),
        ({"eye_distance": 0.36, "eye_y": 0.4, "zoom": 1}, "unknown key(s) ['zoom']"),
    ):
        with pytest.raises(ContractError, match=None) as caught:
            ModelContract(labels=["a", "b"], framing=bad).validate("m.json")
        assert named in str(caught.value) and "m.json: 'framing'" in str(caught.value)


def test_the_shipped_model_frames_faces_from_the_eyes():
    from edge.align import DEFAULT_BOX_MARGIN, DEFAULT_FRAMING
    from edge.classify import EmotionClassifier
    from edge.daemon import default_model_path as shipped

    contract = EmotionClassifier(shipped()).contract
    # What new models are trained with is what the shipped one declares: one framing across the project.
    assert contract.face_framing == DEFAULT_FRAMING and contract.crop_margin == DEFAULT_BOX_MARGIN
