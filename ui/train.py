"""The Train tab: presets and settings, Train and Stop, live curves, results; its part of the page's poll."""

from __future__ import annotations

import base64
import html

import gradio as gr

from mnist_core import run_tables
from mnist_core.codegen import keras_script
from mnist_core.config import DRAWN_OPTION, LIMITS, PRESETS, TrainConfig
from mnist_core.studio import preset_values

from .charts import line_chart
from .errors import friendly_errors
from .values import png_base64

RESULTS_CACHED = 64  # runs whose results' HTML is kept ready
CODE_LABEL = "The settings above as a plain Keras script (no MNIST Studio needed)"
PRESET_CHOICES = [("Tutorial MLP", "mlp"), ("CNN", "cnn")]


def duration(seconds: float | None) -> str:
    """Seconds as "42 s" or "3 min 05 s"."""
    seconds = max(0, round(seconds or 0))
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


def describe(status: dict) -> tuple[str, str, str]:
    """A run status (run_tables.status) in words: (which run, where it is, its latest metrics)."""
    if status["run"] is None:
        return "No run yet", "choose a preset and press Train.", ""
    phase = status["status"]
    if phase == "queued":
        place, wait = status.get("queue_position"), status.get("starts_in_seconds")
        where = (
            f"waiting in the training queue: {'next' if place == 1 else f'place {place}'}, starts in about "
            f"{duration(wait)} (press Stop to take it out)"
        )
    elif phase == "cancelled":
        where = "taken out of the queue before it started."
    elif phase == "running" and "step" not in status:
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


def table_html(columns: dict[str, list], table_id: str, caption: str) -> str:
    """A plain HTML table of columns (run_tables' dicts of lists)."""
    names = list(columns)
    rows = zip(*columns.values(), strict=True) if names else []
    head = "".join(f"<th>{html.escape(name)}</th>" for name in names)
    body = "".join(
        "<tr>" + "".join(f"<td>{'' if v is None else html.escape(str(v))}</td>" for v in row) + "</tr>"
        for row in rows
    )
    return (
        f'<table id="{table_id}" class="runs"><caption>{html.escape(caption)}</caption>'
        f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    )


def confusion_html(png: bytes | None) -> str:
    """The confusion matrix figure as an inline PNG that scales with its column, never cropped."""
    if png is None:
        return ""
    data = base64.b64encode(png).decode()
    return (
        '<figure class="confusion"><figcaption>Confusion matrix (rows: true digit)</figcaption>'
        f'<img src="data:image/png;base64,{data}" alt="confusion matrix of the test set"></figure>'
    )


def mistakes_html(mistakes: list, whys: list | None = None) -> str:
    """The misclassified test digits as a wrapping grid of inline 28 px PNGs with their captions; with
    `whys` (a heat map per mistake), a click on one shows why the model answered so (no script: a
    <details> element).

    A grid that wraps fits any window: a gallery of fixed columns and height clips at 1280 px.
    """
    if not mistakes:
        return ""
    whys = whys if whys and len(whys) == len(mistakes) else [None] * len(mistakes)
    items = []
    for (image, caption), why in zip(mistakes, whys, strict=True):
        text = html.escape(caption)
        figure = (
            f'<figure><img src="data:image/png;base64,{png_base64(image)}" width="84" height="84" '
            f'alt="{text}"><figcaption>{text}</figcaption></figure>'
        )
        if why is not None:
            figure = (
                f'<details class="why-mistake"><summary>{figure}</summary><figure class="why">'
                f'<img src="data:image/png;base64,{png_base64(why)}" width="84" height="84" alt="why {text}">'
                "<figcaption>red: towards the answer, blue: towards the runner-up</figcaption></figure>"
                "</details>"
            )
        items.append(figure)
    hint = "; click one to see why" if any(why is not None for why in whys) else ""
    return (
        '<div class="mistakes"><div class="label">Misclassified test digits: true → predicted '
        f"(confidence), {len(mistakes)} shown{hint}</div>"
        f'<div class="grid pixelated">{"".join(items)}</div></div>'
    )


