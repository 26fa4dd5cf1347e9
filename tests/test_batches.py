"""The training input pipeline (mnist_core.batches): every sample once a pass, in fit's batch sizes, a new
order on every pass and the same orders for the same seed; and a real MNIST run learns from it."""

import keras
import numpy as np
import pytest

from mnist_core.batches import training_batches
from mnist_core.models import ARCHITECTURES, compile_model
from mnist_core.training import one_hot, reads_uint8


def passes(dataset, count: int):
    """(batch sizes, sample indices in order) of `count` passes; each sample's image is its index."""
    out = []
    for _ in range(count):
        sizes, seen = [], []
        for x, y in dataset:
            assert np.array_equal(x.numpy(), y.numpy())  # images and labels stay together
            sizes.append(int(x.shape[0]))
            seen.append(x.numpy()[:, 0])
        out.append((sizes, np.concatenate(seen).astype(int)))
    return out


@pytest.mark.parametrize(
    "samples, batch_size, chunk",
    [(1000, 64, 4), (1024, 32, 32), (1000, 32, 32), (7, 3, 4), (5, 8, 2)],
)
def test_each_pass_holds_every_sample_once_in_a_new_order(samples, batch_size, chunk):
    x = np.arange(samples, dtype=np.int64)[:, None]
    dataset = training_batches(x, x.copy(), batch_size, chunk, seed=0)
    assert int(dataset.cardinality()) == -(-samples // batch_size)  # Keras knows the steps per epoch
    runs = passes(dataset, 3)
    remainder = samples % batch_size
    for sizes, order in runs:
        assert sizes == [batch_size] * (samples // batch_size) + ([remainder] if remainder else [])
        assert sorted(order) == list(range(samples))
    orders = [tuple(order) for _, order in runs]
    if samples > 5:
        assert len(set(orders)) == 3 and orders[0] != tuple(range(samples))  # shuffled, anew each pass
    # The same seed gives the same orders again; another seed others.
    again = [tuple(order) for _, order in passes(training_batches(x, x.copy(), batch_size, chunk, seed=0), 3)]
    assert again == orders
    other = [tuple(order) for _, order in passes(training_batches(x, x.copy(), batch_size, chunk, seed=1), 3)]
    if samples > 5:
        assert other != orders


@pytest.mark.parametrize(
    "samples, batch_size, chunk, stacks",
    [
        # (stack shape, batches trained on) of each element: every stack of full batches `chunk` long.
        (1000, 64, 4, [((4, 64), 4)] * 3 + [((4, 64), 3), ((1, 40), 1)]),
        (1024, 32, 32, [((32, 32), 32)]),
        (1000, 32, 32, [((32, 32), 31), ((1, 8), 1)]),
        (100, 32, 32, [((32, 32), 3), ((1, 4), 1)]),  # fewer batches than a stack: padding wraps round
        (5, 8, 2, [((1, 5), 1)]),
    ],
)
def test_stacked_each_element_is_a_stack_of_batches_in_the_same_sizes(samples, batch_size, chunk, stacks):
    x = np.arange(samples, dtype=np.int64)[:, None]
    dataset = training_batches(x, x.copy(), batch_size, chunk, seed=0, stacked=True)
    assert int(dataset.cardinality()) == len(stacks)
    for _ in range(2):
        elements = [(sx.numpy(), sy.numpy(), int(n)) for sx, sy, n in dataset]
        assert [(sx.shape[:2], n) for sx, _, n in elements] == stacks
        assert all(np.array_equal(sx, sy) for sx, sy, _ in elements)
        # The batches trained on hold every sample once; the padding only samples of the same pass.
        order = np.concatenate([sx[:n].reshape(-1) for sx, _, n in elements])
        assert sorted(order) == list(range(samples))
        padding = np.concatenate([sx[n:].reshape(-1) for sx, _, n in elements])
        assert set(padding) <= set(order)
    # The same samples in the same order as the unstacked batches of the same seed.
    flat = np.concatenate(
        [b.numpy().reshape(-1) for b, _ in training_batches(x, x, batch_size, chunk, seed=0)]
    )
    first = np.concatenate(
        [s[:n].numpy().reshape(-1) for s, _, n in training_batches(x, x, batch_size, chunk, 0, True)]
    )
    assert np.array_equal(flat, first)


def test_a_real_run_learns_from_it(mnist):
    keras.utils.set_random_seed(3)
    model = reads_uint8(ARCHITECTURES["mlp"](None))
    compile_model(model, steps_per_execution=4, jit_compile=True)
    batches = training_batches(mnist.x_train[:2000], one_hot(mnist.y_train[:2000]), 64, chunk=4, seed=3)
    history = model.fit(batches, shuffle=False, epochs=2, verbose=0).history
    assert history["loss"][1] < history["loss"][0]
    _, accuracy = model.evaluate(mnist.x_test[:1000], one_hot(mnist.y_test[:1000]), verbose=0)
    assert accuracy > 0.8


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
        training_batches(x, y, batch_size, chunk, seed=0)
