"""The Dataset tab: random labelled samples, class counts and the mean image of each digit."""

from __future__ import annotations

import html

import gradio as gr
import pandas as pd

from mnist_core.data import MnistDataError, MnistNotFoundError

from .errors import friendly_errors

DIGIT_CHOICES = [("any", "any")] + [(str(digit), str(digit)) for digit in range(10)]


class DatasetTab:
    """The Dataset tab's handlers and layout."""

    def __init__(self, studio):
        self.studio = studio

    @friendly_errors
    def samples(self, split, digit, count):
        """Random labelled samples of a split, optionally of one digit."""
        return self.studio.samples(split, None if digit in (None, "any") else int(digit), int(count))

    @friendly_errors
    def overview(self, split):
        """Where the data comes from, its class counts and the mean image of each digit."""
        try:
            counts, means = self.studio.overview(split)
        except (MnistNotFoundError, MnistDataError) as error:
            # Not an error for the page: the tab explains how to provide MNIST instead.
            return f"**MNIST is not available.** {html.escape(str(error), quote=False)}", None, None
        frame = pd.DataFrame({"digit": [str(d) for d in range(10)], "images": [int(c) for c in counts]})
        return self.studio.data_status()[1], frame, means

    def render(self, load) -> None:
        """The tab's components and events; `load` is the page's load event."""
        status = gr.Markdown(label="Data status")
        with gr.Row():
            split = gr.Radio([("Training set", "train"), ("Test set", "test")], value="train", label="Split")
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
