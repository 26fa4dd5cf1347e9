"""MNIST Studio: draw a digit for a live MNIST model, train new models and watch them learn, browse the data.

python app.py [--host H] [--port P] [--share] [--auth USER:PASS]
              [--data PATH] [--model PATH] [--models-dir DIR]
              [--no-train] [--max-runs-per-hour N] [--max-file-size SIZE]

The password can also come from the MNIST_STUDIO_AUTH environment variable (USER:PASS), so it need not sit
in the shell history. Every event has a stable api_name; `predict` takes one image file and returns the
ten probabilities, e.g. Client(url).predict(handle_file("digit.png"), api_name="/predict").
"""

import argparse
import base64
import contextlib
import functools
import html
import io
import logging
import os
import sys
from pathlib import Path

import gradio as gr
import pandas as pd
from gradio.data_classes import FileData
from PIL import Image

from mnist_core.config import (
    LIMITS,
    PRESETS,
    BusyError,
    RunLimitError,
    TrainConfig,
    TrainingDisabledError,
)
from mnist_core.data import MnistDataError, MnistNotFoundError
from mnist_core.plots import upscale
from mnist_core.store import ModelFileError
from mnist_core.studio import ModelNotReady, Studio, describe, preset_values

ROOT = Path(__file__).resolve().parent
AUTH_ENV = "MNIST_STUDIO_AUTH"
SESSION_CAPACITY = 1000  # visitors' sessions kept in memory; the oldest are dropped beyond this
MAX_FILE_SIZE = "10mb"  # far above any photo of a digit; Gradio stops a bigger upload as it arrives
LOOPBACK = ("127.0.0.1", "::1", "localhost")
PRESET_CHOICES = [("Tutorial MLP", "mlp"), ("CNN", "cnn")]
DIGIT_CHOICES = [("any", "any")] + [(str(digit), str(digit)) for digit in range(10)]
PREVIEW_SIDE = 240  # px on screen of the 28 px image the model sees, in whole-pixel blocks (CSS)
EMPTY_ANSWER = (
    '<div class="answer empty"><div class="hint">✏️ Draw a digit</div>'
    "<div>on the canvas (or upload a photo); the model answers as you draw.</div></div>"
)
CSS = """
.answer { text-align: center; padding: 8px 0; }
.answer .digit { font-size: 96px; font-weight: 700; line-height: 1; }
.answer .hint { font-size: 28px; font-weight: 600; margin-bottom: 6px; }
.answer.empty { opacity: 0.75; }
.run-progress progress { width: 100%; height: 14px; }
.pixelated img { image-rendering: pixelated; }
.preview { margin: 0; text-align: center; }
.preview img { max-width: 100%; height: auto; }
.preview figcaption { font-size: var(--text-sm); opacity: 0.75; }
"""
# Gradio's sketchpad starts with no tool selected; pick the brush so the first drag on the canvas draws.
SELECT_BRUSH_JS = """
() => {
  const pick = () => {
    const brush = document.querySelector("#sketch button[aria-label='Brush']");
    if (brush && !brush.classList.contains("highlight")) brush.click();
    return Boolean(brush);
  };
  let tries = 0;
  const timer = setInterval(() => { if (pick() || ++tries > 50) clearInterval(timer); }, 200);
}
"""

# Gradio 6.31 empties the canvas when a handler returns None for it only the first time, and leaves no
# tool selected afterwards: press the sketchpad's own bin (DRAW_JS then sends the empty canvas), then pick
# the brush again.
CLEAR_CANVAS_JS = """
() => {
  document.querySelector("#sketch button[aria-label='Clear canvas']")?.click();
  let tries = 0;
  const timer = setInterval(() => {
    const brush = document.querySelector("#sketch button[aria-label='Brush']");
    if (brush && !brush.classList.contains("highlight")) brush.click();
    if (++tries > 10) clearInterval(timer);
  }, 200);
}
"""

