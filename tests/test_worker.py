"""The app's training process (mnist_core.worker): runs train outside the server, at a lower priority,
with real (short) training; a stop reaches it; a crash fails only its run; it is replaced in time."""

import os
import signal
import time

import numpy as np
import pytest
from conftest import ready_studio

from mnist_core.calibration import calibrate, temperature_of
from mnist_core.config import TrainConfig
from mnist_core.store import load_model
from mnist_core.visitors import new_visitor_id
from mnist_core.worker import WORKER_NICE, TrainingWorker, WorkerJob

QUICK = TrainConfig(epochs=1, batch_size=128, train_size=1000)
LONG = TrainConfig(epochs=50, batch_size=32, train_size=60000)  # stopped or killed long before its end


@pytest.fixture
def studio(tmp_path, mnist):
    # Its start-up load starts the worker and hands it the data.
    studio = ready_studio(tmp_path / "models", mnist, max_runs_per_hour=None, training_process=True)
    yield studio
    studio.runs_manager.worker.close()


def wait_for(condition, timeout: float = 180, what: str = ""):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


@pytest.mark.slow
def test_a_run_trains_in_the_worker_and_its_owner_draws_with_the_saved_model(studio, mnist):
    worker = studio.runs_manager.worker
    assert worker.pid is not None and worker.pid != os.getpid()  # started with the app, before any run
    assert os.getpriority(os.PRIO_PROCESS, worker.pid) == WORKER_NICE
    visitor = studio.visitors.get(new_visitor_id())
    run = studio.start_run(QUICK, visitor)
    job = run.job
    assert isinstance(job, WorkerJob) and job.model is None  # the Keras model is the worker's alone
    wait_for(lambda: not (run.active or run.waiting), what=run.phase)
    assert run.phase == "finished", run.message
    assert [r["type"] for r in run.job.records][-2:] == ["epoch", "done"]
    assert run.test_accuracy > 0.5 and run.confusion_png.startswith(b"\x89PNG") and run.mistakes
    saved = studio.models_dir / f"{run.model_name}.keras"
    assert visitor.model_name == run.model_name and saved.is_file()
    x = mnist.x_test[:64].astype(np.float32) / 255.0
    model, metadata = load_model(saved)
    # What the page shows: the saved model's probabilities at the temperature saved with it.
    expected = calibrate(np.asarray(model(x, training=False)), temperature_of(metadata))
    assert temperature_of(metadata) != 1.0
    np.testing.assert_allclose(studio.predictor_for(visitor).predict(x), expected, atol=1e-5)
    assert metadata["metrics"]["test_accuracy"] == pytest.approx(run.test_accuracy)
    # A stop reaches the worker: the run ends after its current batch, unsaved.
    run = studio.start_run(LONG, visitor)
    wait_for(lambda: run.job is not None and any(r["type"] == "batch" for r in run.job.records))
    studio.stop_run(visitor)
    wait_for(lambda: not run.active, timeout=60, what="the stop did not reach the worker")
    assert run.phase == "stopped" and "not saved" in run.message


@pytest.mark.slow
def test_a_killed_worker_fails_only_its_run_and_a_fresh_one_trains_the_next(studio):
    worker = studio.runs_manager.worker
    run = studio.start_run(LONG, studio.visitors.get(new_visitor_id()))
    wait_for(lambda: run.job is not None and any(r["type"] == "batch" for r in run.job.records))
    first = worker.pid
    os.kill(first, signal.SIGKILL)  # out of memory, or an operator's kill
    wait_for(lambda: not run.active, timeout=60, what="the run did not notice its process died")
    assert run.phase == "failed" and "ended unexpectedly" in run.message, run.message
    worker.max_runs = 1  # from now on, a fresh process for every run
    second = studio.start_run(QUICK, studio.visitors.get(new_visitor_id()))
    wait_for(lambda: second.job is not None and worker.pid is not None)
    used = worker.pid
    wait_for(lambda: not (second.active or second.waiting), what=second.phase)
    assert second.phase == "finished", second.message
    assert used != first and worker.pid is None  # replaced after its one run


@pytest.mark.slow
def test_a_request_that_arrives_while_a_run_trains_is_answered_after_it(mnist):
    # The server sends its "evaluate" as soon as it reads the done record, which can be before the
    # worker's training loop has ended: the request must wait for the loop, not be lost in it.
    worker = TrainingWorker()
    try:
        worker._ensure(mnist)
        worker._conn.send(("train", QUICK.to_dict()))
        worker._conn.send(("evaluate",))  # long before the run ends
        kinds = []
        while not kinds or kinds[-1] != "done":
            kind, record = worker._receive(120)
            assert kind == "record", record
            kinds.append(record["type"])
        status, evaluation = worker._receive(120)  # a WorkerError here: the request was lost
        assert status == "ok" and evaluation.confusion.sum() == len(mnist.y_test)
    finally:
        worker.close()
