"""The detector factory: `make_detector(cfg)` builds the detector `cfg.type` names, `auto` choosing the best
one whose weights are installed."""

from __future__ import annotations

import logging
from dataclasses import is_dataclass, replace
from types import SimpleNamespace

from edge.config import DETECTOR_TYPES
from edge.detect.base import Detector, DetectorError

log = logging.getLogger(__name__)


def _with_type(cfg, kind: str):
    """A copy of the detector settings with another type."""
    if is_dataclass(cfg):
        return replace(cfg, type=kind)
    return SimpleNamespace(**{**vars(cfg), "type": kind})


# Why `auto` is YuNet: on room-camera scenes (benchmarks/scene_accuracy.py --room, docs/detectors.md) it finds
# the small and grey faces that BlazeFace full range loses in its 192 px input, and on the photo dev set's
# close-ups it does as well (benchmarks/photo_accuracy.py).
AUTO_REASON = (
    "chosen by auto: it finds small (from ~24 px), distant and grey faces at the frame's own resolution, which "
    "BlazeFace full range misses (docs/detectors.md)"
)
AUTO_FALLBACK = "chosen by auto as a fallback: the YuNet weights are missing (reinstall the package)"


def make_detector(cfg) -> Detector:
    """Build the detector named by `cfg.type` (an edge.config.DetectorConfig or any object with its keys).

    `auto` is YuNet when its weights are installed, else BlazeFace full range, else Haar, with a warning that
    says how to get the better one: the daemon still runs on a Pi where the weights did not arrive.
    """
    kind = getattr(cfg, "type", "haar")
    if kind == "auto":
        detector = _auto(cfg)
        detector.chosen_by = AUTO_REASON if detector.name == "yunet" else AUTO_FALLBACK
        return detector
    if kind == "yunet":
        from edge.detect.yunet import YuNetDetector

        return YuNetDetector(
            getattr(cfg, "yunet_model", None),
            score_threshold=cfg.yunet_score_threshold,
            candidate_threshold=cfg.yunet_candidate_threshold,
            crop_score_threshold=cfg.yunet_crop_score_threshold,
            min_face_px=cfg.min_face_px,
            max_width=cfg.yunet_max_width,
        )
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
    raise DetectorError(f"unknown detector type {kind!r} (choose one of {', '.join(DETECTOR_TYPES)})")


def _auto(cfg) -> Detector:
    """YuNet; without its weights BlazeFace full range; without those Haar, each fallback with a warning."""
    from edge.detect.blazeface import default_model_path as blazeface_weights
    from edge.detect.yunet import SHIPPED_DIR, default_model_path

    if getattr(cfg, "yunet_model", None) or default_model_path() is not None:
        return make_detector(_with_type(cfg, "yunet"))
    if getattr(cfg, "blazeface_model", None) or blazeface_weights("full") is not None:
        log.warning(
            "detector auto: the YuNet weights are missing from %s (a broken install: reinstall the package), "
            "falling back to BlazeFace full range, which misses small and grey faces",
            SHIPPED_DIR,
        )
        return make_detector(_with_type(cfg, "blazeface_full"))
    log.warning(
        "detector auto: the YuNet and BlazeFace weights are missing from %s (a broken install: reinstall "
        "the package), falling back to the Haar cascade, which misses more faces",
        SHIPPED_DIR,
    )
    return make_detector(_with_type(cfg, "haar"))
