"""The app end to end: `python app.py` in a subprocess, driven through gradio_client as a script would."""

import base64
import io
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from conftest import scan
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from mnist_core.config import DRAWN_OPTION
from mnist_core.drawn import digit_strokes, place_strokes
from mnist_core.preprocess import CANVAS_SIDE
from scripts.appserver import START_SECONDS, AppServer, copy_shipped_model

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "models" / "default.keras"
EMPTY_DRAWING = {"seq": 0, "strokes": []}  # the Draw tab's surface with nothing drawn, as the page sends it

# Every test here talks to a live server; several also train for real.
pytestmark = pytest.mark.slow


class App(AppServer):
    """A running `python app.py` (scripts/appserver.py) with its gradio_client and what it printed."""

    def __init__(self, args: list[str], models_dir: Path, env: dict | None = None, auth=None):
        super().__init__(models_dir, args=args, env=env)
        self.auth = auth
        self.drawpad: int | None = None  # the drawing surface's component id, once looked up
        try:
            self.start(START_SECONDS)
        except RuntimeError as error:
            pytest.fail(str(error))
        self.client = Client(self.url, auth=auth, verbose=False)

    def call(self, *args, api_name: str):
        return self.client.predict(*args, api_name=api_name)

    def http(self) -> httpx.Client:
        """A plain HTTP client, logged in when the app asks for a login, as the page's own requests are."""
        http = httpx.Client(base_url=self.url, timeout=60)
        if self.auth:
            login = dict(zip(("username", "password"), self.auth, strict=True))
            http.post("/login", data=login).raise_for_status()
        return http

    def server_fn(self, data, fn_name: str = "classify_strokes", http: httpx.Client | None = None, **fields):
        """The page's per-stroke message: `data` POSTed to a server function of the drawing surface."""
        http = http or self.http()
        if self.drawpad is None:
            self.drawpad = drawpad_id(http)
        body = {"data": data, "component_id": self.drawpad, "fn_name": fn_name, "session_hash": "visitor"}
        return http.post("/gradio_api/component_server", json={**body, **fields})

    def status(self) -> dict:
        return self.call(api_name="/training_status")

    def wait_for(self, condition, timeout: float = 60.0, every: float = 0.1) -> dict:
        """Poll the training status until condition(status) holds; returns that status."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.status()
            if condition(status):
                return status
            time.sleep(every)
        pytest.fail(f"training status never satisfied the condition; last: {status}")

    def close(self) -> None:
        self.stop()


def _models_dir(tmp_path: Path) -> Path:
    try:
        return copy_shipped_model(tmp_path / "models")
    except FileNotFoundError as error:
        pytest.fail(str(error))


@pytest.fixture(scope="module")
def app(tmp_path_factory, mnist_dir):
    """The app with the real data and a copy of the shipped model."""
    server = App(["--data", str(mnist_dir)], _models_dir(tmp_path_factory.mktemp("app")))
    yield server
    server.close()


@pytest.fixture(scope="module")
def offline_app(tmp_path_factory):
    """The app asked for a share link (no internet here), with a password and no MNIST data."""
    folder = tmp_path_factory.mktemp("offline")
    empty = folder / "no-data"
    empty.mkdir()
    server = App(
        ["--share", "--data", str(empty)],
        _models_dir(folder),
        env={"MNIST_STUDIO_AUTH": "ann:s3cret"},
        auth=("ann", "s3cret"),
    )
    yield server
    server.close()


def _label(output) -> str:
    return output["label"]


def drawn(digit: int, style: int = 0) -> list:
    """A real stroke sequence of `digit`, in the Draw tab's canvas pixels (560 px), as the page sends it."""
    return json.loads(json.dumps(place_strokes(digit_strokes(digit, style), CANVAS_SIDE)))


def drawpad_id(http: httpx.Client) -> int:
    """The id of the Draw tab's drawing surface (elem_id "drawpad") in the page's config."""
    components = http.get("/config").json()["components"]
    return next(c["id"] for c in components if c.get("props", {}).get("elem_id") == "drawpad")


def model_view(answer: str) -> np.ndarray:
    """The 28 x 28 image the model saw, decoded from the inline PNG of an answer's HTML."""
    found = re.search(r'<figure id="model-view"[^>]*><img src="data:image/png;base64,([\w+/=]+)"', answer)
    assert found and "What the model sees (28 × 28)" in answer, answer[:300]
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(found[1]))))


