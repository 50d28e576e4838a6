"""A tiny int8 emotion model for tests, made in seconds from procedural faces.

The edge daemon never imports TensorFlow, but its tests need a real .tflite classifier with a contract
sidecar. This helper trains a small Keras CNN (Rescaling first, as the preprocessing contract requires)
on `tests/support/fakefaces.py` faces, converts it to a full-int8 TFLite model (int8 input and output) the same way
`emotion-convert` does, and writes the contract JSON next to it. TensorFlow is imported lazily.

Edge tests do not train it: they use the copy checked in as `tests/data/tiny.tflite` (+ `tiny.json`), which
`tests/data/make_tiny_model.py` made with `tiny_tflite`, so they run without TensorFlow.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

from edge.align import DEFAULT_BOX_MARGIN, DEFAULT_FRAMING
from edge.files import write_bytes_atomic
from edge.model_contract import ModelContract, save_contract
from tests.support.fakefaces import FER_LABELS, make_faces

INPUT_SIZE = 48
MODEL_NAME = "tiny.tflite"
CHECKED_IN = (
    Path(__file__).resolve().parents[1] / "data" / MODEL_NAME
)  # made by tests/data/make_tiny_model.py

# One build per process: (labels tuple) -> model path. Tests share it through the session fixture.
_CACHE: dict[tuple[str, ...], Path] = {}


def build_tiny_keras(labels=FER_LABELS, size: int = INPUT_SIZE):
    """A small CNN that takes raw uint8-valued pixels (N, size, size, 1) and outputs softmax probabilities."""
    import keras

    return keras.Sequential(
        [
            keras.Input((size, size, 1)),
            keras.layers.Rescaling(1.0 / 255),  # scaling lives inside the model (preprocessing contract)
            keras.layers.Conv2D(8, 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),  # keeps where the brows/mouth are: pooling it away loses the class
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dense(len(labels), activation="softmax"),
        ]
    )


def _train(labels, seed: int):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import tensorflow as tf

    # The test machine is shared: keep TensorFlow to a couple of threads.
    try:
        tf.config.threading.set_intra_op_parallelism_threads(2)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:  # already initialised by an earlier test: keep its settings
        pass
    keras.utils.set_random_seed(seed)
    images, targets = make_faces(60, labels, seed=seed)
    x = images[..., np.newaxis].astype(np.float32)
    model = build_tiny_keras(labels)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy")
    model.fit(x, targets, epochs=30, batch_size=32, verbose=0)
    return model, x


def _to_int8_tflite(model, representative: np.ndarray) -> bytes:
    import tensorflow as tf

    def representative_data():
        for i in range(min(len(representative), 100)):
            yield [representative[i : i + 1]]

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative_data
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    return converter.convert()


def tiny_tflite(tmp_dir: str | os.PathLike, labels=FER_LABELS, seed: int = 0) -> Path:
    """Path to a trained full-int8 `tiny.tflite` (+ `tiny.json` contract); built once per session.

    `tmp_dir` is where the first call writes it; later calls return the same file.
    """
    key = tuple(labels)
    cached = _CACHE.get(key)
    if cached is not None and cached.exists() and cached.with_suffix(".json").exists():
        return cached
    model, x = _train(list(labels), seed)
    folder = Path(tmp_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / MODEL_NAME if key == tuple(FER_LABELS) else folder / f"tiny_{len(_CACHE)}.tflite"
    write_bytes_atomic(path, _to_int8_tflite(model, x))
    contract = ModelContract(
        labels=list(labels),
        input_height=INPUT_SIZE,
        input_width=INPUT_SIZE,
        crop_margin=DEFAULT_BOX_MARGIN,  # framed as emotion-train frames every model
        framing=DEFAULT_FRAMING.to_dict(),
        arch="tests-tiny-cnn",
        extra={"trained_on": "tests/fakefaces.py", "purpose": "tests only"},
    )
    save_contract(path, contract)
    _CACHE[key] = path
    return path


def checked_in_copy(folder: str | os.PathLike) -> Path:
    """The checked-in `tests/data/tiny.tflite` and its contract, copied into `folder` (a test may write
    beside its model; the repository's copy stays as committed). Needs no TensorFlow."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for suffix in (".tflite", ".json"):
        shutil.copyfile(CHECKED_IN.with_suffix(suffix), folder / f"{CHECKED_IN.stem}{suffix}")
    return folder / CHECKED_IN.name
