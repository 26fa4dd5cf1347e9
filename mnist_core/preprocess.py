"""Sketch / upload -> (28, 28) float32 in [0, 1], white digit on black, the way LeCun built MNIST."""

import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageOps

# Refuse larger inputs: a phone's photo is 12 MP, and a 16 MP RGBA image decodes into 64 MB.
MAX_PIXELS = 16_000_000
# The formats a photo of a digit comes in; PIL knows dozens more (EPS would run Ghostscript).
FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP")
MAX_SIDE = 1024  # shrink bigger uploads first (box average) so time and memory stay bounded
SIZE, BOX = 28, 20  # MNIST: the digit's longer side is 20 px, pasted into 28 x 28
WORK = 100  # the crop is handled at 5x the final box: fine enough to measure and thicken strokes
# Mean centre of mass of MNIST's own test images, in pixel-index coordinates: (13.99, 14.01) measured.
CENTER = (14.0, 14.0)
# MNIST's median stroke width, in px of the 20 px box, by _stroke_width on x_test (quartiles 2.1 / 2.9).
STROKE_WIDTH = 2.5
# Thinner strokes (sketches on an 800 px canvas) are dilated to STROKE_WIDTH; 1.5 is MNIST's 3rd percentile.
THICKEN_BELOW = 1.5
MIN_CONTRAST = 0.1  # ink weaker than 10% of the full range is "nothing drawn"
NOISE_FRACTION = 0.2  # in uploads, deviations below 20% of the strongest ink are paper, not ink
NOISE_SIGMAS = 4.0  # ... and below 4 sigma of the border's noise
# The Draw tab's canvas (ui/draw.js): 560 px a side, a round brush 22 px wide. The page sends the stroke
# points; they are drawn here at half that size, as accurate for a 20 px digit and a quarter of the pixels.
CANVAS_SIDE, BRUSH_WIDTH, RENDER_SCALE = 560, 22, 0.5
# ... and with MNIST's pen for the digit's size, not the canvas brush: a width of PEN_WIDTH x the points'
# longer span makes the stroke STROKE_WIDTH of the BOX, stroke included (1/8, MNIST's median). The 22 px
# brush fills the small loops of a digit drawn small. On the drawn set (BENCHMARKS.md, "Writing styles"),
# drawn small (12-30% of the canvas' height): 97.66% -> 98.85% with the model before issue 13, 98.21% ->
# 99.58% with the shipped one; at the set's usual sizes (30-85%) 98.72% -> 98.85% and 99.58% -> 99.55%.
# A pen of 0.10 or 0.125 x the span, or the brush capped at this pen, read worse or no better.
PEN_WIDTH = STROKE_WIDTH / (BOX - STROKE_WIDTH)
MAX_STROKES, MAX_POINTS = 200, 10_000  # a digit is 1-5 strokes and a few hundred points
ACCEPTED = "a gr.Sketchpad dict, a PIL image, a numpy array (H x W, H x W x 3 or 4) or an image file path"


def to_mnist(value) -> np.ndarray | None:
    """A sketch or upload as the (28, 28) float32 image an MNIST model expects; None when nothing is drawn."""
    ink = _sketch_ink(value, crop=True) if isinstance(value, dict) else ink_from_image(value)
    return None if ink is None else center_like_mnist(ink)


