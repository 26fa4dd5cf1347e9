"""Drive MNIST Studio in headless Chromium the way a person does; measure stroke -> prediction latency.

python scripts/browser.py --url http://127.0.0.1:7860/ [--repeats 10]
python scripts/browser.py                 # starts `python app.py` on a free port with a copy of the model

Playwright drives Debian's /usr/bin/chromium (it cannot download browsers of its own here). The same code
serves tests/test_browser.py and the browser section of scripts/benchmark.py.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import io
import math
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mnist_core.drawn import HANDMADE_ASPECT, digit_strokes, place_strokes  # noqa: E402

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# A laptop-sized window; a wider one makes the sketchpad's canvas, and every drawing move, dearer.
VIEWPORT = {"width": 1024, "height": 768}
SHIPPED_MODEL = ROOT / "models" / "default.keras"
START_SECONDS = 120  # gradio import plus a busy 2-core machine
ANSWER_SECONDS = 60  # the first answer may wait for TensorFlow and the model to load
# An answer counts once the panel has not changed for this long: the next prediction, if one is on its
# way, lands within it (a prediction takes ~1 s here, up to ~2.5 s with the machine busy).
SETTLE_SECONDS = 2.5
# About one mouse event per this many page pixels of a stroke (the brush is ~20 px wide on the page).
# Every move with the button down makes the sketchpad re-render its WebGL canvas in software: 0.1-0.5 s
# a move on a busy 2-core machine, so a denser path only makes the tests slower, not the digit better.
MOVE_PX = 32
BLANK_INK = 0.003  # dark fraction of an empty drawing area (its "select the draw tool" hint included)

Stroke = list[tuple[float, float]]
BRUSH = "#sketch button[aria-label='Brush']"

# Which of mnist_core.drawn's hand-made styles a person draws here; all are several strokes or split below.
STYLES = {1: 2, 7: 1}  # a 1 with a flag and a base, a 7 with a crossbar


# --- the app in a subprocess --------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def copy_shipped_model(folder: Path) -> Path:
    """A models folder holding a copy of the shipped model, so runs never write into the repository."""
    if not SHIPPED_MODEL.is_file():
        raise FileNotFoundError(f"{SHIPPED_MODEL} is missing: python scripts/train.py --arch cnn makes it")
    folder.mkdir(parents=True, exist_ok=True)
    for suffix in (".keras", ".json"):
        shutil.copy(SHIPPED_MODEL.with_suffix(suffix), folder)
    return folder


@contextlib.contextmanager
def serve_app(models_dir: Path, data: str | Path | None = None, args: tuple = ()) -> Iterator[str]:
    """`python app.py` on 127.0.0.1 and a free port; yields its URL, stops it on exit."""
    port = free_port()
    command = [sys.executable, str(ROOT / "app.py"), "--host", "127.0.0.1", "--port", str(port)]
    command += ["--models-dir", str(models_dir), *(["--data", str(data)] if data else []), *args]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    printed: list[str] = []
    threading.Thread(target=lambda: printed.extend(process.stdout), daemon=True).start()  # never blocks
    try:
        deadline = time.monotonic() + START_SECONDS
        while not any("MNIST Studio is running on" in line for line in printed):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the app did not start: {' '.join(command)}\n{''.join(printed)[-3000:]}")
            time.sleep(0.2)
        yield f"http://127.0.0.1:{port}/"
    finally:
        stop_process(process)


def stop_process(process: subprocess.Popen, timeout: float = 20) -> None:
    """Terminate `process`; kill it if it has not ended after `timeout` seconds."""
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


# --- the browser --------------------------------------------------------------------------------


def launch_chromium(playwright, headless: bool = True):
    """Debian's Chromium through Playwright, with the flags CI needs."""
    return playwright.chromium.launch(executable_path=CHROMIUM, headless=headless, args=CHROMIUM_ARGS)


# Page-side clock (performance.now()): when the pen last left the canvas (pointerup), when a digit next
# appeared in the answer panel, and when the answer or the 28x28 preview last changed at all, so a wait
# can tell a settled answer from one with a prediction still on its way.
WATCH_JS = """
() => {
  const watch = window.__strokeWatch = {up: null, shown: null, changed: performance.now()};
  window.addEventListener('pointerup', event => {
    if (!(event.target instanceof HTMLCanvasElement && event.target.closest('#sketch'))) return;
    watch.up = performance.now();
    watch.shown = null;
  }, true);
  const answer = document.querySelector('#answer');
  const observer = new MutationObserver(() => {
    watch.changed = performance.now();
    if (watch.up !== null && watch.shown === null && answer.querySelector('.digit')) {
      watch.shown = watch.changed;
    }
  });
  for (const element of [answer, document.querySelector('#model-view')]) {
    observer.observe(element, {subtree: true, childList: true, characterData: true, attributes: true});
  }
}
"""


def open_app(browser, url: str):
    """A fresh page (own context: own session) on the app, the Draw tab's sketchpad on screen."""
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    page.goto(url)
    page.locator("#sketch canvas").first.wait_for(timeout=START_SECONDS * 1000)
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
    """Where the sketchpad's drawing area lies on the page: its top-left corner and page px per canvas px.

    Gradio draws the canvas_size image centred in the canvas element at the zoom its toolbar shows.
    """
    box = page.locator("#sketch canvas").first.bounding_box()
    canvas_size = page.evaluate(
        """() => window.gradio_config.components
                 .find(c => c.props && c.props.elem_id === 'sketch').props.canvas_size"""
    )
    zoom = float(page.locator("#sketch .zoom-number span").inner_text().strip().rstrip("%")) / 100
    width, height = canvas_size[0] * zoom, canvas_size[1] * zoom
    return {
        "x": box["x"] + (box["width"] - width) / 2,
        "y": box["y"] + (box["height"] - height) / 2,
        "width": width,
        "height": height,
        "scale": zoom,
        "canvas_size": tuple(canvas_size),
    }


