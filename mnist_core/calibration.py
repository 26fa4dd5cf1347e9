"""Temperature scaling: probabilities that mean what they say, and the expected calibration error.

A model trained with label smoothing is under-confident: the shipped CNN is right on 99.5% of the MNIST
test set but its mean top probability there is 0.90. One temperature T, fitted on MNIST training images
by minimising the negative log-likelihood, fixes most of that: softmax(log(p) / T) equals
softmax(logits / T), so the saved model stays as it is and T lives in its metadata (store.save_model's
`calibration`). T < 1 sharpens, T > 1 softens; the argmax, hence the accuracy, never changes.

What T is fitted on (fit_images): a run that trained on a seeded subset (train_size < 60,000) is fitted
on FIT_IMAGES of the training images it never saw; a run on the whole training set (the presets, the
shipped model) and a fine-tuning (its base may have seen them all) on a seeded FIT_IMAGES of the training
set. The MNIST test set, on which the calibration error is reported, is never used to fit.

Measured on MNIST test (15 bins): the shipped model T = 0.405, ECE 0.097 -> 0.0015 (accuracy 99.54% both;
the test set's own best T, 0.418, would give 0.0013); a run of the CNN preset (99.54%) T = 0.393,
0.101 -> 0.0012; the preset for 3 epochs T = 0.41, 0.109 -> 0.0023; the same on 20,000 images, fitted
on held-out ones, T = 0.44, 0.099 -> 0.0031. Label smoothing keeps a model under-confident on the
images it trained on too, so a fit there transfers. The tutorial MLP (no smoothing, a little overfit)
comes out T = 1.27, 0.017 -> 0.013: its own training images understate its over-confidence on new ones.
"""

from __future__ import annotations

import math

import numpy as np

from .config import FULL_TRAIN_SIZE

BINS = 15  # equal-width confidence bins of the expected calibration error (Guo et al., 2017)
FIT_IMAGES = 5000
MIN_HELD_OUT = 1000  # fewer unseen images than this (train_size > 59,000): fit on the seeded sample
FIT_SEED = 15  # the stream of the seeded fit sample, apart from any run's seed
# log(p) of a probability that underflowed to 0 would be -inf: clip first (float32's smallest normal).
EPSILON = 1e-38
TEMPERATURE_RANGE = (0.05, 20.0)  # the search's bounds; a fit at a bound says the model is broken


def _check(probabilities, labels=None) -> tuple[np.ndarray, np.ndarray | None]:
    p = np.asarray(probabilities)
    if p.ndim not in (1, 2) or p.shape[-1] < 2 or not np.issubdtype(p.dtype, np.floating):
        raise ValueError(
            f"got probabilities of shape {p.shape} and dtype {p.dtype}; expected floats of shape (n, 10) "
            "or (10,), each row summing to 1 (a model's softmax output)"
        )
    if labels is None:
        return p, None
    y = np.asarray(labels)
    if p.ndim != 2 or y.shape != (len(p),) or not np.issubdtype(y.dtype, np.integer) or len(p) == 0:
        raise ValueError(
            f"got labels of shape {y.shape} and dtype {y.dtype} for probabilities of shape {p.shape}; "
            "expected integer labels, one per row, and at least one row"
        )
    return p, y


def check_temperature(temperature) -> float:
    """`temperature` as a float when it is a finite number > 0; ValueError otherwise."""
    if isinstance(temperature, bool) or not isinstance(temperature, int | float | np.floating):
        raise ValueError(f"temperature must be a number > 0, received {temperature!r}")
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a finite number > 0, received {temperature!r}")
    return float(temperature)


def calibrate(probabilities, temperature: float) -> np.ndarray:
    """softmax(log(p) / T) of (n, 10) or (10,) probabilities, in their dtype; T = 1: them, unchanged."""
    p, _ = _check(probabilities)
    if check_temperature(temperature) == 1.0:
        return p
    # softmax(log(p) / T) = p ** (1 / T) / sum(p ** (1 / T)): one power instead of a log and an exp (half
    # the time for one image); over the row's top first, so the largest term is 1 and none overflows.
    scaled = p.astype(np.float64)
    scaled /= scaled.max(axis=-1, keepdims=True)
    np.power(scaled, 1 / temperature, out=scaled)
    scaled /= scaled.sum(axis=-1, keepdims=True)
    return scaled.astype(p.dtype, copy=False)


def _nll(log_p: np.ndarray, labels: np.ndarray, inverse_temperature: float) -> float:
    z = log_p * inverse_temperature
    top = z.max(axis=1)
    log_norm = top + np.log(np.exp(z - top[:, None]).sum(axis=1))
    return float((log_norm - z[np.arange(len(z)), labels]).mean())


def fit_temperature(probabilities, labels) -> float:
    """The temperature that minimises the negative log-likelihood of `labels` under calibrate().

    The NLL is convex in 1/T (a log-sum-exp of logits scaled by 1/T, minus a linear term), so a golden-
    section search over 1/T finds its one minimum; 1/T to 1e-6 in ~35 steps of an (n, 10) pass each.
    """
    p, y = _check(probabilities, labels)
    log_p = np.log(np.maximum(p, EPSILON), dtype=np.float64)
    low, high = 1 / TEMPERATURE_RANGE[1], 1 / TEMPERATURE_RANGE[0]
    ratio = (math.sqrt(5) - 1) / 2
    a, b = high - ratio * (high - low), low + ratio * (high - low)
    fa, fb = _nll(log_p, y, a), _nll(log_p, y, b)
    while high - low > 1e-6:
        if fa <= fb:  # the minimum lies in [low, b]
            high, b, fb = b, a, fa
            a = high - ratio * (high - low)
            fa = _nll(log_p, y, a)
        else:
            low, a, fa = a, b, fb
            b = low + ratio * (high - low)
            fb = _nll(log_p, y, b)
    return 1 / ((low + high) / 2)


