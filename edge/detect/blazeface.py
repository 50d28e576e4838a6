"""MediaPipe BlazeFace (short range 128x128, full range 192x192) through the project's TFLite interpreter loader.

The model predicts, for a fixed set of anchors, a score logit and a box + 6 keypoints relative to its anchor
(the eyes, nose tip, mouth and the two ear tragions). We letterbox the frame to a square (no distortion),
normalise pixels to [-1, 1], decode boxes and keypoints, keep those above `min_confidence`, merge overlaps
with weighted non-maximum suppression (as MediaPipe does), and map them back to source pixels. The weights
ship in edge/models/ (MediaPipe's, Apache-2.0; see its README).

The short-range model finds faces larger than ~1/8 of the frame (within ~2 m of a 640x480 camera); the full
range model, trained for faces up to ~5 m, finds faces down to ~1/20 of the frame at ~2-3x the cost.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edge.detect.base import Detection, DetectorError, clamp_box
from edge.interpreter import ModelLoadError, load_interpreter
from edge.preprocess import expand_box
from edge.track import iou

_ANCHOR_OFFSET = 0.5
_NMS_IOU = 0.3
KEYPOINTS = 6  # right eye, left eye (as seen in the image: left one first), nose tip, mouth, tragions


@dataclass(frozen=True)
class Variant:
    """One BlazeFace model: its input side, MediaPipe's SSD anchor strides and its weight file."""

    input_size: int
    strides: tuple[int, ...]
    model_file: str

    @property
    def anchor_count(self) -> int:
        return len(make_anchors(self))


VARIANTS = {
    "short": Variant(128, (8, 16, 16, 16), "face_detection_short_range.tflite"),
    "full": Variant(192, (4,), "face_detection_full_range.tflite"),
}


SHIPPED_DIR = Path(__file__).resolve().parent.parent / "models"


def default_model_path(variant: str = "short") -> Path | None:
    """The weights shipped in edge/models/, or None when they are missing (a broken install)."""
    path = SHIPPED_DIR / VARIANTS[variant].model_file
    return path if path.is_file() else None


def make_anchors(variant: Variant = VARIANTS["short"]) -> np.ndarray:
    """(N, 2) anchor centres in [0, 1]: layers that share a stride share one grid, 2 anchors per layer per cell.

    Short range: 2 per cell on 16x16 and 6 per cell on 8x8 (896); full range: 1 per cell on 48x48 (2304).
    """
    centres = []
    strides = variant.strides
    layer = 0
    while layer < len(strides):
        stride = strides[layer]
        repeats = 0
        while layer < len(strides) and strides[layer] == stride:
            repeats += 2
            layer += 1
        if len(strides) == 1:  # MediaPipe's full-range options: one anchor per cell (fixed_anchor_size)
            repeats = 1
        cells = variant.input_size // stride
        for y in range(cells):
            for x in range(cells):
                centres.extend([((x + _ANCHOR_OFFSET) / cells, (y + _ANCHOR_OFFSET) / cells)] * repeats)
    return np.asarray(centres, np.float32)


def _iou_one_to_many(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one [x0, y0, x1, y1] box with many."""
    x0 = np.maximum(box[0], boxes[:, 0])
    y0 = np.maximum(box[1], boxes[:, 1])
    x1 = np.minimum(box[2], boxes[:, 2])
    y1 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-9)


def weighted_nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float = _NMS_IOU):
    """Merge overlapping rows into their score-weighted mean (steadier than keeping the single best).

    `boxes` rows start with [x0, y0, x1, y1] (overlap is measured on those) and may carry more columns
    (keypoints), which are averaged the same way.
    """
    order = np.argsort(-scores)
    boxes, scores = boxes[order], scores[order]
    merged = []
    remaining = np.ones(len(boxes), bool)
    for i in range(len(boxes)):
        if not remaining[i]:
            continue
        overlap = remaining & (_iou_one_to_many(boxes[i], boxes[:, :4]) >= iou_threshold)
        weights = scores[overlap]
        merged.append(((boxes[overlap] * weights[:, None]).sum(0) / weights.sum(), float(scores[i])))
        remaining &= ~overlap
    return merged


def _shrink(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Area-averaged downscale to (width, height), fast: OpenCV's area resize by a non-integer factor is slow
    next to the detector itself; bilinear to twice the size and then an exact 2x area step costs a fraction of
    it and differs by under half a grey level on average (figures: docs/benchmarks.md)."""
    width, height = size
    if image.shape[1] > 2 * width and image.shape[0] > 2 * height:
        image = cv2.resize(image, (2 * width, 2 * height), interpolation=cv2.INTER_LINEAR)
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)


