"""`emotion-train --precision mixed_bfloat16`: a run trained in bfloat16 compute converts to a full-int8 model
(TFLite cannot convert bfloat16 ops: convert rebuilds the model in float32 with the same weights)."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from tests.support.fakefaces import write_folder_dataset  # noqa: E402

pytestmark = pytest.mark.slow  # trains an epoch and converts


def test_a_bf16_run_saves_bf16_layers_and_converts_to_full_int8(tmp_path):
    from convert.cli import main as convert
    from convert.model_io import load_keras_model
    from train.cli import main as train

    data = write_folder_dataset(tmp_path / "faces", splits={"train": 10, "test": 4})
    run_dir, cache = tmp_path / "run", str(tmp_path / "cache")
    flags = ["--epochs", "1", "--batch-size", "16", "--arch", "mobilenet", "--quiet", "--cache-dir", cache]
    try:
        assert (
            train(["--data", str(data), "--out", str(run_dir), "--precision", "mixed_bfloat16", *flags]) == 0
        )
    finally:
        keras.mixed_precision.set_global_policy("float32")  # the run sets it process-wide
    saved = keras.saving.load_model(run_dir / "model.keras", compile=False)
    assert saved.get_layer("stem_conv").dtype_policy.name == "mixed_bfloat16"
    assert saved.get_layer("probs").dtype_policy.name == "float32"  # the softmax stays float32

    rebuilt = load_keras_model(run_dir / "model.keras")
    assert all(layer.dtype_policy.name == "float32" for layer in rebuilt.layers)
    for ours, theirs in zip(rebuilt.get_weights(), saved.get_weights(), strict=True):
        np.testing.assert_array_equal(ours, theirs)

    out = tmp_path / "bf16.tflite"
    assert convert([str(run_dir), "--data", str(data), "--out", str(out), "--cache-dir", cache]) == 0
    extra = json.loads(out.with_suffix(".json").read_text())["extra"]
    assert extra["full_integer"] is True
    assert extra["verification"]["agreement"] > 0.9
