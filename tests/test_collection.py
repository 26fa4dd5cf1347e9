"""A visitor's own digits: labelling, the set-aside share, caps, the npz file, expiry with the visitor."""

import io
import zipfile

import numpy as np
import pytest

from mnist_core.collection import (
    HOLD_OUT_EVERY,
    STORED_POINTS,
    DigitSet,
    SetBudget,
    SetFullError,
    TuneSpec,
    read_set,
)
from mnist_core.visitors import Visitors


def image(value: int = 200) -> np.ndarray:
    x = np.zeros((28, 28), np.uint8)
    x[8:20, 12:16] = value
    return x


def test_every_third_drawing_of_a_digit_is_set_aside_and_stays_so():
    digits = DigitSet()
    added = [digits.add(image(), 7, predicted=1) for _ in range(7)] + [digits.add(image(), 3)]
    assert [item.held_out for item in added] == [False, False, True, False, False, True, False, False]
    assert digits.counts("test")[7] == 7 // HOLD_OUT_EVERY and digits.counts("train")[3] == 1
    digits.remove(added[0].id)  # deleting one moves no other drawing across
    assert [item.held_out for item in digits.items] == [item.held_out for item in added[1:]]
    x, y = digits.arrays("train")
    assert x.dtype == np.uint8 and x.shape == (5, 28, 28) and y.tolist() == [7, 7, 7, 7, 3]


def test_images_are_kept_as_the_model_read_them_and_bad_input_changes_nothing():
    digits = DigitSet()
    float_image = np.full((28, 28), 0.5, np.float32)
    item = digits.add(float_image, 4, predicted=9)
    assert item.image.dtype == np.uint8 and int(item.image[0, 0]) == 128 and item.predicted == 9
    for bad in (10, -1, "7", True, 2.5, None):
        with pytest.raises(ValueError, match="digit from 0 to 9"):
            digits.add(image(), bad)
    with pytest.raises(ValueError, match=r"\(28, 28\)"):
        digits.add(np.zeros((20, 20)), 1)
    with pytest.raises(ValueError, match="finite"):
        digits.add(np.full((28, 28), np.nan, np.float32), 1)
    assert len(digits) == 1 and digits.version == 1


def test_strokes_are_kept_compactly_with_their_ends():
    digits = DigitSet()
    strokes = [np.array([[10.25, 20.5], [30.0, 40.0], [50.5, 60.75]]), np.array([[100.0, 100.0]])]
    item = digits.add(image(), 1, strokes=strokes)
    assert item.points.dtype == np.int16
    assert item.strokes == [[(10.25, 20.5), (30.0, 40.0), (50.5, 60.75)], [(100.0, 100.0)]]
    long = [np.column_stack([np.linspace(0, 500, 9000), np.linspace(0, 100, 9000)])]
    thinned = digits.add(image(), 1, strokes=long).strokes[0]
    assert len(thinned) <= STORED_POINTS and thinned[0] == (0.0, 0.0) and thinned[-1] == (500.0, 100.0)


def test_a_set_and_the_server_have_caps_and_deleting_gives_room_back():
    budget = SetBudget(total=5)
    first, second = DigitSet(budget, capacity=3), DigitSet(budget, capacity=3)
    for _ in range(3):
        first.add(image(), 1)
    with pytest.raises(SetFullError, match="may hold 3"):
        first.add(image(), 1)
    second.add(image(), 2)
    second.add(image(), 2)
    with pytest.raises(SetFullError, match="the most it keeps"):
        second.add(image(), 2)
    assert len(second) == 2 and budget.used == 5
    assert first.clear() == 3 and budget.used == 2
    second.add(image(), 2)
    assert len(second) == 3


