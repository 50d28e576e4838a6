"""The preprocessing contract: how a face becomes model input, in every stage.

train/, convert/ and the daemon all call these functions, so the pixels a model was trained on are the
pixels it sees on the Pi. The contract ends at raw uint8 pixels: scaling to [0, 1] lives inside the model
(a Rescaling layer), so the int8 model's input tensor is the pixel itself, shifted by its zero point.

    face crop (box + margin, clamped to the frame) -> grayscale -> resize to the model's size -> uint8 (H, W, 1)

When the detector finds the eyes and the model's contract has a `framing`, the crop is instead rotated level
and framed from the eyes (edge/align.py), the way the model's training faces were framed.
"""

from __future__ import annotations

import cv2
import numpy as np

from edge.align import Eyes, Framing, cut_aligned

DEFAULT_SIZE = (48, 48)  # (height, width): FER-2013's native face size
# How every image file is decoded, in training, conversion and the daemon alike: grayscale and 16-bit kept as
# they are, EXIF orientation honoured (IMREAD_UNCHANGED would ignore it and train on sideways phone photos).
IMREAD_FLAGS = cv2.IMREAD_ANYCOLOR | cv2.IMREAD_ANYDEPTH


def to_gray(image: np.ndarray) -> np.ndarray:
    """Any frame OpenCV can give us (gray, BGR, BGRA, 16-bit) -> 2-D uint8 grayscale."""
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 3:
        channels = image.shape[2]
        if channels == 3:
            image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        elif channels == 4:
            image = cv2.cvtColor(image, cv2.COLOR_BGRA2GRAY)
        else:
            raise ValueError(f"cannot convert an image with {channels} channels to grayscale")
    elif image.ndim != 2:
        raise ValueError(f"expected a 2-D or 3-D image array, got shape {image.shape}")
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    elif image.dtype != np.uint8:
        image = np.clip(image, 0, 255).astype(np.uint8)
    return image


def resize_face(gray: np.ndarray, size: tuple[int, int] = DEFAULT_SIZE) -> np.ndarray:
    """Resize a grayscale face to (height, width); area averaging when shrinking avoids aliasing."""
    height, width = size
    if gray.shape[:2] == (height, width):
        return gray
    shrinking = gray.shape[0] >= height and gray.shape[1] >= width
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return cv2.resize(gray, (width, height), interpolation=interpolation)


def expand_box(
    box: tuple[int, int, int, int], frame_shape: tuple[int, ...], margin: float = 0.0
) -> tuple[int, int, int, int]:
    """Grow an [x, y, w, h] box by `margin` of its size on each side, then clamp it to the frame."""
    x, y, w, h = (int(round(v)) for v in box)
    dx, dy = int(round(w * margin)), int(round(h * margin))
    x0, y0 = max(0, x - dx), max(0, y - dy)
    x1, y1 = min(frame_shape[1], x + w + dx), min(frame_shape[0], y + h + dy)
    return x0, y0, max(0, x1 - x0), max(0, y1 - y0)


def face_to_input(
    frame: np.ndarray,
    box: tuple[int, int, int, int] | None = None,
    size: tuple[int, int] = DEFAULT_SIZE,
    margin: float = 0.0,
) -> np.ndarray:
    """Crop one face from a frame and turn it into model input: uint8 array of shape (height, width, 1).

    `box` is [x, y, w, h] in frame pixels; None means the whole image is the face (FER-style crops).
    """
    if box is not None:
        x, y, w, h = expand_box(box, frame.shape, margin)
        if w <= 0 or h <= 0:
            raise ValueError(f"face box {list(box)} lies outside the {frame.shape[1]}x{frame.shape[0]} frame")
        frame = frame[y : y + h, x : x + w]
    return resize_face(to_gray(frame), size)[:, :, np.newaxis]


def faces_to_batch(
    frame: np.ndarray,
    boxes: list[tuple[int, int, int, int]],
    size: tuple[int, int] = DEFAULT_SIZE,
    margin: float = 0.0,
    eyes: list[Eyes | None] | None = None,
    framing: Framing | None = None,
) -> np.ndarray:
    """Several faces of one frame -> uint8 batch (N, height, width, 1). Converts the frame to gray once.

    `eyes` (one pair or None per box) with a `framing`: those faces are aligned and framed from their eyes;
    the others (and all of them without a framing) are cut by their box and `margin`.
    """
    gray = to_gray(frame)
    batch = np.empty((len(boxes), size[0], size[1], 1), dtype=np.uint8)
    for i, box in enumerate(boxes):
        pair = eyes[i] if eyes is not None else None
        if framing is not None and pair is not None:
            batch[i, :, :, 0] = cut_aligned(gray, pair, framing, size)
        else:
            batch[i] = face_to_input(gray, box, size, margin)
    return batch
