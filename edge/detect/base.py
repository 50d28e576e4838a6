"""What every detector returns and raises (the factory that builds one is edge/detect/factory.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


class DetectorError(RuntimeError):
    """The detector cannot be built (missing cascade or model file); the message says what to do."""


@dataclass(frozen=True)
class Detection:
    box: tuple[int, int, int, int]  # x, y, w, h in source-frame pixels
    score: float  # yunet, blazeface: the network's score; cascades: a neighbour-vote confidence in (0, 1)
    # (x, y) in source-frame pixels where the detector finds landmarks, the two eyes first (YuNet: eyes, nose
    # tip, two mouth corners; BlazeFace: eyes, nose tip, mouth, the two tragions); None for detectors that give
    # only a box (cascades).
    keypoints: tuple[tuple[float, float], ...] | None = None

    @property
    def eyes(self) -> tuple[tuple[float, float], tuple[float, float]] | None:
        """The two eye centres, left-most in the image first, or None without landmarks."""
        if not self.keypoints or len(self.keypoints) < 2:
            return None
        first, second = self.keypoints[0], self.keypoints[1]
        return (first, second) if first[0] <= second[0] else (second, first)


class Detector(Protocol):
    name: str
    landmarks: bool  # whether detections carry keypoints (eyes)

    def detect(self, frame: np.ndarray) -> list[Detection]: ...

    # Between full scans: re-find the faces last seen at `boxes` (cheaper than detect where it can be).
    def detect_roi(self, frame: np.ndarray, boxes: list) -> list[Detection]: ...


def clamp_box(x: float, y: float, w: float, h: float, width: int, height: int) -> tuple[int, int, int, int]:
    """Round a box to integer pixels and clip it to the frame."""
    x0, y0 = max(0, int(round(x))), max(0, int(round(y)))
    x1, y1 = min(width, int(round(x + w))), min(height, int(round(y + h)))
    return x0, y0, max(0, x1 - x0), max(0, y1 - y0)


def largest(detections: list[Detection]) -> Detection | None:
    """The detection with the largest box, or None: the face a single-person photo is labelled for."""
    return max(detections, key=lambda d: d.box[2] * d.box[3], default=None)


def describe(detector) -> str:
    """'yunet (/path/face_detection_yunet_2023mar.onnx), auto: ...': the detector that runs, the file it loaded
    and, when `auto` chose it, why."""
    path = getattr(detector, "path", None)
    text = f"{detector.name} ({path})" if path else detector.name
    reason = getattr(detector, "chosen_by", None)
    return f"{text}, {reason}" if reason else text
