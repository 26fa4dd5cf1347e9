"""The app's models and data: the active model, classification, the MNIST data and its overviews.

One Studio per process. Nothing here knows Gradio: images come out as uint8 arrays, the runs live in
`runs.Runs` (studio.runs_manager) and their tables in `run_tables`. TensorFlow loads only when a model is
loaded or trained.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np

from . import plots, run_tables
from .calibration import temperature_of
from .config import PRESETS, TrainConfig, short_repr
from .data import Mnist, MnistDataError, MnistNotFoundError, class_counts, load_mnist, mean_images, sample
from .predict import Predictor
from .preprocess import to_mnist
from .runs import GALLERY_SCALE, Run, Runs
from .store import ModelCatalog, ModelFileError, ModelInfo, check_model_name, clean_stale_temps, read_metadata
from .visitors import Visitor, Visitors, owner_key

logger = logging.getLogger(__name__)

MODEL_WAIT_SECONDS = 30.0  # a prediction that arrives while TensorFlow loads waits this long, then fails
MAX_LOADED_MODELS = 24  # models kept in memory for the visitors drawing with them (~2-5 MB each, no trace)


class ModelNotReady(RuntimeError):
    """The model is still loading (TensorFlow starts in the background)."""


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
        idle_seconds: float | None = None,
        training_process: bool = False,
        **run_limits,
    ):
        self.models_dir = Path(models_dir)
        self.data_path = data_path
        self.model_path = Path(model_path) if model_path else None
        self.predictor = Predictor()  # the default model's: what newcomers draw with
        self.catalog = ModelCatalog(self.models_dir)
        self.visitors = Visitors(idle_seconds) if idle_seconds else Visitors()
        self._predictors: OrderedDict[str, tuple[Predictor, str]] = OrderedDict()  # name -> (it, label)
        self._predictors_lock = threading.Lock()
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
        self._export_lock = threading.Lock()
        self.explainers = None  # explain.Explainers, made on the first "why"
        # training_process: runs train in a worker process (mnist_core.worker), as the app's do.
        worker = None
        if training and training_process:
            from .worker import TrainingWorker

            worker = TrainingWorker()
        self.runs_manager = Runs(
            self, training=training, max_runs_per_hour=max_runs_per_hour, worker=worker, **run_limits
        )

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
                    self.activate(info)
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
            data = self.data()  # on failure data_error holds the explanation the Dataset and Train tabs show
            if self.runs_manager.worker is not None:  # so that the first run starts at once
                try:
                    self.runs_manager.worker.prepare(data)
                except Exception as error:  # the first run tries again and reports it
                    logger.warning("could not start the training process: %s", error)

    def _startup_models(self) -> list[ModelInfo]:
        """The models to try at start-up, in order: --model, else "default", else the newest."""
        models = self.models()
        if self.model_path is not None:
            if not self.model_path.is_file():
                raise FileNotFoundError(f"model file {str(self.model_path)!r} does not exist")
            target = self.model_path.resolve()
            return [next(info for info in models if info.path.resolve() == target)]
        return models[:1]  # list_models puts "default" first, then the newest

    def wait_for_model(self, timeout: float | None = MODEL_WAIT_SECONDS) -> bool:
        """True once the start-up load has ended (with or without a model)."""
        return self._loaded.wait(timeout)

    @property
    def loading(self) -> bool:
        return not self._loaded.is_set()

    # --- models ---------------------------------------------------------------------------------

    def models(self) -> list[ModelInfo]:
        """Every model: the --model file (if outside the models dir), then the dir's (see catalog)."""
        infos = self.catalog.list()
        if self.model_path is not None and self.model_path.is_file():
            known = {info.path.resolve() for info in infos}
            if self.model_path.resolve() not in known:
                infos.insert(
                    0, ModelInfo(str(self.model_path), self.model_path, read_metadata(self.model_path))
                )
        return infos

    def visible_models(self, visitor: Visitor | None = None) -> list[ModelInfo]:
        """The models a visitor may pick: the operator's (no owner) and the ones this visitor trained."""
        mine = owner_key(visitor.id) if visitor else None
        return [info for info in self.models() if info.metadata.get("owner") in (None, mine)]

    def model_choices(self, visitor: Visitor | None = None) -> list[tuple[str, str]]:
        """(label, name) pairs for a visitor's picker, labels carrying the test accuracy."""
        return [(model_label(info), info.name) for info in self.visible_models(visitor)]

    @property
    def model_name(self) -> str | None:
        """The operator's default model: what a newcomer draws with."""
        return self.predictor.info.get("name")

    def visitor_model(self, visitor: Visitor | None) -> str | None:
        """The name of the model `visitor` draws with."""
        return (visitor.model_name if visitor else None) or self.model_name

    def visitor_label(self, visitor: Visitor | None) -> str:
        """The picker label of the model `visitor` draws with."""
        name = self.visitor_model(visitor)
        loaded = self._predictors.get(name)
        return loaded[1] if loaded else self.model_label

    def select_model(self, name: str, visitor: Visitor | None = None) -> str:
        """Make the saved model `name` the one `visitor` draws with (None: the default); returns its label."""
        # Only bare names of the models dir (and the --model file the operator named) can be loaded.
        if self.model_path is None or name != str(self.model_path):
            check_model_name(name)
        models = self.visible_models(visitor) if visitor else self.models()
        info = next((info for info in models if info.name == name), None)
        if info is None:
            available = ", ".join(i.name for i in models) or "none"
            shown = short_repr(name)
            raise ValueError(f"no model named {shown} in {self.models_dir}; available: {available}")
        if visitor is None:
            self.activate(info)
        else:
            self._load(info)
            visitor.model_name = info.name if info.name != self.model_name else None
            self._forget_unused()
        return model_label(info)

    def activate(self, info: ModelInfo, model=None) -> None:
        """Make `info` the default model, the one newcomers draw with."""
        with self._model_lock:
            predictor = self._load(info, model)
            self.predictor = predictor
            self.model_label = model_label(info)
            self.model_error = ""
            self.model_version += 1
        self._forget_unused()

    def adopt(self, visitor: Visitor, info: ModelInfo, model) -> None:
        """A model `visitor` just trained becomes the one they draw with."""
        self._load(info, model)
        visitor.model_name = info.name
        self.model_version += 1
        self._forget_unused()

    def _forget_unused(self) -> None:
        """Let go of loaded models nobody draws with any more (their Keras models, their traced calls)."""
        keep = self.visitors.active_models() | {self.model_name}
        with self._predictors_lock:
            for name in [name for name in self._predictors if name not in keep]:
                del self._predictors[name]

    def _load(self, info: ModelInfo, model=None) -> Predictor:
        """The Predictor of `info`, loaded if need be; at most MAX_LOADED_MODELS stay in memory."""
        from .store import load_model  # imports Keras, hence only here

        with self._predictors_lock:
            loaded = self._predictors.get(info.name)
            if loaded is not None and model is None:
                self._predictors.move_to_end(info.name)
                return loaded[0]
        if model is None:
            model, _ = load_model(info.path)
        temperature = temperature_of(info.metadata)  # 1.0 for a model saved without one
        predictor = Predictor(model, {"name": info.name, "path": str(info.path), "temperature": temperature})
        with self._predictors_lock:
            self._predictors[info.name] = (predictor, model_label(info))
            self._predictors.move_to_end(info.name)
            default = self.model_name
            for name in list(self._predictors):
                if len(self._predictors) <= MAX_LOADED_MODELS:
                    break
                if name not in (default, info.name):
                    del self._predictors[name]  # loaded again from its file when someone draws with it
        return predictor

    def predictor_for(self, visitor: Visitor | None) -> Predictor:
        """The Predictor of the model `visitor` draws with; the default if theirs is gone."""
        name = visitor.model_name if visitor else None
        if name and name != self.model_name:
            loaded = self._predictors.get(name)
            if loaded is not None:
                return loaded[0]
            info = next((i for i in self.models() if i.name == name), None)
            if info is not None:
                return self._load(info)
            visitor.model_name = None  # deleted since: back to the default
        return self.predictor

    def prune_models(self, keep: int) -> list[str]:
        """Delete the oldest models saved by runs beyond `keep`, never the default or one in use."""
        from .store import delete_model

        made = [info for info in self.catalog.list() if info.metadata.get("owner")]  # newest first
        in_use = self.visitors.active_models() | {self.model_name}
        removed = []
        for info in made[keep:]:
            if info.name in in_use:
                continue
            try:
                delete_model(info.path)
            except OSError as error:
                logger.warning("could not delete the old model %s: %s", info.name, error)
                continue
            with self._predictors_lock:
                self._predictors.pop(info.name, None)
            removed.append(info.name)
        if removed:
            self.model_version += 1
        return removed

    def export(self, visitor: Visitor | None, fmt: str) -> tuple[bytes, str]:
        """The model `visitor` draws with as a file of `fmt` (export.FORMATS): (its bytes, a file name)."""
        from .export import export_bytes, export_suffix

        export_suffix(fmt)  # ValueError for an unknown format, before anything loads
        if not self.start_loading() or not self._loaded.wait(MODEL_WAIT_SECONDS):
            raise ModelNotReady("the model is still loading; try again in a few seconds")
        predictor = self.predictor_for(visitor)
        if not predictor.has_model:
            raise ValueError(f"no model is active: {self.model_error}")
        with self._export_lock:  # a conversion takes seconds of CPU: one at a time
            return export_bytes(predictor.model, fmt, self.visitor_model(visitor) or "model")

    # --- prediction -----------------------------------------------------------------------------

    def classify(self, value, wait: float = MODEL_WAIT_SECONDS, visitor: Visitor | None = None):
        """(28x28 image the model sees, 10 probabilities) for an upload; None if nothing is drawn."""
        return self.classify_image(to_mnist(value), wait, visitor)

    def classify_image(self, image, wait: float = MODEL_WAIT_SECONDS, visitor: Visitor | None = None):
        """(image, 10 probabilities) of a preprocessed (28, 28) image; None stays None (nothing drawn)."""
        if image is None:
            return None  # checked before waiting, so an empty canvas never waits for TensorFlow
        if not self.start_loading() or not self._loaded.wait(wait):
            raise ModelNotReady("the model is still loading; try again in a few seconds")
        if not self.predictor.has_model:
            raise ValueError(f"no model is active: {self.model_error}")
        return image, self.predictor_for(visitor).predict(image)

    def explain_image(self, image, visitor: Visitor | None = None, model=None) -> tuple:
        """(explain.Explanation, uint8 RGB heat map (28, 28, 3)) of why the model `visitor` draws with (or
        `model`) answers what it does for a (28, 28) image in [0, 1]: integrated gradients."""
        from .explain import Explainers, heatmap

        if model is None:
            predictor = self.predictor_for(visitor)
            if not predictor.has_model:
                raise ValueError(f"no model is active: {self.model_error}")
            model = predictor.model
        if self.explainers is None:
            self.explainers = Explainers()
        explanation = self.explainers.explain(model, image)
        return explanation, heatmap(image, explanation.attributions)

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

    # --- training (runs.Runs does the work) -----------------------------------------------------

    @property
    def runs(self) -> list[Run]:
        return self.runs_manager.runs

    @property
    def training(self) -> bool:
        return self.runs_manager.training

    def latest_run(self, visitor: Visitor | None = None) -> Run | None:
        """The newest run of `visitor` (None: the operator's)."""
        return self.runs_manager.latest(visitor.id if visitor else None)

    def runs_of(self, visitor: Visitor | None = None) -> list[Run]:
        return self.runs_manager.of(visitor.id if visitor else None)

    def check_training(self) -> None:
        self.runs_manager.check_training()

    def start_run(self, config: TrainConfig, visitor: Visitor | None = None) -> Run:
        """Queue a run (runs.Runs.start); RunLimitError past a cap, BusyError when the queue is full."""
        return self.runs_manager.start(config, visitor)

    def start_tune(self, visitor: Visitor, seed: int = 0) -> Run:
        """Queue a fine-tuning of the model `visitor` draws with on their own digits (a run like any other:
        the same queue and caps); ValueError when their set has nothing to train on."""
        from .collection import TuneSpec
        from .finetune import tune_config

        self.check_training()
        if visitor is None:
            raise ValueError("fine-tuning needs a visitor's own digits: reload the page")
        name = self.visitor_model(visitor)
        info = next((info for info in self.models() if info.name == name), None)
        if info is None:
            raise ValueError(f"no model is active to fine-tune ({self.model_error or 'none loaded'})")
        spec = TuneSpec.of(visitor.digits, info.name, info.path, info.test_accuracy)
        config = tune_config(info.metadata.get("config"), len(spec.y_train), seed)
        return self.runs_manager.start(config, visitor, tune=spec)

    def stop_run(self, visitor: Visitor | None = None) -> Run | None:
        """Stop the visitor's training run or cancel their waiting one; the run, or None if they have none."""
        return self.runs_manager.stop(visitor)

    def status(self, visitor: Visitor | None = None) -> dict:
        """The visitor's latest run as a JSON-friendly dict (run_tables.status), with its queue place."""
        run = self.latest_run(visitor)
        return run_tables.status(run, self.runs_manager.position(run) if run else None)

    def version(self, visitor: Visitor | None = None) -> tuple:
        """Changes whenever anything the visitor's Train tab or model picker shows changes."""
        owner = visitor.id if visitor else None
        return (*self.runs_manager.version(owner), self.model_version, self.loading, self.data_status()[1])


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
