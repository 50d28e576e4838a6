"""emotion-train --photos: FER-style data plus the daemon-cut crops of a photo folder, validated per source.

Generated faces (tests/fakefaces.py) stand in for FER-2013 and scikit-image's astronaut for the photos."""

from __future__ import annotations

import json

import pytest

from tests.fakefaces import write_folder_dataset
from tests.test_train_photos import write_labelled_photos
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
    assert set(sources) == {"test", "photos:held-out"}
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
