"""One place that finds a TFLite interpreter: ai-edge-litert, else tflite-runtime, else TensorFlow's.

The daemon, the BlazeFace detector and `emotion-convert evaluate` all load models here, so what is
measured on the workstation is what the Pi runs.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os

log = logging.getLogger(__name__)

# (module, attribute path to the Interpreter class, name for the log). Order is preference.
_BACKENDS = [
    ("ai_edge_litert.interpreter", "Interpreter", "ai-edge-litert"),
    ("tflite_runtime.interpreter", "Interpreter", "tflite-runtime"),
    ("tensorflow.lite", "Interpreter", "tensorflow.lite"),
]


class ModelLoadError(RuntimeError):
    """The model file cannot be used; the message names the file and the reason."""


def _find_interpreter_class():
    errors = []
    for module_name, attribute, label in _BACKENDS:
        try:
            module = importlib.import_module(module_name)
        except (
            Exception
        ) as exc:  # an installed-but-broken backend (e.g. tflite-runtime on NumPy 2) is skipped
            errors.append(f"{label}: {type(exc).__name__}: {exc}")
            continue
        return getattr(module, attribute), label
    raise ModelLoadError(
        "no TFLite interpreter is installed: pip install ai-edge-litert (64-bit, Python 3.10-3.13) "
        "or tflite-runtime (Python <= 3.11, with numpy<2). Tried: " + "; ".join(errors)
    )


def _runtime_info(line: bytes) -> bool:
    """TFLite's own INFO lines ("INFO: Created TensorFlow Lite XNNPACK delegate for CPU."): its C++ logger
    prints them on every start, with no setting to turn them off. Its WARNING and ERROR lines are kept."""
    return line.startswith(b"INFO: ")


def _quiet_runtime():
    """Loading without the runtime's INFO lines on stderr, unless the log level is DEBUG."""
    if log.isEnabledFor(logging.DEBUG):
        return contextlib.nullcontext()
    from edge.logs import native_stderr_filtered

    return native_stderr_filtered(_runtime_info)


def backend_name() -> str:
    return _find_interpreter_class()[1]


def load_interpreter(model_path: str | os.PathLike, num_threads: int | None = None):
    """Load and allocate a .tflite model. Returns (interpreter, backend name)."""
    path = os.fspath(model_path)
    if not os.path.isfile(path):
        raise ModelLoadError(f"model file {path} does not exist")
    with open(path, "rb") as handle:
        header = handle.read(8)
    # Every TFLite flatbuffer carries the file identifier "TFL3" at bytes 4..8.
    if len(header) < 8 or header[4:8] != b"TFL3":
        raise ModelLoadError(f"{path} is not a TFLite model (no TFL3 identifier)")
    interpreter_class, label = _find_interpreter_class()
    try:
        with _quiet_runtime():
            interpreter = interpreter_class(model_path=path, num_threads=num_threads)
            interpreter.allocate_tensors()
    except Exception as exc:
        raise ModelLoadError(f"{path} could not be loaded by {label}: {exc}") from None
    log.debug("loaded %s with %s (%s threads)", path, label, num_threads)
    return interpreter, label
