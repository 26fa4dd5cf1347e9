"""The drawing surface's values (ui/draw.js <-> Python): the drawing's number, its strokes; inline PNGs."""

from __future__ import annotations

import base64
import io

from PIL import Image

from mnist_core.plots import upscale
from mnist_core.preprocess import BRUSH_WIDTH, CANVAS_SIDE, strokes_to_mnist

MAX_SEQ = 2**53  # the page counts its drawings in a JavaScript number


def png_base64(image) -> str:
    """A grey image (float in [0, 1] or uint8) or a uint8 RGB one as base64 PNG, for an inline <img>."""
    buffer = io.BytesIO()
    rgb = getattr(image, "ndim", 2) == 3
    Image.fromarray(image if rgb else upscale(image, 1)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def seq_of(value) -> int:
    """The drawing number in a surface value from the page (or an API client), checked."""
    seq = value.get("seq", 0) if isinstance(value, dict) else 0
    if isinstance(seq, bool) or not isinstance(seq, int) or not 0 <= seq <= MAX_SEQ:
        raise ValueError(f"seq: expected a whole number from 0 to {MAX_SEQ}, received {seq!r:.40}")
    return seq


def strokes_of(value) -> list:
    """The stroke points in a surface value (unchecked: preprocess checks them)."""
    if value is None:
        return []
    if not isinstance(value, dict):
        raise ValueError(f"expected the drawing as a dict with 'strokes', received {type(value).__name__}")
    return value.get("strokes") or []


def read_strokes(studio, strokes, visitor=None):
    """(28 x 28 image, probabilities) of stroke points on the page's canvas, read by the model `visitor`
    draws with, within their prediction budget; None if nothing is drawn."""
    image = strokes_to_mnist(strokes, CANVAS_SIDE, BRUSH_WIDTH)
    if image is not None and visitor is not None:
        studio.visitors.allow_prediction(visitor)
    return studio.classify_image(image, visitor=visitor)