def strokes_to_mnist(strokes, side: int = CANVAS_SIDE, brush_width: float = BRUSH_WIDTH) -> np.ndarray | None:
    """Stroke points drawn on a `side` px canvas, as the (28, 28) image a model expects; None if none.

    The points are drawn with a pen PEN_WIDTH x their longer span wide; `brush_width`, the canvas brush,
    draws only a mark no bigger than itself (a dot), whose span says nothing of a digit's size.
    """
    checked = check_strokes(strokes, side)
    if not checked:
        return None
    span = float(np.ptp(np.concatenate(checked), 0).max())
    width = PEN_WIDTH * span if span > brush_width else brush_width
    alpha = render_strokes(checked, round(side * RENDER_SCALE), max(width * RENDER_SCALE, 1.0), RENDER_SCALE)
    rows, cols = np.flatnonzero(alpha.max(1)), np.flatnonzero(alpha.max(0))
    if rows.size == 0 or int(alpha.min()) > (1 - MIN_CONTRAST) * 255:
        return None  # nothing on the canvas, or ink all over it: no shape to read
    crop = alpha[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    return center_like_mnist(crop.astype(np.float32) / 255)


def check_strokes(strokes, side: int = CANVAS_SIDE) -> list[np.ndarray]:
    """Strokes as a list of (n, 2) float arrays in canvas pixels; ValueError naming what is wrong."""
    expected = f"a list of at most {MAX_STROKES} strokes, each a list of [x, y] points"
    if not isinstance(strokes, list | tuple):
        raise ValueError(f"strokes: expected {expected}, received {type(strokes).__name__}")
    if len(strokes) > MAX_STROKES:
        raise ValueError(f"strokes: expected {expected}, received {len(strokes)} strokes")
    total = sum(len(stroke) if isinstance(stroke, list | tuple) else 0 for stroke in strokes)
    if total > MAX_POINTS:
        raise ValueError(f"strokes: expected at most {MAX_POINTS:,} points in all, received {total:,}")
    checked = []
    for index, stroke in enumerate(strokes):
        try:
            points = np.asarray(stroke, dtype=np.float64)
        except (TypeError, ValueError):
            points = None
        if points is None or points.ndim != 2 or points.shape[1:] != (2,) or not np.isfinite(points).all():
            shown = repr(stroke)[:60]
            raise ValueError(f"stroke {index}: expected a list of [x, y] number pairs, received {shown}")
        if len(points):
            checked.append(np.clip(points, -side, 2 * side))  # off-canvas points are drawn off the canvas
    return checked


def render_strokes(strokes, side: int, brush_width: float, scale: float = 1.0) -> np.ndarray:
    """uint8 (side, side) ink of round-brush strokes (points scaled by `scale`), as a canvas draws them."""
    mask = Image.new("L", (side, side), 0)
    draw, r = ImageDraw.Draw(mask), brush_width / 2
    for stroke in strokes:
        points = [(float(x) * scale, float(y) * scale) for x, y in stroke]
        if len(points) > 1:
            draw.line(points, fill=255, width=max(1, round(brush_width)), joint="curve")
        for x, y in points:  # the round brush's caps, and joints PIL's line leaves square
            draw.ellipse((x - r, y - r, x + r, y + r), fill=255)
    return np.asarray(mask)


def ink_from_sketch(value: dict | None) -> np.ndarray | None:
    """Ink (float32 H x W in [0, 1]) of a gr.Sketchpad value: layer alpha, else composite, else background."""
    return _sketch_ink(value, crop=False)


def _sketch_ink(value: dict | None, crop: bool) -> np.ndarray | None:
    """ink_from_sketch; with `crop`, a drawn layer's ink comes cut to its bounding box."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ValueError(f"expected a gr.Sketchpad dict (layers, composite), got {type(value).__name__}")
    layers = [_as_array(layer) for layer in value.get("layers") or [] if layer is not None]
    if layers and all(a.ndim == 3 and a.shape[2] == 4 for a in layers):
        if len({a.shape for a in layers}) > 1:
            shapes = [a.shape for a in layers]
            raise ValueError(f"sketch layers differ in size: {shapes}; expected one canvas size")
        # A contiguous uint8 copy first: reductions over the strided alpha channel are 5-10x slower.
        alpha = layers[0][..., 3].copy()
        for layer in layers[1:]:
            np.maximum(alpha, layer[..., 3], out=alpha)
        row_peaks = alpha.max(1)
        if int(row_peaks.max()) - int(alpha.min()) >= MIN_CONTRAST * 255:
            if crop:
                # Cut to the ink while still uint8: a whole 800 x 800 canvas in float32 costs ~3 ms.
                rows, cols = np.flatnonzero(row_peaks), np.flatnonzero(alpha.max(0))
                alpha = alpha[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
            return alpha.astype(np.float32) / 255
    # No drawn layer: the composite (opaque white with black strokes) or background, read like an upload.
    for key in ("composite", "background"):
        if value.get(key) is not None:
            return ink_from_image(value[key])
    return None


def ink_from_image(image) -> np.ndarray | None:
    """Ink (float32 H x W in [0, 1]) of an upload; the border colour is the paper, either polarity works."""
    if image is None:
        return None
    gray, alpha = _gray_and_alpha(_as_pil(image))
    if alpha is not None and np.median(_ring(alpha)) < 128:
        gray = alpha  # a transparent background: whatever is opaque is the ink
    elif alpha is not None:  # an opaque background with holes: see the holes as paper
        paper = float(np.median(_ring(gray)))
        gray = paper + (gray - paper) * (alpha / 255)
    ring = _ring(gray)
    paper = float(np.median(ring))
    dark, light = paper - gray, gray - paper
    dev = dark if dark.max() >= light.max() else light
    peak = float(dev.max())
    sigma = 1.4826 * float(np.median(np.abs(ring - paper)))  # robust noise level of the paper
    if peak < max(MIN_CONTRAST * 255, 1.5 * NOISE_SIGMAS * sigma):  # the max of pure noise is ~5 sigma
        return None
    ink = dev / peak
    mask = dev > max(NOISE_FRACTION * peak, NOISE_SIGMAS * sigma)
    mask &= _has_neighbour(mask)  # lone specks of photo/JPEG noise would stretch the bounding box
    if not mask.any():
        return None
    return np.where(mask, ink, 0).astype(np.float32)


def center_like_mnist(ink: np.ndarray) -> np.ndarray:
    """LeCun's back half: crop to the ink, longer side to 20 px, centre of mass to the centre of 28 x 28."""
    ink = np.asarray(ink, dtype=np.float32)
    if ink.ndim != 2:
        raise ValueError(f"expected a 2-D ink array, got shape {ink.shape}")
    rows, cols = np.flatnonzero((ink > 0).any(1)), np.flatnonzero((ink > 0).any(0))
    if rows.size == 0:
        raise ValueError("the ink array is empty; ink_from_sketch / ink_from_image return None in that case")
    crop = ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    work = _resize(crop, WORK / max(crop.shape))
    work /= work.max()
    # Thin strokes on a big canvas would fade to a faint hairline at 20 px: thicken them like MNIST's pen.
    # Dilating by r grows the box by 2r too, so solve (w + 2r) * BOX / (WORK + 2r) = STROKE_WIDTH for r.
    width = _stroke_width(work)
    if width * BOX / WORK < THICKEN_BELOW:
        target = STROKE_WIDTH * WORK / BOX
        work = _dilate(work, round((target - width) / (2 * (1 - STROKE_WIDTH / BOX))))
    small = np.clip(_resize(work, BOX / max(work.shape)), 0, None)
    small /= small.max()  # MNIST's strokes reach 255 in the core
    h, w = small.shape
    ys, xs = np.arange(h, dtype=np.float32), np.arange(w, dtype=np.float32)
    mass = small.sum()
    cy, cx = small.sum(1) @ ys / mass, small.sum(0) @ xs / mass
    # Whole-pixel shift as in MNIST (its centres of mass spread +-0.5 px), kept inside the 28 x 28 frame.
    top = min(max(round(CENTER[0] - cy), 0), SIZE - h)
    left = min(max(round(CENTER[1] - cx), 0), SIZE - w)
    out = np.zeros((SIZE, SIZE), np.float32)
    out[top : top + h, left : left + w] = small
    return out


def _resize(a: np.ndarray, scale: float) -> np.ndarray:
    """Anti-aliased resize of a float image by scale (box average down, bilinear up); sides at least 1 px."""
    h, w = a.shape
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    mode = Image.Resampling.BOX if scale < 1 else Image.Resampling.BILINEAR
    return np.asarray(Image.fromarray(a, "F").resize(size, mode, reducing_gap=3.0), dtype=np.float32).copy()


def _stroke_width(work: np.ndarray) -> float:
    """Mean stroke width in px: a stroke of length L and width w has area L*w and 2L boundary pixels."""
    ink = work >= 0.5
    inner = ink.copy()
    inner[1:] &= ink[:-1]
    inner[:-1] &= ink[1:]
    inner[:, 1:] &= ink[:, :-1]
    inner[:, :-1] &= ink[:, 1:]
    inner[[0, -1], :] = inner[:, [0, -1]] = False
    area, boundary = int(ink.sum()), int(ink.sum() - inner.sum())
    return 2 * area / boundary if boundary else float(max(work.shape))


def _dilate(a: np.ndarray, radius: int) -> np.ndarray:
    """Grey dilation by a near-disk (octagon) of the given radius, on a canvas padded to make room."""
    a = np.pad(a, radius)
    for step in range(radius):
        b = a.copy()
        np.maximum(b[1:], a[:-1], out=b[1:])
        np.maximum(b[:-1], a[1:], out=b[:-1])
        np.maximum(b[:, 1:], a[:, :-1], out=b[:, 1:])
        np.maximum(b[:, :-1], a[:, 1:], out=b[:, :-1])
        if step % 2:  # alternate cross and square steps: an octagon, rounder than either
            c = b.copy()
            np.maximum(b[1:], c[:-1], out=b[1:])
            np.maximum(b[:-1], c[1:], out=b[:-1])
        a = b
    return a


def _has_neighbour(mask: np.ndarray) -> np.ndarray:
    """True where at least one of the 8 neighbours is set."""
    padded = np.pad(mask, 1)
    h, w = mask.shape
    out = np.zeros_like(mask)
    for dy in range(3):
        for dx in range(3):
            if dy != 1 or dx != 1:
                out |= padded[dy : dy + h, dx : dx + w]
    return out


def _ring(a: np.ndarray) -> np.ndarray:
    """The outer ring of an image (about 2% of its size), where the paper is."""
    k = max(1, min(a.shape) // 50)
    return np.concatenate([a[:k].ravel(), a[-k:].ravel(), a[k:-k, :k].ravel(), a[k:-k, -k:].ravel()])


def _as_array(value) -> np.ndarray:
    """A sketch layer (numpy array, PIL image or file path) as a numpy array."""
    if isinstance(value, np.ndarray) and value.ndim >= 2:
        _check_pixels(value.shape[1], value.shape[0])
        return value
    return np.asarray(_as_pil(value))


def _as_pil(image) -> Image.Image:
    """Any accepted upload as an L, RGB or RGBA PIL image; refused above MAX_PIXELS, shrunk to MAX_SIDE."""
    if isinstance(image, (str, os.PathLike)):
        image = _open(Path(image))
    elif isinstance(image, np.ndarray):
        image = Image.fromarray(_as_uint8(image))
    elif not isinstance(image, Image.Image):
        raise ValueError(f"cannot read an image from {type(image).__name__}; expected {ACCEPTED}")
    _check_pixels(image.width, image.height)
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        image = Image.fromarray(_as_uint8(np.asarray(image)))
    elif image.mode not in ("L", "RGB", "RGBA"):
        transparent = image.mode in ("LA", "PA", "RGBa", "La") or "transparency" in image.info
        image = image.convert("RGBA" if transparent else "L" if image.mode == "1" else "RGB")
    factor = -(-max(image.size) // MAX_SIDE)
    return image.reduce(factor) if factor > 1 else image


def _open(path: Path) -> Image.Image:
    """Open an image file of an accepted format, decoded at most about MAX_SIDE a side before any mode
    conversion; PIL's errors (not an image, another format, a decompression bomb) become ValueError."""
    try:
        with warnings.catch_warnings():  # only around open: the filter is process-wide
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(path, formats=FORMATS)
        _check_pixels(image.width, image.height)
        factor = -(-max(image.size) // MAX_SIDE)
        if factor > 1 and image.format == "JPEG":
            image.draft(image.mode, (image.width // factor, image.height // factor))  # decode at 1/2..1/8
        image.load()
    except (OSError, Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        accepted = ", ".join(FORMATS)
        raise ValueError(f"could not read image: {path}: {e} (accepted formats: {accepted})") from e
    factor = -(-max(image.size) // MAX_SIDE)
    if factor > 1 and image.mode.startswith("I;16"):
        image = Image.fromarray(np.asarray(image)[::factor, ::factor].astype(np.int32))  # no reduce() for it
    elif factor > 1 and image.mode not in ("1", "P"):  # those two are 1 byte a pixel or less as they are
        image = image.reduce(factor)
    ImageOps.exif_transpose(image, in_place=True)  # phone photos are stored sideways
    return image


def _check_pixels(width: int, height: int) -> None:
    if width * height > MAX_PIXELS:
        raise ValueError(
            f"image is {width}x{height} = {width * height / 1e6:.0f} megapixels; "
            f"the limit is {MAX_PIXELS / 1e6:.0f}: crop or shrink it first"
        )


def _as_uint8(a: np.ndarray) -> np.ndarray:
    """A 2-D gray or H x W x 1/3/4 array of any numeric dtype as uint8 (floats in [0, 1] or [0, 255])."""
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] in (3, 4))) or a.size == 0:
        raise ValueError(f"expected an image array H x W, H x W x 3 or H x W x 4, got shape {a.shape}")
    if not (a.dtype == bool or np.issubdtype(a.dtype, np.number)) or np.iscomplexobj(a):
        raise ValueError(f"expected an image array of numbers, got dtype {a.dtype}")
    _check_pixels(a.shape[1], a.shape[0])
    if a.dtype == np.uint8:
        return a
    a = np.nan_to_num(a.astype(np.float32))
    top = float(a.max())
    a = a * 255 if top <= 1 else a * (255 / top) if top > 255 else a  # [0, 1] floats, or 16-bit and wider
    return np.clip(a, 0, 255).round().astype(np.uint8)


def _gray_and_alpha(image: Image.Image) -> tuple[np.ndarray, np.ndarray | None]:
    """Luminance (float32, 0-255) and alpha (float32, or None when opaque) of an L, RGB or RGBA image."""
    gray = np.asarray(image.convert("L") if image.mode != "L" else image, dtype=np.float32)
    return gray, np.asarray(image.getchannel("A"), dtype=np.float32) if image.mode == "RGBA" else None
