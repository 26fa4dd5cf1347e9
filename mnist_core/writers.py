"""Simulated writers: people with a consistent hand, for measuring what fine-tuning on their digits buys.

A writer writes each digit one fixed way (a style of drawn.STROKES or one of STYLES below, which the
shipped model never saw), with fixed habits of their own (slant, width, rotation, a personal warp of every
shape, retraced thick strokes) and a little variation from one drawing to the next. Each drawing is placed
on the Draw tab's CANVAS_SIDE px canvas and read as the tab reads it: preprocess.strokes_to_mnist.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .drawn import HANDMADE_ASPECT, STYLE_NAMES, Stroke, digit_strokes
from .preprocess import BRUSH_WIDTH, CANVAS_SIDE, strokes_to_mnist


def _arc(cx, cy, rx, ry, start, stop, n=24) -> Stroke:
    """Points of an elliptic arc; degrees, 0 = right, 90 = down (increasing runs clockwise on screen)."""
    return [(cx + rx * math.cos(t), cy + ry * math.sin(t)) for t in np.radians(np.linspace(start, stop, n))]


def _line(*points) -> Stroke:
    return [(float(x), float(y)) for x, y in points]


def _new_styles() -> dict[int, dict[str, list[Stroke]]]:
    """Writing styles drawn.STROKES lacks, in unit coordinates of a square box (x right, y down)."""
    a = _arc
    return {
        0: {"slashed": [a(0.5, 0.5, 0.4, 0.48, -90, -450, 40), _line((0.85, 0.08), (0.15, 0.92))],
            "dotted": [a(0.5, 0.5, 0.4, 0.48, -90, -450, 40), _line((0.5, 0.48), (0.52, 0.52))],
            "pointed top": [_line((0.5, 0.0)) + a(0.5, 0.55, 0.42, 0.45, -150, 150, 36) + _line((0.5, 0.0))]},
        1: {"serifs and base": [_line((0.28, 0.0), (0.68, 0.0)), _line((0.5, 0.0), (0.5, 1.0)),
                                _line((0.18, 1.0), (0.82, 1.0))],
            "hooked foot": [_line((0.3, 0.15), (0.55, 0.0), (0.55, 0.85))
                            + a(0.72, 0.85, 0.17, 0.15, 180, 90, 8)],
            "steep flag": [_line((0.05, 0.6), (0.6, 0.0), (0.6, 1.0))]},
        2: {"curl start": [a(0.28, 0.3, 0.1, 0.1, 90, -200, 14) + a(0.5, 0.3, 0.38, 0.3, 200, 380)
                           + _line((0.05, 1.0), (0.95, 1.0))],
            "z with bar": [_line((0.1, 0.05), (0.9, 0.05), (0.1, 1.0), (0.9, 1.0)),
                           _line((0.3, 0.55), (0.7, 0.5))],
            "big base loop": [a(0.5, 0.28, 0.38, 0.28, 200, 380) + _line((0.3, 0.75))
                              + a(0.45, 0.82, 0.2, 0.16, 200, 520, 24) + _line((0.95, 0.95))]},
        3: {"looped waist": [a(0.5, 0.25, 0.33, 0.25, 200, 440) + a(0.4, 0.5, 0.08, 0.06, -90, -400, 14)
                             + a(0.5, 0.74, 0.4, 0.26, -100, 150, 30)],
            "z top": [_line((0.1, 0.0), (0.85, 0.0), (0.4, 0.42)) + a(0.45, 0.7, 0.4, 0.28, -90, 150, 30)]},
        4: {"cursive, like a y": [_line((0.15, 0.0)) + a(0.42, 0.32, 0.27, 0.25, 180, 90, 12)
                                  + _line((0.75, 0.45)), _line((0.75, 0.0), (0.72, 1.0))],
            "long bar": [_line((0.62, 0.0), (0.1, 0.6), (1.0, 0.6)), _line((0.66, 0.15), (0.66, 1.0))],
            "tall open": [_line((0.12, 0.0), (0.1, 0.45), (0.85, 0.45)), _line((0.62, 0.0), (0.62, 1.0))]},
        5: {"round shoulder": [_line((0.85, 0.0), (0.3, 0.02), (0.22, 0.45))
                               + a(0.5, 0.68, 0.33, 0.28, -150, 160)],
            "hooked bar": [_line((0.25, 0.05), (0.22, 0.45)) + a(0.5, 0.7, 0.35, 0.28, -140, 150),
                           _line((0.25, 0.05), (0.7, 0.0)) + a(0.72, 0.1, 0.1, 0.1, -90, 30, 8)]},
        6: {"open loop": [a(0.8, 0.7, 0.65, 0.7, 255, 180) + a(0.47, 0.72, 0.32, 0.28, 180, -90, 24)],
            "b-like": [_line((0.3, 0.0), (0.3, 1.0)), a(0.55, 0.73, 0.25, 0.27, 180, -180, 28)]},
        7: {"wavy bar": [a(0.3, 0.08, 0.22, 0.08, 180, 360, 10) + a(0.72, 0.08, 0.2, 0.08, 180, 0, 10)[1:]
                         + _line((0.4, 1.0))],
            "tail hook": [_line((0.05, 0.02), (0.92, 0.02), (0.45, 0.85))
                          + a(0.3, 0.85, 0.15, 0.15, 0, 140, 8)],
            "long serif, crossed": [_line((0.05, 0.35), (0.08, 0.02), (0.92, 0.02), (0.45, 1.0)),
                                    _line((0.4, 0.5), (0.85, 0.5))]},
        8: {"two circles": [a(0.5, 0.22, 0.22, 0.22, -90, -450, 28), a(0.5, 0.72, 0.3, 0.28, -90, 270, 32)],
            "bow tie": [_line((0.15, 0.0), (0.85, 0.0), (0.15, 1.0), (0.85, 1.0), (0.15, 0.0))]},
        9: {"q-like": [a(0.45, 0.27, 0.3, 0.25, -10, -360, 28), _line((0.76, 0.0), (0.78, 1.0))],
            "open head": [a(0.45, 0.28, 0.33, 0.26, 0, -300, 28), _line((0.78, 0.1), (0.72, 1.0))],
            "g-tail": [a(0.48, 0.25, 0.33, 0.25, -10, -360, 28) + _line((0.8, 0.75))
                       + a(0.5, 0.75, 0.3, 0.25, 0, 150, 14)[1:]]},
    }  # fmt: skip


STYLES = _new_styles()


def style_strokes(digit: int, style: str) -> list[Stroke]:
    """The strokes of `digit` in the named `style`: one of STYLES or of drawn.STYLE_NAMES."""
    if style in STYLES.get(digit, {}):
        return [list(stroke) for stroke in STYLES[digit][style]]
    if digit in STYLE_NAMES and style in STYLE_NAMES[digit]:
        return digit_strokes(digit, STYLE_NAMES[digit].index(style))
    known = sorted({*STYLES.get(digit, {}), *STYLE_NAMES.get(digit, [])})
    raise ValueError(f"no style {style!r} of digit {digit!r}; expected a digit 0-9 and one of {known}")


@dataclass(frozen=True)
class Writer:
    """One person's hand: a style per digit and the habits every one of their drawings shares."""

    name: str
    styles: tuple[str, ...]  # the style of digit 0, 1, ... 9
    slant: float = 0.0  # x shift per unit of height, top to the right
    aspect: float = 1.0  # width multiplier on drawn's 3/4-wide box
    rotation: float = 0.0  # degrees, clockwise
    height: float = 0.55  # fraction of the canvas
    warp: float = 0.0  # amplitude of the writer's own smooth warp of every shape, in units of the box
    thick: float = 0.0  # strokes retraced this far to the side (units of the box): a thick, doubled line
    seed: int = 0  # the warp's shape

    def __post_init__(self):
        if len(self.styles) != 10:
            raise ValueError(f"writer {self.name!r}: expected 10 styles (digits 0-9), got {len(self.styles)}")
        for digit, style in enumerate(self.styles):
            style_strokes(digit, style)  # the same ValueError for a style that does not exist


