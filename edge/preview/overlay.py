"""What the viewer sees: the frame, scaled down for the network, with each face's box and label drawn on it."""

from __future__ import annotations

import cv2
import numpy as np

from edge.pipeline import usable_image

MAX_WIDTH = 640  # wider frames are scaled down: a phone screen shows no more, a Pi encodes 4x fewer pixels
JPEG_QUALITY = 75
BOX_COLOR = (
    0,
    255,
    0,
)  # BGR: pure green is rare in rooms and faces, so the box stands out (tests look for it)
TEXT_COLOR = (0, 0, 0)
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def label_of(face: dict) -> str:
    """`#3 happy 91%`: the track id, the (smoothed) emotion and its confidence."""
    return f"#{face.get('track_id', '?')} {face.get('emotion', '?')} {float(face.get('confidence', 0)):.0%}"


def as_bgr(image: np.ndarray) -> np.ndarray | None:
    """Any frame the pipeline accepts (gray, BGR, BGRA, 16-bit) as 8-bit BGR; None for what it cannot use."""
    image = usable_image(image)
    if image is None:
        return None
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    if image.ndim == 2 or image.shape[2] == 1:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return image


def draw(image: np.ndarray, faces: list[dict], max_width: int = MAX_WIDTH) -> np.ndarray | None:
    """A new annotated BGR image (the frame itself is never written to: the pipeline may still hold it)."""
    bgr = as_bgr(image)
    if bgr is None:
        return None
    scale = min(1.0, max_width / bgr.shape[1])
    if scale < 1.0:
        size = (round(bgr.shape[1] * scale), round(bgr.shape[0] * scale))
        out = cv2.resize(bgr, size, interpolation=cv2.INTER_AREA)
    else:
        out = bgr.copy()
    for face in faces:
        x, y, w, h = (round(v * scale) for v in face["box"])
        cv2.rectangle(out, (x, y), (x + w, y + h), BOX_COLOR, 2)
        text = label_of(face)
        (tw, th), base = cv2.getTextSize(text, _FONT, 0.5, 1)
        top = (
            y - th - base - 4 if y - th - base - 4 >= 0 else y + h
        )  # above the box, or below at the top edge
        cv2.rectangle(out, (x - 1, top), (x + tw + 4, top + th + base + 4), BOX_COLOR, cv2.FILLED)
        cv2.putText(out, text, (x + 2, top + th + 2), _FONT, 0.5, TEXT_COLOR, 1, cv2.LINE_AA)
    return out


def placeholder(text: str, width: int = 640, height: int = 360) -> np.ndarray:
    """A dark frame with a line of text: shown in the stream while the camera is away."""
    out = np.full((height, width, 3), 40, np.uint8)
    (tw, th), _ = cv2.getTextSize(text, _FONT, 0.6, 1)
    origin = (max(4, (width - tw) // 2), (height + th) // 2)
    cv2.putText(out, text, origin, _FONT, 0.6, (220, 220, 220), 1, cv2.LINE_AA)
    return out


def encode_jpeg(image: np.ndarray, quality: int = JPEG_QUALITY) -> bytes:
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return encoded.tobytes()
