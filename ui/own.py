"""Your digits, in the Draw tab: label a drawing ("that is a 7"), see the set, fine-tune on it, take it away.

Labelling happens on the drawing surface (ui/draw.js calls `label_drawing`, `delete_drawing`, `clear_drawings`
and `own_set`, server functions like `classify_strokes`); the set's panel is HTML the surface shows. The
buttons below the surface (fine-tune, download, upload) are Gradio events. A visitor's set lives in the
server's memory with their session (mnist_core.collection): nobody else can see it.
"""

from __future__ import annotations

import html
import tempfile
from pathlib import Path

import gradio as gr

from mnist_core.collection import HOLD_OUT_EVERY, MAX_DRAWINGS, ordinal
from mnist_core.preprocess import CANVAS_SIDE, check_strokes

from .errors import friendly_errors, title
from .errors import message as error_text
from .train import progress_html
from .values import png_base64, read_strokes, seq_of, strokes_of

THUMBNAILS_PER_DIGIT = 12  # newest shown per digit; the counts cover them all
SET_FILE_NAME = "my-digits.npz"
READING = '<div id="answer" class="answer empty"><div class="hint">…</div></div>'  # until the page asks again


def percent(value) -> str:
    return "—" if value is None else f"{value:.1%}"


def thumbnail(item) -> str:
    """One drawing of the set as a small button that deletes it; misread ones red, set-aside ones dashed."""
    classes = " ".join(
        ["own-item"] + ["misread"] * (item.predicted not in (None, item.label)) + ["aside"] * item.held_out
    )
    read = "" if item.predicted is None else f" (the model read {item.predicted})"
    return (
        f'<button type="button" class="{classes}" data-delete="{item.id}" title="Delete this drawing{read}">'
        f'<img src="data:image/png;base64,{png_base64(item.image)}" width="42" height="42" '
        f'alt="{item.label}"></button>'
    )


def own_html(digits, note: str = "") -> str:
    """The visitor's set by digit: counts, the newest drawings (each a delete button), clear all."""
    items = digits.items
    note_html = f'<div class="own-note" role="status">{note}</div>' if note else ""
    if not items:
        return (
            f'<div class="own-set empty">{note_html}<b>Your digits</b>: none yet. When the model misreads '
            "you, press the digit you meant (or type it while the canvas has focus): the drawing joins "
            "your set, and <i>Fine-tune on my digits</i> teaches the model your writing.</div>"
        )
    rows = []
    for digit in range(10):
        mine = [item for item in items if item.label == digit]
        if mine:
            more = len(mine) - THUMBNAILS_PER_DIGIT
            thumbs = "".join(thumbnail(item) for item in mine[-THUMBNAILS_PER_DIGIT:])
            thumbs += f'<span class="own-more">+{more}</span>' if more > 0 else ""
            rows.append(
                f'<div class="own-row"><span class="own-digit">{digit}</span><span class="own-count">'
                f'×{len(mine)}</span><span class="own-thumbs">{thumbs}</span></div>'
            )
    aside = sum(item.held_out for item in items)
    head = (
        f"<b>Your digits</b>: {len(items)} of at most {MAX_DRAWINGS}; {aside} kept aside to measure on "
        f"(every {ordinal(HOLD_OUT_EVERY)} of each digit, never trained on; dashed)"
    )
    return (
        f'<div class="own-set">{note_html}<div class="own-head">{head} <button type="button" '
        'data-clear="1" class="own-clear">Clear all</button></div>'
        f'{"".join(rows)}<div class="own-help">Press a drawing to delete it; red ones were misread.</div>'
        "</div>"
    )


def tune_html(run, status: dict) -> str:
    """The visitor's latest fine-tuning: its progress, or its before / after table when it has finished."""
    if run is None or run.tune is None:
        return ""
    if run.phase != "finished" or not run.tune_report:
        return f'<div class="tune-status">{progress_html(status)}</div>'
    report = run.tune_report
    seconds = run.job.records[-1].get("elapsed", 0) if run.job and run.job.records else 0
    measured = report.get("own_measured_on") or 0
    own_row = (
        f"<tr><td>your {measured} drawings kept aside</td><td>{percent(report.get('own_before'))}</td>"
        f"<td>{percent(report.get('own_after'))}</td></tr>"
        if measured
        else f'<tr><td colspan="3">None of your drawings is kept aside yet (every {ordinal(HOLD_OUT_EVERY)} '
        "of a digit is): label more to measure on your own writing.</td></tr>"
    )
    return (
        f'<div class="tune-status"><b>Fine-tuned on {report.get("trained_on", 0)} of your drawings</b> '
        f"(from {html.escape(str(report.get('base_model')))}, in {seconds:.0f} s): it is now the model you "
        "draw with."
        '<table class="runs" id="tune-report"><thead><tr><th>accuracy on</th><th>before</th><th>after</th>'
        f"</tr></thead><tbody>{own_row}<tr><td>the MNIST test set (10,000)</td>"
        f"<td>{percent(report.get('mnist_before'))}</td><td>{percent(report.get('mnist_after'))}</td></tr>"
        "</tbody></table></div>"
    )


