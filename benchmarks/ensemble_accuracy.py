"""Ensemble accuracy: how well several trained models do together, the ceiling a distilled student aims at.

Each model (a run directory, a .keras with its contract, or a .tflite) classifies a labelled split; the
script prints each one's accuracy alone and flip-averaged, then the accuracy of their averaged
probabilities, plain and flip-averaged. `emotion-train --teacher A,B` averages exactly this way (both views).

    .venv/bin/python -m benchmarks.ensemble_accuracy runs/vgg60 runs/vgg30 --data ../shared/data/fer2013 \\
        [--split test]
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from convert.commands import choose_eval_split
from convert.errors import ConvertError
from convert.evaluate import load_predictor
from convert.model_io import check_labels_match, resolve_eval_path, to_model_order
from train.data import DataError, load_dataset


def accuracy(probs: np.ndarray, targets: np.ndarray) -> float:
    return float((probs.argmax(axis=1) == targets).mean())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("models", nargs="+", help="run directories, .keras or .tflite files")
    parser.add_argument("--data", required=True, help="labelled data (as for emotion-convert evaluate)")
    parser.add_argument("--split", help="split to score (default: test, else val)")
    args = parser.parse_args(argv)
    try:
        predictors = [load_predictor(*resolve_eval_path(model)) for model in args.models]
        labels = predictors[0].labels
        for predictor in predictors[1:]:
            check_labels_match(predictor.labels, labels, str(predictor.path), str(predictors[0].path))
        dataset = load_dataset(args.data, size=predictors[0].contract.input_size)
        check_labels_match(labels, dataset.labels, str(predictors[0].path), f"data {args.data}")
        split = choose_eval_split(dataset, args.split)
    except (ConvertError, DataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    faces = dataset.splits[split].images[..., np.newaxis]
    targets = to_model_order(dataset.splits[split].labels, dataset.labels, labels)
    print(f"{len(faces)} faces of '{split}'")
    plain, flipped = [], []
    for predictor in predictors:
        plain.append(predictor.predict(faces))
        flipped.append(predictor.predict(faces[:, :, ::-1]))
        alone, both = accuracy(plain[-1], targets), accuracy(plain[-1] + flipped[-1], targets)
        print(f"{str(predictor.path):60s} {alone:.2%}  flip-averaged {both:.2%}")
    together = sum(plain)
    print(f"{'ensemble of ' + str(len(predictors)):60s} {accuracy(together, targets):.2%}", end="")
    print(f"  flip-averaged {accuracy(together + sum(flipped), targets):.2%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
