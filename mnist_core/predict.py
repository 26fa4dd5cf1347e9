"""The active model: fast thread-safe prediction (in numpy, mnist_core.forward) and an atomic swap to another
model."""

from __future__ import annotations

import threading

import numpy as np

from .calibration import calibrate, check_temperature, temperature_of

# Large batches are cut into chunks so a CNN's activations for 10,000 images never sit in memory at once
# (numpy's patches of the second convolution: 256 x 121 x 288 floats, 36 MB).
CHUNK_SIZE = 256


def _check_images(images) -> tuple[np.ndarray, bool]:
    """Images as a float32 (n, 28, 28) batch, and whether a single image was given."""
    array = np.asarray(images)
    if array.dtype == object or not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise ValueError(
            f"predict got an array of dtype {array.dtype}; expected numbers: float32 in [0, 1] "
            "(or uint8 0-255, which is divided by 255)"
        )
    single = array.shape == (28, 28)
    if not single and (array.ndim != 3 or array.shape[1:] != (28, 28)):
        raise ValueError(
            f"predict got images of shape {array.shape}; expected one image (28, 28) or a batch "
            "(n, 28, 28); reshape or preprocess the input first"
        )
    if np.issubdtype(array.dtype, np.integer):
        array = array.astype(np.float32) / 255.0
    array = np.ascontiguousarray(array, dtype=np.float32)
    if not np.isfinite(array).all():
        raise ValueError("predict got NaN or infinite pixel values; expected finite values in [0, 1]")
    return (array[None] if single else array), single


def model_function(model):
    """(n, 28, 28) float32 -> (n, 10) numpy probabilities: the model's numpy inference pass
    (mnist_core.forward) when it knows every layer, else a tf.function calling the model, traced once."""
    from .forward import compile_numpy

    numpy_pass = compile_numpy(model)
    if numpy_pass is not None:
        return numpy_pass
    traced = traced_function(model)
    return lambda x: traced(x).numpy()


def traced_function(model):
    """A tf.function calling `model` on (n, 28, 28) float32, traced once; adds the channel axis if needed."""
    import tensorflow as tf

    needs_channel = len(model.input_shape) == 4

    @tf.function(input_signature=[tf.TensorSpec([None, 28, 28], tf.float32)])
    def run(x):
        if needs_channel:
            x = tf.expand_dims(x, -1)
        return tf.cast(model(x, training=False), tf.float32)

    return run


class Predictor:
    """Thread-safe holder of the active model; predict() sees the old or the new model, never a mix.

    `info` may carry "temperature" (or be a model's metadata, with its "calibration"): predict() then gives
    calibrated probabilities (calibration.calibrate; ~20 us for one image). Without it, the model's own.
    """

    def __init__(self, model=None, info: dict | None = None):
        self._active = None  # (model, fn, info, temperature) swapped in one assignment
        self._swap_lock = threading.Lock()
        if model is not None:
            self.set_model(model, info)

    def set_model(self, model, info: dict | None = None) -> None:
        """Make `model` the active model; its inference pass is built and warmed up before the swap."""
        from mnist_core.store import check_model_shape

        info = dict(info or {})
        # A model's whole metadata (store.load_model's) works too: its calibration's temperature.
        temperature = (
            check_temperature(info["temperature"]) if "temperature" in info else temperature_of(info)
        )
        check_model_shape(model, source="the new model")
        fn = model_function(model)
        fn(np.zeros((1, 28, 28), np.float32))  # warm up (trace) now so the first real prediction is fast
        # The lock orders concurrent swaps; readers never take it, they read one attribute once.
        with self._swap_lock:
            self._active = (model, fn, info, temperature)

    @property
    def model(self):
        """The active Keras model, or None."""
        active = self._active
        return None if active is None else active[0]

    @property
    def info(self) -> dict:
        """Information given with the active model ({} when none)."""
        active = self._active
        return {} if active is None else dict(active[2])

    @property
    def temperature(self) -> float:
        """The temperature predict() calibrates by (1.0: the model's own probabilities)."""
        active = self._active
        return 1.0 if active is None else active[3]

    @property
    def has_model(self) -> bool:
        """Whether a model is active."""
        return self._active is not None

    def predict(self, images) -> np.ndarray:
        """Calibrated probabilities: (28, 28) -> (10,), (n, 28, 28) -> (n, 10); float32 input in [0, 1]."""
        active = self._active
        if active is None:
            raise ValueError("no model is active: load or train a model first (Predictor.set_model)")
        batch, single = _check_images(images)
        fn = active[1]
        if len(batch) <= CHUNK_SIZE:
            probabilities = fn(batch)
        else:
            probabilities = np.concatenate(
                [fn(batch[i : i + CHUNK_SIZE]) for i in range(0, len(batch), CHUNK_SIZE)]
            )
        probabilities = calibrate(probabilities, active[3])
        return probabilities[0] if single else probabilities
