"""Alignment and framing from the eyes: the face rotated level and cut to the framing the model was trained on.

A detector box says roughly where a face is, but each detector draws it differently (Haar's square sits on the
brow and chin, BlazeFace's is looser), and neither says how the head is tilted. The eyes do both: the crop is
rotated so the eyes are level, then placed and sized from the eye centre and the distance between the eyes:

    in the model-input crop (W x H): eye centre at (W / 2, eye_y * H), eye distance = eye_distance * W

The two numbers live in the model contract (`framing`), so training, conversion, evaluation and the daemon cut
faces alike. FER-2013's own crops sit tighter and higher (benchmarks/fer_framing.py measures them), but on real
photos the FER-trained classifier did better with a looser, lower cut: DEFAULT_FRAMING is the middle of the
plateau a sweep over the photo dev set found (benchmarks/photo_accuracy.py --framing), not its single best
cell, so it does not fit that one set's noise. The measurements: docs/benchmarks.md, "Measurements behind code
defaults".
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import cv2
import numpy as np

Eyes = tuple[tuple[float, float], tuple[float, float]]  # left-most eye in the image first

# A face shrunk by more than this in one step is first shrunk with area averaging, so fine detail (hair,
# camera noise) does not alias into the small crop as the bilinear warp alone would let it.
_MAX_WARP_SHRINK = 1.5


@dataclass(frozen=True)
class Framing:
    """Where the eyes go in the model-input crop (fractions of its side) and whether the head is levelled."""

    eye_distance: float  # distance between the eye centres, as a fraction of the crop's width
    eye_y: float  # height of the eye centre in the crop, as a fraction of its height from the top
    align: bool = True  # rotate so the eyes are level (False: keep the head's tilt, only place and scale)

    @classmethod
    def from_dict(cls, data, source: str = "framing") -> Framing:
        if not isinstance(data, dict):
            raise ValueError(f"{source}: expected an object with eye_distance, eye_y and align")
        unknown = sorted(set(data) - {"eye_distance", "eye_y", "align"})
        if unknown:
            raise ValueError(f"{source}: unknown key(s) {unknown}")
        ranges = {"eye_distance": (0.1, 0.9), "eye_y": (0.1, 0.9)}
        for key, (lo, hi) in ranges.items():
            value = data.get(key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
                raise ValueError(f"{source}: '{key}' must be a number in {lo}..{hi}, got {value!r}")
        align = data.get("align", True)
        if not isinstance(align, bool):
            raise ValueError(f"{source}: 'align' must be true or false, got {align!r}")
        return cls(float(data["eye_distance"]), float(data["eye_y"]), align)

    def to_dict(self) -> dict:
        return asdict(self)


def eye_angle(eyes: Eyes) -> float:
    """The head's roll in degrees: positive when the right-hand eye (in the image) sits lower."""
    (x0, y0), (x1, y1) = eyes
    return math.degrees(math.atan2(y1 - y0, x1 - x0))


def eye_transform(eyes: Eyes, framing: Framing, size: tuple[int, int]) -> np.ndarray:
    """The 2x3 affine matrix taking frame pixels to the (height, width) crop that `framing` describes."""
    height, width = size
    (x0, y0), (x1, y1) = eyes
    centre = ((x0 + x1) / 2.0, (y0 + y1) / 2.0)
    distance = max(math.hypot(x1 - x0, y1 - y0), 1e-3)
    scale = framing.eye_distance * width / distance
    angle = eye_angle(eyes) if framing.align else 0.0
    matrix = cv2.getRotationMatrix2D(centre, angle, scale)  # rotates and scales about the eye centre
    matrix[0, 2] += width / 2.0 - centre[0]
    matrix[1, 2] += framing.eye_y * height - centre[1]
    return matrix


def cut_aligned(gray: np.ndarray, eyes: Eyes, framing: Framing, size: tuple[int, int]) -> np.ndarray:
    """The (height, width) uint8 crop of a 2-D gray frame, rotated and framed from the eyes.

    Parts of the crop that fall outside the frame repeat its edge pixels (a face at the border is cut, not
    framed in black, which no training face has).
    """
    height, width = size
    matrix = eye_transform(eyes, framing, size)
    scale = math.hypot(matrix[0, 0], matrix[0, 1])
    if scale < 1.0 / _MAX_WARP_SHRINK:
        gray, matrix = _shrink_region(gray, matrix, size, scale)
    return cv2.warpAffine(
        gray, matrix, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )


def _shrink_region(gray: np.ndarray, matrix: np.ndarray, size: tuple[int, int], scale: float):
    """Cut the frame region the crop comes from, shrink it by area averaging, and adjust the matrix to it."""
    height, width = size
    corners = np.array([[0, 0], [width, 0], [0, height], [width, height]], np.float64)
    inverse = cv2.invertAffineTransform(matrix)
    source = corners @ inverse[:, :2].T + inverse[:, 2]
    x0, y0 = np.floor(source.min(axis=0)).astype(int) - 2
    x1, y1 = np.ceil(source.max(axis=0)).astype(int) + 2
    x0, y0 = max(0, x0), max(0, y0)
    x1, y1 = min(gray.shape[1], x1), min(gray.shape[0], y1)
    if x1 - x0 < 2 or y1 - y0 < 2:  # the crop lies (almost) wholly outside the frame: warp the frame as is
        return gray, matrix
    region = gray[y0:y1, x0:x1]
    new_w, new_h = max(2, round(region.shape[1] * scale)), max(2, round(region.shape[0] * scale))
    small = cv2.resize(region, (new_w, new_h), interpolation=cv2.INTER_AREA)
    # Pixel p of `small` covers frame pixels from (x0, y0) + p * f, its centre at (x0, y0) + p * f + (f - 1) / 2.
    fx, fy = region.shape[1] / new_w, region.shape[0] / new_h
    adjusted = matrix.copy()
    adjusted[:, 0] *= fx
    adjusted[:, 1] *= fy
    adjusted[:, 2] += matrix[:, 0] * (x0 + (fx - 1) / 2) + matrix[:, 1] * (y0 + (fy - 1) / 2)
    return small, adjusted


# What emotion-train writes into every new model's contract (and the shipped model's default.json holds).
DEFAULT_FRAMING = Framing(eye_distance=0.32, eye_y=0.48, align=True)
# For detectors without eyes (Haar, LBP): the box grown by this much of its size on each side. On the photo
# dev set 0.1 and 0.2 gave the Haar path +4.6 and +4.5 points over the bare box.
DEFAULT_BOX_MARGIN = 0.1
