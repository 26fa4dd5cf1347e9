"""Sketches and uploads become MNIST-like 28 x 28 images: real strokes drawn with PIL, real MNIST digits."""

import math
import time

import numpy as np
import pytest
from PIL import Image, ImageDraw

from mnist_core.preprocess import CENTER, center_like_mnist, ink_from_image, ink_from_sketch, to_mnist

# Digits as polylines in a unit square; drawn into the middle of the canvas with a round brush.
OVAL = [(0.5 + 0.17 * math.sin(t * math.pi / 10), 0.5 - 0.3 * math.cos(t * math.pi / 10)) for t in range(21)]
DIGITS = {
    "0": [OVAL],
    "1": [[(0.5, 0.2), (0.5, 0.8)]],
    "2": [[(0.32, 0.32), (0.4, 0.22), (0.55, 0.2), (0.66, 0.28), (0.66, 0.4), (0.32, 0.8), (0.7, 0.8)]],
    "4": [[(0.6, 0.8), (0.6, 0.2), (0.3, 0.6), (0.72, 0.6)]],
    "7": [[(0.3, 0.2), (0.7, 0.2), (0.45, 0.8)]],
}
YS, XS = np.mgrid[0:28, 0:28]


def draw(strokes, size=800, width=16, scale=1.0, ink=(0, 0, 0, 255), paper=(0, 0, 0, 0), mode="RGBA"):
    """Strokes with a round brush, the way the browser paints them."""
    image = Image.new(mode, (size, size), paper)
    pen = ImageDraw.Draw(image)
    for stroke in strokes:
        points = [(size * (0.5 + (x - 0.5) * scale), size * (0.5 + (y - 0.5) * scale)) for x, y in stroke]
        pen.line(points, fill=ink, width=width, joint="curve")
        for x, y in points:
            pen.ellipse([x - width / 2, y - width / 2, x + width / 2, y + width / 2], fill=ink)
    return image


def sketch(strokes, **kwargs):
    """A gr.Sketchpad value: transparent layer with the strokes, composite opaque white with black strokes."""
    layer = np.asarray(draw(strokes, **kwargs))
    composite = np.asarray(draw(strokes, paper=(255, 255, 255, 255), **kwargs))
    return {"background": np.full_like(composite, 255), "layers": [layer], "composite": composite}


def com(image):
    return (image * YS).sum() / image.sum(), (image * XS).sum() / image.sum()


def box(image, level=0.05):
    rows, cols = np.flatnonzero((image > level).any(1)), np.flatnonzero((image > level).any(0))
    return rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1


def corr(a, b):
    return np.corrcoef(a.ravel(), b.ravel())[0, 1]


def check_mnist_like(image):
    assert image.shape == (28, 28) and image.dtype == np.float32
    assert image.min() == 0.0 and image.max() == pytest.approx(1.0)
    assert image[[0, 0, -1, -1], [0, -1, 0, -1]].max() == 0 and (image == 0).mean() > 0.5  # black background
    cy, cx = com(image)
    assert abs(cy - CENTER[0]) <= 1 and abs(cx - CENTER[1]) <= 1


def test_center_matches_mnist_test_images(mnist):
    x = mnist.x_test.astype(np.float32)
    mass = x.sum((1, 2))
    assert (x * YS).sum((1, 2)).__truediv__(mass).mean() == pytest.approx(CENTER[0], abs=0.05)
    assert (x * XS).sum((1, 2)).__truediv__(mass).mean() == pytest.approx(CENTER[1], abs=0.05)


@pytest.mark.parametrize("digit", sorted(DIGITS))
def test_sketch_becomes_mnist_like(digit):
    image = to_mnist(sketch(DIGITS[digit]))
    check_mnist_like(image)
    assert max(box(image)) in (19, 20, 21)
    # MNIST's mean intensity is 0.13 (0.08 for ones); strokes of a thin brush must not fade or bloat.
    assert 0.04 < image.mean() < 0.25


def test_drawn_digits_resemble_mnist_statistics(mnist):
    ours = np.stack([to_mnist(sketch(strokes, width=w)) for strokes in DIGITS.values() for w in (6, 16, 40)])
    theirs = mnist.x_test[:2000] / 255
    print(
        f"mean intensity ours {ours.mean():.3f} mnist {theirs.mean():.3f}; "
        f"fraction > 0.5 ours {(ours > 0.5).mean():.3f} mnist {(theirs > 0.5).mean():.3f}"
    )
    assert ours.mean() == pytest.approx(theirs.mean(), rel=0.3)
    assert (ours > 0.5).mean() == pytest.approx((theirs > 0.5).mean(), rel=0.3)


def test_thin_and_thick_brushes_give_similar_strokes():
    thin, thick = (to_mnist(sketch(DIGITS["2"], width=w)) for w in (3, 30))
    assert thin.mean() == pytest.approx(thick.mean(), rel=0.3)
    assert corr(thin, thick) > 0.85


