"""The Draw tab: the app's own drawing surface (ui/draw.js), a photo upload, the model picker.

The surface is a gr.HTML component (Gradio 6's supported way to run page code of one's own): a plain 2D
<canvas> with Pointer Events, undo, redo and clear. At the end of each stroke (and after undo, redo and
clear) it calls the `classify_strokes` server function with the stroke points: one small POST that skips
Gradio's queue. The points are drawn on the server by mnist_core.preprocess with the canvas' own brush, so
what the model reads is what the page shows, and nothing decodes an image the visitor sent. The answer,
the 28 x 28 image the model sees and the ten probabilities come back as one piece of HTML, which the page
shows only if no newer drawing has been sent since: answers land in drawing order, never on a cleared canvas.
"""

from __future__ import annotations

import html
import tempfile
from pathlib import Path

import gradio as gr

from mnist_core.preprocess import BRUSH_WIDTH, CANVAS_SIDE

from .errors import friendly_errors, message, title
from .own import OwnDigits, own_html, tune_html
from .values import png_base64, read_strokes, seq_of, strokes_of

HERE = Path(__file__).resolve().parent
EXPORT_CHOICES = [("Keras (.keras)", "keras"), ("ONNX (.onnx)", "onnx"), ("LiteRT (.tflite)", "litert")]
PREVIEW_SIDE = 168  # px on screen of the 28 px image the model sees, in whole-pixel blocks (CSS)
EMPTY_ANSWER = (
    '<div id="answer" class="answer empty"><div class="hint">✏️ Draw a digit</div>'
    "<div>on the canvas (or upload a photo); the model answers as you draw.</div></div>"
)


def empty_value(seq: int = 0) -> dict:
    """The surface's value with nothing drawn: what a fresh page shows (`own`: the set's panel, filled in
    by the page once it knows its visitor)."""
    return {"seq": seq, "source": "sketch", "strokes": [], "html": EMPTY_ANSWER, "own": ""}


def kept(drawing, visitor) -> dict:
    """A fresh surface value for `visitor` with the drawing of the page's value `drawing` (its number and
    strokes) and their set's panel, made here (never the page's HTML sent back)."""
    own = own_html(visitor.digits) if visitor is not None else ""
    return {**empty_value(seq_of(drawing)), "strokes": strokes_of(drawing), "own": own}


def label_row(digit: int) -> str:
    """'That is a ...': the ten digits as buttons, the model's answer marked; ui/draw.js sends the choice."""
    buttons = "".join(
        f'<button type="button" data-label="{d}" class="{"answered" if d == digit else ""}"'
        f' title="Add this drawing to your digits as a {d} (key {d})">{d}</button>'
        for d in range(10)
    )
    return (
        '<div class="label-row" role="group" aria-label="say which digit you drew">'
        f'<span class="label-ask">That is a</span>{buttons}</div>'
    )


def why_html(why) -> str:
    """The "why" view: (explain.Explanation, heat map) as the heat map beside the 28 x 28 preview."""
    explanation, picture = why
    return (
        f'<figure id="why-view" class="preview why"><img src="data:image/png;base64,{png_base64(picture)}"'
        f' width="{PREVIEW_SIDE}" height="{PREVIEW_SIDE}" alt="which pixels pushed the answer">'
        f'<figcaption>Why: <b class="towards">red</b> pushed towards {explanation.predicted}, '
        f'<b class="against">blue</b> towards {explanation.runner_up}</figcaption></figure>'
    )


