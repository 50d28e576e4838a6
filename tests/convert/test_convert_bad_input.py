"""emotion-convert on bad input: one `error: ...` line, a non-zero exit, no traceback, nothing written.

The CLI cases run as real subprocesses, as a user would start them. The model here is untrained: these tests
are about refusing input, not about accuracy (tests/convert/test_convert_cli.py covers the trained path).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.support.fakefaces import FER_LABELS, write_folder_dataset

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("convert_bad")


@pytest.fixture(scope="module")
def cache_dir(workdir):
    return str(workdir / "cache")


@pytest.fixture(scope="module")
def data_dir(workdir):
    return write_folder_dataset(workdir / "faces", splits={"train": 5, "test": 2})


@pytest.fixture(scope="module")
def keras_model_path(workdir):
    """An untrained one-face model with its contract, inside a run dir."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    from edge.model_contract import ModelContract, save_contract

    model = keras.Sequential(
        [
            keras.Input((48, 48, 1)),
            keras.layers.Rescaling(1.0 / 255),
            keras.layers.Conv2D(4, 3, strides=4, activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(len(FER_LABELS), activation="softmax"),
        ]
    )
    run_dir = workdir / "run"
    run_dir.mkdir()
    path = run_dir / "model.keras"
    model.save(path)
    save_contract(path, ModelContract(labels=sorted(FER_LABELS), arch="untrained"))
    return path


def _run_cli(*args: str, cache_dir: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "EMOTION_TRAIN_CACHE": cache_dir}
    return subprocess.run(
        [sys.executable, "-m", "convert.cli", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )


def _assert_clean_failure(result: subprocess.CompletedProcess, *words: str):
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    # TensorFlow's C++ start-up may log its own "CUDA error: ..." lines: count only ours.
    ours = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(ours) == 1, result.stderr
    message = ours[0].lower()
    for word in words:
        assert word.lower() in message, (word, result.stderr)


@pytest.fixture(scope="module")
def odd_models(workdir):
    """Keras files that are not one-face models: RGB 32x32 input, and two inputs."""
    import keras

    folder = workdir / "odd"
    folder.mkdir()
    rgb = keras.Sequential(
        [keras.Input((32, 32, 3)), keras.layers.Flatten(), keras.layers.Dense(7, "softmax")]
    )
    rgb.save(folder / "rgb.keras")
    a, b = keras.Input((48, 48, 1)), keras.Input((48, 48, 1))
    merged = keras.layers.Dense(7, activation="softmax")(keras.layers.Flatten()(keras.layers.Add()([a, b])))
    keras.Model([a, b], merged).save(folder / "two_inputs.keras")
    (folder / "notes.keras").write_text("this is a text file, not a model\n")
    (folder / "fake.tflite").write_text("not a flatbuffer\n")
    from edge.model_contract import ModelContract, save_contract

    save_contract(
        folder / "fake.tflite", ModelContract(labels=list(FER_LABELS))
    )  # so the model itself is judged
    return folder


@pytest.mark.parametrize(
    "case, words",
    [
        ("missing model", ["does not exist"]),
        ("text renamed .keras", ["notes.keras", "not a keras model"]),
        ("tflite given to convert", ["already a tflite model"]),
        ("rgb input", ["(32, 32, 3)", "grayscale face"]),
        ("two inputs", ["2 inputs"]),
        ("labels do not match", ["labels", "missing from the data"]),
        ("empty data folder", ["empty"]),
        ("output folder missing", ["does not exist"]),
        ("output parent is a file", ["does not exist"]),
    ],
)
def test_convert_rejects_bad_input_cleanly(
    case, words, workdir, keras_model_path, data_dir, odd_models, cache_dir, tmp_path
):
    from tests.support.fakefaces import write_folder_dataset as write_faces

    model, data, out = str(keras_model_path), str(data_dir), tmp_path / "x.tflite"
    if case == "missing model":
        model = str(tmp_path / "nope.keras")
    elif case == "text renamed .keras":
        model = str(odd_models / "notes.keras")
    elif case == "tflite given to convert":
        model = str(odd_models / "fake.tflite")
    elif case == "rgb input":
        model = str(odd_models / "rgb.keras")
    elif case == "two inputs":
        model = str(odd_models / "two_inputs.keras")
    elif case == "labels do not match":
        data = str(write_faces(tmp_path / "three", labels=["angry", "happy", "sad"], splits={"train": 3}))
    elif case == "empty data folder":
        (tmp_path / "empty").mkdir()
        data = str(tmp_path / "empty")
    elif case == "output folder missing":
        out = tmp_path / "no" / "such" / "x.tflite"
    elif case == "output parent is a file":
        (tmp_path / "plain").write_text("")
        out = tmp_path / "plain" / "x.tflite"
    result = _run_cli(model, "--data", data, "--out", str(out), "--samples", "20", cache_dir=cache_dir)
    _assert_clean_failure(result, *words)
    assert not out.exists() and not out.with_suffix(".json").exists()
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".x.tflite*"))


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes into read-only folders")
def test_convert_refuses_a_read_only_output_folder(keras_model_path, data_dir, cache_dir, tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        result = _run_cli(
            str(keras_model_path),
            "--data",
            str(data_dir),
            "--out",
            str(folder / "x.tflite"),
            cache_dir=cache_dir,
        )
        _assert_clean_failure(result, "not writable")
        assert list(folder.iterdir()) == []
    finally:
        folder.chmod(0o700)


def test_evaluate_rejects_bad_input_cleanly(odd_models, keras_model_path, data_dir, cache_dir, tmp_path):
    json_out = tmp_path / "e.json"
    broken = _run_cli(
        "evaluate",
        "--model",
        str(odd_models / "fake.tflite"),
        "--data",
        str(data_dir),
        "--json",
        str(json_out),
        cache_dir=cache_dir,
    )
    _assert_clean_failure(broken, "fake.tflite", "not a tflite model")
    no_split = _run_cli(
        "evaluate",
        "--model",
        str(keras_model_path),
        "--data",
        str(data_dir),
        "--split",
        "val",
        "--json",
        str(json_out),
        cache_dir=cache_dir,
    )
    _assert_clean_failure(no_split, "no 'val' split", "test", "train")
    assert not json_out.exists()


def test_convert_will_not_overwrite_the_keras_contract(keras_model_path, data_dir, cache_dir):
    out = keras_model_path.with_suffix(".tflite")  # its sidecar would be the Keras model's model.json
    before = keras_model_path.with_suffix(".json").read_bytes()
    result = _run_cli(
        str(keras_model_path.parent), "--data", str(data_dir), "--out", str(out), cache_dir=cache_dir
    )
    _assert_clean_failure(result, "overwrite", "model.json")
    assert not out.exists()
    assert keras_model_path.with_suffix(".json").read_bytes() == before


def _save_model_with_a_float_only_op(path: Path):
    """SIN has no int8 kernel: the converter keeps it in float (a Dequantize/Sin/Quantize island) even when
    told to use int8 builtins only, without an error. Only reading the graph back finds it."""
    import keras

    from edge.model_contract import ModelContract, save_contract

    @keras.saving.register_keras_serializable(package="tests_convert")
    class Sine(keras.layers.Layer):
        def call(self, x):
            return keras.ops.sin(x)

    model = keras.Sequential(
        [
            keras.Input((48, 48, 1)),
            keras.layers.Rescaling(1.0 / 255),
            keras.layers.Conv2D(4, 3, strides=4),
            Sine(),
            keras.layers.Flatten(),
            keras.layers.Dense(len(FER_LABELS), activation="softmax"),
        ]
    )
    model.save(path)
    save_contract(path, ModelContract(labels=sorted(FER_LABELS)))
    return path


def test_a_float_island_fails_int8_unless_allowed(data_dir, cache_dir, tmp_path, capsys):
    from convert.cli import main
    from edge.model_contract import load_contract

    model = str(_save_model_with_a_float_only_op(tmp_path / "sine.keras"))
    out = tmp_path / "sine_int8.tflite"
    common = [
        model,
        "--data",
        str(data_dir),
        "--out",
        str(out),
        "--samples",
        "35",
        "--no-verify",
        "--cache-dir",
        cache_dir,
    ]
    assert main(common) == 2
    err = capsys.readouterr().err
    assert "error: the int8 model is not full-integer" in err
    assert "float op SIN" in err and "DEQUANTIZE" in err and "--allow-float-fallback" in err
    assert not out.exists() and not out.with_suffix(".json").exists()

    assert main([*common, "--allow-float-fallback"]) == 0
    assert "kept despite --allow-float-fallback: float op SIN" in capsys.readouterr().err
    assert load_contract(out).extra["full_integer"] is False


def test_default_split_is_test_then_val_else_a_clear_error():
    from convert.commands import choose_eval_split
    from convert.errors import ConvertError
    from train.data import Dataset, Split

    def split(n):
        return Split(np.zeros((n, 48, 48), np.uint8), np.zeros(n, np.int64), [""] * n)

    def data(*names):
        return Dataset(["a", "b"], {name: split(3) for name in names}, "folders", "faces/", [])

    assert choose_eval_split(data("train", "val", "test"), None) == "test"
    assert choose_eval_split(data("train", "val"), None) == "val"
    assert choose_eval_split(data("train", "val", "test"), "train") == "train"
    with pytest.raises(
        ConvertError, match=r"no test or val split \(available: train\); name one with --split"
    ):
        choose_eval_split(data("train"), None)  # emotion-convert evaluate's advice: it has --split
    with pytest.raises(ConvertError, match=r"\(available: train\); give --data held-out faces"):
        choose_eval_split(data("train"), None, "give --data held-out faces")  # emotion-convert's: it has not
    with pytest.raises(ConvertError, match=r"no 'val' split \(available: test, train\)"):
        choose_eval_split(data("train", "test"), "val")


def test_evaluate_will_not_write_its_json_over_a_model_contract(keras_model_path, data_dir, cache_dir):
    """`--json model.json` next to model.keras is a natural name, and it is the model's contract."""
    contract = keras_model_path.with_suffix(".json")
    before = contract.read_bytes()
    result = _run_cli(
        "evaluate", "--model", str(keras_model_path), "--data", str(data_dir), "--json", str(contract),
        cache_dir=cache_dir,
    )  # fmt: skip
    _assert_clean_failure(result, "is the contract file of", "evaluation.json")
    assert contract.read_bytes() == before


def test_a_failed_publish_keeps_the_previous_model_and_contract_as_a_pair(tmp_path, monkeypatch):
    """A full disk while writing the contract must not leave the old contract without its model."""
    import errno

    from convert import commands
    from edge.model_contract import ModelContract

    out = tmp_path / "default.tflite"
    out.write_bytes(b"old model")
    out.with_suffix(".json").write_text('{"old": "contract"}')

    def disk_full(*_args, **_kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(commands, "save_contract", disk_full)
    with pytest.raises(commands.ConvertError, match="No space left on device"):
        commands._publish(out, b"new model", ModelContract(labels=["a", "b"]))
    assert out.read_bytes() == b"old model"
    assert out.with_suffix(".json").read_text() == '{"old": "contract"}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["default.json", "default.tflite"]  # no leftovers
