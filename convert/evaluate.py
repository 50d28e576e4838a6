"""Accuracy, agreement, size and per-face latency of a model on a labelled split.

A .tflite model runs through `edge.classify.EmotionClassifier`, the daemon's own code path (ai-edge-litert,
quantization from the tensor parameters), so the numbers here are what the Pi will do, not what TensorFlow's
interpreter would do. A .keras model runs through Keras `predict` as the float reference.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from convert.errors import ConvertError
from convert.model_io import (
    check_model_matches_contract,
    contract_for,
    face_model_shape,
    load_keras_model,
)
from edge.model_contract import ModelContract
from train.metrics import classification_report

WARMUP_CALLS = 20
# Faces of these sizes (frame pixels of the crop's side) reach the model from a room camera, upscaled to its
# input by the daemon: each is scored beside the full-size crops (train/degrade.py's small_face).
SMALL_FACE_PX = (24, 32, 40)


@dataclass
class Predictor:
    """One model ready to classify uint8 faces (N, H, W, 1) into probabilities in its contract's label order."""

    path: Path
    kind: str  # "tflite" | "keras"
    contract: ModelContract
    backend: str
    _run: Callable[[np.ndarray], np.ndarray]  # uint8 faces -> probabilities

    @property
    def labels(self) -> list[str]:
        return self.contract.labels

    def predict(self, faces: np.ndarray) -> np.ndarray:
        return self._run(faces)

    def time_single_face(self, face: np.ndarray, runs: int) -> list[float]:
        """Seconds per call for one face, after warm-up (first calls allocate and fill caches)."""
        one = face[np.newaxis]
        for _ in range(WARMUP_CALLS):
            self._run(one)
        timings = []
        for _ in range(runs):
            start = time.perf_counter()
            self._run(one)
            timings.append(time.perf_counter() - start)
        return timings


def tflite_predictor(path: Path, num_threads: int = 1) -> Predictor:
    from edge.classify import EmotionClassifier

    classifier = EmotionClassifier(path, num_threads=num_threads)
    return Predictor(path, "tflite", classifier.contract, classifier.backend, classifier.classify)


def keras_predictor(path: Path, contract: ModelContract, model=None) -> Predictor:
    """`model` may be passed when the caller already loaded it (convert's verification step)."""
    model = model if model is not None else load_keras_model(path)
    size, classes = face_model_shape(model, path)
    check_model_matches_contract(path, size, classes, contract)

    def run(faces: np.ndarray) -> np.ndarray:
        x = faces.astype(np.float32)
        if len(x) == 1:  # predict() builds a tf.data pipeline per call: far too slow to time one face
            return np.asarray(model(x, training=False))
        return np.asarray(model.predict(x, batch_size=256, verbose=0))

    import keras

    return Predictor(path, "keras", contract, f"keras ({keras.backend.backend()})", run)


def _flip(faces: np.ndarray) -> np.ndarray:
    return faces[:, :, ::-1]


def _metrics(report: dict) -> dict:
    return {key: report[key] for key in ("accuracy", "macro_f1", "per_class", "confusion", "labels", "count")}


def evaluate(
    predictor: Predictor,
    faces: np.ndarray,
    targets: np.ndarray,
    tta_flip: bool = False,
    timing_runs: int = 300,
) -> tuple[dict, np.ndarray]:
    """Returns (result dict, probabilities). `targets` are indices into the predictor's labels."""
    probs = predictor.predict(faces)
    report = classification_report(targets, probs.argmax(axis=1), predictor.labels)
    result = {
        "model": str(predictor.path),
        "kind": predictor.kind,
        "backend": predictor.backend,
        "size_bytes": predictor.path.stat().st_size,
        **_metrics(report),
    }
    if tta_flip:  # agreement and the headline numbers stay single-pass; TTA is reported beside them
        # The face's mirror image carries the same expression: averaging both often helps; it costs 2x.
        flipped = (probs + predictor.predict(_flip(faces))) / 2
        tta = classification_report(targets, flipped.argmax(axis=1), predictor.labels)
        result["tta_flip"] = {**_metrics(tta), "cost": "2x inference per face"}
    if timing_runs > 0 and len(faces):
        seconds = np.asarray(predictor.time_single_face(faces[0], timing_runs))
        result["latency_ms"] = {
            "median": float(np.median(seconds) * 1e3),
            "p95": float(np.percentile(seconds, 95) * 1e3),
            "runs": int(timing_runs),
            "threads": 1 if predictor.kind == "tflite" else "keras default",
        }
    return result, probs


def _summary(targets: np.ndarray, probs: np.ndarray, labels: list[str]) -> dict:
    report = classification_report(targets, probs.argmax(axis=1), labels)
    recall = {label: round(row["recall"], 4) for label, row in report["per_class"].items()}
    return {
        "accuracy": report["accuracy"],
        "macro_f1": report["macro_f1"],
        "recall": recall,
        "count": report["count"],
    }


