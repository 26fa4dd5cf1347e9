"""Drive MNIST Studio in headless Chromium the way a person does; measure stroke -> prediction latency.

python scripts/browser.py --url http://127.0.0.1:7860/ [--repeats 10]
python scripts/browser.py                 # starts `python app.py` on a free port with a copy of the model

Playwright drives Debian's /usr/bin/chromium (it cannot download browsers of its own here). The same code
serves tests/test_browser.py and the browser section of scripts/benchmark.py.
"""

from __future__ import annotations

import argparse
import base64
import io
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mnist_core.drawn import HANDMADE_ASPECT, digit_strokes, place_strokes  # noqa: E402
from scripts.appserver import START_SECONDS, copy_shipped_model, free_port, serve_app  # noqa: E402, F401

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# A laptop-sized window.
VIEWPORT = {"width": 1024, "height": 768}
ANSWER_SECONDS = 60  # the first answer may wait for TensorFlow and the model to load
# An answer counts once the panel has not changed for this long: the next answer, if one is on its way,
# lands within it (an answer takes ~0.05 s here, up to ~0.5 s with the machine busy).
SETTLE_SECONDS = 1.0
# About one pointer event per this many page pixels of a stroke (the brush is ~22 px wide on the page);
# a person's mouse or finger reports one every 4-16 px at drawing speed.
MOVE_PX = 12
BLANK_INK = 0.003  # dark fraction of an empty drawing area

Stroke = list[tuple[float, float]]

# Which of mnist_core.drawn's hand-made styles a person draws here; all are several strokes or split below.
STYLES = {1: 2, 7: 1}  # a 1 with a flag and a base, a 7 with a crossbar


# --- the browser --------------------------------------------------------------------------------


def launch_chromium(playwright, headless: bool = True):
    """Debian's Chromium through Playwright, with the flags CI needs."""
    return playwright.chromium.launch(executable_path=CHROMIUM, headless=headless, args=CHROMIUM_ARGS)


# Page-side clock (performance.now()): when the pen last left the canvas (pointerup), when a digit next
# appeared in the answer panel, and when the answer panel last changed at all, so a wait can tell a
# settled answer from one with a prediction still on its way. `stale` turns true if a digit is ever shown
# while the canvas is blank: a late answer that landed on a cleared canvas.
WATCH_JS = """
() => {
  const canvas = document.querySelector('#draw-canvas');
  const watch = window.__strokeWatch = {up: null, shown: null, changed: performance.now(), stale: false};
  canvas.addEventListener('pointerup', () => { watch.up = performance.now(); watch.shown = null; }, true);
  const blank = () => {
    const pixels = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
    for (let i = 0; i < pixels.length; i += 4) if (pixels[i] < 128) return false;
    return true;
  };
  const panel = document.querySelector('#draw-canvas').closest('.drawpad').querySelector('.pad-result');
  new MutationObserver(() => {
    watch.changed = performance.now();
    const digit = Boolean(panel.querySelector('#answer .digit'));
    if (digit && watch.up !== null && watch.shown === null) watch.shown = watch.changed;
    if (digit && blank()) watch.stale = true;
  }).observe(panel, {subtree: true, childList: true, characterData: true, attributes: true});
}
"""
LOCALES = ("en-US", "es-ES", "ru-RU", "fr-FR")  # Gradio translates its own labels in all but the first


def open_app(browser, url: str, locale: str = "en-US", touch: bool = False, viewport=None):
    """A fresh page (own context: own session) on the app in `locale`, the drawing surface on screen.

    `touch`: a touch-screen device (Playwright's has_touch); strokes are then drawn with a finger.
    """
    context = browser.new_context(viewport=viewport or VIEWPORT, locale=locale, has_touch=touch)
    page = context.new_page()
    page.goto(url)
    page.locator("#draw-canvas").wait_for(timeout=START_SECONDS * 1000)
    page.locator("#answer").wait_for()
    page.evaluate(WATCH_JS)
    return page


def open_tab(page, name: str) -> None:
    page.get_by_role("tab", name=name, exact=True).click()


# --- drawing ------------------------------------------------------------------------------------


def person_digit(digit: int) -> list[Stroke]:
    """Strokes of `digit` in a unit box, in the order a person draws them; a 0 in two connected halves."""
    strokes = digit_strokes(digit, STYLES.get(digit, 0))
    if len(strokes) == 1 and len(strokes[0]) > 8:
        # One long stroke becomes two, the second starting where the pen came down again.
        points = strokes[0]
        middle = len(points) // 2
        strokes = [points[: middle + 1], points[middle:]]
    return strokes


