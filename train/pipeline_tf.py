"""The tf.data input pipeline (TensorFlow backend): cached uint8 arrays -> shuffled, augmented float batches.

Work is done per batch (vectorised) in parallel map calls, which keeps both cores busy without Python in the
loop; on the TensorFlow backend this is faster than the backend-neutral train/pipeline_numpy.py, which
produces the same batches with the same augmentations. train/batches.py picks one of the two.
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from train.degrade import degrade_seeded
from train.distill import blend_targets
from train.pipeline import AUGMENT, PipelineSettings, targets_and_weights


def _random_affine(images, max_degrees: float, max_shift: float, max_zoom: float):
    """Random rotation about the centre, shift (fraction of size) and zoom, one transform per image."""
    batch = tf.shape(images)[0]
    height = tf.cast(tf.shape(images)[1], tf.float32)
    width = tf.cast(tf.shape(images)[2], tf.float32)
    angle = tf.random.uniform([batch], -1.0, 1.0) * (max_degrees * math.pi / 180.0)
    scale = tf.random.uniform([batch], 1.0 - max_zoom, 1.0 + max_zoom)
    shift_x = tf.random.uniform([batch], -max_shift, max_shift) * width
    shift_y = tf.random.uniform([batch], -max_shift, max_shift) * height
    cx, cy = (width - 1.0) / 2.0, (height - 1.0) / 2.0
    # The op maps each OUTPUT pixel to an input location: input = M @ (out - centre - shift) + centre.
    cos, sin = tf.cos(angle) / scale, tf.sin(angle) / scale
    a0, a1, b0, b1 = cos, sin, -sin, cos
    a2 = cx - a0 * (cx + shift_x) - a1 * (cy + shift_y)
    b2 = cy - b0 * (cx + shift_x) - b1 * (cy + shift_y)
    zeros = tf.zeros([batch])
    transforms = tf.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1)
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=images,
        transforms=transforms,
        output_shape=tf.shape(images)[1:3],
        fill_value=0.0,
        interpolation="BILINEAR",
        fill_mode="REFLECT",
    )


def _random_erasing(images, probability: float):
    """Replace a random rectangle (2-25% of the face) with noise in a random fraction of the images."""
    shape = tf.shape(images)
    batch, height, width = shape[0], shape[1], shape[2]
    area = tf.random.uniform([batch], *AUGMENT.erase_area)
    aspect = tf.exp(
        tf.random.uniform([batch], math.log(AUGMENT.erase_aspect[0]), math.log(AUGMENT.erase_aspect[1]))
    )
    box_h = tf.sqrt(area / aspect) * tf.cast(height, tf.float32)
    box_w = tf.sqrt(area * aspect) * tf.cast(width, tf.float32)
    top = tf.random.uniform([batch]) * (tf.cast(height, tf.float32) - box_h)
    left = tf.random.uniform([batch]) * (tf.cast(width, tf.float32) - box_w)
    rows = tf.cast(tf.range(height), tf.float32)[None, :, None]
    cols = tf.cast(tf.range(width), tf.float32)[None, None, :]
    inside = (
        (rows >= top[:, None, None])
        & (rows < (top + box_h)[:, None, None])
        & (cols >= left[:, None, None])
        & (cols < (left + box_w)[:, None, None])
    )
    chosen = tf.random.uniform([batch]) < probability
    mask = (inside & chosen[:, None, None])[..., None]
    noise = tf.random.uniform(tf.shape(images), 0.0, 255.0)
    return tf.where(mask, noise, images)


def _mixup(images, targets, weights, alpha: float):
    """Blend each example with another of the batch (reversed order); lambda ~ Beta(alpha, alpha)."""
    batch = tf.shape(images)[0]
    g1 = tf.random.gamma([batch], alpha)
    g2 = tf.random.gamma([batch], alpha)
    lam = g1 / (g1 + g2)
    other = tf.reverse(tf.range(batch), axis=[0])
    lam_img = lam[:, None, None, None]
    images = lam_img * images + (1.0 - lam_img) * tf.gather(images, other)
    targets = lam[:, None] * targets + (1.0 - lam[:, None]) * tf.gather(targets, other)
    weights = lam * weights + (1.0 - lam) * tf.gather(weights, other)
    return images, targets, weights


def _degrade(images, degradations):
    """train/degrade.py's numpy function on a (B,H,W,1) batch, seeded from TensorFlow's random stream."""
    seed = tf.random.uniform([2], 0, 2**31 - 1, dtype=tf.int64)
    out = tf.numpy_function(
        lambda x, s: degrade_seeded(x, s, degradations), [images[..., 0], seed], tf.float32, stateful=True
    )
    return tf.ensure_shape(out, images.shape[:3])[..., None]


def make_train_dataset(
    images: np.ndarray, labels: np.ndarray, settings: PipelineSettings, targets=None, weights=None
) -> tf.data.Dataset:
    """(float32 images (B,H,W,1) in 0..255, targets (B,C), per-sample weights (B,)) batches; `targets` and
    `weights` as train/batches.py's make_train_dataset takes them."""
    s = settings
    strengths = s.strengths
    targets, weights = targets_and_weights(labels, s, targets, weights)
    ds = tf.data.Dataset.from_tensor_slices((images, targets, weights))
    ds = ds.shuffle(len(targets), seed=s.seed, reshuffle_each_iteration=True)
    ds = ds.batch(s.batch_size)

    def transform(batch_images, y, batch_weights):
        x = tf.cast(batch_images, tf.float32)[..., None]
        if s.augment:
            x = tf.image.random_flip_left_right(x)
            x = _random_affine(x, strengths.max_degrees, strengths.max_shift, strengths.max_zoom)
            # Brightness and contrast around each image's mean, in pixel units (the model rescales later).
            mean = tf.reduce_mean(x, axis=[1, 2, 3], keepdims=True)
            contrast = tf.random.uniform([tf.shape(x)[0], 1, 1, 1], *strengths.contrast)
            brightness = tf.random.uniform(
                [tf.shape(x)[0], 1, 1, 1], -strengths.max_brightness, strengths.max_brightness
            )
            x = tf.clip_by_value((x - mean) * contrast + mean + brightness, 0.0, 255.0)
            if s.degradations.active:
                x = _degrade(x, s.degradations)
            if s.random_erasing > 0:
                x = _random_erasing(x, s.random_erasing)
        if s.mixup > 0:
            x, y, batch_weights = _mixup(x, y, batch_weights, s.mixup)
        if s.teacher is not None:
            y = blend_targets(y, tf.cast(s.teacher(x), tf.float32), s.distill_alpha)
        return x, y, batch_weights

    ds = ds.map(transform, num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
    return ds.prefetch(tf.data.AUTOTUNE)
