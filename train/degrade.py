"""Camera degradations for training crops: what a room camera and the daemon do to a face before the model.

FER-2013's crops are web photos cut to 48x48; the daemon's crops come from a camera frame: the face is often
small (a face whose crop spans N frame pixels is upscaled from N to 48, bilinearly, by edge/align.py's warp),
out of focus, noisy, JPEG- or video-compressed, under a tone curve, and at night a grey, flat infrared image.
`degrade` gives a share of the training crops such a history, in the order it happens to a frame:

    tone (gamma, flat low contrast) -> optical blur -> sampling at N px (area) -> sensor noise at N px ->
    JPEG at N px -> upscaled to the model's size (bilinear, as the daemon does)

Each degraded crop gets each step with probability EACH, at a strength drawn uniformly from its range (face
size log-uniform, gamma log-uniform). The ranges are training settings (--degrade-*) and their defaults come
from benchmarks/camera_degradations.py, which measures them (MODEL_CARD.md). This one numpy/OpenCV function
serves both input pipelines: train/pipeline_numpy.py calls it directly and train/pipeline_tf.py through
tf.numpy_function (a batch of 64 crops costs a few milliseconds, against ~0.6 s for the training step), so
the two cannot drift apart.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

EACH = 0.5  # probability of each step within a degraded crop, so the steps also occur alone


@dataclass(frozen=True)
class Degradations:
    """The ranges of each step; probability 0 (the default) turns the whole thing off."""

    # Defaults: what benchmarks/camera_degradations.py measured (MODEL_CARD.md); --degrade-* set them.
    probability: float = 0.0  # share of training crops degraded
    min_face_px: int = 37  # the crop's side in frame pixels is drawn from [min_face_px, model size]
    max_blur_sigma: float = 0.85  # Gaussian sigma in model pixels
    max_noise_sigma: float = 0.0  # Gaussian sensor noise, grey levels at the face's own resolution
    min_jpeg_quality: int = 95  # quality drawn from [min_jpeg_quality, 95]; 100 = no JPEG step
    max_gamma: float = 1.71  # gamma drawn log-uniformly from [1 / max_gamma, max_gamma]
    min_contrast: float = 0.42  # contrast around the mean scaled by [min_contrast, 1] (flat IR-like images)

    @property
    def active(self) -> bool:
        return self.probability > 0


def _one(face: np.ndarray, u: np.ndarray, noise: np.ndarray, d: Degradations) -> np.ndarray:
    """One float32 (H, W) crop through the steps `u` (uniform draws) selects."""
    height, width = face.shape
    x = face
    if u[0] < EACH:  # tone curve
        gamma = math.exp((2 * u[1] - 1) * math.log(d.max_gamma))
        x = 255.0 * np.power(np.clip(x, 0, 255) / 255.0, gamma)
    if u[2] < EACH:  # flat, low-contrast (grey IR-like) image
        mean = float(x.mean())
        x = (x - mean) * (d.min_contrast + (1 - d.min_contrast) * u[3]) + mean
    if u[4] < EACH:  # out of focus
        sigma = 0.3 + (d.max_blur_sigma - 0.3) * u[5] if d.max_blur_sigma > 0.3 else d.max_blur_sigma
        if sigma > 0:
            x = cv2.GaussianBlur(x, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
    side = height
    if u[6] < EACH and d.min_face_px < height:  # a small face: sampled at `side` frame pixels
        side = int(round(math.exp(math.log(d.min_face_px) + u[7] * math.log(height / d.min_face_px))))
    small = cv2.resize(x, (side, side), interpolation=cv2.INTER_AREA) if side != height else x
    if u[8] < EACH and d.max_noise_sigma > 0:
        small = small + noise[:side, :side] * (d.max_noise_sigma * u[9])
    small = np.clip(small, 0, 255)
    if u[10] < EACH and d.min_jpeg_quality < 100:
        quality = int(round(d.min_jpeg_quality + (95 - d.min_jpeg_quality) * u[11]))
        ok, encoded = cv2.imencode(".jpg", small.astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, quality])
        if ok:
            small = cv2.imdecode(encoded, cv2.IMREAD_GRAYSCALE).astype(np.float32)
    if side != height:  # the daemon's warp upscales bilinearly
        small = cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)
    return small.astype(np.float32)


def degrade(images: np.ndarray, rng: np.random.Generator, d: Degradations) -> np.ndarray:
    """float32 (B, H, W) crops in 0..255 -> the same with a share degraded. Every random number is drawn
    up front, so a batch is a pure function of the generator's state."""
    images = np.asarray(images, np.float32)
    batch, height, width = images.shape
    chosen = rng.uniform(size=batch) < d.probability
    draws = rng.uniform(size=(batch, 12))
    noise = rng.standard_normal((batch, height, width)).astype(np.float32)
    if not chosen.any():
        return images
    out = images.copy()
    for i in np.flatnonzero(chosen):
        out[i] = _one(images[i], draws[i], noise[i], d)
    return out


def degrade_seeded(images: np.ndarray, seed: np.ndarray, d: Degradations) -> np.ndarray:
    """`degrade` with a generator seeded from two integers: what the tf.data pipeline calls, with a seed that
    TensorFlow's own random stream draws per batch."""
    return degrade(images, np.random.default_rng([int(s) for s in np.ravel(seed)]), d)


def small_face(images: np.ndarray, side: int) -> np.ndarray:
    """uint8 or float (N, H, W) crops as a face of `side` frame pixels gives them: sampled down to side x side
    (area), then upscaled to H x W bilinearly as the daemon does. For evaluation at 24/32/40 px."""
    out = np.empty_like(images)
    height, width = images.shape[1:3]
    for i, face in enumerate(images):
        small = cv2.resize(face, (side, side), interpolation=cv2.INTER_AREA)
        out[i] = cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)
    return out