def digit_box(digit: int, height: float = 0.6, centre=(0.54, 0.47)) -> tuple[float, float, float, float]:
    """Where a person puts a digit: about 60% of the canvas high, a little right of and above centre."""
    width = height * (0.5 if digit == 1 else HANDMADE_ASPECT)
    x, y = centre
    return x - width / 2, y - height / 2, x + width / 2, y + height / 2


def drawing_surface(page) -> dict:
    """Where the canvas lies on the page: its top-left corner, size, and page px per canvas px."""
    canvas = page.locator("#draw-canvas")
    box = canvas.bounding_box()
    side = int(canvas.get_attribute("width"))
    return {**box, "scale": box["width"] / side, "canvas_size": (side, side)}


class Finger:
    """Touch input through Chromium's DevTools protocol: touchstart, touchmove, touchend, as a finger."""

    def __init__(self, page):
        self.session = page.context.new_cdp_session(page)

    def _send(self, kind: str, x: float | None = None, y: float | None = None) -> None:
        points = [] if x is None else [{"x": x, "y": y, "radiusX": 4, "radiusY": 4, "force": 1, "id": 1}]
        self.session.send("Input.dispatchTouchEvent", {"type": kind, "touchPoints": points})

    def down(self, x, y):
        self._send("touchStart", x, y)

    def move(self, x, y):
        self._send("touchMove", x, y)

    def up(self):
        self._send("touchEnd")


def _path(points: Stroke) -> list[tuple[float, float]]:
    """The positions a pen passes along `points`, about MOVE_PX apart."""
    path, (x, y) = [], points[0]
    for i, (nx, ny) in enumerate(points[1:], 2):
        distance = math.hypot(nx - x, ny - y)
        if distance < MOVE_PX and i < len(points):
            continue  # a dense curve: the next point is close, go straight there
        steps = max(1, round(distance / MOVE_PX))
        path += [(x + (nx - x) * k / steps, y + (ny - y) * k / steps) for k in range(1, steps + 1)]
        x, y = nx, ny
    return path


def stroke(page, points: Stroke, finger: Finger | None = None) -> None:
    """One pen stroke in page coordinates: press, small moves along the path, release; a finger if given."""
    x, y = points[0]
    if finger is not None:
        finger.down(x, y)
        for px, py in _path(points):
            finger.move(px, py)
        finger.up()
        return
    page.mouse.move(x, y)  # the pen goes to the start in one move: hovering draws nothing
    page.mouse.down()
    for px, py in _path(points):
        page.mouse.move(px, py)
    page.mouse.up()


def on_page(page, strokes: list[Stroke], box) -> list[Stroke]:
    """Unit-box strokes placed in `box` (fractions of the drawing area), in page coordinates."""
    surface = drawing_surface(page)
    placed = place_strokes(strokes, surface["canvas_size"], box)
    scale = surface["scale"]
    return [[(surface["x"] + x * scale, surface["y"] + y * scale) for x, y in s] for s in placed]


def draw_digit(page, digit: int, box=None, finger: Finger | None = None) -> None:
    """Draw `digit` with the mouse (or `finger`), stroke after stroke, as a person would."""
    draw_strokes(page, person_digit(digit), box or digit_box(digit), finger)


def draw_strokes(page, strokes: list[Stroke], box, finger: Finger | None = None) -> None:
    """Draw unit-box `strokes` into `box` of the drawing area with the mouse (or `finger`)."""
    # Pressing a button lower down scrolls the page; touches off the screen would be lost.
    page.locator("#draw-canvas").scroll_into_view_if_needed()
    for points in on_page(page, strokes, box):
        stroke(page, points, finger)


def canvas_ink(page) -> float:
    """Fraction of the drawing area that is dark, from a screenshot: what a person sees on the canvas."""
    s = drawing_surface(page)
    clip = {"x": s["x"] + 4, "y": s["y"] + 4, "width": s["width"] - 8, "height": s["height"] - 8}
    pixels = np.asarray(Image.open(io.BytesIO(page.screenshot(clip=clip))).convert("L"))
    return float((pixels < 128).mean())


def press(page, button: str, finger: Finger | None = None) -> None:
    """Press one of the surface's buttons (clear, undo, redo) with the mouse, or tap it with a finger."""
    target = page.locator(f"#draw-{button}")
    if finger is None:
        target.click()
    else:
        target.tap()


# --- what the page shows ------------------------------------------------------------------------


