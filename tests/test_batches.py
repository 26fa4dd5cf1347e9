"""The training input pipeline (mnist_core.batches): every sample once a pass, shuffled, in fit's batch
sizes, and the same training as Keras' own `fit` on the arrays, on real MNIST images."""

import keras
import numpy as np
import pytest

from mnist_core.batches import training_batches
from mnist_core.models import ARCHITECTURES, compile_model
from mnist_core.training import one_hot, reads_uint8


def passes(dataset, count: int):
    """The labels' positions, as (batch sizes, indices into the set), of `count` passes."""
    out = []
    for _ in range(count):
        sizes, seen = [], []
        for x, y in dataset:
            sizes.append(int(x.shape[0]))
            seen.append(y.numpy()[:, 0])
        out.append((sizes, np.concatenate(seen).astype(int)))
    return out


@pytest.mark.parametrize(
    "samples, batch_size, chunk",
    [(1000, 64, 4), (1024, 32, 32), (1000, 32, 32), (7, 3, 4), (5, 8, 2)],
)
def test_each_pass_holds_every_sample_once_in_batches_like_fits(samples, batch_size, chunk):
    x = np.arange(samples, dtype=np.int64)[:, None]  # each sample's index, as image and as label
    keras.utils.set_random_seed(0)
    dataset = training_batches(x, x.copy(), batch_size, chunk)
    assert int(dataset.cardinality()) == -(-samples // batch_size)  # Keras knows the steps per epoch
    (sizes, first), (again, second) = passes(dataset, 2)
    remainder = samples % batch_size
    assert sizes == again == [batch_size] * (samples // batch_size) + ([remainder] if remainder else [])
    assert sorted(first) == list(range(samples)) and sorted(second) == list(range(samples))
    if samples > 5:
        assert list(first) != sorted(first)  # shuffled


def test_training_on_it_matches_keras_fit_on_the_arrays(mnist):
    x, y = mnist.x_train[:1000], one_hot(mnist.y_train[:1000])

    def weights_after(feed: str):
        keras.utils.set_random_seed(3)  # before the pipeline is built: its shuffle takes the seed then
        model = reads_uint8(ARCHITECTURES["mlp"](None))
        compile_model(model, steps_per_execution=4, jit_compile=True)
        if feed == "batches":
            model.fit(training_batches(x, y, 64, chunk=4), shuffle=False, epochs=2, verbose=0)
        elif feed == "arrays":
            model.fit(x, y, batch_size=64, epochs=2, verbose=0)
        return model.get_weights()

    ours = weights_after("batches")
    for got, expected in zip(ours, weights_after("arrays"), strict=True):
        np.testing.assert_array_equal(got, expected)
    assert not np.array_equal(ours[0], weights_after("untrained")[0])  # it did train


@pytest.mark.parametrize(
    "x, y, batch_size, chunk, message",
    [
        (np.zeros((3, 2)), np.zeros((4, 1)), 2, 1, "received 3 and 4"),
        (np.zeros((0, 2)), np.zeros((0, 1)), 2, 1, "at least 1"),
        (np.zeros((3, 2)), np.zeros((3, 1)), 0, 1, "received 0 and 1"),
        (np.zeros((3, 2)), np.zeros((3, 1)), 2, 0, "received 2 and 0"),
    ],
)
def test_bad_arguments_are_refused_with_what_was_received(x, y, batch_size, chunk, message):
    with pytest.raises(ValueError, match=message):
        training_batches(x, y, batch_size, chunk)
