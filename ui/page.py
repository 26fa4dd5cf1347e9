"""The page: header, the three tabs, the watcher and the one poll; build_demo(studio) assembles them."""

from __future__ import annotations

import hashlib
from pathlib import Path

import gradio as gr

from .dataset import DatasetTab
from .draw import DrawTab, empty_value
from .errors import friendly_errors
from .session import Sessions
from .train import TrainTab

HERE = Path(__file__).resolve().parent
CSS_PATHS = [HERE / "page.css"]
POLL_SECONDS = 1.0


def build_demo(studio, training: bool = True) -> gr.Blocks:
    """The whole page for one Studio; `training=False` leaves the Train tab out (a read-only demo)."""
    sessions = Sessions(studio)
    draw, train, dataset = DrawTab(studio, sessions), TrainTab(studio, sessions), DatasetTab(studio, sessions)
    # Every upload and every image shown stays in Gradio's cache folder; files older than an hour go,
    # checked every 10 minutes, and all of them at a restart.
    with gr.Blocks(title="MNIST Studio", analytics_enabled=False, delete_cache=(600, 3600)) as demo:
        gr.Markdown(
            "# MNIST Studio\nDraw a digit and watch a neural network read it; train your own network and "
            "see it learn; browse the 70,000 handwritten digits of MNIST."
        )
        visitor_id = sessions.browser_state()
        with gr.Tabs():
            with gr.Tab("Draw", id="draw"):
                draw.render()
            with gr.Tab("Train", id="train", visible=training):
                train.render()
            with gr.Tab("Dataset", id="dataset"):
                dataset.render(demo.load)

        # The watcher: once a second its script asks the server function `changed` (a plain POST, no
        # queue) whether anything this page shows has changed, and only then fires `refresh`, the poll
        # below. Outside the tabs: a visitor who stays on Draw must still see their model change when
        # their run finishes, and a component in a tab never opened runs no script.
        def changed(message):  # a plain function: see ui/workarounds.py
            return watch_answer(studio, draw, train, message)

        watcher = gr.HTML(
            {"visitor": None},
            html_template='<span class="page-watch"></span>',
            js_on_load=(HERE / "watch.js").read_text(),
            server_functions=[changed],
            elem_id="page-watch",
            apply_default_css=False,
            seconds=POLL_SECONDS,
        )
        seen = gr.State({})

        @friendly_errors
        def start_session(stored, request: gr.Request = None):
            """A page has loaded (or an API client asks): its visitor id, kept by the browser."""
            visitor = sessions.start(stored, request)
            return visitor, {**empty_value(), "visitor": visitor}, {"visitor": visitor}

        session_outputs = [visitor_id, draw.pad, watcher]

        @friendly_errors
        def poll(seen, compare, request: gr.Request = None):
            """Refresh this visitor's model picker and Train tab; parts that did not change are skipped."""
            studio.start_loading()  # a no-op once started; needed under `gradio app.py`, which skips main()
            visitor = sessions.visitor(request)
            seen = dict(seen or {})
            keys = {**draw.poll_keys(visitor), **train.poll_keys(visitor, bool(compare))}
            changed = {group: seen.get(group) != key for group, key in keys.items()}
            parts = draw.poll_part(changed, visitor)
            parts += train.poll_part(changed, keys, visitor, bool(compare))
            return (
                *parts,
                draw.tune_part(changed, visitor),
                train.code_part(changed, visitor),
                {**seen, **keys},
            )

        outputs = [*draw.poll_outputs(), *train.poll_outputs(), draw.tune_status, train.code, seen]
        polling = {"fn": poll, "inputs": [seen, train.compare], "outputs": outputs, "concurrency_limit": None}
        # The page's one session event (two would race: a fresh page would get two visitor ids, its drawing
        # surface one and its Gradio session the other), then its first poll, once its visitor is known.
        demo.load(
            start_session, visitor_id, session_outputs, api_name="session", concurrency_limit=None
        ).then(**polling, api_name="first_poll", api_visibility="private")
        refresh = {**polling, "show_progress": "hidden", "concurrency_id": "poll"}
        watcher.refresh(**refresh, api_name="poll")  # a custom gr.HTML event: gr.on takes none of those
        train.compare.change(**refresh, api_name="compare", api_visibility="private")
    return demo


def watch_key(draw, train, visitor) -> str:
    """A short summary of what `visitor`'s page shows (the poll's keys): it changes when they change."""
    keys = {**draw.poll_keys(visitor), **train.poll_keys(visitor, False)}
    return hashlib.blake2b(repr(keys).encode(), digest_size=8).hexdigest()


def watch_answer(studio, draw, train, message) -> dict:
    """The watcher's server function: {visitor, key} -> {key}, the summary of what the page shows now."""
    studio.start_loading()  # a no-op once started; needed under `gradio app.py`, which skips main()
    token = message.get("visitor") if isinstance(message, dict) else None
    if not (isinstance(token, str) and token in studio.visitors):
        return {"key": None}  # not a visitor the server knows: the page's load has not run yet
    return {"key": watch_key(draw, train, studio.visitors.get(token))}
