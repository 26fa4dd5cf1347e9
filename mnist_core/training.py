"""A training job: Keras `fit` in a background thread, streaming plain records with Keras' own keys."""

import math
import threading
import time
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from .batches import training_batches
from .config import BusyError, TrainConfig
from .data import Mnist
from .drawn import training_images
from .jobs import RecordedJob
from .models import (
    ARCHITECTURES,
    IMAGE_SHAPE,
    JIT_COMPILE,
    NUM_CLASSES,
    all_layers,
    augmentation_switch,
    compile_model,
    steps_per_execution,
    training_dtype,
    with_augmentation,
)
from .pace import Pace

# Batch records are throttled to about this many per second; epoch records always go out.
BATCH_RECORDS_PER_SECOND = 4
EVAL_BATCH_SIZE = 1000
# Batch normalisation's moving statistics trail the weights by ~1 / (1 - momentum) steps. A short run
# (fewer steps than this) is scored on statistics that still describe its first steps: a 1-epoch CNN on
# 6,000 images read 11% of the test set. Before each validation such a run recomputes them exactly, from
# one pass over RECALIBRATION_IMAGES of its training images (95.8% then; ~0.2 s on 2 cores). Longer runs
# keep Keras' own, which have long caught up (the presets' accuracy figures are theirs).
RECALIBRATE_BELOW_STEPS = 500
RECALIBRATION_IMAGES = 1024  # the CNN's activations for them: ~90 MB for a moment
# An augmented run's last epochs // CLEAN_ONE_IN see the training images as they are: the network
# settles on the digits it will be shown. The CNN preset's 12 epochs, seeds 0-2: 99.48/99.46/99.43% with
# augmentation throughout, 99.54/99.57/99.50% with the last 2 clean (BENCHMARKS.md, "Training faster").
CLEAN_ONE_IN = 6

_lock = threading.Lock()
_current: "TrainingJob | None" = None


def one_hot(labels: np.ndarray) -> np.ndarray:
    """Integer labels -> one-hot float32 (n, 10)."""
    return np.eye(NUM_CLASSES, dtype=np.float32)[labels]


def reads_uint8(model: keras.Model, stacked: bool = False) -> keras.Model:
    """`model` (float32 in [0, 1]) behind a uint8 -> [0, 1] rescaling, for training only; `stacked`: as a
    StackedSteps, which trains on stacks of batches.

    Training then reads MNIST as stored, and no job holds a float32 copy (4x the bytes; the training
    set alone is 188 MB); the scaling runs per batch inside the compiled step. The model itself, which
    is what gets saved, keeps its float32 [0, 1] input.
    """
    return (StackedSteps if stacked else keras.Sequential)(
        [keras.Input(shape=IMAGE_SHAPE, dtype="uint8"), keras.layers.Rescaling(1 / 255), model],
        name=f"{model.name}_from_uint8",
    )


class StackedSteps(keras.Sequential):
    """A Sequential whose training step takes a stack of batches and how many of them to train on
    (batches.training_batches(stacked=True)) and makes Keras' own step on each in turn, all in one
    compiled call: one optimiser step per batch, as before, but no return to TensorFlow's executor between
    them.

    For the XLA-compiled MLP: Keras' steps_per_execution runs its steps in a loop of the executor, each
    batch fetched from the pipeline and each step launched on its own, which cost about half of the
    tutorial MLP's epoch at batch 32. Keras counts a stack as one step (its callbacks, its
    steps_per_epoch); the optimiser and the metrics count the batches.
    """

    def train_step(self, data):
        x, y, batches = data  # the stack's first `batches` batches are trained on, the rest is padding
        step = super().train_step
        # The first batch outside the loop: any variable Keras makes on first use is made there, not in
        # the loop's body, where TensorFlow cannot create one.
        step((x[0], y[0]))

        def next_batch(index):
            step((x[index], y[index]))
            return (index + 1,)

        tf.while_loop(lambda index: index < batches, next_batch, (tf.constant(1),))
        return self.get_metrics_result()


