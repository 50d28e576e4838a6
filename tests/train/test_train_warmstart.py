"""Warm start (train/warmstart.py, `emotion-train --init`): weights carry over, mismatches are refused early."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.support.fakefaces import FER_LABELS, write_folder_dataset
from tests.train.test_train_distill import write_contract_only

keras = pytest.importorskip("keras")

from train.cli import main  # noqa: E402
from train.warmstart import InitError, check_init_contract, init_model_path  # noqa: E402


def test_init_paths_are_resolved_and_checked_against_the_data(tmp_path):
    model = write_contract_only(tmp_path / "runs" / "a" / "model.keras", FER_LABELS)
    assert init_model_path(str(tmp_path / "runs" / "a")) == model
    assert init_model_path(str(model)) == model
    check_init_contract(model, FER_LABELS, 48)

    with pytest.raises(InitError, match="does not exist"):
        init_model_path(str(tmp_path / "missing"))
    with pytest.raises(InitError, match="run directory or a .keras model"):
        init_model_path(str(write_contract_only(tmp_path / "m.h5", FER_LABELS)))
    tflite = write_contract_only(tmp_path / "m.tflite", FER_LABELS)  # an int8 model: train/tflite_init.py
    assert init_model_path(str(tflite)) == tflite
    check_init_contract(tflite, FER_LABELS, 48)
    with pytest.raises(InitError, match="does not exist"):
        init_model_path(str(tmp_path / "gone.tflite"))
    with pytest.raises(InitError, match="same labels in the same order"):
        check_init_contract(model, list(reversed(FER_LABELS)), 48)
    with pytest.raises(InitError, match="takes 64x64 faces, this run 48x48"):
        check_init_contract(write_contract_only(tmp_path / "b.keras", FER_LABELS, 64), FER_LABELS, 48)


def trainable(path) -> list[np.ndarray]:
    model = keras.models.load_model(path, compile=False)
    return [np.asarray(w) for w in model.trainable_weights]


@pytest.mark.slow
def test_a_warm_started_run_begins_from_the_given_weights_and_mismatches_are_refused(tmp_path, capsys):
    data = write_folder_dataset(tmp_path / "faces", splits={"train": 20, "test": 6})
    common = ["--data", str(data), "--batch-size", "32", "--quiet", "--cache-dir", str(tmp_path / "cache")]
    common += ["--arch", "mobilenet", "--patience", "0"]
    source = tmp_path / "source"
    assert main([*common, "--out", str(source), "--epochs", "1"]) == 0

    # At a vanishing learning rate an epoch cannot move the weights: what the run saves is what it started from.
    still = ["--epochs", "1", "--lr", "1e-12", "--warmup-epochs", "0"]
    warm, cold = tmp_path / "warm", tmp_path / "cold"
    assert main([*common, *still, "--out", str(warm), "--init", str(source), "--seed", "9"]) == 0
    assert f"warm start: weights from {source / 'model.keras'}" in capsys.readouterr().out
    assert main([*common, *still, "--out", str(cold), "--seed", "9"]) == 0
    for ours, theirs in zip(trainable(warm / "model.keras"), trainable(source / "model.keras"), strict=True):
        np.testing.assert_allclose(ours, theirs, atol=1e-6)
    assert not all(
        np.allclose(a, b, atol=1e-3)
        for a, b in zip(trainable(cold / "model.keras"), trainable(source / "model.keras"), strict=True)
    )
    assert json.loads((warm / "config.json").read_text())["init"] == str(source)

    # Another architecture: refused with both sizes named, before the run directory exists.
    other = tmp_path / "other"
    assert (
        main([*common[:-4], "--patience", "0", "--arch", "cnn", "--out", str(other), "--init", str(source)])
        == 2
    )
    err = capsys.readouterr().err
    assert "is a different network" in err and "--arch and --width" in err and "Traceback" not in err
    assert not other.exists()
    # A damaged file and a model of other labels are named too.
    broken = write_contract_only(tmp_path / "broken" / "model.keras", FER_LABELS)
    assert main([*common, "--out", str(other), "--init", str(broken)]) == 2
    assert f"--init {broken} cannot be loaded" in capsys.readouterr().err
    foreign = write_contract_only(tmp_path / "foreign.keras", [f"x{i}" for i in range(7)])
    assert main([*common, "--out", str(other), "--init", str(foreign)]) == 2
    assert "same labels in the same order" in capsys.readouterr().err
    assert not other.exists()
    # Overwriting the very run the weights (or a teacher) come from is refused, and nothing is deleted.
    for flag in ("--init", "--teacher"):
        assert main([*common, "--out", str(source), flag, str(source), "--overwrite"]) == 2
        assert "which --overwrite would delete" in capsys.readouterr().err
    assert (source / "model.keras").is_file() and (source / "metrics.json").is_file()
