"""The app end to end: `python app.py` in a subprocess, driven through gradio_client as a script would."""

import base64
import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import scan
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "models" / "default.keras"
START_SECONDS = 120  # gradio import plus a busy 2-core machine
EMPTY_SKETCH = {"background": None, "layers": [], "composite": None}

# Every test here talks to a live server; several also train for real.
pytestmark = pytest.mark.slow


class App:
    """A running `python app.py`: its client, its models folder and what it printed."""

    def __init__(self, args: list[str], models_dir: Path, env: dict | None = None, auth=None):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.models_dir = models_dir
        self.auth = auth
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        command = [sys.executable, "app.py", "--host", "127.0.0.1", "--port", str(port)]
        command += ["--models-dir", str(models_dir), *args]
        self.process = subprocess.Popen(
            command,
            cwd=ROOT,
            env={**os.environ, **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        # Drain both pipes so the server never blocks on a full one.
        for pipe, lines in ((self.process.stdout, self.stdout), (self.process.stderr, self.stderr)):
            threading.Thread(target=lambda p=pipe, out=lines: out.extend(p), daemon=True).start()
        deadline = time.monotonic() + START_SECONDS
        while not any("MNIST Studio is running on" in line for line in self.stdout):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.close()
                pytest.fail(f"app did not start:\n{''.join(self.stdout)}\n{''.join(self.stderr)[-3000:]}")
            time.sleep(0.2)
        self.url = f"http://127.0.0.1:{port}/"
        self.client = Client(self.url, auth=auth, verbose=False)

    def call(self, *args, api_name: str):
        return self.client.predict(*args, api_name=api_name)

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
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()


def _models_dir(tmp_path: Path) -> Path:
    if not SHIPPED.is_file():
        pytest.fail(f"{SHIPPED} is missing: train it with python scripts/train.py --arch cnn --out {SHIPPED}")
    folder = tmp_path / "models"
    folder.mkdir()
    for suffix in (".keras", ".json"):
        shutil.copy(SHIPPED.with_suffix(suffix), folder)
    return folder


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


def test_building_the_page_does_not_load_tensorflow():
    # TensorFlow loads in a background thread after launch, so the page answers within seconds.
    probe = "import sys, app; print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))"
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


def test_a_drawn_digit_is_classified_and_shown_as_the_model_sees_it(app, mnist, tmp_path):
    # A real "2" as the strokes layer of an 560 x 560 sketch, the way gr.Sketchpad sends it.
    ink = np.asarray(Image.fromarray(mnist.x_test[1]).resize((400, 400), Image.Resampling.BILINEAR))
    layer = np.zeros((560, 560, 4), np.uint8)
    layer[80:480, 80:480, 3] = ink
    composite = np.full((560, 560, 4), 255, np.uint8)
    composite[80:480, 80:480, :3] = 255 - ink[..., None]
    files = {}
    for name, array in (("layer", layer), ("composite", composite), ("background", np.full_like(layer, 255))):
        Image.fromarray(array, "RGBA").save(tmp_path / f"{name}.png")
        files[name] = handle_file(str(tmp_path / f"{name}.png"))
    sketch = {"background": files["background"], "layers": [files["layer"]], "composite": files["composite"]}
    seen, probabilities, answer = app.call(sketch, api_name="/predict_sketch")
    assert _label(probabilities) == "2"
    assert len(probabilities["confidences"]) == 10
    assert '<div class="digit">2</div>' in answer
    # The preview is HTML: the 28 x 28 image itself as an inline PNG, enlarged in whole pixels by CSS.
    found = re.search(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', seen)
    assert found and "What the model sees (28 × 28)" in seen, seen[:300]
    view = np.asarray(Image.open(io.BytesIO(base64.b64decode(found[1]))))
    assert view.shape == (28, 28) and view.dtype == np.uint8
    assert view[:3].max() == 0 and view.max() == 255  # white digit on black, centred like MNIST
    rows = np.flatnonzero(view.max(1) > 127)
    assert 14 <= rows[-1] - rows[0] + 1 <= 22  # scaled into MNIST's 20 x 20 box


def test_an_empty_canvas_asks_for_a_digit(app):
    seen, probabilities, answer = app.call(EMPTY_SKETCH, api_name="/predict_sketch")
    assert seen is None
    assert not probabilities or probabilities.get("label") is None
    assert "Draw a digit" in answer


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
    loss_chart = poll[4]["value"]  # a gr.LinePlot update with its colour map
    assert {row[2] for row in loss_chart["data"]} == {"train", "validation"}

    # The picker can go back to the shipped model.
    answer = app.call("default", EMPTY_SKETCH, None, api_name="/select_model")
    assert answer[0].startswith("Active model: default")


def test_a_second_run_is_refused_and_stop_stops_the_first(app, tmp_path, mnist):
    saved_before = sorted(app.models_dir.iterdir())
    app.call("mlp", 50, 32, 0.001, 60000, api_name="/train")
    running = app.wait_for(lambda s: s["updates"] >= 1)

    # Another visitor (a reloaded page is one) finds the run in progress and its curves so far.
    visitor = Client(app.url, verbose=False).predict(False, api_name="/poll")
    assert f"Run {running['run']}" in visitor[3] and "samples/s" in visitor[3]
    assert {row[2] for row in visitor[4]["value"]["data"]} >= {"train"}
    # Predictions do not wait behind the training job.
    path = scan(mnist.x_test[0], tmp_path / "seven.png")
    asked = time.monotonic()
    assert _label(app.call(handle_file(str(path)), api_name="/predict")) == "7"
    assert time.monotonic() - asked < 10

    with pytest.raises(AppError) as raised:
        app.call("cnn", 1, 128, 0.003, 1000, api_name="/train")
    assert "already in progress" in str(raised.value)

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
    _, _, answer = offline_app.call(EMPTY_SKETCH, api_name="/predict_sketch")
    assert "Draw a digit" in answer