def shown_digit(page) -> str | None:
    """The big digit in the answer panel, or None in the 'draw a digit' state."""
    digit = page.locator("#answer .digit")
    return digit.inner_text().strip() if digit.count() else None


def wait_for_digit(page, expected: str | int, timeout: float = ANSWER_SECONDS) -> None:
    """Wait until the answer panel shows `expected` and has settled: no prediction still on its way.

    A digit of several strokes gets a prediction after each; the first may already show `expected` while
    the last is still coming, and it is the last that counts.
    """
    _wait_settled(
        page,
        "digit => document.querySelector('#answer .digit')?.textContent.trim() === digit",
        str(expected),
        f"{expected}",
        timeout,
    )


def wait_for_answer(page, timeout: float = ANSWER_SECONDS) -> str:
    """Wait until the answer panel shows a digit, any, and has settled; that digit."""
    _wait_settled(page, "_ => document.querySelector('#answer .digit') !== null", None, "an answer", timeout)
    return shown_digit(page)


def wait_for_empty(page, timeout: float = ANSWER_SECONDS) -> None:
    """Wait until the answer panel says 'draw a digit' and has settled."""
    empty = "() => Boolean(document.querySelector('#answer.empty'))"
    _wait_settled(page, empty, None, "'draw a digit'", timeout)


def _wait_settled(page, shown_js: str, arg, what: str, timeout: float) -> None:
    """Wait until `shown_js(arg)` holds and the answer has not changed for SETTLE_SECONDS."""
    try:
        page.wait_for_function(
            f"""([arg, quiet]) => ({shown_js})(arg)
                                 && performance.now() - window.__strokeWatch.changed > quiet""",
            arg=[arg, SETTLE_SECONDS * 1000],
            timeout=timeout * 1000,
            polling=100,
        )
    except Exception as error:
        raise AssertionError(f"the page never settled on {what}; it shows {shown_digit(page)!r}") from error


def clear(page, timeout: float = ANSWER_SECONDS, finger: Finger | None = None) -> None:
    """Press the surface's Clear once; return when the answer says 'draw a digit' and the canvas is blank."""
    press(page, "clear", finger)
    wait_for_empty(page, timeout)
    ink = canvas_ink(page)
    if ink > BLANK_INK:
        raise AssertionError(f"Clear left {ink:.1%} of the canvas inked")


def stale_answer_seen(page) -> bool:
    """Whether a digit was ever shown on a blank canvas since the page opened."""
    return page.evaluate("() => window.__strokeWatch.stale")


def image_pixels(page, selector: str) -> np.ndarray | None:
    """The image an <img> under `selector` shows, fetched and decoded as grey uint8; None without one."""
    img = page.locator(f"{selector} img")
    if not img.count():
        return None
    src = img.first.get_attribute("src") or ""
    if not src:
        return None
    if src.startswith("data:"):  # inline, as the Draw tab's preview is
        return np.asarray(Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))).convert("L"))
    response = page.request.get(src)  # gradio serves it from /gradio_api/file=..., same origin
    if not response.ok:
        raise AssertionError(f"the image {src} did not load: HTTP {response.status}")
    return np.asarray(Image.open(io.BytesIO(response.body())).convert("L"))


def fill_number(page, label, value) -> None:
    """Type a value into a number field (a slider's box too) and confirm it, as a person does."""
    field = page.get_by_label(label)
    field.fill(str(value))
    field.press("Enter")


# Points the Train tab's SVG charts (ui/charts.py) draw: the sum of data-points of their series.
_POINTS_JS = """sel => [...document.querySelectorAll(`${sel} polyline[data-points]`)]
  .reduce((n, line) => n + Number(line.dataset.points), 0)"""


def chart_points(page, selector: str) -> int:
    """How many points the chart under `selector` (#loss-chart, #accuracy-chart) draws now."""
    return page.evaluate(_POINTS_JS, selector)


def train_snapshot(page) -> dict:
    """The Train tab at one instant: its progress line and the points its loss and accuracy charts draw."""
    return page.evaluate(
        f"""() => {{
          const points = {_POINTS_JS};
          return {{progress: document.querySelector('#train-progress')?.innerText ?? '',
                   loss: points('#loss-chart'), accuracy: points('#accuracy-chart')}};
        }}"""
    )


# --- latency ------------------------------------------------------------------------------------

LATENCY_DIGITS = (1, 7)  # their one-stroke styles: one release leads to one answer; short, so quick to draw


