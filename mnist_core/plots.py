"""Matplotlib figures for MNIST; built on Figure directly (no pyplot state), returned, never shown.

Matplotlib is imported only when a figure is made (it costs most of a second), so the app's page and
upscale() never wait for it.
"""

from __future__ import annotations

import io
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mnist_core.store import atomic_write_bytes

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DIGITS = list(range(10))
WRONG_COLOR = "#c0392b"
RIGHT_COLOR = "#1e8449"


def _as_images(images, what: str) -> np.ndarray:
    array = np.asarray(images)
    if array.ndim != 3 or array.shape[1:] != (28, 28):
        raise ValueError(f"{what} got images of shape {array.shape}; expected (n, 28, 28)")
    return array


def _figure(**kwargs) -> Figure:
    """A new matplotlib Figure, importing matplotlib on first use."""
    from matplotlib.figure import Figure

    return Figure(**kwargs)


def _show_digit(ax, image) -> None:
    vmax = 255 if np.issubdtype(np.asarray(image).dtype, np.integer) else 1.0
    # White digit on black, exactly as the model sees it; nearest keeps the pixels crisp.
    ax.imshow(image, cmap="gray", vmin=0, vmax=vmax, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def _empty_figure(message: str) -> Figure:
    fig = _figure(figsize=(4, 1.2))
    ax = fig.add_subplot()
    ax.text(0.5, 0.5, message, ha="center", va="center", fontsize=12)
    ax.axis("off")
    return fig


def samples_figure(images, labels, predictions=None, columns: int = 8) -> Figure:
    """A grid of digits titled with their labels (and predictions, red when wrong); one axes per image."""
    images = _as_images(images, "samples_figure")
    labels = np.asarray(labels)
    if labels.shape != (len(images),):
        raise ValueError(
            f"samples_figure got labels of shape {labels.shape} for {len(images)} images; "
            "expected one label per image"
        )
    if predictions is not None:
        predictions = np.asarray(predictions)
        if predictions.shape != labels.shape:
            raise ValueError(
                f"samples_figure got predictions of shape {predictions.shape}; expected "
                f"{labels.shape}, one per image"
            )
    if isinstance(columns, bool) or not isinstance(columns, int) or columns < 1:
        raise ValueError(f"samples_figure got columns={columns!r}; expected a whole number >= 1")
    if len(images) == 0:
        return _empty_figure("No images")
    columns = min(columns, len(images))
    rows = math.ceil(len(images) / columns)
    fig = _figure(figsize=(1.25 * columns, 1.45 * rows), layout="constrained")
    for i, image in enumerate(images):
        ax = fig.add_subplot(rows, columns, i + 1)
        _show_digit(ax, image)
        if predictions is None:
            ax.set_title(str(labels[i]), fontsize=10)
        else:
            right = predictions[i] == labels[i]
            ax.set_title(
                f"{labels[i]} → {predictions[i]}", fontsize=10, color=RIGHT_COLOR if right else WRONG_COLOR
            )
    return fig


def confusion_figure(confusion) -> Figure:
    """The confusion matrix as a heat map with counts; rows true label, columns predicted."""
    matrix = np.asarray(confusion)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or matrix.shape[0] == 0:
        raise ValueError(f"confusion_figure got shape {matrix.shape}; expected a square matrix like (10, 10)")
    size = matrix.shape[0]
    fig = _figure(figsize=(6.4, 5.6), layout="constrained")
    ax = fig.add_subplot()
    ax.imshow(matrix, cmap="Blues", interpolation="nearest")
    threshold = matrix.max() / 2 if matrix.size else 0
    for (row, col), count in np.ndenumerate(matrix):
        ax.text(
            col,
            row,
            str(count),
            ha="center",
            va="center",
            fontsize=8,
            color="white" if count > threshold else "black",
        )
    ax.set_xticks(range(size))
    ax.set_yticks(range(size))
    ax.set_xlabel("Predicted label")
    ax.set_ylabel("True label")
    ax.set_title("Confusion matrix")
    return fig


def history_figure(history: dict) -> Figure:
    """The tutorial's two panels, accuracy and loss per epoch, for training and validation."""
    if not isinstance(history, dict):
        raise ValueError(
            f"history_figure got {type(history).__name__}; expected a dict of lists with keys "
            "loss, accuracy, val_loss, val_accuracy (e.g. keras History.history)"
        )
    from matplotlib.ticker import MaxNLocator

    fig = _figure(figsize=(10, 4), layout="constrained")
    for position, metric in enumerate(("accuracy", "loss"), start=1):
        ax = fig.add_subplot(1, 2, position)
        for key, label in ((metric, "train"), (f"val_{metric}", "validation")):
            values = list(history.get(key) or [])
            if values:
                ax.plot(range(1, len(values) + 1), values, marker="o", label=label)
        ax.set_title(f"Model {metric}")
        ax.set_xlabel("Epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
        ax.set_ylabel(metric.capitalize())
        if ax.lines:
            ax.legend()
    return fig


def reliability_figure(report: dict) -> Figure:
    """Reliability diagrams of calibration.calibration_report, before and after the temperature: per
    confidence bin its accuracy (bar), mean confidence (mark) and image count; the diagonal is perfect
    calibration."""
    panels = [key for key in ("before", "after") if isinstance(report, dict) and key in report]
    if not panels:
        raise ValueError(
            "reliability_figure got no 'before' or 'after' entries; expected a dict from "
            "mnist_core.calibration.calibration_report"
        )
    fig = _figure(figsize=(5 * len(panels), 4.6), layout="constrained")
    for position, key in enumerate(panels, start=1):
        entry = report[key]
        bins = entry["reliability"]
        width = 1 / bins["bins"]
        lefts = np.arange(bins["bins"]) * width
        filled = [i for i, count in enumerate(bins["count"]) if count]
        ax = fig.add_subplot(1, len(panels), position)
        ax.bar(
            lefts[filled], [bins["accuracy"][i] for i in filled], width=width, align="edge",
            color="#2e86c1", edgecolor="white", label="accuracy",
        )  # fmt: skip
        # Each bin's mean confidence over its bar: the gap between the two is the miscalibration.
        ax.plot(
            lefts[filled] + width / 2, [bins["confidence"][i] for i in filled], "_",
            color=WRONG_COLOR, markersize=12, markeredgewidth=2, label="mean confidence",
        )  # fmt: skip
        ax.plot([0, 1], [0, 1], "--", color="gray", linewidth=1)
        for i in filled:
            ax.text(lefts[i] + width / 2, 0.02, str(bins["count"][i]), ha="center", fontsize=6, rotation=90)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("Confidence (top probability)")
        ax.set_ylabel("Accuracy")
        scaled = f", T = {report['temperature']:.3f}" if key == "after" and "temperature" in report else ""
        ax.set_title(f"{key.capitalize()} calibration{scaled}: ECE {entry['ece']:.4f}")
        ax.legend(loc="upper left", fontsize=8)
    return fig


def mean_images_figure(means) -> Figure:
    """The mean image of each digit, one panel per class."""
    means = _as_images(means, "mean_images_figure")
    fig = _figure(figsize=(1.3 * len(means), 1.6), layout="constrained")
    for digit, image in enumerate(means):
        ax = fig.add_subplot(1, len(means), digit + 1)
        _show_digit(ax, image)
        ax.set_title(str(digit))
    return fig


def class_counts_figure(counts) -> Figure:
    """A bar chart of how many images each digit has."""
    counts = np.asarray(counts)
    if counts.ndim != 1 or len(counts) == 0:
        raise ValueError(f"class_counts_figure got shape {counts.shape}; expected (10,), one count per digit")
    fig = _figure(figsize=(6.4, 3.6), layout="constrained")
    ax = fig.add_subplot()
    bars = ax.bar(range(len(counts)), counts, color="#2e86c1")
    ax.bar_label(bars, fontsize=8)
    ax.set_xticks(range(len(counts)))
    ax.set_xlabel("Digit")
    ax.set_ylabel("Images")
    ax.set_title("Images per digit")
    return fig


def figure_to_png(fig: Figure, dpi: int = 100) -> bytes:
    """The figure rendered as PNG bytes."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def save_figure(fig: Figure, path: str | os.PathLike, dpi: int = 100) -> Path:
    """Write the figure to `path` as PNG atomically; returns the path."""
    return atomic_write_bytes(path, figure_to_png(fig, dpi=dpi))


def figure_to_array(fig: Figure) -> np.ndarray:
    """The figure rendered to an (H, W, 3) uint8 RGB array."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def upscale(image, scale: int = 10) -> np.ndarray:
    """Enlarge a 2-D image by whole-pixel blocks (nearest neighbour) as uint8; floats are taken in [0, 1]."""
    array = np.asarray(image)
    if array.ndim != 2 or array.size == 0:
        raise ValueError(f"upscale got an image of shape {array.shape}; expected a 2-D image, e.g. (28, 28)")
    if isinstance(scale, bool) or not isinstance(scale, int) or not 1 <= scale <= 64:
        raise ValueError(f"upscale got scale={scale!r}; expected a whole number from 1 to 64")
    if array.dtype != np.uint8:
        if np.issubdtype(array.dtype, np.floating):
            array = np.rint(np.clip(array, 0.0, 1.0) * 255.0)
        array = np.clip(array, 0, 255).astype(np.uint8)
    return np.repeat(np.repeat(array, scale, axis=0), scale, axis=1)
