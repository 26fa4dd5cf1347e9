"""The Train tab: presets and settings, Train and Stop, live curves, results; its part of the page's poll."""

from __future__ import annotations

import base64
import html
import io

import gradio as gr
import pandas as pd
from PIL import Image

from mnist_core import run_tables
from mnist_core.config import LIMITS, PRESETS, TrainConfig
from mnist_core.studio import preset_values

from .charts import line_chart
from .draw import png_base64
from .errors import friendly_errors

PRESET_CHOICES = [("Tutorial MLP", "mlp"), ("CNN", "cnn")]
LOOPBACK = ("127.0.0.1", "::1", "localhost")


def duration(seconds: float | None) -> str:
    """Seconds as "42 s" or "3 min 05 s"."""
    seconds = max(0, round(seconds or 0))
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


def describe(status: dict) -> tuple[str, str, str]:
    """A run status (run_tables.status) in words: (which run, where it is, its latest metrics)."""
    if status["run"] is None:
        return "No run yet", "choose a preset and press Train.", ""
    phase = status["status"]
    if phase == "running" and "step" not in status:
        where = "starting: preparing the data and building the model…"
    elif phase == "running":
        eta = status.get("eta_seconds")
        left = "estimating the time left" if eta is None else f"about {duration(eta)} left"
        where = (
            f"epoch {status['epoch']} of {status['epochs']} · step {status['step']:,} of {status['steps']:,}"
            f" · {status['samples_per_second']:,.0f} samples/s · {left}"
        )
    elif phase == "stopping":
        where = "stopping: ending the current batch and scoring the partial model…"
    elif phase == "saving":
        where = "training done: evaluating and saving the model…"
    elif phase == "finished":
        where = f"finished in {duration(status.get('elapsed'))}: test accuracy {status['test_accuracy']:.2%}"
    else:
        where = status["message"]
    metrics = []
    if "loss" in status:
        metrics.append(f"loss {status['loss']:.4f} · accuracy {status['accuracy']:.2%}")
    if "val_accuracy" in status:
        metrics.append(f"validation loss {status['val_loss']:.4f} · accuracy {status['val_accuracy']:.2%}")
    return f"Run {status['run']} · {status['config']['arch'].upper()}", where, " — ".join(metrics)


def headline(run) -> str:
    """One line on how a run ended (or that it has not)."""
    if run.phase == "finished":
        return f"Run {run.number}: test accuracy {run.test_accuracy:.2%}"
    if run.phase == "stopped" and run.test_accuracy is not None:
        return f"Run {run.number} stopped (test accuracy so far {run.test_accuracy:.2%})"
    return f"Run {run.number} {run.phase}"


def progress_html(status: dict) -> str:
    """The run's headline, a progress bar and its latest metrics."""
    run, where, metrics = (html.escape(part, quote=False) for part in describe(status))
    bar = f'<progress value="{status.get("progress", 0.0):.4f}" max="1"></progress>' if status["run"] else ""
    return f'<div class="run-progress"><div><b>{run}</b>: {where}</div>{bar}<div>{metrics}</div></div>'


def curves_html(runs: list, compare: bool) -> str:
    """The loss and accuracy charts of the latest run (all runs when `compare`), as inline SVG."""
    chosen = runs if compare else runs[-1:]
    columns = run_tables.curves(runs, compare)
    x_max = max((run.config.epochs for run in chosen), default=1)
    loss = line_chart(columns["loss"], "Loss", "loss", x_max, chart_id="loss-chart")
    accuracy = line_chart(columns["accuracy"], "Accuracy", "accuracy", x_max, (0, 1), "accuracy-chart")
    return f'<div class="curves"><div>{loss}</div><div>{accuracy}</div></div>'


def confusion_html(image) -> str:
    """The confusion matrix figure as an inline PNG that scales with its column, never cropped."""
    if image is None:
        return ""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG", optimize=True)
    data = base64.b64encode(buffer.getvalue()).decode()
    return (
        '<figure class="confusion"><figcaption>Confusion matrix (rows: true digit)</figcaption>'
        f'<img src="data:image/png;base64,{data}" alt="confusion matrix of the test set"></figure>'
    )


def mistakes_html(mistakes: list) -> str:
    """The misclassified test digits as a wrapping grid of inline 28 px PNGs with their captions.

    A grid that wraps fits any window: a gallery of fixed columns and height clips at 1280 px.
    """
    if not mistakes:
        return ""
    items = "".join(
        f'<figure><img src="data:image/png;base64,{png_base64(image)}" width="84" height="84" '
        f'alt="{html.escape(caption)}"><figcaption>{html.escape(caption)}</figcaption></figure>'
        for image, caption in mistakes
    )
    return (
        '<div class="mistakes"><div class="label">Misclassified test digits: true → predicted '
        f"(confidence), {len(mistakes)} shown</div><div class=\"grid pixelated\">{items}</div></div>"
    )


def visitor(request: gr.Request | None) -> str | None:
    """Who is asking, for the per-visitor run limit: the client's address."""
    if request is None or request.client is None:
        return None
    host = request.client.host
    forwarded = (request.headers.get("x-forwarded-for") or "").split(",")[-1].strip()
    # A share link arrives through a local tunnel, which appends the visitor's address last; the header
    # is trusted only from loopback, since any remote client could write one.
    return forwarded if forwarded and host in LOOPBACK else host


