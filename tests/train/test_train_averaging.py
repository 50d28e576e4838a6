"""Weight averaging of the last epochs (train/averaging.py, `emotion-train --average-last K`)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edge.model_contract import load_contract
from tests.support.fakefaces import make_faces, write_folder_dataset

keras = pytest.importorskip("keras")

from train.averaging import (  # noqa: E402
    average_last_epochs,
    average_weights,
    reestimate_batchnorm,
    standard_error,
)
from train.cli import main  # noqa: E402
from train.model import make_model  # noqa: E402
from train.report import describe_average  # noqa: E402
from train.runstate import keep_epoch_weights, kept_epochs, save_model_atomic  # noqa: E402


def small_model():
    keras.utils.set_random_seed(0)  # the same initial weights whichever tests ran before
    model = make_model("cnn", (48, 48, 1), 7, width=0.25)
    model.compile(optimizer="adamw", loss="categorical_crossentropy")
    model.optimizer.build(model.trainable_variables)  # saved like a trained run's, optimizer state included
    return model


def shifted(model, seed: int) -> list[np.ndarray]:
    """Give the model's float weights a random offset (another 'epoch'); returns the weights set."""
    rng = np.random.default_rng(seed)
    weights = [w + rng.normal(0, 0.05, w.shape).astype(w.dtype) for w in model.get_weights()]
    model.set_weights(weights)
    return weights


def first_conv_channel_means(model, images) -> np.ndarray:
    conv = keras.Model(model.input, model.get_layer("b1a_conv").output)
    return keras.ops.convert_to_numpy(conv(images.astype(np.float32)[..., None])).mean(axis=(0, 1, 2))


def test_epochs_are_kept_pruned_averaged_and_batchnorm_is_reestimated(tmp_path):
    model = small_model()
    (tmp_path / "checkpoints").mkdir()
    epochs = {}
    for number in range(1, 6):
        epochs[number] = shifted(model, number)
        keep_epoch_weights(model, tmp_path, number, keep=3)
    assert sorted(kept_epochs(tmp_path)) == [3, 4, 5]  # older epochs are deleted as new ones come
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
        "epoch-003.weights.npz",
        "epoch-004.weights.npz",
        "epoch-005.weights.npz",
    ]

    average_weights(model, [kept_epochs(tmp_path)[n] for n in (3, 4, 5)])
    for got, *each in zip(model.get_weights(), epochs[3], epochs[4], epochs[5], strict=True):
        np.testing.assert_allclose(got, np.mean(each, axis=0), rtol=1e-5, atol=1e-6)

    # The moving mean after re-estimation is the data's own mean of what the layer normalises.
    images, _ = make_faces(40, seed=3)
    norm = model.get_layer("b1a_bn")
    before = keras.ops.convert_to_numpy(norm.moving_mean).copy()
    assert reestimate_batchnorm(model, images, batch_size=70) == 5
    wanted = first_conv_channel_means(model, images)
    assert not np.allclose(before, wanted, atol=1e-3)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(norm.moving_mean), wanted, atol=2e-3)
    assert norm.momentum == pytest.approx(0.9)  # the training momentum is put back


