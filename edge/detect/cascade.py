"""OpenCV cascade face detectors (Haar, LBP), run on a downscaled grayscale copy of the frame.

Detection time grows with the pixel count, so the frame is shrunk to `detect_width` first; boxes are mapped
back to source pixels. `min_face_px` is in source pixels, so the setting means the same at any resolution.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from edge.detect.base import Detection, DetectorError, clamp_box
from edge.preprocess import to_gray

CASCADE_FILES = {
    "haar": ("haarcascades", "haarcascade_frontalface_default.xml"),
    "lbp": ("lbpcascades", "lbpcascade_frontalface_improved.xml"),
}
_LBP_FALLBACK = "lbpcascade_frontalface.xml"


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
    def __init__(self, kind="haar", min_face_px=40, detect_width=320, scale_factor=1.1, min_neighbors=5):
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

    def detect(self, frame: np.ndarray) -> list[Detection]:
        gray = to_gray(frame)
        height, width = gray.shape[:2]
        if height < 2 or width < 2:
            return []
        scale = min(1.0, self.detect_width / width)
        if scale < 1.0:
            size = (max(1, round(width * scale)), max(1, round(height * scale)))  # never 0 for strip frames
            gray = cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
        small = gray
        small = cv2.equalizeHist(small)  # cascades were trained on normalised contrast: helps dim rooms
        min_side = max(1, int(round(self.min_face_px * scale)))
        if min_side > min(small.shape[:2]):
            return []
        boxes, votes = self._cascade.detectMultiScale2(
            small,
            scaleFactor=self.scale_factor,
            minNeighbors=self.min_neighbors,
            minSize=(min_side, min_side),
        )
        detections = []
        for (x, y, w, h), n in zip(
            np.asarray(boxes).reshape(-1, 4), np.asarray(votes).reshape(-1), strict=True
        ):
            box = clamp_box(x / scale, y / scale, w / scale, h / scale, width, height)
            if min(box[2], box[3]) < self.min_face_px or box[2] == 0:
                continue
            # More overlapping raw hits = more certain; n/(n+k) maps votes into (0, 1) monotonically.
            score = float(n) / (float(n) + max(1, self.min_neighbors))
            detections.append(Detection(box, round(score, 4)))
        detections.sort(key=lambda d: d.score, reverse=True)
        return detections
