"""Tests for mnist_core.plots: figure contents, PNG output, no pyplot state, crisp upscaling."""

import gc
import os
import subprocess
import sys
import weakref
from pathlib import Path

import matplotlib
import numpy as np
import pytest
from matplotlib.figure import Figure

from mnist_core import plots

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _images_per_axes(fig):
    return [len(ax.images) for ax in fig.axes]


def test_samples_figure_has_one_panel_per_image(mnist):
    fig = plots.samples_figure(mnist.x_train[:10], mnist.y_train[:10], columns=4)
    assert isinstance(fig, Figure)
    assert _images_per_axes(fig) == [1] * 10
    assert [ax.get_title() for ax in fig.axes] == [str(label) for label in mnist.y_train[:10]]
    np.testing.assert_array_equal(fig.axes[0].images[0].get_array(), mnist.x_train[0])
    assert fig.axes[0].get_subplotspec().get_gridspec().get_geometry() == (3, 4)


def test_samples_figure_marks_wrong_predictions(mnist):
    labels = mnist.y_test[:6]
    predictions = labels.copy()
    predictions[2] = (labels[2] + 1) % 10
    fig = plots.samples_figure(mnist.x_test[:6], labels, predictions)
    titles = [ax.title for ax in fig.axes]
    assert titles[2].get_text() == f"{labels[2]} → {predictions[2]}"
    assert matplotlib.colors.same_color(titles[2].get_color(), plots.WRONG_COLOR)
    assert matplotlib.colors.same_color(titles[0].get_color(), plots.RIGHT_COLOR)


def test_samples_figure_without_images_says_so():
    fig = plots.samples_figure(np.zeros((0, 28, 28), np.uint8), np.zeros(0, int))
    assert [t.get_text() for t in fig.axes[0].texts] == ["No images"]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: plots.samples_figure(np.zeros((3, 28)), [1, 2, 3]), "images"),
        (lambda: plots.samples_figure(np.zeros((3, 28, 28)), [1, 2]), "labels"),
        (lambda: plots.samples_figure(np.zeros((3, 28, 28)), [1, 2, 3], [1]), "predictions"),
        (lambda: plots.samples_figure(np.zeros((3, 28, 28)), [1, 2, 3], columns=0), "columns"),
        (lambda: plots.confusion_figure(np.zeros((10, 9))), "square"),
        (lambda: plots.history_figure([0.1, 0.2]), "dict"),
        (lambda: plots.mean_images_figure(np.zeros((10, 28))), "images"),
        (lambda: plots.class_counts_figure(np.zeros((2, 5))), "one count"),
        (lambda: plots.upscale(np.zeros((2, 2, 2))), "2-D"),
        (lambda: plots.upscale(np.zeros((28, 28)), scale=0), "scale"),
        (lambda: plots.upscale(np.zeros((28, 28)), scale=2.5), "scale"),
    ],
)
def test_bad_arguments_raise_value_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_confusion_figure_shows_every_count():
    confusion = np.arange(100).reshape(10, 10)
    fig = plots.confusion_figure(confusion)
    assert _images_per_axes(fig) == [1]
    ax = fig.axes[0]
    np.testing.assert_array_equal(ax.images[0].get_array(), confusion)
    assert sorted(int(t.get_text()) for t in ax.texts) == list(range(100))
    assert ax.get_xlabel() == "Predicted label" and ax.get_ylabel() == "True label"


def test_history_figure_has_accuracy_and_loss_panels():
    history = {
        "loss": [0.5, 0.3, 0.2],
        "accuracy": [0.8, 0.9, 0.95],
        "val_loss": [0.4, 0.3, 0.25],
        "val_accuracy": [0.85, 0.9, 0.93],
    }
    fig = plots.history_figure(history)
    accuracy, loss = fig.axes
    assert accuracy.get_title() == "Model accuracy" and loss.get_title() == "Model loss"
    np.testing.assert_array_equal(accuracy.lines[1].get_ydata(), history["val_accuracy"])
    np.testing.assert_array_equal(loss.lines[0].get_xdata(), [1, 2, 3])
    assert [line.get_label() for line in loss.lines] == ["train", "validation"]
    partial = plots.history_figure({"loss": [0.5], "accuracy": [0.8]})
    assert [len(ax.lines) for ax in partial.axes] == [1, 1]
    assert [len(ax.lines) for ax in plots.history_figure({}).axes] == [0, 0]