def reliability(probabilities, labels, bins: int = BINS) -> dict:
    """Per equal-width confidence bin (top probability in (k/bins, (k+1)/bins]; the first also takes 0):
    count, mean confidence and accuracy (None for an empty bin), and the expected calibration error."""
    p, y = _check(probabilities, labels)
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
        raise ValueError(f"bins must be a whole number >= 1, received {bins!r}")
    confidence = p.max(axis=1).astype(np.float64)
    correct = p.argmax(axis=1) == y
    # Bin k holds confidences in (k/bins, (k+1)/bins]: ceil(c * bins) - 1, with 0 going to the first bin.
    index = np.clip(np.ceil(confidence * bins).astype(np.int64) - 1, 0, bins - 1)
    count = np.bincount(index, minlength=bins)
    confidence_sum = np.bincount(index, weights=confidence, minlength=bins)
    correct_sum = np.bincount(index, weights=correct, minlength=bins)
    filled = count > 0
    ece = float(np.abs(correct_sum - confidence_sum)[filled].sum() / len(p))
    return {
        "bins": bins,
        "count": count.tolist(),
        "confidence": [float(s / n) if n else None for s, n in zip(confidence_sum, count, strict=True)],
        "accuracy": [float(s / n) if n else None for s, n in zip(correct_sum, count, strict=True)],
        "ece": ece,
    }


def expected_calibration_error(probabilities, labels, bins: int = BINS) -> float:
    """Sum over equal-width confidence bins of |accuracy - mean confidence|, weighted by the bin's share."""
    return reliability(probabilities, labels, bins)["ece"]


def fit_images(data, train_size: int = FULL_TRAIN_SIZE, seed: int = 0, *, held_out: bool = True):
    """(images, labels, description): the MNIST training images to fit a run's temperature on.

    A run of `train_size` < all images with `seed` trained on training.training_subset; the fit takes up
    to FIT_IMAGES of the others when `held_out` and at least MIN_HELD_OUT are left. Otherwise a seeded
    FIT_IMAGES of the whole training set, which the model may have trained on.
    """
    from .training import training_subset  # the run's own draw, so "not trained on" means it

    total = len(data.x_train)
    chosen = training_subset(total, train_size, seed) if held_out else None
    if chosen is not None:
        unseen = np.setdiff1d(np.arange(total), chosen)
        if len(unseen) >= MIN_HELD_OUT:
            count = min(FIT_IMAGES, len(unseen))
            pick = np.sort(np.random.default_rng(FIT_SEED).choice(unseen, count, replace=False))
            return data.x_train[pick], data.y_train[pick], f"{count} training images not trained on"
    pick = np.sort(np.random.default_rng(FIT_SEED).choice(total, min(FIT_IMAGES, total), replace=False))
    return data.x_train[pick], data.y_train[pick], f"{len(pick)} seeded training images (may be trained on)"


def fit_model(model, images, labels, fit_on: str = "") -> dict:
    """The calibration metadata of `model` fitted on `images` (uint8) and `labels`: temperature, what it
    was fitted on, and the calibration error there before and after."""
    from .evaluate import evaluate_model

    probabilities = evaluate_model(model, images, labels).probabilities
    labels = np.asarray(labels, dtype=np.int64)
    temperature = fit_temperature(probabilities, labels)
    return {
        "temperature": round(temperature, 6),
        "fit_on": fit_on or f"{len(labels)} images",
        "fit_images": int(len(labels)),
        "fit_ece_before": expected_calibration_error(probabilities, labels),
        "fit_ece_after": expected_calibration_error(calibrate(probabilities, temperature), labels),
    }


def temperature_of(metadata: dict | None, default: float | None = 1.0) -> float | None:
    """The temperature stored in a model's metadata (store.read_metadata); `default` when it has none
    (1.0: the model's own probabilities), or a broken one (an old or hand-edited sidecar)."""
    calibration = (metadata or {}).get("calibration")
    value = calibration.get("temperature") if isinstance(calibration, dict) else None
    try:
        return check_temperature(value)
    except ValueError:
        return default


def calibration_report(model, data, temperature: float | None = None, *, probabilities=None) -> dict:
    """ECE, NLL and reliability bins on the MNIST test set, before and after `temperature` (None: fitted
    now on fit_images(data)); `probabilities`: the model's own test probabilities, if already computed."""
    from .evaluate import EPSILON as LOSS_EPSILON
    from .evaluate import evaluate_model

    labels = np.asarray(data.y_test, dtype=np.int64)
    if probabilities is None:
        probabilities = evaluate_model(model, data.x_test, labels).probabilities
    report = {}
    if temperature is None:
        images, fit_labels, fit_on = fit_images(data)
        report["fit"] = fit_model(model, images, fit_labels, fit_on)
        temperature = report["fit"]["temperature"]
    temperature = check_temperature(temperature)
    calibrated = calibrate(probabilities, temperature)
    rows = np.arange(len(labels))
    for name, p in (("before", probabilities), ("after", calibrated)):
        bins = reliability(p, labels)
        report[name] = {
            "ece": bins.pop("ece"),
            "test_loss": float(-np.log(np.clip(p[rows, labels].astype(np.float64), LOSS_EPSILON, 1)).mean()),
            "mean_confidence": float(p.max(axis=1).mean()),
            "reliability": bins,
        }
    return {
        "temperature": temperature,
        "test_accuracy": float((probabilities.argmax(axis=1) == labels).mean()),
        "count": int(len(labels)),
        **report,
    }
