"""Classification metrics and plots shared by train/ and convert/ (numpy only; matplotlib loaded lazily)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from edge.files import write_bytes_atomic


def classification_report(y_true, y_pred, labels) -> dict:
    """Accuracy, macro-F1, per-class precision/recall/F1/support and the confusion matrix
    (rows = true class, columns = predicted class). y_true/y_pred are indices into labels."""
    labels = list(labels)
    k = len(labels)
    y_true = np.asarray(y_true, dtype=np.int64).reshape(-1)
    y_pred = np.asarray(y_pred, dtype=np.int64).reshape(-1)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true has {y_true.size} items but y_pred has {y_pred.size}")
    for name, y in (("y_true", y_true), ("y_pred", y_pred)):
        if y.size and (y.min() < 0 or y.max() >= k):
            raise ValueError(f"{name} holds class indices outside 0..{k - 1}")
    confusion = np.zeros((k, k), dtype=np.int64)
    np.add.at(confusion, (y_true, y_pred), 1)
    true_pos = np.diag(confusion).astype(float)
    support = confusion.sum(axis=1)
    predicted = confusion.sum(axis=0)
    # A class never predicted (or absent) has precision/recall 0, not NaN: keeps JSON valid and means honest.
    precision = np.divide(true_pos, predicted, out=np.zeros(k), where=predicted > 0)
    recall = np.divide(true_pos, support, out=np.zeros(k), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros(k), where=denom > 0)
    present = support > 0  # macro average over classes that occur, as scikit-learn does with labels=present
    return {
        "labels": labels,
        "accuracy": float(true_pos.sum() / max(1, y_true.size)),
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "per_class": {
            label: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, label in enumerate(labels)
        },
        "confusion": confusion.tolist(),
        "count": int(y_true.size),
    }


def format_report(report: dict, title: str = "") -> str:
    """A readable table: per-class P/R/F1/support, accuracy, macro-F1 and the confusion matrix."""
    labels = report["labels"]
    width = max(8, max(len(label) for label in labels) + 1)
    lines = [title, "=" * len(title)] if title else []
    lines.append(f"{'class':<{width}} {'precision':>9} {'recall':>7} {'f1':>7} {'support':>8}")
    for label in labels:
        row = report["per_class"][label]
        lines.append(
            f"{label:<{width}} {row['precision']:>9.3f} {row['recall']:>7.3f} {row['f1']:>7.3f} {row['support']:>8d}"
        )
    total = sum(report["per_class"][label]["support"] for label in labels)
    lines.append(f"{'accuracy':<{width}} {'':>9} {'':>7} {report['accuracy']:>7.3f} {total:>8d}")
    lines.append(f"{'macro-F1':<{width}} {'':>9} {'':>7} {report['macro_f1']:>7.3f} {total:>8d}")
    lines.append("")
    lines.append("confusion (rows = true, columns = predicted)")
    short = [label[:6] for label in labels]
    lines.append(" " * width + " ".join(f"{s:>6}" for s in short))
    for label, row in zip(labels, report["confusion"], strict=True):
        lines.append(f"{label:<{width}}" + " ".join(f"{v:>6d}" for v in row))
    return "\n".join(lines) + "\n"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no display on servers or in tests
    import matplotlib.pyplot as plt

    return plt


def _save_figure(fig, path) -> None:
    buffer = io.BytesIO()
    fig.savefig(buffer, format=Path(path).suffix.lstrip(".") or "png", dpi=110, bbox_inches="tight")
    write_bytes_atomic(path, buffer.getvalue())


def plot_confusion(report: dict, path) -> None:
    """Row-normalised confusion matrix (recall per true class) with the raw counts written in each cell."""
    plt = _pyplot()
    labels = report["labels"]
    counts = np.asarray(report["confusion"], dtype=float)
    rows = counts.sum(axis=1, keepdims=True)
    normalised = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)
    size = 1.0 + 0.7 * len(labels)
    fig, ax = plt.subplots(figsize=(size + 1.5, size))
    try:
        image = ax.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
        ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
        ax.set_yticks(range(len(labels)), labels)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        for i in range(len(labels)):
            for j in range(len(labels)):
                colour = "white" if normalised[i, j] > 0.5 else "black"
                ax.text(j, i, f"{int(counts[i, j])}", ha="center", va="center", color=colour, fontsize=8)
        ax.set_title(f"accuracy {report['accuracy']:.3f}, macro-F1 {report['macro_f1']:.3f}")
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="recall")
        _save_figure(fig, path)
    finally:
        plt.close(fig)


def _read_history(history) -> dict[str, list[float]]:
    if isinstance(history, dict):
        return {k: [float(v) for v in values] for k, values in history.items()}
    with open(history, newline="") as handle:
        rows = list(csv.DictReader(handle))
    columns: dict[str, list[float]] = {}
    for row in rows:
        for key, value in row.items():
            try:
                columns.setdefault(key, []).append(float(value))
            except (TypeError, ValueError):
                continue
    return columns


def plot_history(history_csv_or_dict, path) -> None:
    """Loss and accuracy curves, train vs validation, from Keras' history dict or a history.csv."""
    plt = _pyplot()
    history = _read_history(history_csv_or_dict)
    epochs = history.get("epoch")
    n = max((len(v) for v in history.values()), default=0)
    x = [int(e) + 1 for e in epochs] if epochs and len(epochs) == n else list(range(1, n + 1))
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    try:
        for ax, metric in zip(axes, ("loss", "accuracy"), strict=True):
            for prefix, style in (("", "-"), ("val_", "--")):
                key = prefix + metric
                if key in history and len(history[key]) == len(x):
                    ax.plot(
                        x, history[key], style, marker="o", markersize=3, label="val" if prefix else "train"
                    )
            ax.set_xlabel("epoch")
            ax.set_ylabel(metric)
            ax.grid(alpha=0.3)
            ax.legend()
        _save_figure(fig, path)
    finally:
        plt.close(fig)