def chart_series(curves: str) -> dict[str, dict[str, tuple[int, int]]]:
    """{chart id: {series: (points, markers)}} of the Train tab's SVG curves."""
    charts = {}
    for chart, body in re.findall(r'<svg class="chart" id="([^"]+)"(.*?)</svg>', curves, re.S):
        lines = re.findall(r'<polyline class="series" data-series="([^"]+)" data-points="(\d+)"', body)
        markers = re.findall(r'<circle class="marker"[^>]*><title>([^<]+): epoch', body)
        charts[chart] = {name: (int(points), markers.count(name)) for name, points in lines}
    return charts


def test_building_the_page_does_not_load_tensorflow():
    # TensorFlow loads in a background thread after launch, so the page answers within seconds.
    probe = (
        "import sys, app; from mnist_core.studio import Studio; from ui.page import build_demo; "
        "build_demo(Studio('models')); print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def test_predict_reads_photos_of_real_test_digits(app, mnist, tmp_path):
    right = 0
    for i in range(10):
        path = scan(mnist.x_test[i], tmp_path / f"digit{i}.png")
        right += _label(app.call(handle_file(str(path)), api_name="/predict")) == str(mnist.y_test[i])
    assert right >= 9
    # The same photo uploaded in the Draw tab: its answer fills the answer panel, the drawing is kept.
    seven = scan(mnist.x_test[0], tmp_path / "seven.png")
    value = app.call(handle_file(str(seven)), {"seq": 4, "strokes": drawn(1)}, api_name="/predict_photo")
    assert value["source"] == "photo" and value["seq"] == 4 and value["strokes"] == drawn(1)
    assert '<div class="digit">7</div>' in value["html"] and model_view(value["html"]).shape == (28, 28)


def test_a_drawn_digit_is_classified_and_shown_as_the_model_sees_it(app):
    # Real stroke sequences, in the order and direction a person draws them, on the 560 px canvas.
    right = sum(_label(app.call(drawn(d), api_name="/predict_strokes")) == str(d) for d in range(10))
    assert right >= 9
    two = drawn(2)
    probabilities = app.call(two, api_name="/predict_strokes")
    assert _label(probabilities) == "2"
    assert len(probabilities["confidences"]) == 10
    assert sum(c["confidence"] for c in probabilities["confidences"]) == pytest.approx(1, abs=1e-3)

    # The answer panel: the answer, and the 28 x 28 image itself as an inline PNG, enlarged by CSS.
    value = app.call(None, {"seq": 5, "strokes": two}, api_name="/predict_photo")
    assert value["seq"] == 5 and value["source"] == "sketch" and value["strokes"] == two
    answer = value["html"]
    assert '<div class="digit">2</div>' in answer
    view = model_view(answer)
    assert view.shape == (28, 28) and view.dtype == np.uint8
    assert view[:3].max() == 0 and view.max() == 255  # white digit on black, centred like MNIST
    rows = np.flatnonzero(view.max(1) > 127)
    assert 14 <= rows[-1] - rows[0] + 1 <= 22  # scaled into MNIST's 20 x 20 box

    # The page's own path: one small POST to the surface's server function, answered with its number.
    response = app.server_fn({"seq": 6, "strokes": two})
    assert response.status_code == 200, response.text[:300]
    page = response.json()
    assert page["seq"] == 6 and '<div class="digit">2</div>' in page["html"]
    assert np.array_equal(model_view(page["html"]), view)  # the page sees what the API sees
    # Stroke by stroke, as the page sends them: the first stroke of a 4, then both.
    four = drawn(4)
    assert len(four) == 2
    answers = [app.server_fn({"seq": n, "strokes": four[:n]}).json() for n in (1, 2)]
    assert [a["seq"] for a in answers] == [1, 2] and '<div class="digit">4</div>' in answers[1]["html"]


def test_an_empty_canvas_asks_for_a_digit(app):
    probabilities = app.call([], api_name="/predict_strokes")
    assert not probabilities or probabilities.get("label") is None
    for drawing in (None, EMPTY_DRAWING, {"seq": 3, "strokes": []}):
        value = app.call(None, drawing, api_name="/predict_photo")
        assert value["strokes"] == [] and value["seq"] == (drawing or {"seq": 0})["seq"]
        assert "Draw a digit" in value["html"] and "model-view" not in value["html"]
    page = app.server_fn({"seq": 7, "strokes": []}).json()
    assert page["seq"] == 7 and "Draw a digit" in page["html"] and "model-view" not in page["html"]


def _gallery_digits(gallery) -> list[tuple[np.ndarray, str]]:
    """(28 x 28 image, caption) of each gallery item, undoing the whole-pixel 4x upscale."""
    out = []
    for item in gallery:
        image = np.asarray(Image.open(item["image"]).convert("L"))
        assert image.shape == (112, 112)
        out.append((image[::4, ::4], item["caption"]))
    return out


def test_samples_come_with_their_true_labels(app, mnist):
    index = {}
    for image, label in zip(mnist.x_test, mnist.y_test, strict=True):
        index.setdefault(image.tobytes(), set()).add(str(label))
    items = _gallery_digits(app.call("test", "any", 12, api_name="/samples"))
    assert len(items) == 12
    for image, caption in items:
        assert caption in index[image.tobytes()]  # the exact MNIST image, with its own label

    train_threes = {image.tobytes() for image in mnist.x_train[mnist.y_train == 3]}
    items = _gallery_digits(app.call("train", "3", 5, api_name="/samples"))
    assert [caption for _, caption in items] == ["3"] * 5
    assert all(image.tobytes() in train_threes for image, _ in items)


def test_dataset_overview_counts_every_digit(app, mnist):
    message, counts, means = app.call("test", api_name="/dataset_overview")
    assert "10,000 test images" in message
    assert [row[1] for row in counts["data"]] == np.bincount(mnist.y_test).tolist()
    assert [item["caption"] for item in means] == [str(d) for d in range(10)]


def test_bad_hyperparameters_are_refused_with_a_clear_message(app):
    before = app.status()["run"]
    cases = [
        (("mlp", 1000, 32, 0.001, 2000), "epochs received 1000"),
        (("mlp", 1, 32, "fast", 2000), "learning_rate received 'fast'"),
        (("mlp", 1, 32, 0.0, 2000), "expected a value in (0.0, 1.0]"),
        (("rnn", 1, 32, 0.001, 2000), "arch must be one of"),
    ]
    for args, message in cases:
        with pytest.raises(AppError) as raised:
            app.call(*args, api_name="/train")
        assert message in str(raised.value)
    assert app.status()["run"] == before  # nothing started


def test_the_drawn_styles_option_mixes_drawn_digits_into_a_run(app):
    # The Train tab's "Also learn the drawn writing styles" (issue 13): the run's config and saved command
    # carry the share, and its data have the drawn digits on top of the MNIST images asked for.
    with pytest.raises(AppError, match="drawn received 'yes'"):
        app.call("mlp", 1, 128, 0.001, 2000, "yes", api_name="/train")
    app.call("mlp", 1, 128, 0.001, 2000, True, api_name="/train")
    status = app.wait_for(lambda s: s["status"] in ("finished", "failed", "stopped"), timeout=240)
    assert status["status"] == "finished", status
    metadata = json.loads((app.models_dir / f"{status['model']}.json").read_text())
    assert metadata["config"]["drawn_share"] == DRAWN_OPTION and "--drawn-share 0.05" in metadata["command"]
    assert metadata["config"]["train_size"] == 2000


def test_a_training_run_streams_its_curves_then_saves_and_activates_the_model(app):
    started = app.call("mlp", 3, 32, 0.001, 12000, api_name="/train")
    assert started["status"] == "running"
    seen_updates = set()
    status = app.status()
    while status["status"] in ("running", "saving"):
        if status["status"] == "running":
            seen_updates.add(status["updates"])
        time.sleep(0.1)
        status = app.status()
    assert len(seen_updates - {0}) >= 3, seen_updates  # metrics arrived while it ran, not all at the end
    assert status["status"] == "finished", status
    assert status["test_accuracy"] > 0.8
    path = app.models_dir / f"{status['model']}.keras"
    metadata = json.loads(path.with_suffix(".json").read_text())
    assert path.is_file()
    assert metadata["metrics"]["test_accuracy"] == pytest.approx(status["test_accuracy"])
    assert metadata["config"]["train_size"] == 12000 and metadata["config"]["epochs"] == 3
    assert "--train-size 12000" in metadata["command"]

    poll = app.call(False, api_name="/poll")
    assert status["model"] in poll[0]  # "Active model: mlp-..." in the Draw tab
    picker = poll[1]  # the picker offers it, with its test accuracy, and shows it selected
    assert picker["value"] == status["model"]
    labels = {name: label for label, name in picker["choices"]}
    assert f"{status['test_accuracy']:.2%} test accuracy" in labels[status["model"]]
    assert "default" in labels
    charts = chart_series(poll[2])  # the live view: a line per series, a dot per point when few
    assert set(charts) == {"loss-chart", "accuracy-chart"}
    for chart in charts.values():
        assert set(chart) == {"train", "validation"}, charts
        assert chart["validation"] == (3, 3)  # one point (and dot) per epoch
        assert chart["train"][0] >= 3

    # The picker can go back to the shipped model, which reads the drawing on the canvas again.
    status_line, value = app.call("default", {"seq": 2, "strokes": drawn(7)}, None, api_name="/select_model")
    assert status_line.startswith("Active model: default")
    assert value["seq"] == 2 and '<div class="digit">7</div>' in value["html"]
    status_line, value = app.call("default", EMPTY_DRAWING, None, api_name="/select_model")
    assert status_line.startswith("Active model: default") and "Draw a digit" in value["html"]


def test_runs_of_two_visitors_queue_and_only_the_owner_can_stop_a_run(app, tmp_path, mnist):
    saved_before = sorted(app.models_dir.iterdir())
    app.call("mlp", 50, 32, 0.001, 60000, api_name="/train")
    running = app.wait_for(lambda s: s["updates"] >= 1)

    # Another visitor (another client, as another browser is) sees their own empty Train tab, and the
    # run on the class board.
    other = Client(app.url, verbose=False)
    view = other.predict(False, api_name="/poll")
    assert "No run yet" in view[2] and chart_series(view[2])["loss-chart"] == {}
    board = re.search(r'<table id="board".*?</table>', view[3], re.S)[0]  # the class board
    assert f"<tr><td>{running['run']}</td>" in board and "<td>running</td>" in board, board
    # Predictions do not wait behind the training job.
    path = scan(mnist.x_test[0], tmp_path / "seven.png")
    asked = time.monotonic()
    assert _label(app.call(handle_file(str(path)), api_name="/predict")) == "7"
    assert time.monotonic() - asked < 10

    # One run at a time each: the owner's second is refused; the other visitor's waits in the queue.
    with pytest.raises(AppError, match="one run at a time"):
        app.call("cnn", 1, 128, 0.003, 1000, api_name="/train")
    queued = other.predict("cnn", 1, 128, 0.003, 1000, api_name="/train")
    assert queued["status"] == "queued" and queued["queue_position"] == 1 and queued["starts_in_seconds"] > 0
    # Nobody but its owner stops a run: the other visitor's Stop takes their own run out of the queue.
    assert other.predict(api_name="/stop")["status"] == "cancelled"
    assert app.status()["status"] == "running"

    asked = time.monotonic()
    assert app.call(api_name="/stop")["status"] in ("stopping", "stopped")
    stopped = app.wait_for(lambda s: s["status"] == "stopped", timeout=60)
    assert time.monotonic() - asked < 30
    assert stopped["epoch"] <= running["epoch"] + 1 and stopped["progress"] < 0.2
    assert "not saved" in stopped["message"]
    assert sorted(app.models_dir.iterdir()) == saved_before

    # The app stays usable.
    assert _label(app.call(handle_file(str(path)), api_name="/predict")) == "7"


def test_share_offline_keeps_serving_and_says_so_in_one_line(offline_app, mnist, tmp_path):
    lines = [line for line in offline_app.stdout if "share" in line.lower()]
    assert len(lines) == 1 and "could not be created" in lines[0], offline_app.stdout
    assert offline_app.url in lines[0]
    assert not any("Traceback" in line for line in offline_app.stdout + offline_app.stderr)
    with pytest.raises(Exception, match="(?i)credentials|login|auth"):
        Client(offline_app.url, verbose=False)
    path = scan(mnist.x_test[0], tmp_path / "seven.png")
    assert _label(offline_app.call(handle_file(str(path)), api_name="/predict")) == "7"


def test_without_data_draw_works_and_dataset_and_train_explain(offline_app):
    message, counts, means = offline_app.call("train", api_name="/dataset_overview")
    assert "MNIST is not available" in message
    for way in ("MNIST_DATA", "data/", "--data", "internet"):
        assert way in message
    assert counts is None and not means
    for args, api_name in ((("train", "any", 4), "/samples"), (("mlp", 1, 32, 0.001, 2000), "/train")):
        with pytest.raises(AppError) as raised:
            offline_app.call(*args, api_name=api_name)
        assert "MNIST_DATA" in str(raised.value)
    poll = offline_app.call(False, api_name="/poll")
    assert "MNIST is needed to train" in poll[2] and "MNIST_DATA" in poll[2]
    assert "Draw a digit" in offline_app.call(None, None, api_name="/predict_photo")["html"]
    assert _label(offline_app.call(drawn(7), api_name="/predict_strokes")) == "7"
    page = offline_app.server_fn({"seq": 1, "strokes": drawn(7)}).json()
    assert '<div class="digit">7</div>' in page["html"]