CANVAS_SIDE = 560  # the sketchpad's drawing area, px
DRAWING_SIDE = 280  # the page sends the drawing at this size: as accurate as 560 px, a quarter of the work
MAX_DRAWING_CHARS = 1_000_000  # a 280 px PNG of a drawing is 3-15 kB as a data URL
DRAWING_PREFIX = "data:image/png;base64,"
# gr.Sketchpad with a change/input listener renders and uploads three canvas-sized PNGs after every stroke,
# and once an event has read it, gradio 6.31 uploads them again at every status change of any event (the
# 1 s timer: 10-20 times a second). So no event reads the sketchpad in the page: at the end of a stroke,
# an undo or redo, or the bin, this script clicks the hidden #draw-send button, whose event reads the
# drawing (window.mnistDraw.read, its js=) when it runs and sends it as one small PNG. That one event
# (always_last) carries every answer about the canvas, so answers come in the order of the drawings and
# the last drawing's answer is the one left on screen; Clear goes through it too. The pixels come from
# the sketchpad's PixiJS app (gradio 6.31 keeps it in globalThis.__PIXI_APP__), rendered the way gradio
# renders its own "composite"; tests/test_browser.py fails if a gradio upgrade takes that away.
DRAW_JS = """
() => {
  if (window.mnistDraw) return;
  const draw = window.mnistDraw = {
    blank: true,
    send() { document.querySelector("#draw-send")?.click(); },
    // What the event sends: "" for an empty canvas, else a PNG data URL; null if there is no canvas.
    read() {
      if (draw.blank) return "";
      const app = globalThis.__PIXI_APP__;
      if (!app?.canvas?.closest("#sketch")) return null;
      const scene = app.stage.children.find(child => child.sortableChildren);  // background + strokes
      const frame = new app.screen.constructor(0, 0, CANVAS_SIDE, CANVAS_SIDE);
      const resolution = DRAWING_SIDE / CANVAS_SIDE;
      const {pixels, width, height} = app.renderer.extract.pixels({target: scene, frame, resolution});
      const canvas = Object.assign(document.createElement("canvas"), {width, height});
      canvas.getContext("2d").putImageData(new ImageData(new Uint8ClampedArray(pixels), width, height), 0, 0);
      // The sketchpad redraws 500 ms more after the last pointer event; without a GPU (headless CI, some
      // laptops) each of those frames costs 0.1-0.5 s and holds up the answer. Draw the finished canvas
      // once and stop: the sketchpad starts its loop again at the next pointer event.
      app.render();
      app.ticker.stop();
      return canvas.toDataURL("image/png");
    },
  };
  // After the sketchpad's own handlers have drawn the stroke or run the command.
  const sendSoon = () => setTimeout(draw.send, 0);
  let stroke = false;
  window.addEventListener("pointerdown", event => {
    stroke = event.target instanceof HTMLCanvasElement && Boolean(event.target.closest("#sketch"));
  }, true);
  for (const type of ["pointerup", "pointercancel"]) {
    window.addEventListener(type, () => {
      if (!stroke) return;
      stroke = false;
      draw.blank = false;
      sendSoon();
    }, true);
  }
  document.addEventListener("click", event => {
    const label = event.target.closest?.("#sketch button")?.getAttribute("aria-label");
    if (label === "Clear canvas") draw.blank = true;
    else if (label === "Undo" || label === "Redo") draw.blank = false;
    else return;
    sendSoon();
  }, true);
}
""".replace("DRAWING_SIDE", str(DRAWING_SIDE)).replace("CANVAS_SIDE", str(CANVAS_SIDE))
READ_DRAWING_JS = "() => window.mnistDraw?.read() ?? null"
SEND_DRAWING_JS = "() => { window.mnistDraw?.send(); }"
# After a model change: the page sends the drawing again unless the answer shown is about the photo.
RESEND_DRAWING_JS = "(source) => { if (source !== 'photo') window.mnistDraw?.send(); }"

logger = logging.getLogger("mnist_studio")
# Replaced in main() by one built from the command line; handlers read this global at call time.
studio = Studio(ROOT / "models")


# --- errors: the one place where the core's exceptions become messages for the person ----------


