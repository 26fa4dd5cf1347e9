"""The tabs' handlers called directly with a real Studio (real model, real data), without a server."""

import ast
import re
import time
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
from conftest import ready_studio, scan

from mnist_core.config import TrainConfig
from mnist_core.drawn import digit_strokes, place_strokes, render_sketch
from mnist_core.preprocess import BRUSH_WIDTH, CANVAS_SIDE, PEN_WIDTH, strokes_to_mnist, to_mnist
from mnist_core.studio import Studio
from ui.charts import MARKERS_BELOW
from ui.draw import EMPTY_ANSWER, DrawTab
from ui.errors import friendly_errors
from ui.session import Sessions
from ui.train import TrainTab, describe

ROOT = Path(__file__).resolve().parents[1]
BOX = (0.33, 0.2, 0.67, 0.8)  # where a person draws a digit on the canvas


@pytest.fixture(scope="module")
def studio(tmp_path_factory, mnist):
    studio = ready_studio(tmp_path_factory.mktemp("ui") / "models", mnist)
    assert studio.predictor.has_model, studio.model_error
    return studio


def strokes_of(digit: int, style: int = 0, box=BOX) -> list:
    """A digit's strokes in canvas pixels, as the page sends them: lists of [x, y]."""
    return [
        [[round(x, 1), round(y, 1)] for x, y in s]
        for s in place_strokes(digit_strokes(digit, style), 560, box)
    ]


def shown_digit(html: str) -> str | None:
    match = re.search(r'<div class="digit">(\d)</div>', html)
    return match[1] if match else None


