"""Save and load models with a JSON sidecar of metadata; atomic writes; list the saved models."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import secrets
import threading
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from stat import S_ISREG

from .config import short_repr

FORMAT_VERSION = 1
MODEL_SUFFIXES = (".keras", ".h5", ".hdf5")
_NAME_RE = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")
_TEMP_MARK = ".tmp-"

logger = logging.getLogger(__name__)


class ModelFileError(ValueError):
    """A model file that is corrupt, truncated, unsupported, unsafe or of the wrong shape."""


@dataclass(frozen=True)
class ModelInfo:
    """One saved model: its name, file and metadata (from the sidecar JSON, {} when there is none)."""

    name: str
    path: Path
    metadata: dict = field(default_factory=dict)

    @property
    def test_accuracy(self) -> float | None:
        """The saved test accuracy, or None when the metadata has none."""
        value = (self.metadata.get("metrics") or {}).get("test_accuracy")
        return float(value) if isinstance(value, int | float) else None


def sidecar_path(path: str | os.PathLike) -> Path:
    """The metadata file that belongs to a model file: same name, .json suffix."""
    return Path(path).with_suffix(".json")


def _temp_path(target: Path) -> Path:
    # Same directory so os.replace is a rename on one file system; a .keras ending because Keras insists.
    return target.with_name(f".{target.name}{_TEMP_MARK}{os.getpid()}-{secrets.token_hex(4)}{target.suffix}")


def _write_synced(path: Path, data: bytes | None = None) -> None:
    """Write `data` (None: keep the content) and force it to disk before any rename exposes it."""
    with open(path, "rb+" if data is None else "wb") as f:
        if data is not None:
            f.write(data)
            f.flush()
        os.fsync(f.fileno())


def _fsync_dir(directory: Path) -> None:
    # Makes the rename itself durable; not every platform can open a directory, which is harmless.
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _remove_quietly(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()


def _remove_if_writer_died(temp: Path, pid: str) -> bool:
    """Delete a temp file whose writing process no longer exists; True if it was deleted."""
    # POSIX only: signal 0 merely probes there, while on Windows os.kill would terminate the process.
    if os.name != "posix" or not pid.isdigit() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:  # the writer is gone; anything else means it may still be writing
        _remove_quietly(temp)
        return True
    except OSError:
        pass
    return False


def _remove_stale_temps(target: Path) -> None:
    """Delete temp files of `target` left behind by processes that were killed mid-save."""
    prefix = f".{target.name}{_TEMP_MARK}"
    for temp in target.parent.glob(f"{prefix}*"):
        _remove_if_writer_died(temp, temp.name[len(prefix) :].split("-", 1)[0])


def clean_stale_temps(directory: str | os.PathLike) -> list[Path]:
    """Delete every temp file in `directory` whose writer was killed mid-save (run at start-up)."""
    removed = []
    folder = Path(directory)
    for temp in folder.glob(f".*{_TEMP_MARK}*") if folder.is_dir() else ():
        pid = temp.name.rsplit(_TEMP_MARK, 1)[1].split("-", 1)[0]
        if _remove_if_writer_died(temp, pid):
            removed.append(temp)
    return removed


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Make `path` with `write(temp)`, which writes a temp file beside it (same suffix), so that readers see
    the old file or the complete new one, never a part: the temp is synced, then renamed into place."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(target)
    temp = _temp_path(target)
    try:
        write(temp)
        _write_synced(temp)
        os.replace(temp, target)
    except BaseException:
        _remove_quietly(temp)
        raise
    _fsync_dir(target.parent)
    return target


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` so that readers see the old file or the complete new one, never a part."""
    return atomic_write(path, lambda temp: temp.write_bytes(data))


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def save_model(
    model,
    path,
    *,
    config: dict | None = None,
    metrics: dict | None = None,
    command: str | None = None,
    owner: str | None = None,
    calibration: dict | None = None,
) -> Path:
    """Save `model` to a .keras file plus `<name>.json` metadata, atomically; returns the model path.

    `owner`: a digest of the visitor who trained it (visitors.owner_key); None for the operator's models.
    `calibration`: its temperature and how it was fitted (calibration.fit_model); None: none fitted.

    Both temp files are written and synced first, then the model is renamed into place, then the JSON.
    A crash between the two renames leaves a sidecar whose model_sha256 does not match the model, and
    load_model/list_models then ignore that stale metadata rather than report another model's metrics.
    """
    import keras
    import tensorflow as tf

    target = Path(path)
    if target.suffix != ".keras":
        raise ValueError(
            f"save_model got path {str(target)!r}; expected a file name ending in .keras, "
            f"e.g. {target.with_suffix('.keras').name!r}"
        )
    check_model_shape(model, source="the model to save")
    target.parent.mkdir(parents=True, exist_ok=True)
    meta_target = sidecar_path(target)
    _remove_stale_temps(target)
    _remove_stale_temps(meta_target)
    temp_model, temp_meta = _temp_path(target), _temp_path(meta_target)
    try:
        model.save(temp_model)
        _write_synced(temp_model)
        metadata = {
            "format_version": FORMAT_VERSION,
            "name": target.stem,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "config": config,
            "metrics": metrics,
            "command": command,
            **({"owner": owner} if owner else {}),
            **({"calibration": calibration} if calibration else {}),
            "keras_version": keras.__version__,
            "tensorflow_version": tf.__version__,
            "model_sha256": _sha256(temp_model),
        }
        _write_synced(temp_meta, json.dumps(metadata, indent=2, default=_json_default).encode())
        os.replace(temp_model, target)
        os.replace(temp_meta, meta_target)
    except BaseException:
        _remove_quietly(temp_model)
        _remove_quietly(temp_meta)
        raise
    _fsync_dir(target.parent)
    return target