# The variation between one person's drawings: rotation (degrees), slant, log aspect, log height, warp.
JITTER = (6.0, 0.08, 0.1, 0.15, 0.04)
RESAMPLE = 0.02  # strokes are cut into points this far apart (box units) before warping, so curves bend


WRITERS: dict[str, Writer] = {
    w.name: w
    for w in (
        Writer("continental", ("slashed", "steep flag", "z with bar", "z top", "tall open", "hooked bar",
                               "open loop", "long serif, crossed", "two circles", "q-like"),
               slant=0.15, rotation=20, warp=0.06, seed=1),
        Writer("left-leaning", ("pointed top", "serifs and base", "curl start", "looped waist",
                                "cursive, like a y", "round shoulder", "b-like", "wavy bar", "bow tie",
                                "g-tail"),
               slant=-0.35, rotation=-22, aspect=0.85, warp=0.1, seed=2),
        Writer("fast and slanted", ("slanted, overshooting", "long flag", "looped", "two strokes", "long bar",
                                    "bar first, one stroke", "large loop", "tail hook", "S and a line",
                                    "open head"),
               slant=0.45, rotation=6, aspect=0.7, warp=0.1, seed=3),
        Writer("wide and round", ("round, open at the top", "hooked foot", "big base loop", "two bumps",
                                  "open, short stem", "stem, bar last", "small loop", "hooked, curved stem",
                                  "two circles", "curved tail"),
               aspect=1.9, rotation=-4, warp=0.08, thick=0.03, seed=4),
        Writer("thick marker", ("dotted", "flag and base", "angular", "flat top", "closed",
                                "flat belly, bar last", "straight back", "crossed, bar first", "bow tie",
                                "q-like"),
               slant=-0.1, aspect=1.2, thick=0.1, warp=0.12, seed=5),
        Writer("narrow and tilted", ("narrow, looped at the top", "steep flag", "curved neck", "z top",
                                     "cursive, like a y", "hooked bar", "tall stem, small loop", "wavy bar",
                                     "small top loop", "hooked tail"),
               aspect=0.5, rotation=14, slant=0.1, warp=0.06, seed=6),
    )
}  # fmt: skip


