"""`emotion-train`: command-line entry point. Parses flags, then hands a TrainConfig (train/config.py) to
train.train.run."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from train.backend import BackendError, choose_backend
from train.config import TrainError, add_setting_flags, config_for_run

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
    add_setting_flags(parser)  # train/config.py: one flag per training setting, from its declaration
    # How to run, not what to train: these are not saved with the run.
    add = parser.add_argument_group("run options (not saved)").add_argument
    add("--resume", action="store_true", help="continue the interrupted run in RUN_DIR with its saved config")
    add("--overwrite", action="store_true", help="replace a previous run's files in RUN_DIR")
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
    if os.environ.get("KERAS_BACKEND", "tensorflow") == "tensorflow":
        from train.tf_startup import quiet_tensorflow_startup

        quiet_tensorflow_startup()
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