def brush_selected(page) -> bool:
    """Whether the sketchpad's Brush tool is the one picked (its button highlighted)."""
    return "highlight" in (page.locator(BRUSH).get_attribute("class") or "").split()


def select_brush(page) -> None:
    """Pick the Brush tool, as a person does when the sketchpad says "select the draw tool to start"."""
    if not brush_selected(page):
        page.locator(BRUSH).click()
        page.wait_for_function(
            "sel => document.querySelector(sel).classList.contains('highlight')", arg=BRUSH, timeout=10_000
        )


def stroke(page, points: Stroke) -> None:
    """One pen stroke in page coordinates: press, small moves along the path (~MOVE_PX apart), release."""
    x, y = points[0]
    page.mouse.move(x, y)  # the pen goes to the start in one move: hovering draws nothing
    page.mouse.down()
    for i, (nx, ny) in enumerate(points[1:], 2):
        distance = math.hypot(nx - x, ny - y)
        if distance < MOVE_PX and i < len(points):
            continue  # a dense curve: the next point is close, go straight there
        page.mouse.move(nx, ny, steps=max(1, round(distance / MOVE_PX)))
        x, y = nx, ny
    page.mouse.up()


def on_page(page, strokes: list[Stroke], box) -> list[Stroke]:
    """Unit-box strokes placed in `box` (fractions of the drawing area), in page coordinates."""
    surface = drawing_surface(page)
    placed = place_strokes(strokes, surface["canvas_size"], box)
    scale = surface["scale"]
    return [[(surface["x"] + x * scale, surface["y"] + y * scale) for x, y in s] for s in placed]


def draw_digit(page, digit: int, box=None) -> None:
    """Draw `digit` on the sketchpad with the mouse, stroke after stroke, as a person would."""
    select_brush(page)
    for points in on_page(page, person_digit(digit), box or digit_box(digit)):
        stroke(page, points)


def canvas_ink(page) -> float:
    """Fraction of the drawing area that is dark, from a screenshot: what a person sees on the canvas."""
    s = drawing_surface(page)
    clip = {"x": s["x"] + 4, "y": s["y"] + 4, "width": s["width"] - 8, "height": s["height"] - 8}
    pixels = np.asarray(Image.open(io.BytesIO(page.screenshot(clip=clip))).convert("L"))
    return float((pixels < 128).mean())


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


def wait_for_empty(page, timeout: float = ANSWER_SECONDS) -> None:
    """Wait until the answer panel says 'draw a digit' and has settled."""
    empty = "() => Boolean(document.querySelector('#answer .empty'))"
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


def clear(page, timeout: float = ANSWER_SECONDS) -> None:
    """Press the app's Clear once; return when the answer says 'draw a digit' and the canvas is blank."""
    page.get_by_role("button", name="Clear", exact=True).click()
    _wait_blank(page, "Clear", timeout)


# Whether a digit was shown after the answer last said 'draw a digit': an answer for an older drawing.
WATCH_STALE_JS = """
() => {
  const answer = document.querySelector('#answer');
  const watch = window.__staleWatch = {empty: false, stale: false};
  new MutationObserver(() => {
    if (answer.querySelector('.empty')) watch.empty = true;
    else if (watch.empty && answer.querySelector('.digit')) watch.stale = true;
  }).observe(answer, {subtree: true, childList: true, characterData: true});
}
"""


def erase(page, timeout: float = ANSWER_SECONDS) -> None:
    """Empty the canvas with the sketchpad's own 'Clear canvas' button (the bin in its toolbar)."""
    page.locator("#sketch button[aria-label='Clear canvas']").click()
    _wait_blank(page, "the sketchpad's Clear canvas", timeout)


def _wait_blank(page, what: str, timeout: float) -> None:
    wait_for_empty(page, timeout)
    # The answer may have been empty already; the canvas shows when the clearing has come through.
    deadline = time.monotonic() + timeout
    while (ink := canvas_ink(page)) > BLANK_INK:
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} left {ink:.1%} of the canvas inked")
        page.wait_for_timeout(100)


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


# Points a Vega line chart draws: the M/L commands of its SVG line paths (gr.LinePlot renders SVG).
_POINTS_JS = """sel => [...document.querySelectorAll(`${sel} path[aria-roledescription="line mark"]`)]
  .reduce((n, p) => n + ((p.getAttribute('d') || '').match(/[ML]/g) || []).length, 0)"""


def chart_points(page, selector: str) -> int:
    """How many points the line chart under `selector` draws now."""
    return page.evaluate(_POINTS_JS, selector)


def train_snapshot(page) -> dict:
    """The Train tab at one instant: its progress line and the points its loss and accuracy charts draw."""
    return page.evaluate(
        f"""() => {{
          const points = {_POINTS_JS};
          return {{progress: document.querySelector('#train-progress')?.innerText ?? '',
                   loss: points('#loss-plot'), accuracy: points('#accuracy-plot')}};
        }}"""
    )


# --- latency ------------------------------------------------------------------------------------

LATENCY_DIGITS = (1, 7)  # their one-stroke styles: one release leads to one answer; short, so quick to draw


def stroke_latency(page, digit: int) -> float:
    """Draw one single-stroke digit on a clear canvas; ms from the pen's release to the answer shown."""
    if shown_digit(page) is not None or canvas_ink(page) > BLANK_INK:
        # The sketchpad's own bin, not the app's Clear, whose script picks the brush again a moment later.
        erase(page)
    select_brush(page)
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
