"""The training batches for model.fit: tf.data (train/pipeline_tf.py) on the TensorFlow backend, the numpy
PyDataset (train/pipeline_numpy.py) on every other one; both from train/pipeline.py's settings."""

from __future__ import annotations

import numpy as np

from train.pipeline import PipelineSettings, uses_tf_data


def make_train_dataset(
    images: np.ndarray,
    labels: np.ndarray,
    settings: PipelineSettings,
    targets: np.ndarray | None = None,
    weights: np.ndarray | None = None,
):
    """Shuffled (reshuffled every epoch), augmented training batches for model.fit on the current backend.

    `targets` (N, C) replace the one-hot labels (soft labels, train/softlabels.py); `weights` (N,) replace
    the per-sample class weights (they already include them). Pass `epoch_callbacks(dataset)` to fit too:
    the numpy pipeline takes its per-epoch shuffle from them.
    """
    if uses_tf_data():
        from train.pipeline_tf import make_train_dataset as make_tf_dataset

        return make_tf_dataset(images, labels, settings, targets, weights)
    from train.pipeline_numpy import NumpyTrainBatches

    return NumpyTrainBatches(images, labels, settings, targets=targets, weights=weights)


def epoch_callbacks(dataset) -> list:
    """Keras callbacks a training dataset needs during fit (the numpy pipeline's per-epoch reshuffle)."""
    from train.pipeline_numpy import NumpyTrainBatches, ReshuffleEachEpoch

    return [ReshuffleEachEpoch(dataset)] if isinstance(dataset, NumpyTrainBatches) else []
