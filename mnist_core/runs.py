"""Training runs started from the app: start, stop, finish (evaluate, save, activate), and their limits.

Nothing here knows Gradio or words for the page: a run carries its phase and plain facts; the UI says them.
TensorFlow loads only when a run starts.
"""

from __future__ import annotations

import logging
import shlex
import threading
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from . import plots
from .config import BusyError, RunLimitError, TrainConfig, TrainingDisabledError
from .store import ModelInfo, new_model_name, read_metadata

logger = logging.getLogger(__name__)

MISTAKES_SHOWN = 36
GALLERY_SCALE = 4  # 28 px digits shown at 112 px, whole-pixel blocks
ACTIVE_PHASES = ("running", "saving")
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
    """One training run started from the app; `phase` goes running -> saving -> finished/stopped/failed."""

    number: int
    config: TrainConfig
    job: object  # training.TrainingJob, an EndedJob once it has ended; typed loosely: no TensorFlow here
    phase: str = "running"
    stop_requested: bool = False
    message: str = ""
    test_accuracy: float | None = None
    model_name: str | None = None
    confusion_image: np.ndarray | None = None
    mistakes: list[tuple[np.ndarray, str]] = field(default_factory=list)

    @property
    def active(self) -> bool:
        return self.phase in ACTIVE_PHASES


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


class Runs:
    """The training runs of one app process: one trains at a time; a finished one becomes the active model.

    `studio` gives the data (`studio.data()`), the models folder and `studio.activate(info, model)`.
    """

    def __init__(self, studio, *, training: bool = True, max_runs_per_hour: int | None = None):
        self.studio = studio
        self.training = training  # False: a read-only demo, Draw and Dataset only
        self.limiter = RunLimiter(max_runs_per_hour)
        self.runs: list[Run] = []
        self._lock = threading.Lock()

    def latest(self) -> Run | None:
        return self.runs[-1] if self.runs else None

    def check_training(self) -> None:
        if not self.training:
            raise TrainingDisabledError(
                "training is turned off on this server (a read-only demo): Draw and Dataset still work"
            )

    def start(self, config: TrainConfig, visitor: str | None = None) -> Run:
        """Start training in the background; BusyError while another run trains or is being saved.

        RunLimitError when `visitor` (a client address) has used up its runs per hour.
        """
        self.check_training()
        if not isinstance(config, TrainConfig):
            raise ValueError(f"start_run expects a TrainConfig, received {type(config).__name__}")
        from .training import start_training

        data = self.studio.data()
        with self._lock:
            self.limiter.check(visitor)
            last = self.latest()
            if last is not None and last.active and not last.job.running:
                raise BusyError(
                    f"run {last.number} has just finished and is being saved; try again in a moment"
                )
            job = start_training(config, data)  # the core raises BusyError while its job runs
            self.limiter.record(visitor)
            run = Run(len(self.runs) + 1, config, job)
            self.runs.append(run)
        threading.Thread(
            target=self._finish, args=(run,), name=f"finish-run-{run.number}", daemon=True
        ).start()
        return run

    def stop(self) -> Run | None:
        """Ask the training run to stop (Keras checks after every batch); the run, or None if none trains."""
        self.check_training()
        run = self.latest()
        if run is None or not run.job.running:
            return None
        run.job.stop()
        run.stop_requested = True
        return run

    def _finish(self, run: Run) -> None:
        """Wait for the job, then save, evaluate and activate a finished model; report the others."""
        job = run.job
        job.wait()
        done = job.result or {}
        try:
            if job.status == "finished":
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
        except Exception as error:  # the page reports it; the app stays usable
            logger.exception("run %s could not be saved", run.number)
            run.message = (
                f"training finished but the model could not be saved: {type(error).__name__}: {error}"
            )
            run.job = EndedJob.of(job)
            run.phase = "failed"
            return
        # Drop the Keras model, optimizer and training arrays; the records are all the page needs later.
        run.job = EndedJob.of(job)
        run.phase = job.status

    def _save(self, run: Run, done: dict) -> None:
        from .evaluate import evaluate_model
        from .store import save_model

        model, data, config = run.job.model, self.studio.data(), run.config
        models_dir = self.studio.models_dir
        evaluation = evaluate_model(model, data.x_test, data.y_test)
        metrics = {key: done[key] for key in ("test_accuracy", "test_loss", "epoch_seconds", "history")}
        name = new_model_name(config.arch, models_dir)
        path = save_model(
            model,
            models_dir / f"{name}.keras",
            config=config.to_dict(),
            metrics=metrics,
            command=train_command(config),
        )
        run.model_name, run.test_accuracy = name, done["test_accuracy"]
        run.confusion_image = plots.figure_to_array(plots.confusion_figure(evaluation.confusion))
        run.mistakes = [
            (
                data.x_test[i].copy(),  # 784 bytes; the page enlarges it
                f"{data.y_test[i]} → {evaluation.predictions[i]} "
                f"({evaluation.probabilities[i, evaluation.predictions[i]]:.0%})",
            )
            for i in evaluation.misclassified(MISTAKES_SHOWN)
        ]
        # The trained model is swapped in as is; Draw answers with the old one until this line.
        self.studio.activate(ModelInfo(name, path, read_metadata(path)), model=model)
        run.message = f"Saved as {name}; it is now the active model in Draw."

    def version(self) -> tuple:
        """Changes whenever anything about the runs that the Train tab shows changes."""
        run = self.latest()
        return (len(self.runs), run.phase, run.stop_requested, len(run.job.records)) if run else (0,)
