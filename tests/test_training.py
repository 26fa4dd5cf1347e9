import math
import time
import tracemalloc

import keras
import numpy as np
import pytest

from mnist_core.batches import training_batches
from mnist_core.config import TrainConfig
from mnist_core.models import ARCHITECTURES, build_model, compile_model, native_bfloat16
from mnist_core.training import BusyError, drawn_count, one_hot, reads_uint8, start_training


def run(job, timeout=120):
    records = list(job.follow(timeout=timeout))
    assert job.wait(timeout), "the job did not end"
    return records


def test_one_hot_encodes_the_labels(mnist):
    y = one_hot(mnist.y_test[:5])
    assert y.dtype == np.float32 and y.shape == (5, 10) and list(y.argmax(axis=1)) == [7, 2, 1, 0, 4]
    assert (y.sum(axis=1) == 1).all()


def test_the_drawn_share_is_a_share_of_the_whole_training_set():
    assert drawn_count(0.0, 60_000) == 0 and drawn_count(0.2, 1000) == 250 and drawn_count(0.5, 100) == 100
    with pytest.raises(ValueError, match=r"drawn share must be in \[0, 1\), received 1.0"):
        drawn_count(1.0, 100)


@pytest.mark.slow
def test_a_drawn_share_trains_on_drawn_digits_beside_mnist(mnist):
    job = start_training(TrainConfig(epochs=1, train_size=2000, drawn_share=0.2), mnist)
    records = run(job)
    start, done = records[0], records[-1]
    assert (
        start["samples"] == 2500 and start["drawn_samples"] == 500 and start["steps"] == math.ceil(2500 / 32)
    )
    assert start["config"]["drawn_share"] == 0.2
    assert done["status"] == "finished" and done["test_accuracy"] > 0.8


@pytest.mark.slow
def test_short_run_learns_and_streams_records(mnist):
    job = start_training(TrainConfig(epochs=2, train_size=3000, batch_size=32), mnist)
    records = run(job)
    kinds = [record["type"] for record in records]
    assert kinds[0] == "start" and kinds[-1] == "done"
    assert kinds.count("epoch") == 2 and kinds.count("batch") >= 2
    batch = next(r for r in records if r["type"] == "batch")
    assert {"epoch", "step", "steps", "loss", "accuracy", "samples_per_second", "eta_seconds"} <= set(batch)
    assert batch["steps"] == math.ceil(3000 / 32) and batch["samples_per_second"] > 0
    # Steps count batches, also where Keras counts stacks of 32 of them (training.StackedSteps).
    steps = [r["step"] for r in records if r["type"] == "batch"]
    assert all(1 <= step <= batch["steps"] for step in steps) and set(steps) <= {32, 64, 93, 94}
    epoch = next(r for r in records if r["type"] == "epoch")
    assert {"loss", "accuracy", "val_loss", "val_accuracy", "epoch_seconds"} <= set(epoch)
    done = records[-1]
    assert done["status"] == "finished" and job.status == "finished" and done["message"] == ""
    # 3,000 images and 2 epochs: far above chance (10%) on the full 10,000-image test set
    assert done["test_accuracy"] > 0.85
    assert done["test_accuracy"] == pytest.approx(done["history"]["val_accuracy"][-1], abs=1e-6)
    assert len(done["epoch_seconds"]) == 2 and all(s > 0 for s in done["epoch_seconds"])
    assert done["model"] is job.model and job.result is done
    probabilities = np.asarray(job.model(mnist.x_test[:100] / np.float32(255)))
    assert (probabilities.argmax(axis=1) == mnist.y_test[:100]).mean() > 0.8
    # A late follower sees the same records, from any index
    assert list(job.follow(start=1)) == records[1:]


@pytest.mark.slow
def test_a_one_epoch_cnn_on_6000_images_is_scored_on_settled_statistics(mnist):
    # 24 steps: batch normalisation's moving statistics still describe the first steps (11% on the test
    # set before); the run recomputes them before it validates (precise_batch_norm) and reads > 95%.
    job = start_training(TrainConfig.preset("cnn", epochs=1, train_size=6000), mnist)
    records = run(job, timeout=300)
    done = records[-1]
    assert done["status"] == "finished", done["message"]
    assert done["test_accuracy"] > 0.95, done["test_accuracy"]
    # What the run scored is the model it keeps (its statistics are not changed again afterwards).
    assert job.evaluate().test_accuracy == pytest.approx(done["test_accuracy"], abs=1e-3)
    assert job.model.layers[-4].momentum == pytest.approx(0.9)  # its own momentum is restored
    # Trained under models.training_dtype's policy (bfloat16 where this CPU has it), kept in float32: a
    # float32 copy after bfloat16, the trained network itself on a CPU without it.
    trained = job._trainer.layers[-1].layers[-1]
    assert trained.name == "cnn" and (trained is not job.model) == native_bfloat16()
    assert trained.layers[1].dtype_policy.name == ("mixed_bfloat16" if native_bfloat16() else "float32")
    assert {layer.dtype_policy.name for layer in job.model.layers} == {"float32"}


@pytest.mark.slow
def test_an_augmented_run_trains_its_last_epochs_on_clean_images(mnist):
    from mnist_core.models import augmentation_switch, with_augmentation
    from mnist_core.training import _CleanFrom, clean_epochs

    assert [clean_epochs(TrainConfig.preset("cnn", epochs=n)) for n in (1, 5, 6, 12, 18)] == [0, 0, 1, 2, 3]
    assert clean_epochs(TrainConfig(epochs=12)) == 0  # no augmentation, nothing to switch off
    switch = augmentation_switch(with_augmentation(build_model("mlp")))
    clean, states = _CleanFrom(switch, first=4), []
    for epoch in range(6):
        clean.on_epoch_begin(epoch)
        states.append(float(switch.on.numpy()))
    assert states == [1, 1, 1, 1, 0, 0]
    # A real run of 6 epochs (its last one clean) ends with its augmentation switched off.
    job = start_training(TrainConfig.preset("cnn", epochs=6, train_size=600), mnist)
    done = run(job, timeout=300)[-1]
    assert done["status"] == "finished", done["message"]
    assert float(augmentation_switch(job._trainer).on.numpy()) == 0.0


