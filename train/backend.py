"""Which Keras backend a training run uses, decided before Keras is first imported.

Keras picks its backend once, at import: KERAS_BACKEND, else the "backend" in keras.json, else TensorFlow.
On a machine set up with `pip install '.[train-jax]'` (no TensorFlow) and KERAS_BACKEND left unset, that
import dies deep inside Keras with "No module named 'tensorflow'". Here the backend Keras would pick is
checked first: if it is not installed and the user did not name it, an installed one is used instead (and
said so); if the user named it, or none is installed, the run stops with a message saying what to install.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

BACKENDS = ("tensorflow", "jax", "torch")  # the order a missing default falls back in
INSTALL_HINT = "in the emotion-edge checkout, pip install '.[train]' (TensorFlow) or '.[train-jax]' (JAX)"


class BackendError(Exception):
    """No usable Keras backend; the message says what to install or set."""


def installed(module: str) -> bool:
    """Whether `module` can be imported here, found without importing it (TensorFlow takes seconds)."""
    return importlib.util.find_spec(module) is not None


def _configured_backend() -> str | None:
    """The backend named in keras.json ($KERAS_HOME, else ~/.keras), if the file names one."""
    home = Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras")
    try:
        backend = json.loads((home / "keras.json").read_text()).get("backend")
    except (OSError, ValueError, AttributeError):
        return None
    return backend if isinstance(backend, str) else None


def choose_backend(environ: dict[str, str] | None = None) -> str | None:
    """Make sure Keras will import with an installed backend; returns a note when it chose one itself.

    Call before anything imports Keras. Sets environ["KERAS_BACKEND"] only when falling back.
    """
    environ = os.environ if environ is None else environ
    if not installed("keras"):
        raise BackendError(f"Keras is not installed; {INSTALL_HINT}")
    named = environ.get("KERAS_BACKEND")
    if named:
        if named in BACKENDS and not installed(named):
            raise BackendError(f"KERAS_BACKEND={named}, but {named} is not installed; {INSTALL_HINT}")
        return None
    # keras.json is written with "tensorflow" by Keras itself on its first import, so a "tensorflow" there
    # is as likely Keras's default as the user's choice: it falls back like the default does.
    wanted = _configured_backend() or "tensorflow"
    if wanted not in BACKENDS or installed(wanted):
        return None  # a backend this module does not know is Keras's to check
    if wanted != "tensorflow":
        raise BackendError(
            f"keras.json names the {wanted} backend, but {wanted} is not installed; {INSTALL_HINT}"
        )
    for backend in BACKENDS:
        if installed(backend):
            environ["KERAS_BACKEND"] = backend
            return (
                f"TensorFlow is not installed: training on Keras's {backend} backend "
                "(set KERAS_BACKEND to choose)"
            )
    raise BackendError(f"no Keras backend is installed; {INSTALL_HINT}")
