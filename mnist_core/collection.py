"""A visitor's own digits: drawings they labelled, kept in the server's memory, bounded, theirs alone.

Each drawing keeps the 28 x 28 image the model read, the label the visitor gave, the model's answer and
the stroke points (so it can be read again by a later preprocessing). Every HOLD_OUT_EVERY-th drawing of
each digit is set aside when it is added: fine-tuning never trains on those, so the accuracy measured on
them is honest. The set travels as a file in the layout of Keras' mnist.npz: x_train / y_train (the
drawings it trains on), x_test / y_test (the ones set aside), uint8.

Nothing here is written to disk. A set lives as long as its visitor (visitors.IDLE_SECONDS after their last
request) and goes when they clear it; one SetBudget bounds the drawings of all visitors together.
"""

from __future__ import annotations

import io
import threading
import zipfile
from dataclasses import dataclass, replace

import numpy as np

MAX_DRAWINGS = 1000  # one visitor's set
MAX_TOTAL_DRAWINGS = 20_000  # all visitors' sets together: at most ~5 kB each, so ~100 MB at worst
HOLD_OUT_EVERY = 3  # the 3rd, 6th, 9th ... drawing of each digit is kept aside to measure on
STORED_POINTS = 2000  # stroke points kept per drawing (a digit has a few hundred); longer ones are thinned
POINT_SCALE = 4  # stroke points are kept as int16 quarter pixels
MAX_FILE_BYTES = 4 * 1024**2  # an uploaded set file
SET_KEYS = ("x_train", "y_train", "x_test", "y_test")


class SetFullError(ValueError):
    """A visitor's set (or the server's room for all sets) holds as many drawings as it may."""


class SetBudget:
    """The number of drawings all sets may hold together."""

    def __init__(self, total: int = MAX_TOTAL_DRAWINGS):
        self.total, self.used = total, 0
        self._lock = threading.Lock()

    def take(self, count: int) -> None:
        with self._lock:
            if self.used + count > self.total:
                raise SetFullError(
                    f"the server holds {self.used:,} drawings of its visitors, the most it keeps "
                    f"({self.total:,}); download your set and try again later"
                )
            self.used += count

    def give(self, count: int) -> None:
        with self._lock:
            self.used = max(0, self.used - count)


@dataclass(frozen=True, eq=False)
class OwnDigit:
    """One labelled drawing."""

    id: int
    image: np.ndarray  # uint8 (28, 28): what the model read
    label: int
    predicted: int | None  # the model's answer when it was labelled; None for an uploaded one
    held_out: bool  # never trained on: fine-tuning measures on these
    points: np.ndarray | None = None  # int16 (n, 2) quarter pixels of all strokes; None: uploaded
    ends: np.ndarray | None = None  # int32 end index of each stroke in `points`

    @property
    def strokes(self) -> list[list[tuple[float, float]]] | None:
        """The stroke points in canvas pixels, as the page sent them (thinned past STORED_POINTS)."""
        if self.points is None:
            return None
        starts = np.concatenate([[0], self.ends[:-1]])
        scaled = self.points.astype(np.float64) / POINT_SCALE
        return [[tuple(p) for p in scaled[a:b].tolist()] for a, b in zip(starts, self.ends, strict=True)]


def _label(value, what: str = "label") -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or not 0 <= value <= 9:
        raise ValueError(f"{what}: expected a digit from 0 to 9, received {value!r:.40}")
    return int(value)


def _image(image) -> np.ndarray:
    """A (28, 28) image as uint8: floats are taken as [0, 1] (what preprocess returns)."""
    array = np.asarray(image)
    if array.shape != (28, 28) or array.dtype.kind not in "uif":
        raise ValueError(f"image: expected a (28, 28) array of numbers, received {array.dtype} {array.shape}")
    if array.dtype.kind == "f":
        if not np.isfinite(array).all():
            raise ValueError("image: expected finite values in [0, 1], received NaN or infinity")
        array = np.round(np.clip(array, 0.0, 1.0) * 255)
    elif array.min() < 0 or array.max() > 255:
        raise ValueError(f"image: expected values 0-255, received {array.min()} to {array.max()}")
    return array.astype(np.uint8)