def test_aspect_ratio_is_kept():
    tall = to_mnist(sketch([[(0.5, 0.15), (0.5, 0.85)]], width=40))
    height, width = box(tall)
    assert height == 20 and 1 <= width <= 4
    wide = to_mnist(sketch([[(0.1, 0.5), (0.9, 0.5)]], width=8))
    height, width = box(wide)
    assert width == 20 and 1 <= height <= 3
    check_mnist_like(wide)


@pytest.mark.parametrize(
    "value",
    [
        None,
        {},
        {"background": None, "layers": None, "composite": None},
        {"background": None, "layers": [], "composite": None},
        {"background": None, "layers": [None], "composite": None},
        sketch([]),
        {"background": None, "layers": [], "composite": np.full((800, 800, 4), 255, np.uint8)},
    ],
)
def test_nothing_drawn_is_none(value):
    assert to_mnist(value) is None


def test_fully_inked_canvas_is_none():
    full = np.zeros((800, 800, 4), np.uint8)
    full[..., 3] = 255
    assert to_mnist({"background": None, "layers": [full], "composite": full}) is None


def test_single_dot_gives_a_valid_image():
    image = to_mnist(sketch([[(0.5, 0.5)]], width=10))
    check_mnist_like(image)


def test_layer_alpha_and_composite_agree():
    value = sketch(DIGITS["7"])
    from_layer = to_mnist(value)
    from_composite = to_mnist({"background": None, "layers": [], "composite": value["composite"]})
    assert np.abs(from_layer - from_composite).mean() < 0.03
    assert corr(from_layer, from_composite) > 0.95


def test_layers_are_merged():
    whole = to_mnist(sketch(DIGITS["4"]))
    parts = [[(0.6, 0.8), (0.6, 0.2)], [(0.6, 0.2), (0.3, 0.6)], [(0.3, 0.6), (0.72, 0.6)]]
    layers = [np.asarray(draw([part])) for part in parts]
    merged = to_mnist({"background": None, "layers": layers, "composite": None})
    assert np.abs(whole - merged).max() < 0.05


@pytest.mark.parametrize(
    ("strokes", "size", "scale"),
    [(DIGITS["2"], 800, 1.0), (DIGITS["0"], 560, 3.0), ([[(0.1, 0.9)]], 560, 1.0), (DIGITS["7"], 1, 1.0)],
)
def test_sketch_is_cropped_before_float_without_changing_the_result(strokes, size, scale):
    # to_mnist cuts a drawn layer to its ink while still uint8; the result must equal the full-canvas route.
    layers = [np.asarray(draw([stroke], size=size, scale=scale)) for stroke in strokes]  # read-only arrays
    before = [layer.copy() for layer in layers]
    value = {"background": None, "layers": layers, "composite": None}
    full = ink_from_sketch(value)
    if size == 1:  # a 1 px canvas has no contrast: nothing drawn either way
        assert full is None and to_mnist(value) is None
    else:
        assert full.shape == (size, size)
        assert np.array_equal(to_mnist(value), center_like_mnist(full))
    assert all(np.array_equal(layer, old) for layer, old in zip(layers, before, strict=True))


def test_both_polarities_of_uploads_agree():
    dark_on_paper = draw(DIGITS["2"], size=400, width=14, ink=0, paper=255, mode="L")
    light_on_black = draw(DIGITS["2"], size=400, width=14, ink=255, paper=0, mode="L")
    a, b = to_mnist(dark_on_paper), to_mnist(light_on_black)
    check_mnist_like(a)
    assert np.abs(a - b).max() < 1e-6


def test_noisy_photo_gives_a_clean_digit():
    rng = np.random.default_rng(0)
    pen = {"ink": (40, 40, 60), "paper": (220, 215, 200), "mode": "RGB"}
    clean = np.asarray(draw(DIGITS["7"], size=600, width=20, **pen))
    noisy = np.clip(clean + rng.normal(0, 12, clean.shape), 0, 255).astype(np.uint8)
    dust = rng.integers(0, 600, (2, 50))  # lone dark specks on the paper must not stretch the bounding box
    noisy[dust[0], dust[1]] = 30
    a, b = to_mnist(clean), to_mnist(noisy)
    check_mnist_like(b)
    assert corr(a, b) > 0.95
    assert ((b > 0) & (a == 0)).sum() <= 10  # no specks of paper noise outside the strokes
    assert ink_from_image(noisy)[:100, :].max() == 0  # the paper above the digit is exactly background


def test_every_pil_mode_works():
    gray = draw(DIGITS["0"], size=300, width=12, ink=0, paper=255, mode="L")
    reference = to_mnist(gray)
    transparent = draw(DIGITS["0"], size=300, width=12, ink=(0, 0, 0, 255), paper=(0, 0, 0, 0))
    for image in [gray.convert(mode) for mode in ("RGB", "RGBA", "P", "1")] + [transparent]:
        result = to_mnist(image)
        check_mnist_like(result)
        assert corr(reference, result) > 0.95, image.mode


