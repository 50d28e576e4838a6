"""emotion-train end to end on generated faces: learning, artifacts, contract, resume, run-dir safety."""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from edge.files import file_sha256
from edge.model_contract import load_contract
from tests.support.fakefaces import FER_LABELS, write_folder_dataset

keras = pytest.importorskip("keras")

from train.cli import main  # noqa: E402  (after the importorskip above)
from train.config import TrainError, config_for_run  # noqa: E402
from train.data import load_dataset  # noqa: E402
from train.runstate import RunState, settle_checkpoints  # noqa: E402
from train.train import run  # noqa: E402

CUSTOM_LABELS = ["anger", "happy", "sad", "surprise", "disgust", "shock", "normal"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def history(run_dir: Path) -> list[dict]:
    with open(run_dir / "history.csv", newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.slow
def test_training_learns_generated_faces_and_writes_every_artifact(tmp_path, capsys):
    data = write_folder_dataset(tmp_path / "faces", splits={"train": 60, "test": 15})
    run_dir = tmp_path / "run"
    args = ["--data", str(data), "--out", str(run_dir), "--epochs", "8", "--batch-size", "16", "--quiet"]
    assert main([*args, "--cache-dir", str(tmp_path / "cache")]) == 0
    out = capsys.readouterr().out
    assert out.count("\nepoch ") + out.startswith("epoch ") == 8  # --quiet: one line per epoch

    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["val_split"] == "test" and metrics["val_images"] == 105
    assert metrics["validation"]["accuracy"] > 0.6  # chance is 1/7
    assert metrics["params"] <= 900_000 and metrics["macs"] <= 40e6
    assert metrics["train_images_per_second"] > 0 and metrics["seconds_per_epoch"] > 0

    # The best model loads without custom objects and reproduces the reported validation accuracy.
    model = keras.models.load_model(run_dir / "model.keras")
    val = load_dataset(data, cache_dir=tmp_path / "cache").splits["test"]
    predicted = model.predict(val.images[..., None].astype(np.float32), verbose=0).argmax(axis=1)
    assert np.mean(predicted == val.labels) == pytest.approx(metrics["validation"]["accuracy"])

    contract = load_contract(run_dir / "model.keras")
    assert contract.labels == FER_LABELS and contract.input_size == (48, 48) and contract.arch == "cnn"
    assert contract.sha256 == file_sha256(run_dir / "model.keras")  # of the model.keras it describes
    # A softmax temperature was fitted on validation (or skipped, saying why) and recorded with the model.
    calibration = metrics["calibration"]
    assert contract.extra["temperature"] == calibration["temperature"]
    assert calibration["temperature"] is None or 0.2 <= calibration["temperature"] <= 5.0
    assert contract.extra["val_accuracy"] == pytest.approx(metrics["validation"]["accuracy"], abs=1e-4)

    config = json.loads((run_dir / "config.json").read_text())
    assert config["epochs"] == 8 and config["batch_size"] == 16 and config["class_weights"] is True
    rows = history(run_dir)
    assert [int(r["epoch"]) for r in rows] == list(range(8))
    assert max(float(r["val_accuracy"]) for r in rows) == pytest.approx(
        metrics["validation"]["accuracy"], abs=1e-4
    )
    for name in ("curves.png", "confusion.png"):
        assert (run_dir / name).read_bytes().startswith(PNG_MAGIC)
    report = (run_dir / "report.txt").read_text()
    for needle in ("macro-F1", "images/s", "s/epoch", "files skipped", "surprise"):
        assert needle in report
    assert (run_dir / "checkpoints" / "last.keras").is_file()

    # A finished run is not overwritten by accident; --resume with a changed flag is refused.
    assert main(args) == 2
    assert "already holds a finished run" in capsys.readouterr().err
    # --overwrite deletes the previous run only once the new one has passed its checks: a typo in --data or
    # a bad flag leaves the finished run as it was.
    before = {p.relative_to(run_dir): p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    typo = ["--data", str(tmp_path / "facse"), "--out", str(run_dir), "--overwrite"]
    for bad in (typo, [*args, "--overwrite", "--lr", "-1"], [*args, "--overwrite", "--teacher", "nope"]):
        assert main(bad) == 2
        assert "error: " in capsys.readouterr().err
        assert {p.relative_to(run_dir): p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == before
    assert main(["--out", str(run_dir), "--resume", "--lr", "0.1"]) == 2
    assert "conflicting flags: --lr 0.1" in capsys.readouterr().err


class InterruptAfterEpoch(keras.callbacks.Callback):
    """Simulates Ctrl-C right after an epoch's checkpoint was written."""

    def __init__(self, epoch: int):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            raise KeyboardInterrupt


@pytest.mark.slow
def test_interrupted_run_resumes_from_the_next_epoch(tmp_path, capsys):
    # A user's own labels in a flat folder: also covers the "classes" layout and the seeded holdout.
    data = write_folder_dataset(tmp_path / "mine", labels=CUSTOM_LABELS, splits=None)
    run_dir = tmp_path / "run"
    given = {"data": str(data), "out": str(run_dir), "epochs": 4, "batch_size": 32}
    config = config_for_run(run_dir, given, resume=False, overwrite=False)
    with pytest.raises(KeyboardInterrupt):
        run(config, quiet=True, cache_dir=tmp_path / "cache", callbacks=[InterruptAfterEpoch(1)])
    state = RunState.load(run_dir / "checkpoints" / "state.json")
    assert state.epoch == 2 and len(history(run_dir)) == 2
    steps_per_epoch = state.optimizer_steps // 2
    assert steps_per_epoch == -(-(7 * 30 - 7 * 3) // 32)  # 189 train images after the 10% holdout
    assert not (run_dir / "metrics.json").exists()

    # Starting again without --resume is refused, and nothing to resume in an empty dir either.
    assert main(["--data", str(data), "--out", str(run_dir)]) == 2
    assert "unfinished run (continue it with --resume)" in capsys.readouterr().err
    assert main(["--out", str(tmp_path / "nothing"), "--resume"]) == 2
    assert "nothing to resume" in capsys.readouterr().err

    # A checkpoint that does not load is named, with the backend to resume on when another one wrote it.
    assert state.backend == "tensorflow"
    last = run_dir / "checkpoints" / "last.keras"
    saved = last.read_bytes()
    last.write_bytes(b"PK\x03\x04 not really a zip")
    for writer, expected in [("torch", "was written on Keras's torch backend and does not load on tensorflow"),
                             ("tensorflow", "could not be loaded to resume from")]:  # fmt: skip
        replace(state, backend=writer).save(run_dir / "checkpoints" / "state.json")
        assert (
            main(["--out", str(run_dir), "--resume", "--quiet", "--cache-dir", str(tmp_path / "cache")]) == 2
        )
        err = capsys.readouterr().err
        assert expected in err and "Traceback" not in err
    assert "resume with KERAS_BACKEND" not in err
    last.write_bytes(saved)
    state.save(run_dir / "checkpoints" / "state.json")

    assert main(["--out", str(run_dir), "--resume", "--quiet", "--cache-dir", str(tmp_path / "cache")]) == 0
    out = capsys.readouterr().out
    assert "resuming at epoch 3/4" in out
    assert "epoch 3/4" in out and "epoch 1/4" not in out
    assert [int(r["epoch"]) for r in history(run_dir)] == [0, 1, 2, 3]
    state = RunState.load(run_dir / "checkpoints" / "state.json")
    assert state.epoch == 4 and state.optimizer_steps == 4 * steps_per_epoch  # schedule continued
    contract = load_contract(run_dir / "model.keras")
    assert contract.labels == sorted(CUSTOM_LABELS)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["val_split"] == "train-holdout" and metrics["epochs_run"] == 4


def test_settling_moves_a_committed_epochs_models_into_place_and_drops_an_uncommitted_ones(tmp_path):
    checkpoints = tmp_path / "checkpoints"
    checkpoints.mkdir()
    (tmp_path / "model.keras").write_bytes(b"best of epoch 1")
    (checkpoints / "last.keras").write_bytes(b"last of epoch 2")
    # Interrupted after state.json named epoch 3 (also the best) but before the renames:
    (checkpoints / "best-epoch-003.keras").write_bytes(b"best of epoch 3")
    (checkpoints / "last-epoch-003.keras").write_bytes(b"last of epoch 3")
    settle_checkpoints(tmp_path, RunState(epoch=3, best_epoch=2))
    assert (tmp_path / "model.keras").read_bytes() == b"best of epoch 3"
    assert (checkpoints / "last.keras").read_bytes() == b"last of epoch 3"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["last.keras"]

    # Interrupted before state.json was written: epoch 4 never happened as far as --resume knows.
    (checkpoints / "best-epoch-004.keras").write_bytes(b"best of epoch 4")
    (checkpoints / "last-epoch-004.keras").write_bytes(b"last of epoch 4")
    settle_checkpoints(tmp_path, RunState(epoch=3, best_epoch=2))
    assert (tmp_path / "model.keras").read_bytes() == b"best of epoch 3"
    assert (checkpoints / "last.keras").read_bytes() == b"last of epoch 3"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["last.keras"]


class RecordWeights(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.by_epoch: list[list[np.ndarray]] = []

    def on_epoch_end(self, epoch, logs=None):
        self.by_epoch.append(self.model.get_weights())


def same_weights(path: Path, expected: list[np.ndarray]) -> bool:
    loaded = keras.models.load_model(path).get_weights()
    return len(loaded) == len(expected) and all(
        np.array_equal(a, b) for a, b in zip(loaded, expected, strict=True)
    )


@pytest.mark.slow
def test_interrupted_between_an_epochs_checkpoints_and_its_state_the_run_stays_consistent(
    tmp_path, monkeypatch, capsys
):
    """Ctrl-C while an improved epoch's models are written but before state.json commits them: the run
    directory must still describe the last committed epoch, and --resume re-runs the interrupted one."""
    data = write_folder_dataset(tmp_path / "faces", splits={"train": 30, "test": 10})
    run_dir = tmp_path / "run"
    given = {"data": str(data), "out": str(run_dir), "epochs": 3, "batch_size": 32, "calibrate": False}
    config = config_for_run(run_dir, given, resume=False, overwrite=False)
    save = RunState.save

    def interrupted_at_the_second_commit(self, path):
        if self.epoch == 2:
            raise KeyboardInterrupt
        save(self, path)

    monkeypatch.setattr(RunState, "save", interrupted_at_the_second_commit)
    recorder = RecordWeights()
    with pytest.raises(KeyboardInterrupt):
        run(config, quiet=True, cache_dir=tmp_path / "cache", callbacks=[recorder])
    monkeypatch.setattr(RunState, "save", save)
    # The second epoch's models were written (as pending files), state.json still says one epoch.
    checkpoints = run_dir / "checkpoints"
    assert (checkpoints / "last-epoch-002.keras").is_file()
    state = RunState.load(checkpoints / "state.json")
    assert state.epoch == 1 and state.best_epoch == 0
    assert same_weights(checkpoints / "last.keras", recorder.by_epoch[0])
    assert same_weights(run_dir / "model.keras", recorder.by_epoch[0])

    assert main(["--out", str(run_dir), "--resume", "--quiet", "--cache-dir", str(tmp_path / "cache")]) == 0
    assert "resuming at epoch 2/3" in capsys.readouterr().out
    assert not list(checkpoints.glob("*-epoch-*.keras"))
    assert [int(r["epoch"]) for r in history(run_dir)] == [0, 1, 2]
    state = RunState.load(checkpoints / "state.json")
    assert state.epoch == 3


def test_a_run_stopped_before_its_first_epoch_is_replaced_without_overwrite(tmp_path):
    """Nothing of value is there yet (no weights, no state), so rerunning the same command just works."""
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "config.json").write_text("{}")
    given = {"data": str(tmp_path), "out": str(run_dir), "epochs": 3}
    assert config_for_run(run_dir, given, resume=False, overwrite=False).epochs == 3
    (run_dir / "checkpoints" / "state.json").write_text("{}")  # one epoch done: now it is worth keeping
    with pytest.raises(TrainError, match="unfinished run"):
        config_for_run(run_dir, given, resume=False, overwrite=False)


def first_epoch_batches(global_seed: int) -> set[tuple[int, ...]]:
    """Which images (by index) the first epoch puts in each batch, in batch order. A set: the batches
    themselves are fixed by the shuffle, but the pipeline's map runs batches in parallel and non-deterministic
    (deterministic=False), so on a loaded machine the second batch can come out first."""
    from train.batches import make_train_dataset
    from train.pipeline import PipelineSettings

    keras.utils.set_random_seed(global_seed)
    images = np.repeat(np.arange(64, dtype=np.uint8), 48 * 48).reshape(64, 48, 48)  # pixel value = index
    labels = np.arange(64) % 7
    batches = make_train_dataset(images, labels, PipelineSettings(7, 16, seed=1337, augment=False))
    return {tuple(np.asarray(x)[:, 0, 0, 0].astype(int).tolist()) for x, _, _ in batches}


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="tf.data runs on TensorFlow only")
def test_a_resumed_run_does_not_replay_the_first_epochs_shuffle():
    from train.train import resume_seed

    assert resume_seed(1337, 0) == 1337  # a fresh run: as before
    fresh = first_epoch_batches(resume_seed(1337, 0))
    assert sorted(i for batch in fresh for i in batch) == list(range(64))
    assert first_epoch_batches(resume_seed(1337, 0)) == fresh  # tf.data's order follows the global seed...
    resumed = [first_epoch_batches(resume_seed(1337, epoch)) for epoch in (18, 44)]
    assert fresh not in resumed and resumed[0] != resumed[1]  # ...so each resume point gets its own
