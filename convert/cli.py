"""`emotion-convert`: Keras model -> full-integer int8 TFLite (+ contract), and `emotion-convert evaluate`.

emotion-convert MODEL --data PATH --out FILE.tflite [--samples N] [--mode int8|float16|float32]
                [--allow-float-fallback] [--no-verify]
emotion-convert evaluate --model FILE [--compare FILE2] --data PATH [--split test] [--json OUT]
                [--tta-flip] [--timing-runs N] [--soft-labels VOTES] [--small-faces 24,32,40]
"""

from __future__ import annotations

import argparse
import os
import sys

# Before TensorFlow is imported anywhere: its C++ start-up chatter would bury our report.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from convert.errors import ConvertError  # noqa: E402
from convert.quantize import MODES  # noqa: E402
from edge.interpreter import ModelLoadError  # noqa: E402
from edge.model_contract import ContractError  # noqa: E402
from train.data import DataError  # noqa: E402


def _convert_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="emotion-convert",
        description="Quantize a trained Keras emotion model to TFLite (full-integer int8 by default), "
        "calibrated on real training faces, and write its contract next to it. "
        "Use `emotion-convert evaluate --help` to measure a model.",
    )
    parser.add_argument("model", help="a .keras file or an emotion-train run dir (uses its model.keras)")
    parser.add_argument(
        "--data", required=True, help="labelled faces (folders or FER csv) for calibration and checks"
    )
    parser.add_argument("--out", required=True, help="output FILE.tflite; its contract goes to FILE.json")
    parser.add_argument(
        "--samples",
        type=int,
        default=300,
        help="calibration faces, class-stratified from train (default 300)",
    )
    parser.add_argument(
        "--mode", choices=MODES, default="int8", help="int8 (default, full-integer), float16, float32"
    )
    parser.add_argument(
        "--allow-float-fallback",
        action="store_true",
        help="keep an int8 model even if some ops stayed float (default: fail and name them)",
    )
    parser.add_argument("--no-verify", action="store_true", help="skip the float vs converted accuracy check")
    parser.add_argument(
        "--cache-dir", default=None, help="where decoded data is cached (default ~/.cache/emotion-edge)"
    )
    return parser


def _evaluate_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="emotion-convert evaluate",
        description="Accuracy, macro-F1, per-class P/R/F1, confusion, size and single-face latency of a model; "
        ".tflite runs through the daemon's own classifier (ai-edge-litert).",
    )
    parser.add_argument("--model", required=True, help=".tflite, .keras or a run dir")
    parser.add_argument(
        "--compare", default=None, help="a second model (e.g. the int8 .tflite of a float .keras)"
    )
    parser.add_argument("--data", required=True, help="labelled faces (folders or FER csv)")
    parser.add_argument("--split", default=None, help="split to evaluate (default: test, else val)")
    parser.add_argument("--json", default=None, help="write the results to this .json file")
    parser.add_argument(
        "--tta-flip", action="store_true", help="also report accuracy averaged with the mirrored face"
    )
    parser.add_argument(
        "--soft-labels",
        default=None,
        help="also score against the majority label of crowd votes (a CSV of file,<label votes>..., or a "
        "folder of them such as ../shared/data/ferplus); faces without a clear majority are left out",
    )
    parser.add_argument(
        "--small-faces",
        default="24,32,40",
        help="also score the crops as faces of these sizes (px) would reach the model: sampled down, then "
        "upscaled as the daemon does (default 24,32,40; '' = off)",
    )
    parser.add_argument(
        "--timing-runs",
        type=int,
        default=300,
        help="single-face calls timed after warm-up (default 300; 0 = off)",
    )
    parser.add_argument(
        "--cache-dir", default=None, help="where decoded data is cached (default ~/.cache/emotion-edge)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "evaluate":
        args = _evaluate_parser().parse_args(argv[1:])
        from convert.commands import run_evaluate as run
    else:
        args = _convert_parser().parse_args(argv)
        from convert.commands import run_convert as run
    from train.tf_startup import quiet_tensorflow_startup

    quiet_tensorflow_startup()
    try:
        return run(args)
    except (ConvertError, DataError, ContractError, ModelLoadError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
