"""The app's models and data: the active model, classification, the MNIST data and its overviews.

One Studio per process. Nothing here knows Gradio: images come out as uint8 arrays, the runs live in
`runs.Runs` (studio.runs_manager) and their tables in `run_tables`. TensorFlow loads only when a model is
loaded or trained.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from pathlib import Path

import numpy as np

from . import plots, run_tables
from .config import PRESETS, TrainConfig, short_repr
from .data import Mnist, MnistDataError, MnistNotFoundError, class_counts, load_mnist, mean_images, sample
from .predict import Predictor
from .preprocess import to_mnist
from .runs import GALLERY_SCALE, Run, Runs
from .store import (
    ModelFileError,
    ModelInfo,
    check_model_name,
    clean_stale_temps,
    list_models,
    read_active_name,
    read_metadata,
    write_active_name,
)

logger = logging.getLogger(__name__)

MODEL_WAIT_SECONDS = 30.0  # a prediction that arrives while TensorFlow loads waits this long, then fails


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
    ):
        self.models_dir = Path(models_dir)
        self.data_path = data_path
        self.model_path = Path(model_path) if model_path else None
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
        self.runs_manager = Runs(self, training=training, max_runs_per_hour=max_runs_per_hour)

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
                    self.activate(info, remember=False)
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
        self.activate(info)
        return self.model_label

    def activate(self, info: ModelInfo, model=None, remember: bool = True) -> None:
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

    # --- prediction -----------------------------------------------------------------------------

    def classify(self, value, wait: float = MODEL_WAIT_SECONDS) -> tuple[np.ndarray, np.ndarray] | None:
        """(28x28 image the model sees, 10 probabilities) for an upload; None if nothing is drawn."""
        return self.classify_image(to_mnist(value), wait)

    def classify_image(self, image, wait: float = MODEL_WAIT_SECONDS) -> tuple[np.ndarray, np.ndarray] | None:
        """(image, 10 probabilities) of a preprocessed (28, 28) image; None stays None (nothing drawn)."""
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

    # --- training (runs.Runs does the work) -----------------------------------------------------

    @property
    def runs(self) -> list[Run]:
        return self.runs_manager.runs

    @property
    def training(self) -> bool:
        return self.runs_manager.training

    def latest_run(self) -> Run | None:
        return self.runs_manager.latest()

    def check_training(self) -> None:
        self.runs_manager.check_training()

    def start_run(self, config: TrainConfig, visitor: str | None = None) -> Run:
        """Start a run (runs.Runs.start): BusyError while another trains, RunLimitError past the cap."""
        return self.runs_manager.start(config, visitor)

    def stop_run(self) -> Run | None:
        """Ask the training run to stop; the run, or None if none trains."""
        return self.runs_manager.stop()

    def status(self) -> dict:
        """The latest run as a JSON-friendly dict (run_tables.status)."""
        return run_tables.status(self.latest_run())

    def version(self) -> tuple:
        """Changes whenever anything the Train tab or the model picker shows changes."""
        return (*self.runs_manager.version(), self.model_version, self.loading, self.data_status()[1])


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
