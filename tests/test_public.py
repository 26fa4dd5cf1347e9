"""A public demo: bad input through the API, faults, access control and abuse limits, on a live server."""

import gc
import os
import random
import re
import shutil
import signal
import sys
import time
import weakref
from pathlib import Path
from types import SimpleNamespace

import httpx
import numpy as np
import pytest
from conftest import scan
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image
from test_app import EMPTY_DRAWING, App, _models_dir, drawn, drawpad_id, model_view

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from benchmark import proc_status_bytes  # noqa: E402  (scripts/benchmark.py)

from mnist_core import run_tables
from mnist_core.config import RunLimitError, TrainConfig, TrainingDisabledError
from mnist_core.preprocess import CANVAS_SIDE, MAX_POINTS, MAX_STROKES
from mnist_core.runs import RATE_WINDOW_SECONDS, RunLimiter
from mnist_core.store import list_models, load_model
from mnist_core.studio import Studio

pytestmark = pytest.mark.slow
USER = ("ann", "s3cret")
MAX_RUNS = 3  # per visitor and hour on the `public` server
JSON_HEADERS = {"content-type": "application/json"}
# An API call that the server must refuse without a login, one per kind of route.
PROTECTED = [
    ("GET", "/config"),
    ("GET", "/gradio_api/info"),
    ("POST", "/gradio_api/call/predict"),
    ("POST", "/gradio_api/call/train"),
    ("POST", "/gradio_api/queue/join"),
    ("POST", "/gradio_api/upload"),
]