def training_subset(total: int, train_size: int, seed: int) -> np.ndarray | None:
    """Indices of the seeded `train_size` of `total` MNIST training images a run trains on; None: all.
    (calibration.fit_images fits a run's temperature on the others.)"""
    if train_size >= total:
        return None
    return np.random.default_rng(seed).choice(total, train_size, replace=False)


def drawn_count(share: float, mnist_images: int) -> int:
    """How many drawn digits make up `share` of a training set with `mnist_images` MNIST images."""
    if not 0 <= share < 1:
        raise ValueError(f"drawn share must be in [0, 1), received {share!r}")
    return round(share * mnist_images / (1 - share))


def clean_epochs(config: TrainConfig) -> int:
    """How many of a run's last epochs train without augmentation (one in CLEAN_ONE_IN of an augmented
    run's, rounded down)."""
    return config.epochs // CLEAN_ONE_IN if config.augment else 0


def start_training(config: TrainConfig, data: Mnist, tune=None) -> "TrainingJob":
    """Start a job in the background (`tune`, a collection.TuneSpec: a fine-tuning); raise BusyError while
    another one runs."""
    global _current
    with _lock:
        if _current is not None and _current.running:
            where = f"epoch {_current.epoch} of {_current.config.epochs}" if _current.epoch else "starting"
            raise BusyError(
                f"a training run is already in progress ({_current.config.arch}, {where}); "
                "stop it or wait for it to finish"
            )
        if tune is None:
            job = TrainingJob(config, data)
        else:
            from .tuning import FineTuneJob

            job = FineTuneJob(config, data, tune)
        _current = job
        job._thread.start()
    return job