def friendly_errors(fn):
    """Turn the core's exceptions into gr.Error messages, never a traceback in the page."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except Exception as error:
            raise gr.Error(
                html.escape(str(error), quote=False), title=_error_title(error), print_exception=False
            ) from None

    return wrapper


def _error_title(error: Exception) -> str:
    if isinstance(error, BusyError):
        return "A training run is in progress"
    if isinstance(error, RunLimitError):
        return "Training limit reached"
    if isinstance(error, TrainingDisabledError):
        return "Training is turned off"
    if isinstance(error, MnistNotFoundError | MnistDataError):
        return "MNIST data not available"
    if isinstance(error, ModelFileError):
        return "Model file problem"
    if isinstance(error, ModelNotReady):
        return "Model still loading"
    if isinstance(error, ValueError | FileNotFoundError):
        return "Invalid input"
    logger.exception("unexpected error", exc_info=error)
    return "Unexpected error"


# --- Draw ---------------------------------------------------------------------------------------


def _show(result) -> tuple:
    """(what the model sees, probabilities, answer) of a classify() result; None: the empty state."""
    if result is None:
        return None, None, EMPTY_ANSWER
    image, probabilities = result
    digit = int(probabilities.argmax())
    answer = (
        f'<div class="answer"><div class="digit">{digit}</div>'
        f"<div>{probabilities[digit]:.0%} sure</div></div>"
    )
    return _preview(image), {str(d): float(p) for d, p in enumerate(probabilities)}, answer


def _preview(image) -> str:
    """The 28 x 28 image the model sees as an inline PNG in HTML, drawn in whole-pixel blocks by CSS.

    An image output would cost Gradio a file written to its cache and served per answer: a third of the
    server's time for each prediction under load (scripts/loadtest.py); this PNG is about 300 bytes.
    """
    buffer = io.BytesIO()
    Image.fromarray(upscale(image, 1)).save(buffer, format="PNG")
    return (
        f'<figure class="preview"><img src="{DRAWING_PREFIX}{base64.b64encode(buffer.getvalue()).decode()}"'
        f' width="{PREVIEW_SIDE}" height="{PREVIEW_SIDE}" alt="the 28 x 28 image the model sees">'
        "<figcaption>What the model sees (28 × 28)</figcaption></figure>"
    )


@friendly_errors
def classify_sketch(sketch):
    """Classify the canvas; an empty canvas gives the 'draw a digit' state."""
    return *_show(_classify_upload(sketch)), "sketch"


def _classify_upload(value):
    """studio.classify of an uploaded file, or of a sketch whose layers are uploaded files."""
    try:
        return studio.classify(value)
    except ValueError as error:
        # The message names an upload's path in the server's cache; the person knows it by its file name.
        message = str(error)
        files = value.values() if isinstance(value, dict) else [value]
        for path in [f for item in files for f in (item if isinstance(item, list) else [item])]:
            if isinstance(path, str) and path:
                message = message.replace(path, Path(path).name)
        raise ValueError(message) from None


@friendly_errors
def predict(image_path):
    """The ten probabilities for one image file (a photo or scan of a handwritten digit)."""
    return _show(_classify_upload(image_path))[1]


@friendly_errors
def describe_photo(image_path):
    """What the model sees in an uploaded photo, and its answer."""
    preview, _, answer = _show(_classify_upload(image_path))
    return preview, answer, "photo"


def _drawing(data_url: str | None) -> Image.Image | None:
    """The PNG data URL the page sends of its canvas as an image; None for an empty canvas."""
    if not data_url:
        return None
    if not data_url.startswith(DRAWING_PREFIX) or len(data_url) > MAX_DRAWING_CHARS:
        raise ValueError(
            f"expected a PNG data URL ({DRAWING_PREFIX}...) of at most {MAX_DRAWING_CHARS:,} characters, "
            f"got {len(data_url):,} characters starting {data_url[:30]!r}"
        )
    try:
        png = base64.b64decode(data_url.removeprefix(DRAWING_PREFIX), validate=True)
    except ValueError as error:  # binascii.Error
        raise ValueError(f"the drawing is not valid base64: {error}") from None
    try:
        image = Image.open(io.BytesIO(png))
        if max(image.size) > CANVAS_SIDE:  # checked before the pixels are decoded
            raise ValueError(f"the drawing is {image.width} x {image.height} px, larger than the canvas")
        image.load()
    except OSError as error:  # not a PNG, or a truncated one
        raise ValueError(f"the drawing is not a readable PNG: {error}") from None
    return image


@friendly_errors
def classify_drawing(data_url):
    """Classify the canvas as the page sends it (DRAW_JS); an empty canvas gives the 'draw a digit' state."""
    return *_show(studio.classify(_drawing(data_url))), "sketch"


@friendly_errors
def clear_drawing():
    """Empty the photo; the page empties the canvas and sends it, which brings back 'draw a digit'."""
    return None


@friendly_errors
def select_model(name, source, sketch, photo):
    """Make the chosen model active for everyone and classify the current input again with it."""
    studio.select_model(name)
    result = _classify_upload(photo if source == "photo" else sketch)
    return studio.model_status(), *_show(result)


@friendly_errors
def activate_model(name, source, photo):
    """Make the chosen model active for everyone; classify the photo again (the page re-sends a drawing)."""
    studio.select_model(name)
    shown = _show(_classify_upload(photo)) if source == "photo" else (gr.skip(),) * 3
    return studio.model_status(), *shown


# --- Train --------------------------------------------------------------------------------------


@friendly_errors
def choose_preset(arch):
    """The preset's epochs, batch size, learning rate and training-set size."""
    values = preset_values(arch)
    return values["epochs"], values["batch_size"], values["learning_rate"], values["train_size"]


