"""The training run, top to bottom: config -> data -> model -> fit (checkpointed, resumable) -> reports.

The model lives in train/model.py, the input pipeline in train/pipeline.py, per-epoch checkpointing in
train/runstate.py and the final artifacts in train/report.py; this file only wires them together.
Nothing here needs TensorFlow unless Keras runs on it: KERAS_BACKEND=jax or torch trains the same model.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from train.model_files import split_specs

# -----------------------------------------------------------------------------------------------------------
# Defaults. Every value is saved in RUN_DIR/config.json; --resume reuses them and refuses conflicting flags.
# -----------------------------------------------------------------------------------------------------------
DEFAULTS = dict(
    data="",  # FER-2013 folders, fer2013.csv, or a folder of <label>/ folders
    out="",  # the run directory
    arch="cnn",  # a key of train.model.ARCHS
    epochs=60,  # upper bound; early stopping usually ends sooner
    batch_size=64,
    lr=2e-3,  # peak learning rate (reached after warmup)
    weight_decay=0.01,  # AdamW's decoupled weight decay
    schedule="cosine",  # "cosine" (linear warmup, then cosine decay to 1% of lr) or "plateau"
    warmup_epochs=2,
    seed=1337,
    val_fraction=0.1,  # only used when the data has neither a val nor a test split
    label_smoothing=0.0,
    mixup=0.0,  # Beta(alpha, alpha); 0 = off
    class_weights=True,  # balanced class weights: FER's "disgust" is 16x rarer than "happy"
    class_weight_power=1.0,  # 1 = fully balanced, 0.5 = square root of the balanced weights (softer)
    patience=10,  # early-stopping patience in epochs on val accuracy; 0 = off
    size=48,  # square input side in pixels
    width=1.0,  # channel-width multiplier of the architecture
    dropout=0.3,
    augment=True,  # flip, rotation/shift/zoom, brightness/contrast
    random_erasing=0.0,  # probability per image; 0 = off
    teacher="",  # distillation: comma-separated teacher run dirs or .keras files; "" = off
    distill_alpha=0.5,  # weight of the teacher's probabilities in the targets
    distill_temperature=2.0,  # softens the teacher's probabilities (1 = as they are)
    init="",  # warm start: a trained run dir or .keras file whose weights replace the random init; "" = off
    average_last=0,  # average the last K epochs' weights (BatchNorm re-estimated); kept unless clearly worse
    calibrate=True,  # fit a softmax temperature on validation so published confidences match accuracy
)
# Flags that act only after the last epoch: --resume may change them, even on a finished run.
AFTER_TRAINING = ("average_last", "calibrate")
# The keys of train.model.ARCHS, repeated here so flag checks need no Keras import (a test keeps them equal).
ARCH_NAMES = ("cnn", "mobilenet", "vgg")
ARTIFACTS = [
    "model.keras",
    "model.json",
    "config.json",
    "history.csv",
    "curves.png",
    "confusion.png",
    "metrics.json",
    "report.txt",
    "checkpoints",
]


class TrainError(Exception):
    """A problem with the run directory or the flags; the message says what to do."""


@dataclass
class TrainConfig:
    data: str = DEFAULTS["data"]
    out: str = DEFAULTS["out"]
    arch: str = DEFAULTS["arch"]
    epochs: int = DEFAULTS["epochs"]
    batch_size: int = DEFAULTS["batch_size"]
    lr: float = DEFAULTS["lr"]
    weight_decay: float = DEFAULTS["weight_decay"]
    schedule: str = DEFAULTS["schedule"]
    warmup_epochs: int = DEFAULTS["warmup_epochs"]
    seed: int = DEFAULTS["seed"]
    val_fraction: float = DEFAULTS["val_fraction"]
    label_smoothing: float = DEFAULTS["label_smoothing"]
    mixup: float = DEFAULTS["mixup"]
    class_weights: bool = DEFAULTS["class_weights"]
    class_weight_power: float = DEFAULTS["class_weight_power"]
    patience: int = DEFAULTS["patience"]
    size: int = DEFAULTS["size"]
    width: float = DEFAULTS["width"]
    dropout: float = DEFAULTS["dropout"]
    augment: bool = DEFAULTS["augment"]
    random_erasing: float = DEFAULTS["random_erasing"]
    teacher: str = DEFAULTS["teacher"]
    distill_alpha: float = DEFAULTS["distill_alpha"]
    distill_temperature: float = DEFAULTS["distill_temperature"]
    init: str = DEFAULTS["init"]
    average_last: int = DEFAULTS["average_last"]
    calibrate: bool = DEFAULTS["calibrate"]

    def check(self) -> TrainConfig:
        problems = []
        if self.arch not in ARCH_NAMES:
            problems.append(f"--arch {self.arch!r} is unknown (choose from {', '.join(ARCH_NAMES)})")
        for name, low in (("epochs", 1), ("batch_size", 1), ("size", 16)):
            if getattr(self, name) < low:
                problems.append(f"--{name.replace('_', '-')} must be at least {low}")
        if self.lr <= 0:
            problems.append("--lr must be positive")
        if not 0 < self.val_fraction < 1:
            problems.append("--val-fraction must be between 0 and 1")
        if not 0 <= self.label_smoothing < 1:
            problems.append("--label-smoothing must be in [0, 1)")
        if self.mixup < 0:
            problems.append("--mixup must be 0 (off) or a positive Beta alpha")
        if not 0 < self.class_weight_power <= 1:
            problems.append("--class-weight-power must be in (0, 1]")
        if self.patience < 0:
            problems.append("--patience must be 0 (off) or positive")
        if self.schedule not in ("cosine", "plateau"):
            problems.append("--schedule must be 'cosine' or 'plateau'")
        if not 0 <= self.dropout < 1 or not 0 <= self.random_erasing <= 1 or self.width <= 0:
            problems.append("--dropout must be in [0, 1), --random-erasing in [0, 1], --width positive")
        if not 0 < self.distill_alpha <= 1 or self.distill_temperature <= 0:
            problems.append("--distill-alpha must be in (0, 1], --distill-temperature positive")
        if self.average_last < 0 or self.average_last == 1:
            problems.append("--average-last must be 0 (off) or at least 2 epochs")
        if problems:
            raise TrainError("; ".join(problems))
        return self


def config_for_run(run_dir: Path, given: dict, resume: bool, overwrite: bool) -> TrainConfig:
    """The resolved config: defaults < saved config (on --resume) < flags given; refuses unsafe states."""
    config_path = run_dir / "config.json"
    known = {f.name for f in fields(TrainConfig)}
    given = {k: v for k, v in given.items() if k in known}
    if resume:
        if not (run_dir / "checkpoints" / "state.json").is_file() or not config_path.is_file():
            raise TrainError(
                f"nothing to resume in {run_dir}: no checkpoints/state.json (start it without --resume)"
            )
        # A key the saved config lacks (the run predates the flag) ran at its default.
        saved = {**DEFAULTS, **json.loads(config_path.read_text())}
        conflicts = [
            f"--{k.replace('_', '-')} {given[k]!r} (the run used {saved[k]!r})"
            for k in given
            if k not in ("data", "out", *AFTER_TRAINING) and given[k] != saved[k]
        ]
        if given.get("data") and Path(given["data"]).resolve() != Path(saved["data"]).resolve():
            conflicts.append(f"--data {given['data']} (the run used {saved['data']})")
        if conflicts:
            raise TrainError(
                f"{run_dir} was started with a different config; conflicting flags: {'; '.join(conflicts)}. "
                "Drop them to resume, or use a new --out"
            )
        after = {k: v for k, v in given.items() if k in AFTER_TRAINING}
        kept = {k: v for k, v in saved.items() if k in known}
        return TrainConfig(**{**kept, **after, "out": str(run_dir)}).check()
    existing = [name for name in ARTIFACTS if (run_dir / name).exists()]
    # A run stopped before its first epoch ended holds nothing worth keeping (no weights, no state):
    # starting again replaces it, so an interrupted `make model` simply works when rerun.
    worthless = (
        not (run_dir / "model.keras").exists() and not (run_dir / "checkpoints" / "state.json").exists()
    )
    if existing and not overwrite and not worthless:
        if (run_dir / "metrics.json").exists():
            what = "a finished run"
        else:
            what = "an unfinished run (continue it with --resume)"
        raise TrainError(
            f"{run_dir} already holds {what}; pass --overwrite to replace it or choose another --out"
        )
    if existing:  # --overwrite must not delete the model this run is about to read
        for flag in ("init", "teacher"):
            for part in split_specs(str(given.get(flag) or "")):
                if Path(part).expanduser().resolve().is_relative_to(run_dir.resolve()):
                    raise TrainError(
                        f"--{flag} {part} is inside {run_dir}, which --overwrite would delete; "
                        "write the new run to another --out"
                    )
    if not given.get("data"):
        raise TrainError("--data is required")
    return TrainConfig(**given).check()


def resume_seed(seed: int, epoch: int) -> int:
    """The global seed for a run continuing after `epoch` finished epochs: `seed` itself for a fresh run, else
    a different one per resume point (the numpy pipeline seeds each epoch itself and is unaffected)."""
    if epoch == 0:
        return seed
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0] % 2**31)


def load_last_checkpoint(run_dir: Path, state):
    """checkpoints/last.keras with its optimizer state, for --resume; from now on this backend writes it.

    A JAX checkpoint resumes under TensorFlow and back, but one written on torch names torch's own AdamW
    class, which no other backend can import: say which backend to resume on instead of Keras's traceback.
    """
    import keras

    path = run_dir / "checkpoints" / "last.keras"
    here = keras.backend.backend()
    try:
        model = keras.models.load_model(path)
    except Exception as exc:  # Keras raises many types for an archive it cannot rebuild
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        if state.backend and state.backend != here:
            raise TrainError(
                f"{path} was written on Keras's {state.backend} backend and does not load on {here} "
                f"({first_line[:200]}); resume with KERAS_BACKEND={state.backend}"
            ) from None
        raise TrainError(f"{path} could not be loaded to resume from: {first_line[:200]}") from None
    state.backend = here
    return model


def remove_run_files(run_dir: Path) -> None:
    """What a run writes, and nothing else in the folder (a user's notes stay)."""
    for name in ARTIFACTS:
        target = run_dir / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()


def run(config: TrainConfig, resume=False, quiet=False, cache_dir=None, use_cache=True, callbacks=()) -> dict:
    """Train (or continue) the run in config.out; returns metrics.json's content.

    A fresh run replaces the files of a previous run in config.out (config_for_run decides whether it may),
    but only once the data, the flags, any teacher and any --init have been checked and loaded.
    """
    from edge.model_contract import write_text_atomic
    from train.data import load_dataset, split_for_validation
    from train.distill import Teacher, TeacherError, check_teachers, teacher_model_paths
    from train.warmstart import InitError, check_init_contract, copy_weights, init_model_path

    say = print
    run_dir = Path(config.out)

    # --- data: decoded once, then read from the cache (before TensorFlow loads, so data errors are quick) ---
    t0 = time.perf_counter()
    dataset = load_dataset(config.data, (config.size, config.size), cache_dir=cache_dir, use_cache=use_cache)
    train_split, val_split, val_name = split_for_validation(dataset, config.val_fraction, config.seed)
    num_classes = len(dataset.labels)
    say(
        f"data: {dataset.source} ({dataset.format}{', cached' if dataset.from_cache else ''}, "
        f"{time.perf_counter() - t0:.1f}s): {len(train_split)} train, {len(val_split)} validation "
        f"('{val_name}'), {num_classes} labels {dataset.labels}, {len(dataset.skipped)} files skipped"
    )
    teacher = None
    if config.teacher:
        try:
            teacher_paths = teacher_model_paths(config.teacher)
            check_teachers(teacher_paths, dataset.labels, config.size)
            teacher = Teacher.load(teacher_paths, config.distill_temperature)
        except TeacherError as exc:
            raise TrainError(str(exc)) from None
        say(
            f"distilling from {len(teacher_paths)} teacher(s) {[str(p) for p in teacher_paths]}: "
            f"alpha {config.distill_alpha}, temperature {config.distill_temperature}"
        )

    def build_model():
        from train.model import make_model

        shape = (config.size, config.size, 1)
        return make_model(config.arch, shape, num_classes, width=config.width, dropout=config.dropout)

    warm_model = None
    if config.init and not resume:  # on --resume the checkpoint already holds the (trained-on) weights
        import keras

        try:
            init_path = init_model_path(config.init)
            check_init_contract(init_path, dataset.labels, config.size)
            keras.utils.set_random_seed(config.seed)
            warm_model = build_model()
            copy_weights(warm_model, init_path)
        except InitError as exc:
            raise TrainError(str(exc)) from None
        say(f"warm start: weights from {init_path}")
    # Only now the run directory is created, or a previous run in it replaced: bad data, a bad teacher or a
    # bad --init leaves nothing behind, and destroys nothing.
    if not resume:
        remove_run_files(run_dir)
    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    write_text_atomic(run_dir / "config.json", json.dumps(asdict(config), indent=2) + "\n")

    import keras

    from train import report
    from train.model import estimate_macs
    from train.pipeline import balanced_class_weights, epoch_callbacks, make_train_dataset, to_model_input
    from train.runstate import RunDirCheckpoint, RunState, settle_checkpoints

    state_path = run_dir / "checkpoints" / "state.json"
    state = RunState.load(state_path) if resume else RunState(backend=keras.backend.backend())
    settle_checkpoints(run_dir, state)  # an interruption at an epoch's end left its models half-moved
    # tf.data's shuffle and augmentation streams start afresh in every process: seeded with config.seed alone,
    # each resume would replay epoch 1's shuffle order. A fresh run (epoch 0) keeps config.seed.
    keras.utils.set_random_seed(resume_seed(config.seed, state.epoch))
    class_weights = (
        balanced_class_weights(train_split.labels, num_classes, config.class_weight_power)
        if config.class_weights
        else None
    )
    train_ds = make_train_dataset(
        train_split.images,
        train_split.labels,
        num_classes,
        config.batch_size,
        config.seed,
        class_weights=class_weights,
        augment=config.augment,
        random_erasing=config.random_erasing,
        mixup=config.mixup,
        initial_epoch=state.epoch,
        teacher=teacher,
        distill_alpha=config.distill_alpha,
    )
    val_x = to_model_input(val_split.images)
    val_y = keras.utils.to_categorical(val_split.labels, num_classes)

    # --- model: fresh, or the last checkpoint with its optimizer state --------------------------------------
    finished = state.stopped_early or state.epoch >= config.epochs
    if resume:
        model = load_last_checkpoint(run_dir, state)
        where = "all epochs done" if finished else f"resuming at epoch {state.epoch + 1}/{config.epochs}"
        say(f"{where} (best val_accuracy {state.best_val_accuracy:.4f})")
    else:
        model = warm_model if warm_model is not None else build_model()
        steps_per_epoch = -(-len(train_split) // config.batch_size)
        if config.schedule == "cosine":
            warmup = min(config.warmup_epochs * steps_per_epoch, config.epochs * steps_per_epoch // 2)
            lr = keras.optimizers.schedules.CosineDecay(
                initial_learning_rate=config.lr * 0.01,
                decay_steps=max(1, config.epochs * steps_per_epoch - warmup),
                alpha=0.01,
                warmup_target=config.lr,
                warmup_steps=warmup,
            )
        else:
            lr = config.lr
        model.compile(
            optimizer=keras.optimizers.AdamW(learning_rate=lr, weight_decay=config.weight_decay),
            loss=keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing),
            # A metric object, not the string "accuracy": the string breaks on TF 2.21 + Keras 3.15.
            metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
        )
    params, macs = model.count_params(), estimate_macs(model)
    say(f"model: {config.arch}, {params:,} parameters, {macs / 1e6:.1f}M MACs per face")

    # --- fit: one checkpoint per epoch -----------------------------------------------------------------------
    checkpoint = RunDirCheckpoint(
        run_dir,
        state,
        config.patience,
        config.schedule == "plateau",
        config.epochs,
        quiet,
        keep_epochs=config.average_last,
    )
    if not finished:
        model.fit(
            train_ds,
            validation_data=(val_x, val_y),
            epochs=config.epochs,
            initial_epoch=state.epoch,
            callbacks=[*epoch_callbacks(train_ds), checkpoint, *callbacks],
            verbose=0 if quiet else 1,
            shuffle=False,  # the input pipeline shuffles
        )

    # --- weight average of the last epochs: replaces model.keras unless clearly worse on validation ----------
    average = None
    if config.average_last:
        from train.averaging import average_last_epochs

        try:
            average = average_last_epochs(
                run_dir,
                state.epoch,
                config.average_last,
                state.best_val_accuracy,
                train_split.images,
                val_x,
                val_split.labels,
                config.seed,
            )
        except ValueError as exc:  # a kept file of another network: only if someone put it there
            raise TrainError(f"--average-last: {exc}") from None
        say(report.describe_average(average))

    # --- confidence calibration: one temperature, fitted on validation, folded into the last layer -----------
    calibration = None
    if config.calibrate:
        from train.calibration import calibrate_model_file

        calibration = calibrate_model_file(run_dir / "model.keras", val_x, val_split.labels)
        say(report.describe_calibration(calibration))

    # --- reports on the best model --------------------------------------------------------------------------
    best = keras.models.load_model(run_dir / "model.keras")
    probs = best.predict(val_x, batch_size=256, verbose=0)
    metrics = report.write_run_artifacts(
        run_dir,
        config=asdict(config),
        dataset=dataset,
        train_count=len(train_split),
        val_name=val_name,
        val_labels=val_split.labels,
        val_pred=probs.argmax(axis=1),
        state=checkpoint.state,
        history_rows=checkpoint.history_rows,
        params=params,
        macs=macs,
        weight_average=average,
        calibration=calibration,
    )
    chosen = "weight average" if average and average["used"] else f"best epoch {state.best_epoch + 1}"
    say(
        f"{chosen}: val accuracy {metrics['validation']['accuracy']:.4f}, "
        f"macro-F1 {metrics['validation']['macro_f1']:.4f}; wrote {run_dir}/model.keras and reports"
    )
    return metrics
