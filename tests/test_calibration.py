"""Tests for mnist_core.calibration: ECE against a hand count, the fitted temperature, the shipped model's
stored temperature on MNIST test, and a real run that saves its temperature and draws with it."""

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import ready_studio

from mnist_core.calibration import (
    FIT_IMAGES,
    calibrate,
    calibration_report,
    expected_calibration_error,
    fit_images,
    fit_temperature,
    reliability,
    temperature_of,
)
from mnist_core.config import TrainConfig
from mnist_core.predict import Predictor
from mnist_core.store import read_metadata, write_calibration
from mnist_core.training import training_subset

ROOT = Path(__file__).resolve().parents[1]


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def test_ece_matches_a_hand_count():
    # 15 bins, bin k = (k/15, (k+1)/15]; no top probability sits on an edge.
    p = np.array(
        [
            [0.95, 0.03, 0.02],  # top 0.95 -> bin 14 (14.25 / 15), right
            [0.90, 0.05, 0.05],  # 0.90 -> bin 13, wrong (label 1)
            [0.25, 0.62, 0.13],  # 0.62 -> bin 9, right
            [0.65, 0.30, 0.05],  # 0.65 -> bin 9, wrong (label 2)
            [0.30, 0.32, 0.38],  # 0.38 -> bin 5, right
        ]
    )
    labels = np.array([0, 1, 1, 2, 2])
    # bin 14: |1 - 0.95|; bin 13: |0 - 0.9|; bin 9: 2 * |0.5 - 0.635|; bin 5: |1 - 0.38|; over 5 images.
    assert expected_calibration_error(p, labels) == pytest.approx((0.05 + 0.9 + 0.27 + 0.62) / 5, abs=1e-12)
    bins = reliability(p, labels)
    assert [(k, n) for k, n in enumerate(bins["count"]) if n] == [(5, 1), (9, 2), (13, 1), (14, 1)]
    assert bins["accuracy"][9] == 0.5 and bins["confidence"][9] == pytest.approx(0.635)
    assert bins["confidence"][0] is None and bins["accuracy"][0] is None
    # Two bins, (0, 0.5] and (0.5, 1]: |2/4 - 3.12/4| * 4/5 + |1 - 0.38| * 1/5.
    assert expected_calibration_error(p, labels, bins=2) == pytest.approx(0.28 * 4 / 5 + 0.62 / 5, abs=1e-12)
    with pytest.raises(ValueError, match="labels"):
        expected_calibration_error(p, labels[:3])


def test_calibrate_is_softmax_of_scaled_logits_and_keeps_the_argmax():
    logits = np.random.default_rng(0).normal(scale=4, size=(200, 10))
    for temperature in (0.25, 0.5, 2.0, 7.0):
        calibrated = calibrate(softmax(logits), temperature)
        np.testing.assert_allclose(calibrated, softmax(logits / temperature), rtol=1e-9, atol=1e-15)
        np.testing.assert_array_equal(calibrated.argmax(axis=1), logits.argmax(axis=1))
    single = softmax(logits[0]).astype(np.float32)
    assert calibrate(single, 0.5).dtype == np.float32 and calibrate(single, 0.5).shape == (10,)
    assert calibrate(single, 1.0) is single  # nothing to do, nothing done
    for bad in (0, -1.0, float("nan"), float("inf"), "0.5", None, True):
        with pytest.raises(ValueError, match="temperature"):
            calibrate(single, bad)


@pytest.mark.parametrize("true_temperature", [0.4, 2.5])
def test_fit_temperature_recovers_a_known_temperature(true_temperature):
    rng = np.random.default_rng(1)
    logits = rng.normal(scale=3, size=(20_000, 10))
    # Labels drawn from softmax(logits / T): the model's softmax(logits) is miscalibrated by exactly T.
    truth = softmax(logits / true_temperature)
    labels = (truth.cumsum(axis=1) > rng.random((len(truth), 1))).argmax(axis=1)
    fitted = fit_temperature(softmax(logits), labels)
    assert fitted == pytest.approx(true_temperature, rel=0.05)
    before = expected_calibration_error(softmax(logits), labels)
    after = expected_calibration_error(calibrate(softmax(logits), fitted), labels)
    assert after < 0.02 < before


def test_temperature_of_metadata():
    assert temperature_of({"calibration": {"temperature": 0.4}}) == 0.4
    unusable = [{"calibration": None}, {"calibration": {"temperature": -1}}, {"calibration": "x"}]
    for metadata in [{}, None, *unusable]:  # no calibration, or a broken one: the model's own probabilities
        assert temperature_of(metadata) == 1.0 and temperature_of(metadata, default=None) is None


