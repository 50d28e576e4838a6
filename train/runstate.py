"""Everything a run directory remembers between epochs, so an interrupted run loses at most one epoch.

Each epoch end writes, in this order: the epoch's model as `checkpoints/best-epoch-NNN.keras` (when
validation accuracy improved) and `checkpoints/last-epoch-NNN.keras` (with optimizer state), with
--average-last its weights (`checkpoints/epoch-NNN.weights.npz`), `history.csv`, then
`checkpoints/state.json`, and only then renames the two models to `model.keras` and `checkpoints/last.keras`.
state.json is the commit: it names the epoch to continue from and the best epoch. Interrupted anywhere,
`settle_checkpoints` (at every resume) finishes the renames of a committed epoch and deletes the files of
an uncommitted one, so `model.keras`, `last.keras` and state.json always describe the same epochs.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import keras
import numpy as np

from edge.files import write_bytes_atomic, write_text_atomic

EPOCH_WEIGHTS = re.compile(r"^epoch-(\d+)\.weights\.npz$")  # --average-last keeps these
HISTORY_COLUMNS = ["epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr", "seconds", "val_seconds"]


@dataclass
class RunState:
    epoch: int = 0  # completed epochs; the next one to run (0-based) has this index
    best_val_accuracy: float = -1.0
    best_epoch: int = -1  # 0-based epoch whose weights are in model.keras
    epochs_since_best: int = 0  # early-stopping counter
    plateau_wait: int = 0  # reduce-on-plateau counter
    lr: float = 0.0  # the learning rate at the end of the last epoch (the schedule position, readable)
    optimizer_steps: int = 0  # the optimizer's iteration count: where the cosine schedule stands
    stopped_early: bool = False
    backend: str = ""  # the Keras backend that wrote last.keras ("" in runs from before this was recorded)

    @classmethod
    def load(cls, path: Path) -> RunState:
        return cls(**json.loads(Path(path).read_text()))

    def save(self, path: Path) -> None:
        write_text_atomic(path, json.dumps(asdict(self), indent=2) + "\n")


def save_model_atomic(model: keras.Model, path: Path) -> None:
    """Keras writes in place; write a sibling temp file (it must end in .keras) and rename over the target."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.keras")
    try:
        model.save(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def pending_model_path(run_dir: Path, kind: str, epoch_number: int) -> Path:
    """checkpoints/{best,last}-epoch-NNN.keras: an epoch's model before state.json commits it."""
    return Path(run_dir) / "checkpoints" / f"{kind}-epoch-{epoch_number:03d}.keras"


PENDING_MODEL = re.compile(r"^(best|last)-epoch-(\d+)\.keras$")


def settle_checkpoints(run_dir: Path, state: RunState) -> None:
    """Move the models of the epochs state.json committed into place; delete those of uncommitted epochs."""
    run_dir = Path(run_dir)
    folder = run_dir / "checkpoints"
    targets = {"best": run_dir / "model.keras", "last": folder / "last.keras"}
    committed = {"best": state.best_epoch + 1, "last": state.epoch}  # 1-based epoch numbers
    for path in sorted(folder.glob("*-epoch-*.keras")) if folder.is_dir() else ():
        match = PENDING_MODEL.match(path.name)
        if not match:
            continue
        kind, number = match.group(1), int(match.group(2))
        if number == committed[kind]:
            os.replace(path, targets[kind])
        else:
            path.unlink(missing_ok=True)


def epoch_weights_path(run_dir: Path, epoch_number: int) -> Path:
    """checkpoints/epoch-NNN.weights.npz for the 1-based epoch number."""
    return Path(run_dir) / "checkpoints" / f"epoch-{epoch_number:03d}.weights.npz"


def kept_epochs(run_dir: Path) -> dict[int, Path]:
    """{1-based epoch number: weights file} of every epoch kept in run_dir/checkpoints."""
    folder = Path(run_dir) / "checkpoints"
    found = {}
    for path in folder.glob("epoch-*.weights.npz") if folder.is_dir() else ():
        match = EPOCH_WEIGHTS.match(path.name)
        if match:
            found[int(match.group(1))] = path
    return found


def keep_epoch_weights(model: keras.Model, run_dir: Path, epoch_number: int, keep: int) -> None:
    """Save this epoch's weights and delete those too old to be among the last `keep` epochs.

    The model's own arrays in an .npz, not Keras' save_weights: that would store the optimizer's moments
    too, three times the size, and averaging needs only the weights.
    """
    buffer = io.BytesIO()
    np.savez(buffer, *model.get_weights())
    write_bytes_atomic(epoch_weights_path(run_dir, epoch_number), buffer.getvalue())
    for number, old in kept_epochs(run_dir).items():
        if number <= epoch_number - keep:
            old.unlink(missing_ok=True)


def load_epoch_weights(path: Path) -> list[np.ndarray]:
    """The arrays keep_epoch_weights saved, in model.get_weights() order."""
    with np.load(path) as archive:
        return [archive[f"arr_{i}"] for i in range(len(archive.files))]


def read_history(path: Path) -> list[dict]:
    if not Path(path).is_file():
        return []
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def write_history(path: Path, rows: list[dict]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=HISTORY_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(path, buffer.getvalue())


def current_lr(optimizer) -> float:
    return float(np.asarray(keras.ops.convert_to_numpy(optimizer.learning_rate)))


class RunDirCheckpoint(keras.callbacks.Callback):
    """Checkpointing, best-model selection, early stopping, reduce-on-plateau and the per-epoch log line,
    in one callback so their counters are saved together with the weights they describe."""

    def __init__(
        self,
        run_dir: Path,
        state: RunState,
        patience: int,
        plateau: bool,
        epochs: int,
        quiet: bool,
        keep_epochs: int = 0,
    ):
        super().__init__()
        self.keep_epochs = keep_epochs  # how many recent epochs' weights to keep for averaging; 0 = none
        self.run_dir = Path(run_dir)
        self.state = state
        self.patience = patience
        self.plateau = plateau
        self.epochs = epochs
        self.quiet = quiet
        self.history_rows = [r for r in read_history(self.history_path) if int(r["epoch"]) < state.epoch]
        self._epoch_start = self._val_start = 0.0
        self._val_seconds = 0.0

    @property
    def history_path(self) -> Path:
        return self.run_dir / "history.csv"

    @property
    def state_path(self) -> Path:
        return self.run_dir / "checkpoints" / "state.json"

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = time.perf_counter()
        self._val_seconds = 0.0

    def on_test_begin(self, logs=None):
        # JAX (and torch on a GPU) dispatch training steps asynchronously: wait for the last one, or its
        # time would be counted as validation time. Reading the step counter waits; on TF it is free.
        keras.ops.convert_to_numpy(self.model.optimizer.iterations)
        self._val_start = time.perf_counter()

    def on_test_end(self, logs=None):
        self._val_seconds += time.perf_counter() - self._val_start

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        seconds = time.perf_counter() - self._epoch_start
        state = self.state
        val_accuracy = float(logs.get("val_accuracy", float("nan")))
        improved = val_accuracy > state.best_val_accuracy
        if improved:
            state.best_val_accuracy, state.best_epoch, state.epochs_since_best = val_accuracy, epoch, 0
            save_model_atomic(self.model, pending_model_path(self.run_dir, "best", epoch + 1))
        else:
            state.epochs_since_best += 1
        optimizer = self.model.optimizer
        if self.plateau:
            # Halve the rate after patience//2 epochs without improvement (at least 2), floor at 1e-6.
            state.plateau_wait = 0 if improved else state.plateau_wait + 1
            if state.plateau_wait >= max(2, self.patience // 2):
                optimizer.learning_rate.assign(max(1e-6, current_lr(optimizer) * 0.5))
                state.plateau_wait = 0
        state.lr = current_lr(optimizer)
        state.optimizer_steps = int(keras.ops.convert_to_numpy(optimizer.iterations))
        state.epoch = epoch + 1
        if self.patience > 0 and state.epochs_since_best >= self.patience:
            state.stopped_early = True
            self.model.stop_training = True
        save_model_atomic(self.model, pending_model_path(self.run_dir, "last", epoch + 1))
        if self.keep_epochs:
            keep_epoch_weights(self.model, self.run_dir, state.epoch, self.keep_epochs)
        row = {key: logs.get(key, "") for key in HISTORY_COLUMNS}
        row.update(
            epoch=epoch,
            lr=f"{state.lr:.6g}",
            seconds=f"{seconds:.2f}",
            val_seconds=f"{self._val_seconds:.2f}",
        )
        self.history_rows.append(row)
        write_history(self.history_path, self.history_rows)
        state.save(self.state_path)  # the commit
        settle_checkpoints(self.run_dir, state)
        if self.quiet:
            mark = " *best" if improved else ""
            stop = " (early stop)" if state.stopped_early else ""
            print(
                f"epoch {epoch + 1}/{self.epochs} loss {logs.get('loss', float('nan')):.4f} "
                f"acc {logs.get('accuracy', float('nan')):.4f} val_loss {logs.get('val_loss', float('nan')):.4f} "
                f"val_acc {val_accuracy:.4f} lr {state.lr:.2e} {seconds:.1f}s{mark}{stop}",
                flush=True,
            )
        elif improved:
            print(f"  saved best model (val_accuracy {val_accuracy:.4f})", file=sys.stdout, flush=True)
