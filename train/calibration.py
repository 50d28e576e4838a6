"""Confidence calibration by temperature scaling (Guo et al., "On Calibration of Modern Neural Networks", 2017).

The daemon publishes each face's probabilities, and users put thresholds on them (a Home Assistant automation
"if happy > 0.8"), so a model's confidence should match how often it is right. Distillation makes it too low:
the student learns the teachers' probabilities softened by the distillation temperature and reproduces them,
so its mean confidence falls well below its accuracy (the v2 student's figures: docs/model/history.md). One
scalar T, fitted on validation by log-likelihood, fixes that without touching which class wins: softmax(z / T)
has the same argmax as softmax(z). It is folded into the last Dense layer (weights and bias divided by T), so the model keeps the
same layers and converts to int8 as before.
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np

from train.runstate import save_model_atomic

T_RANGE = (0.2, 5.0)  # a fit at either end means the validation faces cannot pin T down


def safe_log(probs: np.ndarray) -> np.ndarray:
    """float64 log-probabilities; zeros (a float32 softmax underflows) are clipped so the log stays finite."""
    return np.log(np.clip(probs.astype(np.float64), 1e-12, 1.0))


def log_softmax_at(log_probs: np.ndarray, temperature: float) -> np.ndarray:
    """log softmax(log_probs / T): log-probabilities are logits up to a per-row constant, which the softmax
    ignores, so this is what the model with T folded in outputs, without the raw logits or another pass."""
    z = log_probs / temperature
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def nll(log_probs: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    """Mean negative log-likelihood of softmax(log_probs / T)."""
    return float(-np.mean(log_softmax_at(log_probs, temperature)[np.arange(len(labels)), labels]))


def fit_temperature(probs: np.ndarray, labels: np.ndarray) -> float:
    """The T in T_RANGE that minimises validation NLL (golden-section search on log T; NLL is unimodal in it)."""
    log_probs = safe_log(probs)
    lo, hi = np.log(T_RANGE[0]), np.log(T_RANGE[1])
    ratio = (np.sqrt(5) - 1) / 2
    a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fa, fb = nll(log_probs, labels, np.exp(a)), nll(log_probs, labels, np.exp(b))
    for _ in range(60):
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - ratio * (hi - lo)
            fa = nll(log_probs, labels, np.exp(a))
        else:
            lo, a, fa = a, b, fb
            b = lo + ratio * (hi - lo)
            fb = nll(log_probs, labels, np.exp(b))
    return float(np.exp((lo + hi) / 2))


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = 10) -> float:
    """Mean |accuracy - confidence| over equal-width confidence bins, weighted by the faces in each."""
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    error = 0.0
    for low, high in zip(edges[:-1], edges[1:], strict=True):
        inside = (confidence > low) & (confidence <= high)
        if inside.any():
            error += inside.mean() * abs(correct[inside].mean() - confidence[inside].mean())
    return float(error)


def output_layer(model: keras.Model):
    """The last layer if it is a softmax Dense (every train.model architecture ends so), else None."""
    layer = model.layers[-1]
    activation = getattr(layer, "activation", None)
    if isinstance(layer, keras.layers.Dense) and getattr(activation, "__name__", "") == "softmax":
        return layer
    return None


def apply_temperature(model: keras.Model, temperature: float) -> None:
    layer = output_layer(model)
    kernel, bias = layer.get_weights()
    layer.set_weights([kernel / temperature, bias / temperature])


def calibrate_model_file(path: Path, val_x: np.ndarray, val_labels: np.ndarray) -> dict:
    """Fit T on validation and fold it into the model at `path` (rewritten in place, atomically).

    Returns what metrics.json records. Run on an already calibrated model it finds T close to 1.
    """
    model = keras.models.load_model(path)
    if output_layer(model) is None:
        return {"temperature": None, "why": "the model does not end in a softmax Dense layer"}
    probs = model.predict(val_x, batch_size=256, verbose=0)
    if np.all(probs.argmax(axis=1) == val_labels):
        # Every face right: likelihood only grows as T shrinks, so validation says nothing about T.
        return {"temperature": None, "why": "the model classifies every validation face correctly"}
    temperature = fit_temperature(probs, val_labels)
    if not T_RANGE[0] * 1.01 < temperature < T_RANGE[1] / 1.01:
        # Too few faces, or nearly all right: the likelihood keeps improving towards an extreme. Applying the
        # bound would also compound, run after run, on a model that was calibrated before.
        return {
            "temperature": None,
            "why": f"validation cannot fix a temperature (best fit {temperature:.2f})",
        }
    result = {
        "temperature": round(temperature, 4),
        "ece_before": round(expected_calibration_error(probs, val_labels), 4),
        "mean_confidence_before": round(float(probs.max(axis=1).mean()), 4),
    }
    if abs(temperature - 1.0) >= 0.01:  # an already calibrated model (a rerun) is left byte for byte
        apply_temperature(model, temperature)
        save_model_atomic(model, path)
        probs = np.exp(log_softmax_at(safe_log(probs), temperature))
    return {
        **result,
        "ece_after": round(expected_calibration_error(probs, val_labels), 4),
        "mean_confidence_after": round(float(probs.max(axis=1).mean()), 4),
        "accuracy": round(float(np.mean(probs.argmax(axis=1) == val_labels)), 4),
    }