class TrainingJob(RecordedJob):
    """One run of `fit`; records accumulate in `records` and stream through `follow()`."""

    def __init__(self, config: TrainConfig, data: Mnist):
        super().__init__(config)
        self.model: keras.Model | None = None
        self._trainer: keras.Model | None = None  # the model behind uint8 scaling (and augmentation)
        self._calibration: dict | None = None  # calibration(), once the model is trained
        self._data = data
        self._thread = threading.Thread(target=self._run, name="training-job", daemon=True)

    def stop(self) -> None:
        """Ask the job to stop; Keras checks the flag after every batch."""
        self._stop_requested.set()
        if self._trainer is not None:
            self._trainer.stop_training = True

    @property
    def has_model(self) -> bool:
        """Whether the job has a model to evaluate and save (a stopped run has one too)."""
        return self.model is not None

    # A fine-tuning's MNIST images are not the subset a run of its train_size would draw (tuning.py).
    _held_out_fit = True

    def calibration(self) -> dict:
        """The trained model's temperature and how it was fitted (calibration.fit_model), fitted once: on
        training images the run did not use when there are enough, else on a seeded sample of them all."""
        if self._calibration is None:
            from .calibration import fit_images, fit_model

            config = self.config
            images, labels, fit_on = fit_images(
                self._data, config.train_size, config.seed, held_out=self._held_out_fit
            )
            self._calibration = fit_model(self.model, images, labels, fit_on)
        return self._calibration

    def evaluate(self):
        """The trained model's evaluation.Evaluation on the MNIST test set, its probabilities calibrated."""
        from .evaluate import evaluate_model

        calibration = self.calibration()
        evaluation = evaluate_model(
            self.model, self._data.x_test, self._data.y_test, temperature=calibration["temperature"]
        )
        calibration.update(test_ece_before=evaluation.ece_uncalibrated, test_ece_after=evaluation.ece)
        return evaluation

    def save(self, path, **metadata):
        """Save the trained model (store.save_model) with its calibration; its path."""
        from .store import save_model

        return save_model(self.model, path, calibration=self.calibration(), **metadata)

    def release(self) -> None:
        """Nothing to let go of here: whoever holds the job holds its model (worker.WorkerJob frees its
        process)."""

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the job ends; True if it has."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        started = time.perf_counter()
        done: dict[str, Any] = {"type": "done"}
        try:
            self._fit(started, done)
        except Exception as error:  # reported to whoever follows the job, never lost in a thread
            done.update(status="failed", message=f"training failed: {type(error).__name__}: {error}")
        done.setdefault("status", "finished")
        done.setdefault("message", "")
        done["elapsed"] = time.perf_counter() - started
        done["model"] = self.model
        self._emit(done)

    def _fit(self, started: float, done: dict[str, Any]) -> None:
        config = self.config
        keras.utils.set_random_seed(config.seed)
        x_train, y_train = self._data.x_train, self._data.y_train
        chosen = training_subset(len(x_train), config.train_size, config.seed)
        if chosen is not None:
            x_train, y_train = x_train[chosen], y_train[chosen]
        drawn = drawn_count(config.drawn_share, len(x_train))
        if drawn:
            # The hand-made writing styles, on a stream of the seed that the drawn test set never uses
            # (drawn.training_items), read exactly as the Draw tab reads them. A share of 0.1 reads every
            # style of the drawn set, 0.05 not the long-flag 1 (BENCHMARKS.md, "Writing styles").
            x_drawn, y_drawn = training_images(self._data, drawn, seed=config.seed)
            x_train, y_train = np.concatenate([x_train, x_drawn]), np.concatenate([y_train, y_drawn])
        # Images stay uint8 (shared with every other user of the data): the trainer scales each batch.
        y_train, x_test, y_test = one_hot(y_train), self._data.x_test, one_hot(self._data.y_test)
        steps = math.ceil(len(x_train) / config.batch_size)
        dtype = training_dtype(config.arch)  # None: float32
        chunk = steps_per_execution(config.batch_size)  # batches per call into TensorFlow
        # An XLA-compiled network trains on stacks of `chunk` batches, each stack in one call (StackedSteps).
        stacked = JIT_COMPILE[config.arch] and not config.augment
        self.model = ARCHITECTURES[config.arch](dtype)
        self._trainer = reads_uint8(
            with_augmentation(self.model) if config.augment else self.model, stacked=stacked
        )
        compile_model(
            self._trainer,
            config.learning_rate,
            schedule=config.schedule,
            total_steps=steps * config.epochs,
            label_smoothing=config.label_smoothing,
            steps_per_execution=1 if stacked else chunk,
            jit_compile=stacked,
        )
        self._emit(
            {
                "type": "start",
                "config": config.to_dict(),
                "steps": steps,
                "samples": len(x_train),
                "drawn_samples": drawn,
            }
        )
        stream = _Stream(
            self,
            steps,
            started,
            samples=len(x_train),
            validation_samples=len(x_test),
            per_step=chunk if stacked else 1,
            xla=stacked,
        )
        if steps * config.epochs < RECALIBRATE_BELOW_STEPS:
            sample = np.random.default_rng(config.seed).permutation(len(x_train))[:RECALIBRATION_IMAGES]
            stream.recalibrate = lambda: precise_batch_norm(self.model, x_train[sample])
        callbacks, clean = [stream], clean_epochs(config)
        if clean:
            callbacks.append(_CleanFrom(augmentation_switch(self._trainer), config.epochs - clean))
        batches = training_batches(
            x_train, y_train, config.batch_size, chunk, seed=config.seed, stacked=stacked
        )
        self._trainer.fit(
            # One pass after another from one iterator: given steps_per_epoch, Keras keeps it between
            # epochs instead of starting the pipeline again for each (~50 ms, a tenth of an MLP epoch).
            batches.repeat(),
            steps_per_epoch=int(batches.cardinality()),
            shuffle=False,  # the batches come in a new order on every pass
            validation_data=(x_test, y_test),
            epochs=config.epochs,
            validation_batch_size=EVAL_BATCH_SIZE,
            validation_freq=_ValidateUnlessStopped(self._stop_requested),
            callbacks=callbacks,
            verbose=0,
        )
        if dtype is not None:
            self.model = float32_copy(self.model, config.arch)
        if self._fit_ended(stream, done):
            # The tutorial validates on the test set, so the last epoch's validation is the test result;
            # after mixed precision, the float32 model that is kept is scored again (its figures are the
            # saved model's, a few test digits from the bfloat16 validation's).
            loss, accuracy = stream.history["val_loss"][-1], stream.history["val_accuracy"][-1]
            if dtype is not None:
                loss, accuracy = scores_on(self.model, x_test, y_test, config.label_smoothing)
            done.update(test_loss=loss, test_accuracy=accuracy)

    def _fit_ended(self, stream: "_Stream", done: dict[str, Any]) -> bool:
        """Put what `fit` streamed into the done record, and how it ended; True if it ran to its end."""
        done.update(
            epoch_seconds=stream.epoch_seconds, history=stream.history, test_loss=None, test_accuracy=None
        )
        if stream.failure:
            done.update(status="failed", message=stream.failure)
        elif self._stop_requested.is_set():
            done.update(status="stopped", message=f"stopped by request during epoch {self.epoch}")
        else:
            return True
        return False


