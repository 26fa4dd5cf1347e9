"""Training runs started from the app: start, stop, finish (evaluate, save, activate), and their limits.

Nothing here knows Gradio or words for the page: a run carries its phase and plain facts; the UI says them.
TensorFlow loads only when a run starts.
"""

from __future__ import annotations

import contextlib
import logging
import math
import shlex
import shutil
import threading
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from . import plots
from .config import BusyError, RunLimitError, TrainConfig, TrainingDisabledError
from .store import ModelInfo, new_model_name, read_metadata
from .visitors import owner_key

logger = logging.getLogger(__name__)

MISTAKES_SHOWN = 36
GALLERY_SCALE = 4  # 28 px digits shown at 112 px, whole-pixel blocks
ACTIVE_PHASES = ("running", "saving")
MAX_RUN_MINUTES = 15.0  # --max-run-minutes: a run's compute budget, refused up front, stopped when exceeded
MAX_QUEUED = 30  # runs waiting at most: one per visitor of a class
KEEP_RUNS = 200  # runs kept in all (the class board); older ones go, oldest first
KEEP_IMAGES = 2  # each owner's newest runs keep their confusion matrix and mistakes; older ones, the summary
KEEP_MODELS = 30  # models saved by runs kept on disk; older ones go unless someone draws with them
MIN_FREE_BYTES = 100 * 1024**2  # a run starts only with this much free disk, enough for its model
# Seconds per step, per training image, per validation pass and at start-up, by architecture, measured on
# these 2-core machines (BENCHMARKS.md: the MLP at 1.08 s an epoch at batch 32, the CNN preset at 11.9 s
# at batch 256); an estimate for the budget, not a promise.
COST = {"mlp": (0.0004, 0.000006, 0.3, 3.0), "cnn": (0.004, 0.00012, 1.5, 8.0)}
AUGMENT_COST = 1.5  # augmented images cost about half as much again
RATE_WINDOW_SECONDS = 3600.0  # --max-runs-per-hour counts the runs a visitor started in the last hour


@dataclass(frozen=True)
class EndedJob:
    """What a run keeps of its training job once it has ended: the records, not the model or the data."""

    records: tuple[dict, ...]
    epoch: int
    status: str
    running: bool = False

    @classmethod
    def of(cls, job) -> EndedJob:
        # The "done" record carries the Keras model too; only plain values are kept.
        records = tuple(
            {key: value for key, value in r.items() if key != "model"} if r["type"] == "done" else r
            for r in job.records
        )
        return cls(records, job.epoch, job.status)

    def stop(self) -> None:
        """Nothing to stop: the job has ended."""


class RunLimiter:
    """At most `per_hour` training runs started by one visitor in any hour; None: no limit."""

    def __init__(self, per_hour: int | None, clock=time.monotonic):
        whole = isinstance(per_hour, int) and not isinstance(per_hour, bool)
        if per_hour is not None and not (whole and per_hour >= 1):
            raise ValueError(f"runs per hour must be a whole number >= 1 or None, received {per_hour!r}")
        self.per_hour = per_hour
        self._clock = clock
        self._started: dict[str, deque[float]] = {}

    def check(self, visitor: str | None) -> None:
        """RunLimitError when `visitor` may not start another run now."""
        if self.per_hour is None:
            return
        now = self._clock()
        for key in list(self._started):  # forget whole hours gone by, so memory stays bounded
            times = self._started[key]
            while times and times[0] <= now - RATE_WINDOW_SECONDS:
                times.popleft()
            if not times:
                del self._started[key]
        times = self._started.get(str(visitor), ())
        if len(times) >= self.per_hour:
            wait = max(1, round((times[0] + RATE_WINDOW_SECONDS - now) / 60))
            raise RunLimitError(
                f"you have started {len(times)} training runs in the last hour, the most this server allows; "
                f"try again in about {wait} min"
            )

    def record(self, visitor: str | None) -> None:
        """Count one run started by `visitor`."""
        if self.per_hour is not None:
            self._started.setdefault(str(visitor), deque()).append(self._clock())