def writer(name_or_writer) -> Writer:
    """A Writer, or the one of WRITERS with that name."""
    if isinstance(name_or_writer, Writer):
        return name_or_writer
    if name_or_writer not in WRITERS:
        raise ValueError(f"no writer {name_or_writer!r}; expected one of {list(WRITERS)}")
    return WRITERS[name_or_writer]


def _resampled(stroke: np.ndarray) -> np.ndarray:
    """A stroke with a point every RESAMPLE along it (its own points kept), so a warp bends straight lines."""
    if len(stroke) < 2:
        return stroke
    out = [stroke[:1]]
    for p, q in zip(stroke[:-1], stroke[1:], strict=True):
        n = max(1, math.ceil(float(np.hypot(*(q - p))) / RESAMPLE))
        out.append(p + (q - p) * (np.arange(1, n + 1) / n)[:, None])
    return np.concatenate(out)


def _field(rng, amplitude: float):
    """A smooth random displacement of the unit box: three plane waves of random direction and phase."""
    k = rng.normal(0, 1, (3, 2)) * 2.5  # about one to three bumps across the box
    phase = rng.uniform(0, 2 * math.pi, 3)
    direction = rng.normal(0, 1, (3, 2))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)

    def warp(points: np.ndarray) -> np.ndarray:
        return points + amplitude * np.sin(points @ k.T + phase) @ direction

    return warp


def drawing_strokes(w: Writer, digit: int, rng) -> list[Stroke]:
    """One drawing of `digit` by `w`, in canvas pixels of the CANVAS_SIDE px canvas."""
    strokes = [_resampled(np.asarray(s, np.float64)) for s in style_strokes(digit, w.styles[digit])]
    mine = _field(np.random.default_rng([w.seed, digit]), w.warp)  # the writer's: the same every time
    rotation, slant, aspect, height, warp = rng.normal(0, 1, 5) * JITTER
    once = _field(rng, abs(warp))
    strokes = [once(mine(s)) for s in strokes]
    if w.thick:
        side = np.array([0.7, 0.7]) * w.thick  # a second pass beside the first, down and to the right
        strokes = [t for s in strokes for t in (s, s + side)]
    every = np.concatenate(strokes)
    center = (every.min(0) + every.max(0)) / 2
    t = math.radians(w.rotation + rotation)
    wide = HANDMADE_ASPECT * w.aspect * math.exp(aspect)
    matrix = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]]) @ np.array(
        [[wide, -(w.slant + slant) * wide], [0, 1]]
    )
    strokes = [(s - center) @ matrix.T for s in strokes]
    every = np.concatenate(strokes)
    low, span = every.min(0), np.maximum(np.ptp(every, 0), 1e-6)
    margin = BRUSH_WIDTH / 2 + 1
    scale = min(w.height * math.exp(height) * CANVAS_SIDE / span[1], *((CANVAS_SIDE - 2 * margin) / span))
    origin = margin + rng.uniform(0, 1, 2) * (CANVAS_SIDE - 2 * margin - span * scale)
    return [[tuple(p) for p in ((s - low) * scale + origin).tolist()] for s in strokes]


