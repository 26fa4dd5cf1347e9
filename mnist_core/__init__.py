"""MNIST Studio's core: data, preprocessing, models, training, storage, prediction, evaluation, plots.

Names are imported lazily, so `import mnist_core` stays cheap and TensorFlow loads only when a
name that needs it is first used (the app can show its page before the model is ready).
"""

import importlib
import os

# TensorFlow's C++ info and warning lines are noise to users; errors still show. (A few lines printed
# before absl's logging starts cannot be silenced this way.)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

_EXPORTS = {
    "data": [
        "Mnist",
        "MnistDataError",
        "MnistNotFoundError",
        "load_mnist",
        "sample",
        "class_counts",
        "mean_images",
    ],
    "preprocess": ["to_mnist"],
    "config": ["TrainConfig", "LIMITS", "PRESETS", "ARCH_NAMES", "BusyError"],
    "models": ["ARCHITECTURES", "build_model", "compile_model"],
    "training": ["TrainingJob", "start_training", "current_job"],
    "store": ["ModelFileError", "ModelInfo", "save_model", "load_model", "list_models", "resolve_model_name"],
    "predict": ["Predictor"],
    "evaluate": ["Evaluation", "evaluate_model"],
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'mnist_core' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
