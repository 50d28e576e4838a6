"""The training input pipeline: cached uint8 arrays -> shuffled, augmented float batches.

Augmentation lives here, never in the model, so the saved model holds only int8-friendly ops. Two
implementations produce the same batches (float32 (B,H,W,1) raw pixels 0..255, one-hot targets, per-sample
class weights) with the same augmentations:
- train/pipeline_tf.py: tf.data, vectorised per batch; the faster one on the TensorFlow backend;
- train/pipeline_numpy.py: a keras.utils.PyDataset in numpy/OpenCV, for Keras 3 on JAX or PyTorch, where
  TensorFlow may not be installed at all (a GPU machine with only JAX); its .keras file converts here.
train/batches.py picks one by the Keras backend. This module holds what both share (the augmentation
strengths, the settings, targets and weights) and never imports TensorFlow.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from train.degrade import Degradations


@dataclass(frozen=True)
class AugmentStrengths:
    """How strong each augmentation is; one instance, AUGMENT, is shared by both implementations so they stay
    the same."""

    # The geometric ranges are training settings (--augment-degrees/-shift/-zoom, train/config.py), whose
    # defaults are these; benchmarks/framing_noise.py measures how much the daemon's own crops move (docs/model/history.md).
    max_degrees: float = 10.0  # rotation about the centre, +-degrees
    max_shift: float = 0.08  # translation, +- fraction of the side
    max_zoom: float = 0.1  # scale in [1 - zoom, 1 + zoom]
    contrast: tuple[float, float] = (0.75, 1.25)  # factor around each image's mean
    max_brightness: float = 25.0  # +- pixel units (the model rescales later)
    erase_area: tuple[float, float] = (0.02, 0.25)  # random erasing: fraction of the face
    erase_aspect: tuple[float, float] = (0.5, 2.0)  # random erasing: box aspect ratio, log-uniform


AUGMENT = AugmentStrengths()


def balanced_class_weights(labels: np.ndarray, num_classes: int, power: float = 1.0) -> np.ndarray:
    """(n / (k * n_c)) ** power per class, rescaled so the mean sample weight stays 1.

    power 1 makes every class contribute equally to the loss; 0.5 (square root) lifts rare classes such as
    FER's "disgust" without trading away as much overall accuracy to over-predicting them; 0 is unweighted.
    """
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    weights = np.where(counts > 0, (len(labels) / (num_classes * np.maximum(counts, 1))) ** power, 0.0)
    weights *= len(labels) / max(float((weights * counts).sum()), 1e-12)
    return weights.astype(np.float32)


def per_sample_weights(labels: np.ndarray, class_weights: np.ndarray | None) -> np.ndarray:
    """float32 (N,): each sample's class weight, or all ones without class weights."""
    if class_weights is None:
        return np.ones(len(labels), np.float32)
    return np.asarray(class_weights, np.float32)[labels]


def to_model_input(images: np.ndarray) -> np.ndarray:
    """uint8 (N,H,W) -> float32 (N,H,W,1) raw pixels, what the model takes for validation and prediction."""
    return images.astype(np.float32)[..., None]


def uses_tf_data(backend: str | None = None) -> bool:
    """tf.data only on the TensorFlow backend; every other backend gets the numpy PyDataset."""
    if backend is None:
        import keras

        backend = keras.backend.backend()
    return backend == "tensorflow"


@dataclass(frozen=True)
class PipelineSettings:
    """What the training pipeline needs besides the arrays; both implementations take this one object."""

    num_classes: int
    batch_size: int
    seed: int  # the shuffle's (and, in the numpy pipeline, every batch's random numbers') seed
    class_weights: np.ndarray | None = None  # per class (balanced_class_weights), or None = unweighted
    augment: bool = True  # flip, rotation/shift/zoom, brightness/contrast
    random_erasing: float = 0.0  # probability per image
    mixup: float = 0.0  # Beta(alpha, alpha); 0 = off
    # Resume: the numpy pipeline starts from this epoch's shuffle; tf.data ignores it.
    initial_epoch: int = 0
    teacher: Any = None  # a train.distill.Teacher: targets blend in its probabilities, weight distill_alpha
    distill_alpha: float = 0.0
    strengths: AugmentStrengths = AUGMENT  # how strong each augmentation is (both implementations read this)
    degradations: Degradations = Degradations()  # camera degradations (train/degrade.py); off by default


def targets_and_weights(labels, settings: PipelineSettings, targets=None, weights=None):
    """float32 (N, C) targets (one-hot labels unless given) and (N,) sample weights (class weights unless
    given): what both pipelines shuffle and batch."""
    if targets is None:
        targets = np.eye(settings.num_classes, dtype=np.float32)[np.asarray(labels, np.int64)]
    if weights is None:
        weights = per_sample_weights(np.asarray(labels, np.int64), settings.class_weights)
    targets, weights = np.asarray(targets, np.float32), np.asarray(weights, np.float32)
    if not len(labels) == len(targets) == len(weights):
        raise ValueError(f"{len(labels)} labels, {len(targets)} targets and {len(weights)} weights")
    return targets, weights