def test_the_file_is_in_the_layout_of_keras_mnist_npz_and_comes_back_the_same():
    digits = DigitSet()
    for digit in range(10):
        for k in range(4):
            digits.add(image(20 * k + 100), digit, predicted=digit)
    data = digits.to_npz()
    with np.load(io.BytesIO(data)) as npz:
        assert sorted(npz.files) == ["x_test", "x_train", "y_test", "y_train"]
        assert npz["x_train"].dtype == np.uint8 and npz["x_train"].shape == (30, 28, 28)
        assert npz["y_test"].dtype == np.uint8 and sorted(npz["y_test"].tolist()) == list(range(10))
    copy = DigitSet()
    assert copy.add_npz(data) == 40
    for part in ("train", "test"):
        assert np.array_equal(copy.arrays(part)[0], digits.arrays(part)[0])
        assert np.array_equal(copy.arrays(part)[1], digits.arrays(part)[1])
    only_train = DigitSet()
    only_train.add(image(), 5)
    with np.load(io.BytesIO(only_train.to_npz())) as npz:
        assert sorted(npz.files) == ["x_train", "y_train"]


def npz_bytes(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"not a zip at all", "not an .npz"),
        (npz_bytes(x_test=np.zeros((2, 28, 28), np.uint8)), "no x_train"),
        (npz_bytes(x_train=np.zeros((2, 20, 20), np.uint8), y_train=np.zeros(2, np.uint8)), r"\(n, 28, 28\)"),
        (
            npz_bytes(x_train=np.zeros((2, 28, 28), np.uint8), y_train=np.zeros(3, np.uint8)),
            "2 integer labels",
        ),
        (npz_bytes(x_train=np.zeros((2, 28, 28), np.uint8), y_train=np.array([1, 12])), "digits 0-9"),
        (npz_bytes(x_train=np.zeros((2, 28, 28), np.float32), y_train=np.zeros(2, np.uint8)), "uint8 images"),
        (npz_bytes(x_train=np.zeros((0, 28, 28), np.uint8), y_train=np.zeros(0, np.uint8)), "expected 1 to"),
    ],
)
def test_a_bad_set_file_is_refused_with_what_is_wrong(data, expected):
    digits = DigitSet()
    digits.add(image(), 1)
    with pytest.raises(ValueError, match=expected):
        digits.add_npz(data)
    assert len(digits) == 1  # nothing added


def test_a_file_that_would_unpack_to_more_than_a_set_is_refused_before_unpacking():
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("x_train.npy", b"\0" * 50_000_000)  # compresses to ~50 kB
    with pytest.raises(ValueError, match="unpacks to 50,000,000 bytes"):
        read_set(buffer.getvalue())
    too_many = npz_bytes(x_train=np.zeros((1001, 28, 28), np.uint8), y_train=np.zeros(1001, np.uint8))
    with pytest.raises(ValueError, match="unpacks to|holds 1001"):
        read_set(too_many)


def test_an_upload_that_would_not_fit_adds_nothing():
    digits = DigitSet(capacity=3)
    digits.add(image(), 1)
    data = npz_bytes(x_train=np.zeros((3, 28, 28), np.uint8), y_train=np.ones(3, np.uint8))
    with pytest.raises(SetFullError, match="3 more would not fit"):
        digits.add_npz(data)
    assert len(digits) == 1


def test_a_tune_spec_needs_drawings_to_train_on():
    digits = DigitSet()
    with pytest.raises(ValueError, match="no drawings to train on"):
        TuneSpec.of(digits, "default", "models/default.keras")
    for _ in range(3):
        digits.add(image(), 9)
    spec = TuneSpec.of(digits, "default", "models/default.keras", 0.99)
    assert len(spec.y_train) == 2 and len(spec.y_test) == 1 and spec.drawings_per_digit[9] == 3


def test_a_visitors_set_is_theirs_and_goes_with_them():
    now = [0.0]
    visitors = Visitors(idle_seconds=60, capacity=2, clock=lambda: now[0])
    alice, bob = visitors.get("alice-123456"), visitors.get("bob-12345678")
    alice.digits.add(image(), 1)
    assert len(bob.digits) == 0 and visitors.budget.used == 1
    now[0] = 61.0
    visitors.get("carol-123456")  # alice and bob expired: their drawings are gone, the room is back
    assert len(alice.digits) == 0 and visitors.budget.used == 0
    dave = visitors.get("dave-1234567")
    dave.digits.add(image(), 2)
    visitors.get("erin-1234567")  # capacity 2: the longest idle (carol) goes; dave keeps his
    assert len(dave.digits) == 1
