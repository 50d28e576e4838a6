"""YuNet (OpenCV Zoo, 2023mar) through OpenCV's own `cv2.FaceDetectorYN`: faces from ~10 px up, with eyes.

YuNet is an anchor-free CNN of ~75k parameters that runs on whatever input size it is given, so a 640x480
frame is scanned at its own resolution and a face 30 px wide stays 30 px wide (BlazeFace full range shrinks
the whole frame to 192 px first, and such a face to ~9 px). It gives five landmarks: the two eyes, the nose tip
and the two mouth corners; the eyes feed edge/align.py as BlazeFace's do. The weights ship in edge/models/
(MIT; see its README), and OpenCV's DNN module runs them, so it needs nothing beyond opencv-python-headless.

Its smallest stride is 8 px, so a face under ~40 px gets a low score at the frame's own size, while the same
face enlarged twice scores high (scanning the whole frame enlarged costs four times as much). So a full scan
takes two looks: faces scoring `score_threshold` or more are accepted at once, and the few scoring between
`candidate_threshold` and that are looked at again on an enlarged crop around them, accepted when the crop
scores `crop_score_threshold`; the crop's detection (sharper eyes) is the one kept. The crop is a fixed
ROI_SIDE x ROI_SIDE input around the box, the face about half of it, on a second FaceDetectorYN kept at that
size; between full scans each tracked face is re-found on the same crop, a few percent of a scan's pixels.

The scan's cost grows with the pixel count: frames wider than `max_width` are shrunk to it first (a cap for
slow Pis, and for cameras of more than 640x480).
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from edge.detect.base import Detection, DetectorError, clamp_box
from edge.track import iou

MODEL_FILE = "face_detection_yunet_2023mar.onnx"
SHIPPED_DIR = Path(__file__).resolve().parent.parent / "models"
NMS_IOU = 0.3  # OpenCV Zoo's own setting for this model
TOP_K = 5000  # candidates kept before NMS (OpenCV Zoo's default): only a bound, scores cut far more
# Between full scans: a square crop around each tracked box, this much of the box's size again on each side
# (room for the face to move), resized to ROI_SIDE pixels so the face is about half of it, in YuNet's range.
ROI_MARGIN = 0.5
ROI_SIDE = 128
# At most this many candidates of one scan get the second look (a busy texture can score many weak ones).
MAX_SECOND_LOOKS = 8
# FaceDetectorYN pads its input up to a multiple of the network's largest stride before running it.
_PAD = 32


def default_model_path() -> Path | None:
    """The weights shipped in edge/models/, or None when they are missing (a broken install)."""
    path = SHIPPED_DIR / MODEL_FILE
    return path if path.is_file() else None


def as_bgr(image: np.ndarray) -> np.ndarray:
    """Any frame OpenCV gives us (gray, BGR, BGRA, 16-bit) as 8-bit BGR, the network's input."""
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    elif image.dtype != np.uint8:
        image = np.clip(image, 0, 255).astype(np.uint8)
    if image.ndim == 2 or image.shape[2] == 1:
        return cv2.cvtColor(image.reshape(image.shape[:2]), cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return image


class YuNetDetector:
    name = "yunet"
    landmarks = True  # its detections carry keypoints (eyes): faces can be aligned
    roi_side = ROI_SIDE  # the input each tracked face is re-found on (edge/opcount.py counts it)

    # No defaults for the tunables: edge.config.DetectorConfig holds them, and make_detector passes every one.
    def __init__(
        self,
        model_path,
        *,
        score_threshold: float,
        candidate_threshold: float,
        crop_score_threshold: float,
        min_face_px: int,
        max_width: int,
    ):
        path = Path(model_path) if model_path else default_model_path()
        if path is None:
            raise DetectorError(
                f"YuNet weights {MODEL_FILE} not found in {SHIPPED_DIR} (a broken install: reinstall the "
                "package), or set detector.yunet_model"
            )
        if not path.is_file():
            raise DetectorError(f"YuNet model {path} does not exist")
        self.path = path
        self.score_threshold = float(score_threshold)
        # A candidate threshold at or above the score threshold means no second look.
        self.candidate_threshold = min(float(candidate_threshold), self.score_threshold)
        self.crop_score_threshold = float(crop_score_threshold)
        self.min_face_px = int(min_face_px)
        self.max_width = int(max_width)
        self._scan = self._create((320, 240), self.candidate_threshold)
        self._scan_size = (320, 240)
        self._roi = self._create((ROI_SIDE, ROI_SIDE), self.crop_score_threshold)
        self.scanned_px = 0  # pixels handed to the network so far: what the scans cost (tests, bench)

    def _create(self, size: tuple[int, int], threshold: float):
        try:
            return cv2.FaceDetectorYN.create(os.fspath(self.path), "", size, threshold, NMS_IOU, TOP_K)
        except cv2.error as exc:
            reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
            raise DetectorError(
                f"{self.path}: not a YuNet ONNX model OpenCV {cv2.__version__} can load ({reason})"
            ) from None

    def scan_size(self, frame_size: tuple[int, int]) -> tuple[int, int]:
        """(width, height) the network sees for a frame of frame_size = (width, height): capped at max_width."""
        width, height = frame_size
        scale = min(1.0, self.max_width / width)
        return max(1, round(width * scale)), max(1, round(height * scale))

    @staticmethod
    def network_size(size: tuple[int, int]) -> tuple[int, int]:
        """(width, height) the network runs at for an input of `size`: OpenCV pads it to a multiple of 32."""
        return tuple(-(-v // _PAD) * _PAD for v in size)

    def _run(self, net, image: np.ndarray) -> np.ndarray:
        """Raw rows [x, y, w, h, 5 x (x, y), score] in `image` pixels (an (N, 15) array, maybe empty)."""
        self.scanned_px += image.shape[0] * image.shape[1]
        _, faces = net.detect(image)
        return np.empty((0, 15), np.float32) if faces is None else faces

    def _detections(self, rows: np.ndarray, scale: float, offset, frame_size) -> list[Detection]:
        """Rows found on an image that is the frame region from `offset`, shrunk by `scale` -> frame pixels."""
        width, height = frame_size
        found = []
        for row in rows:
            if not np.isfinite(row).all():  # a degenerate input (a frame 1 px high) can give inf
                continue
            x, y, w, h = (float(v) / scale for v in row[:4])
            box = clamp_box(offset[0] + x, offset[1] + y, w, h, width, height)
            if min(box[2], box[3]) < max(1, self.min_face_px):
                continue
            points = row[4:14].reshape(5, 2) / scale + np.asarray(offset, np.float32)
            keypoints = tuple((round(float(px), 1), round(float(py), 1)) for px, py in points)
            found.append(Detection(box, round(float(row[14]), 4), keypoints))
        return found

    def detect(self, frame: np.ndarray) -> list[Detection]:
        height, width = frame.shape[:2]
        if height < 2 or width < 2:
            return []
        size = self.scan_size((width, height))
        if min(size) * width / size[0] < self.min_face_px:  # too thin to hold a face of min_face_px
            return []
        image = as_bgr(frame)
        scanned = image if size == (width, height) else cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        if size != self._scan_size:
            self._scan.setInputSize(size)
            self._scan_size = size
        found = self._detections(self._run(self._scan, scanned), size[0] / width, (0, 0), (width, height))
        accepted = [d for d in found if d.score >= self.score_threshold]
        candidates = sorted((d for d in found if d.score < self.score_threshold), key=lambda d: -d.score)
        looks = 0
        for candidate in candidates:
            if looks == MAX_SECOND_LOOKS:
                break
            if any(_covered(candidate.box, other.box) for other in accepted):
                continue  # a second, looser box around a face already found
            looks += 1
            face = self._refind(image, candidate.box)
            if face is not None and not any(_covered(face.box, other.box) for other in accepted):
                accepted.append(face)
        return accepted

    def _refind(self, image: np.ndarray, box) -> Detection | None:
        """The face near `box` on the enlarged crop around it (the best overlapping one), or None."""
        crop, scale, offset = _roi_crop(image, box)
        if crop is None:
            return None
        frame_size = image.shape[1::-1]
        candidates = self._detections(self._run(self._roi, crop), scale, offset, frame_size)
        best = max(candidates, key=lambda d: iou(d.box, box), default=None)
        return best if best is not None and iou(best.box, box) > 0 else None

    def detect_roi(self, frame: np.ndarray, boxes) -> list[Detection]:
        """Re-find each [x, y, w, h] box's face in a square crop around it: at most one detection per box.

        Per box, the found face that overlaps the old box most (a neighbour's face showing in the crop is not
        this track's); a box whose face has gone yields nothing, and two boxes re-finding one face report it
        once. When the crops would cost about as much as a full scan (many faces), it is a full scan.
        """
        height, width = frame.shape[:2]
        if height < 2 or width < 2:
            return []
        scan_w, scan_h = self.scan_size((width, height))
        if len(boxes) * ROI_SIDE**2 >= scan_w * scan_h:
            return self.detect(frame)
        image = as_bgr(frame)
        found: list[Detection] = []
        for box in boxes:
            if min(box[2], box[3]) < 1:
                continue
            face = self._refind(image, box)
            if face is not None and all(iou(face.box, other.box) < 0.5 for other in found):
                found.append(face)
        return found


def _covered(a, b) -> bool:
    """Whether boxes a and b overlap by half of the smaller one: one face, boxed twice (NMS keeps a box
    around the head and one around the face when their IoU is under NMS_IOU)."""
    w = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    h = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    return w > 0 and h > 0 and w * h >= 0.5 * min(a[2] * a[3], b[2] * b[3])


def _roi_crop(image: np.ndarray, box) -> tuple[np.ndarray | None, float, tuple[float, float]]:
    """The ROI_SIDE x ROI_SIDE input around `box`: (crop, scale, offset), frame = offset + crop / scale;
    crop is None when the box lies outside the frame.

    The square around the box, grown by ROI_MARGIN on each side, is cut where it lies in the frame, shrunk
    with area averaging (or enlarged) and put on a black square, as YuNet pads its own input.
    """
    height, width = image.shape[:2]
    side = max(box[2], box[3]) * (1 + 2 * ROI_MARGIN)
    left, top = box[0] + box[2] / 2 - side / 2, box[1] + box[3] / 2 - side / 2
    x0, y0 = max(0, int(left)), max(0, int(top))
    x1, y1 = min(width, int(np.ceil(left + side))), min(height, int(np.ceil(top + side)))
    if x1 - x0 < 2 or y1 - y0 < 2:  # the box lies (almost) wholly outside the frame
        return None, 0.0, (0.0, 0.0)
    scale = ROI_SIDE / side
    new_w = min(ROI_SIDE, max(1, round((x1 - x0) * scale)))
    new_h = min(ROI_SIDE, max(1, round((y1 - y0) * scale)))
    flags = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    region = cv2.resize(image[y0:y1, x0:x1], (new_w, new_h), interpolation=flags)
    paste_x = min(ROI_SIDE - new_w, max(0, round((x0 - left) * scale)))
    paste_y = min(ROI_SIDE - new_h, max(0, round((y0 - top) * scale)))
    crop = np.zeros((ROI_SIDE, ROI_SIDE, 3), np.uint8)
    crop[paste_y : paste_y + new_h, paste_x : paste_x + new_w] = region
    scale = new_w / (x1 - x0)  # the resize's own factor, rounding included
    return crop, scale, (x0 - paste_x / scale, y0 - paste_y / scale)
