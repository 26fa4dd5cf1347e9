"""Export a model as .keras, ONNX or LiteRT (.tflite), and check each file in its own runtime.

Keras' own `model.export` does the ONNX (through tf2onnx) and LiteRT (through TensorFlow's TFLite
converter) conversions; this module adds atomic writes, stable tensor names, a dynamic batch size and a
check against the Keras model. Heavy libraries are imported inside the functions, so importing this
module stays cheap for the app's start-up.
"""

from __future__ import annotations

import os
import tempfile
import threading
import warnings
from pathlib import Path

import numpy as np

from .store import atomic_write, check_model_shape

FORMATS = ("keras", "onnx", "litert")
SUFFIXES = {"keras": ".keras", "onnx": ".onnx", "litert": ".tflite"}
# float32 end to end: measured 2e-7 to 5e-7 for both converted formats on the shipped CNN (BENCHMARKS.md),
# so a difference above this means a broken conversion, not rounding.
TOLERANCE = 1e-4
# The names the exported files use, so code outside the app can rely on them (README's examples).
INPUT_NAME = "images"
OUTPUT_NAME = "probabilities"  # ONNX only: LiteRT's signature names its output "output_0"
BATCH_DIM = "batch"

# tf2onnx and the TFLite converter build TensorFlow graphs under global state and are not documented as
# thread-safe; two visitors exporting at once take turns (an export takes 0.1 to 4 s here).
_CONVERT_LOCK = threading.Lock()


def export_suffix(fmt: str) -> str:
    """The file suffix of export format `fmt`; ValueError for an unknown format."""
    if fmt not in SUFFIXES:
        raise ValueError(f"unknown export format {fmt!r}; expected one of {', '.join(map(repr, FORMATS))}")
    return SUFFIXES[fmt]


def check_export_path(fmt: str, out_path: str | os.PathLike) -> Path:
    """`out_path` as a Path when its suffix fits `fmt`; ValueError saying which suffix is expected."""
    suffix = export_suffix(fmt)
    target = Path(out_path)
    if target.suffix != suffix:
        raise ValueError(
            f"export format {fmt!r} writes {suffix} files; received the path {str(target)!r} "
            f"(suffix {target.suffix or '(none)'!r}); use e.g. {target.with_suffix(suffix).name!r}"
        )
    return target


def export_model(model, fmt: str, out_path: str | os.PathLike) -> Path:
    """Write `model` in format `fmt` ("keras", "onnx" or "litert") to `out_path`, atomically.

    The file is written to a temp name in the same folder, synced, then renamed into place, so a reader
    sees the old file or the complete new one. ONNX and LiteRT files take float32 images of the model's
    input shape with any batch size, under the input name "images".
    """
    target = check_export_path(fmt, out_path)
    check_model_shape(model, source="the model to export")

    def write(temp: Path) -> None:  # the temp keeps the suffix: Keras insists on .keras and .tflite
        with _CONVERT_LOCK:
            _WRITERS[fmt](model, temp)

    return atomic_write(target, write)


def export_bytes(model, fmt: str, name: str = "model") -> tuple[bytes, str]:
    """The file of `model` in format `fmt` as bytes, and a file name for it ("<name><suffix>").

    For page downloads: the export goes through a private temp folder that is removed afterwards, so the
    caller decides where (and whether) the bytes are stored.
    """
    from .store import check_model_name

    filename = f"{check_model_name(name)}{export_suffix(fmt)}"
    with tempfile.TemporaryDirectory(prefix="mnist-export-") as folder:
        path = export_model(model, fmt, Path(folder) / filename)
        return path.read_bytes(), filename


def predict_export(path: str | os.PathLike, fmt: str, images) -> np.ndarray:
    """Probabilities (n, 10) of the exported file at `path` on `images` (float32 (n, 28, 28) in [0, 1]),
    computed by the format's own runtime: Keras, onnxruntime, or LiteRT's interpreter."""
    export_suffix(fmt)
    x = _check_images(images)
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"exported file {str(path)!r} does not exist")
    return np.asarray(_RUNNERS[fmt](path, x), np.float32)


