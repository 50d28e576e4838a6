"""OpenCV cascade face detectors (Haar, LBP), run on a downscaled grayscale copy of the frame.

Detection time grows with the pixel count, so the frame is shrunk to `detect_width` first; boxes are mapped
back to source pixels. `min_face_px` is in source pixels, so the setting means the same at any resolution.

`detect_roi` re-finds already tracked faces between full scans: it scans only a small crop around each
last-known box, shrunk so the face is about twice the cascade's window, a few percent of a full scan's pixels.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from edge.detect.base import Detection, DetectorError, clamp_box
from edge.preprocess import expand_box, to_gray
from edge.track import iou

CASCADE_FILES = {
    "haar": ("haarcascades", "haarcascade_frontalface_default.xml"),
    "lbp": ("lbpcascades", "lbpcascade_frontalface_improved.xml"),
}
_LBP_FALLBACK = "lbpcascade_frontalface.xml"
# Around a tracked box, search this much of its size again on each side: room for a face that moved.
ROI_MARGIN = 0.5
# In the crop, the face is shrunk to this many cascade windows wide: big enough to be found reliably, small
# enough that the few scales between the minimum window and the crop size cost little.
ROI_FACE_WINDOWS = 2.0
# Between two frames a face barely changes size: scanning only 0.7x..1.5x its last size skips most of the
# cascade's work (the smallest windows are the most numerous; docs/benchmarks.md has the figure).
ROI_SIZE_RANGE = (0.7, 1.5)
# A frame (or tracked-face crop) whose grey levels span less than this is stretched to the full range first.
LOW_CONTRAST = 128


def normalise_contrast(gray: np.ndarray) -> np.ndarray:
    """A dim or washed-out frame stretched linearly to 0..255; any other frame unchanged.

    The cascade normalises each window by its own variance, yet in a very dark frame (a face a few dozen grey
    levels deep) it finds nothing. Histogram equalisation, which this detector once used, rescues those but
    reshapes the histogram: a plain wall filling most of the frame gets its few grey levels spread over the
    whole range and the face in front of it crushed (tests/edge/test_detect.py's plain-wall faces were all
    missed). A linear stretch keeps the order and spacing of the levels.
    """
    low, high, _, _ = cv2.minMaxLoc(gray)
    if high - low >= LOW_CONTRAST or high <= low:
        return gray
    return cv2.convertScaleAbs(gray, alpha=255.0 / (high - low), beta=-low * 255.0 / (high - low))


def _candidate_dirs(folder: str) -> list[Path]:
    """Where OpenCV installs keep cascades: the wheel's cv2/data, and the distro's opencv-data package."""
    dirs = []
    haar_dir = Path(getattr(getattr(cv2, "data", None), "haarcascades", "") or ".")
    dirs += [haar_dir.parent / folder, haar_dir, Path(cv2.__file__).parent / "data" / folder]
    for share in ("/usr/share/opencv4", "/usr/local/share/opencv4", "/usr/share/opencv"):
        dirs.append(Path(share) / folder)
    return dirs


def find_cascade(kind: str) -> Path:
    folder, name = CASCADE_FILES[kind]
    names = [name, _LBP_FALLBACK] if kind == "lbp" else [name]
    for directory in _candidate_dirs(folder):
        for candidate in names:
            path = directory / candidate
            if path.is_file():
                return path
    searched = ", ".join(str(d) for d in _candidate_dirs(folder))
    if kind == "lbp":
        raise DetectorError(
            "LBP cascade not found: the opencv-python wheels ship only Haar cascades. Install the "
            "'opencv-data' apt package (it provides lbpcascades/) or use detector.type haar or blazeface. "
            f"Searched: {searched}"
        )
    raise DetectorError(f"{name} not found (searched {searched}); reinstall opencv-python-headless")


class CascadeDetector:
    landmarks = False  # a box only: faces are cut by the box and the contract's crop_margin

    # No defaults: edge.config.DetectorConfig holds them, and make_detector passes every one.
    def __init__(
        self, kind: str, *, min_face_px: int, detect_width: int, scale_factor: float, min_neighbors: int
    ):
        if kind not in CASCADE_FILES:
            raise DetectorError(f"unknown cascade type {kind!r}")
        self.name = kind
        self.path = find_cascade(kind)
        self._cascade = cv2.CascadeClassifier(os.fspath(self.path))
        if self._cascade.empty():
            raise DetectorError(f"{self.path} is not a cascade OpenCV {cv2.__version__} can load")
        self.min_face_px = int(min_face_px)
        self.detect_width = int(detect_width)
        self.scale_factor = float(scale_factor)
        self.min_neighbors = int(min_neighbors)
        self.scanned_px = 0  # pixels handed to the cascade so far (after downscaling): what a scan costs

    def _scan(self, gray, scale: float, offset, frame_shape, min_side: int = 0, max_side: int = 0):
        """Cascade on `gray`, a region shrunk by `scale` whose top-left corner is at `offset` in the frame.

        Faces are searched between `min_side` (at least min_face_px) and `max_side` (0 = any) scaled pixels.
        """
        if scale < 1.0:
            size = (max(1, round(gray.shape[1] * scale)), max(1, round(gray.shape[0] * scale)))  # never 0
            gray = cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
        small = normalise_contrast(gray)
        min_side = max(1, min_side, int(round(self.min_face_px * scale)))
        if min_side > min(small.shape[:2]) or (max_side and max_side < min_side):
            return []
        self.scanned_px += small.size
        boxes, votes = self._cascade.detectMultiScale2(
            small,
            scaleFactor=self.scale_factor,
            minNeighbors=self.min_neighbors,
            minSize=(min_side, min_side),
            maxSize=(max_side, max_side),
        )
        height, width = frame_shape[:2]
        detections = []
        for (x, y, w, h), n in zip(
            np.asarray(boxes).reshape(-1, 4), np.asarray(votes).reshape(-1), strict=True
        ):
            box = clamp_box(offset[0] + x / scale, offset[1] + y / scale, w / scale, h / scale, width, height)
            if min(box[2], box[3]) < self.min_face_px or box[2] == 0:
                continue
            # More overlapping raw hits = more certain; n/(n+k) maps votes into (0, 1) monotonically.
            score = float(n) / (float(n) + max(1, self.min_neighbors))
            detections.append(Detection(box, round(score, 4)))
        detections.sort(key=lambda d: d.score, reverse=True)
        return detections

    def detect(self, frame: np.ndarray) -> list[Detection]:
        gray = to_gray(frame)
        height, width = gray.shape[:2]
        if height < 2 or width < 2:
            return []
        return self._scan(gray, min(1.0, self.detect_width / width), (0, 0), gray.shape)

    def detect_roi(self, frame: np.ndarray, boxes) -> list[Detection]:
        """Re-find each [x, y, w, h] box's face in a crop around it: at most one detection per box.

        Per box, the found face that overlaps the old box most (a neighbour's face that shows in the crop
        is not this track's); a box whose face is gone yields nothing. Duplicates (two boxes re-finding the
        same face) are dropped, so each face is reported once. Only full scans find new faces, except in a
        crowd: when the crops together would cost about as much as a full scan, this is a full scan.
        """
        height, width = frame.shape[:2]
        if height < 2 or width < 2:
            return []
        window = min(self._cascade.getOriginalWindowSize())
        plans = []
        for box in boxes:
            region = expand_box(box, frame.shape, ROI_MARGIN)
            face = max(box[2], box[3])
            if min(region[2], region[3]) >= 2 and min(box[2], box[3]) >= 1:
                plans.append((box, region, face, min(1.0, ROI_FACE_WINDOWS * window / face)))
        crops_px = sum(w * h * scale**2 for _, (_, _, w, h), _, scale in plans)
        # A crop's pixel costs about twice a full scan's (it is mostly face, where the cascade works hardest).
        if 2 * crops_px >= width * height * min(1.0, self.detect_width / width) ** 2:
            return self.detect(frame)
        found: list[Detection] = []
        for box, (x0, y0, w, h), face, scale in plans:
            crop = to_gray(frame[y0 : y0 + h, x0 : x0 + w])
            low, high = (round(face * scale * factor) for factor in ROI_SIZE_RANGE)
            candidates = self._scan(crop, scale, (x0, y0), (height, width), max(window, low), high)
            best = max(candidates, key=lambda d: iou(d.box, box), default=None)
            if best is None or iou(best.box, box) == 0:
                continue
            if all(iou(best.box, other.box) < 0.5 for other in found):
                found.append(best)
        return found