def result_html(result, labels: bool = False, why=None) -> str:
    """The answer, the 28 x 28 image the model sees and the ten probabilities; None: the empty state.
    `labels`: offer "that is a ..." (for a drawing, not a photo); `why`: (Explanation, heat map)."""
    if result is None:
        return EMPTY_ANSWER
    image, probabilities = result
    digit = int(probabilities.argmax())
    bars = "".join(
        f'<li class="{"top" if d == digit else ""}"><span class="d">{d}</span>'
        f'<span class="bar"><span style="width:{p:.1%}"></span></span><span class="p">{p:.0%}</span></li>'
        for d, p in enumerate(probabilities.tolist())
    )
    return (
        f'<div id="answer" class="answer"><div class="digit">{digit}</div>'
        f'<div class="sure">{probabilities[digit]:.0%} sure</div></div>'
        f'{label_row(digit) if labels else ""}<div class="views">{preview_html(image)}'
        f"{why_html(why) if why else ''}</div>"
        f'<ol class="probabilities" aria-label="probability of each digit">{bars}</ol>'
    )


def error_html(error: Exception) -> str:
    """A message in the answer panel, for what the page sent but the server could not read."""
    return (
        f'<div id="answer" class="answer empty error"><div class="hint">{html.escape(title(error))}</div>'
        f"<div>{message(error)}</div></div>"
    )


def preview_html(image) -> str:
    """The 28 x 28 image the model sees as an inline PNG, drawn in whole-pixel blocks by CSS.

    An image component would cost Gradio a file written to its cache and served per answer; this PNG is
    about 300 bytes.
    """
    return (
        f'<figure id="model-view" class="preview"><img src="data:image/png;base64,{png_base64(image)}"'
        f' width="{PREVIEW_SIDE}" height="{PREVIEW_SIDE}" alt="the 28 x 28 image the model sees">'
        "<figcaption>What the model sees (28 × 28)</figcaption></figure>"
    )


def model_status(studio, visitor=None) -> str:
    """One line about the model this visitor draws with."""
    if studio.loading:
        return "Loading the model (TensorFlow starts in the background)…"
    if not studio.predictor.has_model:
        return f"No model is active: {studio.model_error}"
    return f"Active model: {studio.visitor_label(visitor)}"


def _label(result) -> dict | None:
    """A classify() result as gr.Label's value: the ten probabilities by digit."""
    return None if result is None else {str(d): float(p) for d, p in enumerate(result[1])}


