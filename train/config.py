"""Training settings: each one declared once, as a TrainConfig field whose metadata drives everything else.

A field's `setting(...)` says its default, its flag, its allowed range or choices and its help text; from that
`add_setting_flags` builds the argparse flags (and `--help`, which shows each default and range), `check`
rejects values out of range naming the flag, and `config_for_run` resolves defaults < saved config.json (on
--resume) < flags given. Every value is saved in RUN_DIR/config.json; --resume reuses them and refuses
conflicting flags. A config.json from an older version lacks the settings added since: they ran at their
defaults, which is what the missing keys resolve to.

Nothing here imports Keras or TensorFlow, so flag errors are instant.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from train.model_files import split_specs

# The keys of train.model.ARCHS, repeated here so flag checks need no Keras import (a test keeps them equal).
ARCH_NAMES = ("cnn", "mobilenet", "vgg")
# What a run writes into RUN_DIR; --overwrite deletes these and nothing else.
ARTIFACTS = [
    "model.keras",
    "model.json",
    "config.json",
    "history.csv",
    "curves.png",
    "confusion.png",
    "metrics.json",
    "report.txt",
    "training_crops.png",
    "checkpoints",
]


class TrainError(Exception):
    """A problem with the run directory or the flags; the message says what to do."""


def setting(
    default,
    help: str,
    *,
    metavar: str | None = None,
    lo: float | None = None,
    hi: float | None = None,
    lo_open: bool = False,
    hi_open: bool = False,
    choices: tuple[str, ...] | None = None,
    off: str | None = None,
    flag: str | None = None,
    rule: tuple[Any, str] | None = None,
    after_training: bool = False,
):
    """A TrainConfig field with what its flag, its check and its help line need.

    lo/hi bound the value (inclusive unless lo_open/hi_open); `choices` lists the allowed strings; `off` names
    the default's meaning in --help ("off"); `flag` overrides the flag name (a bool's `--no-...` switch);
    `rule` is (predicate, text) for a rule an interval cannot say; `after_training` marks a setting that acts
    only after the last epoch, so --resume may change it, even on a finished run.
    """
    meta = dict(
        help=help,
        metavar=metavar,
        lo=lo,
        hi=hi,
        lo_open=lo_open,
        hi_open=hi_open,
        choices=choices,
        off=off,
        flag=flag,
        rule=rule,
        after_training=after_training,
    )
    return field(default=default, metadata=meta)


@dataclass
class TrainConfig:
    data: str = setting(
        "",
        "FER-2013 folder (train/ test/ [val/]), fer2013.csv, or a folder of <label>/ folders (required, except "
        "with --resume)",
        metavar="PATH",
    )
    out: str = setting(
        "", "run directory for the model, checkpoints and reports (required)", metavar="RUN_DIR"
    )
    photos: str = setting(
        "",
        "also train on real photos of people: a folder of <label>/ photos (e.g. ../shared/data/photos) cut by "
        "the daemon's detector and framing (train/photos.py); its person-disjoint train half joins --data's "
        "training split and its held-out half is validated and reported separately (the model is still chosen "
        "on --data's validation split)",
        metavar="PATH",
        off="off",
    )
    arch: str = setting("cnn", "architecture", choices=ARCH_NAMES)
    epochs: int = setting(60, "maximum epochs; early stopping usually ends sooner", metavar="N", lo=1)
    batch_size: int = setting(64, "batch size", metavar="N", lo=1)
    lr: float = setting(
        2e-3, "peak learning rate of AdamW (reached after warmup)", metavar="LR", lo=0, lo_open=True
    )
    weight_decay: float = setting(0.01, "AdamW's decoupled weight decay", metavar="WD")
    schedule: str = setting(
        "cosine",
        "LR schedule: cosine (linear warmup, then decay to 1%% of --lr) or halve on plateau",
        choices=("cosine", "plateau"),
    )
    warmup_epochs: int = setting(2, "linear warmup epochs for cosine", metavar="N")
    seed: int = setting(1337, "random seed for splits, shuffling and init", metavar="SEED")
    val_fraction: float = setting(
        0.1,
        "fraction of train held out for validation when the data has no val/test split",
        metavar="F",
        lo=0,
        hi=1,
        lo_open=True,
        hi_open=True,
    )
    label_smoothing: float = setting(
        0.0, "label smoothing epsilon", metavar="E", lo=0, hi=1, hi_open=True, off="off"
    )
    mixup: float = setting(0.0, "mixup with Beta(ALPHA, ALPHA); try 0.2", metavar="ALPHA", lo=0, off="off")
    # FER's "disgust" is 16x rarer than "happy": without class weights the model all but never predicts it.
    class_weights: bool = setting(True, "do not weight rare classes up", flag="--no-class-weights")
    class_weight_power: float = setting(
        1.0,
        "raise the balanced class weights to P: 1 = fully balanced, 0.5 = square root (softer)",
        metavar="P",
        lo=0,
        hi=1,
        lo_open=True,
    )
    patience: int = setting(
        10, "early-stop after N epochs without better val accuracy", metavar="N", lo=0, off="off"
    )
    size: int = setting(48, "square input size in pixels", metavar="PX", lo=16)
    width: float = setting(
        1.0, "channel-width multiplier of the architecture", metavar="M", lo=0, lo_open=True
    )
    dropout: float = setting(0.3, "dropout before the classifier", metavar="P", lo=0, hi=1, hi_open=True)
    augment: bool = setting(True, "turn off flip/rotation/shift/zoom/brightness", flag="--no-augment")
    # The geometric augmentation's ranges. The daemon's crop of one face moves by a few percent between views
    # (benchmarks/framing_noise.py, MODEL_CARD.md): these defaults cover that, and FER-2013's own spread.
    augment_degrees: float = setting(
        10.0, "augmentation: rotation range, +- degrees", metavar="DEG", lo=0, hi=45
    )
    augment_shift: float = setting(
        0.08, "augmentation: shift range, +- fraction of the side", metavar="F", lo=0, hi=0.5
    )
    augment_zoom: float = setting(
        0.1, "augmentation: zoom range, scale in [1 - Z, 1 + Z]", metavar="Z", lo=0, hi=1, hi_open=True
    )
    random_erasing: float = setting(
        0.0, "erase a random patch with probability P", metavar="P", lo=0, hi=1, off="off"
    )
    # Camera degradations (train/degrade.py): defaults measured by benchmarks/camera_degradations.py.
    degrade: float = setting(
        0.0,
        "degrade this share of training crops as a room camera and the daemon would (small face upscaled, blur, "
        "noise, JPEG, gamma, flat grey contrast; each step with probability 0.5)",
        metavar="P",
        lo=0,
        hi=1,
        off="off",
    )
    degrade_face_px: int = setting(
        37, "degradation: smallest face, in frame pixels of the crop's side", metavar="PX", lo=8
    )
    degrade_blur: float = setting(
        0.85, "degradation: largest Gaussian blur sigma, model pixels", metavar="S", lo=0
    )
    degrade_noise: float = setting(
        0.0,
        "degradation: largest sensor noise sigma, grey levels at the face's resolution",
        metavar="S",
        lo=0,
    )
    degrade_jpeg: int = setting(
        95, "degradation: lowest JPEG quality (100 = no JPEG step)", metavar="Q", lo=1, hi=100
    )
    degrade_gamma: float = setting(1.71, "degradation: gamma in [1/G, G]", metavar="G", lo=1)
    degrade_contrast: float = setting(
        0.42, "degradation: contrast scaled by [C, 1]", metavar="C", lo=0, hi=1, lo_open=True
    )
    soft_labels: str = setting(
        "",
        "crowd votes per image as training targets (train/softlabels.py): a CSV of file,<label votes>... or a "
        "folder of them such as ../shared/data/ferplus; images without a row keep their label. The validation "
        "split is then scored, and the model chosen, on the votes' majority labels",
        metavar="PATH",
        off="off",
    )
    soft_label_mix: float = setting(
        1.0, "targets = (1 - M) * original label + M * vote distribution", metavar="M", lo=0, hi=1
    )
    soft_label_other: str = setting(
        "renormalise",
        "votes for none of the labels (FER+ contempt, unknown, not a face): renormalise over the labels, or "
        "count them for the original label",
        choices=("renormalise", "original"),
    )
    photo_weight: float = setting(
        1.0,
        "weight of each --photos training crop in the loss, relative to a --data image",
        metavar="W",
        lo=0,
        lo_open=True,
    )
    precision: str = setting(
        "float32",
        "Keras dtype policy for training: mixed_bfloat16 computes in bfloat16 with float32 weights "
        "(benchmarks/train_step_speed.py measures whether it is faster on this CPU); convert writes float32",
        choices=("float32", "mixed_bfloat16"),
    )
    teacher: str = setting(
        "",
        "distil from trained teacher(s): comma-separated run directories or .keras files",
        metavar="RUNS",
        off="off",
    )
    distill_alpha: float = setting(
        0.5, "weight of the teacher's probabilities in the targets", metavar="A", lo=0, hi=1, lo_open=True
    )
    distill_temperature: float = setting(
        2.0, "temperature that softens the teacher's probabilities", metavar="T", lo=0, lo_open=True
    )
    init: str = setting(
        "",
        "start from a trained model's weights (run directory, .keras, or an int8 .tflite with its .json such as "
        "edge/models/default.tflite; same --arch, --width, labels) instead of random ones; the optimizer and "
        "schedule start afresh",
        metavar="RUN",
        off="off",
    )
    average_last: int = setting(
        0,
        "after training, average the last K epochs' weights and re-estimate BatchNorm on train faces; the average "
        "replaces the best epoch's model unless that epoch validates better by more than one standard error",
        metavar="K",
        off="off",
        rule=(lambda k: k == 0 or k >= 2, "0 (off) or at least 2 epochs"),
        after_training=True,
    )
    calibrate: bool = setting(
        True,
        "do not fit a softmax temperature on validation (by default one is folded into the last layer so "
        "confidences match accuracy; the predicted class never changes)",
        flag="--no-calibrate",
        after_training=True,
    )

    def check(self) -> TrainConfig:
        """Every value within its setting's range; one TrainError naming every bad flag."""
        problems = [problem(f, getattr(self, f.name)) for f in fields(self)]
        problems = [p for p in problems if p]
        if problems:
            raise TrainError("; ".join(problems))
        return self


