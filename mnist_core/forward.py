"""A trained network's inference pass in numpy: what the Draw tab runs for every stroke.

A Keras model called through a traced tf.function costs ~2 ms a digit on two cores, a trace of its own
per model (~0.1 s and several MB of graph that TensorFlow keeps), and TensorFlow's thread pools, which a
training run keeps busy. The same arithmetic in numpy costs ~0.3 ms, holds only the weights, and needs
nothing but the calling thread. `compile_numpy(model)` returns None for a layer it does not know; the
Predictor then keeps the tf.function.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Step = Callable[[np.ndarray], np.ndarray]


def _activation(name: str) -> Step | None:
    if name == "linear":
        return lambda x: x
    if name == "relu":
        return lambda x: np.maximum(x, 0, out=x)
    if name == "softmax":
        return _softmax
    if name == "sigmoid":
        return lambda x: 1.0 / (1.0 + np.exp(-x))
    if name == "tanh":
        return np.tanh
    return None


def _softmax(x: np.ndarray) -> np.ndarray:
    x = np.exp(x - x.max(axis=-1, keepdims=True))
    return x / x.sum(axis=-1, keepdims=True)


def _dense(kernel: np.ndarray, bias: np.ndarray | None) -> Step:
    def step(x):
        y = x @ kernel
        return y if bias is None else y + bias

    return step


def _conv2d(kernel: np.ndarray, bias: np.ndarray | None, padding: str) -> Step:
    height, width, channels, filters = kernel.shape
    flat = np.ascontiguousarray(kernel.reshape(height * width * channels, filters))

    def step(x):
        if padding == "same":
            top, left = (height - 1) // 2, (width - 1) // 2
            x = np.pad(x, ((0, 0), (top, height - 1 - top), (left, width - 1 - left), (0, 0)))
        n, rows, cols = x.shape[0], x.shape[1] - height + 1, x.shape[2] - width + 1
        # Patches (n, rows, cols, channels, height, width) -> (n, rows, cols, height, width, channels),
        # the kernel's own order, then one matrix product.
        patches = np.lib.stride_tricks.sliding_window_view(x, (height, width), axis=(1, 2))
        patches = patches.transpose(0, 1, 2, 4, 5, 3).reshape(n * rows * cols, -1)
        y = (patches @ flat).reshape(n, rows, cols, filters)
        return y if bias is None else y + bias

    return step


def _max_pool(size: int) -> Step:
    def step(x):
        n, rows, cols, channels = x.shape
        rows, cols = rows // size * size, cols // size * size
        x = x[:, :rows, :cols].reshape(n, rows // size, size, cols // size, size, channels)
        return x.max(axis=(2, 4))

    return step


ACTIVATIONS = ("linear", "relu", "softmax", "sigmoid", "tanh")


def layer_plan(layer) -> list[tuple] | None:
    """What one Keras layer does at inference, as plain steps, or None if this module does not know it:
    ("reshape", shape), ("flatten",), ("activation", name), ("dense", kernel, bias),
    ("conv2d", kernel, bias, padding), ("max_pool", size), ("affine", scale, shift).

    The one reading of a layer's config and weights: this module's pass and mnist_core.explain's
    differentiable one are both built from it."""
    kind = type(layer).__name__
    config = layer.get_config()
    # A nested model's get_weights() copies all of its layers' weights: only the layers that use them.
    own = kind in ("Dense", "Conv2D", "BatchNormalization")
    weights = [np.asarray(w, np.float32) for w in layer.get_weights()] if own else []
    if kind in ("InputLayer", "Dropout", "RandomRotation", "RandomTranslation", "RandomZoom", "RandomFlip"):
        return []  # nothing at inference
    if kind == "Sequential":
        plan = []
        for inner in layer.layers:
            inner_plan = layer_plan(inner)
            if inner_plan is None:
                return None
            plan += inner_plan
        return plan
    if kind == "Reshape":
        return [("reshape", tuple(config["target_shape"]))]
    if kind == "Flatten":
        return [("flatten",)]
    if kind in ("Activation", "ReLU", "Softmax"):
        name = {"ReLU": "relu", "Softmax": "softmax"}.get(kind, config.get("activation"))
        if kind == "ReLU" and (
            config.get("max_value") or config.get("negative_slope") or config.get("threshold")
        ):
            return None
        return [("activation", name)] if name in ACTIVATIONS else None
    if kind in ("Dense", "Conv2D"):
        activation = config["activation"]
        if activation not in ACTIVATIONS:
            return None
        bias = weights[1] if config["use_bias"] else None
        if kind == "Dense":
            return [("dense", weights[0], bias), ("activation", activation)]
        plain = tuple(config["strides"]) == (1, 1) and tuple(config["dilation_rate"]) == (1, 1)
        plain = plain and config.get("groups", 1) == 1 and config["data_format"] == "channels_last"
        if not plain or config["padding"] not in ("valid", "same"):
            return None
        return [("conv2d", weights[0], bias, config["padding"]), ("activation", activation)]
    if kind == "MaxPooling2D":
        size = tuple(config["pool_size"])
        if size[0] != size[1] or tuple(config["strides"]) != size or config["padding"] != "valid":
            return None
        return [("max_pool", size[0])]
    if kind == "BatchNormalization":
        axis = config["axis"]
        if axis not in (-1, [-1]) and not (isinstance(axis, list | tuple) and list(axis) == [-1]):
            return None
        names = [w.path.split("/")[-1] for w in layer.weights]
        values = dict(zip(names, weights, strict=True))
        variance = values["moving_variance"]
        scale = values.get("gamma", np.ones_like(variance)) / np.sqrt(variance + config["epsilon"])
        shift = values.get("beta", np.zeros_like(variance)) - values["moving_mean"] * scale
        return [("affine", scale.astype(np.float32), shift.astype(np.float32))]
    return None


def step_of(item: tuple) -> Step:
    """The numpy function of one layer_plan step."""
    kind, *args = item
    if kind == "reshape":
        shape = args[0]
        return lambda x: x.reshape(x.shape[0], *shape)
    if kind == "flatten":
        return lambda x: x.reshape(x.shape[0], -1)
    if kind == "activation":
        return _activation(args[0])
    if kind == "dense":
        return _dense(*args)
    if kind == "conv2d":
        return _conv2d(*args)
    if kind == "max_pool":
        return _max_pool(*args)
    scale, shift = args  # "affine"
    return lambda x: x * scale + shift


def compile_numpy(model) -> Step | None:
    """A function (n, 28, 28) float32 -> (n, 10) probabilities doing what `model(x, training=False)`
    does, in numpy; None when the model has a layer this module does not know."""
    plan = layer_plan(model)
    if plan is None:
        return None
    steps = [step_of(item) for item in plan]
    if len(model.input_shape) == 4:  # a model that takes (n, 28, 28, 1): the channel axis first
        steps = [lambda x: x[..., None], *steps]

    def run(x: np.ndarray) -> np.ndarray:
        for step in steps:
            x = step(x)
        return np.asarray(x, np.float32)

    return run
