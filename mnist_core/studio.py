"""The app's server-side state: the active model, the data, training runs and the tables behind its charts.

One Studio per process, shared by every visitor. Nothing here knows Gradio: charts and tables come out as
plain dicts of columns, images as uint8 arrays. TensorFlow loads only when a model is loaded or trained.
"""

from __future__ import annotations

import contextlib
import logging
import shlex
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import plots
from .config import PRESETS, RunLimitError, TrainConfig, TrainingDisabledError, short_repr
from .data import Mnist, MnistDataError, MnistNotFoundError, class_counts, load_mnist, mean_images, sample
from .predict import Predictor
from .preprocess import to_mnist
from .store import (
    ModelFileError,
    ModelInfo,
    check_model_name,
    clean_stale_temps,
    list_models,
    new_model_name,
    read_active_name,
    read_metadata,
    write_active_name,
)

logger = logging.getLogger(__name__)

MODEL_WAIT_SECONDS = 30.0  # a prediction that arrives while TensorFlow loads waits this long, then fails
MAX_CURVE_POINTS = 400  # batch points per run and metric; gr.LinePlot thins lines past 1,000 anyway
MISTAKES_SHOWN = 36
GALLERY_SCALE = 4  # 28 px digits shown at 112 px, whole-pixel blocks
ACTIVE_PHASES = ("running", "saving")
RATE_WINDOW_SECONDS = 3600.0  # --max-runs-per-hour counts the runs a visitor started in the last hour


class ModelNotReady(RuntimeError):
    """The model is still loading (TensorFlow starts in the background)."""


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

    @property
    def headline(self) -> str:
        """One line on how the run ended (or that it has not)."""
        if self.phase == "finished":
            return f"Run {self.number}: test accuracy {self.test_accuracy:.2%}"
        if self.phase == "stopped" and self.test_accuracy is not None:
            return f"Run {self.number} stopped (test accuracy so far {self.test_accuracy:.2%})"
        return f"Run {self.number} {self.phase}"


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


def model_label(info: ModelInfo) -> str:
    """A model picker entry: name, architecture and test accuracy."""
    arch = ((info.metadata.get("config") or {}).get("arch") or "").upper()
    accuracy = info.test_accuracy
    score = "test accuracy unknown" if accuracy is None else f"{accuracy:.2%} test accuracy"
    return " · ".join(part for part in (info.name, arch, score) if part)


