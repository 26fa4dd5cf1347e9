"""Your digits, through the Draw tab's handlers with a real Studio: label, delete, download, upload, and a
real fine-tuning run through the training queue that becomes the visitor's model."""

import json
import re
import time
from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import numpy as np
import pytest
from conftest import ready_studio

from mnist_core.drawn import digit_strokes, place_strokes
from mnist_core.store import read_metadata
from ui.own import OwnDigits, own_html, tune_html
from ui.session import Sessions

BOX = (0.33, 0.2, 0.67, 0.8)


def strokes_of(digit: int, style: int = 0, shift: float = 0.0) -> list:
    box = (BOX[0] + shift, BOX[1], BOX[2] + shift, BOX[3])
    return [
        [[round(x, 1), round(y, 1)] for x, y in s]
        for s in place_strokes(digit_strokes(digit, style), 560, box)
    ]


@pytest.fixture(scope="module")
def studio(tmp_path_factory, mnist):
    return ready_studio(tmp_path_factory.mktemp("own") / "models", mnist)


def page(studio, name: str):
    """(OwnDigits, the page's request, its visitor id): one page that has loaded."""
    sessions = Sessions(studio)
    request = SimpleNamespace(session_hash=f"session-{name}", client=None, headers={})
    visitor_id = sessions.start(None, request)
    return OwnDigits(studio, sessions), request, visitor_id


def test_labelling_a_drawing_adds_what_the_model_read_and_bad_labels_add_nothing(studio):
    own, request, visitor_id = page(studio, "label")
    visitor = studio.visitors.get(visitor_id)
    answer = own.label_drawing({"seq": 4, "strokes": strokes_of(7), "visitor": visitor_id, "label": 7})
    assert answer["ok"] and answer["seq"] == 4 and "Added a 7" in answer["own"]
    (item,) = visitor.digits.items
    assert item.label == 7 and item.predicted in range(10) and item.image.dtype == np.uint8
    assert item.image.max() > 200 and len(item.strokes) == len(strokes_of(7))
    typed = own.label_drawing({"seq": 5, "strokes": strokes_of(3), "visitor": visitor_id, "label": "3"})
    assert typed["ok"] and len(visitor.digits) == 2
    for bad, expected in (
        ({"seq": 6, "strokes": strokes_of(1), "visitor": visitor_id, "label": 12}, "digit from 0 to 9"),
        ({"seq": 7, "strokes": [], "visitor": visitor_id, "label": 1}, "nothing is drawn"),
        ({"seq": 8, "strokes": "x", "visitor": visitor_id, "label": 1}, "strokes"),
        ("not a dict", "expected a message as a dict"),
        ({"seq": 9, "strokes": strokes_of(1), "visitor": None, "label": 1}, "still connecting"),
        ({"seq": 9, "strokes": strokes_of(1), "visitor": "made-up-id-1234", "label": 1}, "still connecting"),
    ):
        refused = own.label_drawing(bad)
        assert refused["ok"] is False and expected in refused["own"], refused
    assert len(visitor.digits) == 2
    # Another page sees none of this visitor's drawings.
    other, _, other_id = page(studio, "other")
    assert "none yet" in other.own_set({"visitor": other_id})["own"]
    assert "×1" in own.own_set({"visitor": visitor_id})["own"]


def test_the_panel_deletes_one_or_all(studio):
    own, request, visitor_id = page(studio, "delete")
    for digit in (2, 2, 5):
        own.label_drawing({"seq": 1, "strokes": strokes_of(digit), "visitor": visitor_id, "label": digit})
    panel = own.own_set({"visitor": visitor_id})["own"]
    ids = [int(i) for i in re.findall(r'data-delete="(\d+)"', panel)]
    assert len(ids) == 3 and "×2" in panel
    assert "Deleted." in own.delete_drawing({"visitor": visitor_id, "id": ids[0]})["own"]
    assert "already gone" in own.delete_drawing({"visitor": visitor_id, "id": ids[0]})["own"]
    assert "expected a drawing" in own.delete_drawing({"visitor": visitor_id, "id": [1]})["own"]
    assert len(studio.visitors.get(visitor_id).digits) == 2
    assert "Deleted all 2" in own.clear_drawings({"visitor": visitor_id})["own"]
    assert len(studio.visitors.get(visitor_id).digits) == 0


def test_the_set_downloads_as_mnist_npz_and_uploads_back(studio, tmp_path):
    own, request, visitor_id = page(studio, "files")
    for k in range(3):
        own.label_drawing(
            {"seq": k, "strokes": strokes_of(4, shift=0.02 * k), "visitor": visitor_id, "label": 4}
        )
    path = own.download(request)["value"]
    with np.load(path) as npz:
        assert npz["x_train"].shape == (2, 28, 28) and npz["x_test"].shape == (1, 28, 28)
        assert npz["y_train"].tolist() == [4, 4] and npz["x_train"].dtype == np.uint8
    other, other_request, other_id = page(studio, "files-2")
    value = other.upload(path, {"seq": 9, "strokes": [], "html": "<b>from the page</b>"}, other_request)
    assert "Added 3 drawings from my-digits.npz" in value["own"] and "from the page" not in value["html"]
    assert studio.visitors.get(other_id).digits.counts("test")[4] == 1
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"nope")
    with pytest.raises(gr.Error, match="bad.npz: the set file is not an .npz"):
        other.upload(str(bad), {"seq": 1}, other_request)
    with pytest.raises(gr.Error, match="your set is empty"):
        page(studio, "empty")[0].download(page(studio, "empty")[1])


