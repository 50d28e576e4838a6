"""Finding, checking and loading the models convert/ works on, and matching their labels to a data set.

Cheap checks (does the file exist, is it a zip, is there a contract) run before Keras is imported, so a
typo in a path fails in a fraction of a second instead of after TensorFlow's start-up.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np

from convert.errors import ConvertError
from edge.model_contract import ModelContract, load_contract, sidecar_path


def resolve_keras_path(model: str | os.PathLike) -> Path:
    """A `.keras` file, or a run dir from `emotion-train` (its `model.keras`)."""
    path = Path(model)
    if path.is_dir():
        candidate = path / "model.keras"
        if not candidate.is_file():
            raise ConvertError(f"{path} is a folder without model.keras (expected an emotion-train run dir)")
        path = candidate
    if not path.exists():
        raise ConvertError(f"model {path} does not exist")
    if path.suffix == ".tflite":
        raise ConvertError(
            f"{path} is already a TFLite model; convert needs the Keras model (.keras or run dir)"
        )
    if path.suffix != ".keras":
        raise ConvertError(f"{path} is not a Keras model: expected a .keras file or an emotion-train run dir")
    # A .keras file is a zip archive (config.json + weights); anything else would fail deep inside Keras.
    if not zipfile.is_zipfile(path):
        raise ConvertError(f"{path} is not a Keras model file (a .keras file is a zip archive; this is not)")
    return path


def resolve_eval_path(model: str | os.PathLike) -> tuple[Path, str]:
    """For `evaluate`: (path, kind) with kind "tflite" or "keras"."""
    path = Path(model)
    if path.suffix == ".tflite" and not path.is_dir():
        if not path.is_file():
            raise ConvertError(f"model {path} does not exist")
        return path, "tflite"
    return resolve_keras_path(path), "keras"


def has_contract(model_path: Path) -> bool:
    return sidecar_path(model_path).is_file()


def contract_for(model_path: Path) -> ModelContract:
    """The model's sidecar contract; a malformed one is an error (ContractError), never silently ignored."""
    return load_contract(model_path)


def require_tensorflow() -> None:
    """Converting runs TensorFlow's TFLite converter, whatever backend trained the model."""
    from train.backend import installed

    if not installed("tensorflow"):
        raise ConvertError(
            "converting needs TensorFlow's TFLite converter, and TensorFlow is not installed here; "
            "pip install '.[train]' (a run dir trained on JAX or torch converts there unchanged)"
        )


def load_keras_model(path: Path):
    """Load without compiling (we only run inference) and turn Keras' errors into one readable line."""
    from train.backend import BackendError, choose_backend

    try:
        choose_backend()  # evaluating a .keras needs Keras on any backend; only converting needs TensorFlow
    except BackendError as exc:
        raise ConvertError(f"cannot load {path}: {exc}") from None
    import keras

    try:
        model = keras.saving.load_model(path, compile=False)
    except Exception as exc:  # Keras raises many types for a broken archive or unknown layers
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConvertError(f"{path} could not be loaded as a Keras model: {first_line}") from None
    return as_float32(model)


def _float32_policies(config):
    """The config with every layer's dtype policy float32 (mixed_bfloat16 -> float32)."""
    if isinstance(config, dict):
        if config.get("class_name") == "DTypePolicy" and isinstance(config.get("config"), dict):
            return {**config, "config": {**config["config"], "name": "float32"}}
        return {key: _float32_policies(value) for key, value in config.items()}
    if isinstance(config, list):
        return [_float32_policies(value) for value in config]
    return config


def as_float32(model):
    """A model trained under mixed precision (emotion-train --precision mixed_bfloat16) computes in bfloat16,
    which TFLite cannot convert and which is not the float reference: rebuild it in float32 with the same
    weights (mixed precision keeps its weights in float32, so nothing is lost)."""
    if all(
        getattr(layer, "dtype_policy", None) is None or layer.dtype_policy.name == "float32"
        for layer in model.layers
    ):
        return model
    import keras

    copy = keras.Model.from_config(_float32_policies(model.get_config()))
    copy.set_weights(model.get_weights())
    return copy


def face_model_shape(model, path: Path) -> tuple[tuple[int, int], int]:
    """Check the model takes one grayscale face (N, H, W, 1) and gives one (N, classes) output.

    Returns ((height, width), number of classes).
    """
    inputs, outputs = list(model.inputs), list(model.outputs)
    if len(inputs) != 1:
        raise ConvertError(f"{path} has {len(inputs)} inputs; expected one face image input (H, W, 1)")
    if len(outputs) != 1:
        raise ConvertError(f"{path} has {len(outputs)} outputs; expected one class-probability output")
    shape = tuple(inputs[0].shape)
    if len(shape) != 4 or shape[3] != 1 or not all(isinstance(d, int) for d in shape[1:3]):
        raise ConvertError(
            f"{path}: input shape {tuple(shape[1:])} is not one grayscale face image (H, W, 1)"
        )
    out_shape = tuple(outputs[0].shape)
    if len(out_shape) != 2 or not isinstance(out_shape[1], int):
        raise ConvertError(f"{path}: output shape {out_shape[1:]} is not (classes,)")
    return (int(shape[1]), int(shape[2])), int(out_shape[1])


def check_model_matches_contract(path: Path, size: tuple[int, int], classes: int, contract: ModelContract):
    if size != contract.input_size:
        raise ConvertError(
            f"{path}: the model's input is {size[0]}x{size[1]} but its contract says "
            f"{contract.input_height}x{contract.input_width}"
        )
    if classes != len(contract.labels):
        raise ConvertError(
            f"{path}: the model has {classes} outputs but its contract lists {len(contract.labels)} labels"
        )


def check_labels_match(model_labels: list[str], data_labels: list[str], model_name: str, data_name: str):
    """Same set of names; the order always comes from the model's contract, never from the data."""
    missing = sorted(set(model_labels) - set(data_labels))
    extra = sorted(set(data_labels) - set(model_labels))
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing from the data: {missing}")
        if extra:
            parts.append(f"not known to the model: {extra}")
        raise ConvertError(
            f"labels of {data_name} {sorted(data_labels)} do not match the labels of {model_name} "
            f"{list(model_labels)} ({'; '.join(parts)})"
        )


def to_model_order(targets: np.ndarray, data_labels: list[str], model_labels: list[str]) -> np.ndarray:
    """Data label indices -> indices into the model's label list (matched by name)."""
    mapping = np.array([model_labels.index(name) for name in data_labels], dtype=np.int64)
    return mapping[np.asarray(targets, dtype=np.int64)]