def visitor(request: gr.Request | None) -> str | None:
    """Who is asking, for the per-visitor run limit: the client's address."""
    if request is None or request.client is None:
        return None
    host = request.client.host
    forwarded = (request.headers.get("x-forwarded-for") or "").split(",")[-1].strip()
    # A share link arrives through a local tunnel, which appends the visitor's address last; the header
    # is trusted only from loopback, since any remote client could write one.
    return forwarded if forwarded and host in LOOPBACK else host


@friendly_errors
def train(arch, epochs, batch_size, learning_rate, train_size, request: gr.Request):
    """Start a training run and return at once; the timer shows its progress."""
    studio.check_training()  # before the values: a read-only demo refuses every call alike
    settings = {"epochs": epochs, "batch_size": batch_size, "learning_rate": learning_rate}
    if train_size not in (None, ""):  # optional: the preset's (full) training set otherwise
        settings["train_size"] = train_size
    config = TrainConfig.preset(arch, **settings)  # TrainConfig's ValueError names a bad value
    studio.start_run(config, visitor=visitor(request))
    return studio.status()


@friendly_errors
def stop_training():
    """Stop the running job after its current batch."""
    if studio.stop_run() is None:
        gr.Warning("No training run is in progress.")
    return studio.status()


@friendly_errors
def training_status() -> dict:
    """The latest training run: status, epoch, step, speed, latest metrics, test accuracy, saved model."""
    return studio.status()


# The block label would crowd out the legend, so the chart's own title names it.
CURVES = {"x": "epoch", "y": "value", "color": "series", "show_label": False, "height": 300}
# Light for the per-batch training curve, dark for the per-epoch validation curve; one hue per run.
PALETTE = [("#6baed6", "#08519c"), ("#fd8d3c", "#a63603"), ("#74c476", "#006d2c"), ("#9e9ac8", "#54278f")]


def _plots(compare: bool, drawn: list | None) -> tuple:
    """(loss update, accuracy update, series shown) for the charts; skipped while there are no points."""
    curves = studio.curves(compare)
    series = list(dict.fromkeys(curves["loss"]["series"]))
    if not series:
        # Never an empty or None value once lines were drawn: the chart would not draw again.
        return gr.skip(), gr.skip(), drawn
    runs = studio.runs if compare else studio.runs[-1:]
    colors = {}
    for index, run in enumerate(runs):
        light, dark = PALETTE[index % len(PALETTE)]
        prefix = f"run {run.number} " if compare else ""
        colors.update({f"{prefix}train": light, f"{prefix}validation": dark})
    # A native plot fixes its colour domain when it is built, and a rebuild set off by a prop that
    # changes together with the data still sees the old data (gradio 6.31). So the colour map, whose
    # change rebuilds the chart, follows the series one update late: by then the data holds them all.
    color_map = {name: colors[name] for name in drawn or series if name in colors}
    x_lim = [0, max(run.config.epochs for run in runs)]
    updates = (
        gr.LinePlot(pd.DataFrame(curves[metric]), color_map=color_map, x_lim=x_lim)
        for metric in ("loss", "accuracy")
    )
    return *updates, series


def _progress_html(status: dict) -> str:
    """The run's headline, a progress bar and its latest metrics."""
    run, where, metrics = (html.escape(part, quote=False) for part in describe(status))
    bar = f'<progress value="{status.get("progress", 0.0):.4f}" max="1"></progress>' if status["run"] else ""
    return f'<div class="run-progress"><div><b>{run}</b>: {where}</div>{bar}<div>{metrics}</div></div>'


def _results() -> tuple:
    """Results text, confusion matrix, mistakes gallery of the latest run and whether to show the images."""
    run = studio.latest_run()
    if run is None or run.active:
        return "", None, [], gr.Row(visible=False)
    shown = run.confusion_image is not None
    return f"### {run.headline}\n{run.message}", run.confusion_image, run.mistakes, gr.Row(visible=shown)