class TrainTab:
    """The Train tab's handlers, its layout and its part of the page's poll."""

    def __init__(self, studio):
        self.studio = studio

    # --- handlers -------------------------------------------------------------------------------

    @friendly_errors
    def choose_preset(self, arch):
        """The preset's epochs, batch size, learning rate and training-set size."""
        values = preset_values(arch)
        return values["epochs"], values["batch_size"], values["learning_rate"], values["train_size"]

    @friendly_errors
    def train(self, arch, epochs, batch_size, learning_rate, train_size, request: gr.Request):
        """Start a training run and return at once; the timer shows its progress."""
        self.studio.check_training()  # before the values: a read-only demo refuses every call alike
        settings = {"epochs": epochs, "batch_size": batch_size, "learning_rate": learning_rate}
        if train_size not in (None, ""):  # optional: the preset's (full) training set otherwise
            settings["train_size"] = train_size
        config = TrainConfig.preset(arch, **settings)  # TrainConfig's ValueError names a bad value
        self.studio.start_run(config, visitor=visitor(request))
        return self.studio.status()

    @friendly_errors
    def stop(self):
        """Stop the running job after its current batch."""
        if self.studio.stop_run() is None:
            gr.Warning("No training run is in progress.")
        return self.studio.status()

    @friendly_errors
    def training_status(self) -> dict:
        """The latest run: status, epoch, step, speed, latest metrics, test accuracy, saved model."""
        return self.studio.status()

    def results(self) -> tuple:
        """Results text, confusion matrix, mistakes and whether to show the images, of the latest run."""
        run = self.studio.latest_run()
        if run is None or run.active:
            return "", "", "", gr.Row(visible=False)
        shown = run.confusion_image is not None
        text = f"### {headline(run)}\n{run.message}"
        confusion = confusion_html(run.confusion_image)
        return text, confusion, mistakes_html(run.mistakes), gr.Row(visible=shown)

    # --- layout ---------------------------------------------------------------------------------

    def render(self) -> None:
        """The tab's components and events, inside the page's gr.Blocks."""
        self.data_status = gr.Markdown(label="Data status")
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
                self.progress = gr.HTML(
                    progress_html({"run": None}), label="Progress", elem_id="train-progress"
                )
                self.curves = gr.HTML(curves_html([], False), elem_id="train-curves")
                self.compare = gr.Checkbox(label="Overlay the curves of earlier runs in this session")
                self.epoch_table = gr.Dataframe(
                    headers=list(run_tables.EPOCH_COLUMNS), label="Per epoch", interactive=False
                )
        self.results_text = gr.Markdown(label="Results", elem_id="train-results")
        with gr.Row(visible=False) as self.result_images:
            with gr.Column(scale=2, min_width=300):
                self.confusion = gr.HTML("", elem_id="confusion")
            with gr.Column(scale=3, min_width=300):
                self.mistakes = gr.HTML(mistakes_html([]), elem_id="mistakes")
        self.history = gr.Dataframe(
            headers=list(run_tables.HISTORY_COLUMNS), label="Runs in this session", interactive=False
        )
        with gr.Accordion("Run status (JSON, as the API returns it)", open=False):
            self.status_json = gr.JSON(label="Run status")

        preset.change(
            self.choose_preset,
            preset,
            [epochs, batch_size, learning_rate, train_size],
            api_name="preset",
            show_progress="hidden",
        )
        # preprocess=False: raw values reach TrainConfig, whose ValueError names a bad one precisely.
        train_button.click(
            self.train,
            [preset, epochs, batch_size, learning_rate, train_size],
            self.status_json,
            api_name="train",
            preprocess=False,
            concurrency_limit=1,
            concurrency_id="train",
        )
        stop_button.click(self.stop, None, self.status_json, api_name="stop", concurrency_limit=None)
        gr.api(
            self.training_status, api_name="training_status", concurrency_limit=None, concurrency_id="poll"
        )

    def poll_outputs(self) -> list:
        parts = [self.data_status, self.progress, self.curves, self.epoch_table, self.history]
        return parts + [
            self.status_json,
            self.results_text,
            self.confusion,
            self.mistakes,
            self.result_images,
        ]

    def poll_keys(self, compare: bool) -> dict:
        """What each of the tab's poll parts shows depends on."""
        studio, run = self.studio, self.studio.latest_run()
        return {
            "data": studio.data_status(),
            "run": (studio.version(), compare),
            "result": (len(studio.runs), run and run.phase),
        }

    def poll_part(self, changed: dict, keys: dict, compare: bool) -> list:
        """Updates for the tab's outputs; the parts whose keys did not change are skipped."""
        studio, skip = self.studio, gr.skip()
        data_part = [skip]
        if changed["data"]:
            available, text = keys["data"]
            data_part = [text if available else f"**MNIST is needed to train.** {text}"]
        run_part = [skip] * 5
        if changed["run"]:
            run = studio.latest_run()
            run_part = [
                progress_html(studio.status()),
                curves_html(studio.runs, compare),
                pd.DataFrame(run_tables.epoch_table(run)),
                pd.DataFrame(run_tables.history_table(studio.runs)),
                studio.status(),
            ]
        result_part = list(self.results()) if changed["result"] else [skip] * 4
        return data_part + run_part + result_part
