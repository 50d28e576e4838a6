"""Warm start (`emotion-train --init RUN`): begin a run from a trained model's weights instead of random ones.

Uses: a second, shorter learning-rate cycle on a finished run (with --teacher, that is distilling an
ensemble back into one of its members), or fine-tuning the shipped FER model on faces of your own with the
same labels. Only the weights carry over; the optimizer, the schedule and the epoch count start afresh, and
the run directory records `init` in config.json so the next stage knows where the weights came from.
"""

from __future__ import annotations

from pathlib import Path

from edge.model_contract import ContractError, load_contract


class InitError(ValueError):
    """The --init model is missing, unreadable, or not the model this run builds; the message says which."""


def init_model_path(spec: str) -> Path:
    """A run directory means its best model, model.keras; a .keras file is taken as it is."""
    path = Path(spec).expanduser()
    if path.is_dir():
        path = path / "model.keras"
    if not path.exists():
        raise InitError(f"--init {spec}: {path} does not exist")
    if path.suffix != ".keras" or not path.is_file():
        raise InitError(f"--init {spec}: expected a run directory or a .keras model")
    return path


def check_init_contract(path: Path, labels: list[str], size: int) -> None:
    """Before anything is written: the model must predict the data's labels, in order, from the same size."""
    try:
        contract = load_contract(path)
    except ContractError as exc:
        raise InitError(f"--init {path}: {exc}") from None
    if list(contract.labels) != list(labels):
        raise InitError(
            f"--init {path} predicts {contract.labels}, but the data's labels are {labels}; "
            "a warm start needs the same labels in the same order"
        )
    if contract.input_size != (size, size):
        raise InitError(
            f"--init {path} takes {contract.input_height}x{contract.input_width} faces, this run {size}x{size}"
        )


def copy_weights(model, path: Path) -> None:
    """Load `path` and copy its weights into `model`, refusing a model of another architecture or width."""
    import keras

    try:
        source = keras.models.load_model(path, compile=False)
    except Exception as exc:  # Keras raises many types for a damaged or foreign file
        raise InitError(f"--init {path} cannot be loaded: {exc}") from None
    theirs = [tuple(w.shape) for w in source.weights]
    ours = [tuple(w.shape) for w in model.weights]
    if theirs != ours:
        raise InitError(
            f"--init {path} is a different network ({len(theirs)} weight tensors, {source.count_params():,} "
            f"parameters) from the one this run builds ({len(ours)}, {model.count_params():,}); "
            "use the --arch and --width it was trained with"
        )
    model.set_weights(source.get_weights())
