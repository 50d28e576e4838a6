"""Emotion classification of face crops with a TFLite model and its contract.

Takes uint8 faces from the preprocessing contract and returns class probabilities. Works for int8,
uint8 and float models: input quantization uses the tensor's own scale and zero point, so the int8
model built by `emotion-convert` (input = pixel - 128) needs no special case.
"""

from __future__ import annotations

import os

import numpy as np

from edge.interpreter import ModelLoadError, load_interpreter
from edge.model_contract import ContractError, ModelContract, check_model_file, load_contract


class EmotionClassifier:
    def __init__(self, model_path: str | os.PathLike, num_threads: int | None = None):
        self.model_path = os.fspath(model_path)
        self.contract: ModelContract = load_contract(self.model_path)
        # Before the interpreter sees it: a damaged model still loads, and gives plausible, wrong scores.
        self.checked = check_model_file(self.model_path, self.contract)
        self.interpreter, self.backend = load_interpreter(self.model_path, num_threads)
        inputs = self.interpreter.get_input_details()
        outputs = self.interpreter.get_output_details()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ModelLoadError(f"{self.model_path}: expected one input and one output tensor")
        self._input, self._output = inputs[0], outputs[0]
        shape = tuple(self._input["shape"])
        expected = (self.contract.input_height, self.contract.input_width, 1)
        if len(shape) != 4 or tuple(shape[1:]) != expected:
            raise ModelLoadError(
                f"{self.model_path}: input shape {[int(n) for n in shape]} is not one face image {[1, *expected]}"
            )
        n_out = int(self._output["shape"][-1])
        if n_out != len(self.contract.labels):
            raise ContractError(
                f"{self.model_path}: the model has {n_out} outputs but its contract lists "
                f"{len(self.contract.labels)} labels {self.contract.labels}"
            )
        if shape[0] != 1:  # we invoke one face at a time so tensors are allocated once
            self.interpreter.resize_tensor_input(self._input["index"], [1, *expected])
            self.interpreter.allocate_tensors()
            self._input = self.interpreter.get_input_details()[0]
            self._output = self.interpreter.get_output_details()[0]

    @property
    def labels(self) -> list[str]:
        return self.contract.labels

    @property
    def input_size(self) -> tuple[int, int]:
        return self.contract.input_size

    def _quantize(self, faces: np.ndarray) -> np.ndarray:
        dtype = self._input["dtype"]
        scale, zero_point = self._input["quantization"]
        if dtype == np.float32:
            return faces.astype(np.float32)
        if scale == 0:
            return faces.astype(dtype)
        info = np.iinfo(dtype)
        q = np.round(faces.astype(np.float32) / scale + zero_point)
        return np.clip(q, info.min, info.max).astype(dtype)

    def _dequantize(self, raw: np.ndarray) -> np.ndarray:
        scale, zero_point = self._output["quantization"]
        if raw.dtype == np.float32 or scale == 0:
            return raw.astype(np.float32)
        return (raw.astype(np.float32) - zero_point) * scale

    def classify(self, faces: np.ndarray) -> np.ndarray:
        """uint8 faces (N, H, W, 1) -> probabilities (N, classes), float32."""
        if faces.ndim == 3:
            faces = faces[np.newaxis]
        n = len(faces)
        out = np.empty((n, len(self.labels)), np.float32)
        if n == 0:
            return out
        quantized = self._quantize(faces)
        for i in range(n):
            self.interpreter.set_tensor(self._input["index"], quantized[i : i + 1])
            self.interpreter.invoke()
            out[i] = self._dequantize(self.interpreter.get_tensor(self._output["index"])[0])
        return out