def test_the_held_out_fit_set_is_disjoint_from_a_runs_training_subset(mnist):
    config = TrainConfig(train_size=2000, seed=3)
    images, labels, fit_on = fit_images(mnist, config.train_size, config.seed)
    assert len(images) == len(labels) == FIT_IMAGES and "not trained on" in fit_on
    chosen = training_subset(len(mnist.x_train), config.train_size, config.seed)  # what the run trains on
    trained = {image.tobytes() for image in mnist.x_train[chosen]}
    assert not any(image.tobytes() in trained for image in images)
    _, _, everything = fit_images(mnist)  # the whole training set: nothing is held out
    assert "may be trained on" in everything


@pytest.fixture(scope="module")
def shipped():
    from mnist_core.store import load_model

    return load_model(ROOT / "models" / "default.keras")


@pytest.mark.slow
def test_the_shipped_models_temperature_makes_its_test_probabilities_honest(shipped, mnist):
    from mnist_core.evaluate import evaluate_model

    model, metadata = shipped
    temperature = temperature_of(metadata)
    assert 0.2 < temperature < 0.8  # label smoothing made it under-confident: T < 1 sharpens
    assert "test" not in metadata["calibration"]["fit_on"]  # never fitted on what it is scored on
    evaluation = evaluate_model(model, mnist.x_test, mnist.y_test, temperature=temperature)
    assert evaluation.ece_uncalibrated > 0.05  # the issue: right 99.5% of the time, 90% sure on average
    assert evaluation.ece <= 0.015
    assert evaluation.test_accuracy == pytest.approx(metadata["metrics"]["test_accuracy"], abs=1e-6)
    np.testing.assert_array_equal(evaluation.probabilities.argmax(axis=1), evaluation.predictions)
    assert evaluation.probabilities.max(axis=1).mean() > 0.98
    # The report scripts/evaluate.py prints, and its figure, from the same probabilities.
    from mnist_core.plots import figure_to_png, reliability_figure

    raw = calibrate(evaluation.probabilities, 1 / temperature)  # undo: back to the model's own
    report = calibration_report(model, mnist, temperature, probabilities=raw)
    assert report["after"]["ece"] == pytest.approx(evaluation.ece, abs=1e-4)
    assert report["before"]["ece"] == pytest.approx(evaluation.ece_uncalibrated, abs=1e-4)
    assert report["after"]["test_loss"] < report["before"]["test_loss"]
    assert sum(report["after"]["reliability"]["count"]) == 10_000
    json.dumps(report)
    assert figure_to_png(reliability_figure(report)).startswith(b"\x89PNG")


def test_write_calibration_keeps_the_model_and_its_hash(tmp_path):
    for suffix in (".keras", ".json"):
        shutil.copy(ROOT / "models" / f"default{suffix}", tmp_path)
    model_path = tmp_path / "default.keras"
    before = read_metadata(model_path)
    write_calibration(model_path, {"temperature": 0.5, "fit_on": "a test"})
    after = read_metadata(model_path)  # {} if the hash no longer matched the model
    assert after["calibration"] == {"temperature": 0.5, "fit_on": "a test"}
    assert {k: v for k, v in after.items() if k != "calibration"} == {
        k: v for k, v in before.items() if k != "calibration"
    }


@pytest.mark.slow
def test_a_run_saves_its_temperature_and_the_studio_draws_with_it(tmp_path, mnist):
    studio = ready_studio(tmp_path / "models", mnist, max_runs_per_hour=None)
    run = studio.start_run(TrainConfig(epochs=1, batch_size=128, train_size=2000))
    deadline = time.monotonic() + 180
    while run.active or run.waiting:
        assert time.monotonic() < deadline, run.phase
        time.sleep(0.1)
    assert run.phase == "finished", run.message
    calibration = read_metadata(studio.models_dir / f"{run.model_name}.keras")["calibration"]
    assert calibration["fit_images"] == FIT_IMAGES and "not trained on" in calibration["fit_on"]
    assert calibration["temperature"] != 1.0
    assert calibration["test_ece_after"] < calibration["test_ece_before"]
    # The run's model is now the default one: its Predictor calibrates by the stored temperature.
    predictor = studio.predictor
    assert predictor.info["name"] == run.model_name
    assert predictor.temperature == calibration["temperature"]
    images = mnist.x_test[:200].astype(np.float32) / 255
    calibrated, raw = predictor.predict(images), Predictor(predictor.model).predict(images)
    assert np.abs(calibrated - raw).max() > 0.01
    np.testing.assert_array_equal(calibrated.argmax(axis=1), raw.argmax(axis=1))
    np.testing.assert_allclose(calibrated, calibrate(raw, calibration["temperature"]), atol=1e-6)
    np.testing.assert_allclose(studio.classify_image(images[0])[1], calibrated[0], atol=1e-6)
