"""Float weights recovered from an int8 .tflite (`emotion-train --init model.tflite`).

The shipped model exists only as int8 TFLite: its float .keras is gone. The weights are all in the file,
though: each conv and dense kernel as int8 with a per-channel scale, each bias as int32 at (input scale x
kernel scale). Dequantized, they are the float network up to the converter's two folds, which this undoes:
- BatchNorm was folded into the conv before it (kernel and bias scaled by gamma / sqrt(var + eps), the mean
  and beta moved into the bias). Which gamma and which statistics only the product knows, so each BatchNorm
  is rebuilt to pass the folded conv's output through unchanged in inference (y = z + bias) *and* to
  normalise by statistics that match the data: its moving mean and variance are measured on training faces,
  gamma = sqrt(variance + eps) and beta = mean + bias. In training mode a batch's statistics are close to
  those, so fine-tuning starts from the recovered network instead of from one that BatchNorm rescales;
- Rescaling(1/255) was folded into the first conv (the int8 input is the raw pixel - 128, at scale 1): its
  kernel is divided by the Rescaling factor again.

Convs and dense layers are matched in graph order, which is the Keras model's layer order for this project's
sequential architectures; every shape must agree, else the file is refused as another network. What the
recovery costs is the int8 rounding of the weights (per channel, about 1/254 of each channel's largest
weight); the recovered float model is checked against the .tflite on real faces (MODEL_CARD.md).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

MAX_STAT_FACES = 4096  # BatchNorm statistics of the recovered network: enough for a stable mean and variance


class TfliteInitError(ValueError):
    """The .tflite is not a network this run can hold; the message says why."""


def _dequantize(interpreter, index: int) -> np.ndarray:
    detail = interpreter.get_tensor_details()[index]
    values = interpreter.get_tensor(index).astype(np.float64)
    quant = detail["quantization_parameters"]
    scales, zero_points = np.asarray(quant["scales"]), np.asarray(quant["zero_points"])
    if scales.size == 0:  # a float tensor (a float16/float32 conversion): nothing to undo
        return values
    axis = int(quant["quantized_dimension"])
    shape = [1] * values.ndim
    if scales.size > 1:
        shape[axis] = scales.size
    return (values - zero_points.reshape(shape)) * scales.reshape(shape)


def read_tflite_layers(path: Path) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """[(op, kernel, bias)] of every CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED, dequantized, in graph
    order, with kernels in Keras's layout ((kh, kw, in, out), depthwise (kh, kw, in, 1), dense (in, out))."""
    from edge.interpreter import ModelLoadError, load_interpreter

    try:
        interpreter, _ = load_interpreter(path, num_threads=1)
    except ModelLoadError as exc:
        raise TfliteInitError(str(exc)) from None
    layers = []
    for op in interpreter._get_ops_details():  # the interpreter's only view of the graph's operators
        name = op["op_name"]
        if name not in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"):
            continue
        inputs = [int(i) for i in op["inputs"]]
        kernel = _dequantize(interpreter, inputs[1])
        bias = _dequantize(interpreter, inputs[2]) if len(inputs) > 2 and inputs[2] >= 0 else None
        # conv (out, kh, kw, in) and depthwise (1, kh, kw, channels) put out (or 1) last; dense (out, in) -> (in, out)
        kernel = kernel.transpose(1, 2, 3, 0) if name != "FULLY_CONNECTED" else kernel.T
        if bias is None:
            bias = np.zeros(kernel.shape[-1] if name != "DEPTHWISE_CONV_2D" else kernel.shape[2])
        layers.append((name, kernel, bias))
    return layers


def _kernel_layers(model) -> list:
    import keras

    kinds = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense)
    return [layer for layer in model.layers if isinstance(layer, kinds)]


def _following_batchnorm(model, layer):
    """The BatchNormalization fed by `layer`, or None (the layer keeps its own bias then)."""
    import keras

    for node in layer._outbound_nodes:
        if isinstance(node.operation, keras.layers.BatchNormalization):
            return node.operation
    return None


def _input_rescale(model) -> float:
    """The Rescaling factor in front of the first conv (1 when there is none); an offset is refused."""
    import keras

    for layer in model.layers:
        if isinstance(layer, keras.layers.Rescaling):
            if np.any(np.asarray(layer.offset) != 0):
                raise TfliteInitError(
                    "the model's Rescaling has an offset, which this recovery does not undo"
                )
            return float(np.asarray(layer.scale))
    return 1.0


def copy_tflite_weights(model, path: Path, faces: np.ndarray, seed: int = 0) -> dict:
    """Set `model`'s weights from the int8 .tflite at `path`; `faces` (uint8 (N, H, W) training crops) give the
    rebuilt BatchNorms their statistics. Returns what was done (for the run's console line)."""
    import keras

    from train.pipeline import to_model_input

    found = read_tflite_layers(path)
    ours = _kernel_layers(model)
    theirs = [k.shape for _, k, _ in found]
    wanted = [tuple(layer.kernel.shape) for layer in ours]
    if theirs != wanted:
        raise TfliteInitError(
            f"--init {path} is a different network: its kernels are {theirs}, this run's {wanted}; "
            "use the --arch and --width it was made from"
        )
    rescale = _input_rescale(model)
    norms = []
    for i, (layer, (_, kernel, bias)) in enumerate(zip(ours, found, strict=True)):
        if i == 0:
            kernel = kernel / rescale  # the converter multiplied Rescaling into the first kernel
        norm = _following_batchnorm(model, layer)
        if norm is None:
            if not layer.use_bias:
                raise TfliteInitError(
                    f"{layer.name} has no bias and no BatchNorm to carry the .tflite's bias"
                )
            layer.set_weights([kernel.astype(np.float32), bias.astype(np.float32)])
            continue
        if layer.use_bias:
            layer.set_weights([kernel.astype(np.float32), np.zeros_like(bias, np.float32)])
        else:
            layer.set_weights([kernel.astype(np.float32)])
        norms.append((layer, norm, bias))
    if not norms:
        return {"layers": len(ours), "batchnorms": 0, "faces": 0}
    # Statistics of each conv's output, in inference mode: every rebuilt BatchNorm is y = z + bias there
    # whatever its statistics, so one pass of the finished network measures them all at once.
    for _, norm, bias in norms:
        eps = norm.epsilon
        norm.set_weights(
            [np.ones_like(bias, np.float32), bias.astype(np.float32), np.zeros_like(bias, np.float32)]
            + [np.full_like(bias, 1.0 - eps, np.float32)]
        )
    rng = np.random.default_rng(seed)
    if len(faces) > MAX_STAT_FACES:
        faces = faces[np.sort(rng.choice(len(faces), MAX_STAT_FACES, replace=False))]
    probe = keras.Model(model.inputs, [layer.output for layer, _, _ in norms])
    outputs = probe.predict(to_model_input(faces), batch_size=256, verbose=0)
    outputs = outputs if isinstance(outputs, list) else [outputs]
    for (_, norm, bias), z in zip(norms, outputs, strict=True):
        axes = tuple(range(z.ndim - 1))
        mean, var = z.mean(axis=axes, dtype=np.float64), z.var(axis=axes, dtype=np.float64)
        gamma = np.sqrt(var + norm.epsilon)
        norm.set_weights([a.astype(np.float32) for a in (gamma, mean + bias, mean, var)])
    return {"layers": len(ours), "batchnorms": len(norms), "faces": int(len(faces))}