def test_stacked_steps_train_batch_for_batch_like_keras_own_steps(mnist):
    # 1,000 images at batch 64: stacks of 4, then 3 padded to 4, then the partial batch of 40 alone.
    x, y = mnist.x_train[:1000], one_hot(mnist.y_train[:1000])

    def trained(stacked: bool):
        keras.utils.set_random_seed(5)
        trainer = reads_uint8(ARCHITECTURES["mlp"](None), stacked=stacked)
        compile_model(trainer, steps_per_execution=1 if stacked else 4, jit_compile=True)
        batches = training_batches(x, y, 64, chunk=4, seed=5, stacked=stacked)
        history = trainer.fit(batches, shuffle=False, epochs=2, verbose=0).history
        return trainer, history

    (plain, plain_history), (stacked, stacked_history) = trained(False), trained(True)
    assert int(stacked.optimizer.iterations) == int(plain.optimizer.iterations) == 2 * 16  # a step a batch
    for got, expected in zip(stacked.get_weights(), plain.get_weights(), strict=True):
        np.testing.assert_allclose(got, expected, atol=2e-5)  # the same steps, in another XLA program
    # Keras' epoch means over every batch, as its own loop reports them.
    assert stacked_history["loss"] == pytest.approx(plain_history["loss"], rel=1e-4)
    assert stacked_history["accuracy"] == pytest.approx(plain_history["accuracy"], abs=1e-3)
    assert stacked_history["loss"][1] < stacked_history["loss"][0]


@pytest.mark.slow
def test_stop_ends_within_a_batch_and_second_job_is_busy(mnist):
    config = TrainConfig(epochs=50, batch_size=64, train_size=60_000)
    job = start_training(config, mnist)
    with pytest.raises(BusyError, match="already in progress"):
        start_training(TrainConfig(), mnist)
    steps_seen = []
    for record in job.follow(timeout=60):
        if record["type"] == "batch":
            steps_seen.append((record["epoch"], record["step"]))
            if len(steps_seen) == 2:
                asked = time.perf_counter()
                job.stop()
    assert job.wait(60)
    stopped_after = time.perf_counter() - asked
    assert job.status == "stopped" and "stopped" in job.result["message"]
    assert job.epoch == 1, "the run went on into another epoch after the stop"
    # A stop lands after the current TensorFlow call and skips the validation pass.
    assert stopped_after < 3, f"stop took {stopped_after:.1f} s"
    assert job.result["test_accuracy"] is None, "a stopped run is not evaluated"
    assert not any(r["type"] == "epoch" for r in job.records), "the interrupted epoch was reported"
    # The process is free for the next run once the job has ended.
    follow_up = start_training(TrainConfig(epochs=1, train_size=200), mnist)
    assert run(follow_up)[-1]["status"] == "finished"


@pytest.mark.slow
def test_training_reads_uint8_and_the_model_keeps_its_float_input(mnist):
    # A float32 copy of the training set is 188 MB; the job must train on MNIST's uint8 arrays as they are.
    tracemalloc.start()
    try:
        job = start_training(TrainConfig(epochs=1), mnist)
        for record in job.follow(timeout=120):
            if record["type"] == "batch":
                job.stop()
        assert job.wait(60) and job.status == "stopped"
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 100e6, f"the job allocated {peak / 1e6:.0f} MB of numpy arrays; expected no float copy"
    # What gets saved is the network alone, with the float32 [0, 1] input that prediction feeds it.
    assert job.model.inputs[0].dtype == "float32" and job.model.input_shape == (None, 28, 28)
    assert job._trainer.inputs[0].dtype == "uint8"
    x = mnist.x_test[:8] / np.float32(255)
    np.testing.assert_allclose(job._trainer(mnist.x_test[:8]), job.model(x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("bad_loss", [float("nan"), float("inf")])
def test_non_finite_loss_stops_training_with_a_clear_message(mnist, bad_loss):
    # Adam's bounded steps keep these networks finite even at learning rate 1, so the callback that
    # guards a real fit is fed a non-finite loss directly, as Keras would hand it over.
    from mnist_core.training import TrainingJob, _Stream

    job = TrainingJob(TrainConfig(epochs=3, learning_rate=0.5), mnist)
    job.epoch = 2
    stream = _Stream(job, steps=10, started=time.perf_counter(), samples=320, validation_samples=100)
    stream.set_model(build_model("mlp"))
    stream.on_train_begin()
    stream.on_epoch_begin(1)
    stream.on_train_batch_end(3, {"loss": bad_loss, "accuracy": 0.1})
    assert stream.model.stop_training
    assert f"the loss became {bad_loss} at epoch 2, step 4" in stream.failure
    assert "smaller learning rate than 0.5" in stream.failure
    assert job.records == [], "a non-finite loss must not reach the curves"


def test_failure_inside_the_thread_reaches_the_follower(mnist):
    class Broken:
        x_train = y_train = x_test = y_test = None

    job = start_training(TrainConfig(epochs=1, train_size=100), Broken())
    records = run(job)
    assert [r["type"] for r in records] == ["done"]
    assert job.status == "failed" and "training failed" in records[-1]["message"]
