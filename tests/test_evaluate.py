"""Tests for mnist_core.evaluate on a model trained for real (1 epoch on 5,000 MNIST images)."""

import json
import math

import keras
import numpy as np
import pytest

from mnist_core.evaluate import evaluate_model
from mnist_core.models import build_model


@pytest.fixture(scope="module")
def trained(mnist):
    keras.utils.set_random_seed(0)
    model = build_model("mlp")
    x = mnist.x_train[:5000].astype(np.float32) / 255.0
    y = keras.utils.to_categorical(mnist.y_train[:5000], 10)
    model.fit(x, y, epochs=1, batch_size=32, verbose=0)
    return model


@pytest.fixture(scope="module")
def evaluation(trained, mnist):
    return evaluate_model(trained, mnist.x_test, mnist.y_test)


def test_accuracy_of_a_trained_model(evaluation):
    assert evaluation.test_accuracy > 0.8
    assert 0 < evaluation.test_loss < 1.0


def test_confusion_matrix_adds_up(evaluation, mnist):
    n = len(mnist.y_test)
    assert evaluation.confusion.shape == (10, 10)
    assert evaluation.confusion.sum() == n
    np.testing.assert_array_equal(evaluation.confusion.sum(axis=1), np.bincount(mnist.y_test, minlength=10))
    assert np.trace(evaluation.confusion) / n == evaluation.test_accuracy
    assert evaluation.confusion[3, 5] == np.sum((mnist.y_test == 3) & (evaluation.predictions == 5))


def test_per_class_accuracy_matches_manual_count(evaluation, mnist, trained):
    predictions = keras.ops.convert_to_numpy(trained(mnist.x_test.astype(np.float32) / 255.0)).argmax(axis=1)
    np.testing.assert_array_equal(evaluation.predictions, predictions)
    for digit in range(10):
        mask = mnist.y_test == digit
        manual = np.count_nonzero(predictions[mask] == digit) / np.count_nonzero(mask)
        assert evaluation.per_class_accuracy[digit] == pytest.approx(manual, abs=1e-12)


def test_loss_matches_keras(evaluation, trained, mnist):
    probabilities = trained(mnist.x_test.astype(np.float32) / 255.0)
    one_hot = keras.utils.to_categorical(mnist.y_test, 10)
    keras_loss = keras.losses.categorical_crossentropy(one_hot, probabilities)
    assert evaluation.test_loss == pytest.approx(float(np.mean(keras_loss)), abs=1e-4)
    np.testing.assert_allclose(evaluation.probabilities, keras.ops.convert_to_numpy(probabilities), atol=1e-6)


def test_misclassified_are_wrong_and_most_confident_first(evaluation, mnist):
    everything = evaluation.misclassified(limit=None)
    wrong_count = np.count_nonzero(evaluation.predictions != mnist.y_test)
    assert len(everything) == wrong_count > 36
    assert np.all(evaluation.predictions[everything] != mnist.y_test[everything])
    confidence = evaluation.probabilities[everything, evaluation.predictions[everything]]
    assert np.all(np.diff(confidence) <= 0)
    np.testing.assert_array_equal(evaluation.misclassified(), everything[:36])
    assert len(evaluation.misclassified(limit=5)) == 5
    assert len(evaluation.misclassified(limit=0)) == 0
    with pytest.raises(ValueError, match="limit"):
        evaluation.misclassified(limit=-1)


def test_to_dict_is_json_friendly(evaluation):
    summary = json.loads(json.dumps(evaluation.to_dict()))
    assert summary["test_accuracy"] == evaluation.test_accuracy
    assert summary["count"] == 10000
    assert summary["misclassified_count"] == len(evaluation.misclassified(limit=None))
    assert summary["confusion"] == evaluation.confusion.tolist()
    assert len(summary["per_class_accuracy"]) == 10
    assert "probabilities" not in summary and "predictions" not in summary


def test_batch_size_does_not_change_results(trained, mnist, evaluation):
    small = evaluate_model(trained, mnist.x_test[:1000], mnist.y_test[:1000], batch_size=333)
    np.testing.assert_allclose(small.probabilities, evaluation.probabilities[:1000], atol=1e-6)
    np.testing.assert_array_equal(small.predictions, evaluation.predictions[:1000])


def test_missing_class_has_nan_accuracy(trained, mnist):
    keep = mnist.y_test[:500] != 9
    result = evaluate_model(trained, mnist.x_test[:500][keep], mnist.y_test[:500][keep])
    assert math.isnan(result.per_class_accuracy[9])
    assert result.to_dict()["per_class_accuracy"][9] is None
    assert result.confusion.sum() == keep.sum()


@pytest.mark.parametrize(
    ("x", "y", "batch_size", "message"),
    [
        (np.zeros((4, 28, 28), np.uint8), np.zeros(3, int), 1000, "labels"),
        (np.zeros((4, 784), np.uint8), np.zeros(4, int), 1000, "images"),
        (np.zeros((0, 28, 28), np.uint8), np.zeros(0, int), 1000, "images"),
        (np.zeros((4, 28, 28), np.uint8), np.full(4, 10), 1000, "0-9"),
        (np.zeros((4, 28, 28), np.uint8), np.zeros(4, int), 0, "batch_size"),
    ],
)
def test_bad_arguments_raise_value_error(trained, x, y, batch_size, message):
    with pytest.raises(ValueError, match=message):
        evaluate_model(trained, x, y, batch_size=batch_size)