def check_export(path: str | os.PathLike, fmt: str, model, images) -> float:
    """The largest absolute difference between the probabilities of the exported file (in its own
    runtime) and of the Keras `model`, on `images` (float32 (n, 28, 28) in [0, 1])."""
    exported = predict_export(path, fmt, images)
    expected = _keras_probabilities(model, _check_images(images))
    if exported.shape != expected.shape:
        raise ValueError(
            f"the exported file gives probabilities of shape {exported.shape}; "
            f"the Keras model gives {expected.shape}"
        )
    return float(np.max(np.abs(exported - expected)))


def _check_images(images) -> np.ndarray:
    x = np.asarray(images)
    if x.ndim != 3 or x.shape[1:] != (28, 28) or len(x) == 0:
        raise ValueError(
            f"images: received an array of shape {x.shape}; expected at least one 28x28 image, "
            "shape (n, 28, 28), float32 in [0, 1]"
        )
    return np.ascontiguousarray(x, np.float32)


def _fit(x: np.ndarray, shape) -> np.ndarray:
    """`x` (n, 28, 28) reshaped to an input of `shape` ((n, 28, 28) or (n, 28, 28, 1); batch any)."""
    return x.reshape((len(x), *(int(d) for d in shape[1:])))


def _keras_probabilities(model, x: np.ndarray) -> np.ndarray:
    x = _fit(x, model.input_shape)
    # Called directly in chunks, in inference mode (dropout off, batch norm on its moving statistics).
    chunks = [np.asarray(model(x[i : i + 1024], training=False)) for i in range(0, len(x), 1024)]
    return np.concatenate(chunks).astype(np.float32)


def _signature(model):
    import tensorflow as tf

    # A named spec with a None batch: the name becomes the input's name in both files and the batch
    # stays dynamic. Passing it also spares Keras' check that the model has been called once.
    return [tf.TensorSpec((None, *model.input_shape[1:]), tf.float32, name=INPUT_NAME)]


def _write_keras(model, path: Path) -> None:
    model.save(path)


def _write_onnx(model, path: Path) -> None:
    with warnings.catch_warnings():
        # Keras' numpy-2 patch of tf2onnx sets np.object, which numpy answers with a FutureWarning.
        warnings.filterwarnings("ignore", message=r".*np\.object.*", category=FutureWarning)
        model.export(path, format="onnx", verbose=False, input_signature=_signature(model))
    _tidy_onnx(path)


def _tidy_onnx(path: Path) -> None:
    """Name the output "probabilities" and both batch dimensions "batch" (tf2onnx writes "Identity:0"
    and "unk__83"), then let onnx's checker vouch for the file."""
    import onnx

    graph_model = onnx.load(path)
    graph = graph_model.graph
    if len(graph.output) == 1:
        old = graph.output[0].name
        for node in graph.node:
            node.output[:] = [OUTPUT_NAME if name == old else name for name in node.output]
            node.input[:] = [OUTPUT_NAME if name == old else name for name in node.input]
        graph.output[0].name = OUTPUT_NAME
    for value in (*graph.input, *graph.output):
        dims = value.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].dim_param = BATCH_DIM
    onnx.checker.check_model(graph_model)
    onnx.save(graph_model, path)


def _write_litert(model, path: Path) -> None:
    model.export(path, format="litert", verbose=False, input_signature=_signature(model))


def _run_keras(path: Path, x: np.ndarray) -> np.ndarray:
    import keras

    return _keras_probabilities(keras.saving.load_model(path, safe_mode=True, compile=False), x)


def _run_onnx(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime

    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    (spec,) = session.get_inputs()
    return session.run(None, {spec.name: _fit(x, spec.shape)})[0]


def _run_litert(path: Path, x: np.ndarray) -> np.ndarray:
    # LiteRT's own interpreter (ai-edge-litert), the runtime a phone or a Raspberry Pi uses; TensorFlow
    # 2.21's tf.lite.Interpreter still works but is deprecated in its favour.
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    (source,), (result,) = interpreter.get_input_details(), interpreter.get_output_details()
    x = _fit(x, source["shape_signature"])
    interpreter.resize_tensor_input(source["index"], x.shape)  # the file's batch is dynamic (-1)
    interpreter.allocate_tensors()
    interpreter.set_tensor(source["index"], x)
    interpreter.invoke()
    return interpreter.get_tensor(result["index"]).copy()


_WRITERS = {"keras": _write_keras, "onnx": _write_onnx, "litert": _write_litert}
_RUNNERS = {"keras": _run_keras, "onnx": _run_onnx, "litert": _run_litert}
