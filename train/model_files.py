"""Trained models named on the command line (`--teacher`, `--init`): where the .keras file is, whether it fits
the data, and loading it, each failure raised as the caller's error type with the flag and path named.

The fit is read from the model's contract (model.json beside it) before Keras loads anything, so a wrong
model is refused before the run directory is created.
"""

from __future__ import annotations

from pathlib import Path

from edge.model_contract import ContractError, load_contract


def split_specs(spec: str) -> list[str]:
    """ "runs/a, runs/b/model.keras" -> ["runs/a", "runs/b/model.keras"]; empty parts are dropped."""
    return [part for part in (p.strip() for p in spec.split(",")) if part]


def resolve_model_file(spec: str, flag: str, error: type[Exception], missing_hint: str = "") -> Path:
    """A run directory means its best model, model.keras; a .keras file is taken as it is."""
    path = Path(spec).expanduser()
    if path.is_dir():
        path = path / "model.keras"
    if not path.exists():
        raise error(f"{flag} {spec}: {path} does not exist{missing_hint}")
    if path.suffix != ".keras" or not path.is_file():
        raise error(f"{flag} {spec}: expected a run directory or a .keras model")
    return path


def check_fits_data(path: Path, labels: list[str], size: int, flag: str, error: type[Exception]) -> None:
    """The model must predict the data's labels, in the same order, from the run's input size."""
    try:
        contract = load_contract(path)
    except ContractError as exc:
        raise error(f"{flag} {path}: {exc}") from None
    if list(contract.labels) != list(labels):
        raise error(
            f"{flag} {path} predicts {contract.labels}, but the data's labels are {labels}: "
            "it must be trained on the same labels in the same order"
        )
    if contract.input_size != (size, size):
        raise error(
            f"{flag} {path} takes {contract.input_height}x{contract.input_width} faces, "
            f"this run {size}x{size} (--size)"
        )


def load_model_file(path: Path, flag: str, error: type[Exception]):
    """The Keras model in `path`, uncompiled."""
    import keras

    try:
        return keras.models.load_model(path, compile=False)
    except Exception as exc:  # Keras raises many types for a damaged or foreign file
        raise error(f"{flag} {path} cannot be loaded: {exc}") from None
