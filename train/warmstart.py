"""Warm start (`emotion-train --init RUN`): begin a run from a trained model's weights instead of random ones.

Uses: a second, shorter learning-rate cycle on a finished run (with --teacher, that is distilling an
ensemble back into one of its members), or fine-tuning the shipped FER model on faces of your own with the
same labels. Only the weights carry over; the optimizer, the schedule and the epoch count start afresh, and
the run directory records `init` in config.json so the next stage knows where the weights came from. An int8
.tflite (the shipped edge/models/default.tflite) works too: its weights are dequantized (train/tflite_init.py).
"""

from __future__ import annotations

from pathlib import Path

from train.model_files import check_fits_data, load_model_file, resolve_model_file


class InitError(ValueError):
    """The --init model is missing, unreadable, or not the model this run builds; the message says which."""


def init_model_path(spec: str) -> Path:
    """A run directory means its best model, model.keras; a .keras or an int8 .tflite file is taken as it is
    (the shipped model exists only as .tflite: train/tflite_init.py recovers its float weights)."""
    path = Path(spec).expanduser()
    if path.suffix == ".tflite":
        if not path.is_file():
            raise InitError(f"--init {spec}: {path} does not exist")
        return path
    return resolve_model_file(spec, "--init", InitError)


def check_init_contract(path: Path, labels: list[str], size: int) -> None:
    """Before anything is written: the model must predict the data's labels, in order, from the same size."""
    check_fits_data(path, labels, size, "--init", InitError)


def copy_weights(model, path: Path, faces=None, seed: int = 0) -> str:
    """Load `path` and copy its weights into `model`, refusing a model of another architecture or width.

    A .tflite's BatchNorms are rebuilt with statistics measured on `faces` (uint8 training crops). Returns a
    note on how the weights were recovered ("" for a .keras)."""
    if path.suffix == ".tflite":
        from train.tflite_init import TfliteInitError, copy_tflite_weights

        try:
            done = copy_tflite_weights(model, path, faces, seed)
        except TfliteInitError as exc:
            raise InitError(str(exc)) from None
        return (
            f" (dequantized from int8: {done['layers']} kernels, {done['batchnorms']} BatchNorms rebuilt "
            f"on {done['faces']} training faces)"
        )
    source = load_model_file(path, "--init", InitError)
    theirs = [tuple(w.shape) for w in source.weights]
    ours = [tuple(w.shape) for w in model.weights]
    if theirs != ours:
        raise InitError(
            f"--init {path} is a different network ({len(theirs)} weight tensors, {source.count_params():,} "
            f"parameters) from the one this run builds ({len(ours)}, {model.count_params():,}); "
            "use the --arch and --width it was trained with"
        )
    model.set_weights(source.get_weights())
    return ""
