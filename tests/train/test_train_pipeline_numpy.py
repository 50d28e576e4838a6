"""The backend-neutral input pipeline (train/pipeline_numpy.py) and training on the JAX and torch backends."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from edge.model_contract import ModelContract, save_contract
from tests.support.fakefaces import FER_LABELS, write_folder_dataset

keras = pytest.importorskip("keras")

from train.model import make_model  # noqa: E402
from train.pipeline import PipelineSettings, balanced_class_weights, uses_tf_data  # noqa: E402
from train.pipeline_numpy import NumpyTrainBatches  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


def epoch_batches(dataset: NumpyTrainBatches, epoch: int) -> list[tuple]:
    dataset.set_epoch(epoch)
    return [dataset[i] for i in range(len(dataset))]


def test_batches_are_shaped_typed_and_each_sample_appears_once_per_epoch():
    # Image i is filled with the value i, so un-augmented batches say which samples they hold.
    n, classes = 203, 7
    images = np.repeat(np.arange(n, dtype=np.uint8), 16 * 12).reshape(n, 16, 12)
    labels = np.arange(n) % classes
    dataset = NumpyTrainBatches(
        images, labels, PipelineSettings(classes, batch_size=32, seed=3, augment=False)
    )
    batches = epoch_batches(dataset, 0)
    assert len(batches) == 7 and [len(b[0]) for b in batches] == [32] * 6 + [11]  # last batch short
    x, y, w = batches[0]
    assert x.shape == (32, 16, 12, 1) and y.shape == (32, classes) and w.shape == (32,)
    assert x.dtype == y.dtype == w.dtype == np.float32
    ids = np.concatenate([b[0][:, 0, 0, 0] for b in batches]).astype(int)
    assert sorted(ids) == list(range(n)) and ids.tolist() != list(range(n))  # a shuffled permutation
    targets = np.concatenate([b[1] for b in batches])
    assert np.array_equal(targets, np.eye(classes)[labels[ids]])  # one-hot of each sample's own label

    # Reshuffled every epoch; the same (seed, epoch) gives the same batches, whatever built them before.
    ids_next = np.concatenate([b[0][:, 0, 0, 0] for b in epoch_batches(dataset, 1)]).astype(int)
    assert sorted(ids_next) == list(range(n)) and ids_next.tolist() != ids.tolist()
    resumed = PipelineSettings(classes, batch_size=32, seed=3, augment=False, initial_epoch=1)
    again = NumpyTrainBatches(images, labels, resumed)
    assert np.array_equal(again[2][0], epoch_batches(dataset, 1)[2][0])
    with pytest.raises(IndexError):
        dataset[len(dataset)]


def test_augmentation_flips_some_faces_and_keeps_pixels_in_range():
    # Dark left half, bright right half: after augmentation, which half is brighter says whether it flipped.
    image = np.zeros((48, 48), np.uint8)
    image[:, 24:] = 220
    images = np.repeat(image[None], 256, axis=0)
    dataset = NumpyTrainBatches(images, np.zeros(256, int), PipelineSettings(2, batch_size=64, seed=1))
    x = np.concatenate([b[0] for b in epoch_batches(dataset, 0)])[..., 0]
    assert x.min() >= 0.0 and x.max() <= 255.0
    flipped = x[:, :, :24].mean(axis=(1, 2)) > x[:, :, 24:].mean(axis=(1, 2))
    assert 0.3 < flipped.mean() < 0.7
    # Rotation/shift/zoom/brightness changed the faces: no two are the same, none equals the original.
    assert len({face.tobytes() for face in x}) == 256
    assert not np.any(np.all(x == image, axis=(1, 2)))


def test_class_weights_follow_the_labels_and_average_one():
    labels = np.array([0] * 150 + [1] * 40 + [2] * 10)
    images = np.zeros((200, 8, 8), np.uint8)
    weights = balanced_class_weights(labels, 3)
    dataset = NumpyTrainBatches(images, labels, PipelineSettings(3, 16, seed=0, class_weights=weights))
    batches = epoch_batches(dataset, 0)
    y = np.concatenate([b[1] for b in batches])
    w = np.concatenate([b[2] for b in batches])
    assert np.allclose(w, weights[y.argmax(axis=1)])
    assert w.mean() == pytest.approx(1.0, abs=1e-5)
    assert w[y.argmax(axis=1) == 2].min() > 10 * w[y.argmax(axis=1) == 0].max()  # the rare class weighs more


def test_mixup_blends_targets_and_weights():
    labels = np.arange(128) % 4
    images = (labels[:, None, None] * 60).astype(np.uint8) * np.ones((1, 8, 8), np.uint8)
    weights = np.array([0.5, 1.0, 1.5, 2.0], np.float32)
    settings = PipelineSettings(4, batch_size=32, seed=2, class_weights=weights, augment=False, mixup=0.4)
    dataset = NumpyTrainBatches(images, labels, settings)
    x, y, w = dataset[0]
    assert np.allclose(y.sum(axis=1), 1.0) and y.min() >= 0.0
    assert np.mean(y.max(axis=1) < 0.95) > 0.25  # soft targets, not one-hot
    assert np.all((w >= 0.5 - 1e-6) & (w <= 2.0 + 1e-6))
    # Images are blended with the same lambda as their targets: pixel = sum of class value x target share.
    assert np.allclose(x[:, 0, 0, 0], y @ np.array([0, 60, 120, 180], np.float32), atol=1e-3)


def test_random_erasing_puts_a_noise_patch_on_every_face():
    images = np.full((64, 48, 48), 128, np.uint8)  # flat faces stay flat under every other augmentation
    settings = PipelineSettings(2, batch_size=64, seed=4, random_erasing=1.0)
    dataset = NumpyTrainBatches(images, np.zeros(64, int), settings)
    x = dataset[0][0][..., 0]
    changed = np.abs(x - np.median(x, axis=(1, 2), keepdims=True)) > 1.0
    fraction = changed.mean(axis=(1, 2))
    assert np.all(fraction > 0.005) and np.all(fraction < 0.3)


def test_the_backend_picks_the_pipeline_and_shared_helpers_need_no_tensorflow():
    assert uses_tf_data("tensorflow") and not uses_tf_data("jax") and not uses_tf_data("torch")
    code = (
        "import sys, numpy as np; from train.pipeline import balanced_class_weights, to_model_input; "
        "balanced_class_weights(np.array([0, 1, 1]), 2); to_model_input(np.zeros((1, 4, 4), np.uint8)); "
        "import train.train, train.cli; "
        "assert 'tensorflow' not in sys.modules, 'tensorflow was imported'"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


# A short run on another backend in a subprocess: interrupted after its first epoch, then resumed. Batches of
# 28 split 140 train and 28 validation faces evenly: one batch shape, so JAX compiles each step only once.
BACKEND_RUN = textwrap.dedent(
    """
    import json, sys
    import keras
    from train.cli import main
    from train.config import config_for_run
    from train.train import run

    data, run_dir, cache, teacher, backend = sys.argv[1:6]
    assert keras.backend.backend() == backend, keras.backend.backend()

    class InterruptAfterFirstEpoch(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            raise KeyboardInterrupt

    given = {"data": data, "out": run_dir, "epochs": 2, "batch_size": 28, "mixup": 0.2, "teacher": teacher,
             "average_last": 2}
    try:
        run(config_for_run(__import__("pathlib").Path(run_dir), given, False, False), quiet=True,
            cache_dir=cache, callbacks=[InterruptAfterFirstEpoch()])
    except KeyboardInterrupt:
        print("interrupted")
    code = main(["--out", run_dir, "--resume", "--quiet", "--cache-dir", cache])
    print(json.dumps({"exit": code, "tensorflow_imported": "tensorflow" in sys.modules}))
    """
)


def backend_python(backend: str) -> str:
    """The interpreter for a run on `backend`: EMOTION_TEST_JAX_PYTHON / EMOTION_TEST_TORCH_PYTHON (a venv
    with that backend, keras and this package; `make test` builds one for JAX), else this one."""
    variable = f"EMOTION_TEST_{backend.upper()}_PYTHON"
    python = os.environ.get(variable, sys.executable)
    if os.sep in python:  # a path (`make test` passes .venv-jax/bin/python): the runs below change directory
        python = os.path.abspath(python)
    env = {**os.environ, "KERAS_BACKEND": backend}  # keras alone would try TensorFlow, maybe not installed
    probe = subprocess.run(
        [python, "-c", f"import {backend}, keras"], env=env, capture_output=True, text=True
    )
    if probe.returncode != 0:
        pytest.skip(
            f"{backend} is not importable by {python} (pip install {backend}, or point {variable} "
            f"at a venv with {backend}, keras and this package)"
        )
    return python


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_training_runs_and_resumes_on_another_backend(tmp_path, backend):
    python = backend_python(backend)
    data = write_folder_dataset(tmp_path / "faces", splits={"train": 20, "test": 4})
    run_dir = tmp_path / "run"
    # A teacher written by this process (TensorFlow backend here), distilled from in worker threads.
    teacher = tmp_path / "teacher" / "model.keras"
    teacher.parent.mkdir()
    make_model("mobilenet", (48, 48, 1), 7).save(teacher)
    save_contract(teacher, ModelContract(labels=FER_LABELS))
    env = {**os.environ, "KERAS_BACKEND": backend, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu",
           "CUDA_VISIBLE_DEVICES": ""}  # fmt: skip
    done = subprocess.run(
        [python, "-c", BACKEND_RUN, str(data), str(run_dir), str(tmp_path / "cache"), str(teacher), backend],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "interrupted" in done.stdout and "resuming at epoch 2/2" in done.stdout
    assert done.stdout.count("distilling from 1 teacher(s)") == 2  # the resumed run kept its teacher
    # Both epochs' weights were kept across the interruption, averaged, and BatchNorm re-estimated there.
    assert "weight average of epochs 1-2 (2 kept, BatchNorm re-estimated on 140 train faces)" in done.stdout
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"exit": 0, "tensorflow_imported": False}
    state = json.loads((run_dir / "checkpoints" / "state.json").read_text())
    assert state["epoch"] == 2 and state["optimizer_steps"] == 2 * 140 // 28  # the schedule continued
    assert (run_dir / "metrics.json").is_file() and (run_dir / "report.txt").is_file()

    # The model loads here (whatever backend this process runs) the way emotion-convert loads it: a torch
    # run's compile config names torch's own AdamW, which no other backend can import.
    model = keras.models.load_model(run_dir / "model.keras", compile=False)
    probs = model.predict(np.zeros((3, 48, 48, 1), np.float32), verbose=0)
    assert probs.shape == (3, 7) and np.allclose(probs.sum(axis=1), 1.0, atol=1e-4)
    assert state["backend"] == backend

    # --resume here, on TensorFlow: a JAX checkpoint loads; a torch one is refused, naming the backend to use.
    resumed = subprocess.run(
        [sys.executable, "-m", "train.cli", "--out", str(run_dir), "--resume", "--quiet", "--cache-dir",
         str(tmp_path / "cache")], cwd=REPO, env={**os.environ, "KERAS_BACKEND": "tensorflow"},
        capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    if backend == "torch":
        assert resumed.returncode == 2 and "Traceback" not in resumed.stderr
        assert (
            "written on Keras's torch backend" in resumed.stderr and "KERAS_BACKEND=torch" in resumed.stderr
        )
    else:
        assert resumed.returncode == 0, resumed.stderr
        assert "all epochs done" in resumed.stdout


@pytest.mark.slow
def test_a_jax_only_install_trains_without_keras_backend_set_and_refuses_to_convert(tmp_path):
    # `pip install '.[train-jax]'` and no KERAS_BACKEND: Keras alone would die importing TensorFlow.
    python = backend_python("jax")
    if subprocess.run([python, "-c", "import tensorflow"], capture_output=True).returncode == 0:
        pytest.skip(f"{python} has TensorFlow: this checks an install without it (EMOTION_TEST_JAX_PYTHON)")
    data = write_folder_dataset(tmp_path / "faces", splits={"train": 4, "test": 2})
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    env.update(KERAS_HOME=str(tmp_path / "keras-home"), PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu")
    cli = "import sys; from {0}.cli import main; sys.exit(main(sys.argv[1:]))"

    def emotion(tool: str, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([python, "-c", cli.format(tool), *map(str, args)], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=240)  # fmt: skip

    run_dir = tmp_path / "run"
    trained = emotion("train", "--data", data, "--out", run_dir, "--arch", "mobilenet", "--epochs", "1",
                      "--batch-size", "14", "--quiet")  # fmt: skip
    assert trained.returncode == 0, trained.stdout + trained.stderr
    assert "TensorFlow is not installed: training on Keras's jax backend" in trained.stderr
    assert (run_dir / "model.keras").is_file()

    converted = emotion("convert", run_dir, "--data", data, "--out", tmp_path / "model.tflite")
    assert converted.returncode == 2 and "Traceback" not in converted.stderr
    assert "converting needs TensorFlow's TFLite converter" in converted.stderr
    assert not (tmp_path / "model.tflite").exists()
