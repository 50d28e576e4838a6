"""Real-face test frames built from scikit-image's `astronaut()` photograph (NASA, public domain).

Everyone's tests use these instead of a camera: one face, two faces, twenty faces, a photo folder and a
short MJPG video. Each builder returns the frame(s) and the face boxes [x, y, w, h] it placed, so tests can
check detections against known positions.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

# Where OpenCV's Haar frontal-face cascade finds Eileen Collins's face in the 512x512 original.
ASTRONAUT_FACE = (177, 66, 95, 95)
# A head-and-shoulders crop around that face (x, y, w, h): a "portrait" to tile into composites.
_PORTRAIT = (105, 0, 240, 260)

Box = tuple[int, int, int, int]


@lru_cache(maxsize=1)
def _astronaut_rgb() -> np.ndarray:
    from skimage import data  # dev-only dependency, imported when a test needs a photo

    return data.astronaut()


def astronaut_bgr() -> np.ndarray:
    """The 512x512 original as an OpenCV BGR frame (a fresh copy)."""
    return cv2.cvtColor(_astronaut_rgb(), cv2.COLOR_RGB2BGR)


def astronaut_face_gray() -> np.ndarray:
    """Just the face (ASTRONAUT_FACE in the original), grayscale: a tight crop, as FER-2013's faces are."""
    x, y, w, h = ASTRONAUT_FACE
    return cv2.cvtColor(astronaut_bgr()[y : y + h, x : x + w], cv2.COLOR_BGR2GRAY)


def _scale_box(box: Box, scale: float, dx: int = 0, dy: int = 0) -> Box:
    x, y, w, h = box
    return (round(x * scale) + dx, round(y * scale) + dy, round(w * scale), round(h * scale))


def portrait(height: int, mirror: bool = False) -> tuple[np.ndarray, Box]:
    """The head-and-shoulders crop resized to `height` pixels tall; returns (BGR image, face box in it)."""
    px, py, pw, ph = _PORTRAIT
    crop = astronaut_bgr()[py : py + ph, px : px + pw]
    scale = height / ph
    image = cv2.resize(crop, (round(pw * scale), height), interpolation=cv2.INTER_AREA)
    fx, fy, fw, fh = ASTRONAUT_FACE
    box = _scale_box((fx - px, fy - py, fw, fh), scale)
    if mirror:
        image = image[:, ::-1].copy()
        box = (image.shape[1] - box[0] - box[2], box[1], box[2], box[3])
    return image, box


def one_face_frame(width: int = 640, height: int = 480) -> tuple[np.ndarray, list[Box]]:
    """The astronaut photo letterboxed into a width x height BGR frame (default 640x480)."""
    photo = astronaut_bgr()
    scale = min(width / photo.shape[1], height / photo.shape[0])
    resized = cv2.resize(photo, (round(photo.shape[1] * scale), round(photo.shape[0] * scale)))
    frame = np.full((height, width, 3), 40, np.uint8)
    dx, dy = (width - resized.shape[1]) // 2, (height - resized.shape[0]) // 2
    frame[dy : dy + resized.shape[0], dx : dx + resized.shape[1]] = resized
    return frame, [_scale_box(ASTRONAUT_FACE, scale, dx, dy)]


def grid_faces_frame(
    rows: int, cols: int, cell_w: int, cell_h: int, mirror_alternate: bool = True
) -> tuple[np.ndarray, list[Box]]:
    """rows x cols portraits on one frame (alternately mirrored so they are not identical copies)."""
    frame = np.full((rows * cell_h, cols * cell_w, 3), 40, np.uint8)
    boxes = []
    for r in range(rows):
        for c in range(cols):
            image, box = portrait(cell_h - 8, mirror=mirror_alternate and (r + c) % 2 == 1)
            image = image[:, : cell_w - 8]
            x0, y0 = c * cell_w + 4, r * cell_h + 4
            frame[y0 : y0 + image.shape[0], x0 : x0 + image.shape[1]] = image
            boxes.append((box[0] + x0, box[1] + y0, box[2], box[3]))
    return frame, boxes


def two_faces_frame() -> tuple[np.ndarray, list[Box]]:
    """640x480: the portrait and its mirror image side by side."""
    frame = np.full((480, 640, 3), 40, np.uint8)
    boxes = []
    for i, mirror in enumerate((False, True)):
        image, box = portrait(400, mirror=mirror)
        x0, y0 = 20 + i * 320, 40
        image = image[:, :300]
        frame[y0 : y0 + image.shape[0], x0 : x0 + image.shape[1]] = image
        boxes.append((box[0] + x0, box[1] + y0, box[2], box[3]))
    return frame, boxes


def twenty_faces_frame() -> tuple[np.ndarray, list[Box]]:
    """1280x960 with 20 portraits in a 4x5 grid (faces about 80 px)."""
    return grid_faces_frame(4, 5, 256, 240)


def no_face_frame(width: int = 640, height: int = 480) -> np.ndarray:
    """Smooth gradients and noise: a scene with no face in it."""
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 255, width, dtype=np.float32)[np.newaxis, :].repeat(height, 0)
    image = np.stack([ramp, ramp[::-1, ::-1], np.full_like(ramp, 90)], axis=2)
    return np.clip(image + rng.normal(0, 8, image.shape), 0, 255).astype(np.uint8)


def write_photo_folder(root: Path) -> dict[str, int]:
    """Photos named so sorting matters, plus files to skip; returns {file name: faces in it}."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    one, _ = one_face_frame()
    two, _ = two_faces_frame()
    photos = {"a_one.jpg": one, "b_two.png": two, "c_none.jpg": no_face_frame(), "d_mirror.jpg": one[:, ::-1]}
    for name, image in photos.items():
        cv2.imwrite(str(root / name), np.ascontiguousarray(image))
    (root / "notes.txt").write_text("not an image\n")
    (root / "broken.jpg").write_bytes(b"\xff\xd8 this is not really a jpeg")
    return {"a_one.jpg": 1, "b_two.png": 2, "c_none.jpg": 0, "d_mirror.jpg": 1}


def write_face_video(path: Path, n_frames: int = 12, fps: float = 10.0) -> Path:
    """An MJPG .avi of the astronaut frame drifting sideways (one face per frame), 640x480."""
    path = Path(path)
    frame, _ = one_face_frame()
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (640, 480))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write MJPG video to {path}")
    try:
        for i in range(n_frames):
            writer.write(np.roll(frame, 2 * i, axis=1))
    finally:
        writer.release()
    return path


def one_then_two_faces(frames_each: int = 20) -> tuple[list[np.ndarray], list[list[Box]]]:
    """The clip a new user makes from edge/samples: the one-face photo, then the pair, `frames_each` frames
    each; with each frame's face boxes (the samples are this module's one- and two-face frames as JPEG)."""
    from importlib import resources

    samples = resources.files("edge") / "samples"
    one = cv2.imread(str(samples / "astronaut_640x480.jpg"))
    two = cv2.imread(str(samples / "astronaut_pair_640x480.jpg"))
    frames = [one] * frames_each + [two] * frames_each
    return frames, [one_face_frame()[1]] * frames_each + [two_faces_frame()[1]] * frames_each


def write_video(path: Path, frames: list[np.ndarray], fps: float = 15.0) -> Path:
    """The frames as an MJPG .avi (a camera's recording)."""
    path = Path(path)
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (width, height))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write MJPG video to {path}")
    try:
        for image in frames:
            writer.write(image)
    finally:
        writer.release()
    return path