def _json_default(value):
    # numpy scalars and arrays show up in metrics; store them as plain JSON numbers and lists.
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"metadata value of type {type(value).__name__} is not JSON serializable")


def read_metadata(model_path: str | os.PathLike) -> dict:
    """The sidecar metadata of a model file; {} when missing, unreadable, or written for another file."""
    try:
        metadata = json.loads(sidecar_path(model_path).read_text(encoding="utf-8"))
        expected = metadata.get("model_sha256") if isinstance(metadata, dict) else ""
        stale = expected is not None and expected != _sha256(Path(model_path))
    except (OSError, ValueError):
        return {}
    return {} if stale else metadata


def write_calibration(model_path: str | os.PathLike, calibration: dict) -> Path:
    """Store `calibration` (calibration.fit_model) in a saved model's sidecar, atomically; the model file
    and the rest of its metadata stay as they are. Its sidecar path."""
    metadata = read_metadata(model_path)
    if not metadata:
        raise ModelFileError(
            f"{Path(model_path).name}: has no metadata sidecar that matches the model file; "
            "save the model with store.save_model first"
        )
    metadata["calibration"] = calibration
    data = json.dumps(metadata, indent=2, default=_json_default).encode()
    return atomic_write_bytes(sidecar_path(model_path), data)


def check_model_shape(model, source: str = "model") -> None:
    """Raise ModelFileError unless `model` takes (None, 28, 28[, 1]) images and outputs (None, 10)."""
    try:
        input_shape, output_shape = model.input_shape, model.output_shape
    except (AttributeError, ValueError) as error:
        raise ModelFileError(
            f"{source}: cannot tell the model's input and output shapes ({error}); "
            "expected a built Keras model with one input and one output"
        ) from None
    if isinstance(input_shape, list) or tuple(input_shape) not in ((None, 28, 28), (None, 28, 28, 1)):
        raise ModelFileError(
            f"{source}: the model takes input of shape {input_shape}; "
            "expected MNIST images of shape (None, 28, 28) or (None, 28, 28, 1)"
        )
    if isinstance(output_shape, list) or tuple(output_shape) != (None, 10):
        raise ModelFileError(
            f"{source}: the model outputs shape {output_shape}; "
            "expected (None, 10), one probability per digit"
        )


def _precheck_file(path: Path) -> None:
    """Reject files that are plainly not models before Keras produces a confusing message."""
    suffix = path.suffix.lower()
    if suffix not in MODEL_SUFFIXES:
        raise ModelFileError(
            f"{path.name}: unsupported model file type {suffix or '(none)'!r}; "
            "expected a .keras file or a legacy .h5 file"
        )
    if suffix == ".keras":
        try:
            with zipfile.ZipFile(path) as archive:
                names = set(archive.namelist())
        except (zipfile.BadZipFile, OSError, EOFError) as error:
            raise ModelFileError(
                f"{path.name}: not a readable .keras file (corrupt or truncated zip: {error})"
            ) from None
        if "config.json" not in names:
            raise ModelFileError(f"{path.name}: this zip file is not a Keras model (no config.json inside)")
    else:
        import h5py

        if not h5py.is_hdf5(path):
            raise ModelFileError(f"{path.name}: not a readable HDF5 (.h5) model file")