def evaluate_views(
    predictor: Predictor,
    faces: np.ndarray,
    probs: np.ndarray,
    targets: np.ndarray,
    majority: np.ndarray | None = None,
    small_faces: tuple[int, ...] = SMALL_FACE_PX,
) -> dict:
    """The same faces seen two more ways: against a second set of labels (`majority`, FER+'s majority label
    per face in the predictor's label order, -1 where there is none) and as small faces (each size in
    `small_faces`, smaller than the input, sampled down and upscaled as the daemon does)."""
    from train.degrade import small_face

    views: dict = {}
    has = None
    if majority is not None:
        has = majority >= 0
        report = classification_report(majority[has], probs[has].argmax(axis=1), predictor.labels)
        views["majority"] = _metrics(report)
    height = faces.shape[1]
    sized = {}
    for side in (s for s in small_faces if s < height):
        small = predictor.predict(small_face(faces[..., 0], side)[..., None])
        entry = {"original": _summary(targets, small, predictor.labels)}
        if has is not None:
            entry["majority"] = _summary(majority[has], small[has], predictor.labels)
        sized[str(side)] = entry
    if sized:
        views["small_faces"] = sized
    return views


def compare(first: dict, first_probs: np.ndarray, second: dict, second_probs: np.ndarray, labels_second):
    """Top-1 agreement (second model's predictions mapped to the first's label order by name)."""
    order = [labels_second.index(name) for name in first["labels"]]
    aligned = second_probs[:, order]
    agreement = float(np.mean(first_probs.argmax(axis=1) == aligned.argmax(axis=1)))
    return {
        "model": second,
        "agreement": agreement,
        "accuracy_drop": float(first["accuracy"] - second["accuracy"]),
        "macro_f1_drop": float(first["macro_f1"] - second["macro_f1"]),
    }


def load_predictor(path: Path, kind: str, num_threads: int = 1) -> Predictor:
    if kind == "tflite":
        return tflite_predictor(path, num_threads)
    if not (path.with_suffix(".json")).is_file():
        raise ConvertError(f"{path.with_suffix('.json')} is missing: evaluate needs the model's contract")
    return keras_predictor(path, contract_for(path))


def format_summary(results: list[dict], agreement: float | None = None) -> str:
    """Models side by side: headline metrics, per-class F1, size and latency."""
    names = [Path(r["model"]).name for r in results]
    width = max(14, *(len(text) + 2 for text in names + [r["backend"] for r in results]))
    labels = results[0]["labels"]
    lines = [f"{'':<18}" + "".join(f"{n:>{width}}" for n in names)]

    def row(title, values):
        lines.append(f"{title:<18}" + "".join(f"{v:>{width}}" for v in values))

    row("kind", [f"{r['kind']}" for r in results])
    row("accuracy", [f"{r['accuracy']:.4f}" for r in results])
    row("macro-F1", [f"{r['macro_f1']:.4f}" for r in results])
    if all("majority" in r for r in results):
        row("majority accuracy", [f"{r['majority']['accuracy']:.4f}" for r in results])
        row("majority macro-F1", [f"{r['majority']['macro_f1']:.4f}" for r in results])
    for side in results[0].get("small_faces", {}):
        if all(side in r.get("small_faces", {}) for r in results):
            for which in ("original", "majority"):
                if which in results[0]["small_faces"][side]:
                    title = f"{side} px {'accuracy' if which == 'original' else 'majority'}"
                    row(title, [f"{r['small_faces'][side][which]['accuracy']:.4f}" for r in results])
    if all("tta_flip" in r for r in results):
        row("accuracy +flip", [f"{r['tta_flip']['accuracy']:.4f}" for r in results])
        row("macro-F1 +flip", [f"{r['tta_flip']['macro_f1']:.4f}" for r in results])
    for label in labels:
        row(f"  F1 {label}", [f"{r['per_class'][label]['f1']:.3f}" for r in results])
    row("size", [f"{r['size_bytes'] / 1024:.1f} KiB" for r in results])
    if all("latency_ms" in r for r in results):
        row("latency median", [f"{r['latency_ms']['median']:.3f} ms" for r in results])
        row("latency p95", [f"{r['latency_ms']['p95']:.3f} ms" for r in results])
    row("backend", [r["backend"] for r in results])
    if agreement is not None:
        drop = results[0]["accuracy"] - results[1]["accuracy"]
        lines.append(
            f"top-1 agreement {agreement:.4f}; accuracy drop {drop * 100:+.2f} points (first - second)"
        )
    return "\n".join(lines) + "\n"
