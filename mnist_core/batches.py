"""The training set as Keras `fit` reads it: a tf.data pipeline of shuffled batches, gathered in chunks.

Keras' own pipeline for arrays gathers each batch from the permuted index by itself, in a parallel map with
prefetching. At batch 32 that is 1,875 small gathers an epoch, and the map's threads compete with the step
for the two cores. Here one gather fetches the images of a whole call into TensorFlow (steps_per_execution
batches), which is then split into its batches: about 10% less CPU time an MLP epoch.

Each pass also draws a new order. Keras' own permutation (`tf.random.shuffle` in the pipeline, Keras
3.15 on TensorFlow 2.21) starts from the same seeded state whenever a pass begins, so under
keras.utils.set_random_seed every epoch sees the batches in the same order. Here the order comes from a
random generator seeded by the run's seed, whose state carries on from pass to pass: every epoch its own
order, and the same orders again for the same seed. The tutorial MLP at 10 epochs, seeds 0-4: median
97.73% (before, in Keras' one order, seeds 0-2: 97.66 / 97.76 / 97.51%); the CNN preset's seeds 0-2:
median 99.55% both ways (BENCHMARKS.md, "Training faster").

`stacked` hands over each call's batches as one stack instead, for training.StackedSteps; every stack of
full batches has the same length, so that the compiled step is compiled once.
"""

import numpy as np
import tensorflow as tf


def training_batches(
    x: np.ndarray, y: np.ndarray, batch_size: int, chunk: int, seed: int, stacked: bool = False
) -> tf.data.Dataset:
    """Batches of (x, y) in a new order on every pass (the orders fixed by `seed`), `chunk` batches
    gathered at a time. The last batch holds the remainder when `batch_size` does not divide the set, as
    in `fit(x, y, batch_size)`. `stacked`: each element is (stack of x, stack of y, n), a stack of
    `chunk` full batches, shaped (chunk, batch_size, ...), of which a step trains on the first n in turn
    (training.StackedSteps): n is `chunk` but in the last stack of full batches, padded to its length;
    the partial batch comes in a stack of its own."""
    if len(x) != len(y) or len(x) < 1:
        raise ValueError(
            f"x and y need the same number of samples, at least 1; received {len(x)} and {len(y)}"
        )
    if batch_size < 1 or chunk < 1:
        raise ValueError(f"batch_size and chunk must be >= 1, received {batch_size} and {chunk}")
    samples = len(x)
    full_batches = samples // batch_size
    chunked = full_batches // chunk * chunk  # batches that come in whole chunks
    tail_start, full_end = chunked * batch_size, full_batches * batch_size
    images, labels = tf.constant(x), tf.constant(y)

    def gathered(indices, rows=None):
        batch_x, batch_y = tf.gather(images, indices), tf.gather(labels, indices)
        if rows is not None:  # (rows * n, ...) -> (rows, n, ...)
            batch_x = tf.reshape(batch_x, (rows, -1, *x.shape[1:]))
            batch_y = tf.reshape(batch_y, (rows, -1, *y.shape[1:]))
        return batch_x, batch_y

    def split(stack_x, stack_y):  # (chunk, batch_size, ...) -> `chunk` batches
        return tf.data.Dataset.from_tensor_slices((stack_x, stack_y))

    def stack(indices, rows, batches):  # `rows` batches of which the first `batches` are trained on
        return (*gathered(indices, rows), tf.constant(batches, tf.int32))

    def epoch(order):
        head = tf.data.Dataset.from_tensor_slices(tf.reshape(order[:tail_start], (-1, chunk * batch_size)))
        if not stacked:
            batches = head.map(lambda indices: gathered(indices, chunk)).flat_map(split)
            starts = tf.range(tail_start, samples, batch_size, dtype=tf.int64)
            rest = tf.data.Dataset.from_tensor_slices(starts).map(
                lambda start: gathered(order[start : tf.minimum(start + batch_size, samples)])
            )
            return batches.concatenate(rest)
        batches = head.map(lambda indices: stack(indices, chunk, chunk))
        if full_batches > chunked:
            # The last full batches, padded with the epoch's first ones to a whole stack, which the step
            # skips: a stack of another length would be another shape, compiled again (1.6 s, a whole MLP
            # epoch's training, in the first epoch of the tutorial's run).
            positions = tf.range(tail_start, tail_start + chunk * batch_size, dtype=tf.int64) % full_end
            padded = stack(tf.gather(order, positions), chunk, full_batches - chunked)
            batches = batches.concatenate(tf.data.Dataset.from_tensors(padded))
        if samples > full_end:
            partial = stack(order[full_end:], 1, 1)
            batches = batches.concatenate(tf.data.Dataset.from_tensors(partial))
        return batches

    generator = tf.random.Generator.from_seed(seed)  # its state moves on with every pass's order

    def new_order(_):
        index = tf.range(samples, dtype=tf.int64)
        return tf.random.experimental.stateless_shuffle(index, seed=generator.make_seeds(1)[:, 0])

    permutation = tf.data.Dataset.range(1).map(new_order)
    options = tf.data.Options()
    # As in Keras' own: no graph rewrites (their serialisation costs more than they give here), and the
    # generator's state is not part of the pipeline's.
    options.experimental_optimization.apply_default_optimizations = False
    options.experimental_external_state_policy = tf.data.experimental.ExternalStatePolicy.IGNORE
    # Nor autotuning: nothing here runs in parallel, and letting go of an autotuned iterator (fit does at
    # its end) waited 3.5-5 s for the tuning thread in most runs (BENCHMARKS.md, "Training faster").
    options.autotune.enabled = False
    return (
        permutation.flat_map(epoch)
        .apply(
            tf.data.experimental.assert_cardinality(
                chunked // chunk + (full_batches > chunked) + (samples > full_end)
                if stacked
                else -(-samples // batch_size)
            )
        )
        .with_options(options)
    )
