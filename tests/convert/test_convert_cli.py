"""emotion-convert end to end: a small CNN trained on generated faces, converted to int8, read back.

One model is trained per module (seconds) and converted once; every test reuses them. The int8 checks read
the real .tflite through ai-edge-litert, the interpreter the daemon uses.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from tests.support.fakefaces import FER_LABELS, write_folder_dataset

pytestmark = pytest.mark.slow

SAMPLES = 140


def _small_cnn(num_classes: int):
    import keras

    return keras.Sequential(
        [
            keras.Input((48, 48, 1)),
            keras.layers.Rescaling(1.0 / 255),  # raw pixels in, as the preprocessing contract requires
            keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),  # keeps where a stroke is (brow vs mouth), which pooling it away would lose
            keras.layers.Dropout(0.3),
            keras.layers.Dense(num_classes, activation="softmax"),
        ]
    )


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("convert")


@pytest.fixture(scope="module")
def cache_dir(workdir):
    return str(workdir / "cache")


@pytest.fixture(scope="module")
def data_dir(workdir):
    return write_folder_dataset(workdir / "faces", splits={"train": 40, "test": 12})


@pytest.fixture(scope="module")
def dataset(data_dir, cache_dir):
    from train.data import load_dataset

    return load_dataset(data_dir, cache_dir=cache_dir)


@pytest.fixture(scope="module")
def keras_model_path(workdir, dataset):
    """model.keras + model.json (contract), trained until it clearly learned the generated faces."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    from edge.model_contract import ModelContract, save_contract

    keras.utils.set_random_seed(0)
    train = dataset.splits["train"]
    model = _small_cnn(len(dataset.labels))
    model.compile(optimizer=keras.optimizers.Adam(2e-3), loss="sparse_categorical_crossentropy")
    model.fit(train.images[..., None].astype(np.float32), train.labels, epochs=30, batch_size=32, verbose=0)
    run_dir = workdir / "run"
    run_dir.mkdir()
    path = run_dir / "model.keras"
    model.save(path)
    save_contract(path, ModelContract(labels=list(dataset.labels), arch="test-cnn", extra={"origin": "test"}))
    return path


@pytest.fixture(scope="module")
def float_probs(keras_model_path, dataset):
    import keras

    model = keras.saving.load_model(keras_model_path, compile=False)
    return model.predict(dataset.splits["test"].images[..., None].astype(np.float32), verbose=0)


@pytest.fixture(scope="module")
def converted(workdir, keras_model_path, data_dir, cache_dir):
    """The CLI's int8 conversion of the run dir (in-process: the same main() the entry point calls)."""
    from convert.cli import main

    out = workdir / "out" / "emotion.tflite"
    out.parent.mkdir()
    code = main(
        [
            str(keras_model_path.parent),
            "--data",
            str(data_dir),
            "--out",
            str(out),
            "--samples",
            str(SAMPLES),
            "--cache-dir",
            cache_dir,
        ]
    )
    assert code == 0
    return out


def test_the_float_model_learned(float_probs, dataset):
    accuracy = np.mean(float_probs.argmax(1) == dataset.splits["test"].labels)
    assert accuracy > 0.6  # chance is 1/7: the fixtures below compare against a model that works


def test_int8_model_is_integer_end_to_end(converted):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(converted))
    interpreter.allocate_tensors()
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    assert inp["dtype"] == np.int8 and out["dtype"] == np.int8
    scale, zero_point = inp["quantization"]
    assert scale == pytest.approx(1.0, abs=0.01) and zero_point == -128  # int8 input = pixel - 128
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    ops = interpreter._get_ops_details()
    assert {op["op_name"] for op in ops} >= {"CONV_2D", "FULLY_CONNECTED"}
    for op in ops:
        assert op["op_name"] not in {"QUANTIZE", "DEQUANTIZE"}, op
        for index in [*op["inputs"], *op["outputs"]]:
            if index >= 0:
                assert tensors[index]["dtype"] in (np.int8, np.int32), (op["op_name"], tensors[index]["name"])


def test_int8_accuracy_close_to_float(converted, dataset, float_probs):
    from edge.classify import EmotionClassifier

    test = dataset.splits["test"]
    classifier = EmotionClassifier(converted, num_threads=1)
    int8_probs = classifier.classify(test.images[..., None])
    float_acc = np.mean(float_probs.argmax(1) == test.labels)
    int8_acc = np.mean(int8_probs.argmax(1) == test.labels)
    assert int8_acc > 0.6
    assert abs(float_acc - int8_acc) <= 0.05
    assert np.mean(int8_probs.argmax(1) == float_probs.argmax(1)) >= 0.9


def test_contract_travels_to_what_the_daemon_reads(converted, keras_model_path):
    from convert.quantize import METADATA_NAME, read_metadata
    from edge.classify import EmotionClassifier
    from edge.files import file_sha256
    from edge.model_contract import load_contract

    source = load_contract(keras_model_path)
    classifier = EmotionClassifier(converted)
    assert classifier.labels == source.labels
    assert classifier.input_size == source.input_size
    contract = classifier.contract
    assert contract.crop_margin == source.crop_margin and contract.arch == source.arch
    assert contract.extra["mode"] == "int8"
    assert contract.extra["calibration_samples"] == SAMPLES
    assert contract.extra["source_model"] == str(keras_model_path)
    assert contract.extra["full_integer"] is True
    assert contract.extra["verification"]["split"] == "test"
    embedded = json.loads(read_metadata(converted.read_bytes(), METADATA_NAME))
    assert embedded["labels"] == source.labels and embedded["extra"]["mode"] == "int8"
    # The sidecar carries the converted file's own checksum, which the daemon checks; the embedded copy none.
    assert classifier.checked and contract.sha256 == file_sha256(converted) != source.sha256
    assert "sha256" not in embedded


