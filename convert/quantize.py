"""Keras model -> TFLite bytes: full-integer int8 (default), float16 or float32.

int8 calibration uses real training faces that went through the preprocessing contract, fed as float32
raw pixels 0..255, exactly what the model's Rescaling(1/255) input layer sees in training. Because of that
the converter picks input scale 1 and zero point -128: the int8 input is the pixel minus 128.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from convert.errors import ConvertError

log = logging.getLogger(__name__)

MODES = ("int8", "float16", "float32")
METADATA_NAME = "emotion_edge_contract"


def calibration_batches(images: np.ndarray) -> Iterator[list[np.ndarray]]:
    """uint8 faces (N, H, W) or (N, H, W, 1) -> one float32 (1, H, W, 1) batch at a time."""
    faces = images if images.ndim == 4 else images[..., np.newaxis]
    for face in faces:
        yield [face[np.newaxis].astype(np.float32)]


def _configure(converter, mode: str, calibration: np.ndarray | None, allow_float: bool = False):
    import tensorflow as tf

    if mode == "int8":
        if calibration is None or len(calibration) == 0:
            raise ConvertError("int8 conversion needs calibration images")
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: calibration_batches(calibration)
        # Int8 kernels only: an op without one makes the converter fail instead of quietly staying float.
        # With allow_float the float builtins are a fallback, and graph_check names what fell back.
        ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.target_spec.supported_ops = ops + ([tf.lite.OpsSet.TFLITE_BUILTINS] if allow_float else [])
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    elif mode == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif mode != "float32":
        raise ConvertError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
    return converter


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _quietly(action):
    """Run `action` with its stdout captured: Keras prints a page of SavedModel signatures per conversion."""
    captured = io.StringIO()
    with contextlib.redirect_stdout(captured), warnings.catch_warnings():
        # Raised for every int8 conversion from Keras; calibration supplies those statistics.
        warnings.filterwarnings("ignore", message="Statistics for quantized inputs were expected")
        result = action()
    log.debug("converter output:\n%s", captured.getvalue())
    return result


def convert_model(
    model, mode: str = "int8", calibration: np.ndarray | None = None, allow_float: bool = False
) -> tuple[bytes, str]:
    """Returns (tflite bytes, the route that worked: "from_keras_model" or "from_saved_model")."""
    import tensorflow as tf

    try:
        converter = _configure(
            tf.lite.TFLiteConverter.from_keras_model(model), mode, calibration, allow_float
        )
        return _quietly(converter.convert), "from_keras_model"
    except ConvertError:
        raise
    except Exception as exc:  # some Keras 3 graphs only convert through an exported SavedModel
        keras_error = _first_line(exc)
        log.warning("from_keras_model failed (%s); retrying through a SavedModel export", keras_error)
    with tempfile.TemporaryDirectory(prefix="emotion-convert-") as workdir:
        saved = Path(workdir) / "saved_model"
        try:
            _quietly(lambda: model.export(str(saved), format="tf_saved_model", verbose=False))
            converter = _configure(
                tf.lite.TFLiteConverter.from_saved_model(str(saved)), mode, calibration, allow_float
            )
            return _quietly(converter.convert), "from_saved_model"
        except ConvertError:
            raise
        except Exception as exc:
            hint = ""
            if mode == "int8" and not allow_float:
                hint = " (if an op has no int8 kernel, --allow-float-fallback keeps it in float)"
            raise ConvertError(
                f"TFLite conversion failed: from_keras_model: {keras_error}; "
                f"from_saved_model: {_first_line(exc)}{hint}"
            ) from None


def embed_metadata(tflite: bytes, name: str, payload: bytes) -> bytes:
    """Add a named metadata buffer to the flatbuffer, so the contract also travels inside the .tflite.

    The sidecar JSON stays what the daemon reads; this copy is for anyone who finds a lone .tflite.
    """
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(tflite))
    model.metadata = [m for m in (model.metadata or []) if m.name.decode() != name]
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(payload, dtype=np.uint8)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name = name
    entry.buffer = len(model.buffers) - 1
    model.metadata.append(entry)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def read_metadata(tflite: bytes, name: str) -> bytes | None:
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(tflite))
    for entry in model.metadata or []:
        if entry.name.decode() == name:
            return bytes(np.asarray(model.buffers[entry.buffer].data, dtype=np.uint8))
    return None
