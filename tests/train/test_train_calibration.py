"""Temperature scaling (train/calibration.py): confidences made to match accuracy, predictions unchanged."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from tests.support.fakefaces import make_faces  # noqa: E402
from train.calibration import (  # noqa: E402
    apply_temperature,
    calibrate_model_file,
    expected_calibration_error,
    fit_temperature,
)
from train.model import make_model  # noqa: E402
from train.runstate import save_model_atomic  # noqa: E402


def softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def sampled(n: int, seed: int):
    """Logits and labels drawn from softmax(logits): probabilities calibrated by construction."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 2.5, (n, 7))
    probs = softmax(logits)
    labels = np.array([rng.choice(7, p=p) for p in probs])
    return logits, labels


def test_the_fitted_temperature_undoes_a_known_softening():
    logits, labels = sampled(20000, seed=1)
    assert fit_temperature(softmax(logits), labels) == pytest.approx(1.0, abs=0.05)
    # What a distilled student looks like: the right class, too little confidence.
    softened = softmax(logits / 2.0)
    temperature = fit_temperature(softened, labels)
    assert temperature == pytest.approx(0.5, abs=0.03)
    fixed = softmax(np.log(softened) / temperature)
    assert expected_calibration_error(fixed, labels) < 0.02 < expected_calibration_error(softened, labels)
    assert np.array_equal(fixed.argmax(axis=1), softened.argmax(axis=1))


def test_the_temperature_is_folded_into_the_model_and_a_rerun_leaves_it_alone(tmp_path):
    model = make_model("cnn", (48, 48, 1), 7, width=0.25)
    model.compile(optimizer="adamw", loss="categorical_crossentropy")
    model.optimizer.build(model.trainable_variables)
    images, labels = make_faces(20, seed=2)
    x = images.astype(np.float32)[..., None]
    # Make it confidently right on these faces, then soften it by 3: calibration must sharpen it again.
    model.fit(x, keras.utils.to_categorical(labels, 7), epochs=30, batch_size=35, verbose=0)
    apply_temperature(model, 3.0)
    # Scored against its own predictions it is always right, and then validation cannot pin T down.
    perfect = tmp_path / "perfect.keras"
    save_model_atomic(model, perfect)
    content = perfect.read_bytes()
    skipped = calibrate_model_file(perfect, x, model.predict(x, verbose=0).argmax(axis=1))
    assert skipped["temperature"] is None and "every validation face" in skipped["why"]
    assert perfect.read_bytes() == content
    # A fifth of the labels wrong, as in real validation data: now there is a best T.
    rng = np.random.default_rng(0)
    noisy = rng.random(len(labels)) < 0.2
    labels = np.where(noisy, rng.integers(0, 7, len(labels)), labels)
    before = model.predict(x, verbose=0)
    path = tmp_path / "model.keras"
    save_model_atomic(model, path)

    result = calibrate_model_file(path, x, labels)
    assert result["temperature"] < 0.9
    assert result["mean_confidence_after"] > result["mean_confidence_before"]
    assert result["ece_after"] < result["ece_before"]
    after = keras.models.load_model(path).predict(x, verbose=0)
    assert np.array_equal(after.argmax(axis=1), before.argmax(axis=1))
    assert result["accuracy"] == pytest.approx(np.mean(before.argmax(axis=1) == labels), abs=1e-4)

    calibrated = path.read_bytes()  # calibrated on these very faces: a second fit finds T = 1
    again = calibrate_model_file(path, x, labels)
    assert again["temperature"] == pytest.approx(1.0, abs=0.01)
    assert path.read_bytes() == calibrated
