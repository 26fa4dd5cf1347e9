"""Load MNIST (IDX files gz or raw, Keras' mnist.npz, or a download) and sample it."""

from __future__ import annotations

import gzip
import math
import os
import threading
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MNIST_URL = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz"
# The hash keras.datasets.mnist checks, so a cut or tampered download is refused.
MNIST_SHA256 = "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1"
KEYS = ("x_train", "y_train", "x_test", "y_test")
IDX_NAMES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
NPZ_NAME = "mnist.npz"
IMAGE_SHAPE = (28, 28)
MAX_SAMPLES = 1000
_IDX_DIMS = {0x00000803: 3, 0x00000801: 1}  # magic -> number of dims; 0x08 in byte 3 means uint8

_CACHE: dict[tuple[str, ...], Mnist] = {}
_LOCK = threading.Lock()


class MnistDataError(ValueError):
    """A corrupt, truncated or invalid MNIST file; the message names the file and what is wrong."""


class MnistNotFoundError(FileNotFoundError):
    """No MNIST source was found; the message lists every way to provide one."""


@dataclass(frozen=True, eq=False, repr=False)
class Mnist:
    """The four MNIST arrays (read-only uint8) and where they came from."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: str

    def split(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """The (images, labels) of "train" or "test"."""
        if name == "train":
            return self.x_train, self.y_train
        if name == "test":
            return self.x_test, self.y_test
        raise ValueError(f"split must be 'train' or 'test', received {name!r}")

    def __repr__(self) -> str:
        return f"Mnist(train={len(self.y_train)}, test={len(self.y_test)}, source={self.source!r})"


def data_dir_default() -> Path:
    """The project's data/ folder."""
    return Path(__file__).resolve().parents[1] / "data"


def keras_cache_path() -> Path:
    """Where keras.datasets.mnist keeps its download (honours KERAS_HOME like Keras does)."""
    home = os.environ.get("KERAS_HOME") or Path.home() / ".keras"
    return Path(home).expanduser() / "datasets" / NPZ_NAME


def _ways() -> str:
    return (
        "Provide MNIST in one of these ways: pass its path (--data PATH in the scripts and the app) to a "
        "folder holding the four IDX files (train-images-idx3-ubyte, train-labels-idx1-ubyte, "
        "t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte, each raw or .gz) or mnist.npz, or to an .npz file; "
        f"or set the MNIST_DATA environment variable to such a path; or put the files in the project's data/ "
        f"folder ({data_dir_default()}); or put Keras' mnist.npz at {keras_cache_path()}; or allow internet "
        f"access so it can be downloaded from {MNIST_URL}."
    )


def _in_folder(folder: Path) -> tuple[Path, ...] | None:
    """The four IDX files in folder, else its mnist.npz, else None."""
    found, missing = [], []
    for base in IDX_NAMES.values():
        names = [folder / (base + ".gz"), folder / base]
        hits = [p for p in names if p.is_file()]
        if hits:
            found.append(hits[0])
        else:
            missing.append(base + "[.gz]")
    if not missing:
        return tuple(found)
    if (folder / NPZ_NAME).is_file():
        return (folder / NPZ_NAME,)
    if found:
        raise MnistNotFoundError(
            f"{folder} holds only some MNIST IDX files, missing {', '.join(missing)}. {_ways()}"
        )
    return None


def _given(path: str | os.PathLike, origin: str) -> tuple[Path, ...]:
    """The files behind a path the user named; never falls back to another source."""
    p = Path(path).expanduser()
    if p.is_dir():
        files = _in_folder(p)
        if files is None:
            raise MnistNotFoundError(
                f"{p} (from {origin}) holds neither the MNIST IDX files nor mnist.npz. {_ways()}"
            )
        return files
    if p.is_file():
        # One IDX file named directly stands for the folder holding all four.
        return _given(p.parent, origin) if p.name.split(".")[0] in IDX_NAMES.values() else (p,)
    raise MnistNotFoundError(f"{p} (from {origin}) does not exist. {_ways()}")