def wait_for(condition, seconds: float = 240.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError("timed out")


@pytest.mark.slow
def test_fine_tuning_runs_through_the_queue_and_becomes_the_visitors_model(studio, mnist):
    own, request, visitor_id = page(studio, "tune")
    visitor = studio.visitors.get(visitor_id)
    for digit in range(10):
        for k in range(3):
            own.label_drawing(
                {"seq": k, "strokes": strokes_of(digit, k % 2, 0.03 * k - 0.03), "visitor": visitor_id,
                 "label": digit}
            )  # fmt: skip
            time.sleep(0.13)  # a person's pace: labels are predictions, within the visitor's budget
    assert len(visitor.digits) == 30
    base = studio.visitor_model(visitor)
    started = own.finetune(request)
    assert "Run" in started
    run = studio.latest_run(visitor)
    assert run.tune is not None and run.config.epochs >= 1
    wait_for(lambda: run.phase in ("finished", "failed", "stopped"))
    assert run.phase == "finished", run.message
    report = run.tune_report
    assert report["base_model"] == base and report["drawings_per_digit"] == [3] * 10
    assert report["trained_on"] == 20 and report["own_measured_on"] == 10
    assert report["own_before"] is not None and report["own_after"] is not None
    assert report["mnist_after"] > 0.98  # it did not forget MNIST
    assert visitor.model_name == run.model_name and run.model_name.startswith("tuned-")
    metadata = read_metadata(studio.models_dir / f"{run.model_name}.keras")
    assert metadata["command"].startswith("python scripts/finetune.py --base models/")
    assert metadata["metrics"]["tune"]["drawings_per_digit"] == [3] * 10
    assert metadata["owner"]  # theirs: nobody else's picker offers it
    other = page(studio, "not-the-owner")[2]
    assert run.model_name not in [name for _, name in studio.model_choices(studio.visitors.get(other))]
    shown = tune_html(run, studio.status(visitor))
    assert 'id="tune-report"' in shown and "your 10 drawings kept aside" in shown
    assert len(visitor.digits) == 30  # the set stays as it was
    assert run.mistakes and len(run.mistake_whys) == len(run.mistakes)  # a click on a mistake shows why
    assert run.mistake_whys[0].shape == (28, 28, 3)
    from ui.train import TrainTab

    code = TrainTab(studio, own.sessions).code_part({"below": True}, visitor)
    assert f"fine-tuned from {base}" in code.label and "mnist_core" not in code.value
    compile(code.value, "tuned.py", "exec")
    json.dumps(report)  # plain values, as the page and the metadata need


def test_the_panel_lists_at_most_a_dozen_per_digit_but_counts_them_all(studio):
    from mnist_core.collection import DigitSet

    digits = DigitSet()
    for _ in range(20):
        digits.add(np.zeros((28, 28), np.uint8), 8, predicted=3)
    panel = own_html(digits)
    assert panel.count("data-delete=") == 12 and "×20" in panel and "+8" in panel
    assert panel.count("own-item misread") == 12


def test_the_dataset_tab_browses_your_digits_beside_mnist(studio):
    from ui.dataset import DatasetTab

    own, request, visitor_id = page(studio, "dataset")
    tab = DatasetTab(studio, own.sessions)
    for k, digit in enumerate((6, 6, 6, 1)):
        own.label_drawing({"seq": k, "strokes": strokes_of(digit), "visitor": visitor_id, "label": digit})
    text, counts, means = tab.overview("own", request)
    assert "Your digits: 4 drawings, 1 of them kept aside" in text and "Only you see them" in text
    assert counts["images"].tolist() == [0, 1, 0, 0, 0, 0, 3, 0, 0, 0] and [c for _, c in means] == ["1", "6"]
    shown = tab.samples("own", "6", 10, request)
    assert sorted(caption for _, caption in shown) == ["6", "6", "6 (kept aside)"]
    assert shown[0][0].shape[:2] == (112, 112)
    mnist = tab.samples("train", "any", 5, request)
    assert len(mnist) == 5  # MNIST as before
    other, other_request, _ = page(studio, "dataset-other")
    assert "0 drawings" in DatasetTab(studio, other.sessions).overview("own", other_request)[0]


def test_the_active_model_downloads_in_each_format(studio):
    from ui.draw import DrawTab

    tab = DrawTab(studio, Sessions(studio))
    request = SimpleNamespace(session_hash="session-export", client=None, headers={})
    tab.sessions.start(None, request)
    path = tab.export("keras", request)["value"]
    assert path.endswith("default.keras") and Path(path).stat().st_size > 100_000
    from mnist_core.store import load_model

    model, _ = load_model(path)
    assert model.count_params() == studio.predictor.model.count_params()
    with pytest.raises(gr.Error, match="unknown export format"):
        tab.export("pickle", request)