def test_arrays_of_any_dtype_and_layout():
    gray = np.asarray(draw(DIGITS["1"], size=200, width=10, ink=255, paper=0, mode="L"))
    reference = to_mnist(gray)
    variants = (gray / 255.0, gray.astype(np.float32), gray[..., None], np.stack([gray] * 3, -1), gray > 127)
    for array in variants:
        assert corr(reference, to_mnist(array)) > 0.95


def test_mnist_digits_survive_a_round_trip(mnist):
    originals = mnist.x_test[:200]
    again = np.stack([to_mnist(np.kron(x, np.ones((10, 10), np.uint8))) for x in originals])
    first = originals[0] / 255
    assert np.abs(again[0] - first).mean() < 0.02 and corr(again[0], first) > 0.95
    correlations = [corr(a, b) for a, b in zip(again, originals, strict=True)]
    print(f"round trip of 200 MNIST test digits: mean correlation {np.mean(correlations):.3f}")
    assert np.mean(correlations) > 0.9
    assert to_mnist(first) is not None  # a float 28 x 28 image in [0, 1] is accepted as is


def test_file_paths(tmp_path):
    image = draw(DIGITS["7"], size=300, width=12, ink=0, paper=255, mode="L")
    image.save(tmp_path / "seven.png")
    assert np.array_equal(to_mnist(str(tmp_path / "seven.png")), to_mnist(image))
    assert np.array_equal(to_mnist(tmp_path / "seven.png"), to_mnist(image))
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(ValueError, match="could not read image"):
        to_mnist(tmp_path / "notes.txt")
    with pytest.raises(ValueError, match="could not read image"):
        to_mnist(str(tmp_path / "missing.png"))


def test_huge_inputs_are_refused_or_shrunk(tmp_path):
    with pytest.raises(ValueError, match="megapixels"):
        to_mnist(np.zeros((10_000, 10_000), np.uint8))
    Image.new("1", (8000, 7000)).save(tmp_path / "bomb.png")
    with pytest.raises(ValueError, match="megapixels"):
        to_mnist(tmp_path / "bomb.png")
    with pytest.raises(ValueError, match="7000x7000 = 49 megapixels; the limit is 16"):
        to_mnist(np.zeros((7000, 7000), np.uint8))  # under the old 50 MP limit, over today's 16
    big = np.asarray(draw(DIGITS["4"], size=700, width=50, ink=0, paper=255, mode="L").resize((4000, 4000)))
    start = time.perf_counter()
    image = to_mnist(big)
    elapsed = time.perf_counter() - start
    print(f"4000 x 4000 upload: {elapsed * 1000:.0f} ms")
    check_mnist_like(image)
    assert elapsed < 5


def test_only_photo_formats_are_opened_and_big_ones_are_decoded_reduced(tmp_path):
    Image.new("RGB", (64, 64), "white").save(tmp_path / "digit.tiff")
    Image.new("RGB", (64, 64), "white").save(tmp_path / "digit.ico")
    for name in ("digit.tiff", "digit.ico"):
        with pytest.raises(ValueError, match="accepted formats: PNG, JPEG, WEBP, GIF, BMP"):
            to_mnist(tmp_path / name)
    # A 16-bit PNG of 15 megapixels: read one pixel in four a side before any conversion to float.
    ink = np.zeros((3900, 3900), np.uint16)
    ink[1000:2900, 1800:2100] = 60_000  # a thick 1
    Image.fromarray(ink).save(tmp_path / "sixteen.png")
    from mnist_core.preprocess import _open

    assert max(_open(tmp_path / "sixteen.png").size) <= 1024
    image = to_mnist(tmp_path / "sixteen.png")
    check_mnist_like(image)


@pytest.mark.parametrize(
    "value", [42, "no-such-file.png", [1, 2, 3], np.zeros((4, 4, 2)), np.array([["a", "b"]])]
)
def test_bad_inputs_raise_clear_errors(value):
    with pytest.raises(ValueError, match="expected|could not read image"):
        to_mnist(value)


def test_error_names_the_type():
    with pytest.raises(ValueError, match="int.*PIL image"):
        to_mnist(42)
    with pytest.raises(ValueError, match="Sketchpad dict"):
        ink_from_sketch([1, 2])


def test_center_like_mnist_needs_ink():
    with pytest.raises(ValueError, match="empty"):
        center_like_mnist(np.zeros((50, 50), np.float32))
    square = np.zeros((100, 60), np.float32)
    square[10:50, 20:40] = 1
    check_mnist_like(center_like_mnist(square))


def test_sketch_is_fast():
    value = sketch(DIGITS["2"])
    assert ink_from_sketch(value).shape == (800, 800)
    times = []
    for _ in range(30):
        start = time.perf_counter()
        to_mnist(value)
        times.append(time.perf_counter() - start)
    print(f"800 x 800 sketch -> 28 x 28: median {np.median(times) * 1000:.2f} ms")
    assert np.median(times) < 0.05
