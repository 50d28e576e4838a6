"""`emotion-train --init model.tflite` (train/tflite_init.py): float weights recovered from an int8 file.

A small vgg with non-trivial BatchNorms (random scales and statistics, so the converter's folds matter) is
converted to int8 as emotion-convert does; the network rebuilt from the .tflite must then predict what the
.tflite predicts, in inference and (on mixed batches) in training mode, and a file of another network is
refused by name."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from edge.classify import EmotionClassifier  # noqa: E402
from edge.files import write_bytes_atomic  # noqa: E402
from edge.model_contract import ModelContract, save_contract  # noqa: E402
from tests.support.fakefaces import FER_LABELS, make_faces  # noqa: E402
from train.model import make_model  # noqa: E402
from train.tflite_init import TfliteInitError, copy_tflite_weights  # noqa: E402

pytestmark = pytest.mark.slow  # converts a model with TensorFlow's TFLite converter


@pytest.fixture(scope="module")
def faces():
    images, labels = make_faces(40, seed=7)
    order = np.random.default_rng(0).permutation(len(images))  # mixed classes in every batch
    return images[order], labels[order]


@pytest.fixture(scope="module")
def int8_model(tmp_path_factory, faces):
    from convert.quantize import convert_model

    keras.utils.set_random_seed(3)
    model = make_model("vgg", (48, 48, 1), 7, width=0.25)
    rng = np.random.default_rng(1)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.set_weights(
                [
                    rng.uniform(0.5, 2, n),
                    rng.normal(0, 0.3, n),
                    rng.normal(0, 0.2, n),
                    rng.uniform(0.05, 1, n),
                ]
            )
    images, _ = faces
    tflite, _ = convert_model(model, "int8", images[:100])
    path = tmp_path_factory.mktemp("tflite") / "small.tflite"
    write_bytes_atomic(path, tflite)
    save_contract(path, ModelContract(labels=list(FER_LABELS), arch="vgg"))
    return path, model


def test_the_recovered_network_predicts_what_the_int8_file_predicts(int8_model, faces):
    path, original = int8_model
    images, _ = faces
    x = images[..., None].astype(np.float32)
    int8 = EmotionClassifier(path).classify(images[..., None])

    recovered = make_model("vgg", (48, 48, 1), 7, width=0.25)
    done = copy_tflite_weights(recovered, path, images)
    assert done == {"layers": 8, "batchnorms": 7, "faces": len(images)}
    ours = recovered.predict(x, verbose=0)
    theirs = original.predict(x, verbose=0)
    assert np.mean(ours.argmax(1) == int8.argmax(1)) > 0.9
    assert np.abs(ours - theirs).mean() < 0.02  # the float network it was converted from, up to int8 rounding

    # In training mode BatchNorm uses each batch's statistics; rebuilt on the data's own, they barely move.
    recovered.get_layer("dropout").rate = 0.0
    trained_mode = np.concatenate(
        [np.asarray(recovered(x[i : i + 70], training=True)) for i in range(0, len(x), 70)]
    )
    assert np.mean(trained_mode.argmax(1) == ours.argmax(1)) > 0.85


def test_a_file_of_another_network_is_refused(int8_model, faces):
    path, _ = int8_model
    wider = make_model("vgg", (48, 48, 1), 7, width=0.5)
    with pytest.raises(TfliteInitError, match="different network"):
        copy_tflite_weights(wider, path, faces[0])