SETTINGS = {f.name: f for f in fields(TrainConfig)}
DEFAULTS = {name: f.default for name, f in SETTINGS.items()}
PATHS = ("data", "photos", "soft_labels")  # compared as folders on --resume, not as strings
AFTER_TRAINING = tuple(name for name, f in SETTINGS.items() if f.metadata["after_training"])


def flag_name(name: str) -> str:
    """The flag that sets a value (a bool's `--no-...` switch turns it off): "batch_size" -> "--batch-size"."""
    return SETTINGS[name].metadata["flag"] or "--" + name.replace("_", "-")


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def describe_range(meta: dict) -> str:
    """ "in (0, 1]", "at least 16", "positive", ...: the rule as the error and --help state it."""
    lo, hi = meta["lo"], meta["hi"]
    if lo is not None and hi is not None:
        left, right = "(" if meta["lo_open"] else "[", ")" if meta["hi_open"] else "]"
        return f"in {left}{_number(lo)}, {_number(hi)}{right}"
    if lo is not None and meta["lo_open"]:
        return "positive" if lo == 0 else f"greater than {_number(lo)}"
    if lo is not None:
        return "0 (off) or positive" if lo == 0 and meta["off"] else f"at least {_number(lo)}"
    return ""


def problem(f, value) -> str:
    """What is wrong with a setting's value ("--lr must be positive"), or "" when it is allowed."""
    meta, flag = f.metadata, flag_name(f.name)
    if meta["choices"] and value not in meta["choices"]:
        return f"{flag} {value!r} is unknown (choose from {', '.join(meta['choices'])})"
    if meta["rule"] and not meta["rule"][0](value):
        return f"{flag} must be {meta['rule'][1]}"
    lo, hi = meta["lo"], meta["hi"]
    too_low = lo is not None and (value <= lo if meta["lo_open"] else value < lo)
    too_high = hi is not None and (value >= hi if meta["hi_open"] else value > hi)
    if too_low or too_high or (isinstance(value, float) and math.isnan(value)):
        return f"{flag} must be {describe_range(meta)}"
    return ""