def test_mean_images_and_class_counts(mnist):
    counts = np.bincount(mnist.y_train, minlength=10)
    means = np.stack([mnist.x_train[mnist.y_train == d][:200].mean(axis=0) / 255.0 for d in range(10)])
    fig = plots.mean_images_figure(means)
    assert _images_per_axes(fig) == [1] * 10
    assert [ax.get_title() for ax in fig.axes] == [str(d) for d in range(10)]
    bars = plots.class_counts_figure(counts)
    assert len(bars.axes) == 1
    assert [patch.get_height() for patch in bars.axes[0].patches] == counts.tolist()


def test_save_figure_writes_png_atomically(tmp_path, mnist, monkeypatch):
    fig = plots.samples_figure(mnist.x_train[:4], mnist.y_train[:4])
    path = plots.save_figure(fig, tmp_path / "out" / "samples.png")
    assert path.read_bytes().startswith(PNG_MAGIC)
    before = path.read_bytes()
    monkeypatch.setattr(os, "replace", lambda *a: (_ for _ in ()).throw(OSError("rename failed")))
    with pytest.raises(OSError, match="rename failed"):
        plots.save_figure(plots.confusion_figure(np.eye(10, dtype=int)), path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == ["samples.png"]


def test_figure_to_array_renders_rgb():
    fig = plots.class_counts_figure(np.arange(10))
    array = plots.figure_to_array(fig)
    width, height = fig.get_size_inches() * fig.dpi
    assert array.shape == (round(height), round(width), 3)
    assert array.dtype == np.uint8
    assert array.min() < 100 < array.max()  # something was drawn on the white background


def test_no_pyplot_state_and_figures_are_freed(mnist):
    import matplotlib.pyplot as plt

    fig = plots.samples_figure(mnist.x_train[:8], mnist.y_train[:8])
    plots.figure_to_array(fig)
    plots.figure_to_png(fig)
    for make in (
        lambda: plots.confusion_figure(np.eye(10, dtype=int)),
        lambda: plots.history_figure({}),
        lambda: plots.class_counts_figure(np.ones(10)),
    ):
        make()
    assert plt.get_fignums() == []
    ref = weakref.ref(fig)
    del fig
    gc.collect()
    assert ref() is None


def test_upscale_makes_exact_blocks(mnist):
    image = mnist.x_train[0]
    big = plots.upscale(image, scale=10)
    assert big.shape == (280, 280) and big.dtype == np.uint8
    blocks = big.reshape(28, 10, 28, 10)
    np.testing.assert_array_equal(blocks, np.broadcast_to(image[:, None, :, None], blocks.shape))
    floats = plots.upscale(np.array([[0.0, 0.5], [1.0, 1.2]]), scale=3)
    np.testing.assert_array_equal(floats[::3, ::3], [[0, 128], [255, 255]])
    assert floats.shape == (6, 6)
    np.testing.assert_array_equal(plots.upscale(image, scale=1), image)


def test_app_facing_modules_import_no_heavy_frameworks():
    # The app's page must not wait for matplotlib, TensorFlow or Keras: they load when first needed.
    heavy = ("matplotlib", "tensorflow", "keras")
    code = (
        "import sys, numpy as np\n"
        "import mnist_core.studio, mnist_core.plots, mnist_core.store, mnist_core.data, mnist_core.config\n"
        "from mnist_core.plots import upscale\n"
        "assert upscale(np.eye(28, dtype=np.float32), 4).shape == (112, 112)\n"
        f"print(sorted({{name.split('.')[0] for name in sys.modules}} & {set(heavy)!r}))\n"
    )
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