@friendly_errors
def poll(seen, compare):
    """Refresh the Train tab and the model picker from the server's state; unchanged parts are skipped."""
    studio.start_loading()  # a no-op after main(); needed under `gradio app.py`, which skips main()
    seen = dict(seen or {})
    keys = {
        "model": (studio.model_version, studio.loading, studio.model_error),
        "data": studio.data_status(),
        "run": (studio.version(), compare),
        "result": (len(studio.runs), studio.latest_run() and studio.latest_run().phase),
    }
    changed = {group: seen.get(group) != key for group, key in keys.items()}
    skip = gr.skip()
    model_part = [skip, skip]
    if changed["model"]:
        name = studio.model_name
        model_part = [studio.model_status(), gr.Dropdown(choices=studio.model_choices(), value=name)]
    data_part = [skip]
    if changed["data"]:
        available, message = keys["data"]
        data_part = [message if available else f"**MNIST is needed to train.** {message}"]
    status = studio.status()
    run_part = [skip] * 6
    if changed["run"]:
        loss, accuracy, keys["series"] = _plots(compare, seen.get("series"))
        if keys["series"] != seen.get("series"):
            keys["run"] = None  # one more update on the next tick, which rebuilds the charts
        run_part = [
            _progress_html(status),
            loss,
            accuracy,
            pd.DataFrame(studio.epoch_table()),
            pd.DataFrame(studio.history_table()),
            status,
        ]
    result_part = list(_results()) if changed["result"] else [skip] * 4
    return *model_part, *data_part, *run_part, *result_part, {**seen, **keys}


# --- Dataset ------------------------------------------------------------------------------------


@friendly_errors
def show_samples(split, digit, count):
    """Random labelled samples of a split, optionally of one digit."""
    return studio.samples(split, None if digit in (None, "any") else int(digit), int(count))


@friendly_errors
def dataset_overview(split):
    """Where the data comes from, its class counts and the mean image of each digit."""
    try:
        counts, means = studio.overview(split)
    except (MnistNotFoundError, MnistDataError) as error:
        # Not an error for the page: the tab explains how to provide MNIST instead.
        return f"**MNIST is not available.** {html.escape(str(error), quote=False)}", None, None
    counts_frame = pd.DataFrame({"digit": [str(d) for d in range(10)], "images": [int(c) for c in counts]})
    return studio.data_status()[1], counts_frame, means


# --- layout -------------------------------------------------------------------------------------


def unread_uploads(image: gr.Image) -> gr.Image:
    """Make a filepath gr.Image hand over uploads unread, so that mnist_core opens them within its limits."""
    # gr.Image would decode the whole file first (a 10000 x 10000 PNG takes seconds and gigabytes) and
    # answer a file that is no image with a bare "Error". Gradio has checked that the path is one of its
    # uploads before this runs; to_mnist refuses what is not an image or is too large, with a clear
    # message. (Set on the instance: a subclass of a Gradio component makes Gradio write an app.pyi.)
    decode = image.preprocess

    def preprocess(payload):
        if payload is None or payload.path is not None:
            return None if payload is None else payload.path
        try:  # a data: URL, which only an API call sends
            return decode(payload)
        except Exception as error:
            raise gr.Error(f"could not read the image: {error}", title="Invalid input") from None

    image.preprocess = preprocess
    return image


def unread_sketch_files(sketch: gr.Sketchpad) -> gr.Sketchpad:
    """Make a gr.Sketchpad hand over uploaded layer files unread, and keep no images posted to it.

    Only API clients send it files (the page never reads the sketchpad: DRAW_JS); gradio would decode
    each one whole first, up to PIL's 179-megapixel limit. mnist_core opens a file path within its own.
    Its accept_blobs server function, which the page would use to send the canvas, keeps every image
    posted to it in memory until an event reads the sketch: anyone could fill the server's memory
    through it, and nothing here needs it, so it is removed (a call gets 404 "Function not found").
    """
    convert = sketch.convert_and_format_image

    def hand_over(file, flatten_on_white=False):
        return file.path if isinstance(file, FileData) else convert(file, flatten_on_white)

    sketch.convert_and_format_image = hand_over
    sketch.accept_blobs = None
    return sketch