class Studio:
    """The active model, the MNIST data and the training runs of one app process."""

    def __init__(
        self,
        models_dir,
        *,
        data_path=None,
        model_path=None,
        training: bool = True,
        max_runs_per_hour: int | None = None,
    ):
        self.models_dir = Path(models_dir)
        self.data_path = data_path
        self.model_path = Path(model_path) if model_path else None
        self.training = training  # False: a read-only demo, Draw and Dataset only
        self.limiter = RunLimiter(max_runs_per_hour)
        self.predictor = Predictor()
        self.model_label = ""
        self.model_error = ""
        self.model_version = 0  # bumped on every swap and every saved model, so pollers notice
        self._loaded = threading.Event()
        self._loader: threading.Thread | None = None
        self._loader_lock = threading.Lock()
        self._model_lock = threading.Lock()
        self._data: Mnist | None = None
        self.data_error = ""
        self._data_tried = False
        self._data_lock = threading.Lock()
        self._overviews: dict[str, tuple] = {}
        self.runs: list[Run] = []
        self._runs_lock = threading.Lock()

    # --- start-up -------------------------------------------------------------------------------

    def start_loading(self) -> threading.Thread:
        """Load TensorFlow, the start-up model and the data in the background, once; the page answers."""
        if self._loader is not None:
            return self._loader
        with self._loader_lock:
            if self._loader is None:
                self._loader = threading.Thread(target=self._load_startup, name="studio-loader", daemon=True)
                self._loader.start()
        return self._loader

    def _load_startup(self) -> None:
        for temp in clean_stale_temps(self.models_dir):
            logger.warning("removed %s, left by a save that was killed", temp.name)
        try:
            candidates = self._startup_models()
            if not candidates:
                self.model_error = (
                    f"no model found in {self.models_dir}: train one in the Train tab, "
                    "or start the app with --model PATH"
                )
            for info in candidates:
                try:
                    self._activate(info, remember=False)
                    break
                except ModelFileError as error:
                    if info is candidates[-1]:
                        raise
                    logger.warning("could not load %s, trying %s: %s", info.name, candidates[-1].name, error)
        except Exception as error:  # shown on the page; Draw explains instead of crashing
            logger.warning("could not load the start-up model: %s", error)
            self.model_error = f"could not load the model: {error}"
        finally:
            self._loaded.set()
        with contextlib.suppress(MnistNotFoundError, MnistDataError):
            self.data()  # on failure data_error holds the explanation the Dataset and Train tabs show

    def _startup_models(self) -> list[ModelInfo]:
        """The models to try at start-up, in order: --model, else the remembered one, then the first."""
        models = self.models()
        if self.model_path is not None:
            if not self.model_path.is_file():
                raise FileNotFoundError(f"model file {str(self.model_path)!r} does not exist")
            target = self.model_path.resolve()
            return [next(info for info in models if info.path.resolve() == target)]
        first = models[:1]  # list_models puts "default" first, then the newest
        remembered = read_active_name(self.models_dir)
        if remembered is None:
            return first
        info = next((info for info in models if info.name == remembered), None)
        if info is None:
            logger.warning("the last active model %r is gone from %s", remembered, self.models_dir)
            return first
        return [info] + [other for other in first if other is not info]

    def wait_for_model(self, timeout: float | None = MODEL_WAIT_SECONDS) -> bool:
        """True once the start-up load has ended (with or without a model)."""
        return self._loaded.wait(timeout)

    @property
    def loading(self) -> bool:
        return not self._loaded.is_set()

    # --- models ---------------------------------------------------------------------------------

    def models(self) -> list[ModelInfo]:
        """The models the picker offers: the --model file (if outside the models dir), then the dir's."""
        infos = list_models(self.models_dir)
        if self.model_path is not None and self.model_path.is_file():
            known = {info.path.resolve() for info in infos}
            if self.model_path.resolve() not in known:
                infos.insert(
                    0, ModelInfo(str(self.model_path), self.model_path, read_metadata(self.model_path))
                )
        return infos

    def model_choices(self) -> list[tuple[str, str]]:
        """(label, name) pairs for a picker, labels carrying the test accuracy."""
        return [(model_label(info), info.name) for info in self.models()]

    @property
    def model_name(self) -> str | None:
        return self.predictor.info.get("name")

    def select_model(self, name: str) -> str:
        """Make the saved model `name` active for everyone; returns its label."""
        # Only bare names of the models dir (and the --model file the operator named) can be loaded.
        if self.model_path is None or name != str(self.model_path):
            check_model_name(name)
        models = self.models()
        info = next((info for info in models if info.name == name), None)
        if info is None:
            available = ", ".join(i.name for i in models) or "none"
            shown = short_repr(name)
            raise ValueError(f"no model named {shown} in {self.models_dir}; available: {available}")
        self._activate(info)
        return self.model_label

    def _activate(self, info: ModelInfo, model=None, remember: bool = True) -> None:
        from .store import load_model  # imports Keras, hence only here

        with self._model_lock:
            if model is None:
                model, _ = load_model(info.path)
            self.predictor.set_model(model, {"name": info.name, "path": str(info.path)})
            self.model_label = model_label(info)
            self.model_error = ""
            self.model_version += 1
            if remember:  # under the lock, so the file names the model of the last swap
                self._remember(info)

    def _remember(self, info: ModelInfo) -> None:
        """Note the active model's name in the models dir, so that a restarted app comes back with it."""
        if info.path.parent.resolve() != self.models_dir.resolve():
            return  # a --model file from elsewhere: the command line names it again at the next start
        try:
            write_active_name(self.models_dir, info.name)
        except (OSError, ValueError) as error:  # e.g. a read-only models dir: the swap itself stands
            logger.warning("could not remember the active model %r: %s", info.name, error)

    def model_status(self) -> str:
        """One line about the active model, for the Draw tab."""
        if self.loading:
            return "Loading the model (TensorFlow starts in the background)…"
        if not self.predictor.has_model:
            return f"No model is active: {self.model_error}"
        return f"Active model: {self.model_label}"

    # --- prediction -----------------------------------------------------------------------------

    def classify(self, value, wait: float = MODEL_WAIT_SECONDS) -> tuple[np.ndarray, np.ndarray] | None:
        """(28x28 image the model sees, 10 probabilities) for a sketch or upload; None if nothing is drawn."""
        image = to_mnist(value)
        if image is None:
            return None  # checked before waiting, so an empty canvas never waits for TensorFlow
        if not self.start_loading() or not self._loaded.wait(wait):
            raise ModelNotReady("the model is still loading; try again in a few seconds")
        if not self.predictor.has_model:
            raise ValueError(f"no model is active: {self.model_error}")
        return image, self.predictor.predict(image)

    # --- data -----------------------------------------------------------------------------------

    def data(self) -> Mnist:
        """The MNIST data, loaded on first use; MnistNotFoundError explains how to provide it."""
        with self._data_lock:
            if self._data is None:
                try:
                    self._data = load_mnist(self.data_path)
                except (MnistNotFoundError, MnistDataError) as error:
                    self.data_error = str(error)
                    raise
                finally:
                    self._data_tried = True
                self.data_error = ""
            return self._data

    def data_status(self) -> tuple[bool, str]:
        """(available, message) without loading anything."""
        if self._data is not None:
            data = self._data
            return True, (
                f"MNIST from {data.source}: {len(data.y_train):,} training and "
                f"{len(data.y_test):,} test images."
            )
        if self.data_error:
            return False, self.data_error
        return False, "Loading MNIST…" if not self._data_tried else "MNIST is not loaded."

    def samples(
        self, split: str, digit: int | None, count: int, seed: int | None = None
    ) -> list[tuple[np.ndarray, str]]:
        """Random (upscaled image, label) pairs of a split, optionally of one digit."""
        images, labels = sample(self.data(), split, digit, count, seed)
        return [
            (plots.upscale(image, GALLERY_SCALE), str(label))
            for image, label in zip(images, labels, strict=True)
        ]

    def overview(self, split: str) -> tuple[np.ndarray, list[tuple[np.ndarray, str]]]:
        """(class counts (10,), the mean image of each digit as upscaled (image, digit) pairs); cached."""
        data = self.data()
        data.split(split)  # ValueError for an unknown split, before anything is cached
        if split not in self._overviews:
            means = mean_images(data, split)
            pairs = [(plots.upscale(image, GALLERY_SCALE), str(digit)) for digit, image in enumerate(means)]
            self._overviews[split] = (class_counts(data, split), pairs)
        return self._overviews[split]

    # --- training -------------------------------------------------------------------------------

    def latest_run(self) -> Run | None:
        return self.runs[-1] if self.runs else None

    def check_training(self) -> None:
        if not self.training:
            raise TrainingDisabledError(
                "training is turned off on this server (a read-only demo): Draw and Dataset still work"
            )

    def start_run(self, config: TrainConfig, visitor: str | None = None) -> Run:
        """Start training in the background; BusyError while another run trains or is being saved.

        RunLimitError when `visitor` (a client address) has used up its runs per hour.
        """
        self.check_training()
        if not isinstance(config, TrainConfig):
            raise ValueError(f"start_run expects a TrainConfig, received {type(config).__name__}")
        from .training import BusyError, start_training

        data = self.data()
        with self._runs_lock:
            self.limiter.check(visitor)
            last = self.latest_run()
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

    def stop_run(self) -> Run | None:
        """Ask the training run to stop (Keras checks after every batch); the run, or None if none trains."""
        self.check_training()
        run = self.latest_run()
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

        model, data, config = run.job.model, self.data(), run.config
        evaluation = evaluate_model(model, data.x_test, data.y_test)
        metrics = {key: done[key] for key in ("test_accuracy", "test_loss", "epoch_seconds", "history")}
        name = new_model_name(config.arch, self.models_dir)
        path = save_model(
            model,
            self.models_dir / f"{name}.keras",
            config=config.to_dict(),
            metrics=metrics,
            command=train_command(config),
        )
        run.model_name, run.test_accuracy = name, done["test_accuracy"]
        run.confusion_image = plots.figure_to_array(plots.confusion_figure(evaluation.confusion))
        run.mistakes = [
            (
                plots.upscale(data.x_test[i], GALLERY_SCALE),
                f"{data.y_test[i]} → {evaluation.predictions[i]} "
                f"({evaluation.probabilities[i, evaluation.predictions[i]]:.0%})",
            )
            for i in evaluation.misclassified(MISTAKES_SHOWN)
        ]
        # The trained model is swapped in as is; Draw answers with the old one until this line.
        self._activate(ModelInfo(name, path, read_metadata(path)), model=model)
        run.message = f"Saved as {name}; it is now the active model in Draw."

    def status(self) -> dict:
        """The latest run as a JSON-friendly dict: phase, position, speed, latest metrics, result."""
        run = self.latest_run()
        if run is None:
            return {"run": None, "status": "idle", "updates": 0, "message": "no training run yet"}
        records = list(run.job.records)
        batches = [r for r in records if r["type"] == "batch"]
        epochs = [r for r in records if r["type"] == "epoch"]
        start = next((r for r in records if r["type"] == "start"), {})
        status = {
            "run": run.number,
            # After a stop the core still scores the partial model on the test set before it ends.
            "status": "stopping" if run.phase == "running" and run.stop_requested else run.phase,
            "config": run.config.to_dict(),
            "epochs": run.config.epochs,
            "epoch": run.job.epoch,
            "steps": start.get("steps"),
            "samples": start.get("samples"),
            "updates": len(batches) + len(epochs),
            "test_accuracy": run.test_accuracy,
            "model": run.model_name,
            "message": run.message,
        }
        if batches:
            last = batches[-1]
            status.update({key: last[key] for key in ("step", "loss", "accuracy", "samples_per_second")})
            status.update(progress=last["progress"], eta_seconds=last["eta_seconds"], elapsed=last["elapsed"])
        if epochs:
            status.update(val_loss=epochs[-1]["val_loss"], val_accuracy=epochs[-1]["val_accuracy"])
        if not run.active:
            status.update(
                progress=1.0 if run.phase == "finished" else status.get("progress", 0.0), eta_seconds=0
            )
        return status

    def version(self) -> tuple:
        """Changes whenever anything the Train tab or the model picker shows changes."""
        run = self.latest_run()
        run_key = (len(self.runs), run.phase, run.stop_requested, len(run.job.records)) if run else (0,)
        return (*run_key, self.model_version, self.loading, self.data_status()[1])

    def curves(self, compare: bool = False) -> dict[str, dict[str, list]]:
        """Columns (epoch, value, series) for the loss and accuracy charts; all runs when `compare`."""
        charts = {metric: {"epoch": [], "value": [], "series": []} for metric in ("loss", "accuracy")}
        chosen = self.runs if compare else self.runs[-1:]
        for run in chosen:
            prefix = f"run {run.number} " if compare else ""
            records = list(run.job.records)
            batches = _thin([r for r in records if r["type"] == "batch"], MAX_CURVE_POINTS)
            epochs = [r for r in records if r["type"] == "epoch"]
            for metric, chart in charts.items():
                for r in batches:
                    chart["epoch"].append(r["epoch"] - 1 + r["step"] / r["steps"])
                    chart["value"].append(float(r[metric]))
                    chart["series"].append(f"{prefix}train")
                for r in epochs:
                    chart["epoch"].append(float(r["epoch"]))
                    chart["value"].append(float(r[f"val_{metric}"]))
                    chart["series"].append(f"{prefix}validation")
        return charts

    def epoch_table(self) -> dict[str, list]:
        """Per-epoch metrics of the latest run."""
        run = self.latest_run()
        epochs = [r for r in (run.job.records if run else []) if r["type"] == "epoch"]
        keys = ("loss", "accuracy", "val_loss", "val_accuracy")
        table = {"epoch": [r["epoch"] for r in epochs]}
        table.update({key: [round(r[key], 4) for r in epochs] for key in keys})
        table["seconds"] = [round(r["epoch_seconds"], 1) for r in epochs]
        return table

    def history_table(self) -> dict[str, list]:
        """One row per run of this process, newest first."""
        rows = [
            {
                "run": run.number,
                "network": run.config.arch.upper(),
                "epochs": run.config.epochs,
                "batch size": run.config.batch_size,
                "learning rate": run.config.learning_rate,
                "training images": run.config.train_size,
                "status": run.phase,
                "test accuracy": None if run.test_accuracy is None else round(run.test_accuracy, 4),
                "saved as": run.model_name or "",
            }
            for run in reversed(self.runs)
        ]
        columns = (
            "run",
            "network",
            "epochs",
            "batch size",
            "learning rate",
            "training images",
            "status",
            "test accuracy",
            "saved as",
        )
        return {column: [row[column] for row in rows] for column in columns}