def _packed(strokes) -> tuple[np.ndarray, np.ndarray] | None:
    """Checked strokes (lists of (n, 2) float arrays) as (int16 points, stroke ends), thinned to fit."""
    strokes = [np.asarray(s, dtype=np.float64).reshape(-1, 2) for s in strokes or [] if len(s)]
    if not strokes:
        return None
    total = sum(len(s) for s in strokes)
    if total > STORED_POINTS:  # keep each stroke's ends and an even spread between them
        keep = max(2, STORED_POINTS // len(strokes))
        strokes = [
            s[np.unique(np.linspace(0, len(s) - 1, min(len(s), keep)).round().astype(int))] for s in strokes
        ]
    points = np.concatenate(strokes) * POINT_SCALE
    points = np.clip(np.round(points), -32768, 32767).astype(np.int16)
    return points, np.cumsum([len(s) for s in strokes]).astype(np.int32)


class DigitSet:
    """One visitor's labelled drawings, oldest first; at most `capacity`, within the server's `budget`."""

    def __init__(self, budget: SetBudget | None = None, capacity: int = MAX_DRAWINGS):
        self.capacity = capacity
        self.budget = budget or SetBudget(capacity)
        self.version = 0  # bumped on every change, so pages notice
        self._items: list[OwnDigit] = []
        self._next_id = 1
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    @property
    def items(self) -> list[OwnDigit]:
        with self._lock:
            return list(self._items)

    def counts(self, part: str = "all") -> np.ndarray:
        """How many drawings of each digit, (10,) ints; part: "all", "train" or "test" (set aside)."""
        labels = [item.label for item in self._part(part)]
        return np.bincount(np.array(labels, dtype=np.int64), minlength=10)

    def _part(self, part: str) -> list[OwnDigit]:
        if part not in ("all", "train", "test"):
            raise ValueError(f"part must be 'all', 'train' or 'test', received {part!r:.40}")
        items = self.items
        if part == "all":
            return items
        return [item for item in items if item.held_out == (part == "test")]

    def arrays(self, part: str = "all") -> tuple[np.ndarray, np.ndarray]:
        """(uint8 images (n, 28, 28), uint8 labels (n,)) of a part of the set."""
        items = self._part(part)
        x = np.stack([item.image for item in items]) if items else np.zeros((0, 28, 28), np.uint8)
        return x, np.array([item.label for item in items], np.uint8)

    def add(self, image, label, predicted=None, strokes=None) -> OwnDigit:
        """Add one labelled drawing; SetFullError past the caps, ValueError for bad input (nothing added)."""
        label, image = _label(label), _image(image)
        predicted = None if predicted is None else _label(predicted, "predicted")
        packed = _packed(strokes)
        with self._lock:
            self._check_room(1)
            self.budget.take(1)
            # Set aside by position within the digit: deleting one later moves no other drawing across.
            held_out = self._added_of(label) % HOLD_OUT_EVERY == HOLD_OUT_EVERY - 1
            item = OwnDigit(0, image, label, predicted, held_out, *(packed or (None, None)))
            return self._commit([item])[0]

    def _added_of(self, label: int) -> int:
        return sum(1 for item in self._items if item.label == label)

    def _check_room(self, count: int) -> None:
        if len(self._items) + count > self.capacity:
            raise SetFullError(
                f"your set holds {len(self._items)} drawings and may hold {self.capacity}; "
                f"{count} more would not fit: delete some, or download it and clear it"
            )

    def _commit(self, items: list[OwnDigit]) -> list[OwnDigit]:
        """Number `items` and add them (under the lock, their room taken)."""
        items = [replace(item, id=self._next_id + i) for i, item in enumerate(items)]
        self._next_id += len(items)
        self._items.extend(items)
        self.version += 1
        return items

    def remove(self, item_id) -> bool:
        """Delete the drawing with this id; False if there is none."""
        if isinstance(item_id, bool) or not isinstance(item_id, int | np.integer):
            raise ValueError(f"expected a drawing's id (a whole number), received {item_id!r:.40}")
        with self._lock:
            kept = [item for item in self._items if item.id != item_id]
            if len(kept) == len(self._items):
                return False
            self._items = kept
            self.version += 1
        self.budget.give(1)
        return True

    def clear(self) -> int:
        """Delete every drawing; how many there were."""
        with self._lock:
            count, self._items = len(self._items), []
            self.version += 1
        self.budget.give(count)
        return count

    # --- files ----------------------------------------------------------------------------------

    def to_npz(self) -> bytes:
        """The set as an .npz in Keras' mnist.npz layout; x_test / y_test only when some are set aside."""
        arrays = dict(zip(("x_train", "y_train"), self.arrays("train"), strict=True))
        x_test, y_test = self.arrays("test")
        if len(y_test):
            arrays |= {"x_test": x_test, "y_test": y_test}
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **arrays)
        return buffer.getvalue()

    def add_npz(self, source) -> int:
        """Add the drawings of a set file (a path or bytes); x_test ones stay set aside. How many were
        added; ValueError saying what is wrong, and nothing added, for a file that is not such a set."""
        x_train, y_train, x_test, y_test = read_set(source, self.capacity)
        count = len(y_train) + len(y_test)
        new = [
            OwnDigit(0, image, int(label), None, held_out)
            for x, y, held_out in ((x_train, y_train, False), (x_test, y_test, True))
            for image, label in zip(x, y, strict=True)
        ]
        with self._lock:
            self._check_room(count)
            self.budget.take(count)
            self._commit(new)
        return count