def test_the_server_reads_the_strokes_as_the_canvas_draws_them_with_mnists_pen():
    # What the model reads from the points is the drawing the visitor made, drawn with MNIST's pen for its
    # size (issue 13: the 22 px brush fills small loops): the same strokes painted on a 560 px canvas with a
    # brush preprocess.PEN_WIDTH of their span and read like a picture of it give the same 28 x 28 image,
    # drawn large or small. (Boxes where that pen is far from preprocess.THICKEN_BELOW: right at that
    # threshold, the two renderings' half-pixel differences decide whether the strokes are thickened.)
    for box in ((0.35, 0.26, 0.65, 0.72), (0.43, 0.38, 0.57, 0.62)):
        for digit, style in ((1, 2), (4, 0), (6, 1), (8, 1)):
            strokes = strokes_of(digit, style, box=box)
            span = np.ptp(np.concatenate([np.asarray(s) for s in strokes]), 0).max()
            from_points = strokes_to_mnist(strokes)
            from_canvas = to_mnist(render_sketch(strokes, CANVAS_SIDE, PEN_WIDTH * span))
            assert from_points.shape == (28, 28)
            # Centring moves a digit by whole pixels; half a pixel of rounding may put the two 1 px apart.
            shifts = [np.roll(from_canvas, (dy, dx), (0, 1)) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
            difference = min(float(np.abs(from_points - shifted).mean()) for shifted in shifts)
            assert difference < 0.03, (box, digit, style, difference)
    # Not the canvas brush: on a small drawing it would have drawn a fatter stroke.
    small = strokes_of(8, 1, box=(0.45, 0.42, 0.55, 0.58))  # 90 px tall: a 13 px pen
    fat = to_mnist(render_sketch(small, CANVAS_SIDE, BRUSH_WIDTH))
    assert (fat > 0.5).sum() > 1.2 * (strokes_to_mnist(small) > 0.5).sum()


def test_a_stroke_message_gets_the_answer_with_its_number(studio):
    tab = DrawTab(studio, Sessions(studio))
    for digit in (0, 1, 3, 7):
        answer = tab.classify_strokes({"seq": 41 + digit, "strokes": strokes_of(digit)})
        assert answer["seq"] == 41 + digit
        assert shown_digit(answer["html"]) == str(digit), answer["html"][:200]
        assert 'id="model-view"' in answer["html"] and answer["html"].count("<li") == 10
    assert tab.classify_strokes({"seq": 3, "strokes": []}) == {"seq": 3, "html": EMPTY_ANSWER}


@pytest.mark.parametrize(
    "drawing, expected",
    [
        ({"seq": 1, "strokes": "not a list"}, "expected a list of at most 200 strokes"),
        ({"seq": 1, "strokes": [[[1, 2]]] * 201}, "received 201 strokes"),
        ({"seq": 1, "strokes": [[[1, 2]] * 10_001]}, "at most 10,000 points"),
        ({"seq": 1, "strokes": [[["a", "b"]]]}, "number pairs"),
        ({"seq": 1, "strokes": [[[1, float("nan")]]]}, "number pairs"),
        ({"seq": -5, "strokes": []}, "seq: expected a whole number"),
        ({"seq": "x" * 10_000, "strokes": []}, "seq: expected a whole number"),
    ],
)
def test_a_bad_stroke_message_is_answered_with_a_message_not_a_failure(studio, drawing, expected):
    answer = DrawTab(studio, Sessions(studio)).classify_strokes(drawing)
    assert expected in answer["html"] and 'class="answer empty error"' in answer["html"]
    assert shown_digit(answer["html"]) is None
    assert len(answer["html"]) < 1000  # a huge value is never echoed back


def test_a_photo_is_read_and_picking_a_model_keeps_its_answer(studio, mnist, tmp_path):
    tab = DrawTab(studio, Sessions(studio))
    index = int(np.flatnonzero(mnist.y_test == 2)[0])
    photo = str(scan(mnist.x_test[index], tmp_path / "two.png"))
    drawing = {"seq": 5, "source": "sketch", "strokes": strokes_of(7), "html": ""}
    shown = tab.predict_photo(photo, drawing)
    assert shown["source"] == "photo" and shown_digit(shown["html"]) == "2" and shown["seq"] == 5
    assert shown["strokes"] == drawing["strokes"]  # the drawing stays as it is
    status, again = tab.select_model("default", shown, photo)
    assert status.startswith("Active model: default") and shown_digit(again["html"]) == "2"
    # Without a photo shown, a model change reads the drawing again.
    status, redrawn = tab.select_model("default", drawing, None)
    assert redrawn["source"] == "sketch" and shown_digit(redrawn["html"]) == "7" and redrawn["seq"] == 5
    # The photo removed: the drawing's answer comes back.
    assert shown_digit(tab.predict_photo(None, shown)["html"]) == "7"
    assert tab.predict(photo)["2"] > 0.5


def test_core_errors_reach_the_page_as_messages():
    @friendly_errors
    def handler():
        raise ValueError("epochs received 0; expected a value in [1, 100]")

    with pytest.raises(gr.Error) as caught:
        handler()
    assert caught.value.title == "Invalid input" and "expected a value in [1, 100]" in caught.value.message
    with pytest.raises(gr.Error, match="no model named"):
        empty = Studio(ROOT / "models")
        DrawTab(empty, Sessions(empty)).select_model("no-such-model", None, None)


@pytest.mark.slow
def test_a_one_epoch_run_on_1000_images_shows_its_points_never_an_empty_chart(studio):
    tab = TrainTab(studio, Sessions(studio))
    status = tab.train("mlp", 1, 128, 0.001, 1000, None)  # 8 batches
    assert status["status"] == "running"
    deadline = time.monotonic() + 180
    while studio.latest_run().active:  # trained, then evaluated and saved
        assert time.monotonic() < deadline, studio.status()
        time.sleep(0.1)
    keys = tab.poll_keys(None, False)
    live, below, status = tab.poll_part(dict.fromkeys(keys, True), keys, None, False)
    assert "finished" in live and status["status"] == "finished"
    assert re.search(r'id="board".*<td>finished</td>', below, re.S)
    curves = live
    for chart in ("loss-chart", "accuracy-chart"):
        svg = re.search(rf'<svg[^>]*id="{chart}".*?</svg>', curves, re.S)[0]
        series = dict(re.findall(r'data-series="([^"]+)" data-points="(\d+)"', svg))
        assert set(series) == {"train", "validation"}, series
        assert int(series["train"]) >= 1 and int(series["validation"]) == 1
        total = sum(int(n) for n in series.values())
        assert total < MARKERS_BELOW * 2 and svg.count('class="marker"') == total  # each point a dot
    epochs = re.search(r'<table id="train-epochs".*?</table>', live, re.S)[0]
    assert epochs.count("<tr>") == 2  # the header and one epoch
    assert '<div id="confusion">' in below and below.count("<figure>") >= 1  # the results' images


def test_the_progress_line_says_estimating_until_there_is_a_rate():
    status = {
        "run": 1,
        "status": "running",
        "config": TrainConfig().to_dict(),
        "epoch": 1,
        "epochs": 10,
        "step": 1,
        "steps": 1875,
        "samples_per_second": 90.0,
        "eta_seconds": None,
    }
    assert "estimating the time left" in describe(status)[1]
    assert "about 1 min 05 s left" in describe({**status, "eta_seconds": 65})[1]


def imported_modules(folder: Path) -> dict[str, set[str]]:
    """The top-level modules each .py file in `folder` imports, anywhere in it (lazy imports too)."""
    found = {}
    for path in folder.glob("*.py"):
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
        found[path.name] = names
    return found


def test_the_arrows_point_one_way():
    # app.py -> ui -> mnist_core; mnist_core knows nothing of Gradio, ui nothing of Keras.
    for name, modules in imported_modules(ROOT / "mnist_core").items():
        assert not modules & {"gradio", "ui", "app", "scripts"}, (name, modules)
    for name, modules in imported_modules(ROOT / "ui").items():
        assert not modules & {"tensorflow", "keras", "app", "scripts"}, (name, modules)
    assert imported_modules(ROOT)["app.py"] & {"gradio", "keras", "tensorflow"} == set()


def test_the_code_panel_follows_the_settings_and_waits_while_a_value_is_being_typed(studio):
    tab = TrainTab(studio, Sessions(studio))
    code = tab.settings_code("cnn", 18, 256, 0.004, 60000, False)
    assert "layers.Conv2D" in code.value and "batch_size = 256" in code.value
    assert "mnist_core" not in code.value
    compile(code.value, "train_cnn.py", "exec")
    assert "Dense(128" in tab.settings_code("mlp", 3, 64, 0.01, 5000, False).value
    assert tab.settings_code("mlp", "ten", 64, 0.01, 5000, False) == gr.skip()  # not valid yet: unchanged


def test_the_why_view_comes_with_the_answer_when_the_page_asks_for_it(studio):
    tab = DrawTab(studio, Sessions(studio))
    plain = tab.classify_strokes({"seq": 1, "strokes": strokes_of(7)})["html"]
    assert "why-view" not in plain
    answer = tab.classify_strokes({"seq": 2, "strokes": strokes_of(7), "why": True})["html"]
    assert shown_digit(answer) == "7" and 'id="why-view"' in answer and "pushed towards 7" in answer
    assert "why-view" not in tab.classify_strokes({"seq": 3, "strokes": strokes_of(7), "why": "yes"})["html"]
