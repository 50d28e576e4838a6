"""Knowledge distillation (train/distill.py): teacher targets in both input pipelines, and a student run."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from edge.model_contract import ModelContract, save_contract
from tests.support.fakefaces import FER_LABELS, make_faces, write_folder_dataset

keras = pytest.importorskip("keras")

from train.batches import make_train_dataset  # noqa: E402
from train.cli import main  # noqa: E402
from train.distill import (  # noqa: E402
    Teacher,
    TeacherError,
    blend_targets,
    check_teachers,
    teacher_model_paths,
)
from train.pipeline import PipelineSettings  # noqa: E402
from train.pipeline_numpy import NumpyTrainBatches  # noqa: E402


def tiny_classifier(seed: int, num_classes: int = 7) -> keras.Model:
    """A deterministic linear softmax model over raw pixels, different per seed and not mirror-symmetric."""
    rng = np.random.default_rng(seed)
    inputs = keras.Input((48, 48, 1))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Flatten()(x)
    dense = keras.layers.Dense(num_classes, activation="softmax")
    model = keras.Model(inputs, dense(x))
    dense.set_weights(
        [rng.normal(0, 0.05, (48 * 48, num_classes)).astype(np.float32), np.zeros(num_classes, np.float32)]
    )
    return model


def faces(n_per_class: int = 2) -> tuple[np.ndarray, np.ndarray]:
    images, labels = make_faces(n_per_class)
    return images, labels


def test_teacher_averages_models_and_mirror_images_then_softens():
    images, _ = faces()
    x = images[..., None].astype(np.float32)
    first, second = tiny_classifier(1), tiny_classifier(2)
    views = [m.predict(v, verbose=0) for m in (first, second) for v in (x, x[:, :, ::-1])]
    mean = np.mean(views, axis=0)
    assert not np.allclose(views[0], views[1], atol=1e-3)  # the mirror image really is a second opinion

    plain = keras.ops.convert_to_numpy(Teacher([first, second], temperature=1.0)(x))
    np.testing.assert_allclose(plain, mean, rtol=1e-4, atol=1e-6)

    soft = keras.ops.convert_to_numpy(Teacher([first, second], temperature=3.0)(x))
    expected = np.exp(np.log(mean) / 3.0)
    np.testing.assert_allclose(soft, expected / expected.sum(axis=1, keepdims=True), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(soft.sum(axis=1), 1.0, atol=1e-5)
    # A higher temperature spreads probability to the runner-up classes: the top class loses some.
    assert np.all(soft.max(axis=1) < plain.max(axis=1))
    np.testing.assert_array_equal(soft.argmax(axis=1), plain.argmax(axis=1))

    with pytest.raises(ValueError):
        Teacher([], 2.0)
    with pytest.raises(ValueError):
        Teacher([first], 0.0)


def test_numpy_pipeline_blends_the_teachers_view_of_each_augmented_batch():
    images, labels = faces(3)
    teacher = Teacher([tiny_classifier(3)], temperature=2.0)
    plain_settings = PipelineSettings(7, 8, seed=5, augment=True, mixup=0.2)
    batches = NumpyTrainBatches(images, labels, replace(plain_settings, teacher=teacher, distill_alpha=0.3))
    plain = NumpyTrainBatches(images, labels, plain_settings)
    for index in range(len(batches)):
        x, y, w = batches[index]
        x0, y0, w0 = plain[index]  # the same seed: the same augmented, mixed batch, without the teacher
        np.testing.assert_array_equal(x, x0)
        np.testing.assert_array_equal(w, w0)
        expected = blend_targets(y0, keras.ops.convert_to_numpy(teacher(x)), 0.3)
        np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(y.sum(axis=1), 1.0, atol=1e-5)
        assert y.dtype == np.float32


def test_tf_data_pipeline_blends_the_teacher_too():
    pytest.importorskip("tensorflow")
    if keras.backend.backend() != "tensorflow":
        pytest.skip("tf.data pipeline runs on the TensorFlow backend only")
    images, labels = faces(3)
    teacher = Teacher([tiny_classifier(4)], temperature=1.0)
    settings = PipelineSettings(7, 8, seed=5, augment=True, teacher=teacher, distill_alpha=0.4)
    ds = make_train_dataset(images, labels, settings)
    seen = 0
    for x, y, _ in ds:
        x, y = np.asarray(x), np.asarray(y)
        onehot_part = y - 0.4 * keras.ops.convert_to_numpy(teacher(x))
        # What is left after removing the teacher's share is 0.6 x a one-hot label.
        np.testing.assert_allclose(onehot_part.max(axis=1), 0.6, atol=1e-4)
        np.testing.assert_allclose(np.sort(onehot_part, axis=1)[:, :-1], 0.0, atol=1e-4)
        seen += len(y)
    assert seen == len(labels)


def write_contract_only(path, labels, size=48):
    """A .keras path with a contract beside it: enough for the checks that never load the model."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"not a keras file")
    save_contract(path, ModelContract(labels=list(labels), input_height=size, input_width=size))
    return path