def read_set(source, limit: int = MAX_DRAWINGS) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_test, y_test) of a set file in mnist.npz's layout, checked; x_test / y_test may
    be empty. At most `limit` images in all; ValueError naming what is wrong."""
    data = source if isinstance(source, bytes) else _read_bytes(source)
    where = "the set file"
    if not zipfile.is_zipfile(io.BytesIO(data)):
        raise ValueError(f"{where} is not an .npz archive; expected one with x_train and y_train (uint8)")
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        # Sizes as stored in the archive, before anything is unpacked: no zip bomb gets inflated.
        unpacked = sum(info.file_size for info in archive.infolist())
        if unpacked > limit * 800 + 64 * 1024:
            raise ValueError(
                f"{where} unpacks to {unpacked:,} bytes: more than {limit} drawings of 28 x 28 can take"
            )
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in SET_KEYS if key in npz.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise ValueError(f"{where} could not be read as .npz ({error})") from None
    if "x_train" not in arrays or "y_train" not in arrays:
        raise ValueError(f"{where} has no x_train and y_train; expected the layout of Keras' mnist.npz")
    parts = []
    for split in ("train", "test"):
        x = arrays.get(f"x_{split}", np.zeros((0, 28, 28), np.uint8))
        y = arrays.get(f"y_{split}", np.zeros((0,), np.uint8))
        if x.ndim != 3 or x.shape[1:] != (28, 28) or x.dtype.kind not in "ui":
            raise ValueError(f"x_{split}: expected uint8 images (n, 28, 28), received {x.dtype} {x.shape}")
        if y.shape != (len(x),) or y.dtype.kind not in "ui":
            raise ValueError(f"y_{split}: expected {len(x)} integer labels, received {y.dtype} {y.shape}")
        if x.size and (x.min() < 0 or x.max() > 255):
            raise ValueError(f"x_{split}: expected pixel values 0-255, received {x.min()} to {x.max()}")
        if y.size and (y.min() < 0 or y.max() > 9):
            raise ValueError(f"y_{split}: expected digits 0-9, received {y.min()} to {y.max()}")
        parts += [x.astype(np.uint8), y.astype(np.uint8)]
    count = len(parts[1]) + len(parts[3])
    if count == 0 or count > limit:
        raise ValueError(f"{where} holds {count} drawings; expected 1 to {limit}")
    return tuple(parts)


def _read_bytes(path) -> bytes:
    with open(path, "rb") as file:
        data = file.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise ValueError(
            f"the set file is larger than {MAX_FILE_BYTES // 1024**2} MB; a set of 1,000 "
            "drawings takes well under 1 MB"
        )
    return data


@dataclass(frozen=True, eq=False)
class TuneSpec:
    """What a fine-tuning run needs: the base model's file and a snapshot of a visitor's set."""

    base_name: str
    base_path: str
    base_test_accuracy: float | None  # on the MNIST test set, from the base's metadata
    x_train: np.ndarray  # the drawings it trains on, uint8 (n, 28, 28)
    y_train: np.ndarray
    x_test: np.ndarray  # the ones set aside, measured on
    y_test: np.ndarray

    @classmethod
    def of(cls, digits: DigitSet, base_name: str, base_path, base_test_accuracy=None) -> TuneSpec:
        """A snapshot of `digits`; ValueError when there is nothing to train on."""
        (x_train, y_train), (x_test, y_test) = digits.arrays("train"), digits.arrays("test")
        if not len(y_train):
            raise ValueError(
                "your set has no drawings to train on yet: label a few of your drawings first "
                f"(every {ordinal(HOLD_OUT_EVERY)} drawing of each digit is kept aside to measure on)"
            )
        return cls(base_name, str(base_path), base_test_accuracy, x_train, y_train, x_test, y_test)

    @property
    def drawings_per_digit(self) -> list[int]:
        """Drawings of each digit, trained on and set aside together."""
        counts = np.bincount(self.y_train, minlength=10) + np.bincount(self.y_test, minlength=10)
        return [int(c) for c in counts]


def ordinal(n: int) -> str:
    """1st, 2nd, 3rd, 4th ..."""
    return {1: "1st", 2: "2nd", 3: "3rd"}.get(n, f"{n}th")