def duration(seconds: float | None) -> str:
    """Seconds as "42 s" or "3 min 05 s"."""
    seconds = max(0, round(seconds or 0))
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


def describe(status: dict) -> tuple[str, str, str]:
    """A Studio.status() in words: (which run, where it is, its latest metrics)."""
    if status["run"] is None:
        return "No run yet", "choose a preset and press Train.", ""
    phase = status["status"]
    if phase == "running" and "step" not in status:
        where = "starting: preparing the data and building the model…"
    elif phase == "running":
        where = (
            f"epoch {status['epoch']} of {status['epochs']} · step {status['step']:,} of {status['steps']:,}"
            f" · {status['samples_per_second']:,.0f} samples/s · about {duration(status['eta_seconds'])} left"
        )
    elif phase == "stopping":
        where = "stopping: ending the current batch and scoring the partial model…"
    elif phase == "saving":
        where = "training done: evaluating and saving the model…"
    elif phase == "finished":
        where = f"finished in {duration(status.get('elapsed'))}: test accuracy {status['test_accuracy']:.2%}"
    else:
        where = status["message"]
    metrics = []
    if "loss" in status:
        metrics.append(f"loss {status['loss']:.4f} · accuracy {status['accuracy']:.2%}")
    if "val_accuracy" in status:
        metrics.append(f"validation loss {status['val_loss']:.4f} · accuracy {status['val_accuracy']:.2%}")
    return f"Run {status['run']} · {status['config']['arch'].upper()}", where, " — ".join(metrics)


def preset_values(arch: str) -> dict:
    """The preset's settings the Train tab shows (epochs, batch size, learning rate, training images)."""
    if not isinstance(arch, str) or arch not in PRESETS:
        raise ValueError(f"preset must be one of {sorted(PRESETS)}, received {short_repr(arch)}")
    preset = PRESETS[arch]
    return {
        "epochs": preset.epochs,
        "batch_size": preset.batch_size,
        "learning_rate": preset.learning_rate,
        "train_size": preset.train_size,
    }


def _thin(records: list, limit: int) -> list:
    """At most `limit` records, evenly spread, always keeping the last."""
    if len(records) <= limit:
        return records
    keep = np.unique(np.linspace(0, len(records) - 1, limit).round().astype(int))
    return [records[i] for i in keep]
