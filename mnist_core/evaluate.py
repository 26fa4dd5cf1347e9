"""Evaluate a model on labelled images: accuracy, loss, calibration error, per-class accuracy, confusion,
mistakes."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from mnist_core.calibration import calibrate, check_temperature, expected_calibration_error
from mnist_core.predict import traced_function

NUM_CLASSES = 10
# Same clipping as Keras' categorical cross-entropy, so the loss here matches model.evaluate's.
EPSILON = 1e-7


@dataclass(frozen=True)
class Evaluation:
    """Results of evaluate_model; arrays are numpy, to_dict() gives the JSON-friendly summary."""

    test_accuracy: float
    test_loss: float
    per_class_accuracy: np.ndarray  # (10,) float, NaN for a class with no samples
    confusion: np.ndarray  # (10, 10) int, rows true label, columns predicted
    predictions: np.ndarray  # (n,) int
    probabilities: np.ndarray  # (n, 10) float32
    labels: np.ndarray  # (n,) int, the true labels
    temperature: float = 1.0  # the probabilities (and loss) are the model's calibrated by it
    ece: float | None = None  # expected calibration error of `probabilities` (calibration.BINS bins)
    ece_uncalibrated: float | None = None  # the same of the model's own probabilities

    def misclassified(self, limit: int | None = 36) -> np.ndarray:
        """Indices of wrong predictions, the most confidently wrong first; at most `limit` (None: all)."""
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
            raise ValueError(f"misclassified got limit={limit!r}; expected a whole number >= 0 or None")
        wrong = np.flatnonzero(self.predictions != self.labels)
        confidence = self.probabilities[wrong, self.predictions[wrong]]
        # A stable sort keeps ties in index order, so the gallery is reproducible.
        ordered = wrong[np.argsort(-confidence, kind="stable")]
        return ordered if limit is None else ordered[:limit]

    def to_dict(self) -> dict:
        """A JSON-friendly summary: scalars, per-class list and the confusion matrix as nested lists."""
        return {
            "test_accuracy": self.test_accuracy,
            "test_loss": self.test_loss,
            "temperature": self.temperature,
            "ece": self.ece,
            "ece_uncalibrated": self.ece_uncalibrated,
            "count": int(len(self.labels)),
            "misclassified_count": int(np.count_nonzero(self.predictions != self.labels)),
            "per_class_accuracy": [None if math.isnan(v) else float(v) for v in self.per_class_accuracy],
            "confusion": self.confusion.tolist(),
        }


def _check_inputs(x, y) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim != 3 or x.shape[1:] != (28, 28) or len(x) == 0:
        raise ValueError(
            f"evaluate_model got images of shape {x.shape}; expected (n, 28, 28) with n >= 1, "
            "e.g. data.x_test"
        )
    if y.shape != (len(x),) or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(
            f"evaluate_model got labels of shape {y.shape} and dtype {y.dtype}; expected "
            f"integer labels of shape ({len(x)},), one per image"
        )
    if y.min() < 0 or y.max() >= NUM_CLASSES:
        raise ValueError(f"evaluate_model got labels from {y.min()} to {y.max()}; expected digits 0-9")
    return x, y.astype(np.int64)


def evaluate_model(
    model, x_test_uint8, y_test, *, batch_size: int = 1000, temperature: float = 1.0
) -> Evaluation:
    """Evaluate `model` on uint8 images (floats are taken as already in [0, 1]) and integer labels; its
    probabilities calibrated by `temperature` (calibration.calibrate), which never changes the accuracy."""
    temperature = check_temperature(temperature)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"evaluate_model got batch_size={batch_size!r}; expected a whole number >= 1")
    x, y = _check_inputs(x_test_uint8, y_test)
    fn = traced_function(model)  # one trace, then direct calls: model.predict is far slower per call
    chunks = []
    for start in range(0, len(x), batch_size):
        batch = x[start : start + batch_size]
        batch = batch.astype(np.float32) / 255.0 if batch.dtype == np.uint8 else batch.astype(np.float32)
        chunks.append(fn(batch).numpy())
    probabilities = np.concatenate(chunks)
    if probabilities.shape != (len(x), NUM_CLASSES):
        raise ValueError(f"the model returned shape {probabilities.shape}; expected ({len(x)}, 10)")
    ece_uncalibrated = expected_calibration_error(probabilities, y)
    predictions = probabilities.argmax(axis=1)  # before calibrating: not even a rounding tie may move it
    probabilities = calibrate(probabilities, temperature)
    confusion = np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=np.int64)
    np.add.at(confusion, (y, predictions), 1)
    per_class_total = confusion.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_class = np.where(per_class_total > 0, np.diag(confusion) / per_class_total, np.nan)
    true_probability = np.clip(probabilities[np.arange(len(y)), y].astype(np.float64), EPSILON, 1.0)
    return Evaluation(
        test_accuracy=float(np.trace(confusion) / len(y)),
        test_loss=float(-np.log(true_probability).mean()),
        per_class_accuracy=per_class,
        confusion=confusion,
        predictions=predictions,
        probabilities=probabilities,
        labels=y,
        temperature=temperature,
        ece=expected_calibration_error(probabilities, y) if temperature != 1.0 else ece_uncalibrated,
        ece_uncalibrated=ece_uncalibrated,
    )