def _bad_models(folder: Path) -> None:
    """A truncated model, a model of the wrong shape and one with Python code in it, beside the good ones."""
    import keras

    data = (folder / "default.keras").read_bytes()
    (folder / "truncated.keras").write_bytes(data[: len(data) // 2])
    wrong = keras.Sequential([keras.Input((28, 28)), keras.layers.Flatten(), keras.layers.Dense(5)])
    wrong.save(folder / "five-classes.keras")
    code = keras.Sequential(
        [keras.Input((28, 28)), keras.layers.Lambda(lambda x: x * 2.0), keras.layers.Flatten()]
        + [keras.layers.Dense(10, activation="softmax")]
    )
    code.save(folder / "lambda.keras")


@pytest.fixture(scope="module")
def public(tmp_path_factory, mnist_dir):
    """The app as a public demo: a login, a 1 MB upload limit, MAX_RUNS runs per visitor and hour."""
    folder = _models_dir(tmp_path_factory.mktemp("public"))
    for suffix in (".keras", ".json"):
        shutil.copy(folder / f"default{suffix}", folder / f"other{suffix}")
    _bad_models(folder)
    args = ["--data", str(mnist_dir), "--max-file-size", "1mb", "--max-runs-per-hour", str(MAX_RUNS)]
    server = App(args, folder, env={"MNIST_STUDIO_AUTH": ":".join(USER)}, auth=USER)
    _wait_for_model(server)
    yield server
    server.close()


def _wait_for_model(app: App, timeout: float = 120) -> str:
    """The Draw tab's model line once the start-up model has loaded."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = _poll(app)[0]
        if not line.startswith("Loading"):
            return line
        time.sleep(0.5)
    pytest.fail(f"the model never loaded: {line}")


def _poll(app: App) -> list:
    """The page's first refresh, as a new visitor gets it (a session's later polls skip what it has)."""
    return Client(app.url, auth=app.auth, verbose=False).predict(False, api_name="/poll")


def _active(app: App) -> str:
    """The name of the model this client (one visitor) draws with."""
    return app.call(api_name="/active_model")["name"]


def _select(app: App, name: str) -> list:
    """Pick a model as a visitor does: the page's refresh fills the picker, then a choice is made."""
    app.call(False, api_name="/poll")
    return app.call(name, EMPTY_DRAWING, None, api_name="/select_model")


def _memory_mb(app: App, field: str) -> float:
    """A memory field of the app's /proc/PID/status (VmRSS: now, VmHWM: peak), in MiB."""
    value = proc_status_bytes(app.process.pid, field)
    if value is None:
        pytest.fail(f"no {field} in /proc")
    return value / 2**20


def _rss_mb(app: App) -> float:
    return _memory_mb(app, "VmRSS")


def _peak_rss_mb(app: App) -> float:
    return _memory_mb(app, "VmHWM")


# --- access -------------------------------------------------------------------------------------


def test_auth_refuses_every_api_route_without_a_login_and_serves_with_one(public):
    anonymous = httpx.Client(base_url=public.url, timeout=30)
    for method, route in PROTECTED:
        response = anonymous.request(method, route, json={"data": []} if method == "POST" else None)
        assert response.status_code == 401, (route, response.status_code, response.text[:200])
        assert "Not authenticated" in response.text
    # The page is the login form: its config holds no layout. (Gradio 6.31 does embed the API's
    # description, endpoint names and parameters, on it; none of those can be called without a login.)
    page = anonymous.get("/").text
    assert re.search(r'"auth_required":\s*true', page) and re.search(r'"components":\s*\[\]', page)
    with pytest.raises(Exception, match="(?i)credentials|login|auth"):
        Client(public.url, verbose=False)
    with pytest.raises(Exception, match="(?i)credentials|login|auth"):
        Client(public.url, auth=("ann", "wrong"), verbose=False)

    assert anonymous.post("/login", data={"username": "ann", "password": "wrong"}).status_code == 400
    assert anonymous.post("/login", data=dict(zip(("username", "password"), USER, strict=True))).is_success
    assert anonymous.get("/config").status_code == 200
    assert public.status()["status"] in ("idle", "finished", "stopped", "failed")


def test_an_upload_over_the_size_limit_is_refused_with_a_clear_message(public, tmp_path, mnist):
    noise = np.random.default_rng(0).integers(0, 256, (800, 800, 3), dtype=np.uint8)
    big = tmp_path / "noise.png"
    Image.fromarray(noise).save(big)
    assert big.stat().st_size > 1024**2
    # gradio_client checks the limit the server announces before sending anything...
    with pytest.raises(ValueError, match="exceeds the maximum file size of 1048576 bytes"):
        public.call(handle_file(str(big)), api_name="/predict")
    # ... and the server itself refuses a raw upload that ignores it.
    raw = httpx.Client(base_url=public.url, timeout=30)
    raw.post("/login", data=dict(zip(("username", "password"), USER, strict=True)))
    response = raw.post("/gradio_api/upload", files={"files": ("noise.png", big.read_bytes(), "image/png")})
    assert response.status_code == 413 and "maximum allowed size" in response.text
    small = raw.post("/gradio_api/upload", files={"files": ("seven.png", b"x" * 1000, "image/png")})
    assert small.is_success
    path = scan(mnist.x_test[0], tmp_path / "seven.png")
    assert public.call(handle_file(str(path)), api_name="/predict")["label"] == "7"


# --- bad input ----------------------------------------------------------------------------------


def test_bad_uploads_get_a_clear_message_in_bounded_time_and_memory(public, tmp_path, mnist):
    seven = scan(mnist.x_test[0], tmp_path / "seven.png")
    assert public.call(handle_file(str(seven)), api_name="/predict")["label"] == "7"
    before = _peak_rss_mb(public)
    (tmp_path / "notes.png").write_text("these are notes, not a picture\n")
    (tmp_path / "notes.txt").write_text("these are notes, not a picture\n")
    Image.new("L", (10_000, 10_000), 255).save(tmp_path / "huge.png")  # 120 kB on disk, 100 MP
    Image.new("1", (20_000, 20_000), 1).save(tmp_path / "bomb.png")  # 90 kB on disk, 400 MP
    cases = [
        ("notes.png", "cannot identify image file 'notes.png'"),
        ("notes.txt", "Invalid file type"),  # the photo input takes images only, checked by the server
        ("huge.png", "could be decompression bomb"),
        ("bomb.png", "could be decompression bomb"),
    ]
    for name, reason in cases:
        assert (tmp_path / name).stat().st_size < 1024**2  # under the upload limit: this is the image check
        file = handle_file(str(tmp_path / name))
        # The same file through the API, as a photo in the Draw tab (beside a drawing or not), and as the
        # photo shown when a model is picked.
        calls = [
            ((file,), "/predict"),
            ((file, None), "/predict_photo"),
            ((file, {"seq": 1, "strokes": drawn(3)}), "/predict_photo"),
            (("default", {"seq": 1, "source": "photo", "strokes": []}, file), "/select_model"),
        ]
        public.call(False, api_name="/poll")  # fills this session's picker, as a page load does
        for args, api_name in calls:
            asked = time.monotonic()
            if api_name == "/select_model" and reason != "Invalid file type":
                # The model switch stands; the photo that cannot be read says why in the answer panel.
                status, shown = public.call(*args, api_name=api_name)
                message = shown["html"]
                assert status.startswith("Active model: default") and 'class="digit"' not in message
            else:
                with pytest.raises(AppError) as raised:
                    public.call(*args, api_name=api_name)
                message = str(raised.value)
            assert time.monotonic() - asked < 10, (name, api_name)
            assert reason in message and "/tmp/" not in message, message
    # Nothing was decoded: a decoded 10000 x 10000 RGB image alone would take 300 MB.
    assert _peak_rss_mb(public) - before < 150
    assert public.call(handle_file(str(seven)), api_name="/predict")["label"] == "7"


def test_bad_and_huge_stroke_messages_are_refused_clearly_in_bounded_time_and_memory(public):
    # The drawing arrives as numbers, from the page's per-stroke message or through the API; whatever a
    # visitor writes there is checked before anything is drawn, and the refusal says what was wrong.
    http = public.http()
    before = _peak_rss_mb(public)
    point = [280.5, 80.25]
    cases = [
        ("strokes", "received str"),
        ({"strokes": []}, "received dict"),
        ([[point]] * (MAX_STROKES + 1), f"received {MAX_STROKES + 1} strokes"),
        ([[point] * (MAX_POINTS + 1)], f"at most {MAX_POINTS:,} points in all, received {MAX_POINTS + 1:,}"),
        ([[point] * 5000] * 3, "received 15,000"),  # the points of all strokes count together
        ([[["a", "b"]]], "stroke 0: expected a list of [x, y] number pairs"),
        ([[280, 80]], "stroke 0: expected a list of [x, y] number pairs, received [280, 80]"),
        ([[point], [[280, 80, 3]]], "stroke 1: expected a list of [x, y] number pairs"),
        ([[point], "x" * 500_000], "stroke 1: expected"),
    ]
    for strokes, reason in cases:
        asked = time.monotonic()
        with pytest.raises(AppError) as raised:
            public.call(strokes, api_name="/predict_strokes")
        refusal = str(raised.value)
        assert reason in refusal and "expected" in refusal, (reason, refusal[:300])
        assert len(refusal) < 300  # a huge value is not echoed back
        # The page's own message gets the same words, in the answer panel, with its number.
        response = public.server_fn({"seq": 9, "strokes": strokes}, http=http)
        assert response.status_code == 200, response.text[:300]
        answer = response.json()
        assert answer["seq"] == 9 and reason in answer["html"] and "model-view" not in answer["html"]
        assert len(answer["html"]) < 600
        # And so does the drawing on the canvas, when a photo is removed.
        with pytest.raises(AppError, match=re.escape(reason)):
            public.call(None, {"seq": 9, "strokes": strokes}, api_name="/predict_photo")
        assert time.monotonic() - asked < 20, (reason, time.monotonic() - asked)
    # Bodies over 1 MiB are refused at the door (ui/limits.py), before anything parses them; Gradio would
    # read any JSON body whole (a 15 MB message cost ~190 MB), with or without a Content-Length.
    for strokes in ([[point] * 100_000], [[point], "x" * 1_100_000]):
        response = public.server_fn({"seq": 9, "strokes": strokes}, http=http)
        assert response.status_code == 413 and "request body over 1024 kB" in response.text
        with pytest.raises(httpx.HTTPStatusError, match="413"):
            public.call(strokes, api_name="/predict_strokes")
    chunks = (b'{"data": {"seq": 1, "strokes": [' + b"[[1, 2]]," * 200_000 + b"[]]}}" for _ in range(1))
    response = http.post("/gradio_api/component_server", content=chunks, headers=JSON_HEADERS)
    assert response.status_code == 413
    # What JSON allows beyond numbers, and a drawing number the page could never send.
    for text, reason in (
        ('{"seq": 1, "strokes": [[[1, NaN]]]}', "received [[1, nan]]"),
        ('{"seq": 1, "strokes": [[[1, Infinity]]]}', "received [[1, inf]]"),
        ('{"seq": -1, "strokes": []}', "seq: expected a whole number"),
        ('{"seq": 1e30, "strokes": []}', "seq: expected a whole number"),
        ('{"seq": "1", "strokes": []}', "seq: expected a whole number"),
    ):
        body = f'{{"data": {text}, "component_id": {drawpad_id(http)}, "fn_name": "classify_strokes", '
        body += '"session_hash": "visitor"}'
        response = http.post("/gradio_api/component_server", content=body, headers=JSON_HEADERS)
        assert response.status_code == 200 and reason in response.json()["html"], (text, response.text[:300])
    # Far-off points are drawn off the canvas, not on a canvas grown to reach them.
    far = [[[-1e308, -1e308], [1e308, 1e308]], [[CANVAS_SIDE * 1000, 0]]]
    assert len(public.call(far, api_name="/predict_strokes")["confidences"]) == 10
    assert _peak_rss_mb(public) - before < 60  # the largest message parsed is under 1 MiB
    # The server still answers, and right.
    assert public.call(drawn(7), api_name="/predict_strokes")["label"] == "7"
    assert '<div class="digit">7</div>' in public.server_fn({"seq": 10, "strokes": drawn(7)}).json()["html"]


def test_only_the_drawing_surface_s_server_function_answers_and_posted_images_are_not_kept(public):
    # gr.Sketchpad's accept_blobs server function kept what was posted to it in memory until an event
    # read the sketch: unchecked, any visitor could fill the server's memory. No component offers it now,
    # nor any other method than the one server function the page calls.
    http = public.http()
    components = http.get("/config").json()["components"]
    kinds = {c["type"] for c in components}
    assert not kinds & {"sketchpad", "imageeditor", "paint"}, kinds
    pad = drawpad_id(http)
    photo = next(c["id"] for c in components if c.get("props", {}).get("elem_id") == "photo")
    for component, fn_name in (
        (pad, "accept_blobs"),
        (photo, "accept_blobs"),
        (photo, "classify_strokes"),  # the server function belongs to the drawing surface alone
        (pad, "classify"),
        (pad, "preprocess"),
        (pad, "postprocess"),
        (pad, "__init__"),
        (pad, "no_such_function"),
    ):
        response = http.post(
            "/gradio_api/component_server",
            json={"data": {}, "component_id": component, "fn_name": fn_name, "session_hash": "visitor"},
        )
        assert response.status_code == 404 and "Function not found" in response.text, (fn_name, response.text)
    fields = {"session_hash": "visitor", "fn_name": "accept_blobs", "type": "layer", "index": "0"}
    before = _rss_mb(public)
    for number in range(40):
        blob = ("layer.png", os.urandom(900_000), "image/png")  # under the upload limit
        component = (pad, photo)[number % 2]
        response = http.post(
            "/gradio_api/component_server",
            data={**fields, "component_id": str(component), "id": f"b{number}"},
            files=[("file", blob)],
        )
        assert response.status_code == 404 and "Function not found" in response.text, response.text[:200]
    assert _rss_mb(public) - before < 15  # 40 kept blobs would hold 36 MB
    # Nor does the page's own message keep anything: 40 drawings from 40 sessions, at a person's pace (a
    # message without a visitor id counts against its address, at most 8 a second).
    before = _rss_mb(public)
    seven = drawn(7)
    for number in range(40):
        response = public.server_fn({"seq": number, "strokes": seven}, http=http, session_hash=f"v{number}")
        assert response.json()["seq"] == number and '<div class="digit">7</div>' in response.json()["html"]
        time.sleep(0.13)
    assert _rss_mb(public) - before < 15
    # Faster than that, one client is slowed down with a message, and others still draw.
    answers = [public.server_fn({"seq": n, "strokes": seven}, http=http).json()["html"] for n in range(40)]
    assert sum("too many drawings at once" in html for html in answers) >= 10
    visitor, *_ = Client(public.url, auth=public.auth, verbose=False).predict(None, api_name="/session")
    answer = public.server_fn({"seq": 1, "strokes": seven, "visitor": visitor}, http=http).json()["html"]
    assert '<div class="digit">7</div>' in answer  # a visitor with their own id has their own budget
    # The sketchpad's routes are gone from the API; the drawing's are there.
    endpoints = set(public.client.view_api(print_info=False, return_format="dict")["named_endpoints"])
    assert not endpoints & {"/predict_sketch", "/classify_drawing", "/activate_model"}, endpoints
    assert {"/predict", "/predict_strokes", "/predict_photo", "/select_model", "/poll"} <= endpoints


def test_uploads_bypass_gradio_decoding_without_writing_beside_the_code(public):
    # The photo input is a gr.File: Gradio hands the handler a path and decodes nothing itself (gr.Image
    # decodes a data: URL in full before any handler runs); the image is opened in mnist_core.preprocess.
    config = public.http().get("/config").json()
    types = {c["id"]: c["type"] for c in config["components"]}
    inputs = {d["api_name"]: [types[i] for i in d["inputs"]] for d in config["dependencies"] if d["api_name"]}
    assert inputs["predict"] == ["file"] and inputs["predict_photo"][0] == "file", inputs
    assert inputs["select_model"][2] == "file", inputs
    assert "image" not in {kind for kinds in inputs.values() for kind in kinds}, inputs
    # A component subclass would make Gradio write a .pyi file beside the module that defines it.
    root = Path(__file__).resolve().parents[1]
    assert not [*root.glob("*.pyi"), *(root / "ui").glob("*.pyi"), *(root / "mnist_core").glob("*.pyi")]


def test_a_dot_through_the_api(public):
    dot = [[[CANVAS_SIDE / 2, CANVAS_SIDE / 2]]]  # one tap of the 22 px brush
    probabilities = public.call(dot, api_name="/predict_strokes")
    assert len(probabilities["confidences"]) == 10
    assert sum(c["confidence"] for c in probabilities["confidences"]) == pytest.approx(1, abs=1e-3)
    answer = public.call(None, {"seq": 1, "strokes": dot}, api_name="/predict_photo")["html"]
    assert '<div class="digit">' in answer and model_view(answer).max() == 255

    answer = public.call(None, EMPTY_DRAWING, api_name="/predict_photo")["html"]
    assert "Draw a digit" in answer and "model-view" not in answer


def test_a_fully_inked_canvas_gets_the_empty_state_not_a_guess(public):
    side, step = CANVAS_SIDE, 20  # rows 20 px apart with the 22 px brush: not one pixel left blank
    scribble = [[point for y in range(0, side + 1, step) for point in ([0, y], [side, y])]]
    answer = public.call(None, {"seq": 1, "strokes": scribble}, api_name="/predict_photo")["html"]
    assert "Draw a digit" in answer and "model-view" not in answer  # no shape to read: no guess
    page = public.server_fn({"seq": 2, "strokes": scribble}).json()
    assert "Draw a digit" in page["html"]


def test_models_load_only_by_name_and_bad_model_files_change_nothing(public, tmp_path, mnist):
    seven = scan(mnist.x_test[0], tmp_path / "seven.png")
    before = public.call(handle_file(str(seven)), api_name="/predict")
    active = _active(public)
    public.call(False, api_name="/poll")  # fills this session's picker, as a page load does
    offered = {name for _, name in _poll(public)[1]["choices"]}  # what a newcomer's picker offers
    assert {"default", "other", "truncated", "five-classes", "lambda"} <= offered
    assert not any("/" in name or ".." in name or name.startswith(".") for name in offered)
    for name in ("../models/default", str(public.models_dir / "default.keras"), "/etc/passwd", "a/../b"):
        with pytest.raises(AppError, match="not in the list of choices|invalid model name"):
            public.call(name, EMPTY_DRAWING, None, api_name="/select_model")
    refusals = {
        "truncated": "corrupt or truncated",
        "five-classes": r"outputs shape \(None, 5\)",
        "lambda": "unsafe code was refused",
    }
    for name, reason in refusals.items():
        with pytest.raises(AppError, match=reason):
            public.call(name, EMPTY_DRAWING, None, api_name="/select_model")
        assert _active(public) == active
    assert public.call(handle_file(str(seven)), api_name="/predict") == before


def test_hyperparameters_of_any_type_sent_to_the_api_are_checked(public):
    before = public.status()
    cases = [
        (("mlp", None, 32, 0.001, 1000), "epochs received None"),
        (("mlp", [1], 32, 0.001, 1000), "epochs received [1]"),
        (("mlp", True, 32, 0.001, 1000), "expected a number"),
        (("mlp", 1, {"a": 1}, 0.001, 1000), "batch_size received {'a': 1}"),
        (("mlp", 1, 0, 0.001, 1000), "expected a value in [1, 4096]"),
        (("mlp", 1, 10**9, 0.001, 1000), "batch_size received 1000000000"),
        (("mlp", 1, 32, -1, 1000), "expected a value in (0.0, 1.0]"),
        (("mlp", 1, 32, "1e-3", 1000), "learning_rate received '1e-3'"),
        (("mlp", 1, 32, 0.001, 10**9), "expected a value in [100, 60000]"),
        (("mlp", 1, 32, 0.001, 1.5), "whole number"),
        ((None, 1, 32, 0.001, 1000), "arch must be one of"),
        ((["mlp"], 1, 32, 0.001, 1000), "arch must be one of"),
    ]
    for args, message in cases:
        with pytest.raises(AppError) as raised:
            public.call(*args, api_name="/train")
        assert message in str(raised.value), (args, str(raised.value))
    assert public.status() == before  # nothing started, and refused calls do not count as runs


# --- faults -------------------------------------------------------------------------------------


def test_stopping_mid_epoch_keeps_the_previous_model_and_the_app_answers(public, tmp_path, mnist):
    _select(public, "other")
    files_before = sorted(public.models_dir.iterdir())
    seven = scan(mnist.x_test[0], tmp_path / "seven.png")
    public.call("mlp", 5, 32, 0.001, 60000, api_name="/train")
    running = public.wait_for(lambda s: s["status"] == "running" and s.get("step", 0) > 0, timeout=120)
    assert running["epoch"] == 1 and running["progress"] < 0.2  # well inside the first epoch
    public.call(api_name="/stop")
    stopped = public.wait_for(lambda s: s["status"] == "stopped", timeout=60)
    assert stopped["model"] is None and "active model is unchanged" in stopped["message"]
    assert _active(public) == "other"
    assert public.call(handle_file(str(seven)), api_name="/predict")["label"] == "7"
    assert sorted(public.models_dir.iterdir()) == files_before  # nothing saved, nothing left behind


def test_each_visitor_may_start_only_so_many_runs_per_hour(public):
    # Earlier tests in this module may have used some of this client's runs; count from the history.
    for _ in range(MAX_RUNS + 1):
        started = public.status()["run"] or 0  # runs are numbered from 1 in each app process
        try:
            public.call("mlp", 1, 32, 0.001, 100, api_name="/train")
        except AppError as error:
            assert started == MAX_RUNS, f"refused after {started} runs: {error}"
            assert "the most this server allows" in str(error) and "try again in about" in str(error)
            break
        assert started < MAX_RUNS, "a run beyond the limit was started"
        public.wait_for(lambda s: s["status"] in ("finished", "stopped", "failed"), timeout=120)
    else:
        pytest.fail("the run limit never refused a run")
    assert public.status()["run"] == MAX_RUNS
    assert public.status()["status"] in ("finished", "stopped", "failed")


def test_sigkill_while_saving_keeps_models_whole_and_a_restart_serves_the_default(tmp_path, mnist_dir):
    folder = _models_dir(tmp_path)
    for suffix in (".keras", ".json"):
        shutil.copy(folder / f"default{suffix}", folder / f"other{suffix}")
    app = App(["--data", str(mnist_dir)], folder)
    try:
        _wait_for_model(app)
        _select(app, "other")
        assert _active(app) == "other"
        # Kill the app during the save, or as close to it as polling gets, a few times over.
        caught = False
        for _ in range(3):
            app.call("mlp", 1, 256, 0.001, 1000, api_name="/train")
            status = app.wait_for(lambda s: s["status"] != "running", timeout=120, every=0.02)
            if status["status"] == "saving":
                caught = True
                break
        assert caught, "the run was never seen in its saving phase"
        time.sleep(random.uniform(0, 0.3))
        app.process.send_signal(signal.SIGKILL)
        app.process.wait(timeout=30)
    finally:
        app.close()

    # Whatever the kill interrupted, each listed model is whole and no temp file is listed.
    infos = list_models(folder)
    assert {"default", "other"} <= {info.name for info in infos}
    for info in infos:
        load_model(info.path)
    # The restart also meets damaged data: half of a gzipped file, as an interrupted copy leaves it.
    damaged = tmp_path / "damaged-mnist"
    shutil.copytree(mnist_dir, damaged)
    gz = damaged / "t10k-images-idx3-ubyte.gz"
    gz.write_bytes(gz.read_bytes()[: gz.stat().st_size // 2])
    restarted = App(["--data", str(damaged)], folder)
    try:
        _wait_for_model(restarted)
        # A visitor's pick lives as long as the process: after a restart everyone starts on the default.
        assert _active(restarted) == "default"
        leftovers = [p.name for p in folder.iterdir() if ".tmp-" in p.name]
        assert leftovers == [], leftovers  # the restart cleared what the killed save left

        message, counts, _ = restarted.call("test", api_name="/dataset_overview")
        assert "MNIST is not available" in message and "t10k-images-idx3-ubyte.gz" in message
        assert counts is None
        for args, api_name in ((("test", "any", 4), "/samples"), (("mlp", 1, 32, 0.001, 1000), "/train")):
            with pytest.raises(AppError, match="t10k-images-idx3-ubyte.gz"):
                restarted.call(*args, api_name=api_name)
        assert restarted.status()["run"] is None
        assert "Draw a digit" in restarted.call(None, None, api_name="/predict_photo")["html"]
        probabilities = restarted.call(drawn(7), api_name="/predict_strokes")  # Draw still serves
        assert len(probabilities["confidences"]) == 10
    finally:
        restarted.close()


def test_a_read_only_demo_serves_the_default_whatever_older_versions_left(tmp_path, mnist_dir):
    folder = _models_dir(tmp_path)
    (folder / ".active-model.json").write_text('{"active": "../../etc/passwd"}')  # an older version's file
    app = App(["--data", str(mnist_dir), "--no-train"], folder)
    try:
        assert _wait_for_model(app).startswith("Active model: default")
        _no_train_checks(app)
    finally:
        app.close()


def _no_train_checks(app: App) -> None:
    """--no-train: the Train tab is hidden, training and stopping are refused, Draw and Dataset serve."""
    config = httpx.get(app.url + "config", timeout=30).json()
    tabs = {
        c["props"].get("label"): c["props"].get("visible")
        for c in config["components"]
        if c["type"] == "tabitem"
    }
    assert tabs["Train"] is False and tabs["Draw"] is not False and tabs["Dataset"] is not False
    for args, api_name in ((("mlp", 1, 32, 0.001, 1000), "/train"), ((), "/stop")):
        with pytest.raises(AppError, match="training is turned off on this server"):
            app.call(*args, api_name=api_name)
    assert app.status()["run"] is None
    assert len(app.call("test", "3", 4, api_name="/samples")) == 4
    assert "Draw a digit" in app.call(None, None, api_name="/predict_photo")["html"]
    assert app.call(drawn(7), api_name="/predict_strokes")["label"] == "7"
    assert '<div class="digit">7</div>' in app.server_fn({"seq": 1, "strokes": drawn(7)}).json()["html"]


# --- the core behind it -------------------------------------------------------------------------


def test_studio_refuses_model_names_that_are_paths(tmp_path):
    studio = Studio(tmp_path)
    for name in ("../models/default", "/etc/passwd", "a/b", "..", ".active-model", None, 7, "/" * 10_000):
        with pytest.raises(ValueError, match="invalid model name") as raised:
            studio.select_model(name)
        assert len(str(raised.value)) < 300  # a huge value is not echoed back
    with pytest.raises(ValueError, match="no model named") as raised:
        studio.select_model("x" * 10_000)
    assert len(str(raised.value)) < 300


def test_studio_without_training_refuses_to_train_or_stop(tmp_path, mnist_dir):
    studio = Studio(tmp_path, data_path=mnist_dir, training=False)
    with pytest.raises(TrainingDisabledError):
        studio.start_run(TrainConfig(epochs=1, train_size=100))
    with pytest.raises(TrainingDisabledError):
        studio.stop_run()
    assert studio.runs == []


def test_run_limiter_counts_per_visitor_within_a_sliding_hour():
    now = [0.0]
    limiter = RunLimiter(2, clock=lambda: now[0])
    for _ in range(2):
        limiter.check("1.2.3.4")
        limiter.record("1.2.3.4")
    with pytest.raises(RunLimitError, match="2 training runs in the last hour.*about 60 min"):
        limiter.check("1.2.3.4")
    limiter.check("5.6.7.8")  # another visitor has its own count
    now[0] = RATE_WINDOW_SECONDS + 1
    limiter.check("1.2.3.4")  # an hour later the old runs no longer count
    assert "1.2.3.4" not in limiter._started  # and are forgotten
    RunLimiter(None).check("anyone")
    for bad in (0, -1, 1.5, True, "3"):
        with pytest.raises(ValueError, match="runs per hour"):
            RunLimiter(bad)


def _wait_run(studio: Studio, timeout: float = 120):
    deadline = time.monotonic() + timeout
    while studio.latest_run().active:
        assert time.monotonic() < deadline, studio.status()
        time.sleep(0.1)
    return studio.latest_run()


def test_a_diverging_run_fails_clearly_and_changes_nothing(tmp_path, mnist, monkeypatch):
    # Adam's steps are bounded by the learning rate, so no rate within (0, 1] makes these networks'
    # loss NaN in a short run; a network whose weights have already blown up does, for real.
    from mnist_core.models import ARCHITECTURES

    def blown_up(dtype=None, build=ARCHITECTURES["mlp"]):
        model = build(dtype)
        kernel = model.layers[-1].kernel
        kernel.assign(np.full(kernel.shape, np.nan, np.float32))
        return model

    monkeypatch.setitem(ARCHITECTURES, "mlp", blown_up)
    folder = _models_dir(tmp_path)
    studio = Studio(folder)
    studio._data = mnist
    studio.start_loading().join()
    files_before = sorted(folder.iterdir())
    studio.start_run(TrainConfig(epochs=1, learning_rate=1.0, train_size=1000))
    run = _wait_run(studio)
    assert run.phase == "failed" and run.model_name is None
    assert "the loss became nan" in run.message and "smaller learning rate than 1.0" in run.message
    assert studio.model_name == "default" and sorted(folder.iterdir()) == files_before
    assert studio.status()["status"] == "failed" and "diverged" in studio.status()["message"]


def test_older_runs_keep_their_results_but_not_their_model_or_data(tmp_path, mnist):
    folder = _models_dir(tmp_path)
    studio = Studio(folder)
    studio._data = mnist
    studio.start_loading().join()
    studio.start_run(TrainConfig(epochs=1, batch_size=128, train_size=1000))
    first = _wait_run(studio)
    assert first.phase == "finished" and studio.model_name == first.model_name
    model = weakref.ref(studio.predictor.model)
    studio.start_run(TrainConfig(epochs=1, batch_size=128, train_size=1000, seed=1))
    second = _wait_run(studio)
    assert second.phase == "finished" and studio.model_name == second.model_name
    gc.collect()
    assert model() is None, "the first run's Keras model is still alive"
    assert not hasattr(first.job, "model") and not hasattr(first.job, "_data")
    assert all("model" not in record for record in first.job.records)
    assert first.confusion_png is not None and first.mistakes and first.test_accuracy > 0.5
    assert run_tables.curves(studio.runs, compare=True)["loss"]["series"].count("run 1 validation") == 1
    assert studio.model_name == second.model_name
    assert os.path.isfile(folder / f"{first.model_name}.keras")


def test_a_visitor_is_the_client_address_or_what_a_local_tunnel_forwards():
    import gradio as gr

    from ui.session import client_address as visitor

    def request(host, forwarded=None):
        headers = {"x-forwarded-for": forwarded} if forwarded else {}
        return gr.Request(client=SimpleNamespace(host=host), headers=headers)

    assert visitor(request("203.0.113.7")) == "203.0.113.7"
    # Through a share link the tunnel connects from loopback and appends the visitor's address last.
    assert visitor(request("127.0.0.1", "10.0.0.1, 198.51.100.4")) == "198.51.100.4"
    # A remote client cannot pick its own identity by writing the header.
    assert visitor(request("203.0.113.7", "198.51.100.4")) == "203.0.113.7"
    assert visitor(None) is None
