"""Weight averaging over a run's last epochs (`emotion-train --average-last K`): SWA on the cosine tail.

Late in a cosine schedule the weights wander around one wide minimum; their mean lies nearer its centre
and generalises better than any single epoch along the way (Izmailov et al., "Averaging Weights Leads to
Wider Optima", 2018). Three details make it safe and worth having here:
- the averaged network needs BatchNorm statistics of its own: the mean of each epoch's moving statistics
  does not describe the averaged weights' activations (on FER-2013 the plain average scored no better than
  the best epoch), so they are re-estimated on clean training faces;
- the average replaces model.keras unless the best single epoch beats it on validation by more than one
  standard error: that epoch was picked as the maximum of many noisy scores on the same faces, so its score
  is biased upward and the average's is not; a tie within noise goes to the average, which is expected to
  generalise better, while a tail that really went wrong (overfitting) keeps the best epoch. metrics.json
  records both scores and the margin;
- each epoch's weights are kept in checkpoints/ (weights only, a few MB, older ones pruned), so an
  interrupted run still averages every epoch it asked for.
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np

from train.pipeline import to_model_input
from train.runstate import kept_epochs, load_epoch_weights, save_model_atomic

MAX_BN_FACES = 16384  # enough for stable statistics; more only costs time on a big custom data set
BN_BATCH = 256


def average_weights(model: keras.Model, paths: list[Path]) -> None:
    """Set `model`'s weights to the element-wise mean of the kept epochs' weights (same network).

    Only floating-point arrays are averaged; any others (integer counters, seed states) keep the last
    file's values, as a mean of them means nothing.
    """
    shapes = [w.shape for w in model.get_weights()]
    total = None
    for path in paths:
        weights = load_epoch_weights(path)
        if [w.shape for w in weights] != shapes:
            raise ValueError(f"{path} holds the weights of another network than this run's")
        if total is None:
            total = [w.astype(np.float64) if w.dtype.kind == "f" else w for w in weights]
        else:
            total = [t + w if w.dtype.kind == "f" else w for t, w in zip(total, weights, strict=True)]
    model.set_weights([t / len(paths) if t.dtype.kind == "f" else t for t in total])


def reestimate_batchnorm(model: keras.Model, images: np.ndarray, batch_size: int = BN_BATCH) -> int:
    """Replace every BatchNorm's moving mean and variance by their average over the batches of `images`.

    A forward pass in training mode normalises with each batch's own statistics, so no layer depends on
    another's moving values and all are estimated in one pass; the momentum i/(i+1) on batch i turns the
    moving update into a running mean. Dropout is active in that pass too, but in this project's models it
    sits after the last BatchNorm. Returns the number of BatchNorm layers updated.
    """
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    momenta = [layer.momentum for layer in norms]
    try:
        for i, start in enumerate(range(0, len(images), batch_size)):
            for layer in norms:
                layer.momentum = i / (i + 1)
            model(to_model_input(images[start : start + batch_size]), training=True)
    finally:
        for layer, momentum in zip(norms, momenta, strict=True):
            layer.momentum = momentum
    return len(norms)


def val_accuracy(model: keras.Model, val_x: np.ndarray, val_labels: np.ndarray) -> float:
    probs = model.predict(val_x, batch_size=256, verbose=0)
    return float(np.mean(probs.argmax(axis=1) == val_labels))


def average_last_epochs(
    run_dir: Path,
    last_epoch: int,
    count: int,
    best_val_accuracy: float,
    train_images: np.ndarray,
    val_x: np.ndarray,
    val_labels: np.ndarray,
    seed: int,
) -> dict:
    """Average the weights of epochs last_epoch-count+1 .. last_epoch, re-estimate BatchNorm, validate, and
    save the result as model.keras unless `best_val_accuracy` beats it by more than one standard error.
    Returns what metrics.json records."""
    run_dir = Path(run_dir)
    kept = kept_epochs(run_dir)
    numbers = [n for n in range(max(1, last_epoch - count + 1), last_epoch + 1) if n in kept]
    result = {"requested": count, "epochs": numbers, "best_epoch_val_accuracy": round(best_val_accuracy, 4)}
    if len(numbers) < 2:
        return {**result, "used": False, "why": f"only {len(numbers)} epoch(s) kept; nothing to average"}
    # Same network and compile state as the run's; its weights are replaced below.
    model = keras.models.load_model(run_dir / "checkpoints" / "last.keras")
    average_weights(model, [kept[n] for n in numbers])
    rng = np.random.default_rng(seed)
    faces = train_images
    if len(faces) > MAX_BN_FACES:
        faces = faces[np.sort(rng.choice(len(faces), MAX_BN_FACES, replace=False))]
    reestimate_batchnorm(model, faces)
    accuracy = val_accuracy(model, val_x, val_labels)
    margin = standard_error(best_val_accuracy, len(val_labels))
    # In counts of correct faces: the best epoch's score went through float32 in Keras' metric.
    n = len(val_labels)
    used = round(accuracy * n) >= round(best_val_accuracy * n) - margin * n
    if used:
        save_model_atomic(model, run_dir / "model.keras")
    return {
        **result,
        "val_accuracy": round(accuracy, 4),
        "margin": round(margin, 4),
        "bn_faces": int(len(faces)),
        "used": used,
    }


def standard_error(accuracy: float, count: int) -> float:
    """One standard error of an accuracy measured on `count` faces (binomial)."""
    p = min(max(accuracy, 0.0), 1.0)
    return (p * (1 - p) / max(count, 1)) ** 0.5