class DrawTab:
    """The Draw tab's handlers, its layout and its part of the page's poll."""

    def __init__(self, studio, sessions):
        self.studio = studio
        self.sessions = sessions
        self.own = OwnDigits(studio, sessions)

    # --- handlers -------------------------------------------------------------------------------

    def classify(self, strokes, visitor=None):
        """(28 x 28 image, probabilities) of stroke points on the page's canvas; None if nothing is drawn."""
        return read_strokes(self.studio, strokes, visitor)

    def classify_strokes(self, drawing: dict, request: gr.Request | None = None) -> dict:
        """The page's server function: {seq, strokes, visitor} -> {seq, html}; bad input gets a message."""
        try:
            seq = seq_of(drawing)
        except ValueError as error:
            return {"seq": None, "html": error_html(error)}
        try:
            visitor = self.sessions.from_token(drawing.get("visitor"), request)
            result = self.classify(strokes_of(drawing), visitor)
            why = None
            if result is not None and drawing.get("why") is True:  # the page's "Show why" is on
                why = self.studio.explain_image(result[0], visitor)
            return {"seq": seq, "html": result_html(result, labels=True, why=why)}
        except Exception as error:  # the page shows it in the answer panel; nothing else changes
            return {"seq": seq, "html": error_html(error)}

    @friendly_errors
    def predict(self, image_path, request: gr.Request = None):
        """The ten probabilities for one image file (a photo or scan of a handwritten digit)."""
        return _label(self._classify_file(image_path, self.sessions.visitor(request)))

    @friendly_errors
    def predict_strokes(self, strokes, request: gr.Request = None):
        """The ten probabilities for stroke points drawn on a 560 px canvas (what the page sends)."""
        return _label(self.classify(strokes, self.sessions.visitor(request)))

    @friendly_errors
    def predict_photo(self, image_path, drawing, request: gr.Request = None):
        """Show the answer for an uploaded photo in the answer panel; the drawing stays as it is."""
        visitor = self.sessions.visitor(request)
        value = kept(drawing, visitor)
        if image_path is None:  # the photo was removed: the drawing's answer again
            return {**value, "html": result_html(self.classify(value["strokes"], visitor), labels=True)}
        return {**value, "source": "photo", "html": result_html(self._classify_file(image_path, visitor))}

    @friendly_errors
    def select_model(self, name, drawing, photo, request: gr.Request = None):
        """Make the chosen model the one this visitor draws with; read the photo shown, or the drawing,
        again with it. Nobody else's answers change."""
        visitor = self.sessions.visitor(request)
        value = kept(drawing, visitor)
        self.studio.select_model(name, visitor)
        try:  # the switch stands; a photo or drawing that cannot be read says so in the answer panel
            if isinstance(drawing, dict) and drawing.get("source") == "photo" and photo:
                value.update(source="photo", html=result_html(self._classify_file(photo, visitor)))
            else:
                value["html"] = result_html(self.classify(value["strokes"], visitor), labels=True)
        except ValueError as error:
            value["html"] = error_html(error)
        return model_status(self.studio, visitor), value

    @friendly_errors
    def export(self, fmt, request: gr.Request = None):
        """The model this visitor draws with, as a file of `fmt` to download (checked by scripts/export.py's
        tests: the same probabilities in its own runtime)."""
        data, name = self.studio.export(self.sessions.visitor(request), fmt)
        path = Path(tempfile.mkdtemp(prefix="mnist-export-")) / name
        path.write_bytes(data)  # a fresh folder each time: nobody reads it half-written
        return gr.update(value=str(path), visible=True)

    def active_model(self, request: gr.Request = None) -> dict:
        """The model this visitor draws with: its name and its picker label."""
        visitor = self.sessions.visitor(request)
        return {"name": self.studio.visitor_model(visitor), "label": self.studio.visitor_label(visitor)}

    def _classify_file(self, path, visitor=None):
        """studio.classify of an uploaded file; the message names it by its file name, not its cache path."""
        if visitor is not None and path is not None:
            self.studio.visitors.allow_prediction(visitor)
        try:
            return self.studio.classify(path, visitor=visitor)
        except ValueError as error:
            text = str(error)
            if isinstance(path, str) and path:
                text = text.replace(path, Path(path).name)
            raise ValueError(text) from None

    # --- layout ---------------------------------------------------------------------------------

    def render(self) -> None:
        """The tab's components and events, inside the page's gr.Blocks."""
        studio = self.studio
        tab = self

        own = self.own

        # Plain functions: see ui/workarounds.py.
        def classify_strokes(drawing, request: gr.Request):
            return tab.classify_strokes(drawing, request)

        def label_drawing(message, request: gr.Request):
            return own.label_drawing(message, request)

        def delete_drawing(message, request: gr.Request):
            return own.delete_drawing(message, request)

        def clear_drawings(message, request: gr.Request):
            return own.clear_drawings(message, request)

        def own_set(message, request: gr.Request):
            return own.own_set(message, request)

        with gr.Row(equal_height=True):
            with gr.Column(scale=2):
                self.model_status = gr.Markdown(model_status(studio), elem_id="model-status")
            with gr.Column(scale=1, min_width=240):
                self.model_picker = gr.Dropdown(label="Model", choices=[], interactive=True)
        self.pad = gr.HTML(
            empty_value(),
            html_template=(HERE / "draw.html").read_text(),
            js_on_load=(HERE / "draw.js").read_text(),
            server_functions=[classify_strokes, label_drawing, delete_drawing, clear_drawings, own_set],
            elem_id="drawpad",
            apply_default_css=False,
            side=CANVAS_SIDE,
            brush=BRUSH_WIDTH,
            empty=EMPTY_ANSWER,
        )
        with gr.Row(elem_id="own-tools"):
            tune_button = gr.Button("Fine-tune on my digits", variant="primary", elem_id="tune-button")
            download_button = gr.Button("Download my digits (.npz)", elem_id="own-download")
            upload_button = gr.UploadButton(
                "Upload a set (.npz)", file_types=[".npz"], type="filepath", elem_id="own-upload"
            )
        self.tune_status = gr.HTML("", elem_id="tune-status")
        own_file = gr.File(label="Your digits, in the layout of Keras' mnist.npz", visible=False)
        with gr.Accordion("Or upload a photo of a handwritten digit", open=False):
            self.photo = gr.File(
                label="A photo or image of one handwritten digit",
                elem_id="photo",
                file_types=["image"],
                type="filepath",
                height=140,
            )
        with gr.Accordion("Take this model elsewhere: download it as .keras, ONNX or LiteRT", open=False):
            with gr.Row():
                export_format = gr.Radio(EXPORT_CHOICES, value="keras", label="Format", scale=2)
                export_button = gr.Button("Download the model", elem_id="export-button", scale=1)
            export_file = gr.File(label="The model you draw with", visible=False, elem_id="export-file")
        # Outputs of API-only events (gr.on with no trigger): their values never show in the page.
        probabilities = gr.Label(visible=False, num_top_classes=10)
        strokes = gr.JSON(visible=False)

        fast = {"concurrency_limit": None, "concurrency_id": "predict", "show_progress": "hidden"}
        gr.on([], self.predict, self.photo, probabilities, api_name="predict", **fast)
        gr.on([], self.predict_strokes, strokes, probabilities, api_name="predict_strokes", **fast)
        gr.on(
            [self.photo.upload, self.photo.clear],
            self.predict_photo,
            [self.photo, self.pad],
            self.pad,
            api_name="predict_photo",
            **fast,
        )
        gr.api(self.active_model, api_name="active_model", concurrency_limit=None, concurrency_id="poll")
        tune_button.click(
            own.finetune,
            None,
            self.tune_status,
            api_name="finetune",
            concurrency_limit=1,
            concurrency_id="train",
        )
        download_button.click(own.download, None, own_file, api_name="download_digits", concurrency_limit=4)
        upload_button.upload(
            own.upload, [upload_button, self.pad], self.pad, api_name="upload_digits", concurrency_limit=4
        )
        export_button.click(
            self.export, export_format, export_file, api_name="export_model", concurrency_limit=1,
            concurrency_id="export",
        )  # fmt: skip
        self.model_picker.input(
            self.select_model,
            [self.model_picker, self.pad, self.photo],
            [self.model_status, self.pad],
            api_name="select_model",
            concurrency_limit=1,
            concurrency_id="model",
        )

    def poll_outputs(self) -> list:
        return [self.model_status, self.model_picker]

    def poll_keys(self, visitor) -> dict:
        """What each of the tab's poll parts shows depends on."""
        studio = self.studio
        who = visitor.id if visitor else None
        model = (who, studio.visitor_model(visitor), studio.model_version, studio.loading, studio.model_error)
        run = studio.latest_run(visitor) if visitor else None
        tune = None if run is None or run.tune is None else studio.version(visitor)
        return {"model": model, "tune": tune}

    def poll_part(self, changed: dict, visitor) -> list:
        """The model status line (sent each time: cheaper than a skip, ui/workarounds.py) and the picker,
        skipped when nothing changed."""
        studio = self.studio
        if not changed["model"]:
            return [model_status(studio, visitor), gr.skip()]
        choices = studio.model_choices(visitor)
        return [
            model_status(studio, visitor),
            gr.Dropdown(choices=choices, value=studio.visitor_model(visitor)),
        ]

    def tune_part(self, changed: dict, visitor):
        """The fine-tuning's status below the surface (self.tune_status), skipped when it did not change."""
        if not changed["tune"]:
            return gr.skip()
        return tune_html(self.studio.latest_run(visitor), self.studio.status(visitor)) if visitor else ""