class TrainTab:
    """The Train tab's handlers, its layout and its part of the page's poll."""

    def __init__(self, studio, sessions):
        self.studio = studio
        self.sessions = sessions
        self._results: dict[tuple, str] = {}  # (run, phase, has images) -> its results' HTML

    # --- handlers -------------------------------------------------------------------------------

    @friendly_errors
    def choose_preset(self, arch):
        """The preset's epochs, batch size, learning rate and training-set size."""
        values = preset_values(arch)
        return values["epochs"], values["batch_size"], values["learning_rate"], values["train_size"]

    def settings_code(self, arch, epochs, batch_size, learning_rate, train_size, drawn=False):
        """The Code panel for the settings in the form: the script Train would run; unchanged while a
        value is not valid yet (the visitor is typing)."""
        try:
            config = self._config(arch, epochs, batch_size, learning_rate, train_size, drawn)
        except ValueError:
            return gr.skip()
        return gr.Code(keras_script(config), label=CODE_LABEL)

    @staticmethod
    def _config(arch, epochs, batch_size, learning_rate, train_size, drawn) -> TrainConfig:
        settings = {"epochs": epochs, "batch_size": batch_size, "learning_rate": learning_rate}
        if train_size not in (None, ""):  # optional: the preset's (full) training set otherwise
            settings["train_size"] = train_size
        if drawn not in (None, False, True):
            raise ValueError(f"drawn received {drawn!r}; expected true or false")
        if drawn:
            settings["drawn_share"] = DRAWN_OPTION
        return TrainConfig.preset(arch, **settings)  # TrainConfig's ValueError names a bad value

    @friendly_errors
    def train(
        self, arch, epochs, batch_size, learning_rate, train_size, drawn=False, request: gr.Request = None
    ):
        """Queue a training run for this visitor and return at once; the poll shows its place and progress.
        `drawn`: also learn the drawn writing styles (DRAWN_OPTION of the images; API callers may omit it)."""
        self.studio.check_training()  # before the values: a read-only demo refuses every call alike
        config = self._config(arch, epochs, batch_size, learning_rate, train_size, drawn)
        visitor = self.sessions.visitor(request)
        self.studio.start_run(config, visitor)
        return self.studio.status(visitor)

    @friendly_errors
    def stop(self, request: gr.Request = None):
        """Stop this visitor's run after its current batch, or take it out of the queue."""
        visitor = self.sessions.visitor(request)
        if self.studio.stop_run(visitor) is None:
            gr.Warning("You have no training run in progress or waiting.")
        return self.studio.status(visitor)

    @friendly_errors
    def training_status(self, request: gr.Request = None) -> dict:
        """This visitor's latest run: status, queue place, epoch, step, speed, metrics, test accuracy."""
        return self.studio.status(self.sessions.visitor(request))

    @friendly_errors
    def set_name(self, name, request: gr.Request = None) -> str:
        """The name this visitor's runs show on the class board ('' for none)."""
        visitor = self.sessions.visitor(request)
        if visitor is None:
            raise ValueError("no visitor session: reload the page")
        return self.studio.visitors.set_name(visitor, name)

    def live_html(self, visitor, compare: bool, status: dict | None = None) -> str:
        """The data's status, the run's progress line (of `status`, the visitor's run status when given),
        its curves and its epochs."""
        studio = self.studio
        status = status if status is not None else studio.status(visitor)
        available, text = studio.data_status()
        data = html.escape(text if available else f"MNIST is needed to train. {text}", quote=False)
        run, mine = studio.latest_run(visitor), studio.runs_of(visitor)
        epochs = table_html(run_tables.epoch_table(run), "train-epochs", "Per epoch")
        return (
            f'<div id="train-data" class="data-status">{data}</div>'
            f'<div id="train-progress">{progress_html(status)}</div>'
            f'<div id="train-curves">{curves_html(mine, compare)}</div>{epochs}'
        )

    def below_html(self, visitor) -> str:
        """The latest run's results (confusion matrix, mistakes), your runs, the class board."""
        studio = self.studio
        run = studio.latest_run(visitor)
        results = ""
        if run is not None and not (run.active or run.waiting):
            key = (run.number, run.phase, run.confusion_png is not None)
            results = self._results.get(key)
            if results is None:
                text = f"<h3>{html.escape(headline(run))}</h3><p>{html.escape(run.message)}</p>"
                images = ""
                if run.confusion_png is not None:
                    confusion = confusion_html(run.confusion_png)
                    images = (
                        f'<div class="results-images"><div id="confusion">{confusion}</div>'
                        f'<div id="mistakes">{mistakes_html(run.mistakes, run.mistake_whys)}</div></div>'
                    )
                results = self._results[key] = text + images
                while len(self._results) > RESULTS_CACHED:
                    self._results.pop(next(iter(self._results)))
        mine = table_html(run_tables.history_table(studio.runs_of(visitor)), "train-history", "Your runs")
        board = table_html(
            run_tables.board_table(studio.runs), "board", "Class board: every run on this server"
        )
        return f'<div id="train-results">{results}</div>{mine}{board}'

    # --- layout ---------------------------------------------------------------------------------

    def render(self) -> None:
        """The tab's components and events, inside the page's gr.Blocks."""
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
                drawn = gr.Checkbox(
                    False,
                    label="Also learn the drawn writing styles",
                    info=f"Adds {DRAWN_OPTION:.0%} drawn digits in styles MNIST lacks (crossed 7s, open 4s, "
                    "looped 2s...): ~6% more time, drawings read better, MNIST's test a little worse",
                )
                with gr.Row():
                    train_button = gr.Button("Train", variant="primary")
                    stop_button = gr.Button("Stop", variant="stop")
            with gr.Column(scale=3):
                # What moves while a run trains, in one piece of HTML: one poll output, one update.
                self.live = gr.HTML(self.live_html(None, False), elem_id="train-live")
                self.compare = gr.Checkbox(label="Overlay the curves of your earlier runs")
        name = gr.Textbox(
            label="Your name on the class board (optional; runs show no name otherwise)",
            max_length=40,
            elem_id="board-name",
        )
        # What changes when a run ends: its results, your runs, the class board.
        self.below = gr.HTML(self.below_html(None), elem_id="train-below")
        with gr.Accordion("Code: this run as a plain Keras script", open=False):
            self.code = gr.Code(
                keras_script(mlp),
                language="python",
                label=CODE_LABEL,
                buttons=["copy", "download"],
                interactive=False,
                lines=16,
                max_lines=40,
                elem_id="run-code",
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
            [preset, epochs, batch_size, learning_rate, train_size, drawn],
            self.status_json,
            api_name="train",
            preprocess=False,
            concurrency_limit=1,
            concurrency_id="train",
        )
        stop_button.click(self.stop, None, self.status_json, api_name="stop", concurrency_limit=None)
        settings = [preset, epochs, batch_size, learning_rate, train_size, drawn]
        gr.on(
            [field.change for field in settings],
            self.settings_code,
            settings,
            self.code,
            api_name="code",
            preprocess=False,
            show_progress="hidden",
            concurrency_limit=None,
            trigger_mode="always_last",
        )
        name.submit(self.set_name, name, name, api_name="set_name", concurrency_limit=None)
        name.blur(self.set_name, name, name, api_visibility="private", concurrency_limit=None)
        gr.api(
            self.training_status, api_name="training_status", concurrency_limit=None, concurrency_id="poll"
        )

    def poll_outputs(self) -> list:
        return [self.live, self.below, self.status_json]

    def code_part(self, changed: dict, visitor):
        """The Code panel: the visitor's run that has just finished, as a script (skipped otherwise)."""
        run = self.studio.latest_run(visitor)
        if not changed["below"] or run is None or run.phase != "finished":
            return gr.skip()
        base = getattr(run.tune, "base_name", None)
        name = run.model_name or f"run {run.number}"
        label = f"Run {run.number} ({name}) as a plain Keras script" + (
            f": fine-tuned from {base} on your digits, which stay here; the script trains its settings anew"
            if base
            else ""
        )
        return gr.Code(keras_script(run.config, run_name=name, fine_tuned_from=base), label=label)

    def poll_keys(self, visitor, compare: bool) -> dict:
        """What each of the tab's poll parts shows depends on; cheap to compute, the same when unchanged."""
        studio, run = self.studio, self.studio.latest_run(visitor)
        board = tuple((r.number, r.phase, r.test_accuracy is None) for r in studio.runs[-50:])
        return {
            "live": (studio.version(visitor), compare),
            "below": (run and run.number, run and run.phase, board),
        }

    def poll_part(self, changed: dict, keys: dict, visitor, compare: bool) -> list:
        """Updates for the tab's outputs: a skipped output costs Gradio more than a small one sent
        (ui/workarounds.py), so only the two views are skipped when they did not change."""
        status = self.studio.status(visitor)
        live = self.live_html(visitor, compare, status) if changed["live"] else gr.skip()
        below = self.below_html(visitor) if changed["below"] else gr.skip()
        return [live, below, status]
