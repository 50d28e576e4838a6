"""How faithful the float network recovered from an int8 .tflite is (`emotion-train --init model.tflite`).

Rebuilds the architecture, copies the dequantized weights in with train/tflite_init.py (BatchNorm rebuilt on
training faces), then classifies the same faces with both: the .tflite through the daemon's classifier, the
recovered network in Keras, in inference mode and in training mode (BatchNorm on each shuffled batch's own
statistics, dropout off), which is what fine-tuning starts from.

    .venv/bin/python -m benchmarks.tflite_recovery --model edge/models/default.tflite --arch vgg \\
        --data ../shared/data/fer2013 --split test [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from benchmarks.common import REPO

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(REPO / "edge" / "models" / "default.tflite"))
    parser.add_argument("--arch", default="vgg")
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "fer2013"))
    parser.add_argument("--split", default="test")
    parser.add_argument("--batch-size", type=int, default=64, help="batch for the training-mode pass")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    import numpy as np

    from convert.model_io import to_model_order
    from edge.classify import EmotionClassifier
    from train.data import load_dataset
    from train.model import make_model
    from train.tflite_init import copy_tflite_weights

    classifier = EmotionClassifier(args.model, num_threads=1)
    dataset = load_dataset(args.data, classifier.input_size)
    split = dataset.splits[args.split]
    targets = to_model_order(split.labels, dataset.labels, classifier.labels)
    size = classifier.input_size[0]
    model = make_model(args.arch, (size, size, 1), len(classifier.labels), width=args.width)
    done = copy_tflite_weights(model, Path(args.model), dataset.splits["train"].images)
    faces = split.images[..., None]
    int8 = np.concatenate([classifier.classify(faces[i : i + 256]) for i in range(0, len(faces), 256)])
    recovered = model.predict(faces.astype(np.float32), batch_size=256, verbose=0)
    model.get_layer("dropout").rate = 0.0
    order = np.random.default_rng(0).permutation(len(faces))
    trained = np.empty_like(recovered)
    for start in range(0, len(order), args.batch_size):
        chosen = order[start : start + args.batch_size]
        trained[chosen] = np.asarray(model(faces[chosen].astype(np.float32), training=True))
    result = {
        "model": args.model,
        "faces": len(faces),
        "recovered": done,
        "int8_accuracy": float(np.mean(int8.argmax(1) == targets)),
        "recovered_accuracy": float(np.mean(recovered.argmax(1) == targets)),
        "agreement": float(np.mean(int8.argmax(1) == recovered.argmax(1))),
        "mean_abs_probability_difference": float(np.abs(int8 - recovered).mean()),
        "training_mode_accuracy": float(np.mean(trained.argmax(1) == targets)),
    }
    print(
        f"{args.model}: int8 {result['int8_accuracy']:.4f}, recovered float {result['recovered_accuracy']:.4f}, "
        f"top-1 agreement {result['agreement']:.4f}, mean |p_int8 - p_float| "
        f"{result['mean_abs_probability_difference']:.4f}; training mode (batches of {args.batch_size}) "
        f"{result['training_mode_accuracy']:.4f} on {len(faces)} '{args.split}' faces"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
