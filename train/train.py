"""The training run, top to bottom: config -> data -> model -> fit (checkpointed, resumable) -> reports.

The settings live in train/config.py, the model in train/model.py, the input pipeline in train/pipeline.py,
per-epoch checkpointing in train/runstate.py and the final artifacts in train/report.py; this file only wires
them together. Nothing here needs TensorFlow unless Keras runs on it: KERAS_BACKEND=jax or torch trains the
same model.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from train.config import ARTIFACTS, TrainConfig, TrainError

say = print  # the run's console lines (one place to change if they ever go to a logger)


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


@dataclass
class RunData:
    """The decoded data of a run, split for training and validation."""

    dataset: object  # train.data.Dataset
    train: object  # train.data.Split
    val: object
    val_name: str
    # Further validation sets, by name (e.g. "photos:held-out"), reported beside the primary one, never used to
    # choose epochs: the model is chosen on `val` alone.
    extra_val: dict = field(default_factory=dict)
    extra_skipped: list = field(default_factory=list)  # (file, reason) of the extra sources
    train_targets: object = None  # (N, C) soft targets (--soft-labels), else None: one-hot labels
    train_weights: object = None  # (N,) per-sample loss weights from the source (--photo-weight), else None
    notes: list = field(default_factory=list)  # lines report.txt adds about the data (label mix, counts)
    sources: list = field(default_factory=list)  # [(name, images)]: the training split's parts, in order

    @property
    def labels(self) -> list[str]:
        return self.dataset.labels

    @property
    def num_classes(self) -> int:
        return len(self.dataset.labels)


def load_data(config: TrainConfig, cache_dir, use_cache: bool) -> RunData:
    """Decoded once, then read from the cache (before Keras loads, so data errors are quick)."""
    from train.data import load_dataset, split_for_validation

    t0 = time.perf_counter()
    dataset = load_dataset(config.data, (config.size, config.size), cache_dir=cache_dir, use_cache=use_cache)
    data = RunData(dataset, *split_for_validation(dataset, config.val_fraction, config.seed))
    data.sources.append((Path(dataset.source).name or "data", len(data.train)))
    say(
        f"data: {dataset.source} ({dataset.format}{', cached' if dataset.from_cache else ''}, "
        f"{time.perf_counter() - t0:.1f}s): {len(data.train)} train, {len(data.val)} validation "
        f"('{data.val_name}'), {data.num_classes} labels {data.labels}, {len(dataset.skipped)} files skipped"
    )
    if config.photos:
        add_photos(data, config, cache_dir, use_cache)
    if config.soft_labels:
        add_soft_labels(data, config)
    add_small_face_validation(data, config)
    return data


# Face sizes (frame pixels of the crop's side) every run is also validated at: faces this small reach the
# model from a room camera, upscaled to its input size by the daemon.
SMALL_FACE_PX = (24, 32, 40)


def add_small_face_validation(data: RunData, config: TrainConfig) -> None:
    """The validation split as faces of 24, 32 and 40 px would give it (train/degrade.py's small_face)."""
    from train.data import Split
    from train.degrade import small_face

    for side in SMALL_FACE_PX:
        if side < config.size:
            val = data.val
            data.extra_val[f"{data.val_name}@{side}px"] = Split(
                small_face(val.images, side), val.labels, val.files
            )


def add_soft_labels(data: RunData, config: TrainConfig) -> None:
    """--soft-labels: training targets mix in the votes; validation is scored on the votes' majority labels
    (the faces that have one), the original labels stay beside them as a further validation."""
    from train.softlabels import load_soft_labels, majority_labels, training_targets

    soft = load_soft_labels(config.soft_labels, data.labels)
    data.train_targets, voted = training_targets(
        soft, data.train.files, data.train.labels, config.soft_label_mix, config.soft_label_other
    )
    majority = majority_labels(soft, data.val.files)
    has = np.flatnonzero(majority >= 0)
    note = (
        f"soft labels: {config.soft_labels}: {voted} of {len(data.train)} training images have votes "
        f"(targets {1 - config.soft_label_mix:g} x label + {config.soft_label_mix:g} x votes, other votes "
        f"{config.soft_label_other}); {len(has)} of {len(data.val)} '{data.val_name}' faces have a majority label"
    )
    say(note)
    data.notes.append(note)
    if len(has) == 0:
        say(f"soft labels: no '{data.val_name}' face has a majority label; validating on the original labels")
        return
    original = data.val
    data.extra_val[f"{data.val_name}:original"] = original
    data.val = original.subset(has)
    data.val.labels = majority[has]
    data.val_name = f"{data.val_name}:majority"


def add_photos(data: RunData, config: TrainConfig, cache_dir, use_cache: bool) -> None:
    """--photos: the daemon-cut crops' train half joins training, the held-out half becomes a validation set."""
    from train.data import Split
    from train.photos import HELD_OUT, TRAIN, load_photo_dataset, relabel

    t0 = time.perf_counter()
    photos = load_photo_dataset(
        config.photos, (config.size, config.size), cache_dir=cache_dir, use_cache=use_cache
    )
    parts = {
        k: relabel(photos.splits[k], photos.labels, data.labels, config.photos) for k in (TRAIN, HELD_OUT)
    }
    train = data.train
    data.train = Split(
        np.concatenate([train.images, parts[TRAIN].images]),
        np.concatenate([train.labels, parts[TRAIN].labels]),
        [*train.files, *parts[TRAIN].files],
    )
    data.extra_val[f"photos:{HELD_OUT}"] = parts[HELD_OUT]
    data.sources.append(("photos", len(parts[TRAIN])))
    if config.photo_weight != 1.0:
        data.train_weights = np.concatenate(
            [np.ones(len(train), np.float32), np.full(len(parts[TRAIN]), config.photo_weight, np.float32)]
        )
    data.extra_skipped = list(photos.skipped)
    no_face = sum(reason == "no face found" for _, reason in photos.skipped)
    say(
        f"photos: {photos.source} ({'cached, ' if photos.from_cache else ''}{time.perf_counter() - t0:.1f}s): "
        f"{len(parts[TRAIN])} train crops joined, {len(parts[HELD_OUT])} held out for validation "
        f"('photos:{HELD_OUT}'), {no_face} photos without a face skipped"
    )


def load_teacher(config: TrainConfig, labels: list[str]):
    """The --teacher models (train.distill.Teacher), checked against the data; None without --teacher."""
    if not config.teacher:
        return None
    from train.distill import Teacher, TeacherError, check_teachers, teacher_model_paths

    try:
        paths = teacher_model_paths(config.teacher)
        check_teachers(paths, labels, config.size)
        teacher = Teacher.load(paths, config.distill_temperature)
    except TeacherError as exc:
        raise TrainError(str(exc)) from None
    say(
        f"distilling from {len(paths)} teacher(s) {[str(p) for p in paths]}: "
        f"alpha {config.distill_alpha}, temperature {config.distill_temperature}"
    )
    return teacher


def set_precision(config: TrainConfig) -> None:
    """--precision: the Keras dtype policy new layers get (a resumed model keeps the one saved with it)."""
    import keras

    keras.mixed_precision.set_global_policy(config.precision)


def build_model(config: TrainConfig, num_classes: int):
    from train.model import make_model

    shape = (config.size, config.size, 1)
    return make_model(config.arch, shape, num_classes, width=config.width, dropout=config.dropout)


def warm_start_model(config: TrainConfig, data: RunData):
    """A new model holding the --init model's weights; None without --init."""
    if not config.init:
        return None
    import keras

    from train.warmstart import InitError, check_init_contract, copy_weights, init_model_path

    try:
        path = init_model_path(config.init)
        check_init_contract(path, data.labels, config.size)
        keras.utils.set_random_seed(config.seed)
        model = build_model(config, data.num_classes)
        how = copy_weights(model, path, data.train.images, config.seed)
    except InitError as exc:
        raise TrainError(str(exc)) from None
    say(f"warm start: weights from {path}{how}")
    return model


def prepare_run_dir(run_dir: Path, config: TrainConfig, resume: bool) -> None:
    """Only now the run directory is created, or a previous run in it replaced: bad data, a bad teacher or a
    bad --init left nothing behind, and destroyed nothing."""
    from edge.files import write_text_atomic

    if not resume:
        remove_run_files(run_dir)
    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    write_text_atomic(run_dir / "config.json", json.dumps(asdict(config), indent=2) + "\n")


def augment_strengths(config: TrainConfig):
    """The pipeline's AugmentStrengths with the config's geometric ranges (--augment-degrees/-shift/-zoom)."""
    from train.pipeline import AUGMENT

    return replace(
        AUGMENT,
        max_degrees=config.augment_degrees,
        max_shift=config.augment_shift,
        max_zoom=config.augment_zoom,
    )


def degradations(config: TrainConfig):
    """train/degrade.py's Degradations from the --degrade settings."""
    from train.degrade import Degradations

    return Degradations(
        probability=config.degrade,
        min_face_px=config.degrade_face_px,
        max_blur_sigma=config.degrade_blur,
        max_noise_sigma=config.degrade_noise,
        min_jpeg_quality=config.degrade_jpeg,
        max_gamma=config.degrade_gamma,
        min_contrast=config.degrade_contrast,
    )


def training_labels(data: RunData) -> np.ndarray:
    """The class each training image counts as for class weighting: its soft target's largest class, else
    its label."""
    if data.train_targets is None:
        return data.train.labels
    return np.asarray(data.train_targets).argmax(axis=1)


def sample_weights(config: TrainConfig, data: RunData):
    """Per-sample loss weights: class weights (of training_labels) times the source weights, scaled to mean 1
    so the learning rate means the same with and without them; None when all would be 1."""
    from train.pipeline import balanced_class_weights

    labels = training_labels(data)
    weights = np.ones(len(labels), np.float64)
    if config.class_weights:
        weights *= balanced_class_weights(labels, data.num_classes, config.class_weight_power)[labels]
    if data.train_weights is not None:
        weights *= data.train_weights
    return (weights / weights.mean()).astype(np.float32)


def train_batches(config: TrainConfig, data: RunData, initial_epoch: int, teacher):
    """The training input pipeline for this config, starting at `initial_epoch`'s shuffle."""
    from train.batches import make_train_dataset

    settings = pipeline_settings(config, data, initial_epoch, teacher)
    return make_train_dataset(
        data.train.images, data.train.labels, settings, data.train_targets, sample_weights(config, data)
    )


def pipeline_settings(config: TrainConfig, data: RunData, initial_epoch: int = 0, teacher=None):
    from train.pipeline import PipelineSettings

    return PipelineSettings(
        num_classes=data.num_classes,
        batch_size=config.batch_size,
        seed=config.seed,
        augment=config.augment,
        random_erasing=config.random_erasing,
        mixup=config.mixup,
        initial_epoch=initial_epoch,
        teacher=teacher,
        distill_alpha=config.distill_alpha,
        strengths=augment_strengths(config),
        degradations=degradations(config),
    )


def write_picture(config: TrainConfig, run_dir: Path, data: RunData) -> None:
    """RUN_DIR/training_crops.png: augmented training crops per class and source, with the counts."""
    from train.picture import write_training_picture

    counts = write_training_picture(
        run_dir / "training_crops.png", data, pipeline_settings(config, data), config.seed
    )
    say(
        "training crops: "
        + "; ".join(f"{name} {sum(c.values())}" for name, c in counts.items())
        + f" ({run_dir}/training_crops.png)"
    )


def compile_model(model, config: TrainConfig, steps_per_epoch: int) -> None:
    """AdamW with the cosine-with-warmup schedule (or a constant rate that the plateau rule halves)."""
    import keras

    lr = config.lr
    if config.schedule == "cosine":
        total = config.epochs * steps_per_epoch
        warmup = min(config.warmup_epochs * steps_per_epoch, total // 2)
        lr = keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=config.lr * 0.01,
            decay_steps=max(1, total - warmup),
            alpha=0.01,
            warmup_target=config.lr,
            warmup_steps=warmup,
        )
    model.compile(
        optimizer=keras.optimizers.AdamW(learning_rate=lr, weight_decay=config.weight_decay),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing),
        # A metric object, not the string "accuracy": the string breaks on TF 2.21 + Keras 3.15.
        metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
    )