def float32_copy(model: keras.Model, arch: str) -> keras.Model:
    """`model` (trained under a mixed policy, its weights float32) rebuilt in float32 with its weights:
    what a run keeps, saves and exports computes in float32 like every other model."""
    copy = ARCHITECTURES[arch]()
    copy.set_weights(model.get_weights())
    return copy


def scores_on(model: keras.Model, x_test: np.ndarray, y_test: np.ndarray, label_smoothing: float):
    """(loss, accuracy) of `model` on uint8 `x_test` and one-hot `y_test`, with the run's loss."""
    probabilities = model.predict(x_test.astype(np.float32) / 255.0, batch_size=EVAL_BATCH_SIZE, verbose=0)
    loss = keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing)(y_test, probabilities)
    accuracy = np.mean(np.argmax(probabilities, axis=1) == np.argmax(y_test, axis=1))
    return float(loss), float(accuracy)


class _CleanFrom(keras.callbacks.Callback):
    """Switches the augmentation off from epoch `first` (counted from 0), on before it."""

    def __init__(self, switch, first: int):
        super().__init__()
        self.switch, self.first = switch, first

    def on_epoch_begin(self, epoch, logs=None):
        self.switch.on.assign(0.0 if epoch >= self.first else 1.0)


def precise_batch_norm(model: keras.Model, images_uint8: np.ndarray) -> None:
    """Set every BatchNormalization layer's moving statistics to those of `images_uint8` (one forward
    pass in training mode with momentum 0; no weight changes). No-op for a model without one."""
    # Nested models too (a network behind its augmentation).
    layers = [layer for layer in all_layers(model) if isinstance(layer, keras.layers.BatchNormalization)]
    if not layers:
        return
    momenta = [layer.momentum for layer in layers]
    try:
        for layer in layers:
            layer.momentum = 0.0
        model(images_uint8.astype(np.float32) / 255.0, training=True)
    finally:
        for layer, momentum in zip(layers, momenta, strict=True):
            layer.momentum = momentum


class _ValidateUnlessStopped(list):
    """Keras' `validation_freq`: validate after every epoch, except one that a stop interrupted.

    Keras validates after an interrupted epoch too, and its first validation traces the test step
    (seconds on a busy machine) before any callback can stop it; a stopped run is not scored anyway.
    """

    def __init__(self, stop_requested: threading.Event):
        super().__init__()
        self._stop_requested = stop_requested

    def __contains__(self, epoch: object) -> bool:
        return not self._stop_requested.is_set()


