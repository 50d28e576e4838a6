"""The geometric augmentation ranges (--augment-degrees/-shift/-zoom) reach both input pipelines.

A bright square in the middle of a dark face-sized image: with every range at zero each batch is the image
itself (the square is symmetric, so a flip changes nothing); with a shift range the square's centre moves,
never further than the range allows, in the numpy pipeline and in tf.data alike."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from train.config import TrainConfig  # noqa: E402
from train.pipeline import AUGMENT, PipelineSettings  # noqa: E402
from train.pipeline_numpy import NumpyTrainBatches  # noqa: E402
from train.train import augment_strengths  # noqa: E402

STILL = replace(
    AUGMENT, max_degrees=0.0, max_shift=0.0, max_zoom=0.0, contrast=(1.0, 1.0), max_brightness=0.0
)


def squares(n: int = 64) -> tuple[np.ndarray, np.ndarray]:
    images = np.zeros((n, 48, 48), np.uint8)
    images[:, 18:30, 18:30] = 255
    return images, np.arange(n) % 2


def centres(batch: np.ndarray) -> np.ndarray:
    """(N, 2) intensity centroid (row, column) of each image's bright pixels."""
    x = np.asarray(batch)[..., 0]
    weight = (x > 127).astype(np.float64)
    rows, cols = np.mgrid[0:48, 0:48]
    total = weight.sum(axis=(1, 2))
    return np.stack([(weight * rows).sum(axis=(1, 2)) / total, (weight * cols).sum(axis=(1, 2)) / total], 1)


def numpy_batch(strengths) -> np.ndarray:
    images, labels = squares()
    settings = PipelineSettings(num_classes=2, batch_size=64, seed=3, strengths=strengths)
    return NumpyTrainBatches(images, labels, settings)[0][0]


def tf_batch(strengths) -> np.ndarray:
    pytest.importorskip("tensorflow")
    from train.pipeline_tf import make_train_dataset

    images, labels = squares()
    settings = PipelineSettings(num_classes=2, batch_size=64, seed=3, strengths=strengths)
    return next(iter(make_train_dataset(images, labels, settings)))[0].numpy()


@pytest.mark.parametrize("make_batch", [numpy_batch, tf_batch], ids=["numpy", "tf.data"])
def test_ranges_set_how_far_the_augmentation_moves_a_face(make_batch):
    still = make_batch(STILL)
    np.testing.assert_allclose(still[..., 0], squares()[0].astype(np.float32), atol=1e-3)

    shifted = centres(make_batch(replace(STILL, max_shift=0.2)))
    offset = np.abs(shifted - 23.5)
    assert offset.max() <= 0.2 * 48 + 0.5  # never beyond the range
    assert offset.max() > 0.12 * 48  # and the range is used: 64 draws reach well into it
    assert np.mean(offset.max(axis=1) > 1.0) > 0.8


def test_the_config_sets_the_ranges_and_defaults_keep_the_previous_ones():
    assert augment_strengths(TrainConfig()) == AUGMENT  # a run saved before these settings trains the same
    custom = augment_strengths(TrainConfig(augment_degrees=4.0, augment_shift=0.03, augment_zoom=0.15))
    assert (custom.max_degrees, custom.max_shift, custom.max_zoom) == (4.0, 0.03, 0.15)
    assert custom.contrast == AUGMENT.contrast