class OwnDigits:
    """The handlers of the visitor's own set; their server functions go on the drawing surface."""

    def __init__(self, studio, sessions):
        self.studio = studio
        self.sessions = sessions

    # --- server functions of the drawing surface (no Gradio session: the message names the visitor) --

    def _visitor(self, message, request):
        """The visitor the message names. Unlike a drawing's answer, a set belongs to someone: a page that
        has not heard its visitor id yet (its load still under way) is told to wait, never given a set
        shared with its whole address."""
        if not isinstance(message, dict):
            raise ValueError(f"expected a message as a dict, received {type(message).__name__}")
        token = message.get("visitor")
        if not (isinstance(token, str) and token in self.studio.visitors):
            raise ValueError("the page is still connecting to the server: wait a moment, then try again")
        return self.studio.visitors.get(token)

    def label_drawing(self, message, request: gr.Request | None = None) -> dict:
        """{visitor, seq, strokes, label} -> {seq, own, ok}: the drawing, as the model read it, is added."""
        seq = None
        try:
            seq = seq_of(message)
            visitor = self._visitor(message, request)
            label = message.get("label")
            if isinstance(label, str) and label.isdigit() and len(label) == 1:
                label = int(label)
            strokes = strokes_of(message)
            result = read_strokes(self.studio, strokes, visitor)
            if result is None:
                raise ValueError("nothing is drawn: draw a digit, then say which it is")
            image, probabilities = result
            predicted = int(probabilities.argmax())
            item = visitor.digits.add(image, label, predicted, check_strokes(strokes, CANVAS_SIDE))
        except Exception as error:  # shown in the set's panel; nothing was added
            return {"seq": seq, "ok": False, "own": self._panel(message, request, error)}
        read = "the model read it right" if predicted == item.label else f"the model had read {predicted}"
        aside = " (kept aside to measure on)" if item.held_out else ""
        note = f"Added a {item.label}{aside}: {read}."
        return {"seq": seq, "ok": True, "own": own_html(visitor.digits, note)}

    def delete_drawing(self, message, request: gr.Request | None = None) -> dict:
        """{visitor, id} -> {own}: one drawing deleted."""
        try:
            visitor = self._visitor(message, request)
            item_id = message.get("id")
            if isinstance(item_id, str) and item_id.isdigit():
                item_id = int(item_id)
            found = visitor.digits.remove(item_id)
            return {
                "own": own_html(visitor.digits, "Deleted." if found else "That drawing was already gone.")
            }
        except Exception as error:
            return {"own": self._panel(message, request, error)}

    def clear_drawings(self, message, request: gr.Request | None = None) -> dict:
        """{visitor} -> {own}: every drawing of the set deleted."""
        try:
            visitor = self._visitor(message, request)
            count = visitor.digits.clear()
            return {"own": own_html(visitor.digits, f"Deleted all {count} drawings of your set.")}
        except Exception as error:
            return {"own": self._panel(message, request, error)}

    def own_set(self, message, request: gr.Request | None = None) -> dict:
        """{visitor} -> {own}: the set's panel as it is (after a reload, say)."""
        try:
            return {"own": own_html(self._visitor(message, request).digits)}
        except Exception as error:
            return {"own": self._panel(message, request, error)}

    def _panel(self, message, request, error: Exception) -> str:
        note = f'<span class="own-error">{html.escape(title(error))}: {error_text(error)}</span>'
        try:
            return own_html(self._visitor(message, request).digits, note)
        except Exception:
            return f'<div class="own-set">{note}</div>'

    # --- Gradio events ------------------------------------------------------------------------------

    @friendly_errors
    def finetune(self, request: gr.Request = None) -> str:
        """Queue a fine-tuning of this visitor's model on their set; the poll shows how it goes."""
        visitor = self.sessions.visitor(request)
        run = self.studio.start_tune(visitor)
        return tune_html(run, self.studio.status(visitor))

    @friendly_errors
    def download(self, request: gr.Request = None):
        """This visitor's set as a file in the layout of Keras' mnist.npz."""
        visitor = self.sessions.visitor(request)
        if visitor is None or not len(visitor.digits):
            raise ValueError("your set is empty: label some drawings first")
        folder = Path(tempfile.mkdtemp(prefix="mnist-set-"))
        path = folder / SET_FILE_NAME
        path.write_bytes(visitor.digits.to_npz())  # a fresh folder each time: nobody reads it half-written
        return gr.update(value=str(path), visible=True)

    @friendly_errors
    def upload(self, path, drawing, request: gr.Request = None) -> dict:
        """Add the drawings of an uploaded set file (x_test ones stay kept aside)."""
        visitor = self.sessions.visitor(request)
        if visitor is None:
            raise ValueError("no visitor session: reload the page")
        if not path:
            raise ValueError("no file was uploaded")
        try:
            count = visitor.digits.add_npz(path)
        except ValueError as error:
            raise ValueError(f"{Path(path).name}: {error}") from None
        # seq - 1: the page reads its drawing again (its answer is made here, not sent back from the page).
        value = {"seq": max(0, seq_of(drawing) - 1), "strokes": strokes_of(drawing), "source": "sketch",
                 "html": READING}  # fmt: skip
        return {**value, "own": own_html(visitor.digits, f"Added {count} drawings from {Path(path).name}.")}
