"""Detection types and the detector factory."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


class DetectorError(RuntimeError):
    """The detector cannot be built (missing cascade or model file); the message says what to do."""


@dataclass(frozen=True)
class Detection:
    box: tuple[int, int, int, int]  # x, y, w, h in source-frame pixels
    score: float  # blazeface: probability; cascades: a neighbour-vote confidence in (0, 1)


class Detector(Protocol):
    name: str

    def detect(self, frame: np.ndarray) -> list[Detection]: ...

    # Between full scans: re-find the faces last seen at `boxes` (cheaper than detect where it can be).
    def detect_roi(self, frame: np.ndarray, boxes: list) -> list[Detection]: ...


def clamp_box(x: float, y: float, w: float, h: float, width: int, height: int) -> tuple[int, int, int, int]:
    """Round a box to integer pixels and clip it to the frame."""
    x0, y0 = max(0, int(round(x))), max(0, int(round(y)))
    x1, y1 = min(width, int(round(x + w))), min(height, int(round(y + h)))
    return x0, y0, max(0, x1 - x0), max(0, y1 - y0)


def make_detector(cfg) -> Detector:
    """Build the detector named by `cfg.type` (an edge.config.DetectorConfig or any object with its keys)."""
    kind = getattr(cfg, "type", "haar")
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
    raise DetectorError(f"unknown detector type {kind!r} (choose haar, lbp or blazeface)")
