"""Model definitions, apart from the training loop. Both are built for full-integer int8 on a Raspberry Pi.

Rules every architecture here follows, so `emotion-convert` gets pure int8 builtin ops and the Pi stays fast:
- the first layer is Rescaling(1/255): the model takes raw uint8 pixels 0..255 (the preprocessing contract);
- only Conv2D / DepthwiseConv2D (+ BatchNorm, folded at conversion) / ReLU / MaxPool / GlobalAveragePooling /
  Add / Dropout / Dense / Softmax; no Lambda, no custom layers, no augmentation layers (augmentation lives in
  the input pipeline), so the saved .keras file loads without custom objects;
- resolution is cut early (pooling / strides) to keep multiply-accumulates per face low.
"""

from __future__ import annotations

import keras
from keras import layers

# Faster-moving BN statistics than Keras' 0.99: short runs and small custom data sets (a few hundred steps)
# otherwise validate with barely-updated moving averages.
BN_MOMENTUM = 0.9


def _bn(name: str):
    return layers.BatchNormalization(momentum=BN_MOMENTUM, name=name)


def _conv_bn_relu(x, filters: int, kernel: int = 3, strides: int = 1, name: str = ""):
    x = layers.Conv2D(filters, kernel, strides=strides, padding="same", use_bias=False, name=f"{name}_conv")(
        x
    )
    x = _bn(f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


def _head(x, num_classes: int, dropout: float):
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    if dropout > 0:
        x = layers.Dropout(dropout, name="dropout")(x)
    # float32 whatever the dtype policy: a softmax in bfloat16 rounds probabilities to 3 significant digits.
    return layers.Dense(num_classes, activation="softmax", name="probs", dtype="float32")(x)


def _width(channels: int, multiplier: float) -> int:
    return max(8, int(round(channels * multiplier / 8)) * 8)  # multiples of 8 suit int8 SIMD kernels


def build_cnn(input_shape, num_classes, width: float = 1.0, dropout: float = 0.3) -> keras.Model:
    """Compact VGG-style conv-BN-ReLU net: 32-32/2-64-128-256 channels over 48->24->12->6 pixels.

    At 48x48 about 0.4M parameters and ~38M MACs per face; the expensive full-resolution stage is a single
    narrow conv, and the stride-2 conv halves resolution before the wider layers.
    """
    w = lambda c: _width(c, width)  # noqa: E731  (short alias keeps the layer list readable)
    inputs = keras.Input(shape=input_shape, name="pixels")
    x = layers.Rescaling(1.0 / 255, name="rescale")(inputs)
    x = _conv_bn_relu(x, w(32), name="b1a")
    x = _conv_bn_relu(x, w(32), strides=2, name="b1b")  # 48 -> 24
    x = _conv_bn_relu(x, w(64), name="b2")
    x = layers.MaxPooling2D(name="pool2")(x)  # 24 -> 12
    x = _conv_bn_relu(x, w(128), name="b3")
    x = layers.MaxPooling2D(name="pool3")(x)  # 12 -> 6
    x = _conv_bn_relu(x, w(256), name="b4")
    return keras.Model(inputs, _head(x, num_classes, dropout), name="emotion_cnn")


def build_vgg(input_shape, num_classes, width: float = 1.0, dropout: float = 0.4) -> keras.Model:
    """Deeper VGG-style net for the shipped model: seven 3x3 convs, 32-64-64-128-128-192-192 channels.

    About 0.83M parameters (~0.85 MB as int8) and ~84M MACs per face (~0.6 ms int8 on one x86 core). Depth
    at 24x24 and 12x12 is where FER's expression cues (brow, mouth corners) live, so the budget goes there;
    the 48x48 stage is a single narrow conv and a stride-2 conv, as in `cnn`.
    """
    w = lambda c: _width(c, width)  # noqa: E731
    inputs = keras.Input(shape=input_shape, name="pixels")
    x = layers.Rescaling(1.0 / 255, name="rescale")(inputs)
    x = _conv_bn_relu(x, w(32), name="b1a")
    x = _conv_bn_relu(x, w(64), strides=2, name="b1b")  # 48 -> 24
    x = _conv_bn_relu(x, w(64), name="b2")
    x = layers.MaxPooling2D(name="pool2")(x)  # 24 -> 12
    x = _conv_bn_relu(x, w(128), name="b3a")
    x = _conv_bn_relu(x, w(128), name="b3b")
    x = layers.MaxPooling2D(name="pool3")(x)  # 12 -> 6
    x = _conv_bn_relu(x, w(192), name="b4a")
    x = _conv_bn_relu(x, w(192), name="b4b")
    return keras.Model(inputs, _head(x, num_classes, dropout), name="emotion_vgg")


def _separable_block(x, filters: int, strides: int, name: str):
    """MobileNet-v1 depthwise-separable block; identity shortcut (Add) when the shape is unchanged."""
    shortcut = x
    x = layers.DepthwiseConv2D(3, strides=strides, padding="same", use_bias=False, name=f"{name}_dw")(x)
    x = _bn(f"{name}_dw_bn")(x)
    x = layers.ReLU(name=f"{name}_dw_relu")(x)
    x = layers.Conv2D(filters, 1, use_bias=False, name=f"{name}_pw")(x)
    x = _bn(f"{name}_pw_bn")(x)
    if strides == 1 and shortcut.shape[-1] == filters:
        x = layers.Add(name=f"{name}_add")([x, shortcut])
    return layers.ReLU(name=f"{name}_relu")(x)


def build_mobilenet(input_shape, num_classes, width: float = 1.0, dropout: float = 0.2) -> keras.Model:
    """Depthwise-separable variant: ~0.15M parameters and ~12M MACs at 48x48, roughly 3x cheaper than cnn."""
    w = lambda c: _width(c, width)  # noqa: E731
    inputs = keras.Input(shape=input_shape, name="pixels")
    x = layers.Rescaling(1.0 / 255, name="rescale")(inputs)
    x = _conv_bn_relu(x, w(32), name="stem")
    for i, (filters, strides) in enumerate([(64, 2), (64, 1), (128, 2), (128, 1), (256, 2), (256, 1)]):
        x = _separable_block(x, w(filters), strides, name=f"sep{i + 1}")
    return keras.Model(inputs, _head(x, num_classes, dropout), name="emotion_mobilenet")


ARCHS = {
    "cnn": build_cnn,
    "mobilenet": build_mobilenet,
    "vgg": build_vgg,
}


def make_model(arch: str = "cnn", input_shape=(48, 48, 1), num_classes: int = 7, **hparams) -> keras.Model:
    """Build an architecture by name; hparams (width, dropout) go to its builder."""
    if arch not in ARCHS:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {sorted(ARCHS)}")
    if num_classes < 2:
        raise ValueError(f"a classifier needs at least 2 classes, got {num_classes}")
    try:
        return ARCHS[arch](tuple(input_shape), int(num_classes), **hparams)
    except TypeError as exc:
        raise ValueError(f"bad hyper-parameters for {arch!r}: {exc}") from None


def estimate_macs(model: keras.Model) -> int:
    """Multiply-accumulates per image of the conv and dense layers (what dominates int8 inference time)."""
    total = 0
    for layer in model.layers:
        if isinstance(layer, (layers.Conv2D, layers.DepthwiseConv2D)):
            _, out_h, out_w, out_c = layer.output.shape
            in_c = layer.input.shape[-1]
            kh, kw = layer.kernel_size
            if isinstance(layer, layers.DepthwiseConv2D):
                total += out_h * out_w * kh * kw * out_c
            else:
                total += out_h * out_w * kh * kw * in_c * out_c
        elif isinstance(layer, layers.Dense):
            total += layer.input.shape[-1] * layer.units
    return int(total)


def count_params(model: keras.Model) -> int:
    return int(model.count_params())