def _locate(path: str | os.PathLike | None) -> tuple[Path, ...] | None:
    if path is not None:
        return _given(path, "the path argument")
    if os.environ.get("MNIST_DATA"):
        return _given(os.environ["MNIST_DATA"], "the MNIST_DATA environment variable")
    folder = data_dir_default()
    if folder.is_dir() and (files := _in_folder(folder)):
        return files
    cache = keras_cache_path()
    return (cache,) if cache.is_file() else None


def _download() -> Path:
    target = keras_cache_path()
    try:
        import keras  # only here: importing Keras pulls in TensorFlow, which takes seconds

        got = keras.utils.get_file(
            target.name, origin=MNIST_URL, cache_subdir=str(target.parent), file_hash=MNIST_SHA256
        )
    except Exception as exc:  # Keras raises a bare Exception for a failed fetch
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise MnistNotFoundError(
            f"MNIST data not found and the download failed ({reason}). {_ways()}"
        ) from exc
    return Path(got)


def load_mnist(path: str | os.PathLike | None = None, *, download: bool = True) -> Mnist:
    """Load MNIST from the first source found: path, $MNIST_DATA, data/, the Keras cache, a download."""
    with _LOCK:  # one load (or download) at a time; callers for the same source share the result
        files = _locate(path)
        if files is None:
            if not download:
                raise MnistNotFoundError(f"MNIST data not found and download=False. {_ways()}")
            files = (_download(),)
        key = tuple(str(f.resolve()) for f in files)
        if key not in _CACHE:
            _CACHE[key] = _read_npz(files[0]) if len(files) == 1 else _read_idx_set(files)
        return _CACHE[key]


