"""Training settings (train/config.py): one declaration per setting drives the flags, --help, the range checks
and resolving a run's config, including one saved by an older version. No Keras needed."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import asdict, fields
from pathlib import Path

import pytest

from train.cli import build_parser
from train.config import DEFAULTS, SETTINGS, TrainConfig, TrainError, config_for_run, flag_name

REPO = Path(__file__).resolve().parents[2]

# config.json as emotion-train wrote it before --class-weight-power, --random-erasing, --teacher,
# --distill-*, --init, --average-last and --calibrate existed (the keys of that version, values of a real run).
OLD_CONFIG = {
    "data": "/data/fer2013",
    "out": "runs/old",
    "arch": "vgg",
    "epochs": 40,
    "batch_size": 32,
    "lr": 0.001,
    "weight_decay": 0.05,
    "schedule": "cosine",
    "warmup_epochs": 2,
    "seed": 7,
    "val_fraction": 0.1,
    "label_smoothing": 0.1,
    "mixup": 0.0,
    "class_weights": True,
    "patience": 10,
    "size": 48,
    "width": 1.0,
    "dropout": 0.4,
    "augment": True,
}


def parse(*argv: str) -> dict:
    return vars(build_parser().parse_args(["--out", "runs/x", *argv]))


def old_run(run_dir: Path, config: dict) -> Path:
    """A run directory interrupted after some epochs: its config.json and checkpoints/state.json."""
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps({**config, "out": str(run_dir)}))
    (run_dir / "checkpoints" / "state.json").write_text(json.dumps({"epoch": 3}))
    return run_dir


def test_every_setting_has_one_flag_and_unset_flags_stay_unset():
    parser = build_parser()
    dests = {action.dest for action in parser._actions}
    assert set(SETTINGS) <= dests
    # Only the flags given come back: --resume tells a changed setting from a default by that.
    assert parse() == {"out": "runs/x"}
    given = parse("--epochs", "5", "--no-augment", "--lr", "3e-4", "--arch", "vgg", "--no-calibrate")
    assert given == {
        "out": "runs/x",
        "epochs": 5,
        "augment": False,
        "lr": 3e-4,
        "arch": "vgg",
        "calibrate": False,
    }
    assert flag_name("class_weights") == "--no-class-weights" and flag_name("batch_size") == "--batch-size"


def test_help_shows_each_default_and_range_from_the_declaration():
    text = " ".join(build_parser().format_help().split())  # argparse wraps lines: compare on single spaces
    assert "--epochs N maximum epochs; early stopping usually ends sooner (at least 1; default 60)" in text
    assert (
        "--distill-alpha A weight of the teacher's probabilities in the targets (in (0, 1]; default 0.5)"
        in text
    )
    assert "(0 (off) or at least 2 epochs; default 0)" in text  # --average-last's own rule
    assert "--teacher RUNS distil from trained teacher(s)" in text and "files (default off)" in text
    assert "to 1% of --lr" in text  # the help's %% escape
    for name, default in DEFAULTS.items():
        if not isinstance(default, bool) and name not in ("data", "out"):
            shown = str(int(default)) if isinstance(default, float) and default.is_integer() else str(default)
            assert f"default {shown or 'off'}" in text, name


@pytest.mark.parametrize(
    "name, bad, message",
    [
        ("epochs", 0, "--epochs must be at least 1"),
        ("size", 8, "--size must be at least 16"),
        ("lr", 0.0, "--lr must be positive"),
        ("val_fraction", 1.0, "--val-fraction must be in (0, 1)"),
        ("label_smoothing", 1.0, "--label-smoothing must be in [0, 1)"),
        ("mixup", -0.1, "--mixup must be 0 (off) or positive"),
        ("class_weight_power", 0.0, "--class-weight-power must be in (0, 1]"),
        ("patience", -1, "--patience must be 0 (off) or positive"),
        ("width", 0.0, "--width must be positive"),
        ("dropout", 1.0, "--dropout must be in [0, 1)"),
        ("random_erasing", 1.5, "--random-erasing must be in [0, 1]"),
        ("distill_alpha", 0.0, "--distill-alpha must be in (0, 1]"),
        ("distill_temperature", -2.0, "--distill-temperature must be positive"),
        ("average_last", 1, "--average-last must be 0 (off) or at least 2 epochs"),
        ("arch", "resnet", "--arch 'resnet' is unknown (choose from cnn, mobilenet, vgg)"),
        ("schedule", "step", "--schedule 'step' is unknown (choose from cosine, plateau)"),
        ("dropout", float("nan"), "--dropout must be in [0, 1)"),
    ],
)
def test_a_value_out_of_range_is_refused_naming_the_flag(name, bad, message):
    with pytest.raises(TrainError) as caught:
        TrainConfig(**{name: bad}).check()
    assert str(caught.value) == message


def test_every_bad_value_is_named_at_once_and_edge_values_pass():
    with pytest.raises(TrainError, match=r"^--epochs must be at least 1; --lr must be positive$"):
        TrainConfig(epochs=0, lr=-1.0).check()
    edges = dict(
        epochs=1, size=16, label_smoothing=0.0, class_weight_power=1.0, random_erasing=1.0, average_last=2
    )
    assert TrainConfig(**edges).check().epochs == 1
    assert TrainConfig().check() == TrainConfig(**DEFAULTS)  # the defaults themselves are valid


def test_a_fresh_run_takes_the_flags_over_the_defaults(tmp_path):
    run_dir = tmp_path / "run"
    given = parse("--data", str(tmp_path), "--epochs", "5", "--mixup", "0.2")
    config = config_for_run(run_dir, {**given, "out": str(run_dir)}, resume=False, overwrite=False)
    assert asdict(config) == {
        **DEFAULTS,
        "data": str(tmp_path),
        "out": str(run_dir),
        "epochs": 5,
        "mixup": 0.2,
    }
    with pytest.raises(TrainError, match="--data is required"):
        config_for_run(run_dir, {"out": str(run_dir)}, resume=False, overwrite=False)
    with pytest.raises(
        TrainError, match=r"unknown training setting\(s\) 'epoch'; known: data, out, photos, arch"
    ):
        config_for_run(run_dir, {"data": str(tmp_path), "epoch": 5}, resume=False, overwrite=False)


def test_an_old_config_json_resumes_with_the_later_settings_at_their_defaults(tmp_path):
    run_dir = old_run(tmp_path / "old", OLD_CONFIG)
    config = config_for_run(run_dir, {"out": str(run_dir)}, resume=True, overwrite=False)
    assert asdict(config) == {**DEFAULTS, **OLD_CONFIG, "out": str(run_dir)}
    assert (config.teacher, config.init, config.average_last, config.calibrate) == ("", "", 0, True)
    # Settings that act after training may be added on --resume; a training one the old run lacked ran at its
    # default, so changing it is a conflict like any other.
    later = config_for_run(run_dir, {"average_last": 3, "calibrate": False}, resume=True, overwrite=False)
    assert (later.average_last, later.calibrate, later.epochs) == (3, False, 40)
    with pytest.raises(TrainError, match=r"conflicting flags: --random-erasing 0.3 \(the run used 0.0\)"):
        config_for_run(run_dir, {"random_erasing": 0.3}, resume=True, overwrite=False)
    with pytest.raises(TrainError, match=r"--no-augment False \(the run used True\)"):
        config_for_run(run_dir, {"augment": False}, resume=True, overwrite=False)
    # Giving the setting its saved value is no conflict.
    assert config_for_run(run_dir, {"epochs": 40, "arch": "vgg"}, resume=True, overwrite=False).lr == 0.001


def test_a_saved_config_with_a_key_this_version_dropped_still_resumes(tmp_path):
    run_dir = old_run(tmp_path / "run", {**OLD_CONFIG, "retired_setting": 3})
    config = config_for_run(run_dir, {}, resume=True, overwrite=False)
    assert not hasattr(config, "retired_setting") and config.arch == "vgg"
    assert {f.name for f in fields(config)} == set(DEFAULTS)


def test_the_cli_names_a_bad_flag_in_one_line_and_writes_nothing(tmp_path):
    # A subprocess, as a user runs it: the exit code, one error line, no traceback, no run directory.
    out = tmp_path / "run"
    args = ["--data", str(tmp_path), "--out", str(out), "--dropout", "1.5", "--epochs", "0"]
    done = subprocess.run(
        [sys.executable, "-m", "train.cli", *args], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2
    assert (
        done.stderr.strip().splitlines()[-1]
        == "error: --epochs must be at least 1; --dropout must be in [0, 1)"
    )
    assert "Traceback" not in done.stderr and not out.exists()
