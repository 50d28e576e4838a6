"""emotion-train --photos: FER-style data plus the daemon-cut crops of a photo folder, validated per source.

Generated faces (tests/support/fakefaces.py) stand in for FER-2013 and scikit-image's astronaut for the photos."""

from __future__ import annotations

import json

import pytest

from tests.support.fakefaces import write_folder_dataset
from tests.support.ferplus import FERPLUS_COLUMNS
from tests.train.test_train_photos import write_labelled_photos
from train.config import TrainError, config_for_run

keras = pytest.importorskip("keras")

from train.cli import main  # noqa: E402  (after the importorskip above)


@pytest.mark.slow
def test_photos_join_training_and_are_validated_on_their_own(tmp_path, capsys):
    data = write_folder_dataset(tmp_path / "faces", splits={"train": 8, "test": 4})
    write_labelled_photos(tmp_path / "photos")
    run_dir = tmp_path / "run"
    args = ["--data", str(data), "--photos", str(tmp_path / "photos"), "--out", str(run_dir)]
    flags = ["--epochs", "1", "--batch-size", "16", "--arch", "mobilenet", "--quiet"]
    assert main([*args, *flags, "--cache-dir", str(tmp_path / "cache")]) == 0
    out = capsys.readouterr().out
    assert "2 train crops joined, 2 held out" in out and "1 photos without a face skipped" in out

    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["train_images"] == 8 * 7 + 2  # FER-style train plus the photos' train half
    assert metrics["primary_validation"] == "test" and metrics["val_images"] == 4 * 7
    sources = metrics["validation_sources"]
    assert set(sources) == {"test", "photos:held-out", "test@24px", "test@32px", "test@40px"}
    assert sources["test"] == metrics["validation"]  # the primary set is the one that chose the model
    photos = sources["photos:held-out"]
    assert photos["count"] == 2
    # Both held-out photos are the astronaut, one labelled happy and one neutral (FER order: 3 and 4).
    assert [photos["per_class"][k]["support"] for k in ("happy", "neutral")] == [1, 1]
    assert sum(map(sum, photos["confusion"])) == 2
    assert 0 <= photos["accuracy"] <= 1 and 0 <= photos["macro_f1"] <= 1
    assert metrics["skipped_files"] == 1  # the faceless photo
    report = (run_dir / "report.txt").read_text()
    assert "(train half trained on, held-out half validated)" in report
    assert "further validation ('photos:held-out'), not used to choose the model" in report
    contract = json.loads((run_dir / "model.json").read_text())
    assert contract["extra"]["val_accuracy_photos:held-out"] == pytest.approx(photos["accuracy"], abs=1e-4)

    # --resume knows the run's photo folder (config.json) and refuses another one.
    saved = json.loads((run_dir / "config.json").read_text())
    assert saved["photos"] == str(tmp_path / "photos")
    with pytest.raises(TrainError, match="--photos"):
        config_for_run(run_dir, {"photos": str(tmp_path / "other")}, resume=True, overwrite=False)
    resumed = config_for_run(run_dir, {"photos": str(tmp_path / "photos")}, resume=True, overwrite=False)
    assert resumed.photos == str(tmp_path / "photos")


def test_a_run_saved_before_photos_existed_resumes_without_them(tmp_path):
    run_dir = tmp_path / "old"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "checkpoints" / "state.json").write_text("{}")
    (run_dir / "config.json").write_text(json.dumps({"data": str(tmp_path), "out": str(run_dir)}))
    config = config_for_run(run_dir, {}, resume=True, overwrite=False)
    assert config.photos == ""  # it ran without photos and goes on without them


def write_votes(data, path):
    """FER+-style votes for every image of a generated data set: most say "neutral" (7 of 10), a third of
    the test faces tie (no majority)."""
    lines = ["file," + ",".join(FERPLUS_COLUMNS)]
    for i, file in enumerate(sorted(data.rglob("*.png"))):
        votes = [5, 5, 0, 0, 0, 0, 0, 0, 0, 0] if i % 3 == 0 else [7, 1, 0, 0, 0, 0, 0, 1, 1, 0]
        lines.append(file.relative_to(data).as_posix() + "," + ",".join(map(str, votes)))
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.slow
def test_soft_labels_photo_weight_and_degradations_in_one_run(tmp_path, capsys):
    data = write_folder_dataset(tmp_path / "faces", splits={"train": 8, "test": 3})
    write_labelled_photos(tmp_path / "photos")
    votes = write_votes(data, tmp_path / "votes.csv")
    run_dir = tmp_path / "run"
    args = ["--data", str(data), "--photos", str(tmp_path / "photos"), "--out", str(run_dir)]
    args += [
        "--soft-labels",
        str(votes),
        "--soft-label-mix",
        "0.8",
        "--photo-weight",
        "3",
        "--degrade",
        "0.5",
    ]
    flags = ["--epochs", "1", "--batch-size", "16", "--arch", "mobilenet", "--quiet"]
    assert main([*args, *flags, "--cache-dir", str(tmp_path / "cache")]) == 0
    out = capsys.readouterr().out
    assert "56 of 58 training images have votes" in out  # the two photo crops have no row
    assert "14 of 21 'test' faces have a majority label" in out

    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["primary_validation"] == "test:majority" and metrics["val_images"] == 14
    # Every majority is neutral: the model was chosen and calibrated on those labels.
    assert metrics["validation"]["per_class"]["neutral"]["support"] == 14
    sources = metrics["validation_sources"]
    assert sources["test:original"]["count"] == 21 and sources["photos:held-out"]["count"] == 2
    assert {"test:majority@24px", "test:majority@32px", "test:majority@40px"} <= set(sources)
    assert any("targets 0.2 x label + 0.8 x votes" in note for note in metrics["data_notes"])
    report = (run_dir / "report.txt").read_text()
    assert "small faces (sampled down, upscaled as the daemon does)" in report
    assert (run_dir / "training_crops.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads((run_dir / "config.json").read_text())
    assert (saved["soft_label_mix"], saved["photo_weight"], saved["degrade"]) == (0.8, 3.0, 0.5)


def test_photo_weight_scales_the_photo_crops_loss_and_soft_targets_set_the_class_weights():
    import numpy as np

    from train.config import TrainConfig
    from train.data import Split
    from train.train import RunData, sample_weights

    labels = np.array([0, 0, 0, 1, 0, 1])  # four data images, then two photo crops
    split = Split(np.zeros((6, 4, 4), np.uint8), labels, [str(i) for i in range(6)])
    data = RunData(dataset=type("D", (), {"labels": ["a", "b"]})(), train=split, val=split, val_name="test")
    data.train_weights = np.array([1, 1, 1, 1, 3, 3], np.float32)
    weights = sample_weights(TrainConfig(class_weights=False), data)
    assert weights.mean() == pytest.approx(1.0)
    assert weights[4] == pytest.approx(3 * weights[0]) and weights[5] == pytest.approx(3 * weights[3])
    # Class weights follow the training targets: soft targets that make image 0 a "b" change the counts.
    data.train_weights = None
    data.train_targets = np.eye(2, dtype=np.float32)[[1, 0, 0, 0, 0, 0]]  # one "b" (image 0), five "a"
    weighted = sample_weights(TrainConfig(class_weight_power=1.0), data)
    assert weighted[0] == pytest.approx(5 * weighted[1]) and weighted[3] == pytest.approx(weighted[1])