def writer_digits(name_or_writer, per_digit: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """`per_digit` drawings of each digit by a writer, read through the Draw tab's path: uint8 (n, 28, 28)
    images and uint8 labels, digit by digit. Drawing i of a digit depends only on (writer, seed, digit, i),
    so 3 per digit are the first 3 of 5 per digit; another seed gives other drawings."""
    w = writer(name_or_writer)
    if isinstance(per_digit, bool) or not isinstance(per_digit, int) or per_digit < 0:
        raise ValueError(f"per_digit must be a whole number, 0 or more, received {per_digit!r}")
    images, labels = [], []
    for digit in range(10):
        for i in range(per_digit):
            rng = np.random.default_rng([w.seed, seed, digit, i])
            image = strokes_to_mnist(drawing_strokes(w, digit, rng), CANVAS_SIDE, BRUSH_WIDTH)
            images.append(np.zeros((28, 28), np.float32) if image is None else image)
            labels.append(digit)
    x = np.round(np.stack(images) * 255).astype(np.uint8) if images else np.zeros((0, 28, 28), np.uint8)
    return x, np.array(labels, np.uint8)


def adaptation(
    model,
    data,
    *,
    writers=None,
    ks=(1, 3, 5),
    eval_per_digit: int = 20,
    mnist_images: int | None = None,
    seed: int = 0,
    base_config: dict | None = None,
    progress=None,
) -> dict:
    """What fine-tuning `model` on k drawings per digit of each writer buys: the writer's accuracy on
    `eval_per_digit` other drawings per digit (never trained on) before and after, and the MNIST test
    accuracy (its first `mnist_images`; None: all) after. `progress(writer_name, k, row)` is called after
    each fine-tuning. Seeded: the same arguments give the same drawings and the same runs."""
    import time

    from . import finetune
    from .evaluate import evaluate_model

    chosen = [writer(w) for w in (WRITERS if writers is None else writers)]
    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] < 1 or not chosen or eval_per_digit < 1:
        raise ValueError(
            f"adaptation needs writers, ks >= 1 and eval_per_digit >= 1; received {len(chosen)} writers, "
            f"ks {ks}, eval_per_digit {eval_per_digit!r}"
        )
    count = len(data.y_test) if mnist_images is None else min(int(mnist_images), len(data.y_test))
    x_mnist, y_mnist = data.x_test[:count], data.y_test[:count]

    def mnist_accuracy(m) -> float:
        return evaluate_model(m, x_mnist, y_mnist).test_accuracy

    report = {"mnist_before": mnist_accuracy(model), "mnist_images": count, "ks": ks,
              "eval_per_digit": eval_per_digit, "seed": seed, "writers": []}  # fmt: skip
    for w in chosen:
        # Two streams of the seed: the drawings measured on are never among those trained on.
        x_eval, y_eval = writer_digits(w, eval_per_digit, seed=2 * seed)
        x_own, y_own = writer_digits(w, ks[-1], seed=2 * seed + 1)
        row = {"writer": w.name, "base": finetune.accuracy(model, x_eval, y_eval), "after": {},
               "mnist_after": {}, "seconds": {}}  # fmt: skip
        for k in ks:
            first = np.flatnonzero(np.arange(len(y_own)) % ks[-1] < k)  # the first k of each digit
            config = finetune.tune_config(base_config, len(first), seed)
            started = time.perf_counter()
            tuned = finetune.fine_tune(model, x_own[first], y_own[first], data, seed=seed, config=config)
            row["seconds"][k] = round(time.perf_counter() - started, 2)
            row["after"][k] = finetune.accuracy(tuned, x_eval, y_eval)
            row["mnist_after"][k] = mnist_accuracy(tuned)
            if progress is not None:
                progress(w.name, k, row)
        report["writers"].append(row)
    return report | {"summary": adaptation_summary(report)}


HARD_BELOW = 0.95  # writers the base model reads at this or less are the ones fine-tuning is for


def adaptation_summary(report: dict) -> dict:
    """Means over the writers and the targets' figures: the lift at the largest k (points, over the writers
    read at HARD_BELOW or less) and the largest MNIST drop (points, any writer, any k)."""
    rows, top = report["writers"], report["ks"][-1]
    hard = [r for r in rows if r["base"] <= HARD_BELOW]
    lift = [100 * (r["after"][top] - r["base"]) for r in hard]
    drops = [100 * (report["mnist_before"] - r["mnist_after"][k]) for r in rows for k in report["ks"]]
    return {
        "base": float(np.mean([r["base"] for r in rows])),
        "after": {k: float(np.mean([r["after"][k] for r in rows])) for k in report["ks"]},
        "mnist_after": {k: float(np.mean([r["mnist_after"][k] for r in rows])) for k in report["ks"]},
        "hard_writers": len(hard),
        "mean_lift_points": float(np.mean(lift)) if lift else None,
        "lift_at_k": top,
        "max_mnist_drop_points": float(max(drops)),
        "seconds": float(np.mean([s for r in rows for s in r["seconds"].values()])),
    }