# Every upload and every image shown stays in Gradio's cache folder (the load test: 224 files in 30 s);
# files older than an hour go, checked every 10 minutes, and all of them at a restart.
with gr.Blocks(title="MNIST Studio", analytics_enabled=False, delete_cache=(600, 3600)) as demo:
    gr.Markdown(
        "# MNIST Studio\nDraw a digit and watch a neural network read it; train your own network and "
        "see it learn; browse the 70,000 handwritten digits of MNIST."
    )
    with gr.Tabs():
        with gr.Tab("Draw", id="draw"):
            model_status = gr.Markdown("Loading the model…", label="Model status")
            with gr.Row():
                with gr.Column(scale=3):
                    with gr.Tabs():
                        with gr.Tab("Sketch"):
                            sketch = gr.Sketchpad(
                                label="Draw one digit, large, in the middle",
                                elem_id="sketch",
                                canvas_size=(CANVAS_SIDE, CANVAS_SIDE),
                                height=560,
                                # MNIST strokes are about 1/8 of the digit's height; this brush gives that.
                                brush=gr.Brush(default_size=22, colors=["#000000"], color_mode="fixed"),
                                layers=False,
                                transforms=(),
                                type="numpy",
                            )
                            unread_sketch_files(sketch)
                            with gr.Row():
                                predict_button = gr.Button("Predict", variant="primary")
                                clear_button = gr.Button("Clear")
                            # Clicked by DRAW_JS; its event's js= puts the drawing in `drawing`.
                            draw_send = gr.Button("Send the drawing", elem_id="draw-send", visible="hidden")
                            drawing = gr.Textbox(visible=False)
                        with gr.Tab("Photo"):
                            photo = unread_uploads(
                                gr.Image(
                                    label="A photo or image of one handwritten digit",
                                    elem_id="photo",
                                    type="filepath",
                                    sources=["upload", "clipboard", "webcam"],
                                    height=400,
                                )
                            )
                    model_picker = gr.Dropdown(label="Model", choices=[], interactive=True)
                with gr.Column(scale=2):
                    with gr.Row(equal_height=True):
                        answer = gr.HTML(EMPTY_ANSWER, label="Answer", elem_id="answer")
                        model_view = gr.HTML(
                            elem_id="model-view",
                            elem_classes="pixelated",
                            min_height=PREVIEW_SIDE,
                        )
                    probabilities = gr.Label(label="Probabilities", num_top_classes=10, show_heading=False)
            source = gr.State("sketch")

        with gr.Tab("Train", id="train") as train_tab:
            train_data_status = gr.Markdown(label="Data status")
            with gr.Row():
                with gr.Column(scale=1, min_width=280):
                    preset = gr.Radio(PRESET_CHOICES, value="mlp", label="Preset")
                    mlp = PRESETS["mlp"]
                    epochs = gr.Slider(*LIMITS["epochs"], value=mlp.epochs, step=1, label="Epochs")
                    batch_size = gr.Number(
                        mlp.batch_size,
                        label=f"Batch size ({LIMITS['batch_size'][0]}-{LIMITS['batch_size'][1]})",
                        precision=0,
                    )
                    learning_rate = gr.Number(mlp.learning_rate, label="Learning rate (0-1]")
                    train_size = gr.Slider(
                        *LIMITS["train_size"],
                        value=mlp.train_size,
                        step=100,
                        label="Training images (a random subset; 60,000 = all)",
                    )
                    with gr.Row():
                        train_button = gr.Button("Train", variant="primary")
                        stop_button = gr.Button("Stop", variant="stop")
                with gr.Column(scale=3):
                    progress = gr.HTML(
                        _progress_html({"run": None}), label="Progress", elem_id="train-progress"
                    )
                    with gr.Row():
                        loss_plot = gr.LinePlot(
                            title="Loss", label="Loss", y_title="loss", elem_id="loss-plot", **CURVES
                        )
                        accuracy_plot = gr.LinePlot(
                            title="Accuracy",
                            label="Accuracy",
                            y_title="accuracy",
                            y_lim=[0, 1],
                            elem_id="accuracy-plot",
                            **CURVES,
                        )
                    compare = gr.Checkbox(label="Overlay the curves of earlier runs in this session")
                    epoch_table = gr.Dataframe(
                        headers=list(studio.epoch_table()), label="Per epoch", interactive=False
                    )
            results = gr.Markdown(label="Results", elem_id="train-results")
            with gr.Row(visible=False) as result_images:
                confusion = gr.Image(
                    label="Confusion matrix (rows: true digit)",
                    format="png",
                    interactive=False,
                    elem_id="confusion",
                )
                mistakes = gr.Gallery(
                    label="Misclassified test digits: true → predicted (confidence)",
                    columns=6,
                    format="png",
                    height=520,
                    elem_classes="pixelated",
                )
            history = gr.Dataframe(
                headers=list(studio.history_table()), label="Runs in this session", interactive=False
            )
            with gr.Accordion("Run status (JSON, as the API returns it)", open=False):
                status_json = gr.JSON(label="Run status")
            seen = gr.State({})

        with gr.Tab("Dataset", id="dataset"):
            dataset_status = gr.Markdown(label="Data status")
            with gr.Row():
                split = gr.Radio(
                    [("Training set", "train"), ("Test set", "test")], value="train", label="Split"
                )
                digit = gr.Dropdown(DIGIT_CHOICES, value="any", label="Digit")
                count = gr.Slider(1, 200, value=32, step=1, label="How many")
                show_button = gr.Button("Show samples", variant="primary")
            samples = gr.Gallery(
                label="Random samples (caption: label)",
                elem_id="samples",
                columns=8,
                format="png",
                height=480,
                elem_classes="pixelated",
            )
            with gr.Row():
                counts_plot = gr.BarPlot(
                    x="digit", y="images", title="Images per digit", y_lim=[0, None], height=300
                )
                means = gr.Gallery(
                    label="Mean image of each digit",
                    columns=5,
                    height=300,
                    format="png",
                    elem_classes="pixelated",
                )

    # Outside the tabs: gradio runs no timer in a tab that was never opened, and a visitor who stays on
    # Draw must still see the active model change.
    timer = gr.Timer(1.0)

    # --- wiring: predictions never wait behind training or each other -------------------------
    draw_outputs = [model_view, probabilities, answer, source]
    fast = {"concurrency_limit": None, "concurrency_id": "predict", "show_progress": "hidden"}
    demo.load(None, js=DRAW_JS)
    # Every answer about the canvas comes from this one event (see DRAW_JS); queue=False: one request.
    draw_send.click(
        classify_drawing,
        drawing,
        draw_outputs,
        js=READ_DRAWING_JS,
        trigger_mode="always_last",
        queue=False,
        api_name="classify_drawing",
        api_visibility="private",
        **fast,
    )
    predict_button.click(None, js=SEND_DRAWING_JS)
    # The canvas is emptied in the browser (CLEAR_CANVAS_JS); setting it from here would drop the brush.
    clear_button.click(clear_drawing, None, photo, api_name="clear", js=CLEAR_CANVAS_JS, **fast)
    # For API clients, which send a sketch dict; the page itself never reads the sketchpad (DRAW_JS).
    gr.on([], classify_sketch, sketch, draw_outputs, api_name="predict_sketch", **fast)
    photo.change(predict, photo, probabilities, api_name="predict", **fast)
    photo.change(describe_photo, photo, [model_view, answer, source], api_name="predict_photo", **fast)
    model = {"concurrency_limit": 1, "concurrency_id": "model"}
    model_picker.input(
        activate_model,
        [model_picker, source, photo],
        [model_status, *draw_outputs[:3]],
        api_name="activate_model",
        api_visibility="private",
        **model,
    ).success(None, source, js=RESEND_DRAWING_JS)
    gr.on(
        [],
        select_model,
        [model_picker, source, sketch, photo],
        [model_status, *draw_outputs[:3]],
        api_name="select_model",
        **model,
    )

    preset.change(
        choose_preset,
        preset,
        [epochs, batch_size, learning_rate, train_size],
        api_name="preset",
        show_progress="hidden",
    )
    # preprocess=False: raw values reach TrainConfig, whose ValueError names a bad one precisely.
    train_button.click(
        train,
        [preset, epochs, batch_size, learning_rate, train_size],
        status_json,
        api_name="train",
        preprocess=False,
        concurrency_limit=1,
        concurrency_id="train",
    )
    stop_button.click(stop_training, None, status_json, api_name="stop", concurrency_limit=None)
    gr.api(training_status, api_name="training_status", concurrency_limit=None, concurrency_id="poll")
    poll_outputs = [model_status, model_picker, train_data_status, progress, loss_plot, accuracy_plot]
    poll_outputs += [epoch_table, history, status_json, results, confusion, mistakes, result_images, seen]
    gr.on(
        [demo.load, timer.tick, compare.change],
        poll,
        [seen, compare],
        poll_outputs,
        api_name="poll",
        show_progress="hidden",
        concurrency_limit=None,
        concurrency_id="poll",
    )

    dataset = {"concurrency_limit": 2, "concurrency_id": "dataset"}
    show_button.click(show_samples, [split, digit, count], samples, api_name="samples", **dataset)
    gr.on(
        [demo.load, split.change],
        dataset_overview,
        split,
        [dataset_status, counts_plot, means],
        api_name="dataset_overview",
        **dataset,
    )


