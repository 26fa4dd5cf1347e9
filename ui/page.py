"""The page: header, the three tabs, the one timer and the one poll; build_demo(studio) assembles them."""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from .dataset import DatasetTab
from .draw import DrawTab
from .errors import friendly_errors
from .train import TrainTab

HERE = Path(__file__).resolve().parent
CSS_PATHS = [HERE / "page.css"]
POLL_SECONDS = 1.0


def build_demo(studio, training: bool = True) -> gr.Blocks:
    """The whole page for one Studio; `training=False` leaves the Train tab out (a read-only demo)."""
    draw, train, dataset = DrawTab(studio), TrainTab(studio), DatasetTab(studio)
    # Every upload and every image shown stays in Gradio's cache folder; files older than an hour go,
    # checked every 10 minutes, and all of them at a restart.
    with gr.Blocks(title="MNIST Studio", analytics_enabled=False, delete_cache=(600, 3600)) as demo:
        gr.Markdown(
            "# MNIST Studio\nDraw a digit and watch a neural network read it; train your own network and "
            "see it learn; browse the 70,000 handwritten digits of MNIST."
        )
        with gr.Tabs():
            with gr.Tab("Draw", id="draw"):
                draw.render()
            with gr.Tab("Train", id="train", visible=training):
                train.render()
            with gr.Tab("Dataset", id="dataset"):
                dataset.render(demo.load)
        # Outside the tabs: gradio runs no timer in a tab that was never opened, and a visitor who stays
        # on Draw must still see the active model change.
        timer = gr.Timer(POLL_SECONDS)
        seen = gr.State({})

        @friendly_errors
        def poll(seen, compare):
            """Refresh the model picker and the Train tab from the server's state; unchanged parts skip."""
            studio.start_loading()  # a no-op once started; needed under `gradio app.py`, which skips main()
            seen = dict(seen or {})
            keys = {"model": draw.poll_keys(), **train.poll_keys(bool(compare))}
            changed = {group: seen.get(group) != key for group, key in keys.items()}
            parts = draw.poll_part(changed["model"]) + train.poll_part(changed, keys, bool(compare))
            return *parts, {**seen, **keys}

        outputs = [draw.model_status, draw.model_picker, *train.poll_outputs(), seen]
        gr.on(
            [demo.load, timer.tick, train.compare.change],
            poll,
            [seen, train.compare],
            outputs,
            api_name="poll",
            show_progress="hidden",
            concurrency_limit=None,
            concurrency_id="poll",
        )
    return demo