@dataclass(eq=False)
class Run:
    """One training run; `phase`: queued -> running -> saving -> finished, or stopped/cancelled/failed."""

    number: int
    config: TrainConfig
    job: object = None  # training.TrainingJob once it starts, an EndedJob once it has ended; None: queued
    owner: str | None = None  # the visitor's id; None: the operator (scripts, tests)
    owner_name: str = ""  # what the visitor typed for the class board
    estimate_seconds: float = 0.0
    phase: str = "queued"
    stop_requested: bool = False
    over_budget: bool = False
    message: str = ""
    test_accuracy: float | None = None
    model_name: str | None = None
    confusion_png: bytes | None = None  # the confusion matrix figure, ~20 kB
    mistakes: list[tuple[np.ndarray, str]] = field(default_factory=list)
    mistake_whys: list[np.ndarray] = field(default_factory=list)  # each mistake's "why" heat map (RGB)
    started_at: float | None = None
    tune: object = None  # collection.TuneSpec of a fine-tuning on the owner's drawings; None: a training
    tune_report: dict | None = None  # a finished fine-tuning's before and after (tuning.FineTuneJob)

    @property
    def active(self) -> bool:
        return self.phase in ACTIVE_PHASES

    @property
    def waiting(self) -> bool:
        return self.phase == "queued"


def train_command(config: TrainConfig) -> str:
    """The scripts/train.py command line that repeats a run, stored in the model's metadata."""
    words = ["python", "scripts/train.py"]
    for name, value in config.to_dict().items():
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            words.append(flag if value else f"--no-{flag[2:]}")
        else:
            words += [flag, str(value)]
    return shlex.join(words)


def tune_command(base: str, config: TrainConfig) -> str:
    """The scripts/finetune.py command line that repeats a fine-tuning on the downloaded set."""
    return shlex.join(
        ["python", "scripts/finetune.py", "--base", f"models/{base}.keras", "--data", "my-digits.npz",
         "--out", "tuned.keras", "--seed", str(config.seed)]
    )  # fmt: skip


def estimate_seconds(config: TrainConfig) -> float:
    """About how long a run of `config` takes on two cores: steps, samples, validation, start-up."""
    step, sample, validation, startup = COST[config.arch]
    steps = math.ceil(config.train_size / config.batch_size)
    per_epoch = steps * step + config.train_size * sample * (AUGMENT_COST if config.augment else 1)
    return startup + config.epochs * (per_epoch + validation)


@dataclass(frozen=True)
class _TuneSummary:
    """What a fine-tuning run keeps of its collection.TuneSpec once it has started: not the images."""

    base_name: str
    drawings_per_digit: tuple[int, ...]

    @classmethod
    def of(cls, spec) -> _TuneSummary:
        return cls(spec.base_name, tuple(spec.drawings_per_digit))


class TrainingQueue:
    """Runs waiting to train, first come first served. Small on purpose: a shared job queue (several app
    replicas) can stand in for it with the same four methods."""

    def __init__(self, max_size: int):
        self.max_size = max_size
        self._waiting: deque[Run] = deque()

    def put(self, run: Run) -> None:
        if len(self._waiting) >= self.max_size:
            raise BusyError(f"the training queue is full ({self.max_size} runs waiting); try again later")
        self._waiting.append(run)

    def take(self) -> Run | None:
        """The next run to train, or None."""
        return self._waiting.popleft() if self._waiting else None

    def remove(self, run: Run) -> bool:
        """Take a waiting run out; False if it was not waiting."""
        try:
            self._waiting.remove(run)
        except ValueError:
            return False
        return True

    def ahead_of(self, run: Run) -> list[Run]:
        """The runs waiting before `run` (all of them if it is not waiting)."""
        ahead = []
        for other in self._waiting:
            if other is run:
                break
            ahead.append(other)
        return ahead

    def __len__(self) -> int:
        return len(self._waiting)


