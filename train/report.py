"""The run's final artifacts: contract, metrics.json, report.txt and the two plots (all written atomically)."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import numpy as np

from edge.align import DEFAULT_BOX_MARGIN, DEFAULT_FRAMING
from edge.files import write_text_atomic
from edge.model_contract import ModelContract, save_contract
from train.metrics import classification_report, format_report, plot_confusion, plot_history


def _timing(history_rows: list[dict], train_count: int) -> dict:
    """Median seconds per epoch and training throughput (validation time excluded) over the epochs run."""
    seconds = [float(r["seconds"]) for r in history_rows if r.get("seconds")]
    val_seconds = [float(r.get("val_seconds") or 0) for r in history_rows if r.get("seconds")]
    if not seconds:
        return {"seconds_per_epoch": None, "train_images_per_second": None, "epochs_timed": 0}
    train_seconds = [max(1e-9, s - v) for s, v in zip(seconds, val_seconds, strict=True)]
    return {
        "seconds_per_epoch": round(statistics.median(seconds), 2),
        "train_images_per_second": round(train_count / statistics.median(train_seconds), 1),
        "epochs_timed": len(seconds),
    }


def write_run_artifacts(
    run_dir: Path,
    *,
    config: dict,
    dataset,
    train_count: int,
    val_name: str,
    val_labels: np.ndarray,
    val_pred: np.ndarray,
    state,
    history_rows: list[dict],
    params: int,
    macs: int,
    weight_average: dict | None = None,
    calibration: dict | None = None,
    extra_validation: dict | None = None,
    extra_skipped: int = 0,
    notes: list[str] | tuple = (),
) -> dict:
    """`extra_validation` is {name: (true labels, predictions)} of further validation sets (--photos' held-out
    half): each is reported beside the primary split, which alone chose the model."""
    run_dir = Path(run_dir)
    validation = classification_report(val_labels, val_pred, dataset.labels)
    timing = _timing(history_rows, train_count)
    metrics = {
        "validation": validation,
        "val_split": val_name,
        "arch": config["arch"],
        "params": params,
        "macs": macs,
        "epochs_run": state.epoch,
        "best_epoch": state.best_epoch + 1,
        "stopped_early": state.stopped_early,
        "train_images": train_count,
        "val_images": int(len(val_labels)),
        "skipped_files": len(dataset.skipped),
        **timing,
    }
    if extra_validation:
        metrics["validation_sources"] = {
            val_name: validation,
            **{n: classification_report(t, p, dataset.labels) for n, (t, p) in extra_validation.items()},
        }
        metrics["primary_validation"] = val_name
        metrics["skipped_files"] += extra_skipped
    if notes:
        metrics["data_notes"] = list(notes)
    if weight_average is not None:
        metrics["weight_average"] = weight_average
    if calibration is not None:
        metrics["calibration"] = calibration
    save_contract(run_dir / "model.keras", _contract(config, dataset, metrics))
    write_text_atomic(run_dir / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    plot_confusion(validation, run_dir / "confusion.png")
    plot_history(run_dir / "history.csv", run_dir / "curves.png")
    write_text_atomic(run_dir / "report.txt", _report_text(metrics, dataset, config))
    return metrics


def _contract(config: dict, dataset, metrics: dict) -> ModelContract:
    """model.json is what convert/ and the daemon read: labels in output order, input size, provenance."""
    validation, average = metrics["validation"], metrics.get("weight_average")
    calibration = metrics.get("calibration")
    # Which weights model.keras holds: one epoch's, or the mean of several (--average-last).
    if average and average["used"]:
        weights = f"average of epochs {average['epochs'][0]}-{average['epochs'][-1]}"
    else:
        weights = f"epoch {metrics['best_epoch']}"
    return ModelContract(
        labels=list(dataset.labels),
        input_height=int(config["size"]),
        input_width=int(config["size"]),
        # How the daemon cuts faces for this model: FER-2013-like framing, chosen on real photos (edge/align.py).
        crop_margin=DEFAULT_BOX_MARGIN,
        framing=DEFAULT_FRAMING.to_dict(),
        arch=config["arch"],
        extra={
            "data_source": dataset.source,
            "data_format": dataset.format,
            "val_split": metrics["val_split"],
            "val_accuracy": round(validation["accuracy"], 4),
            "val_macro_f1": round(validation["macro_f1"], 4),
            **{
                f"val_accuracy_{name}": round(source["accuracy"], 4)
                for name, source in metrics.get("validation_sources", {}).items()
                if name != metrics["val_split"]
            },
            "params": metrics["params"],
            "macs": metrics["macs"],
            "best_epoch": metrics["best_epoch"],
            "weights": weights,
            "temperature": calibration.get("temperature") if calibration else None,
        },
    )


def _report_text(metrics: dict, dataset, config: dict) -> str:
    def fmt(value, spec):
        return "n/a" if value is None else format(value, spec)

    lines = [
        f"emotion-train run: {config['out']}",
        f"data:      {dataset.source} ({dataset.format}), labels {', '.join(dataset.labels)}",
        *(
            [f"photos:    {config['photos']} (train half trained on, held-out half validated)"]
            if config.get("photos")
            else []
        ),
        f"images:    {metrics['train_images']} train, {metrics['val_images']} validation "
        f"('{metrics['val_split']}'), {metrics['skipped_files']} files skipped (unreadable, or no face)",
        *[f"labels:    {note}" for note in metrics.get("data_notes", [])],
        f"model:     {metrics['arch']}, {metrics['params']:,} parameters, {metrics['macs'] / 1e6:.1f}M MACs per face",
        f"training:  {metrics['epochs_run']} epochs"
        f"{' (stopped early)' if metrics['stopped_early'] else ''}, best epoch {metrics['best_epoch']}",
        *([describe_average(metrics["weight_average"])] if "weight_average" in metrics else []),
        *([describe_calibration(metrics["calibration"])] if "calibration" in metrics else []),
        f"speed:     {fmt(metrics['seconds_per_epoch'], '.1f')} s/epoch, "
        f"{fmt(metrics['train_images_per_second'], '.0f')} training images/s (median over "
        f"{metrics['epochs_timed']} epochs)",
        "",
        format_report(
            metrics["validation"], title=f"validation ('{metrics['val_split']}') of the saved model.keras"
        ),
        *[
            format_report(source, title=f"further validation ('{name}'), not used to choose the model")
            for name, source in metrics.get("validation_sources", {}).items()
            if name != metrics["val_split"] and "@" not in name
        ],
        *_small_face_lines(metrics),
    ]
    return "\n".join(lines)


def _small_face_lines(metrics: dict) -> list[str]:
    """One line per small-face validation ('test@32px': the validation faces as a 32 px face gives them)."""
    sources = metrics.get("validation_sources", {})
    full = metrics["validation"]
    lines = [
        f"{name:<28} accuracy {s['accuracy']:.3f} ({(s['accuracy'] - full['accuracy']) * 100:+.1f} points), "
        f"macro-F1 {s['macro_f1']:.3f}, neutral recall {s['per_class'].get('neutral', {}).get('recall', 0):.3f}"
        for name, s in sources.items()
        if "@" in name
    ]
    return (
        ["small faces (sampled down, upscaled as the daemon does), not used to choose the model", *lines]
        if lines
        else []
    )


def describe_average(average: dict) -> str:
    if len(average["epochs"]) < 2:
        return f"weight average: {average['why']}"
    first, last = average["epochs"][0], average["epochs"][-1]
    if average["used"]:
        verdict = "kept as model.keras"
    else:
        verdict = "more than one standard error worse; model.keras stays the best epoch"
    return (
        f"weight average of epochs {first}-{last} ({len(average['epochs'])} kept, BatchNorm re-estimated on "
        f"{average['bn_faces']} train faces): val accuracy {average['val_accuracy']:.4f} vs best epoch "
        f"{average['best_epoch_val_accuracy']:.4f} (standard error {average['margin']:.4f}); {verdict}"
    )


def describe_calibration(calibration: dict) -> str:
    if calibration["temperature"] is None:
        return f"calibration: skipped, {calibration['why']}"
    return (
        f"calibration: softmax temperature {calibration['temperature']:.3f} fitted on validation; mean "
        f"confidence {calibration['mean_confidence_before']:.3f} -> {calibration['mean_confidence_after']:.3f} "
        f"(accuracy {calibration['accuracy']:.3f}), expected calibration error "
        f"{calibration['ece_before']:.3f} -> {calibration['ece_after']:.3f}"
    )