class _Stream(keras.callbacks.Callback):
    """Turns Keras' logs into records: throttled batch records, every epoch record, NaN detection.

    `samples` training and `validation_samples` validation images per epoch, in `steps` steps: what the
    progress line's rate and time left (pace.Pace) are reckoned from; `xla`: the steps are XLA-compiled.
    """

    def __init__(
        self,
        job: TrainingJob,
        steps: int,
        started: float,
        samples: int,
        validation_samples: int,
        per_step=1,
        xla=False,
    ):
        super().__init__()
        self.job, self.steps, self.started = job, steps, started
        self.per_step = per_step  # batches in one of Keras' steps (a stack of them: StackedSteps)
        self.pace = Pace(job.config.epochs, steps, samples, validation_samples, xla=xla)
        self.failure = ""
        self.recalibrate = None  # precise_batch_norm before each validation, for a short run
        self.epoch_seconds: list[float] = []
        self.history: dict[str, list[float]] = {}

    def on_train_begin(self, logs=None):
        self.next_emit = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self.job.epoch = epoch + 1
        self.epoch_started = time.perf_counter()
        self.train_seconds = self.validation_seconds = None
        self.pace.epoch_begin(self.epoch_started)

    def on_train_batch_end(self, batch, logs=None):
        if self.job._stop_requested.is_set():
            # fit() clears stop_training when it starts, so a stop that came early is applied here.
            self.model.stop_training = True
        loss = logs.get("loss", 0.0)
        step = min((batch + 1) * self.per_step, self.steps)  # batches of this epoch done
        if not math.isfinite(loss):
            self.failure = (
                f"the loss became {loss} at epoch {self.job.epoch}, step {step}: training diverged; "
                f"try a smaller learning rate than {self.job.config.learning_rate}"
            )
            self.model.stop_training = True
            return
        now = time.perf_counter()
        self.pace.batch_end(now, step)
        done_steps = (self.job.epoch - 1) * self.steps + step
        if now < self.next_emit:
            return
        self.next_emit = now + 1.0 / BATCH_RECORDS_PER_SECOND
        self.job._emit(
            {
                "type": "batch",
                "epoch": self.job.epoch,
                "step": step,
                "steps": self.steps,
                "loss": loss,
                "accuracy": logs.get("accuracy", 0.0),
                "samples_per_second": self.pace.samples_per_second(),
                "progress": done_steps / (self.job.config.epochs * self.steps),
                "eta_seconds": self.pace.eta(),
                "elapsed": now - self.started,
            }
        )

    def on_test_begin(self, logs=None):
        self.test_started = time.perf_counter()
        self.train_seconds = self.test_started - self.epoch_started
        self.pace.train_end()
        if self.recalibrate is not None and not self.job._stop_requested.is_set():
            self.recalibrate()

    def on_test_end(self, logs=None):
        self.validation_seconds = time.perf_counter() - self.test_started
        if not self.job._stop_requested.is_set():
            self.pace.validation_end(self.validation_seconds)

    def on_test_batch_end(self, batch, logs=None):
        if self.job._stop_requested.is_set():
            self.model.stop_evaluating = True  # a stop skips the rest of the validation pass too

    def on_epoch_end(self, epoch, logs=None):
        if self.job._stop_requested.is_set():
            return  # an interrupted epoch has no complete metrics to report
        seconds = time.perf_counter() - self.epoch_started
        self.epoch_seconds.append(seconds)
        for key, value in logs.items():
            if key in ("loss", "accuracy", "val_loss", "val_accuracy"):
                self.history.setdefault(key, []).append(float(value))
        self.job._emit(
            {
                "type": "epoch",
                "epoch": epoch + 1,
                **{key: float(value) for key, value in logs.items() if key in self.history},
                "epoch_seconds": seconds,
                "train_seconds": self.train_seconds,
                "validation_seconds": self.validation_seconds,
                "elapsed": time.perf_counter() - self.started,
            }
        )
