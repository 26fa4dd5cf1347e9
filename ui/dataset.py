"""The Dataset tab: random labelled samples, class counts and the mean image of each digit, of MNIST's
training or test set or of the visitor's own digits (collected in Draw, or uploaded)."""

from __future__ import annotations

import html

import gradio as gr
import numpy as np
import pandas as pd

from mnist_core.data import MAX_SAMPLES, MnistDataError, MnistNotFoundError
from mnist_core.plots import upscale
from mnist_core.runs import GALLERY_SCALE

from .errors import friendly_errors

DIGIT_CHOICES = [("any", "any")] + [(str(digit), str(digit)) for digit in range(10)]
SPLITS = [("Training set", "train"), ("Test set", "test"), ("Your digits", "own")]


def _digit(digit) -> int | None:
    if digit in (None, "any"):
        return None
    if str(digit) not in {str(d) for d in range(10)}:
        raise ValueError(f"digit must be 'any' or 0-9, received {digit!r:.40}")
    return int(digit)


class DatasetTab:
    """The Dataset tab's handlers and layout."""

    def __init__(self, studio, sessions):
        self.studio = studio
        self.sessions = sessions

    def _own(self, request):
        visitor = self.sessions.visitor(request)
        if visitor is None:
            raise ValueError("no visitor session: reload the page")
        return visitor.digits

    @friendly_errors
    def samples(self, split, digit, count, request: gr.Request = None):
        """Random labelled samples of a split (or of your own digits), optionally of one digit."""
        if split != "own":
            return self.studio.samples(split, _digit(digit), int(count))
        if isinstance(count, bool) or not isinstance(count, int | float) or not 1 <= count <= MAX_SAMPLES:
            raise ValueError(f"count must be from 1 to {MAX_SAMPLES}, received {count!r:.40}")
        items = [item for item in self._own(request).items if _digit(digit) in (None, item.label)]
        if not items:
            gr.Warning("Your digits hold no such drawing yet: label some in the Draw tab, or upload a set.")
        chosen = np.random.default_rng().permutation(len(items))[: int(count)]
        return [
            (upscale(items[i].image, GALLERY_SCALE), f"{items[i].label}{' (kept aside)' * items[i].held_out}")
            for i in sorted(chosen)
        ]

    @friendly_errors
    def overview(self, split, request: gr.Request = None):
        """Where the data comes from, its class counts and the mean image of each digit."""
        if split == "own":
            return self._own_overview(self._own(request))
        try:
            counts, means = self.studio.overview(split)
        except (MnistNotFoundError, MnistDataError) as error:
            # Not an error for the page: the tab explains how to provide MNIST instead.
            return f"**MNIST is not available.** {html.escape(str(error), quote=False)}", None, None
        frame = pd.DataFrame({"digit": [str(d) for d in range(10)], "images": [int(c) for c in counts]})
        return self.studio.data_status()[1], frame, means

    @staticmethod
    def _own_overview(digits):
        x, y = digits.arrays("all")
        counts = np.bincount(y, minlength=10)
        frame = pd.DataFrame({"digit": [str(d) for d in range(10)], "images": [int(c) for c in counts]})
        means = [
            (upscale(x[y == d].mean(axis=0) / 255.0, GALLERY_SCALE), str(d)) for d in range(10) if counts[d]
        ]
        aside = int(digits.counts("test").sum())
        text = (
            f"Your digits: {len(y)} drawings, {aside} of them kept aside to measure on. Only you see them; "
            "they stay in the server's memory while you use the app and go with your session (download "
            "them in the Draw tab to keep them)."
        )
        return text, frame, means

    def render(self, load) -> None:
        """The tab's components and events; `load` is the page's load event."""
        status = gr.Markdown(label="Data status")
        with gr.Row():
            split = gr.Radio(SPLITS, value="train", label="Split")
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
        limits = {"concurrency_limit": 2, "concurrency_id": "dataset"}
        show_button.click(self.samples, [split, digit, count], samples, api_name="samples", **limits)
        gr.on(
            [load, split.change],
            self.overview,
            split,
            [status, counts_plot, means],
            api_name="dataset_overview",
            **limits,
        )