# --- command line -------------------------------------------------------------------------------


def parse_auth(value: str | None) -> tuple[str, str] | None:
    """USER:PASS -> (user, password); None when no protection is asked for."""
    if not value:
        return None
    user, colon, password = value.partition(":")
    if not colon or not user or not password:
        raise ValueError(f"--auth / {AUTH_ENV} expects USER:PASS with both parts non-empty")
    return user, password


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--host", help="address to listen on (default 127.0.0.1; 0.0.0.0 for the network)")
    parser.add_argument("--port", type=int, help="port (default 7860, or the next free one)")
    parser.add_argument("--share", action="store_true", help="also create a temporary public link")
    parser.add_argument("--auth", metavar="USER:PASS", help=f"ask for this login (or set {AUTH_ENV})")
    parser.add_argument(
        "--data", help="MNIST folder or .npz (default: MNIST_DATA, data/, Keras cache, download)"
    )
    parser.add_argument("--model", type=Path, help="model to start with (default: MODELS_DIR/default.keras)")
    parser.add_argument(
        "--models-dir", type=Path, default=ROOT / "models", help="where models are listed and saved"
    )
    public = parser.add_argument_group("public demo (with --share)")
    public.add_argument(
        "--no-train", action="store_true", help="read-only demo: no Train tab, the training API refuses"
    )
    public.add_argument(
        "--max-runs-per-hour",
        type=positive_int,
        metavar="N",
        help="training runs each visitor (client address) may start per hour (default: no limit)",
    )
    public.add_argument(
        "--max-file-size",
        type=file_size,
        default=file_size(MAX_FILE_SIZE),
        metavar="SIZE",
        help=f"largest upload, e.g. 500kb or 10mb (default {MAX_FILE_SIZE}); bigger ones are refused",
    )
    return parser


