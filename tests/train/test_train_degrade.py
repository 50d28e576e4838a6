"""Camera degradations (train/degrade.py, `--degrade`): each step does what it says, the whole is off by
default, and both input pipelines apply the same function."""

from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np
import pytest

from tests.support.fakefaces import make_faces
from train.degrade import Degradations, degrade, small_face


def faces(n: int = 64) -> np.ndarray:
    images, _ = make_faces(max(1, n // 7) + 1, seed=4)
    return images[:n].astype(np.float32)


def sharpness(images: np.ndarray) -> float:
    return float(np.mean([cv2.Laplacian(x.astype(np.float32), cv2.CV_32F).var() for x in images]))


def test_off_by_default_and_at_probability_zero_the_crops_are_untouched():
    x = faces()
    assert not Degradations().active
    np.testing.assert_array_equal(degrade(x, np.random.default_rng(0), Degradations()), x)


def test_a_small_face_loses_the_detail_its_pixels_cannot_hold():
    checker = (np.indices((48, 48)).sum(axis=0) % 2 * 255).astype(np.float32)[None]
    np.testing.assert_array_equal(small_face(checker, 48), checker)  # a full-size face is unchanged
    assert np.ptp(small_face(checker, 24)) < 1  # one-pixel detail averages away at half the pixels
    x = faces(16)
    assert sharpness(small_face(x, 24)) < sharpness(small_face(x, 40)) < sharpness(x)
    assert small_face(x.astype(np.uint8), 32).dtype == np.uint8


def only(step: str, **ranges) -> Degradations:
    """Every crop degraded, with all steps but one at no strength."""
    none = Degradations(
        probability=1.0, min_face_px=48, max_blur_sigma=0.0, max_noise_sigma=0.0, min_jpeg_quality=100
    )
    none = replace(none, max_gamma=1.0, min_contrast=1.0)
    return replace(none, **ranges)


def test_each_step_changes_the_crops_the_way_a_camera_does():
    x, rng = faces(), np.random.default_rng
    assert sharpness(degrade(x, rng(1), only("blur", max_blur_sigma=2.0))) < 0.8 * sharpness(x)
    assert sharpness(degrade(x, rng(1), only("small", min_face_px=16))) < 0.8 * sharpness(x)
    noisy = degrade(x, rng(1), only("noise", max_noise_sigma=20.0))
    assert 0 < np.std(noisy - x) < 20
    flat = degrade(x, rng(1), only("contrast", min_contrast=0.3))
    assert np.mean(flat.std(axis=(1, 2))) < 0.9 * np.mean(x.std(axis=(1, 2)))
    toned = degrade(x, rng(1), only("gamma", max_gamma=2.0))
    assert np.abs(toned - x).max() > 10 and np.abs(toned.mean(axis=(1, 2)) - x.mean(axis=(1, 2))).max() > 5
    jpeg = degrade(x, rng(1), only("jpeg", min_jpeg_quality=5))
    assert np.abs(jpeg - x).mean() > 1
    for out in (noisy, flat, toned, jpeg):
        assert out.dtype == np.float32 and out.shape == x.shape and out.min() >= 0 and out.max() <= 255
    # About half the crops get each step (EACH), so a crop is sometimes left as it was.
    unchanged = np.all(np.abs(noisy - x) < 1e-3, axis=(1, 2))
    assert 0.3 < unchanged.mean() < 0.7


def test_a_batch_is_a_pure_function_of_the_generator():
    x, d = faces(), Degradations(probability=0.7)
    np.testing.assert_array_equal(
        degrade(x, np.random.default_rng(5), d), degrade(x, np.random.default_rng(5), d)
    )
    assert not np.array_equal(
        degrade(x, np.random.default_rng(5), d), degrade(x, np.random.default_rng(6), d)
    )


def test_the_config_sets_the_ranges():
    from train.config import TrainConfig
    from train.train import degradations

    assert degradations(TrainConfig()) == Degradations()
    d = degradations(TrainConfig(degrade=0.4, degrade_face_px=30, degrade_blur=0.8, degrade_jpeg=50))
    assert (d.probability, d.min_face_px, d.max_blur_sigma, d.min_jpeg_quality) == (0.4, 30, 0.8, 50)


@pytest.mark.parametrize("pipeline", ["numpy", "tf.data"])
def test_both_input_pipelines_degrade_their_batches(pipeline):
    pytest.importorskip("keras")
    from train.pipeline import AUGMENT, PipelineSettings

    still = replace(AUGMENT, max_degrees=0, max_shift=0, max_zoom=0, contrast=(1, 1), max_brightness=0)
    x = faces().astype(np.uint8)
    labels = np.arange(len(x)) % 7
    blurry = only("blur", max_blur_sigma=2.0)
    batches = {}
    for name, d in (("plain", Degradations()), ("degraded", blurry)):
        settings = PipelineSettings(7, batch_size=len(x), seed=2, strengths=still, degradations=d)
        if pipeline == "numpy":
            from train.pipeline_numpy import NumpyTrainBatches

            batches[name] = NumpyTrainBatches(x, labels, settings)[0][0][..., 0]
        else:
            pytest.importorskip("tensorflow")
            from train.pipeline_tf import make_train_dataset as tf_dataset

            batches[name] = next(iter(tf_dataset(x, labels, settings)))[0].numpy()[..., 0]
    assert sharpness(batches["degraded"]) < 0.8 * sharpness(batches["plain"])
