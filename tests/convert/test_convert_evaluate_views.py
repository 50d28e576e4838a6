"""`emotion-convert evaluate --soft-labels VOTES --small-faces 24,32,40`: the same faces scored against crowd
majority labels and as small faces, beside the original labels, in the printout and the JSON. Runs the
checked-in int8 tiny model through the daemon's interpreter (no TensorFlow)."""

from __future__ import annotations

import csv
import json

import numpy as np

from convert.cli import main
from edge.classify import EmotionClassifier
from tests.support.fakefaces import FER_LABELS, write_folder_dataset
from tests.support.ferplus import FERPLUS_COLUMNS as FERPLUS
from train.data import load_dataset
from train.degrade import small_face

TO_FERPLUS = {"happy": "happiness", "sad": "sadness", "angry": "anger"}


def write_votes(data, path):
    """Votes for every test face: most of them a clear majority for another label than the folder's (the
    next one along), a few ties (no majority), one file absent."""
    rows = []
    for i, file in enumerate(sorted((data / "test").rglob("*.png"))):
        if i == 0:
            continue  # a face without a row: left out of the majority score
        label = file.parent.name
        other = FER_LABELS[(FER_LABELS.index(label) + 1) % 7]
        counts = dict.fromkeys(FERPLUS, 0)
        if i % 5 == 0:
            counts[TO_FERPLUS.get(label, label)], counts[TO_FERPLUS.get(other, other)] = 5, 5  # a tie
        else:
            counts[TO_FERPLUS.get(other, other)], counts["unknown"] = 9, 1
        rows.append([file.relative_to(data).as_posix(), *counts.values()])
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", *FERPLUS])
        writer.writerows(rows)
    return path


def test_majority_labels_and_small_faces_are_scored_beside_the_original_labels(
    tiny_model_path, tmp_path, capsys
):
    data = write_folder_dataset(tmp_path / "faces", splits={"train": 2, "test": 10})
    votes = write_votes(data, tmp_path / "votes.csv")
    out = tmp_path / "evaluation.json"
    args = ["evaluate", "--model", str(tiny_model_path), "--data", str(data), "--split", "test"]
    args += [
        "--soft-labels",
        str(votes),
        "--json",
        str(out),
        "--timing-runs",
        "0",
        "--cache-dir",
        str(tmp_path / "c"),
    ]
    assert main(args) == 0
    printed = capsys.readouterr().out
    result = json.loads(out.read_text())

    test = load_dataset(data, cache_dir=tmp_path / "c").splits["test"]
    probs = EmotionClassifier(tiny_model_path).classify(test.images[..., None])
    files = [f.split("faces/")[-1] for f in test.files]
    index = {f: i for i, f in enumerate(files)}
    majority = np.full(len(files), -1)
    with open(votes) as handle:
        for row in csv.DictReader(handle):
            if all(row[c] != "5" for c in FERPLUS):  # not a tie
                top = max(FERPLUS[:7], key=lambda c: int(row[c]))
                name = {v: k for k, v in TO_FERPLUS.items()}.get(top, top)
                majority[index[row["file"]]] = FER_LABELS.index(name)
    has = majority >= 0
    assert result["majority"]["count"] == int(has.sum()) == 56  # 70 faces, 14 ties, 1 without a row
    expected = np.mean(probs[has].argmax(1) == majority[has])
    assert result["majority"]["accuracy"] == expected
    assert result["accuracy"] == np.mean(probs.argmax(1) == test.labels)  # the original labels, unchanged
    assert "majority labels of" in printed and "majority accuracy" in printed

    assert sorted(result["small_faces"]) == ["24", "32", "40"]
    small = EmotionClassifier(tiny_model_path).classify(small_face(test.images, 24)[..., None])
    assert result["small_faces"]["24"]["original"]["accuracy"] == np.mean(small.argmax(1) == test.labels)
    assert result["small_faces"]["24"]["majority"]["count"] == 56
    assert "24 px accuracy" in printed


def test_views_are_optional_and_bad_specs_are_refused(tiny_model_path, tmp_path, capsys):
    data = write_folder_dataset(tmp_path / "faces", splits={"train": 2, "test": 2})
    out = tmp_path / "e.json"
    base = ["evaluate", "--model", str(tiny_model_path), "--data", str(data), "--timing-runs", "0"]
    base += ["--cache-dir", str(tmp_path / "c")]
    assert main([*base, "--small-faces", "", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert "small_faces" not in result and "majority" not in result
    assert main([*base, "--small-faces", "32,big"]) == 2
    assert "--small-faces '32,big'" in capsys.readouterr().err
    none = tmp_path / "none.csv"
    none.write_text("file," + ",".join(FERPLUS) + "\nelsewhere/x.png," + ",".join(["1"] * 10) + "\n")
    assert main([*base, "--soft-labels", str(none)]) == 2
    assert "no face of split 'test' has a row" in capsys.readouterr().err
