"""Why this answer: which of the 28 x 28 pixels pushed the model towards its answer, which towards the
runner-up.

Integrated gradients (Sundararajan et al. 2017) of the logit difference "predicted minus runner-up", from a
black image (the MNIST background) to the digit: each pixel's share is its ink times the mean gradient
along that straight path, and the shares add up to the difference's change from black to the digit
(completeness), which is what makes them a reference one can test. Occlusion (grey out a patch, see the
answer move) needs a forward pass per patch position: 2x2 patches are ~200 passes (more than IG's 32), and
at 4x4 patches a stroke is two or three patches wide, too coarse to show which stroke counted; its
shares add up to nothing in particular either.

The gradients come from a numpy backward pass through the same layers as mnist_core.forward (ReLU masks,
max-pool argmax, transposed convolutions as one matrix product and nine shifted adds), all path points in
one batch; the network's first ops, whose Jacobian is the same all along a path from black (the CNN's first
convolution, pooling and batch norm; the MLP's first Dense), run once, not once per point. Measured by
scripts/benchmark.py --only explain (200 test digits, 32 steps, 2 cores shared with other work, load 3-7),
the shipped CNN's p50 a digit: 19-25 ms with OPENBLAS_NUM_THREADS=1, 16-71 ms with OpenBLAS's default two
threads, which stall each other on busy cores (its prediction, the reference, went from 1 to 10 ms too); the
MLP 0.2-0.5 ms. A traced tf.function with GradientTape, the fallback for a layer this module does not
know, took 54-97 ms p50 for the CNN on the same machine.

With a black baseline a pixel without ink gets no share: the view says which strokes counted, not where
missing ink would have changed the answer. And the shipped CNN already reads black as a confident "1"
(1 minus 9 is 3.9 logits there): for a 1 the shares explain only what the ink changed from that, a small
difference whose relative completeness error is large (the median over 200 digits is 1.6%, p90 9.6%).
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass

import numpy as np

from .forward import _activation, _conv2d, _dense, layer_plan, step_of

# 32 points along the path (see _path): completeness error median 0.09% (92% of digits within 1%) for the
# tutorial MLP, 1.6% for the shipped CNN, ~20 ms (scripts/benchmark.py --only explain; tests/test_explain.py).
STEPS = 32
MAX_STEPS = 1024


@dataclass(frozen=True)
class Explanation:
    """Integrated gradients of logit[predicted] - logit[runner_up] from a black image to `image`."""

    predicted: int
    runner_up: int
    attributions: np.ndarray  # (28, 28) float32: > 0 towards `predicted`, < 0 towards `runner_up`
    logit_difference: float  # logit[predicted] - logit[runner_up] at the image
    baseline_difference: float  # the same at the black image
    probabilities: np.ndarray  # (10,) float32 at the image: the model's own, uncalibrated
    steps: int

    @property
    def completeness_error(self) -> float:
        """|sum of attributions - (logit_difference - baseline_difference)|, relative to the latter."""
        target = self.logit_difference - self.baseline_difference
        return abs(float(self.attributions.sum(dtype=np.float64)) - target) / max(abs(target), 1e-12)


# --- a differentiable numpy pass ------------------------------------------------------------------
# Each op: forward(x) -> (y, cache); backward(gradient, cache) -> gradient of its input, for the first
# len(gradient) rows of the forward batch. `path` says what the op does to a straight path from black,
# which lets Explainer run the network's first ops once instead of once per path point:
#   linear       L(a * h) = a * L(h), L(h0 + a * d) = L(h0) + a * L(d): the same Jacobian everywhere;
#   affine       the same plus a constant (a bias, batch normalisation's shift);
#   homogeneous  f(a * h) = a * f(h) for a > 0 (ReLU, max pooling): its mask or argmax is the same at
#                every point of a path from zero, but not on a path that an affine op has moved off zero.


class _Plain:
    """A step without a cache whose backward is given (reshapes, affine maps)."""

    def __init__(self, forward, backward, path: str):
        self._forward, self._backward, self.path = forward, backward, path

    def forward(self, x):
        return self._forward(x), x.shape[1:]

    def backward(self, gradient, shape):
        return self._backward(gradient, shape)


def _reshape_op(forward) -> _Plain:
    return _Plain(forward, lambda g, shape: g.reshape(len(g), *shape), "linear")


def _dense_op(kernel: np.ndarray, bias: np.ndarray | None) -> _Plain:
    transposed = np.ascontiguousarray(kernel.T)
    return _Plain(
        _dense(kernel, bias), lambda g, shape: g @ transposed, "linear" if bias is None else "affine"
    )


def _affine_op(scale: np.ndarray, shift: np.ndarray) -> _Plain:
    return _Plain(lambda x: x * scale + shift, lambda g, shape: g * scale, "affine")


class _Conv2D:
    """Stride-1 convolution; backward: the gradient times the kernel, then added back at the nine shifts."""

    def __init__(self, kernel: np.ndarray, bias: np.ndarray | None, padding: str):
        self.height, self.width, self.channels, filters = kernel.shape
        self.padding = padding
        self.path = "linear" if bias is None else "affine"
        self._forward = _conv2d(kernel, bias, padding)
        # (filters, height * width * channels): a gradient row -> its share at every kernel position.
        self._back = np.ascontiguousarray(kernel.reshape(-1, filters).T)

    def forward(self, x):
        return self._forward(x), x.shape[1:3]

    def backward(self, gradient, size):
        n, rows, cols, _ = gradient.shape
        spread = (gradient.reshape(-1, gradient.shape[-1]) @ self._back).reshape(
            n, rows, cols, self.height, self.width, self.channels
        )
        padded = np.zeros((n, rows + self.height - 1, cols + self.width - 1, self.channels), np.float32)
        for i in range(self.height):
            for j in range(self.width):
                padded[:, i : i + rows, j : j + cols] += spread[:, :, :, i, j]
        if self.padding == "same":
            top, left = (self.height - 1) // 2, (self.width - 1) // 2
            padded = padded[:, top : top + size[0], left : left + size[1]]
        return padded


class _MaxPool:
    """Square, non-overlapping max pooling; the gradient goes to each window's first maximum."""

    path = "homogeneous"

    def __init__(self, size: int):
        self.size = size

    def _corners(self, x):
        n, rows, cols, _ = x.shape
        s = self.size
        x = x[:, : rows // s * s, : cols // s * s]
        return [x[:, i::s, j::s] for i in range(s) for j in range(s)]

    def forward(self, x):
        corners = self._corners(x)
        y = corners[0].copy()
        for corner in corners[1:]:
            np.maximum(y, corner, out=y)
        # Which corner holds each window's first maximum, as one small integer array.
        where = np.full(y.shape, len(corners) - 1, np.uint8)
        for index in range(len(corners) - 2, -1, -1):
            where[corners[index] == y] = index
        return y, (where, x.shape[1:])

    def backward(self, gradient, cache):
        where, shape = cache
        where = where[: len(gradient)]
        s = self.size
        spread = np.zeros((len(gradient), *shape), np.float32)
        rows, cols = gradient.shape[1] * s, gradient.shape[2] * s
        for index in range(s * s):
            i, j = divmod(index, s)
            spread[:, i:rows:s, j:cols:s] = gradient * (where == index)
        return spread


class _ReLU:
    path = "homogeneous"

    def forward(self, x):
        keep = x > 0
        return x * keep, keep

    def backward(self, gradient, keep):
        return gradient * keep[: len(gradient)]


class _Smooth:
    """sigmoid or tanh, whose derivative is a function of the output."""

    path = "other"

    def __init__(self, name: str):
        self.name = name

    def forward(self, x):
        y = _activation(self.name)(x)
        return y, y

    def backward(self, gradient, y):
        y = y[: len(gradient)]
        return gradient * (y * (1 - y) if self.name == "sigmoid" else 1 - y * y)


def _activation_op(name) -> object | None:
    if name == "linear":
        return []
    if name == "relu":
        return [_ReLU()]
    if name in ("sigmoid", "tanh"):
        return [_Smooth(name)]
    if name == "softmax":
        return ["softmax"]  # a marker: allowed last only, where the logits are taken before it
    return None


def _layer_ops(layer) -> list | None:
    """The differentiable numpy ops of one Keras layer (forward.layer_plan's reading of it), or None."""
    plan = layer_plan(layer)
    if plan is None:
        return None
    ops = []
    for item in plan:
        kind, *args = item
        if kind in ("reshape", "flatten"):
            ops.append(_reshape_op(step_of(item)))
        elif kind == "activation":
            activation = _activation_op(args[0])
            if activation is None:
                return None
            ops += activation
        elif kind == "dense":
            ops.append(_dense_op(*args))
        elif kind == "conv2d":
            ops.append(_Conv2D(*args))
        elif kind == "max_pool":
            ops.append(_MaxPool(*args))
        else:  # "affine"
            ops.append(_affine_op(*args))
    return ops


def _path(steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Points a in (0, 1) along the path and their weights, sum(weights * f(a)) ~ the integral of f.

    The midpoint rule in t with a = t^2: the gradient changes fastest near black, where units switch on,
    so points are denser there. On 40 test digits at 32 steps, the shipped CNN's worst completeness error
    falls from 0.81 logits (uniform points) to 0.22, and the map's L1 error against 2,048 uniform steps
    stays at 3-4%.
    """
    t = (np.arange(steps, dtype=np.float64) + 0.5) / steps
    return (t * t).astype(np.float32), (2 * t / steps).astype(np.float32)


def _along(alphas: np.ndarray, ndim: int) -> np.ndarray:
    return alphas.reshape(len(alphas), *[1] * (ndim - 1))


def _top_two(logits: np.ndarray) -> tuple[int, int]:
    order = np.argsort(-logits, kind="stable")
    return int(order[0]), int(order[1])


def _seeds(steps: int, predicted: int, runner_up: int) -> np.ndarray:
    seeds = np.zeros((steps, 10), np.float32)
    seeds[:, predicted], seeds[:, runner_up] = 1.0, -1.0
    return seeds


class _NumpyPass:
    """Integrated gradients through the model's numpy ops (its softmax left out: logits)."""

    backend = "numpy"

    def __init__(self, ops: list, softmax: bool):
        self.softmax = softmax
        # The leading ops whose Jacobian is the same at every point of the path (see `path` above) run on
        # the image and the baseline only; the mean gradient goes back through them once.
        start, moved = len(ops), False
        for index, op in enumerate(ops):
            moved = moved or op.path == "affine"
            if op.path == "other" or (op.path == "homogeneous" and moved):
                start = index
                break
        self._prefix, self._rest = ops[:start], ops[start:]

    @staticmethod
    def _forward(ops: list, x: np.ndarray) -> tuple[np.ndarray, list]:
        caches = []
        for op in ops:
            x, cache = op.forward(x)
            caches.append(cache)
        return x, caches

    @staticmethod
    def _backward(ops: list, caches: list, gradient: np.ndarray) -> np.ndarray:
        for op, cache in zip(reversed(ops), reversed(caches), strict=True):
            gradient = op.backward(gradient, cache)
        return gradient

    def integrate(self, image: np.ndarray, steps: int):
        """(logits at the image, at the baseline, the path's mean gradient (28, 28), predicted, runner-up)."""
        alphas, weights = _path(steps)
        ends, prefix_caches = self._forward(self._prefix, np.stack([image, np.zeros_like(image)]))
        path = ends[1] + _along(alphas, ends.ndim) * (ends[0] - ends[1])
        logits, caches = self._forward(self._rest, np.concatenate([path, ends]))
        logits = np.asarray(logits, np.float32)
        predicted, runner_up = _top_two(logits[steps])
        gradients = self._backward(self._rest, caches, _seeds(steps, predicted, runner_up))
        mean = np.tensordot(weights, gradients, axes=1)[None]
        # Back through the first ops at the image itself (row 0): the same Jacobian as along the path.
        mean = self._backward(self._prefix, prefix_caches, mean).reshape(28, 28)
        return logits[steps], logits[steps + 1], mean, predicted, runner_up


def _numpy_pass(model) -> _NumpyPass | None:
    """The model's differentiable numpy pass; None when it has a layer this module does not know."""
    ops = _layer_ops(model)
    if ops is None:
        return None
    softmax = bool(ops) and ops[-1] == "softmax"
    if softmax:
        ops = ops[:-1]
    if "softmax" in ops:
        return None  # a softmax inside the network: left to TensorFlow
    if len(model.input_shape) == 4:
        ops = [_reshape_op(lambda x: x[..., None]), *ops]
    return _NumpyPass(ops, softmax)


def _softmax_output(model) -> bool:
    """Whether the model's last layer ends in a softmax (so its outputs are probabilities)."""
    last = model
    while hasattr(last, "layers") and last.layers:
        last = last.layers[-1]
    if type(last).__name__ == "Softmax":
        return True
    return last.get_config().get("activation") == "softmax"


class _TensorFlowPass:
    """The same through tf.functions (traced once) and GradientTape, for any model; log-probabilities stand
    in for the logits of a softmax model (they differ by one constant per row, which cancels)."""

    backend = "tensorflow"

    def __init__(self, model):
        import tensorflow as tf

        needs_channel = len(model.input_shape) == 4
        self.softmax = softmax = _softmax_output(model)
        spec = tf.TensorSpec([None, 28, 28], tf.float32)

        def logits(x):
            out = tf.cast(model(tf.expand_dims(x, -1) if needs_channel else x, training=False), tf.float32)
            return tf.math.log(tf.maximum(out, 1e-37)) if softmax else out

        @tf.function(input_signature=[spec, tf.TensorSpec([None, 10], tf.float32)])
        def gradients(x, seeds):
            with tf.GradientTape() as tape:
                tape.watch(x)
                target = tf.reduce_sum(logits(x) * seeds)
            return tape.gradient(target, x)

        self._logits = tf.function(logits, input_signature=[spec])
        self._gradients = gradients

    def integrate(self, image: np.ndarray, steps: int):
        """The same as _NumpyPass.integrate, every path point through the whole model."""
        alphas, weights = _path(steps)
        batch = np.concatenate([_along(alphas, 3) * image, image[None], np.zeros((1, 28, 28), np.float32)])
        logits = self._logits(batch).numpy()
        predicted, runner_up = _top_two(logits[steps])
        gradients = self._gradients(batch[:steps], _seeds(steps, predicted, runner_up)).numpy()
        mean = np.tensordot(weights, gradients, axes=1)
        return logits[steps], logits[steps + 1], mean, predicted, runner_up


def _check_image(image) -> np.ndarray:
    array = np.asarray(image)
    if array.dtype == object or not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise ValueError(
            f"explain got an array of dtype {array.dtype}; expected one (28, 28) image of numbers: "
            "float32 in [0, 1] (or uint8 0-255, which is divided by 255)"
        )
    if array.shape != (28, 28):
        raise ValueError(
            f"explain got an array of shape {array.shape}; expected one (28, 28) image, as "
            "mnist_core.preprocess gives it; explain a batch one image at a time"
        )
    if np.issubdtype(array.dtype, np.integer):
        array = array.astype(np.float32) / 255.0
    array = np.asarray(array, np.float32)
    if not np.isfinite(array).all():
        raise ValueError("explain got NaN or infinite pixel values; expected finite values in [0, 1]")
    return array


def _probabilities(logits: np.ndarray, softmax: bool) -> np.ndarray:
    if not softmax:
        return logits.astype(np.float32)
    e = np.exp(logits - logits.max())
    return (e / e.sum()).astype(np.float32)


class Explainer:
    """Integrated gradients for one model; thread-safe: built once, then nothing in it changes."""

    def __init__(self, model, steps: int = STEPS, *, backend: str = "auto"):
        from .store import check_model_shape

        if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= MAX_STEPS:
            raise ValueError(f"steps must be an integer from 1 to {MAX_STEPS}, received {steps!r}")
        if backend not in ("auto", "numpy", "tensorflow"):
            raise ValueError(f"backend must be 'auto', 'numpy' or 'tensorflow', received {backend!r}")
        check_model_shape(model, source="the model to explain")
        self.steps = steps
        found = None if backend == "tensorflow" else _numpy_pass(model)
        if found is None and backend == "numpy":
            raise ValueError("the model has a layer the numpy pass does not know; use backend='auto'")
        self._pass = found or _TensorFlowPass(model)
        self.backend = self._pass.backend
        self.explain(np.zeros((28, 28), np.float32))  # warm up (trace) now, not on the first stroke

    def explain(self, image) -> Explanation:
        """Why the model answers what it answers for one (28, 28) image in [0, 1]."""
        image = _check_image(image)
        at_image, at_baseline, mean_gradient, predicted, runner_up = self._pass.integrate(image, self.steps)
        return Explanation(
            predicted=predicted,
            runner_up=runner_up,
            attributions=(image * mean_gradient).astype(np.float32),  # the baseline is 0
            logit_difference=float(at_image[predicted] - at_image[runner_up]),
            baseline_difference=float(at_baseline[predicted] - at_baseline[runner_up]),
            probabilities=_probabilities(at_image, self._pass.softmax),
            steps=self.steps,
        )


class Explainers:
    """One Explainer per model object, built on first use; safe to call from many threads at once."""

    def __init__(self, steps: int = STEPS):
        self.steps = steps
        self._lock = threading.Lock()
        self._cache: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def get(self, model) -> Explainer:
        """The Explainer of `model` (kept while the model lives)."""
        with self._lock:
            explainer = self._cache.get(model)
        if explainer is None:
            explainer = Explainer(model, self.steps)  # outside the lock: other models' calls go on
            with self._lock:
                explainer = self._cache.setdefault(model, explainer)
        return explainer

    def explain(self, model, image) -> Explanation:
        """`Explainer(model).explain(image)`, the Explainer built once per model."""
        return self.get(model).explain(image)


# --- the picture ----------------------------------------------------------------------------------

TOWARDS_PREDICTED = np.array([220, 30, 30], np.float32)  # red
TOWARDS_RUNNER_UP = np.array([30, 80, 230], np.float32)  # blue
PAPER, INK = 255.0, 90.0  # the digit in grey on white, so both colours show on it


def heatmap(image, attributions, scale: int = 1, *, strength: float | None = None) -> np.ndarray:
    """uint8 RGB (28 * scale, 28 * scale, 3): the digit in grey, red where a pixel pushed towards the
    predicted digit, blue towards the runner-up, the more opaque the more it pushed.

    `strength` is the |attribution| drawn fully opaque; by default the 99th percentile of the nonzero
    magnitudes, so one pixel does not wash out the rest.
    """
    image = _check_image(image)
    attributions = np.asarray(attributions, np.float32)
    if attributions.shape != (28, 28) or not np.isfinite(attributions).all():
        raise ValueError(
            f"heatmap got attributions of shape {attributions.shape}; expected finite (28, 28) values, "
            "as Explanation.attributions gives them"
        )
    if not isinstance(scale, int) or not 1 <= scale <= 32:
        raise ValueError(f"scale must be an integer from 1 to 32, received {scale!r}")
    magnitude = np.abs(attributions)
    if strength is None:
        nonzero = magnitude[magnitude > 0]
        strength = float(np.percentile(nonzero, 99)) if nonzero.size else 1.0
    alpha = np.clip(magnitude / max(strength, 1e-12), 0, 1)[..., None]
    base = (PAPER - (PAPER - INK) * np.clip(image, 0, 1))[..., None]
    colour = np.where(attributions[..., None] >= 0, TOWARDS_PREDICTED, TOWARDS_RUNNER_UP)
    rgb = np.rint(base * (1 - alpha) + colour * alpha).astype(np.uint8)
    if scale > 1:
        rgb = rgb.repeat(scale, axis=0).repeat(scale, axis=1)
    return rgb