class Runs:
    """The training runs of one app process: one trains at a time, the others wait in a fair queue; each
    visitor has at most one run waiting or training, within a time budget; a finished run's model becomes
    its owner's. `studio` gives the data, the models folder, activate/adopt and the visitors."""

    def __init__(
        self,
        studio,
        *,
        training: bool = True,
        max_runs_per_hour: int | None = None,
        max_run_minutes: float = MAX_RUN_MINUTES,
        max_queued: int = MAX_QUEUED,
        keep_runs: int = KEEP_RUNS,
        keep_models: int = KEEP_MODELS,
        estimate=None,
        worker=None,
    ):
        if not max_run_minutes > 0:
            raise ValueError(f"max_run_minutes must be > 0, received {max_run_minutes!r}")
        self.studio = studio
        self.training = training  # False: a read-only demo, Draw and Dataset only
        self.limiter = RunLimiter(max_runs_per_hour)
        self.max_run_seconds = 60.0 * max_run_minutes
        self.keep_runs, self.keep_models = keep_runs, keep_models
        self.queue = TrainingQueue(max_queued)
        self.estimate = estimate or estimate_seconds  # config -> seconds; another machine may measure its own
        self.worker = worker  # a worker.TrainingWorker: runs train in its process; None: in this one
        self.runs: list[Run] = []
        self._numbers = 0
        self._lock = threading.RLock()

    def latest(self, owner: str | None = None, *, anyone: bool = False) -> Run | None:
        """The newest run of `owner` (None: the operator's), or of anyone."""
        for run in reversed(self.runs):
            if anyone or run.owner == owner:
                return run
        return None

    def of(self, owner: str | None) -> list[Run]:
        return [run for run in self.runs if run.owner == owner]

    def check_training(self) -> None:
        if not self.training:
            raise TrainingDisabledError(
                "training is turned off on this server (a read-only demo): Draw and Dataset still work"
            )

    def start(self, config: TrainConfig, visitor=None, tune=None) -> Run:
        """Queue a run for `visitor` (None: the operator); it trains when the runs before it have.
        `tune`: a collection.TuneSpec, for a fine-tuning of its base model on its drawings.

        RunLimitError when the visitor already has a run waiting or training, has used up their runs per
        hour, or the run would take longer than the budget; BusyError when the queue is full.
        """
        self.check_training()
        if not isinstance(config, TrainConfig):
            raise ValueError(f"start_run expects a TrainConfig, received {type(config).__name__}")
        estimate = self.estimate(config)
        if estimate > self.max_run_seconds:
            raise RunLimitError(
                f"this run would take about {estimate / 60:.0f} min, more than the "
                f"{self.max_run_seconds / 60:g} min a run may take on this server: choose fewer epochs, "
                "a larger batch or fewer images"
            )
        self.studio.data()  # MnistNotFoundError now, not when the run's turn comes
        free = shutil.disk_usage(self.studio.models_dir if self.studio.models_dir.exists() else ".").free
        if free < MIN_FREE_BYTES:
            raise RunLimitError(
                f"the server's disk has {free / 1e6:.0f} MB free, too little to save a model "
                f"(needs {MIN_FREE_BYTES / 1e6:.0f} MB); try again later"
            )
        owner = visitor.id if visitor is not None else None
        with self._lock:
            mine = next(
                (run for run in self.runs if run.owner == owner and (run.waiting or run.active)), None
            )
            if mine is not None and owner is not None:
                raise RunLimitError(
                    f"your run {mine.number} is still {mine.phase}: one run at a time each; "
                    "stop it or wait for it to finish"
                )
            if mine is not None and mine.active and not mine.job.running:
                raise BusyError(
                    f"run {mine.number} has just finished and is being saved; try again in a moment"
                )
            if owner is None and any(run.active for run in self.runs):
                # The operator's scripts train in this process too: one job at a time, no queue for them.
                raise BusyError("a training run is already in progress; stop it or wait for it to finish")
            self.limiter.check(owner)
            run = Run(self._numbers + 1, config, owner=owner, estimate_seconds=estimate, tune=tune)
            run.owner_name = visitor.name if visitor is not None else ""
            self.queue.put(run)
            self._numbers += 1
            self.limiter.record(owner)
            self.runs.append(run)
            self._dispatch()
        return run

    def _dispatch(self) -> None:
        """Start the next waiting run if none is training (called under the lock)."""
        if any(run.active for run in self.runs):
            return
        run = self.queue.take()
        if run is None:
            return
        from .training import start_training

        try:
            start = self.worker.start if self.worker is not None else start_training
            run.job = start(run.config, self.studio.data(), tune=run.tune)
            run.tune = None if run.tune is None else _TuneSummary.of(run.tune)  # the images go with the job
        except Exception as error:  # its owner sees why; the runs behind it go on
            run.phase, run.message = "failed", f"the run could not start: {error}"
            self._dispatch()
            return
        run.phase, run.started_at = "running", time.monotonic()
        threading.Thread(
            target=self._finish, args=(run,), name=f"finish-run-{run.number}", daemon=True
        ).start()

    def stop(self, visitor=None) -> Run | None:
        """Stop `visitor`'s training run, or take their waiting run out of the queue; the run, or None."""
        self.check_training()
        owner = visitor.id if visitor is not None else None
        with self._lock:
            run = next((r for r in reversed(self.runs) if r.owner == owner and (r.waiting or r.active)), None)
            if run is None:
                return None
            if run.waiting and self.queue.remove(run):
                run.phase, run.message = "cancelled", "Cancelled before it started."
                return run
        if run.job is not None and run.job.running:
            run.job.stop()
            run.stop_requested = True
            return run
        return None

    def position(self, run: Run) -> tuple[int, float] | None:
        """(place in the queue, 1 = next; seconds until it should start) of a waiting run, else None."""
        with self._lock:
            if not run.waiting:
                return None
            ahead = self.queue.ahead_of(run)
            training = next((r for r in self.runs if r.active), None)
        wait = sum(other.estimate_seconds for other in ahead)
        if training is not None:
            elapsed = time.monotonic() - (training.started_at or time.monotonic())
            wait += max(training.estimate_seconds - elapsed, 5.0)
        return len(ahead) + 1, wait

    def _finish(self, run: Run) -> None:
        """Wait for the job (within the budget), then evaluate, save and hand over the model; trim."""
        job = run.job
        if not job.wait(self.max_run_seconds):
            run.over_budget = True
            job.stop()
            job.wait()
        done = job.result or {}
        try:
            if job.status == "finished" or (run.over_budget and job.has_model):
                run.phase = "saving"
                self._save(run, done)
            elif job.status == "stopped":
                run.test_accuracy = done.get("test_accuracy")
                run.message = (
                    f"Stopped during epoch {job.epoch} of {run.config.epochs}. A stopped run is not saved "
                    "and the active model is unchanged."
                )
            else:
                run.message = done.get("message") or "training failed"
            phase = "finished" if run.phase == "saving" else job.status
        except Exception as error:  # the page reports it; the app stays usable
            logger.exception("run %s could not be evaluated", run.number)
            run.message = (
                f"training ended but the model could not be evaluated: {type(error).__name__}: {error}"
            )
            phase = "failed"
        finally:
            job.release()
        # Drop the Keras model, optimizer and training arrays; the records are all the page needs later.
        run.job = EndedJob.of(job)
        with self._lock:
            run.phase = phase
            self._trim()
            self._dispatch()
        with contextlib.suppress(Exception):
            self.studio.prune_models(self.keep_models)

    def _save(self, run: Run, done: dict) -> None:
        job, data, config = run.job, self.studio.data(), run.config
        evaluation = job.evaluate()
        run.test_accuracy = evaluation.test_accuracy
        run.confusion_png = plots.figure_to_png(plots.confusion_figure(evaluation.confusion))
        run.mistakes = [
            (
                data.x_test[i].copy(),  # 784 bytes; the page enlarges it
                f"{data.y_test[i]} → {evaluation.predictions[i]} "
                f"({evaluation.probabilities[i, evaluation.predictions[i]]:.0%})",
            )
            for i in evaluation.misclassified(MISTAKES_SHOWN)
        ]
        over = ""
        if run.over_budget:
            over = (
                f"It reached the {self.max_run_seconds / 60:g} min a run may take here during epoch "
                f"{run.job.epoch} of {config.epochs} and stopped there, keeping what it had learned. "
            )
        metrics = {
            "test_accuracy": evaluation.test_accuracy,
            "test_loss": evaluation.test_loss,
            "epoch_seconds": done.get("epoch_seconds"),
            "history": done.get("history"),
        }
        command = train_command(config)
        if run.tune is not None:
            run.tune_report = {**(done.get("tune") or {}), "mnist_after": evaluation.test_accuracy}
            metrics["tune"] = run.tune_report
            command = tune_command(run.tune.base_name, config)
        models_dir = self.studio.models_dir
        name = new_model_name("tuned" if run.tune is not None else config.arch, models_dir)
        extra = {"owner": owner_key(run.owner)} if run.owner else {}
        try:
            path = job.save(
                models_dir / f"{name}.keras",
                config=config.to_dict(),
                metrics=metrics,
                command=command,
                **extra,
            )
        except Exception as error:  # a full disk or a read-only folder: the results still show
            logger.warning("run %s could not be saved: %s", run.number, error)
            run.message = (
                f"{over}Trained and evaluated, but the model could not be saved ({type(error).__name__}: "
                f"{error}); the model you draw with is unchanged."
            )
            return
        run.model_name = name
        info = ModelInfo(name, path, read_metadata(path))
        # The trained model is swapped in as is; Draw answers with the old one until this line.
        visitor = self.studio.visitors.get(run.owner) if run.owner else None
        # (A model trained in the worker process is loaded from its file: job.model is None.)
        if visitor is None:
            self.studio.activate(info, model=job.model)
        else:
            self.studio.adopt(visitor, info, job.model)
        run.message = f"{over}Saved as {name}; it is now the model you draw with."
        self._explain_mistakes(run, visitor)

    def _explain_mistakes(self, run: Run, visitor) -> None:
        """Each shown mistake's "why" heat map, with the model just saved (~20 ms each); none on failure."""
        try:
            model = (self.studio.predictor_for(visitor) if visitor else self.studio.predictor).model
            run.mistake_whys = [
                self.studio.explain_image(image.astype(np.float32) / 255.0, model=model)[1]
                for image, _ in run.mistakes
            ]
        except Exception as error:  # the mistakes still show, without their why
            logger.warning("run %s: could not explain its mistakes: %s", run.number, error)
            run.mistake_whys = []

    def _trim(self) -> None:
        """Keep images for each owner's newest runs only, and at most keep_runs runs in all."""
        seen: dict[str | None, int] = {}
        for run in reversed(self.runs):
            count = seen[run.owner] = seen.get(run.owner, 0) + 1
            if count > KEEP_IMAGES and not run.active:
                run.confusion_png, run.mistakes, run.mistake_whys = None, [], []
        while len(self.runs) > self.keep_runs:
            old = next((run for run in self.runs if not (run.active or run.waiting)), None)
            if old is None:
                return
            self.runs.remove(old)

    def version(self, owner: str | None = None) -> tuple:
        """Changes whenever anything that `owner`'s Train tab shows changes."""
        run = self.latest(owner)
        mine = (
            (run.number, run.phase, run.stop_requested, len(run.job.records) if run.job else 0) if run else ()
        )
        return (len(self.runs), len(self.queue), *mine)
