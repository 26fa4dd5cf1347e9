"""Drawn digits: hand-made strokes, MNIST traced to strokes, Sketchpad rendering, evaluation."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from PIL import Image

from mnist_core.preprocess import BRUSH_WIDTH, CANVAS_SIDE, render_strokes, strokes_to_mnist, to_mnist

Stroke = list[tuple[float, float]]
TRACE_SCALE = 4  # skeletons of the 28 px digit are staircases; at 112 px they follow the stroke smoothly
HANDMADE_ASPECT = 0.75  # STROKES fill a unit square; handwritten digits are about 3/4 as wide as tall
# 8-neighbours as (dy, dx) in Zhang-Suen's order P2..P9: N, NE, E, SE, S, SW, W, NW.
_RING = ((-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1), (-1, -1))


def _arc(cx, cy, rx, ry, start, stop, n=24) -> Stroke:
    """Points of an elliptic arc; degrees with 0 = right and 90 = down, so increasing is clockwise."""
    return [(cx + rx * math.cos(t), cy + ry * math.sin(t)) for t in np.radians(np.linspace(start, stop, n))]


def _eight(top, bottom, waist, n=64) -> Stroke:
    """A one-stroke 8 (Gerono's lemniscate) from the top: left round the upper ring, then the lower."""
    ts = np.linspace(-0.3, 2 * math.pi + 0.3, n)  # starts right of the top and overlaps it, like a pen
    up = np.cos(ts) >= 0
    xs = 0.5 - np.where(up, top, bottom) * np.sin(2 * ts)
    ys = np.where(up, waist * (1 - np.cos(ts)), waist - (1 - waist) * np.cos(ts))
    return list(zip(xs.tolist(), ys.tolist(), strict=True))


def _slant(strokes, shear) -> list[Stroke]:
    """Strokes leaned right by `shear` (x shift per unit of height), centred in the unit square."""
    return [[(x + shear * (0.5 - y), y) for x, y in s] for s in strokes]


def _styles() -> dict[int, dict[str, list[Stroke]]]:
    """Each digit in named styles, each a list of strokes in the order and direction a person draws.

    The first three or four of each digit are the original set (their indexes are kept); the rest follow
    issue 13's pen-written mistakes and common school scripts (UK/US print, Continental, cursive).
    """
    a = _arc
    return {
        0: {"oval": [a(0.5, 0.5, 0.4, 0.48, -90, -450, 40)],
            "slanted, overshooting": _slant([a(0.5, 0.5, 0.3, 0.48, -80, -460, 40)], 0.3),
            "round, open at the top": [a(0.5, 0.5, 0.46, 0.48, -60, -400, 40)],
            "narrow, looped at the top": [a(0.5, 0.52, 0.26, 0.48, -60, -470, 40)]},
        1: {"stick": [[(0.5, 0.0), (0.5, 1.0)]],
            "flag": [[(0.2, 0.25), (0.55, 0.0), (0.55, 1.0)]],
            "flag and base": [[(0.2, 0.25), (0.5, 0.0), (0.5, 1.0)], [(0.15, 1.0), (0.85, 1.0)]],
            "slanted stick": [[(0.65, 0.0), (0.35, 1.0)]],
            "long flag": [[(0.0, 0.42), (0.62, 0.0), (0.62, 1.0)]],
            "long flag and base": [[(0.0, 0.4), (0.55, 0.0), (0.55, 1.0)], [(0.1, 1.0), (0.95, 1.0)]]},
        2: {"plain": [a(0.5, 0.3, 0.4, 0.3, 190, 380) + [(0.05, 1.0), (0.95, 1.0)]],
            "looped": [a(0.5, 0.3, 0.4, 0.3, 190, 380) + a(0.22, 0.86, 0.12, 0.1, 90, 400) + [(0.95, 0.97)]],
            "curved neck": [a(0.5, 0.3, 0.38, 0.3, 200, 360) + a(0.08, 0.3, 0.8, 0.7, 0, 90)
                            + [(0.92, 0.98)]],
            "angular": [[(0.08, 0.2), (0.45, 0.0), (0.88, 0.18), (0.08, 1.0), (0.95, 1.0)]],
            "looped, wavy base": [a(0.5, 0.28, 0.38, 0.28, 200, 380) + a(0.2, 0.84, 0.13, 0.12, 90, 400)
                                  + [(0.5, 1.0), (0.75, 0.93), (0.97, 0.98)]]},
        3: {"two bumps": [a(0.48, 0.26, 0.34, 0.26, 200, 470) + a(0.48, 0.74, 0.4, 0.26, -110, 150, 30)],
            "flat top": [[(0.12, 0.0), (0.85, 0.0)] + a(0.45, 0.7, 0.42, 0.3, -90, 150, 30)],
            "two strokes": [a(0.5, 0.25, 0.33, 0.25, 190, 460), a(0.5, 0.74, 0.4, 0.26, -120, 160, 30)],
            "pointed waist": [a(0.48, 0.25, 0.34, 0.25, 200, 430, 20) + [(0.4, 0.48)]
                              + a(0.48, 0.74, 0.4, 0.26, -100, 150, 30)]},
        4: {"closed": [[(0.65, 0.0), (0.05, 0.68), (0.95, 0.68)], [(0.68, 0.0), (0.68, 1.0)]],
            "open": [[(0.15, 0.0), (0.1, 0.62), (0.9, 0.62)], [(0.68, 0.05), (0.68, 1.0)]],
            "open, short stem": [[(0.2, 0.0), (0.1, 0.6), (0.9, 0.6)], [(0.7, 0.3), (0.65, 1.0)]],
            # Issue 13: down, across, down again, never crossing the bar; read as 5 or 6.
            "one stroke, no crossing": [[(0.2, 0.0), (0.1, 0.6), (0.75, 0.6), (0.72, 1.0)]],
            "one stroke, up the stem and down": [[(0.18, 0.0), (0.08, 0.6), (0.8, 0.6), (0.74, 0.1),
                                                   (0.72, 1.0)]],
            "closed, one stroke": [[(0.7, 1.0), (0.7, 0.0), (0.05, 0.66), (0.95, 0.66)]]},
        5: {"stem, bar last": [[(0.25, 0.0)] + a(0.48, 0.7, 0.35, 0.3, -140, 150),
                               [(0.25, 0.0), (0.85, 0.0)]],
            "bar first, one stroke": [[(0.85, 0.0), (0.25, 0.0)] + a(0.48, 0.68, 0.36, 0.32, -135, 155)],
            "slanted, bar first": _slant([[(0.3, 0.02), (0.9, 0.0)], [(0.3, 0.02)]
                                          + a(0.5, 0.7, 0.38, 0.3, -150, 140)], 0.2),
            "flat belly, bar last": [[(0.22, 0.0), (0.2, 0.42), (0.6, 0.4)]
                                     + a(0.55, 0.7, 0.35, 0.3, -80, 150),
                                     [(0.22, 0.0), (0.9, 0.02)]]},
        6: {"curved back": [a(0.8, 0.68, 0.65, 0.68, 255, 180) + a(0.47, 0.7, 0.32, 0.3, 180, -170, 32)],
            "straight back": [[(0.7, 0.0)] + a(0.47, 0.72, 0.31, 0.28, 200, -150, 32)],
            "small loop": [a(0.9, 0.75, 0.75, 0.75, 250, 180) + a(0.4, 0.78, 0.25, 0.22, 180, -180, 32)],
            # Issue 13: a tall straight stem with a tiny loop at its foot, which a fat brush fills; read as 1.
            "tall stem, tiny loop": [[(0.62, 0.0), (0.3, 0.82)] + a(0.45, 0.84, 0.16, 0.15, 180, -180, 28)],
            "large loop": [a(0.9, 0.66, 0.78, 0.66, 250, 180) + a(0.52, 0.68, 0.4, 0.32, 180, -175, 36)],
            "tall stem, small loop": [[(0.7, 0.0)] + a(1.0, 0.72, 0.72, 0.72, 240, 180, 10)[1:]
                                      + a(0.5, 0.78, 0.22, 0.2, 180, -180, 28)]},
        7: {"plain": [[(0.08, 0.03), (0.92, 0.03), (0.4, 1.0)]],
            "crossed": [[(0.08, 0.03), (0.92, 0.03), (0.4, 1.0)], [(0.35, 0.52), (0.8, 0.52)]],
            "hooked, curved stem": [[(0.08, 0.18), (0.1, 0.03), (0.92, 0.03)]
                                    + a(-0.395, -0.008, 1.316, 1.316, 1.66, 50, 12)],
            # Issue 13: crossed 7s and 7s looping back at the bend, read as 2.
            "crossed, serif": [[(0.05, 0.16), (0.1, 0.02), (0.92, 0.02), (0.45, 1.0)],
                               [(0.3, 0.5), (0.85, 0.5)]],
            "crossed, bar first": [[(0.25, 0.55), (0.75, 0.52)], [(0.05, 0.04), (0.95, 0.0), (0.5, 1.0)]],
            "looped at the bend": [[(0.05, 0.05), (0.88, 0.02)] + a(0.8, 0.12, 0.14, 0.12, -60, 240, 18)
                                   + [(0.45, 1.0)]],
            "looped at the bend, crossed": [[(0.05, 0.05), (0.88, 0.02)]
                                            + a(0.8, 0.12, 0.14, 0.12, -60, 240, 18) + [(0.45, 1.0)],
                                            [(0.35, 0.55), (0.85, 0.53)]]},
        8: {"one stroke": [_eight(0.28, 0.36, 0.45)],
            "two loops": [a(0.5, 0.25, 0.28, 0.25, -90, -450, 32), a(0.5, 0.73, 0.36, 0.27, -90, 270, 32)],
            "slanted one stroke": _slant([_eight(0.25, 0.33, 0.42)], 0.25),
            "small top loop": [_eight(0.18, 0.36, 0.36)],
            "S and a line": [a(0.5, 0.25, 0.3, 0.25, -20, -270, 24) + a(0.5, 0.74, 0.38, 0.26, -90, 150, 28),
                             [(0.18, 0.82), (0.8, 0.14)]]},
        9: {"straight tail": [a(0.45, 0.28, 0.35, 0.28, -10, -360, 32) + [(0.75, 1.0)]],
            "curved tail": [a(0.45, 0.28, 0.35, 0.28, -10, -360, 32)
                            + a(0.3, 0.28, 0.5, 0.72, 0, 90, 16)[1:]],
            "two strokes": [a(0.45, 0.27, 0.33, 0.27, 0, -370, 32), [(0.78, 0.05), (0.72, 1.0)]],
            # Issue 13: a small head and a long tail sweeping to the left, in one stroke; read as 3.
            "small head, sweeping tail": [a(0.55, 0.17, 0.22, 0.17, -10, -360, 28)
                                          + a(0.3, 0.2, 0.52, 0.78, 0, 125, 20)[1:]],
            "sweeping tail": [a(0.5, 0.27, 0.33, 0.27, -10, -360, 32)
                              + a(0.3, 0.3, 0.53, 0.68, 0, 120, 18)[1:]],
            "hooked tail": [a(0.48, 0.27, 0.33, 0.27, -10, -360, 32) + [(0.8, 0.85)]
                            + a(0.62, 0.85, 0.18, 0.15, 0, 160, 10)[1:]]},
    }  # fmt: skip


_NAMED = _styles()
STROKES: dict[int, list[list[Stroke]]] = {d: list(styles.values()) for d, styles in _NAMED.items()}
STYLE_NAMES: dict[int, list[str]] = {d: list(styles) for d, styles in _NAMED.items()}


def digit_strokes(digit: int, style: int = 0) -> list[Stroke]:
    """A copy of the strokes of `digit` in `style`, unit coordinates (x right, y down) of a square box."""
    if digit not in STROKES or not 0 <= style < len(STROKES[digit]):
        count = len(STROKES.get(digit, ()))
        raise ValueError(f"no style {style!r} of digit {digit!r}; digits 0-9, styles 0 to {count - 1}")
    return [list(stroke) for stroke in STROKES[digit][style]]


def place_strokes(strokes, canvas_size, box=(0.3, 0.15, 0.7, 0.85)) -> list[Stroke]:
    """Unit-square strokes mapped into `box` (x0, y0, x1, y1 as fractions of the canvas), in pixels."""
    w, h = _size(canvas_size)
    x0, y0, x1, y1 = box
    return [[((x0 + x * (x1 - x0)) * w, (y0 + y * (y1 - y0)) * h) for x, y in s] for s in strokes]


def render_sketch(strokes_px, canvas_size, brush_width: float, background: bool = True) -> dict:
    """The gr.Sketchpad value for black round-brush strokes: layer alpha = ink, opaque white composite."""
    w, h = _size(canvas_size)
    alpha = render_strokes(strokes_px, max(w, h), brush_width)[:h, :w, None]
    layer = np.dstack([np.zeros((h, w, 3), np.uint8), alpha])
    composite = np.dstack([np.repeat(255 - alpha, 3, 2), np.full_like(alpha, 255)])
    white = np.full((h, w, 4), 255, np.uint8) if background else None
    return {"background": white, "layers": [layer], "composite": composite}


def thin(mask) -> np.ndarray:
    """Zhang-Suen thinning of a boolean image to a one-pixel-wide, 8-connected skeleton."""
    img = np.pad(np.asarray(mask, bool), 1).astype(np.uint8)
    h, w = img.shape
    before = -1
    while before != (before := int(img.sum())):  # until a whole pass removes nothing
        for first in (True, False):
            p = [img[1 + dy : h - 1 + dy, 1 + dx : w - 1 + dx] for dy, dx in _RING]
            p2, _, p4, _, p6, _, p8, _ = p
            count = sum(p)
            crossings = sum((p[i] == 0) & (p[(i + 1) % 8] == 1) for i in range(8))
            corner = (p2 & p4 & p6) | (p4 & p6 & p8) if first else (p2 & p4 & p8) | (p2 & p6 & p8)
            inner = img[1:-1, 1:-1]
            inner[(inner == 1) & (count >= 2) & (count <= 6) & (crossings == 1) & (corner == 0)] = 0
    return img[1:-1, 1:-1].astype(bool)


def _polylines(skeleton: np.ndarray) -> list[list[tuple[int, int]]]:
    """Skeleton pixels (row, col) as polylines that run between ends and junctions, plus closed loops."""
    px = set(zip(*np.nonzero(skeleton), strict=True))

    def linked(y, x, dy, dx):  # diagonals only where no 4-neighbour links the pair: no staircase triangles
        return (y + dy, x + dx) in px and not (dy and dx and {(y + dy, x), (y, x + dx)} & px)

    graph = {(y, x): [(y + dy, x + dx) for dy, dx in _RING if linked(y, x, dy, dx)] for y, x in px}
    walked, lines = set(), []
    # Ends and junctions first, so branches start there; what is left are loops (a 0, the rings of an 8).
    for start in sorted(px, key=lambda p: (len(graph[p]) == 2, p)):
        lines += [[start]] if not graph[start] else []
        for nxt in graph[start]:
            line = [start]
            while frozenset((line[-1], nxt)) not in walked:
                walked.add(frozenset((line[-1], nxt)))
                line.append(nxt)
                if len(graph[nxt]) != 2:
                    break
                nxt = next((q for q in graph[nxt] if q != line[-2]), nxt)
            lines += [line] if len(line) > 1 else []
    return lines


def _smooth(line, window: int = 5, step: int = 3) -> np.ndarray:
    """A pixel polyline averaged over `window` points (ends kept), keeping every `step`-th point."""
    pts = np.asarray(line, np.float64)
    if len(pts) > window:
        sums = np.cumsum(np.pad(pts, ((window // 2 + 1, window // 2), (0, 0)), mode="edge"), 0)
        pts = np.concatenate([pts[:1], ((sums[window:] - sums[:-window]) / window)[1:-1], pts[-1:]])
    return pts[sorted({*range(0, len(pts), step), len(pts) - 1})]


def trace_mnist(image) -> list[Stroke]:
    """Strokes along the skeleton of a 28 x 28 MNIST digit, in unit coordinates of the 28 px frame."""
    a = np.asarray(image, np.float32)
    if a.shape != (28, 28) or a.max() <= 0:
        raise ValueError(f"trace_mnist got an image of shape {a.shape}; expected a non-blank 28 x 28 digit")
    side = 28 * TRACE_SCALE
    big = np.asarray(Image.fromarray(a, "F").resize((side, side), Image.Resampling.BILINEAR))
    skeleton = thin(big >= 0.5 * big.max())
    return [[((x + 0.5) / side, (y + 0.5) / side) for y, x in _smooth(line)] for line in _polylines(skeleton)]


@dataclass(frozen=True)
class DrawnItem:
    """One drawn test digit: where its strokes come from and how they are distorted, placed and drawn."""

    label: int
    source: str  # "traced" (ref: an index into the MNIST test set) or "handmade" (ref: a style of STROKES)
    ref: int
    rotation: float  # degrees, clockwise
    slant: float  # x shift per unit of height, top to the right
    aspect: float  # width multiplier
    height: float  # digit height as a fraction of the canvas height
    u: float  # horizontal position in [0, 1] of the room left beside the digit
    v: float  # vertical position, likewise
    brush: float  # brush width as a fraction of the canvas size


HANDMADE_PER_STYLE = 40  # 97% on a style then allows one miss in 40
# Training draws come from their own stream of the seed, so no training image repeats an evaluated one.
TRAINING_STREAM = 13
HEIGHTS = (0.3, 0.85)  # digit heights, fractions of the canvas: 168-476 px on the page's 560 px canvas
READS = ("points", "canvas")


def style_name(digit: int, style: int) -> str:
    """The name of `style` of `digit`, e.g. "crossed" for 7's style 1."""
    digit_strokes(digit, style)  # the same ValueError for a style that does not exist
    return STYLE_NAMES[digit][style]


def drawn_items(
    data, count=1000, seed=0, handmade: int = HANDMADE_PER_STYLE, heights=HEIGHTS
) -> list[DrawnItem]:
    """`count` traced MNIST test digits, even over classes, then `handmade` digits of every STROKES style."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(data.y_test)
    if not 0 <= count <= (most := 10 * int(np.bincount(labels, minlength=10).min())):
        raise ValueError(
            f"count must be from 0 to {most} (10 x the rarest digit's test images), got {count!r}"
        )
    if not isinstance(handmade, int) or handmade < 0:
        raise ValueError(f"handmade must be a whole number of digits per style, 0 or more, got {handmade!r}")
    sources = [
        (d, "traced", int(i))
        for d in range(10)
        for i in rng.choice(np.flatnonzero(labels == d), count // 10 + (d < count % 10), replace=False)
    ]
    styles = [(d, k) for d in range(10) for k in range(len(STROKES[d]))]
    sources += [(d, "handmade", k) for d, k in styles for _ in range(handmade)]
    return _distorted(sources, rng, heights)


def training_items(data, count: int, seed: int = 0) -> list[DrawnItem]:
    """`count` hand-made digits to train on, even over the STROKES styles, on the set's variations.

    Drawn from a stream of `seed` that drawn_items never uses, so no training digit repeats an evaluated
    one. Only hand-made styles: traced MNIST training digits as half of them read the traced test digits
    no better (98.5% against 98.3%, 1,000 digits) and cost 6.3 ms each to trace, against 0.9 ms.
    """
    if not isinstance(count, int) or count < 0:
        raise ValueError(f"count must be a whole number of digits, 0 or more, got {count!r}")
    rng = np.random.default_rng([seed, TRAINING_STREAM])
    styles = [(d, k) for d in range(10) for k in range(len(STROKES[d]))]
    # Every style as often as the others (the first `count % styles` once more), in a shuffled order.
    picks = rng.permutation(np.arange(count) % len(styles))
    return _distorted([(styles[j][0], "handmade", styles[j][1]) for j in picks], rng)


def _distorted(sources, rng, heights=HEIGHTS) -> list[DrawnItem]:
    """DrawnItems of (label, source, ref) with random rotation, slant, aspect, size, place and brush."""
    if not (len(heights) == 2 and 0.05 <= heights[0] <= heights[1] <= 0.95):
        raise ValueError(
            f"heights must be (low, high) with 0.05 <= low <= high <= 0.95, received {heights!r}"
        )
    # Canvas-independent draws, so one seed gives the same digits on any canvas size.
    low, high = [-12, -0.1, -0.25, heights[0], 0, 0, 0.015], [12, 0.1, 0.25, heights[1], 1, 1, 0.06]
    draws = rng.uniform(low, high, (len(sources), len(low)))
    draws[:, 2] = np.exp(draws[:, 2])  # aspect: as often 20% narrower as 20% wider
    return [DrawnItem(d, s, ref, *map(float, row)) for (d, s, ref), row in zip(sources, draws, strict=True)]


def item_strokes(item: DrawnItem, data, canvas_size) -> list[Stroke]:
    """The strokes of `item` in canvas pixels: traced or hand-made, slanted, rotated, sized and placed."""
    w, h = _size(canvas_size)
    if item.source == "traced":
        strokes = [np.asarray(s) for s in trace_mnist(data.x_test[item.ref])]
    else:
        strokes = [np.asarray(s) * [HANDMADE_ASPECT, 1] for s in STROKES[item.label][item.ref]]
    every = np.concatenate(strokes)
    center = (every.min(0) + every.max(0)) / 2
    t = math.radians(item.rotation)
    # Slant and aspect act on the upright digit, then the whole digit turns about its centre.
    matrix = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]]) @ np.array(
        [[item.aspect, -item.slant * item.aspect], [0, 1]]
    )
    strokes = [(s - center) @ matrix.T for s in strokes]
    every = np.concatenate(strokes)
    low, span = every.min(0), np.maximum(every.max(0) - every.min(0), 1e-6)
    margin = item.brush * min(w, h) / 2 + 1  # the brush must not run off the canvas
    scale = min(item.height * h / span[1], (w - 2 * margin) / span[0], (h - 2 * margin) / span[1])
    room = np.array([w, h]) - 2 * margin - span * scale
    origin = margin + np.array([item.u, item.v]) * room
    return [[tuple(p) for p in ((s - low) * scale + origin).tolist()] for s in strokes]


def iter_drawn(data, count=1000, canvas_size=400, seed=0) -> Iterator[tuple[dict, DrawnItem]]:
    """(Sketchpad value, item) for each drawn digit, rendered one at a time to keep memory flat."""
    side = min(_size(canvas_size))
    for item in drawn_items(data, count, seed):
        yield render_sketch(item_strokes(item, data, canvas_size), canvas_size, item.brush * side), item


def drawn_set(data, count=1000, canvas_size=400, seed=0) -> tuple[Iterator[dict], np.ndarray]:
    """A lazy stream of Sketchpad values and their labels (count traced + the hand-made digits)."""
    labels = np.array([item.label for item in drawn_items(data, count, seed)])
    return (sketch for sketch, _ in iter_drawn(data, count, canvas_size, seed)), labels


def read_items(items, data, canvas_size=CANVAS_SIDE, read: str = "points") -> list[np.ndarray | None]:
    """Each item as the Draw tab reads it ("points": strokes_to_mnist) or as its canvas shows it ("canvas").

    "canvas" is the picture the page paints with its brush (scaled to `canvas_size`), read like an upload:
    what the server read before it drew the points with MNIST's pen (preprocess.PEN_WIDTH).
    """
    if read not in READS:
        raise ValueError(f"read must be one of {list(READS)}, received {read!r}")
    w, h = _size(canvas_size)
    brush = BRUSH_WIDTH * min(w, h) / CANVAS_SIDE
    strokes = (item_strokes(item, data, canvas_size) for item in items)
    if read == "canvas":
        return [to_mnist(render_sketch(s, canvas_size, brush)) for s in strokes]
    return [strokes_to_mnist(s, min(w, h), brush) for s in strokes]


def training_images(data, count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """`count` training_items read through the Draw tab's path, as uint8 (count, 28, 28) and labels."""
    items = training_items(data, count, seed)
    images = [np.zeros((28, 28), np.float32) if i is None else i for i in read_items(items, data)]
    x = np.round(np.stack(images) * 255).astype(np.uint8) if items else np.zeros((0, 28, 28), np.uint8)
    return x, np.array([item.label for item in items], np.uint8)


def evaluate_drawn(
    predictor_or_model,
    data,
    count=1000,
    canvas_size=CANVAS_SIDE,
    seed=0,
    worst=8,
    handmade=HANDMADE_PER_STYLE,
    heights=HEIGHTS,
    read="points",
) -> dict:
    """Accuracy on the drawn set through the Draw tab's path: stroke points -> strokes_to_mnist -> model.

    The strokes lie on a `canvas_size` canvas and are drawn with the page's brush scaled to it (the page's
    own canvas is CANVAS_SIDE px with a BRUSH_WIDTH brush); their variety of size, position, slant and
    rotation comes from drawn_items (`heights`: the digit's height range, fractions of the canvas), and
    `read` picks read_items' path. Reported overall, per source, per digit and per hand-made style.
    """
    from mnist_core.predict import Predictor

    model = predictor_or_model
    predictor = model if isinstance(model, Predictor) else Predictor(model)
    items = drawn_items(data, count, seed, handmade, heights)
    images = read_items(items, data, canvas_size, read)
    blank = np.zeros((28, 28), np.float32)  # nothing drawn: counted as a miss, never skipped
    probabilities = predictor.predict(np.stack([blank if image is None else image for image in images]))
    labels, sources = np.array([i.label for i in items]), np.array([i.source for i in items])
    refs = np.array([i.ref for i in items])
    predicted = probabilities.argmax(1)
    correct = (predicted == labels) & np.array([image is not None for image in images])

    def accuracy(mask) -> float | None:
        return float(correct[mask].mean()) if mask.any() else None

    handmade_mask = sources == "handmade"
    per_style = []
    for d in range(10):
        for k, name in enumerate(STYLE_NAMES[d]):
            mask = handmade_mask & (labels == d) & (refs == k)
            errors = np.bincount(predicted[mask & ~correct], minlength=10)
            per_style.append(
                {
                    "digit": d,
                    "style": k,
                    "name": name,
                    "accuracy": accuracy(mask),
                    "count": int(mask.sum()),
                    "read_as": {str(p): int(n) for p, n in enumerate(errors) if n},
                }
            )
    wrong = np.flatnonzero(~correct)
    wrong = wrong[np.argsort(-probabilities[wrong, predicted[wrong]], kind="stable")][:worst]
    return {
        "accuracy": accuracy(labels >= 0),
        "count": len(items),
        "canvas_size": canvas_size,
        "seed": seed,
        "heights": list(heights),
        "read": read,
        "per_source": {s: {"accuracy": accuracy(sources == s), "count": int((sources == s).sum())}
                       for s in ("traced", "handmade")},
        "per_class_accuracy": [accuracy(labels == d) for d in range(10)],
        "per_style": per_style,
        "worst": [{"index": int(i), "label": int(labels[i]), "predicted": int(predicted[i]),
                   "confidence": float(probabilities[i, predicted[i]]), "source": items[i].source,
                   "ref": items[i].ref} for i in wrong],
    }  # fmt: skip


def _size(canvas_size) -> tuple[int, int]:
    """(width, height) from an int (a square canvas) or a (width, height) pair."""
    w, h = (canvas_size, canvas_size) if np.isscalar(canvas_size) else canvas_size
    if int(w) < 8 or int(h) < 8:
        raise ValueError(f"canvas_size must be at least 8 px a side, got {canvas_size!r}")
    return int(w), int(h)
