"""Each Gradio behaviour that ui/workarounds.py works around, checked on the installed Gradio: a test here
fails when Gradio changes the behaviour, so the workaround can be dropped or redone."""

import inspect
import os

import gradio as gr
import numpy as np
import pytest
from gradio.components.base import server
from gradio.data_classes import FileData
from PIL import Image

from ui.workarounds import GRADIO_VERSION, WORKAROUNDS, analytics_settings


def test_the_workarounds_were_seen_on_the_installed_gradio():
    assert gr.__version__ == GRADIO_VERSION, "Gradio changed: check each workaround in ui/workarounds.py"
    here = {name for name, _ in inspect.getmembers(__import__(__name__), inspect.isfunction)}
    for workaround in WORKAROUNDS:
        name = workaround.test.split("::")[-1]
        assert name in here or workaround.test.startswith("tests/"), workaround.test


def test_the_queue_reads_the_analytics_settings(monkeypatch):
    monkeypatch.delenv("GRADIO_ANALYTICS_MAX_EVENTS", raising=False)
    monkeypatch.delenv("GRADIO_ANALYTICS_CACHE_FREQUENCY", raising=False)
    analytics_settings()
    assert os.environ["GRADIO_ANALYTICS_MAX_EVENTS"] == "1000"
    with gr.Blocks() as demo:
        gr.Markdown("x")
    from gradio.queueing import Queue

    queue = Queue(live_updates=False, concurrency_count=None, update_intervals=1, max_size=None, blocks=demo)
    assert queue.ANALYTICS_MAX_EVENTS == 1000 and queue.ANAYLTICS_CACHE_FREQUENCY == 1000


def test_gr_image_decodes_uploads_and_gr_file_does_not(tmp_path, monkeypatch):
    path = tmp_path / "digit.png"
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(path)
    opened = []
    real_open = Image.open
    monkeypatch.setattr(Image, "open", lambda *a, **k: opened.append(a) or real_open(*a, **k))
    payload = FileData(path=str(path), orig_name="digit.png")
    gr.Image(type="filepath").preprocess(payload)
    assert opened, "gr.Image no longer decodes uploads: photos could go through it again"
    opened.clear()
    assert gr.File(type="filepath").preprocess(payload) == str(path)
    assert not opened


def test_server_functions_must_be_plain_functions():
    class Tab:
        def classify(self, drawing):
            return drawing

    with pytest.raises(AttributeError):
        server(Tab().classify)
    assert server(lambda drawing: drawing)._is_server_fn


def test_lineplot_still_has_no_markers():
    parameters = inspect.signature(gr.LinePlot.__init__).parameters
    assert not {"markers", "points", "point", "show_points"} & set(parameters)
    assert gr.LinePlot(x="x", y="y").postprocess(None) is None
    import pandas as pd

    value = gr.LinePlot(x="x", y="y").postprocess(pd.DataFrame({"x": [1.0], "y": [2.0]}))
    assert value.mark == "line"


def test_a_skipped_output_builds_a_new_component():
    import asyncio

    from gradio.state_holder import SessionState

    with gr.Blocks() as demo:
        status = gr.Markdown("a")
        button = gr.Button()
        button.click(lambda: gr.skip(), None, status)
    state = SessionState(demo)
    block_fn = demo.fns[0]
    asyncio.run(demo.postprocess_data(block_fn, gr.skip(), state))
    assert state[status._id] is not status, "a skip no longer builds a component: revisit ui/train.py's poll"
    plain = SessionState(demo)
    asyncio.run(demo.postprocess_data(block_fn, "b", plain))
    assert plain[status._id] is status  # a plain value reuses the component


def test_a_call_stream_carries_every_event_of_its_session():
    import threading
    import time

    import httpx

    with gr.Blocks() as demo:
        box = gr.Textbox()
        gr.Button().click(lambda: time.sleep(1.0) or "slow", None, box, api_name="slow")
        gr.Button().click(lambda: "fast", None, box, api_name="fast")
    demo.queue().launch(server_name="127.0.0.1", prevent_thread_lock=True, quiet=True)
    try:
        base, body = f"{demo.local_url}gradio_api/call", {"data": [], "session_hash": "one-session"}
        events = {
            name: httpx.post(f"{base}/{name}", json=body).json()["event_id"] for name in ("slow", "fast")
        }
        lines: dict[str, list[str]] = {}

        def read(name):
            lines[name] = []
            try:
                with httpx.stream("GET", f"{base}/{name}/{events[name]}", timeout=20) as stream:
                    lines[name] += [line for line in stream.iter_lines() if line.startswith("data:")]
            except httpx.HTTPError as error:  # the stream that lost its messages may also be cut short
                lines[name].append(type(error).__name__)

        slow = threading.Thread(target=read, args=("slow",))
        slow.start()
        time.sleep(0.1)
        read("fast")
        slow.join(30)
    finally:
        demo.close()
    # The slow call's stream gets the fast call's result first; the fast call's stream gets none.
    assert lines["slow"][0] == 'data: ["fast"]', "each /call stream now keeps to its own event: " + str(lines)
    assert 'data: ["fast"]' not in lines["fast"]
