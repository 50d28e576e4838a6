"""Detection types and the detector factory."""

from __future__ import annotations

import logging
from dataclasses import dataclass, is_dataclass, replace
from types import SimpleNamespace
from typing import Protocol

import numpy as np

log = logging.getLogger(__name__)


class DetectorError(RuntimeError):
    """The detector cannot be built (missing cascade or model file); the message says what to do."""


@dataclass(frozen=True)
class Detection:
    box: tuple[int, int, int, int]  # x, y, w, h in source-frame pixels
    score: float  # blazeface: probability; cascades: a neighbour-vote confidence in (0, 1)
    # (x, y) in source-frame pixels where the detector finds landmarks (BlazeFace: the eye on the image's left,
    # the other eye, nose tip, mouth, the two tragions); None for detectors that give only a box (cascades).
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
    """'blazeface_full (/path/face_detection_full_range.tflite)': the detector that runs and the file it loaded."""
    path = getattr(detector, "path", None)
    return f"{detector.name} ({path})" if path else detector.name


def _with_type(cfg, kind: str):
    """A copy of the detector settings with another type."""
    if is_dataclass(cfg):
        return replace(cfg, type=kind)
    return SimpleNamespace(**{**vars(cfg), "type": kind})


def make_detector(cfg) -> Detector:
    """Build the detector named by `cfg.type` (an edge.config.DetectorConfig or any object with its keys).

    `auto` is BlazeFace full range when its weights are installed, else Haar, with a warning that says how to
    get the better one: the daemon still runs on a Pi where the weights did not arrive.
    """
    kind = getattr(cfg, "type", "haar")
    if kind == "auto":
        from edge.detect.blazeface import default_model_path

        if getattr(cfg, "blazeface_model", None) or default_model_path("full") is not None:
            return make_detector(_with_type(cfg, "blazeface_full"))
        log.warning(
            "detector auto: the BlazeFace weights are missing from edge/models/ (a broken install: reinstall "
            "the package), falling back to the Haar cascade, which misses more faces"
        )
        return make_detector(_with_type(cfg, "haar"))
    if kind in ("haar", "lbp"):
        from edge.detect.cascade import CascadeDetector

        return CascadeDetector(
            kind,
            min_face_px=cfg.min_face_px,
            detect_width=cfg.detect_width,
            scale_factor=cfg.scale_factor,
            min_neighbors=cfg.min_neighbors,
        )
    if kind == "blazeface":
        from edge.detect.blazeface import BlazeFaceDetector

        return BlazeFaceDetector(
            model_path=getattr(cfg, "blazeface_model", None),
            min_confidence=cfg.min_confidence,
            min_face_px=cfg.min_face_px,
        )
    if kind == "blazeface_full":
        from edge.detect.blazeface import FullRangeDetector

        return FullRangeDetector(
            model_path=getattr(cfg, "blazeface_model", None),
            min_confidence=cfg.min_confidence,
            min_face_px=cfg.min_face_px,
        )
    raise DetectorError(
        f"unknown detector type {kind!r} (choose auto, blazeface_full, blazeface, haar or lbp)"
    )
