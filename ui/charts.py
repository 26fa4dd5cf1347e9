"""The Train tab's live curves as inline SVG: every point drawn, markers where a series has few.

A native gr.LinePlot draws nothing for a series of one point (a one-epoch run has one validation point),
shows no markers, and fixes its colour domain when it is first built (gradio 6.31). An SVG of a few hundred
points is a few kB, costs the browser one paint per update and the server well under a millisecond.
"""

from __future__ import annotations

import html
import math

WIDTH, HEIGHT = 480, 260
MARGIN = {"left": 52, "right": 12, "top": 28, "bottom": 36}
MARKERS_BELOW = 30  # a series with fewer points shows each as a dot
# Light for the per-batch training curve, dark for the per-epoch validation curve; one hue per run.
PALETTE = [("#6baed6", "#08519c"), ("#fd8d3c", "#a63603"), ("#74c476", "#006d2c"), ("#9e9ac8", "#54278f")]


def series_colors(names: list[str]) -> dict[str, str]:
    """A colour per series name ("train", "validation", "run 2 train", ...): one hue per run."""
    runs = list(dict.fromkeys(name.rsplit(" ", 1)[0] if " " in name else "" for name in names))
    colors = {}
    for name in names:
        run = name.rsplit(" ", 1)[0] if " " in name else ""
        light, dark = PALETTE[runs.index(run) % len(PALETTE)]
        colors[name] = dark if name.endswith("validation") else light
    return colors


def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About `count` round tick values covering [low, high]."""
    span = high - low or 1.0
    step = 10 ** math.floor(math.log10(span / count))
    for factor in (1, 2, 5, 10):
        if span / (step * factor) <= count:
            step *= factor
            break
    first = math.ceil(low / step - 1e-9) * step
    return [round(first + i * step, 10) for i in range(int((high - first) / step + 1e-9) + 1)]


def line_chart(
    columns: dict, title: str, y_title: str, x_max: float, y_range=None, chart_id: str = ""
) -> str:
    """An SVG chart of columns {epoch, value, series}: a line and, when few, markers per series."""
    xs, ys, names = columns["epoch"], columns["value"], columns["series"]
    order = list(dict.fromkeys(names))
    colors = series_colors(order)
    finite = [y for y in ys if math.isfinite(y)]
    if y_range is not None:
        low, high = y_range
    elif finite:
        low, high = min(0.0, min(finite)), max(finite) * 1.05 or 1.0
    else:
        low, high = 0.0, 1.0
    x_max = max(x_max, max(xs, default=0.0), 1e-9)
    left, top = MARGIN["left"], MARGIN["top"] + 13 * max(0, (len(order) - 1) // 2)
    plot_w, plot_h = WIDTH - left - MARGIN["right"], HEIGHT - top - MARGIN["bottom"]

    def px(x: float) -> float:
        return left + plot_w * x / x_max

    def py(y: float) -> float:
        return top + plot_h * (1 - (min(max(y, low), high) - low) / ((high - low) or 1.0))

    parts = [
        f'<svg class="chart" id="{chart_id}" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="{html.escape(title)}" xmlns="http://www.w3.org/2000/svg">',
        f'<text x="{left}" y="18" class="title">{html.escape(title)}</text>',
    ]
    for tick in _ticks(low, high):
        y = py(tick)
        parts.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>')
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" class="tick" text-anchor="end">{tick:g}</text>')
    for tick in _ticks(0, x_max, 6):
        x = px(tick)
        parts.append(
            f'<text x="{x:.1f}" y="{top + plot_h + 16}" class="tick" text-anchor="middle">{tick:g}</text>'
        )
    parts.append(
        f'<text x="{left + plot_w / 2}" y="{HEIGHT - 4}" class="axis" text-anchor="middle">epoch</text>'
        f'<text x="12" y="{top + plot_h / 2}" class="axis" text-anchor="middle" '
        f'transform="rotate(-90 12 {top + plot_h / 2})">{html.escape(y_title)}</text>'
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" class="frame"/>'
    )
    for name in order:
        points = [(x, y) for x, y, n in zip(xs, ys, names, strict=True) if n == name and math.isfinite(y)]
        color = colors[name]
        path = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in points)
        parts.append(
            f'<polyline class="series" data-series="{html.escape(name)}" data-points="{len(points)}" '
            f'points="{path}" stroke="{color}"/>'
        )
        if len(points) < MARKERS_BELOW:
            parts.extend(
                f'<circle class="marker" cx="{px(x):.1f}" cy="{py(y):.1f}" r="3.5" fill="{color}">'
                f"<title>{html.escape(name)}: epoch {x:.2f}, {y:.4f}</title></circle>"
                for x, y in points
            )
    for index, name in enumerate(order):  # the legend: in the title row, then rows above the plot
        row, column = divmod(index, 2)
        x, y = WIDTH - 250 + 125 * column, 14 + 13 * row
        parts.append(
            f'<circle cx="{x}" cy="{y - 4}" r="4" fill="{colors[name]}"/>'
            f'<text x="{x + 8}" y="{y}" class="legend">{html.escape(name)}</text>'
        )
    if not order:
        parts.append(
            f'<text x="{left + plot_w / 2}" y="{top + plot_h / 2}" class="axis" text-anchor="middle">'
            "no points yet: press Train</text>"
        )
    parts.append("</svg>")
    return "".join(parts)
