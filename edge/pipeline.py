"""One frame in, the faces in view out: detect faces, classify them, track and smooth. What the frame
publishes (the event, edge/schema/event.schema.json) is edge/emit.py's, made from what `process` returns.
Odd frames (grayscale, BGRA, 16-bit, tiny, huge, unusual channel counts) never crash the pipeline: what
cannot hold a face yields none.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np

from edge.capture.base import Frame
from edge.emit import face_dicts
from edge.preprocess import faces_to_batch
from edge.track import FaceState, Tracker

log = logging.getLogger(__name__)


@dataclass
class ProcessResult:
    faces: list[FaceState]  # the faces in view: tracks found on this frame
    changes: list[dict]  # this frame's appeared/changed/left records
    timings_ms: dict[str, float]  # detect, classify, track
    # Faces tracked: those in view and those missed on the last frames but not yet declared left
    # (tracking.max_missing_frames); the state's `present` is true while there is one.
    tracked: int = 0


def usable_image(image) -> np.ndarray | None:
    """The frame as something detectors and preprocessing accept (2-D, or 3-D with 1/3/4 channels); else None."""
    if not isinstance(image, np.ndarray) or image.size == 0:
        return None
    if image.ndim == 3 and image.shape[2] not in (1, 3, 4):
        image = image[:, :, 0]  # e.g. 2-channel gray+alpha: the first plane is the picture
    if image.ndim not in (2, 3):
        return None
    if image.dtype not in (np.uint8, np.uint16):
        image = np.clip(np.nan_to_num(image), 0, 255).astype(np.uint8)
    return image


class FrameProcessor:
    def __init__(self, config, classifier, detector, source_id: str):
        self.config = config
        self.classifier = classifier
        self.detector = detector
        self.source_id = source_id
        self.labels = list(classifier.labels)
        self.input_size = classifier.input_size
        self.crop_margin = float(classifier.contract.crop_margin)
        self.framing = classifier.contract.face_framing  # None: every face is cut by its box
        tracking = config.tracking
        self.tracker = Tracker(
            self.labels,
            iou_threshold=tracking.iou_threshold,
            max_missing_frames=tracking.max_missing_frames,
            smoothing=tracking.smoothing,
            hysteresis=tracking.hysteresis,
        )
        self.tta_flip = bool(tracking.tta_flip)
        self.every_n = max(1, int(config.detector.every_n_frames))
        self.roi_redetect = bool(config.detector.roi_redetect)
        self._frames = 0

    def _classify(self, image: np.ndarray, boxes: list, eyes: list) -> np.ndarray:
        if not boxes:
            return np.empty((0, len(self.labels)), np.float32)
        batch = faces_to_batch(image, boxes, self.input_size, self.crop_margin, eyes, self.framing)
        probs = self.classifier.classify(batch)
        if self.tta_flip:  # the mirrored face is another look at the same expression: average the two
            probs = (probs + self.classifier.classify(np.ascontiguousarray(batch[:, :, ::-1]))) / 2.0
        return probs

    def _redetect(self, image: np.ndarray) -> list:
        """Between full scans: look for each tracked face near its last box. Tracks not found count as missed."""
        tracked = [track.box for track in self.tracker.tracks]
        detect_roi = getattr(self.detector, "detect_roi", None)
        if detect_roi is None:  # a detector without a cheap partial scan: the full one
            return self.detector.detect(image)
        return detect_roi(image, tracked)

    def process(self, frame: Frame) -> ProcessResult:
        start = time.perf_counter()
        image = usable_image(frame.image)
        photo = frame.file is not None
        if photo:  # each photo stands alone: no tracking or smoothing across photos
            self.tracker.reset()
        run_detector = photo or self._frames % self.every_n == 0
        self._frames += 1
        if image is None:
            log.warning(
                "frame %d: unusable image %s; treated as no faces", frame.index, _describe(frame.image)
            )
            found = []
        elif run_detector:
            found = [(d.box, d.eyes) for d in self.detector.detect(image)]
        elif self.roi_redetect:
            found = [(d.box, d.eyes) for d in self._redetect(image)]
        else:  # between detections, keep the faces where they were last seen, with their eyes
            found = [(track.box, track.eyes) for track in self.tracker.visible()]
        found = [(box, eyes) for box, eyes in found if box[2] > 0 and box[3] > 0]
        boxes, eyes = [box for box, _ in found], [eyes for _, eyes in found]
        detected = time.perf_counter()
        probs = self._classify(image, boxes, eyes)
        classified = time.perf_counter()
        changes = self.tracker.update(boxes, probs, eyes)
        faces = self.tracker.visible()
        done = time.perf_counter()
        timings = {
            "detect": (detected - start) * 1000,
            "classify": (classified - detected) * 1000,
            "track": (done - classified) * 1000,
        }
        return ProcessResult(faces, changes, timings, len(self.tracker.tracks))

    def forget_faces(self) -> int:
        """The camera went away: nobody is known to be in view any more. Returns how many were tracked."""
        count = len(self.tracker.tracks)
        self.tracker.reset()
        return count

    def faces_in_view(self) -> list[dict]:
        """The faces in view (for the retained state topic): track_id, box, emotion, confidence, scores."""
        return face_dicts(self.tracker.visible(), self.labels)


def _describe(image) -> str:
    shape = getattr(image, "shape", None)
    return f"(shape {shape}, dtype {getattr(image, 'dtype', type(image).__name__)})"