SIZE_UNITS = {"b": 1, "kb": 1024, "mb": 1024**2, "gb": 1024**3}  # as Gradio counts them


def file_size(value: str) -> int:
    """argparse type: "500kb", "10mb", "2048" (bytes) -> bytes."""
    text = value.strip().lower()
    number = text.rstrip("kmgb")
    unit = text[len(number) :] or "b"
    if not number.isdigit() or int(number) < 1 or unit not in SIZE_UNITS:
        raise argparse.ArgumentTypeError(
            f"expected a size such as 500kb or 10mb (units: {', '.join(SIZE_UNITS)}), received {value!r}"
        )
    return int(number) * SIZE_UNITS[unit]


def positive_int(value: str) -> int:
    """argparse type: a whole number >= 1."""
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, received {value!r}")
    return int(value)


def _share_failure(gradio_output: str) -> str:
    """Why Gradio could not create the share link, in a few words, from what it printed."""
    if "Missing file" in gradio_output:
        return "Gradio's tunnel program (frpc) is missing and could not be downloaded"
    if "Checksum mismatch" in gradio_output:
        return "Gradio's tunnel program (frpc) failed its checksum"
    return "the Gradio share server could not be reached"


def main(argv: list[str] | None = None) -> int:
    global studio
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        auth = parse_auth(args.auth or os.environ.get(AUTH_ENV))
    except ValueError as error:
        parser.error(str(error))
    if args.model is not None and not args.model.is_file():
        parser.error(f"--model {args.model}: no such file")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    studio = Studio(
        args.models_dir,
        data_path=args.data,
        model_path=args.model,
        training=not args.no_train,
        max_runs_per_hour=args.max_runs_per_hour,
    )
    train_tab.visible = not args.no_train  # launch() builds the page's config after this line
    # Gradio rebuilds a pandas summary of its last 10,000 events after every event, which this app never
    # shows: 8.6 ms per event once the window is full, ~40% of a prediction's cost (scripts/loadtest.py).
    os.environ.setdefault("GRADIO_ANALYTICS_MAX_EVENTS", "1000")
    os.environ.setdefault("GRADIO_ANALYTICS_CACHE_FREQUENCY", "1000")
    demo.queue(default_concurrency_limit=1)
    printed = io.StringIO()
    try:
        # Gradio prints a multi-line notice when the share link fails; we say it in one line below.
        with contextlib.redirect_stdout(printed):
            demo.launch(
                server_name=args.host,
                server_port=args.port,
                share=args.share,
                auth=auth,
                max_file_size=args.max_file_size,
                # Each API caller without a session gets a new one (~140 KB each); 10,000 kept by default.
                state_session_capacity=SESSION_CAPACITY,
                quiet=True,
                prevent_thread_lock=True,
                css=CSS,
                js=SELECT_BRUSH_JS,
                footer_links=["api", "gradio"],
            )
    except OSError as error:
        print(f"error: could not start the server: {error}", file=sys.stderr)
        return 2
    # Only now: TensorFlow's import, started earlier, would compete with the launch for both cores.
    studio.start_loading()  # TensorFlow and the model load while the page already answers
    print(f"MNIST Studio is running on {demo.local_url}", flush=True)
    if auth:
        print(f"login required: user {auth[0]!r}", flush=True)
    if args.share and demo.share_url:
        print(f"Public link: {demo.share_url}", flush=True)
    elif args.share:
        print(
            f"Share link could not be created: {_share_failure(printed.getvalue())} (no internet access?); "
            f"the app keeps serving locally on {demo.local_url}",
            flush=True,
        )
    with contextlib.suppress(KeyboardInterrupt):
        demo.block_thread()
    return 0


if __name__ == "__main__":
    sys.exit(main())