def letterbox(frame: np.ndarray, side: int):
    """Frame -> (side x side x 3 float32 RGB in [-1, 1], scale, pad_x, pad_y); source = (model - pad) / scale."""
    image = frame
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    elif image.dtype != np.uint8:
        image = np.clip(image, 0, 255).astype(np.uint8)
    height, width = image.shape[:2]
    scale = side / max(height, width)
    new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
    # Resize before the colour conversion: the small image is cheaper to convert.
    resized = _shrink(image, (new_w, new_h)) if scale < 1 else cv2.resize(image, (new_w, new_h))
    if resized.ndim == 2 or resized.shape[2] == 1:
        rgb = cv2.cvtColor(resized.reshape(resized.shape[:2]), cv2.COLOR_GRAY2RGB)
    elif resized.shape[2] == 4:
        rgb = cv2.cvtColor(resized, cv2.COLOR_BGRA2RGB)
    else:
        rgb = cv2.cvtColor(resized, cv2.COLOR_BGR2RGB)  # MediaPipe models are trained on RGB
    pad_x, pad_y = (side - new_w) // 2, (side - new_h) // 2
    canvas = np.full((side, side, 3), -1.0, np.float32)  # the padding is black (-1), as MediaPipe pads
    canvas[pad_y : pad_y + new_h, pad_x : pad_x + new_w] = rgb.astype(np.float32) * (1 / 127.5) - 1.0
    return canvas, scale, pad_x, pad_y


class BlazeFaceDetector:
    landmarks = True  # its detections carry keypoints (eyes): faces can be aligned

    # No defaults for the tunables: edge.config.DetectorConfig holds them, and make_detector passes every one.
    def __init__(
        self, model_path, *, min_confidence: float, min_face_px: int, num_threads=1, variant="short"
    ):
        self.variant = VARIANTS[variant]
        self.name = "blazeface" if variant == "short" else f"blazeface_{variant}"
        side = self.variant.input_size
        path = Path(model_path) if model_path else default_model_path(variant)
        if path is None:
            raise DetectorError(
                f"BlazeFace weights {self.variant.model_file} not found in {SHIPPED_DIR} (a broken install: "
                "reinstall the package), or set detector.blazeface_model"
            )
        try:
            self.interpreter, self.backend = load_interpreter(path, num_threads)
        except ModelLoadError as exc:
            raise DetectorError(str(exc)) from None
        self.path = path
        self.anchors = make_anchors(self.variant)
        count = len(self.anchors)
        inputs = self.interpreter.get_input_details()
        outputs = self.interpreter.get_output_details()
        if len(inputs) != 1 or tuple(inputs[0]["shape"]) != (1, side, side, 3):
            raise DetectorError(
                f"{path}: expected one 1x{side}x{side}x3 input (the {variant}-range BlazeFace model), "
                f"got {[int(v) for v in inputs[0]['shape']] if inputs else 'none'}"
            )
        self._input = inputs[0]["index"]
        by_width = {int(o["shape"][-1]): o["index"] for o in outputs}
        if set(by_width) != {16, 1} or any(int(o["shape"][1]) != count for o in outputs):
            raise DetectorError(f"{path}: expected outputs of shape [1, {count}, 16] and [1, {count}, 1]")
        self._regressors, self._scores = by_width[16], by_width[1]
        self.min_confidence = float(min_confidence)
        self.min_face_px = int(min_face_px)

    def detect_roi(self, frame: np.ndarray, boxes) -> list[Detection]:
        """Faces near `boxes`: the network sees the whole frame at its fixed input size anyway, so scan it all."""
        return self.detect(frame)

    def _decode(self, raw: np.ndarray, anchors: np.ndarray) -> np.ndarray:
        """Raw regressors -> rows [x0, y0, x1, y1, kx0, ky0, ..., kx5, ky5] in model-input pixels."""
        side = self.variant.input_size
        # Offsets are in input pixels relative to the anchor centre; anchor size is fixed at 1 (whole input).
        centres = anchors * side
        cx, cy = raw[:, 0] + centres[:, 0], raw[:, 1] + centres[:, 1]
        half_w, half_h = raw[:, 2] / 2, raw[:, 3] / 2
        points = raw[:, 4:16].reshape(-1, KEYPOINTS, 2) + centres[:, None, :]
        corners = np.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], axis=1)
        return np.concatenate([corners, points.reshape(-1, 2 * KEYPOINTS)], axis=1)

    def detect(self, frame: np.ndarray) -> list[Detection]:
        height, width = frame.shape[:2]
        if height < 2 or width < 2:
            return []
        tensor, scale, pad_x, pad_y = letterbox(frame, self.variant.input_size)
        self.interpreter.set_tensor(self._input, tensor[np.newaxis])
        self.interpreter.invoke()
        raw = self.interpreter.get_tensor(self._regressors)[0]
        logits = self.interpreter.get_tensor(self._scores)[0, :, 0]
        scores = 1.0 / (1.0 + np.exp(-np.clip(logits, -80.0, 80.0)))
        keep = scores >= self.min_confidence
        if not keep.any():
            return []
        rows = self._decode(raw[keep], self.anchors[keep])
        detections = []
        for row, score in weighted_nms(rows, scores[keep]):
            # Back to source pixels: x = (model_x - pad_x) / scale, likewise y.
            xs = (row[0::2] - pad_x) / scale
            ys = (row[1::2] - pad_y) / scale
            box = clamp_box(xs[0], ys[0], xs[1] - xs[0], ys[1] - ys[0], width, height)
            if min(box[2], box[3]) < max(1, self.min_face_px):
                continue
            keypoints = tuple(
                (round(float(x), 1), round(float(y), 1)) for x, y in zip(xs[2:], ys[2:], strict=True)
            )
            detections.append(Detection(box, round(score, 4), keypoints))
        return detections


