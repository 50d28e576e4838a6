"""TensorFlow's start-up without its chatter, for emotion-train and emotion-convert.

On import TensorFlow's C++ side writes lines of its own to stderr before its logging is set up, so
TF_CPP_MIN_LOG_LEVEL cannot hold them back: "All log messages before absl::InitializeLog() ...", oneDNN's
round-off note, "Could not find cuda drivers on your machine", and on a machine without a GPU the error
"failed call to cuInit". They bury the run's own report and read like failures on every CPU-only machine.
TensorFlow is imported (and its devices listed) once here, early, with those lines dropped; its warnings
and errors, and the cuInit error where there are NVIDIA devices, still show. TF_CPP_MIN_LOG_LEVEL=0 shows
everything.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from edge.logs import native_stderr_filtered

# absl's INFO and WARNING lines ("I0000 00:00:1796185848.417986   28961 port.cc:153] ..."); E and F are kept.
_ABSL_NOTE = re.compile(rb"^[IW]\d{4} [\d:.]+ +\d+ [^\]]+\] ")
_BEFORE_INIT = b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"


def _chatter(gpu_machine: bool):
    def drop(line: bytes) -> bool:
        if _ABSL_NOTE.match(line) or line.startswith(_BEFORE_INIT):
            return True
        return not gpu_machine and b"failed call to cuInit" in line  # no GPU to initialise: not an error

    return drop


def quiet_tensorflow_startup() -> None:
    """Import TensorFlow and list its devices with the start-up chatter dropped. Without a usable TensorFlow
    it does nothing: a command that needs it says so when it imports it (evaluating a .tflite does not)."""
    if os.environ.get("TF_CPP_MIN_LOG_LEVEL") == "0":
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # what comes after its logging is set up
    gpu_machine = any(Path("/dev").glob("nvidia[0-9]*"))
    with native_stderr_filtered(_chatter(gpu_machine)):
        try:
            import tensorflow as tf
        except ImportError:
            return
        tf.config.list_physical_devices()