def test_evaluate_pair_writes_json_that_matches_a_recomputation(
    converted, keras_model_path, data_dir, dataset, float_probs, cache_dir, tmp_path, capsys
):
    from convert.cli import main
    from edge.classify import EmotionClassifier
    from train.metrics import classification_report

    out = tmp_path / "eval.json"
    args = [
        "evaluate",
        "--model",
        str(keras_model_path),
        "--compare",
        str(converted),
        "--data",
        str(data_dir),
    ]
    code = main([*args, "--json", str(out), "--tta-flip", "--timing-runs", "30", "--cache-dir", cache_dir])
    assert code == 0
    result = json.loads(out.read_text())
    test = dataset.splits["test"]
    float_report = classification_report(test.labels, float_probs.argmax(1), dataset.labels)
    assert result["split"] == "test"
    assert result["accuracy"] == pytest.approx(float_report["accuracy"])
    assert result["macro_f1"] == pytest.approx(float_report["macro_f1"])
    int8_pred = EmotionClassifier(converted).classify(test.images[..., None]).argmax(1)
    int8_report = classification_report(test.labels, int8_pred, dataset.labels)
    second = result["compare"]["model"]
    assert second["accuracy"] == pytest.approx(int8_report["accuracy"])
    assert second["macro_f1"] == pytest.approx(int8_report["macro_f1"])
    assert second["confusion"] == int8_report["confusion"]
    assert result["compare"]["agreement"] == pytest.approx(np.mean(int8_pred == float_probs.argmax(1)))
    assert result["compare"]["accuracy_drop"] == pytest.approx(result["accuracy"] - second["accuracy"])
    assert second["backend"] == "ai-edge-litert"
    assert second["size_bytes"] == converted.stat().st_size
    assert (
        second["latency_ms"]["runs"] == 30
        and 0 < second["latency_ms"]["median"] <= second["latency_ms"]["p95"]
    )
    assert 0.0 <= second["tta_flip"]["accuracy"] <= 1.0
    printed = capsys.readouterr().out
    assert "agreement" in printed and "emotion.tflite" in printed


def test_float32_mode_is_caught_by_the_int8_check(keras_model_path, data_dir, cache_dir, tmp_path):
    """The graph check itself must see float ops in a real file, or it proves nothing for int8 models."""
    from convert.cli import main
    from convert.errors import ConvertError
    from convert.graph_check import inspect_tflite, require_full_integer

    out = tmp_path / "float.tflite"
    args = [str(keras_model_path), "--data", str(data_dir), "--out", str(out), "--mode", "float32"]
    assert main([*args, "--no-verify", "--cache-dir", cache_dir]) == 0
    report = inspect_tflite(out)
    assert report.input_dtypes == ["float32"] and not report.full_integer
    assert any(name.startswith("CONV_2D") for name in report.float_ops)
    with pytest.raises(ConvertError, match="float op CONV_2D"):
        require_full_integer(report, allow_float_fallback=False)
    assert require_full_integer(report, allow_float_fallback=True)  # tolerated, but still listed


def test_bare_keras_file_takes_labels_from_the_data(keras_model_path, data_dir, cache_dir, tmp_path, capsys):
    import shutil

    from convert.cli import main
    from edge.model_contract import load_contract

    bare = tmp_path / "bare.keras"
    shutil.copy(keras_model_path, bare)
    out = tmp_path / "bare.tflite"
    assert (
        main(
            [
                str(bare),
                "--data",
                str(data_dir),
                "--out",
                str(out),
                "--no-verify",
                "--samples",
                "35",
                "--cache-dir",
                cache_dir,
            ]
        )
        == 0
    )
    assert "bare.json is missing" in capsys.readouterr().err
    assert load_contract(out).labels == sorted(FER_LABELS)


def test_saved_model_route_when_from_keras_model_fails(keras_model_path, dataset, monkeypatch):
    """Some Keras 3 graphs only convert through an exported SavedModel: the fallback must give the same model."""
    import keras
    import tensorflow as tf

    from convert.quantize import convert_model

    def refuse(model):
        raise ValueError("simulated from_keras_model failure")

    monkeypatch.setattr(tf.lite.TFLiteConverter, "from_keras_model", staticmethod(refuse))
    model = keras.saving.load_model(keras_model_path, compile=False)
    tflite, route = convert_model(model, "int8", dataset.splits["train"].images[:35])
    assert route == "from_saved_model"
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=tflite)
    assert interpreter.get_input_details()[0]["dtype"] == np.int8
    assert interpreter.get_output_details()[0]["dtype"] == np.int8


def test_evaluate_reads_fer_csv_by_label_name(converted, tmp_path, cache_dir):
    """fer2013.csv numbers its classes 0 angry .. 6 neutral; the model's order is alphabetical. Labels meet by
    name, so the csv must score like the folder data of the same faces would, far above chance."""
    from convert.cli import main
    from tests.support.fakefaces import write_fer_csv

    csv_path = write_fer_csv(tmp_path / "fer2013.csv", {"Training": 2, "PublicTest": 12}, seed=3)
    out = tmp_path / "csv_eval.json"
    args = ["evaluate", "--model", str(converted), "--data", str(csv_path), "--json", str(out)]
    assert main([*args, "--timing-runs", "0", "--cache-dir", cache_dir]) == 0
    result = json.loads(out.read_text())
    assert result["split"] == "test" and result["count"] == 12 * 7
    assert result["accuracy"] > 0.6
    assert "latency_ms" not in result
