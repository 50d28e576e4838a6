"""One frame in, one event out: detect faces, classify them, track and smooth; edge/emit.py's policy says
whether the frame makes an event, and builds it (edge/schema/event.schema.json, schema_version 1). Odd frames (grayscale, BGRA,
16-bit, tiny, huge, unusual channel counts) never crash the pipeline: what cannot hold a face yields none.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np

from edge.capture.sources import Frame
from edge.emit import EventMaker, face_dicts
from edge.preprocess import faces_to_batch
from edge.track import FaceState, Tracker

log = logging.getLogger(__name__)


@dataclass
class ProcessResult:
    event: dict | None  # None when the publish policy says there is nothing to publish
    faces: list[FaceState]  # the faces in view: tracks found on this frame
    timings_ms: dict[str, float]  # detect, classify, track (event building included in track)
    changes: list[dict] = field(default_factory=list)  # this frame's appeared/changed/left records


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
    def __init__(self, config, classifier, detector, source_id: str, clock=time.monotonic):
        self.config = config
        self.classifier = classifier
        self.detector = detector
        self.source_id = source_id
        self.labels = list(classifier.labels)
        self.input_size = classifier.input_size
        self.crop_margin = float(classifier.contract.crop_margin)
        self.framing = classifier.contract.face_framing  # None: every face is cut by its box
        # Box -> eyes of the last detections, for the frames in between that reuse those boxes.
        self._eyes: dict[tuple, object] = {}
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
        self.events = EventMaker(config, self.labels, source_id, clock)
        self._frames = 0

    def _classify(self, image: np.ndarray, boxes: list) -> np.ndarray:
        if not boxes:
            return np.empty((0, len(self.labels)), np.float32)
        eyes = [self._eyes.get(tuple(box)) for box in boxes]
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

    def _found(self, detections: list) -> list:
        """The detections' boxes; their eyes are kept by box for framing, also on frames that reuse the boxes."""
        self._eyes = {tuple(d.box): d.eyes for d in detections}
        return [d.box for d in detections]

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
            boxes = []
        elif run_detector:
            boxes = self._found(self.detector.detect(image))
        elif self.roi_redetect:
            boxes = self._found(self._redetect(image))
        else:  # between detections, keep the faces where they were last seen (and their eyes)
            boxes = self.tracker.visible_boxes()
        boxes = [b for b in boxes if b[2] > 0 and b[3] > 0]
        detected = time.perf_counter()
        probs = self._classify(image, boxes) if boxes else np.empty((0, len(self.labels)), np.float32)
        classified = time.perf_counter()
        changes = self.tracker.update(boxes, probs)
        faces = self.tracker.visible()
        event = self.events.make(frame, image, faces, changes)
        done = time.perf_counter()
        timings = {
            "detect": (detected - start) * 1000,
            "classify": (classified - detected) * 1000,
            "track": (done - classified) * 1000,
        }
        if event is not None:
            event["latency_ms"] = {
                "detect": round(timings["detect"], 2),
                "classify": round(timings["classify"], 2),
                "total": round((done - start) * 1000, 2),
            }
        return ProcessResult(event, faces, timings, changes)

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
