"""Knowledge distillation: what trained teachers say about a batch, blended into the student's targets.

The student learns from  (1 - alpha) * label + alpha * teacher,  where `teacher` is the probability that one
or more trained models (averaged, each also shown the mirror image) give the very batch the student sees,
after augmentation and mixup, softened by a temperature. A teacher's "this angry face looks a bit sad" is
information a one-hot FER label throws away, and FER's labels are noisy, so a large teacher's soft targets
let a Pi-sized student learn more than the labels alone teach it.

It happens in the input pipeline (train/pipeline_tf.py and train/pipeline_numpy.py both call `Teacher`),
so the student model, its loss, checkpoints and --resume are exactly as without distillation, and it works
on every Keras backend. Teachers are ordinary `emotion-train` runs, e.g. a wider `--width 2` vgg.
"""

from __future__ import annotations

from pathlib import Path

from train.model_files import check_fits_data, load_model_file, resolve_model_file, split_specs


class TeacherError(ValueError):
    """A --teacher path is missing, unreadable or does not fit the data; the message names it."""


def teacher_model_paths(spec: str) -> list[Path]:
    """--teacher "runs/a,runs/b/model.keras" -> the .keras files; a run directory means its model.keras."""
    paths = [
        resolve_model_file(part, "--teacher", TeacherError, " (train the teacher first)")
        for part in split_specs(spec)
    ]
    if not paths:
        raise TeacherError("--teacher names no model")
    return paths


def check_teachers(paths: list[Path], labels: list[str], size: int) -> None:
    """Each teacher must predict the data's labels, in the same order, from the same input size."""
    for path in paths:
        check_fits_data(path, labels, size, "--teacher", TeacherError)


class Teacher:
    """Averaged, temperature-softened class probabilities of frozen teacher models for a batch.

    Called with a float32 (B,H,W,1) batch of raw pixels (a tf tensor inside tf.data, a numpy array in the
    numpy pipeline); returns (B,C) probabilities as a backend tensor. Only keras.ops, so one implementation
    serves every backend.
    """

    def __init__(self, models: list, temperature: float = 2.0):
        if not models:
            raise ValueError("a Teacher needs at least one model")
        if temperature <= 0:
            raise ValueError("the distillation temperature must be positive")
        for model in models:
            model.trainable = False
        self.models = models
        self.temperature = float(temperature)

    @classmethod
    def load(cls, paths: list[Path], temperature: float = 2.0) -> Teacher:
        return cls([load_model_file(path, "--teacher", TeacherError) for path in paths], temperature)

    def __call__(self, images):
        from keras import ops

        mirrored = ops.flip(images, axis=2)  # a free second opinion: FER faces are left-right symmetric
        probs = [model(view, training=False) for model in self.models for view in (images, mirrored)]
        mean = ops.mean(ops.stack(probs, axis=0), axis=0)
        if self.temperature == 1.0:
            return mean
        # softmax(log p / T): the same as dividing the teacher's logits by T; T > 1 spreads the probability
        # over the runner-up classes, which is where a teacher's extra information lies.
        return ops.softmax(ops.log(ops.maximum(mean, 1e-7)) / self.temperature, axis=-1)


def blend_targets(targets, teacher_probs, alpha: float):
    """(1 - alpha) * targets + alpha * teacher_probs; rows still sum to 1."""
    return (1.0 - alpha) * targets + alpha * teacher_probs