def stroke_latency(page, digit: int) -> float:
    """Draw one single-stroke digit on a clear canvas; ms from the pen's release to the answer shown."""
    if shown_digit(page) is not None or canvas_ink(page) > BLANK_INK:
        clear(page)
    [points] = on_page(page, digit_strokes(digit, 0), digit_box(digit))  # style 0: one stroke each
    page.evaluate("() => Object.assign(window.__strokeWatch, {up: null, shown: null})")
    stroke(page, points)
    page.wait_for_function("() => window.__strokeWatch.shown !== null", timeout=ANSWER_SECONDS * 1000)
    return page.evaluate("() => window.__strokeWatch.shown - window.__strokeWatch.up")


def stroke_latencies(page, repeats: int = 5, warmup: int = 1) -> list[float]:
    """`repeats` stroke -> prediction latencies in ms, after `warmup` strokes that are not counted."""
    digits = [LATENCY_DIGITS[i % len(LATENCY_DIGITS)] for i in range(warmup + repeats)]
    figures = [stroke_latency(page, digit) for digit in digits]
    return figures[warmup:]


# The reference for the cost of drawing: a bare page with a 2D canvas of the same size that draws each
# pointer move as a round-brush line segment, the least any drawing page can do.
REFERENCE_PAGE = (ROOT / "scripts" / "reference_canvas.html").read_text()
NEXT_FRAME_JS = "() => new Promise(resolve => requestAnimationFrame(() => resolve()))"


def pointer_move_ms(page, moves: int = 40) -> list[float]:
    """ms per pointer move with the button down on #draw-canvas, until the next frame has been drawn."""
    box = page.locator("#draw-canvas").bounding_box()
    x0, y0, side = box["x"], box["y"], box["width"]
    page.mouse.move(x0 + side * 0.2, y0 + side * 0.2)
    page.mouse.down()
    figures = []
    for i in range(moves):  # a zigzag across the middle of the canvas, 12 px a move like a real pen
        x = x0 + side * 0.2 + 12 * (i % 30)
        y = y0 + side * (0.3 + 0.4 * ((i // 30) % 2)) + 6 * (i % 2)
        started = time.perf_counter()
        page.mouse.move(x, y)
        page.evaluate(NEXT_FRAME_JS)
        figures.append((time.perf_counter() - started) * 1000)
    page.mouse.up()
    return figures


def measure_pointer_moves(browser, url: str, rounds: int = 3, moves: int = 40) -> dict[str, list[float]]:
    """Pointer-move costs on the app's canvas and on REFERENCE_PAGE, interleaved, in one browser."""
    figures = {"app": [], "reference": []}
    for _ in range(rounds):
        page = open_app(browser, url)
        figures["app"] += pointer_move_ms(page, moves)
        clear(page)
        page.context.close()
        page = browser.new_context(viewport=VIEWPORT).new_page()
        page.set_content(REFERENCE_PAGE)
        figures["reference"] += pointer_move_ms(page, moves)
        page.context.close()
    return figures


def measure_stroke_latency(url: str, repeats: int = 10) -> list[float]:
    """Open the app at `url` in headless Chromium and time `repeats` strokes; ms per stroke."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
            return stroke_latencies(open_app(browser, url), repeats)
        finally:
            browser.close()


def summary(figures: list[float]) -> dict:
    """p50 / p90 / min / max of latencies in ms."""
    ordered = sorted(figures)
    p90 = statistics.quantiles(ordered, n=10, method="inclusive")[8] if len(ordered) > 1 else ordered[0]
    return {
        "p50_ms": statistics.median(ordered),
        "p90_ms": p90,
        "min_ms": ordered[0],
        "max_ms": ordered[-1],
        "count": len(ordered),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", help="a running MNIST Studio (default: start `python app.py` here)")
    parser.add_argument("--data", help="MNIST for the app this script starts (default: the app's search)")
    parser.add_argument("--repeats", type=int, default=10, help="strokes to time (default 10)")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1, got {args.repeats}")
    if args.url:
        figures = measure_stroke_latency(args.url, args.repeats)
    else:
        with tempfile.TemporaryDirectory() as folder:
            with serve_app(copy_shipped_model(Path(folder) / "models"), args.data) as url:
                figures = measure_stroke_latency(url, args.repeats)
    print("stroke end -> prediction shown (ms):", " ".join(f"{ms:.0f}" for ms in figures))
    stats = summary(figures)
    print(f"p50 {stats['p50_ms']:.0f} ms · p90 {stats['p90_ms']:.0f} ms · {stats['count']} strokes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