def open_model(config: TrainConfig, run_dir: Path, state, resume: bool, warm_model, data: RunData):
    """The last checkpoint with its optimizer state (--resume), else a fresh (or warm-started) model."""
    if resume:
        model = load_last_checkpoint(run_dir, state)
        finished = state.stopped_early or state.epoch >= config.epochs
        where = "all epochs done" if finished else f"resuming at epoch {state.epoch + 1}/{config.epochs}"
        say(f"{where} (best val_accuracy {state.best_val_accuracy:.4f})")
        return model
    model = warm_model if warm_model is not None else build_model(config, data.num_classes)
    compile_model(model, config, steps_per_epoch=-(-len(data.train) // config.batch_size))
    return model


def fit(model, config: TrainConfig, run_dir: Path, state, batches, validation, quiet: bool, callbacks=()):
    """model.fit with one checkpoint per epoch (train/runstate.py); returns that checkpoint callback."""
    from train.batches import epoch_callbacks
    from train.runstate import RunDirCheckpoint

    plateau = config.schedule == "plateau"
    checkpoint = RunDirCheckpoint(
        run_dir, state, config.patience, plateau, config.epochs, quiet, keep_epochs=config.average_last
    )
    if not (state.stopped_early or state.epoch >= config.epochs):
        model.fit(
            batches,
            validation_data=validation,
            epochs=config.epochs,
            initial_epoch=state.epoch,
            callbacks=[*epoch_callbacks(batches), checkpoint, *callbacks],
            verbose=0 if quiet else 1,
            shuffle=False,  # the input pipeline shuffles
        )
    return checkpoint


def average_weights(config: TrainConfig, run_dir: Path, state, data: RunData, val_x) -> dict | None:
    """--average-last: the last epochs' mean replaces model.keras unless clearly worse on validation."""
    if not config.average_last:
        return None
    from train.averaging import average_last_epochs
    from train.report import describe_average

    try:
        average = average_last_epochs(
            run_dir,
            state.epoch,
            config.average_last,
            state.best_val_accuracy,
            data.train.images,
            val_x,
            data.val.labels,
            config.seed,
        )
    except ValueError as exc:  # a kept file of another network: only if someone put it there
        raise TrainError(f"--average-last: {exc}") from None
    say(describe_average(average))
    return average


def calibrate(config: TrainConfig, run_dir: Path, val_x, val_labels) -> dict | None:
    """One softmax temperature, fitted on validation, folded into the last layer of model.keras."""
    if not config.calibrate:
        return None
    from train.calibration import calibrate_model_file
    from train.report import describe_calibration

    calibration = calibrate_model_file(run_dir / "model.keras", val_x, val_labels)
    say(describe_calibration(calibration))
    return calibration


def write_reports(config, run_dir, data: RunData, val_x, checkpoint, size, average, calibration) -> dict:
    """metrics.json, report.txt, the plots and the contract, all on the model kept in model.keras.
    `size` is the network's (parameters, MACs per face)."""
    import keras

    from train import report
    from train.pipeline import to_model_input

    best = keras.models.load_model(run_dir / "model.keras")
    extra = {
        name: (
            split.labels,
            best.predict(to_model_input(split.images), batch_size=256, verbose=0).argmax(axis=1),
        )
        for name, split in data.extra_val.items()
    }
    metrics = report.write_run_artifacts(
        run_dir,
        config=asdict(config),
        dataset=data.dataset,
        train_count=len(data.train),
        val_name=data.val_name,
        val_labels=data.val.labels,
        val_pred=best.predict(val_x, batch_size=256, verbose=0).argmax(axis=1),
        state=checkpoint.state,
        history_rows=checkpoint.history_rows,
        params=size[0],
        macs=size[1],
        weight_average=average,
        calibration=calibration,
        extra_validation=extra,
        extra_skipped=len(data.extra_skipped),
        notes=data.notes,
    )
    state = checkpoint.state
    chosen = "weight average" if average and average["used"] else f"best epoch {state.best_epoch + 1}"
    say(
        f"{chosen}: val accuracy {metrics['validation']['accuracy']:.4f}, "
        f"macro-F1 {metrics['validation']['macro_f1']:.4f}; wrote {run_dir}/model.keras and reports"
    )
    return metrics


def run(config: TrainConfig, resume=False, quiet=False, cache_dir=None, use_cache=True, callbacks=()) -> dict:
    """Train (or continue) the run in config.out; returns metrics.json's content.

    A fresh run replaces the files of a previous run in config.out (config_for_run decides whether it may),
    but only once the data, the flags, any teacher and any --init have been checked and loaded.
    """
    run_dir = Path(config.out)
    data = load_data(config, cache_dir, use_cache)
    set_precision(config)
    teacher = load_teacher(config, data.labels)
    # On --resume the checkpoint already holds the (trained-on) weights: --init is only for a fresh run.
    warm_model = None if resume else warm_start_model(config, data)
    prepare_run_dir(run_dir, config, resume)

    import keras

    from train.model import estimate_macs
    from train.pipeline import to_model_input
    from train.runstate import RunState, settle_checkpoints

    state = (
        RunState.load(run_dir / "checkpoints" / "state.json")
        if resume
        else RunState(backend=keras.backend.backend())
    )
    settle_checkpoints(run_dir, state)  # an interruption at an epoch's end left its models half-moved
    # tf.data's shuffle and augmentation streams start afresh in every process: seeded with config.seed alone,
    # each resume would replay epoch 1's shuffle order. A fresh run (epoch 0) keeps config.seed.
    keras.utils.set_random_seed(resume_seed(config.seed, state.epoch))
    batches = train_batches(config, data, state.epoch, teacher)
    write_picture(config, run_dir, data)
    val_x = to_model_input(data.val.images)
    val_y = keras.utils.to_categorical(data.val.labels, data.num_classes)

    model = open_model(config, run_dir, state, resume, warm_model, data)
    size = model.count_params(), estimate_macs(model)
    say(f"model: {config.arch}, {size[0]:,} parameters, {size[1] / 1e6:.1f}M MACs per face")
    checkpoint = fit(model, config, run_dir, state, batches, (val_x, val_y), quiet, callbacks)
    average = average_weights(config, run_dir, state, data, val_x)
    calibration = calibrate(config, run_dir, val_x, data.val.labels)
    return write_reports(config, run_dir, data, val_x, checkpoint, size, average, calibration)
