"""The tiny test model (tests/support/tinymodel.py) through edge.classify: the classifier the daemon uses."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from edge.classify import EmotionClassifier
from edge.model_contract import load_contract
from tests.support.fakefaces import FER_LABELS, make_faces


def test_tiny_model_is_full_int8_with_contract(tiny_model_path):
    contract = load_contract(tiny_model_path)
    assert contract.labels == FER_LABELS
    classifier = EmotionClassifier(tiny_model_path, num_threads=1)
    assert classifier._input["dtype"] == np.int8
    assert classifier._output["dtype"] == np.int8
    assert classifier.input_size == (48, 48)


def test_tiny_model_learned_fake_faces(tiny_model_path):
    # Unseen faces (another seed): the classes are drawn features, so a working model is far above chance.
    images, targets = make_faces(6, FER_LABELS, seed=123)
    classifier = EmotionClassifier(tiny_model_path, num_threads=1)
    probs = classifier.classify(images[..., np.newaxis])
    assert probs.shape == (len(images), len(FER_LABELS))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=0.05)
    accuracy = float((probs.argmax(axis=1) == targets).mean())
    assert accuracy > 0.5, accuracy  # chance is 1/7


@pytest.mark.slow
def test_the_checked_in_model_is_what_its_script_makes(tiny_model_path, trained_tiny_model_path):
    """tests/data/make_tiny_model.py's recipe, trained now, still gives a model like the checked-in one: same
    contract, same int8 interface, both well above chance on unseen faces and mostly agreeing. Fails when the
    recipe (tests/support/tinymodel.py) changed without the files being remade."""
    # The same contract but for the file's sha256: training is bit-exact only when TensorFlow's threads are
    # the recipe's, and a test that ran TensorFlow earlier in the session has already fixed them.
    trained, checked_in = load_contract(trained_tiny_model_path), load_contract(tiny_model_path)
    assert replace(trained, sha256=None) == replace(checked_in, sha256=None)
    images, targets = make_faces(6, FER_LABELS, seed=321)
    predictions = []
    for path in (tiny_model_path, trained_tiny_model_path):
        classifier = EmotionClassifier(path, num_threads=1)
        assert (classifier._input["dtype"], classifier._output["dtype"]) == (np.int8, np.int8)
        predictions.append(classifier.classify(images[..., np.newaxis]).argmax(axis=1))
        assert float((predictions[-1] == targets).mean()) > 0.5  # chance is 1/7
    assert float((predictions[0] == predictions[1]).mean()) > 0.6