def test_the_average_replaces_model_keras_unless_the_best_epoch_is_clearly_better(tmp_path):
    model = small_model()
    (tmp_path / "checkpoints").mkdir()
    for number in (1, 2, 3):
        shifted(model, number)
        keep_epoch_weights(model, tmp_path, number, keep=3)
    save_model_atomic(model, tmp_path / "checkpoints" / "last.keras")
    save_model_atomic(model, tmp_path / "model.keras")
    images, labels = make_faces(10, seed=4)
    val_x = images.astype(np.float32)[..., None]
    args = dict(train_images=images, val_x=val_x, val_labels=labels, seed=0)

    result = average_last_epochs(tmp_path, 3, 3, best_val_accuracy=0.0, **args)
    assert result["epochs"] == [1, 2, 3] and result["used"] is True and result["bn_faces"] == 70
    saved = keras.models.load_model(tmp_path / "model.keras")
    predicted = saved.predict(val_x, verbose=0).argmax(axis=1)
    assert np.mean(predicted == labels) == pytest.approx(result["val_accuracy"], abs=1e-4)

    # One face better than the average is noise (one standard error on 70 faces is about 4 faces): the
    # average is kept. Far better is not noise: model.keras stays as it was. (Measured against this same
    # two-epoch average: the three-epoch one above can score several faces apart on an untrained model.)
    accuracy = average_last_epochs(tmp_path, 3, 2, best_val_accuracy=0.0, **args)["val_accuracy"]
    result = average_last_epochs(tmp_path, 3, 2, best_val_accuracy=accuracy + 1 / 70, **args)
    assert result["epochs"] == [2, 3] and result["used"] is True
    assert result["margin"] == pytest.approx(standard_error(accuracy + 1 / 70, 70), abs=1e-4)
    unchanged = (tmp_path / "model.keras").read_bytes()
    result = average_last_epochs(tmp_path, 3, 2, best_val_accuracy=min(1.0, accuracy + 0.3), **args)
    assert result["used"] is False
    assert (tmp_path / "model.keras").read_bytes() == unchanged

    # Only one epoch kept: nothing to average, and that is said.
    (tmp_path / "checkpoints" / "epoch-002.weights.npz").unlink()
    result = average_last_epochs(tmp_path, 3, 2, best_val_accuracy=0.0, **args)
    assert result["used"] is False and result["epochs"] == [3] and "only 1 epoch(s) kept" in result["why"]


@pytest.mark.slow
def test_a_run_averages_its_last_epochs_and_a_finished_run_can_add_it_on_resume(tmp_path, capsys):
    data = write_folder_dataset(tmp_path / "faces", splits={"train": 20, "test": 6})
    run_dir = tmp_path / "run"
    common = ["--data", str(data), "--batch-size", "32", "--quiet", "--arch", "cnn", "--width", "0.5"]
    common += ["--cache-dir", str(tmp_path / "cache"), "--patience", "0"]
    assert main([*common, "--out", str(run_dir), "--epochs", "4", "--average-last", "3"]) == 0
    out = capsys.readouterr().out
    assert "weight average of epochs 2-4 (3 kept, BatchNorm re-estimated on 140 train faces)" in out
    metrics = json.loads((run_dir / "metrics.json").read_text())
    average = metrics["weight_average"]
    assert average["epochs"] == [2, 3, 4] and average["requested"] == 3
    assert sorted(kept_epochs(run_dir)) == [2, 3, 4]
    # Whichever won, model.keras, its contract and metrics.json describe the same weights.
    weights = load_contract(run_dir / "model.keras").extra["weights"]
    if average["used"]:
        assert weights == "average of epochs 2-4"
        assert metrics["validation"]["accuracy"] == pytest.approx(average["val_accuracy"], abs=1e-4)
    else:
        assert weights == f"epoch {metrics['best_epoch']}"
        assert average["val_accuracy"] < average["best_epoch_val_accuracy"] - average["margin"]
    assert describe_average(average) in (run_dir / "report.txt").read_text()  # what the console said too

    # A run that predates the flag takes it on --resume; with no kept epochs it says so and changes nothing.
    plain = tmp_path / "plain"
    assert main([*common, "--out", str(plain), "--epochs", "2"]) == 0
    before = (plain / "model.keras").read_bytes()
    config = json.loads((plain / "config.json").read_text())
    del config["average_last"]
    (plain / "config.json").write_text(json.dumps(config))
    capsys.readouterr()
    assert main(["--out", str(plain), "--resume", "--average-last", "2", "--quiet"]) == 0
    assert "weight average: only 0 epoch(s) kept; nothing to average" in capsys.readouterr().out
    assert json.loads((plain / "config.json").read_text())["average_last"] == 2
    assert (plain / "model.keras").read_bytes() == before
    # Training flags the old config lacks ran at their defaults: changing one on --resume is a conflict.
    assert main(["--out", str(plain), "--resume", "--mixup", "0.2"]) == 2
    assert "conflicting flags: --mixup 0.2 (the run used 0.0)" in capsys.readouterr().err

    assert main([*common, "--out", str(tmp_path / "bad"), "--average-last", "1"]) == 2
    assert not (tmp_path / "bad").exists()
    err = capsys.readouterr().err
    assert "--average-last must be 0 (off) or at least 2 epochs" in err and "Traceback" not in err