def _help(f) -> str:
    """The help line: what it does, then its range and default, both from the declaration."""
    meta = f.metadata
    if isinstance(f.default, bool) or f.name in ("data", "out"):
        return meta["help"]
    notes = [meta["rule"][1] if meta["rule"] else describe_range(meta)]
    default = _number(f.default) if isinstance(f.default, (int, float)) else f.default
    if meta["off"] and not f.default and "(off)" not in notes[0]:
        notes.append(f"default {default} = off" if default else "default off")
    else:
        notes.append(f"default {default}")
    return f"{meta['help']} ({'; '.join(n for n in notes if n)})"


def add_setting_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig field, in declaration order. Defaults stay unset (argparse.SUPPRESS) so
    config_for_run can tell the flags the user gave from the rest."""
    group = parser.add_argument_group(
        "training settings (saved in RUN_DIR/config.json; --resume reuses them)"
    )
    for f in fields(TrainConfig):
        meta = f.metadata
        options: dict[str, Any] = dict(dest=f.name, help=_help(f), default=argparse.SUPPRESS)
        if isinstance(f.default, bool):
            options["action"] = "store_false" if f.default else "store_true"
        else:
            options.update(type=type(f.default), metavar=meta["metavar"], choices=meta["choices"])
            options["required"] = f.name == "out"
        group.add_argument(flag_name(f.name), **options)


# -----------------------------------------------------------------------------------------------------------
# Resolving the config of a run: a fresh one from the flags, a resumed one from its config.json
# -----------------------------------------------------------------------------------------------------------


def config_for_run(run_dir: Path, given: dict, resume: bool, overwrite: bool) -> TrainConfig:
    """The resolved config: defaults < saved config (on --resume) < flags given; refuses unsafe states.

    `given` holds only settings (TrainConfig's fields): a misspelt key is refused by name, not ignored."""
    unknown = sorted(set(given) - set(SETTINGS))
    if unknown:
        raise TrainError(
            f"unknown training setting(s) {', '.join(map(repr, unknown))}; known: {', '.join(SETTINGS)}"
        )
    if resume:
        return _resumed_config(run_dir, given)
    _check_fresh_run_dir(run_dir, given, overwrite)
    if not given.get("data"):
        raise TrainError("--data is required")
    return TrainConfig(**given).check()


def saved_config(run_dir: Path) -> dict:
    """RUN_DIR/config.json over the defaults: a key the saved config lacks (the run predates the setting) ran
    at its default; a key this version no longer knows is dropped."""
    saved = json.loads((run_dir / "config.json").read_text())
    return {**DEFAULTS, **{k: v for k, v in saved.items() if k in SETTINGS}}


def _resumed_config(run_dir: Path, given: dict) -> TrainConfig:
    if not (run_dir / "checkpoints" / "state.json").is_file() or not (run_dir / "config.json").is_file():
        raise TrainError(
            f"nothing to resume in {run_dir}: no checkpoints/state.json (start it without --resume)"
        )
    saved = saved_config(run_dir)
    conflicts = [
        f"{flag_name(k)} {given[k]!r} (the run used {saved[k]!r})"
        for k in given
        if k not in (*PATHS, "out", *AFTER_TRAINING) and given[k] != saved[k]
    ]
    for k in PATHS:  # the same folder, however it is spelt
        if given.get(k) and Path(given[k]).resolve() != Path(saved[k] or ".").resolve():
            conflicts.append(f"{flag_name(k)} {given[k]} (the run used {saved[k] or 'none'})")
    if conflicts:
        raise TrainError(
            f"{run_dir} was started with a different config; conflicting flags: {'; '.join(conflicts)}. "
            "Drop them to resume, or use a new --out"
        )
    after = {k: v for k, v in given.items() if k in AFTER_TRAINING}
    return TrainConfig(**{**saved, **after, "out": str(run_dir)}).check()


def _check_fresh_run_dir(run_dir: Path, given: dict, overwrite: bool) -> None:
    """A fresh run may replace only a run stopped before its first epoch, or any with --overwrite, and never
    one holding the --init or --teacher model it is about to read."""
    existing = [name for name in ARTIFACTS if (run_dir / name).exists()]
    # A run stopped before its first epoch ended holds nothing worth keeping (no weights, no state):
    # starting again replaces it, so an interrupted `make model` simply works when rerun.
    worthless = (
        not (run_dir / "model.keras").exists() and not (run_dir / "checkpoints" / "state.json").exists()
    )
    if existing and not overwrite and not worthless:
        what = (
            "a finished run"
            if (run_dir / "metrics.json").exists()
            else "an unfinished run (continue it with --resume)"
        )
        raise TrainError(
            f"{run_dir} already holds {what}; pass --overwrite to replace it or choose another --out"
        )
    if not existing:
        return
    for flag in ("init", "teacher"):  # --overwrite must not delete the model this run is about to read
        for part in split_specs(str(given.get(flag) or "")):
            if Path(part).expanduser().resolve().is_relative_to(run_dir.resolve()):
                raise TrainError(
                    f"--{flag} {part} is inside {run_dir}, which --overwrite would delete; "
                    "write the new run to another --out"
                )
