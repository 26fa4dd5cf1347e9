"""Drawn digits: hand-made and traced strokes rendered like gr.Sketchpad, through the Draw tab's path."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mnist_core import drawn
from mnist_core.preprocess import BRUSH_WIDTH, PEN_WIDTH, strokes_to_mnist, to_mnist

ROOT = Path(__file__).resolve().parents[1]


def all_styles():
    return [(d, s) for d in range(10) for s in range(len(drawn.STROKES[d]))]


def test_every_digit_has_three_styles_inside_the_unit_box():
    for digit in range(10):
        assert len(drawn.STROKES[digit]) >= 3
        for style in range(len(drawn.STROKES[digit])):
            points = np.concatenate([np.asarray(s) for s in drawn.digit_strokes(digit, style)])
            assert points.min() >= -0.01 and points.max() <= 1.01, (digit, style)
            assert np.ptp(points[:, 1]) > 0.9  # each digit spans its box's height
    with pytest.raises(ValueError, match="style"):
        drawn.digit_strokes(7, 9)


# Issue 13's styles and the school variants it lists, by name; the first three or four are the original set.
NAMED = {
    1: ["stick", "flag", "flag and base", "slanted stick", "long flag"],
    2: ["plain", "looped"],
    4: ["closed", "open", "open, short stem", "one stroke, no crossing"],
    6: ["curved back", "straight back", "small loop", "tall stem, tiny loop", "large loop"],
    7: ["plain", "crossed", "hooked, curved stem", "crossed, serif", "looped at the bend"],
    8: ["one stroke", "two loops", "slanted one stroke"],
    9: ["straight tail", "curved tail", "two strokes", "small head, sweeping tail", "sweeping tail"],
}


def test_every_style_has_a_name_and_the_originals_keep_their_index():
    for digit in range(10):
        names = drawn.STYLE_NAMES[digit]
        assert len(names) == len(drawn.STROKES[digit]) == len(set(names)) and all(names)
        assert [drawn.style_name(digit, k) for k in range(len(names))] == names
    for digit, names in NAMED.items():
        for name in names:
            assert name in drawn.STYLE_NAMES[digit], (digit, name)
    # scripts/browser.py and the UI tests pick styles by index: the original ones mean what they meant.
    originals = {1: 4, 2: 2, 4: 3, 6: 3, 7: 3, 8: 3, 9: 3}
    for digit, count in originals.items():
        assert drawn.STYLE_NAMES[digit][:count] == NAMED[digit][:count], digit
    # The crossed 7, the 1 with a base and the two-stroke 9 each have a second stroke.
    assert [len(drawn.digit_strokes(d, k)) for d, k in ((7, 1), (1, 2), (9, 2))] == [2, 2, 2]
    with pytest.raises(ValueError, match="no style 99 of digit 3"):
        drawn.style_name(3, 99)


def test_every_style_drawn_with_the_sets_variations_lands_inside_the_canvas(mnist):
    items = drawn.drawn_items(mnist, count=0, seed=5, handmade=3)
    assert len(items) == 3 * sum(len(styles) for styles in drawn.STROKES.values())
    for item in items:
        strokes = drawn.item_strokes(item, mnist, 560)
        points = np.concatenate([np.asarray(s) for s in strokes])
        margin = item.brush * 560 / 2
        assert points.min() >= margin and points.max() <= 560 - margin, item
        image = strokes_to_mnist(strokes)
        assert image.shape == (28, 28) and 0.03 < (image > 0.5).mean() < 0.4, item


def _has_hole(image) -> bool:
    """True if some background pixel of the 28 x 28 image cannot reach the border (a loop stays open)."""
    background = image < 0.3
    outside = np.zeros_like(background)
    outside[[0, -1], :] = background[[0, -1], :]
    outside[:, [0, -1]] = background[:, [0, -1]]
    while True:
        grown = outside.copy()
        grown[1:] |= outside[:-1]
        grown[:-1] |= outside[1:]
        grown[:, 1:] |= outside[:, :-1]
        grown[:, :-1] |= outside[:, 1:]
        grown &= background
        if (grown == outside).all():
            return bool((background & ~outside).any())
        outside = grown


def test_strokes_are_read_with_mnists_pen_for_the_digits_size():
    # Issue 13: a small loop drawn small with the 22 px canvas brush fills in; the server draws the points
    # with MNIST's pen for the digit's size, so the tiny-loop 6 keeps its loop at any size it is drawn.
    six = drawn.digit_strokes(6, drawn.STYLE_NAMES[6].index("tall stem, tiny loop"))
    widths = []
    for box in ((0.2, 0.1, 0.8, 0.9), (0.44, 0.42, 0.56, 0.58)):  # 448 and 90 px tall
        strokes = drawn.place_strokes(six, 560, box)
        image = strokes_to_mnist(strokes)
        assert _has_hole(image), box
        widths.append((image > 0.5).mean())
        span = np.ptp(np.concatenate([np.asarray(s) for s in strokes]), 0).max()
        canvas = to_mnist(drawn.render_sketch(strokes, 560, PEN_WIDTH * span))
        assert np.abs(canvas - image).mean() < 0.03  # exactly that pen, drawn on the canvas
    assert widths[0] == pytest.approx(widths[1], rel=0.15)  # the same stroke in the 28 x 28 image
    small = drawn.place_strokes(six, 560, (0.44, 0.42, 0.56, 0.58))
    assert not _has_hole(to_mnist(drawn.render_sketch(small, 560, BRUSH_WIDTH)))  # the canvas brush fills it
    dot = strokes_to_mnist([[[100.0, 100.0]]])  # a mark no bigger than the brush: drawn with the brush
    assert dot is not None and dot.max() == pytest.approx(1.0)


@pytest.mark.parametrize(("digit", "style"), all_styles())
def test_strokes_render_a_consistent_sketchpad_value(digit, style):
    strokes = drawn.place_strokes(drawn.digit_strokes(digit, style), 400, box=(0.3, 0.2, 0.7, 0.8))
    sketch = drawn.render_sketch(strokes, 400, brush_width=12)
    layer, composite = sketch["layers"][0], sketch["composite"]
    assert layer.shape == composite.shape == sketch["background"].shape == (400, 400, 4)
    assert layer.dtype == composite.dtype == np.uint8
    assert not layer[..., :3].any() and (composite[..., 3] == 255).all()  # black ink, opaque composite
    for channel in range(3):
        np.testing.assert_array_equal(composite[..., channel], 255 - layer[..., 3])
    ink = layer[..., 3] > 0
    rows, cols = np.flatnonzero(ink.any(1)), np.flatnonzero(ink.any(0))
    assert 0.005 < ink.mean() < 0.15
    # The ink stays in the box, widened by the brush radius.
    assert rows[0] >= 80 - 7 and rows[-1] <= 320 + 7 and cols[0] >= 120 - 7 and cols[-1] <= 280 + 7


@pytest.mark.parametrize("box", [(0.02, 0.02, 0.3, 0.4), (0.55, 0.5, 0.95, 0.98)])
def test_to_mnist_of_an_off_centre_sketch_is_centred_like_mnist(box):
    for digit in range(10):
        sketch = drawn.render_sketch(drawn.place_strokes(drawn.digit_strokes(digit), 800, box), 800, 10)
        image = to_mnist(sketch)
        assert image.shape == (28, 28) and image.max() == pytest.approx(1.0)
        ys, xs = np.mgrid[:28, :28]
        center = (image * ys).sum() / image.sum(), (image * xs).sum() / image.sum()
        assert np.allclose(center, 14, atol=1.0), (digit, center)
        rows, cols = np.flatnonzero(image.any(1)), np.flatnonzero(image.any(0))
        assert max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1 in (20, 21)  # LeCun's 20 px box


def test_thin_gives_a_one_pixel_skeleton():
    bar = np.zeros((30, 60), bool)
    bar[10:20, 5:55] = True
    skeleton = drawn.thin(bar)
    assert skeleton.any() and not (bar < skeleton).any()
    blocks = skeleton[:-1, :-1] & skeleton[1:, :-1] & skeleton[:-1, 1:] & skeleton[1:, 1:]
    assert not blocks.any()
    assert skeleton.any(0)[10:50].all()  # still runs the length of the bar


def test_traced_mnist_digits_redrawn_match_the_originals(mnist):
    correlations = []
    for image in mnist.x_test[:50]:
        strokes = drawn.trace_mnist(image)
        # The 28 px frame scaled to 280 px, and a brush as wide as MNIST's pen (about 2.5 of its 28 px).
        sketch = drawn.render_sketch(drawn.place_strokes(strokes, 280, (0, 0, 1, 1)), 280, 25)
        redrawn = to_mnist(sketch)
        correlations.append(np.corrcoef(redrawn.ravel(), image.ravel())[0, 1])
    assert np.mean(correlations) > 0.6 and np.min(correlations) > 0.3


def test_drawn_set_is_deterministic_and_balanced(mnist):
    items = drawn.drawn_items(mnist, count=100, seed=3)
    assert items == drawn.drawn_items(mnist, count=100, seed=3)
    assert items != drawn.drawn_items(mnist, count=100, seed=4)
    traced = [i for i in items if i.source == "traced"]
    handmade = [i for i in items if i.source == "handmade"]
    assert np.bincount([i.label for i in traced], minlength=10).tolist() == [10] * 10
    per_style = drawn.HANDMADE_PER_STYLE
    assert np.bincount([i.label for i in handmade], minlength=10).tolist() == [
        per_style * len(drawn.STROKES[d]) for d in range(10)
    ]
    assert all(mnist.y_test[i.ref] == i.label for i in traced)
    assert {(i.label, i.ref) for i in handmade} == set(all_styles())
    assert all(sum(1 for i in handmade if (i.label, i.ref) == style) == per_style for style in all_styles())
    assert all(0.015 <= i.brush <= 0.06 and 0.3 <= i.height <= 0.85 and abs(i.rotation) <= 12 for i in items)

    sketches, labels = drawn.drawn_set(mnist, count=20, canvas_size=96, seed=1)
    again, labels_again = drawn.drawn_set(mnist, count=20, canvas_size=96, seed=1)
    assert iter(sketches) is sketches  # a stream, not a list of canvases
    np.testing.assert_array_equal(labels, labels_again)
    assert len(labels) == 20 + drawn.HANDMADE_PER_STYLE * len(all_styles())
    for _, first, second in zip(range(5), sketches, again, strict=False):
        np.testing.assert_array_equal(first["layers"][0], second["layers"][0])
    with pytest.raises(ValueError, match="count"):
        drawn.drawn_items(mnist, count=100_000)
    with pytest.raises(
        ValueError, match="handmade must be a whole number of digits per style, 0 or more, got -1"
    ):
        drawn.drawn_items(mnist, count=10, handmade=-1)


def test_training_digits_never_repeat_the_evaluated_ones(mnist):
    items = drawn.training_items(mnist, count=400, seed=0)
    assert items == drawn.training_items(mnist, count=400, seed=0) != drawn.training_items(mnist, 400, seed=1)
    assert {i.source for i in items} == {"handmade"}
    counts = [sum((i.label, i.ref) == style for i in items) for style in all_styles()]
    assert min(counts) >= 400 // len(counts) and max(counts) <= 400 // len(counts) + 1  # even over styles
    evaluated = drawn.drawn_items(mnist, count=1000, seed=0)
    draws = {(i.rotation, i.slant, i.height) for i in evaluated}
    assert not draws & {(i.rotation, i.slant, i.height) for i in items}
    x, y = drawn.training_images(mnist, 30, seed=0)
    assert x.shape == (30, 28, 28) and x.dtype == np.uint8
    assert y.tolist() == [i.label for i in drawn.training_items(mnist, 30, seed=0)]
    assert x.max() == 255 and all(image.any() for image in x)
    with pytest.raises(ValueError, match="count must be a whole number of digits, 0 or more, got -5"):
        drawn.training_items(mnist, count=-5)


def test_drawn_digits_fit_the_canvas_at_any_size(mnist):
    items = drawn.drawn_items(mnist, count=30, seed=0)[::5]
    for size in (200, 800):
        for item in items:
            points = np.concatenate([np.asarray(s) for s in drawn.item_strokes(item, mnist, size)])
            margin = item.brush * size / 2
            assert points.min() >= margin and points.max() <= size - margin
            assert np.ptp(points[:, 1]) <= item.height * size + 1e-6


@pytest.fixture(scope="module")
def quick_mlp(mnist):
    """The tutorial MLP after one epoch on 10,000 real training images."""
    import keras

    from mnist_core.models import build_model

    keras.utils.set_random_seed(0)
    model = build_model("mlp")
    x, y = mnist.x_train[:10_000] / 255.0, keras.utils.to_categorical(mnist.y_train[:10_000], 10)
    model.fit(x, y, epochs=1, batch_size=64, verbose=0)
    return model


@pytest.mark.slow
def test_evaluate_drawn_is_far_above_chance(mnist, quick_mlp):
    result = drawn.evaluate_drawn(quick_mlp, mnist, count=200, canvas_size=400, seed=0, handmade=2)
    styles = len(all_styles())
    assert result["count"] == 200 + 2 * styles
    assert (
        result["per_source"]["traced"]["count"] == 200
        and result["per_source"]["handmade"]["count"] == 2 * styles
    )
    per_style = result["per_style"]
    assert [(s["digit"], s["style"], s["name"]) for s in per_style] == [
        (d, k, drawn.STYLE_NAMES[d][k]) for d, k in all_styles()
    ]
    assert all(s["count"] == 2 and s["accuracy"] in (0, 0.5, 1) for s in per_style)
    misses = sum(n for s in per_style for n in s["read_as"].values())
    assert misses == round(2 * styles * (1 - result["per_source"]["handmade"]["accuracy"]))
    assert result["accuracy"] > 0.5 and result["per_source"]["traced"]["accuracy"] > 0.5
    assert len(result["per_class_accuracy"]) == 10
    assert all(w["label"] != w["predicted"] for w in result["worst"])
    json.dumps(result)  # the script prints it


@pytest.mark.slow
def test_evaluate_script_reports_drawn_accuracy(mnist_dir, quick_mlp, tmp_path):
    from mnist_core.store import save_model

    path = save_model(quick_mlp, tmp_path / "mlp.keras")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(Path.home()), "MNIST_DATA": str(mnist_dir)}
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "evaluate.py"), str(path), "--drawn", "--drawn-count", "100"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert "drawn accuracy:" in result.stdout
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    styles = len(all_styles())
    assert 0.5 < summary["drawn_accuracy"] <= 1
    assert summary["drawn"]["count"] == 100 + drawn.HANDMADE_PER_STYLE * styles
    assert "drawn per style" in result.stdout and "7  1 crossed" in result.stdout
    assert len(summary["drawn"]["per_style"]) == styles
    assert summary["test_accuracy"] > 0.8  # the MNIST test evaluation still runs
