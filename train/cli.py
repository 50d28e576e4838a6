"""`emotion-train`: command-line entry point. Parses flags, then hands a TrainConfig to train.train.run."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from train.backend import BackendError, choose_backend
from train.train import ARCH_NAMES, DEFAULTS, TrainError, config_for_run

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's start-up chatter out of the logs

EPILOG = """examples:
  emotion-train --data ../shared/data/fer2013 --out runs/fer-cnn
  emotion-train --data fer2013.csv --out runs/csv --arch mobilenet --epochs 40 --quiet
  emotion-train --data my_faces/ --out runs/mine          # my_faces/<label>/*.jpg, any labels
  emotion-train --out runs/fer-cnn --resume               # continue an interrupted run
  emotion-train --data ../shared/data/fer2013 --out runs/student --arch vgg --teacher runs/big
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="emotion-train",
        description="Train a facial-emotion classifier (Keras) for the Raspberry Pi edge daemon. "
        "Writes RUN_DIR/model.keras (best by validation accuracy), its contract model.json, "
        "config.json, history.csv, curves.png, confusion.png, metrics.json and report.txt.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        # Defaults are suppressed so we know which flags the user actually gave (for --resume conflicts).
        argument_default=argparse.SUPPRESS,
    )
    d = DEFAULTS
    add = parser.add_argument
    add(
        "--data",
        metavar="PATH",
        help="FER-2013 folder (train/ test/ [val/]), fer2013.csv, or a folder of <label>/ folders",
    )
    add(
        "--out", metavar="RUN_DIR", required=True, help="run directory for the model, checkpoints and reports"
    )
    add("--epochs", type=int, metavar="N", help=f"maximum epochs (default {d['epochs']})")
    add("--arch", choices=ARCH_NAMES, help=f"architecture (default {d['arch']})")
    add("--resume", action="store_true", help="continue the interrupted run in RUN_DIR with its saved config")
    add("--overwrite", action="store_true", help="replace a previous run's files in RUN_DIR")
    add("--batch-size", type=int, metavar="N", help=f"batch size (default {d['batch_size']})")
    add("--lr", type=float, metavar="LR", help=f"peak learning rate of AdamW (default {d['lr']})")
    add("--weight-decay", type=float, metavar="WD", help=f"AdamW weight decay (default {d['weight_decay']})")
    add(
        "--schedule",
        choices=["cosine", "plateau"],
        help="LR schedule: cosine with warmup (default) or halve on plateau",
    )
    add(
        "--warmup-epochs",
        type=int,
        metavar="N",
        help=f"linear warmup epochs for cosine (default {d['warmup_epochs']})",
    )
    add("--seed", type=int, help=f"random seed for splits, shuffling and init (default {d['seed']})")
    add(
        "--val-fraction",
        type=float,
        metavar="F",
        help=f"fraction of train held out for validation when the data has no val/test split (default {d['val_fraction']})",
    )
    add("--label-smoothing", type=float, metavar="E", help="label smoothing epsilon (default 0 = off)")
    add(
        "--mixup",
        type=float,
        metavar="ALPHA",
        help="mixup with Beta(ALPHA, ALPHA) (default 0 = off; try 0.2)",
    )
    add(
        "--no-class-weights", dest="class_weights", action="store_false", help="do not weight rare classes up"
    )
    add(
        "--class-weight-power",
        type=float,
        metavar="P",
        help="raise the balanced class weights to P: 1 = fully balanced (default), 0.5 = square root (softer)",
    )
    add(
        "--patience",
        type=int,
        metavar="N",
        help=f"early-stop after N epochs without better val accuracy (default {d['patience']}; 0 = off)",
    )
    add("--size", type=int, metavar="PX", help=f"square input size in pixels (default {d['size']})")
    add("--width", type=float, metavar="M", help="channel-width multiplier of the architecture (default 1.0)")
    add("--dropout", type=float, metavar="P", help=f"dropout before the classifier (default {d['dropout']})")
    add(
        "--no-augment",
        dest="augment",
        action="store_false",
        help="turn off flip/rotation/shift/zoom/brightness",
    )
    add(
        "--random-erasing",
        type=float,
        metavar="P",
        help="erase a random patch with probability P (default 0)",
    )
    add(
        "--teacher",
        metavar="RUNS",
        help="distil from trained teacher(s): comma-separated run directories or .keras files (default off)",
    )
    add(
        "--distill-alpha",
        type=float,
        metavar="A",
        help=f"weight of the teacher's probabilities in the targets (default {d['distill_alpha']})",
    )
    add(
        "--distill-temperature",
        type=float,
        metavar="T",
        help=f"temperature that softens the teacher's probabilities (default {d['distill_temperature']})",
    )
    add(
        "--init",
        metavar="RUN",
        help="start from a trained run's weights (run directory or .keras; same --arch, --width, labels) "
        "instead of random ones; the optimizer and schedule start afresh",
    )
    add(
        "--average-last",
        type=int,
        metavar="K",
        help="after training, average the last K epochs' weights and re-estimate BatchNorm on train faces; "
        "the average replaces the best epoch's model unless that epoch validates better by more than one "
        "standard error (default 0 = off)",
    )
    add(
        "--no-calibrate",
        dest="calibrate",
        action="store_false",
        help="do not fit a softmax temperature on validation (by default one is folded into the last layer "
        "so confidences match accuracy; the predicted class never changes)",
    )
    add("--cache-dir", metavar="DIR", help="where decoded data is cached (default ~/.cache/emotion-edge)")
    add(
        "--no-cache",
        dest="use_cache",
        action="store_false",
        help="decode the data without reading or writing the cache",
    )
    add("--quiet", action="store_true", help="one line per epoch (for logs) instead of progress bars")
    return parser


def main(argv=None) -> int:
    args = vars(build_parser().parse_args(argv))
    from train.data import DataError

    run_dir = Path(args.pop("out")).expanduser()
    resume = args.pop("resume", False)
    overwrite = args.pop("overwrite", False)
    quiet = args.pop("quiet", False)
    cache_dir = args.pop("cache_dir", None)
    use_cache = args.pop("use_cache", True)
    if resume and overwrite:
        print("error: --resume and --overwrite contradict each other", file=sys.stderr)
        return 2
    try:
        note = choose_backend()
    except BackendError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if note:
        print(note, file=sys.stderr)
    try:
        if run_dir.exists() and not run_dir.is_dir():
            raise TrainError(f"--out {run_dir} exists and is not a directory")
        config = config_for_run(run_dir, {**args, "out": str(run_dir)}, resume, overwrite)
        from train.train import run

        run(config, resume=resume, quiet=quiet, cache_dir=cache_dir, use_cache=use_cache)
    except (DataError, TrainError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except PermissionError as exc:
        print(f"error: cannot write {exc.filename or run_dir}: permission denied", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: {exc.filename or run_dir}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\ninterrupted; continue with: emotion-train --out {run_dir} --resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
