"""train.metrics against hand-computed numbers; train.model's size, cost, ops and custom-object-free saving."""

from __future__ import annotations

import json

import numpy as np
import pytest

from train.metrics import classification_report, format_report, plot_confusion, plot_history

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_classification_report_matches_hand_computation():
    labels = ["a", "b", "c"]
    y_true = [0, 0, 0, 1, 1, 2]
    y_pred = [0, 0, 1, 1, 2, 2]
    report = classification_report(y_true, y_pred, labels)
    assert report["confusion"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert report["accuracy"] == pytest.approx(4 / 6)
    a, b, c = (report["per_class"][k] for k in labels)
    assert (a["precision"], a["recall"], a["support"]) == (1.0, pytest.approx(2 / 3), 3)
    assert (b["precision"], b["recall"], b["f1"]) == (0.5, 0.5, 0.5)
    assert (c["precision"], c["recall"]) == (0.5, 1.0)
    f1s = [2 * (2 / 3) / (1 + 2 / 3), 0.5, 2 * 0.5 / 1.5]
    assert report["macro_f1"] == pytest.approx(np.mean(f1s))
    json.dumps(report)  # plain JSON types only
    text = format_report(report, title="val")
    assert "macro-F1" in text and "0.667" in text and text.splitlines()[0] == "val"


def test_classification_report_never_predicted_class_is_zero_not_nan():
    report = classification_report([0, 1, 1], [1, 1, 1], ["x", "y"])
    assert report["per_class"]["x"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    with pytest.raises(ValueError, match="outside"):
        classification_report([0, 3], [0, 1], ["x", "y"])


def test_plots_write_png_files(tmp_path):
    report = classification_report([0, 1, 1, 2], [0, 1, 2, 2], ["a", "b", "c"])
    plot_confusion(report, tmp_path / "confusion.png")
    history = {"loss": [1.0, 0.8], "val_loss": [1.1, 0.9], "accuracy": [0.3, 0.5], "val_accuracy": [0.2, 0.4]}
    plot_history(history, tmp_path / "curves.png")
    csv_path = tmp_path / "history.csv"
    csv_path.write_text("epoch,loss,accuracy,val_loss,val_accuracy\n0,1.0,0.3,1.1,0.2\n1,0.8,0.5,0.9,0.4\n")
    plot_history(csv_path, tmp_path / "curves2.png")
    for name in ("confusion.png", "curves.png", "curves2.png"):
        data = (tmp_path / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5000


# Layers that convert to int8 TFLite builtins (BatchNorm folds into the conv before it).
INT8_FRIENDLY = {
    "InputLayer",
    "Rescaling",
    "Conv2D",
    "DepthwiseConv2D",
    "BatchNormalization",
    "ReLU",
    "MaxPooling2D",
    "GlobalAveragePooling2D",
    "Add",
    "Dropout",
    "Dense",
}


# MACs per face each architecture may cost: ~100M MACs run in ~0.7 ms as int8 on one x86 core here.
MAC_BUDGET = {"cnn": 40e6, "mobilenet": 40e6, "vgg": 100e6}


@pytest.mark.parametrize("arch", sorted(MAC_BUDGET))
def test_architectures_are_small_cheap_and_load_without_custom_objects(tmp_path, arch):
    keras = pytest.importorskip("keras")
    from train.config import ARCH_NAMES
    from train.model import ARCHS, estimate_macs, make_model

    assert set(ARCH_NAMES) == set(ARCHS)
    model = make_model(arch, (48, 48, 1), 7)
    assert model.layers[1].__class__.__name__ == "Rescaling"
    assert {layer.__class__.__name__ for layer in model.layers} <= INT8_FRIENDLY
    assert model.output_shape == (None, 7)
    assert model.count_params() <= 900_000
    assert 1e6 < estimate_macs(model) <= MAC_BUDGET[arch]
    pixels = np.random.default_rng(0).integers(0, 256, (2, 48, 48, 1)).astype(np.float32)
    probs = model.predict(pixels, verbose=0)
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")  # no custom_objects needed
    assert np.allclose(loaded.predict(pixels, verbose=0), probs, atol=1e-5)


def test_mobilenet_is_cheaper_than_cnn():
    pytest.importorskip("keras")
    from train.model import estimate_macs, make_model

    cnn, mobile = make_model("cnn"), make_model("mobilenet")
    assert mobile.count_params() < cnn.count_params()
    assert estimate_macs(mobile) < estimate_macs(cnn)
    with pytest.raises(ValueError, match="unknown architecture"):
        make_model("resnet")


def test_class_weight_power_softens_balanced_weights_and_keeps_mean_one():
    pytest.importorskip("tensorflow")
    from train.pipeline import balanced_class_weights

    # FER-2013's training counts: disgust is 16x rarer than happy.
    counts = [3995, 436, 4097, 7215, 4965, 4830, 3171]
    labels = np.repeat(np.arange(7), counts)
    full = balanced_class_weights(labels, 7)
    root = balanced_class_weights(labels, 7, power=0.5)
    for weights in (full, root):
        assert weights[labels].mean() == pytest.approx(1.0, rel=1e-5)
    # Fully balanced: every class carries the same total weight.
    assert np.allclose(full * counts, full[0] * counts[0], rtol=1e-5)
    assert root[1] == pytest.approx(full[1] ** 0.5 * root[0] / full[0] ** 0.5, rel=1e-4)
    assert 1.0 < root[1] < full[1]  # disgust lifted, but less
    assert root[3] > full[3]  # happy down-weighted less
