"""The backend-neutral training input pipeline: a keras.utils.PyDataset in numpy and OpenCV.

Used on Keras backends other than TensorFlow (JAX, PyTorch), where TensorFlow may not be installed. It yields
the same batches as train/pipeline_tf.py: float32 (B,H,W,1) raw pixels 0..255, one-hot targets (B,C),
per-sample class weights (B,), with the same augmentations (train/pipeline.py holds their strengths).

Every batch is a pure function of (seed, epoch, batch index): the shuffle of an epoch and each batch's
random numbers are drawn from generators seeded with those, so worker threads may build batches in any
order and a resumed run continues with the shuffles the uninterrupted run would have used.
"""

from __future__ import annotations

import math

import cv2
import keras
import numpy as np

from train.degrade import degrade
from train.distill import blend_targets
from train.pipeline import AUGMENT, AugmentStrengths, PipelineSettings, targets_and_weights


def random_affine(
    images: np.ndarray, rng: np.random.Generator, strengths: AugmentStrengths = AUGMENT
) -> np.ndarray:
    """Random rotation about the centre, shift and zoom, one transform per float32 (B,H,W) image."""
    batch, height, width = images.shape
    angle = rng.uniform(-1.0, 1.0, batch) * math.radians(strengths.max_degrees)
    scale = rng.uniform(1.0 - strengths.max_zoom, 1.0 + strengths.max_zoom, batch)
    shift_x = rng.uniform(-strengths.max_shift, strengths.max_shift, batch) * width
    shift_y = rng.uniform(-strengths.max_shift, strengths.max_shift, batch) * height
    cx, cy = (width - 1.0) / 2.0, (height - 1.0) / 2.0
    out = np.empty_like(images)
    for i in range(batch):
        # The same output -> input matrix as the tf.data path (WARP_INVERSE_MAP reads it that way round):
        # input = M @ (out - centre - shift) + centre.
        cos, sin = math.cos(angle[i]) / scale[i], math.sin(angle[i]) / scale[i]
        ox, oy = cx + shift_x[i], cy + shift_y[i]
        matrix = np.array(
            [[cos, sin, cx - cos * ox - sin * oy], [-sin, cos, cy + sin * ox - cos * oy]], np.float64
        )
        # BORDER_REFLECT (edge pixel repeated) is tf's fill_mode "REFLECT".
        out[i] = cv2.warpAffine(
            images[i],
            matrix,
            (width, height),
            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_REFLECT,
        )
    return out


def apply_random_erasing(images: np.ndarray, probability: float, rng: np.random.Generator) -> np.ndarray:
    """Replace a random rectangle (2-25% of the face) with noise in a random fraction of the images."""
    batch, height, width = images.shape
    area = rng.uniform(*AUGMENT.erase_area, batch)
    aspect = np.exp(rng.uniform(math.log(AUGMENT.erase_aspect[0]), math.log(AUGMENT.erase_aspect[1]), batch))
    box_h = np.sqrt(area / aspect) * height
    box_w = np.sqrt(area * aspect) * width
    top = rng.uniform(size=batch) * (height - box_h)
    left = rng.uniform(size=batch) * (width - box_w)
    rows = np.arange(height, dtype=np.float64)[None, :, None]
    cols = np.arange(width, dtype=np.float64)[None, None, :]
    inside = (
        (rows >= top[:, None, None])
        & (rows < (top + box_h)[:, None, None])
        & (cols >= left[:, None, None])
        & (cols < (left + box_w)[:, None, None])
    )
    chosen = rng.uniform(size=batch) < probability
    noise = rng.uniform(0.0, 255.0, images.shape).astype(np.float32)
    return np.where(inside & chosen[:, None, None], noise, images)


def apply_mixup(images, targets, weights, alpha: float, rng: np.random.Generator):
    """Blend each example with another of the batch (reversed order); lambda ~ Beta(alpha, alpha)."""
    lam = rng.beta(alpha, alpha, len(images)).astype(np.float32)
    other = np.arange(len(images))[::-1]
    lam_img = lam[:, None, None, None]
    images = lam_img * images + (1.0 - lam_img) * images[other]
    targets = lam[:, None] * targets + (1.0 - lam[:, None]) * targets[other]
    weights = lam * weights + (1.0 - lam) * weights[other]
    return images, targets, weights