def test_teacher_paths_are_resolved_and_checked_against_the_data(tmp_path):
    run_dir = tmp_path / "runs" / "big"
    model = write_contract_only(run_dir / "model.keras", FER_LABELS)
    other = write_contract_only(tmp_path / "other.keras", FER_LABELS)
    assert teacher_model_paths(f"{run_dir}, {other}") == [model, other]
    check_teachers([model, other], FER_LABELS, 48)

    with pytest.raises(TeacherError, match="does not exist"):
        teacher_model_paths(str(tmp_path / "missing"))
    with pytest.raises(TeacherError, match="run directory or a .keras model"):
        teacher_model_paths(str(write_contract_only(tmp_path / "model.tflite", FER_LABELS)))
    with pytest.raises(TeacherError, match="names no model"):
        teacher_model_paths(" , ")
    with pytest.raises(TeacherError, match="same labels"):
        check_teachers([model], list(reversed(FER_LABELS)), 48)
    with pytest.raises(TeacherError, match="64x64 faces"):
        check_teachers([write_contract_only(tmp_path / "big64.keras", FER_LABELS, 64)], FER_LABELS, 48)
    (tmp_path / "bare.keras").write_bytes(b"")
    with pytest.raises(TeacherError, match="contract"):
        check_teachers([tmp_path / "bare.keras"], FER_LABELS, 48)


@pytest.mark.slow
def test_a_student_trains_from_a_teacher_run_and_bad_teachers_are_refused(tmp_path, capsys):
    data = write_folder_dataset(tmp_path / "faces", splits={"train": 30, "test": 10})
    cache = ["--cache-dir", str(tmp_path / "cache")]
    common = ["--data", str(data), "--batch-size", "32", "--quiet", *cache]
    teacher_dir = tmp_path / "teacher"
    assert main([*common, "--out", str(teacher_dir), "--epochs", "3", "--arch", "mobilenet"]) == 0

    student_dir = tmp_path / "student"
    args = [*common, "--out", str(student_dir), "--epochs", "2", "--teacher", str(teacher_dir)]
    assert main([*args, "--distill-alpha", "0.6", "--distill-temperature", "1.5"]) == 0
    out = capsys.readouterr().out
    assert (
        f"distilling from 1 teacher(s) ['{teacher_dir / 'model.keras'}']: alpha 0.6, temperature 1.5" in out
    )
    config = json.loads((student_dir / "config.json").read_text())
    assert (config["teacher"], config["distill_alpha"], config["distill_temperature"]) == (
        str(teacher_dir),
        0.6,
        1.5,
    )
    assert json.loads((student_dir / "metrics.json").read_text())["epochs_run"] == 2

    # A teacher trained on other labels is refused before anything is written.
    wrong = write_contract_only(tmp_path / "wrong" / "model.keras", [f"x{i}" for i in range(7)])
    refused_dir = tmp_path / "refused"
    assert main([*common, "--out", str(refused_dir), "--teacher", str(wrong.parent)]) == 2
    err = capsys.readouterr().err
    assert "same labels" in err and "Traceback" not in err
    assert not refused_dir.exists()
    # A damaged teacher file is named in the error; a bad alpha is refused by the flag check.
    broken = write_contract_only(tmp_path / "broken" / "model.keras", FER_LABELS)
    assert main([*common, "--out", str(tmp_path / "b"), "--teacher", str(broken)]) == 2
    assert f"--teacher {broken} cannot be loaded" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()
    assert (
        main([*common, "--out", str(tmp_path / "c"), "--teacher", str(teacher_dir), "--distill-alpha", "0"])
        == 2
    )
    assert "--distill-alpha must be in (0, 1]" in capsys.readouterr().err
