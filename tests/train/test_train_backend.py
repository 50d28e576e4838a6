"""Choosing the Keras backend before Keras is imported (train/backend.py).

Which backends are installed is faked here (this venv has TensorFlow); a real JAX-only install is run end to
end in tests/train/test_train_pipeline_numpy.py.
"""

from __future__ import annotations

import json

import pytest

from train import backend
from train.backend import BackendError, choose_backend


@pytest.fixture
def installed(monkeypatch, tmp_path):
    """Pretend exactly the given modules are installed; keras.json lives in an empty KERAS_HOME."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    present: set[str] = set()
    monkeypatch.setattr(backend, "installed", lambda name: name in present)
    return present


def _keras_json(tmp_path, name: str) -> None:
    (tmp_path / "keras.json").write_text(json.dumps({"floatx": "float32", "backend": name}))


def test_tensorflow_installed_and_nothing_named_leaves_keras_alone(installed):
    installed.update({"keras", "tensorflow", "jax"})
    environ: dict[str, str] = {}
    assert choose_backend(environ) is None and environ == {}


def test_without_tensorflow_an_installed_backend_is_chosen_and_said(installed, tmp_path):
    installed.update({"keras", "torch"})
    environ: dict[str, str] = {}
    note = choose_backend(environ)
    assert environ == {"KERAS_BACKEND": "torch"}
    assert "TensorFlow is not installed" in note and "torch" in note and "KERAS_BACKEND" in note
    # keras.json saying "tensorflow" is what Keras writes by itself on first import: it falls back the same.
    _keras_json(tmp_path, "tensorflow")
    installed.add("jax")
    environ = {}
    assert "jax" in choose_backend(environ) and environ == {"KERAS_BACKEND": "jax"}


def test_a_backend_the_user_named_is_never_swapped(installed, tmp_path):
    installed.update({"keras", "jax"})
    with pytest.raises(BackendError, match=r"KERAS_BACKEND=torch, but torch is not installed.*\[train-jax\]"):
        choose_backend({"KERAS_BACKEND": "torch"})
    environ = {"KERAS_BACKEND": "jax"}
    assert choose_backend(environ) is None and environ == {"KERAS_BACKEND": "jax"}
    _keras_json(tmp_path, "torch")
    with pytest.raises(BackendError, match="keras.json names the torch backend, but torch is not installed"):
        choose_backend({})
    _keras_json(tmp_path, "jax")
    environ = {}
    assert choose_backend(environ) is None and environ == {}  # Keras reads keras.json itself


def test_no_keras_or_no_backend_says_what_to_install(installed):
    with pytest.raises(BackendError, match=r"Keras is not installed; .*pip install '\.\[train\]'"):
        choose_backend({})
    installed.add("keras")
    with pytest.raises(BackendError, match="no Keras backend is installed"):
        choose_backend({})


def test_an_unreadable_keras_json_counts_as_no_choice(installed, tmp_path):
    installed.update({"keras", "jax"})
    (tmp_path / "keras.json").write_text("{not json")
    environ: dict[str, str] = {}
    assert "jax" in choose_backend(environ) and environ == {"KERAS_BACKEND": "jax"}