class FullRangeDetector:
    """BlazeFace full range for faces from ~1/17 of the frame's width up (in colour; tests/edge/test_detect.py), with
    the short-range model for faces too close for it.

    The full-range model misses faces filling most of the frame (a doorbell camera, a close-up photo such as
    most of the photo dev set's), which is the short-range model's home ground. So when the
    full-range model finds no face, the short-range one (a quarter of its cost) looks for a close one. A frame
    with a far face and a face too close for the full model at once would miss the close face until the far
    one leaves; running both on every scan would cost more on every frame for that rare case.
    Between full scans, each tracked face is re-found by the short-range model on a crop twice its size,
    where the face fills half the crop as that model expects: ~1/4 of a full scan per face.
    """

    name = "blazeface_full"
    landmarks = True

    def __init__(self, model_path, *, min_confidence: float, min_face_px: int, num_threads=1):
        tunables = {"min_confidence": min_confidence, "min_face_px": min_face_px, "num_threads": num_threads}
        self.full = BlazeFaceDetector(model_path, variant="full", **tunables)
        self.short = BlazeFaceDetector(None, variant="short", **tunables)
        self.path = self.full.path
        self.backend = self.full.backend
        # A full scan's work is the full-range pass (edge/opcount.py counts it from this interpreter).
        self.interpreter = self.full.interpreter

    def detect(self, frame: np.ndarray) -> list[Detection]:
        return self.full.detect(frame) or self.short.detect(frame)

    def detect_roi(self, frame: np.ndarray, boxes) -> list[Detection]:
        """Re-find each [x, y, w, h] box's face in a crop around it: at most one detection per box.

        A crop costs a short-range pass (~1/4 of a full scan), so from three tracked faces a full scan is
        about as cheap and also finds faces that just came into view.
        """
        if len(boxes) >= 3:
            return self.detect(frame)
        found: list[Detection] = []
        for box in boxes:
            x0, y0, w, h = expand_box(box, frame.shape, ROI_MARGIN)
            if w < 2 or h < 2:
                continue
            candidates = [_shifted(d, x0, y0) for d in self.short.detect(frame[y0 : y0 + h, x0 : x0 + w])]
            best = max(candidates, key=lambda d: iou(d.box, box), default=None)
            if best is not None and iou(best.box, box) > 0 and all(iou(best.box, o.box) < 0.5 for o in found):
                found.append(best)
        return found


# Around a tracked box, search this much of its size again on each side: the face fills half the crop.
ROI_MARGIN = 0.5


def _shifted(detection: Detection, dx: int, dy: int) -> Detection:
    """A detection made on a crop whose top-left corner is at (dx, dy), in frame pixels."""
    x, y, w, h = detection.box
    points = detection.keypoints and tuple((px + dx, py + dy) for px, py in detection.keypoints)
    return Detection((x + dx, y + dy, w, h), detection.score, points)
