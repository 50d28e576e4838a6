"""Soft labels (train/softlabels.py, `--soft-labels`): crowd votes joined to images by path, mixed into the
training targets, and FER+'s majority rule for a second set of test labels."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from tests.support.ferplus import FERPLUS_COLUMNS as FERPLUS
from train.data import DataError
from train.softlabels import load_soft_labels, majority_labels, training_targets

LABELS = ["angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"]


def write_votes(path, rows, header=FERPLUS):
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", *header])
        writer.writerows(rows)
    return path


def votes(**counts) -> list[int]:
    return [counts.get(name, 0) for name in FERPLUS]


@pytest.fixture
def soft(tmp_path):
    folder = tmp_path / "ferplus"
    folder.mkdir()
    write_votes(
        folder / "train.csv",
        [
            ["train/sad/a.jpg", *votes(neutral=8, sadness=2)],
            ["train/angry/b.jpg", *votes(anger=5, contempt=3, unknown=2)],
            ["train/fear/c.jpg", *votes(NF=10)],
        ],
    )
    write_votes(
        folder / "test.csv",
        [
            ["test/sad/d.jpg", *votes(neutral=6, sadness=3, fear=1)],  # clear neutral majority
            ["test/fear/e.jpg", *votes(fear=5, surprise=5)],  # a tie: no majority
            [
                "test/angry/f.jpg",
                *votes(anger=4, disgust=1, fear=1, happiness=1, NF=3),
            ],  # strays dropped: 4 of 7
            ["test/happy/g.jpg", *votes(NF=6, happiness=4)],  # mostly not a face: no class label
        ],
    )
    return load_soft_labels(folder, LABELS)


def test_a_folder_of_ferplus_files_is_read_with_its_column_names_mapped(soft):
    assert len(soft) == 7 and soft.labels == LABELS
    first = soft.votes[soft.rows_for(["x/fer2013/train/sad/a.jpg"])[0]]
    assert first.tolist() == [0, 0, 0, 0, 8, 2, 0]  # neutral and sadness land on the project's labels
    assert soft.other.shape == (7, 3)  # contempt, unknown, NF: votes for none of the labels


def test_rows_join_by_trailing_path_however_the_data_folder_is_spelt(soft):
    rows = soft.rows_for(
        ["../shared/data/fer2013/train/sad/a.jpg", "/abs/fer/train/angry/b.jpg", "photos/x.jpg"]
    )
    assert rows[0] >= 0 and rows[1] >= 0 and rows[2] == -1
    assert soft.rows_for(["train/angry/a.jpg"])[0] == -1  # the same file name under another label is not it


def test_targets_mix_label_and_votes_and_images_without_votes_keep_their_label(soft):
    files = ["d/train/sad/a.jpg", "d/train/angry/b.jpg", "d/train/fear/c.jpg", "photos/happy/p.jpg"]
    labels = np.array([5, 0, 2, 3])
    targets, voted = training_targets(soft, files, labels, mix=0.5, other_votes="renormalise")
    assert voted == 2  # c.jpg has only not-a-face votes; p.jpg no row
    np.testing.assert_allclose(targets[0], 0.5 * np.eye(7)[5] + 0.5 * np.array([0, 0, 0, 0, 0.8, 0.2, 0]))
    np.testing.assert_allclose(targets[1], np.eye(7)[0])  # 5 anger votes renormalised: all angry
    np.testing.assert_allclose(targets[2], np.eye(7)[2])
    np.testing.assert_allclose(targets[3], np.eye(7)[3])
    np.testing.assert_allclose(targets.sum(axis=1), 1.0, rtol=1e-6)

    counted, _ = training_targets(soft, files[:2], labels[:2], mix=1.0, other_votes="original")
    np.testing.assert_allclose(counted[0], [0, 0, 0, 0, 0.8, 0.2, 0])  # no other votes: unchanged
    np.testing.assert_allclose(counted[1], np.eye(7)[0])  # the 5 other votes also count for angry
    plain, _ = training_targets(soft, files, labels, mix=0.0, other_votes="renormalise")
    np.testing.assert_allclose(plain, np.eye(7)[labels])


def test_majority_labels_follow_ferplus_majority_voting(soft):
    files = ["test/sad/d.jpg", "test/fear/e.jpg", "test/angry/f.jpg", "test/happy/g.jpg", "test/x/none.jpg"]
    assert majority_labels(soft, files).tolist() == [4, -1, 0, -1, -1]


def test_bad_files_are_refused_by_name(tmp_path):
    with pytest.raises(DataError, match="no vote column for \\['surprise'\\]"):
        load_soft_labels(
            write_votes(tmp_path / "a.csv", [], header=["angry", "happy"]), ["angry", "surprise"]
        )
    with pytest.raises(DataError, match="line 2: votes must be numbers"):
        load_soft_labels(
            write_votes(tmp_path / "b.csv", [["x.jpg", "many", 1]], ["angry", "happy"]), ["angry", "happy"]
        )
    with pytest.raises(DataError, match="negative votes"):
        load_soft_labels(
            write_votes(tmp_path / "c.csv", [["x.jpg", -1, 1]], ["angry", "happy"]), ["angry", "happy"]
        )
    with pytest.raises(DataError, match="expected a .csv file or a folder"):
        load_soft_labels(tmp_path / "missing.csv", ["angry", "happy"])
    (tmp_path / "d.csv").write_text("name,angry,happy\nx.jpg,1,2\n")
    with pytest.raises(DataError, match="no 'file' column"):
        load_soft_labels(tmp_path / "d.csv", ["angry", "happy"])