def load_model(path: str | os.PathLike):
    """Load a .keras or legacy .h5 model in safe mode; returns (model, metadata dict)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file {str(path)!r} does not exist; train one or pass another path")
    _precheck_file(path)
    import keras

    try:
        model = keras.saving.load_model(path, safe_mode=True, compile=False)
    except Exception as error:  # Keras raises ValueError, KeyError, OSError, TypeError... for bad files
        message = str(error)
        if "safe_mode" in message:
            raise ModelFileError(
                f"{path.name}: unsafe code was refused: the model contains Python code "
                "(e.g. a Lambda layer) that Keras will only load with safe_mode=False; "
                "rebuild it without custom code"
            ) from None
        raise ModelFileError(
            f"{path.name}: cannot be loaded as a Keras model ({type(error).__name__}: {message[:300]})"
        ) from None
    check_model_shape(model, source=path.name)
    return model, read_metadata(path)


def _created(info: ModelInfo) -> float:
    with contextlib.suppress(KeyError, TypeError, ValueError):
        return datetime.fromisoformat(info.metadata["created"]).timestamp()
    with contextlib.suppress(OSError):
        return info.path.stat().st_mtime  # legacy files without metadata
    return 0.0


def list_models(models_dir: str | os.PathLike) -> list[ModelInfo]:
    """Saved models in `models_dir`: "default" first, then newest first; temp files are skipped."""
    return ModelCatalog(models_dir).list()  # a fresh catalog: every file's metadata read now


class ModelCatalog:
    """list_models of one folder, reading a model's metadata (and hashing its file) only when its name,
    size or modification time changed since the last listing."""

    def __init__(self, models_dir: str | os.PathLike):
        self.directory = Path(models_dir)
        self._known: dict[str, tuple[tuple, ModelInfo]] = {}
        self._lock = threading.Lock()

    def list(self) -> list[ModelInfo]:
        """The models in the folder: "default" first, then newest first (as list_models)."""
        paths = self.directory.iterdir() if self.directory.is_dir() else ()
        infos, seen = [], set()
        with self._lock:
            for path in paths:
                # Temp files of saves in progress start with "." and are never listed.
                if path.suffix.lower() not in MODEL_SUFFIXES or path.name.startswith("."):
                    continue
                try:
                    stat = path.stat()
                    if not S_ISREG(stat.st_mode):
                        continue
                    side = sidecar_path(path).stat().st_mtime_ns if sidecar_path(path).exists() else 0
                except OSError:
                    continue
                key = (stat.st_size, stat.st_mtime_ns, side)
                known = self._known.get(path.name)
                if known is None or known[0] != key:
                    known = (key, ModelInfo(path.stem, path, read_metadata(path)))
                    self._known[path.name] = known
                infos.append(known[1])
                seen.add(path.name)
            for gone in set(self._known) - seen:
                del self._known[gone]
        infos.sort(key=lambda info: (info.name != "default", -_created(info), info.name))
        return infos


def delete_model(path: str | os.PathLike) -> None:
    """Remove a saved model and its metadata (the model file last: a listing never shows half a model)."""
    path = Path(path)
    sidecar_path(path).unlink(missing_ok=True)
    path.unlink(missing_ok=True)


def check_model_name(name) -> str:
    """`name` when it is a bare model name (no folder, no '..'); ValueError saying what is allowed."""
    return _check_name(name)


def _check_name(name, what: str = "model name") -> str:
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name) or ".." in name:
        raise ValueError(
            f"invalid {what} {short_repr(name)}: expected letters, digits, '-', '_' or '.', with no path "
            "separators and no '..', e.g. 'default' or 'cnn-20261125-190102'"
        )
    return name


def resolve_model_name(models_dir: str | os.PathLike, name: str) -> Path:
    """The file of the saved model `name` (with or without suffix) inside `models_dir`."""
    _check_name(name)
    directory = Path(models_dir)
    candidates = (
        [directory / name]
        if Path(name).suffix in MODEL_SUFFIXES
        else [directory / f"{name}{suffix}" for suffix in MODEL_SUFFIXES]
    )
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    available = ", ".join(info.name for info in list_models(directory)) or "none"
    raise FileNotFoundError(f"no model named {name!r} in {str(directory)!r}; available: {available}")


def new_model_name(
    arch: str, models_dir: str | os.PathLike | None = None, *, now: datetime | None = None
) -> str:
    """A fresh name like "cnn-20261125-190102" (UTC); -2, -3... appended if taken in `models_dir`."""
    _check_name(arch, what="architecture name")
    stamp = (now or datetime.now(UTC)).astimezone(UTC).strftime("%Y%m%d-%H%M%S")
    base = name = f"{arch}-{stamp}"
    counter = 1
    while models_dir is not None and any(
        (Path(models_dir) / f"{name}{suffix}").exists() for suffix in (*MODEL_SUFFIXES, ".json")
    ):
        counter += 1
        name = f"{base}-{counter}"
    return name