def _payload(path: Path) -> tuple[bytes, str]:
    """The file's bytes, gunzipped when it is gzip (judged by content, not by name)."""
    raw = path.read_bytes()
    if raw[:2] != b"\x1f\x8b":
        return raw, ""
    try:
        return gzip.decompress(raw), " after decompression"
    except (OSError, EOFError, zlib.error) as exc:
        raise MnistDataError(
            f"{path}: corrupt gzip data ({exc}); the file is damaged or was cut short, replace it"
        ) from exc


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one IDX file (raw or gz) of uint8 images (n, rows, cols) or labels (n,), checking its header."""
    path = Path(path)
    buf, note = _payload(path)
    magic = int.from_bytes(buf[:4], "big") if len(buf) >= 4 else None
    if magic not in _IDX_DIMS:
        found = f"0x{magic:08x}" if magic is not None else f"only {len(buf)} bytes"
        raise MnistDataError(
            f"{path}: not an MNIST IDX file: magic number {found}{note}, expected 0x00000803 (uint8 images, "
            "3 dims) or 0x00000801 (uint8 labels, 1 dim)"
        )
    header = 4 + 4 * _IDX_DIMS[magic]
    if len(buf) < header:
        raise MnistDataError(
            f"{path}: expected a {header}-byte IDX header{note}, found {len(buf)} bytes; "
            "the file is truncated, replace it"
        )
    dims = tuple(int.from_bytes(buf[i : i + 4], "big") for i in range(4, header, 4))
    expected = header + math.prod(dims)
    if len(buf) != expected:
        what = "truncated" if len(buf) < expected else "longer than its header says"
        raise MnistDataError(
            f"{path}: expected {expected} bytes{note}, found {len(buf)} (its header says shape {dims}); "
            f"the file is {what}, replace it"
        )
    return np.frombuffer(buf, dtype=np.uint8, offset=header).reshape(dims)


def _read_idx_set(files: tuple[Path, ...]) -> Mnist:
    arrays = {key: read_idx(p) for key, p in zip(KEYS, files, strict=True)}
    where = {key: str(p) for key, p in zip(KEYS, files, strict=True)}
    return _checked(arrays, where, source=os.path.abspath(files[0].parent))


def _read_npz(path: Path) -> Mnist:
    try:
        # check the zip signature first: numpy would call any other file "pickled data"
        if not zipfile.is_zipfile(path):
            raise ValueError("it is not a zip archive")
        npz = np.load(path, allow_pickle=False)
        with npz:
            missing = [key for key in KEYS if key not in npz.files]
            arrays = {key: npz[key] for key in KEYS if key in npz.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise MnistDataError(
            f"{path}: not a readable .npz archive ({exc}); expected Keras' mnist.npz"
        ) from exc
    if missing:
        raise MnistDataError(
            f"{path}: missing arrays {', '.join(missing)}; expected x_train, y_train, x_test, y_test "
            "(the layout of Keras' mnist.npz)"
        )
    return _checked(arrays, {key: f"{path} [{key}]" for key in KEYS}, source=os.path.abspath(path))


def _checked(arrays: dict[str, np.ndarray], where: dict[str, str], source: str) -> Mnist:
    """Validate shapes, dtypes, ranges and counts; return read-only uint8 arrays."""
    for key, array in arrays.items():
        top = 255 if key.startswith("x") else 9
        if array.dtype.kind not in "ui":
            raise MnistDataError(f"{where[key]}: dtype {array.dtype}, expected integers (uint8)")
        if array.size and (array.min() < 0 or array.max() > top):
            bad = int(np.flatnonzero((array < 0) | (array > top))[0])
            raise MnistDataError(
                f"{where[key]}: value {array.flat[bad]} at flat index {bad} is outside 0-{top}"
            )
        arrays[key] = array.astype(np.uint8, copy=False)
        arrays[key].setflags(write=False)  # shared by every caller through the cache
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.ndim != 3 or x.shape[1:] != IMAGE_SHAPE or len(x) == 0:
            raise MnistDataError(
                f"{where['x_' + split]}: images of shape {x.shape}, expected (n, 28, 28), n > 0"
            )
        if y.ndim != 1:
            raise MnistDataError(f"{where['y_' + split]}: labels of shape {y.shape}, expected (n,)")
        if len(x) != len(y):
            raise MnistDataError(
                f"{where['x_' + split]} holds {len(x)} images but {where['y_' + split]} holds "
                f"{len(y)} labels; the counts must agree"
            )
    return Mnist(**arrays, source=source)


def _is_int(value: object) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def sample(
    data: Mnist, split: str = "train", digit: int | None = None, count: int = 16, seed: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Up to count random (images, labels) of a split, optionally of one digit only."""
    x, y = data.split(split)
    if not _is_int(count) or not 1 <= count <= MAX_SAMPLES:
        raise ValueError(f"count must be an integer from 1 to {MAX_SAMPLES}, received {count!r}")
    if digit is not None and (not _is_int(digit) or not 0 <= digit <= 9):
        raise ValueError(f"digit must be None (any digit) or an integer from 0 to 9, received {digit!r}")
    if seed is not None and (not _is_int(seed) or seed < 0):
        raise ValueError(f"seed must be None (random) or a non-negative integer, received {seed!r}")
    pool = np.arange(len(y)) if digit is None else np.flatnonzero(y == digit)
    chosen = np.random.default_rng(seed).choice(pool, size=min(count, len(pool)), replace=False)
    return x[chosen], y[chosen]


def class_counts(data: Mnist, split: str = "train") -> np.ndarray:
    """How many images of each digit 0-9 the split holds, shape (10,)."""
    return np.bincount(data.split(split)[1], minlength=10).astype(np.int64)


def mean_images(data: Mnist, split: str = "train") -> np.ndarray:
    """The mean image of each digit, (10, 28, 28) float32 in [0, 1]; zeros for a digit with no images."""
    x, y = data.split(split)
    means = np.zeros((10, *IMAGE_SHAPE), dtype=np.float32)
    for digit in range(10):
        of_digit = x[y == digit]
        if len(of_digit):
            means[digit] = of_digit.mean(axis=0, dtype=np.float64) / 255.0
    return means