class NumpyTrainBatches(keras.utils.PyDataset):
    """(float32 images (B,H,W,1) in 0..255, one-hot targets (B,C), per-sample weights (B,)) batches.

    Batches are built in worker threads (OpenCV and numpy release the GIL; threads, not processes, because
    JAX and PyTorch do not survive a fork well and the arrays need no copying). The last batch may be short,
    as in tf.data's batch().
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        settings: PipelineSettings,
        workers: int = 2,
        targets: np.ndarray | None = None,
        weights: np.ndarray | None = None,
    ):
        super().__init__(workers=workers, use_multiprocessing=False, max_queue_size=8)
        if len(images) != len(labels) or len(labels) == 0:
            raise ValueError(f"need as many images as labels, at least one: {len(images)} vs {len(labels)}")
        self.images = images
        self.targets, self.weights = targets_and_weights(labels, settings, targets, weights)
        self.settings = settings
        self.batch_size = settings.batch_size
        self.seed = settings.seed
        self.set_epoch(settings.initial_epoch)

    def set_epoch(self, epoch: int) -> None:
        """Use this epoch's shuffle. One attribute holds (epoch, order) so a worker never sees a mix."""
        order = np.random.default_rng([self.seed, epoch]).permutation(len(self.targets))
        self._epoch_order = (epoch, order)

    @property
    def epoch(self) -> int:
        return self._epoch_order[0]

    @property
    def num_batches(self) -> int:
        return -(-len(self.targets) // self.batch_size)

    def __len__(self) -> int:
        return self.num_batches

    def __getitem__(self, index: int):
        if not 0 <= index < self.num_batches:
            raise IndexError(f"batch {index} of {self.num_batches}")
        epoch, order = self._epoch_order
        chosen = order[index * self.batch_size : (index + 1) * self.batch_size]
        rng = np.random.default_rng([self.seed, epoch, index, 1])  # 1: never the shuffle's stream
        x = self.images[chosen].astype(np.float32)
        y = self.targets[chosen]
        w = self.weights[chosen]
        if self.settings.augment:
            flip = rng.uniform(size=len(x)) < 0.5
            x[flip] = x[flip, :, ::-1]
            strengths = self.settings.strengths
            x = random_affine(x, rng, strengths)
            # Brightness and contrast around each image's mean, in pixel units (the model rescales later).
            mean = x.mean(axis=(1, 2), keepdims=True)
            contrast = rng.uniform(*strengths.contrast, (len(x), 1, 1)).astype(np.float32)
            bright = strengths.max_brightness
            brightness = rng.uniform(-bright, bright, (len(x), 1, 1)).astype(np.float32)
            x = np.clip((x - mean) * contrast + mean + brightness, 0.0, 255.0)
            if self.settings.degradations.active:
                x = degrade(x, rng, self.settings.degradations)
            if self.settings.random_erasing > 0:
                x = apply_random_erasing(x, self.settings.random_erasing, rng)
        x = x[..., None]
        if self.settings.mixup > 0:
            x, y, w = apply_mixup(x, y, w, self.settings.mixup, rng)
        x = x.astype(np.float32)
        if self.settings.teacher is not None:
            soft = keras.ops.convert_to_numpy(self.settings.teacher(x))
            y = blend_targets(y, soft.astype(np.float32), self.settings.distill_alpha)
        return x.astype(np.float32), y.astype(np.float32), w.astype(np.float32)


class ReshuffleEachEpoch(keras.callbacks.Callback):
    """Gives the dataset fit's absolute epoch number (initial_epoch included) before the epoch's batches.

    A callback, not PyDataset.on_epoch_begin: Keras starts the worker threads before calling that, so they
    could build the first batches with the previous epoch's order; and PyDataset.on_epoch_end also runs
    once when fit starts, so counting its calls would be off by one.
    """

    def __init__(self, dataset: NumpyTrainBatches):
        super().__init__()
        self.dataset = dataset

    def on_epoch_begin(self, epoch, logs=None):
        self.dataset.set_epoch(epoch)
