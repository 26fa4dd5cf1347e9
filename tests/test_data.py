"""mnist_core.data against the real MNIST files and the facts in shared/data/README.md."""

import gzip
import hashlib
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from mnist_core import data as mdata
from mnist_core.data import (
    IDX_NAMES,
    Mnist,
    MnistDataError,
    MnistNotFoundError,
    class_counts,
    load_mnist,
    mean_images,
    read_idx,
    sample,
)

ROOT = Path(__file__).resolve().parents[1]
README_MD5 = {
    "x_train": "6bbc9ace898e44ae57da46a324031adb",
    "y_train": "a25bea736e30d166cdddb491f175f624",
    "x_test": "2646ac647ad5339dbf082846283269ea",
    "y_test": "27ae3e4e09519cfbb04c329615203637",
}
TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
HEADER = {"x_train": 16, "y_train": 8, "x_test": 16, "y_test": 8}


@pytest.fixture(autouse=True)
def fresh_cache(monkeypatch):
    """Each test gets an empty load cache, so copies in tmp_path don't pile up in memory."""
    monkeypatch.setattr(mdata, "_CACHE", {})


@pytest.fixture(scope="module")
def payloads(mnist_dir):
    """The decompressed bytes (header included) of the four IDX files."""
    return {key: gzip.decompress((mnist_dir / f"{base}.gz").read_bytes()) for key, base in IDX_NAMES.items()}


@pytest.fixture(scope="module")
def npz_file(tmp_path_factory, mnist):
    """The real set as a Keras-style compressed mnist.npz."""
    path = tmp_path_factory.mktemp("npz") / "mnist.npz"
    arrays = {key: getattr(mnist, key) for key in IDX_NAMES}
    np.savez_compressed(path, **arrays)
    return path


def small_npz(path: Path, mnist: Mnist, n_train: int) -> Path:
    """A small valid npz whose train size tells which source was loaded."""
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(
        path, x_train=mnist.x_train[:n_train], y_train=mnist.y_train[:n_train],
        x_test=mnist.x_test[:5], y_test=mnist.y_test[:5],
    )  # fmt: skip
    return path


def idx_set(folder: Path, mnist_dir: Path, **replaced: bytes) -> Path:
    """The real gz files copied into folder, with some replaced by the given contents."""
    folder.mkdir(parents=True, exist_ok=True)
    for key, base in IDX_NAMES.items():
        if key in replaced:
            content = replaced[key]
            name = f"{base}.gz" if content[:2] == b"\x1f\x8b" else base
            (folder / name).write_bytes(content)
        else:
            shutil.copy(mnist_dir / f"{base}.gz", folder / f"{base}.gz")
    return folder


@pytest.fixture
def no_sources(monkeypatch, tmp_path):
    """No MNIST_DATA, an empty data/ folder and an empty Keras cache."""
    monkeypatch.delenv("MNIST_DATA", raising=False)
    monkeypatch.setattr(mdata, "data_dir_default", lambda: tmp_path / "data")
    monkeypatch.setattr(mdata, "keras_cache_path", lambda: tmp_path / "keras" / "datasets" / "mnist.npz")


def test_shapes_and_dtypes(mnist):
    assert mnist.x_train.shape == (60000, 28, 28) and mnist.x_train.dtype == np.uint8
    assert mnist.y_train.shape == (60000,) and mnist.y_train.dtype == np.uint8
    assert mnist.x_test.shape == (10000, 28, 28) and mnist.x_test.dtype == np.uint8
    assert mnist.y_test.shape == (10000,) and mnist.y_test.dtype == np.uint8
    assert mnist.split("test")[0] is mnist.x_test
    assert not mnist.x_train.flags.writeable  # shared through the cache, so nobody may scribble on it
    with pytest.raises(ValueError, match="'validation'"):
        mnist.split("validation")


def test_facts_from_the_readme(mnist):
    assert mnist.y_train[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert mnist.y_test[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert class_counts(mnist, "train").tolist() == TRAIN_COUNTS
    assert class_counts(mnist, "test").sum() == 10000
    assert mnist.x_train.mean() / 255 == pytest.approx(0.1307, abs=1e-4)


def test_md5_of_the_files_and_arrays_equal_their_payload(mnist, payloads):
    for key, payload in payloads.items():
        assert hashlib.md5(payload).hexdigest() == README_MD5[key], key
        assert getattr(mnist, key).tobytes() == payload[HEADER[key] :], key


def test_raw_idx_loads_identically(tmp_path, payloads, mnist):
    for key, base in IDX_NAMES.items():
        (tmp_path / base).write_bytes(payloads[key])
    raw = load_mnist(tmp_path)
    assert raw.source == str(tmp_path)
    for key in IDX_NAMES:
        np.testing.assert_array_equal(getattr(raw, key), getattr(mnist, key))
    # naming one of the IDX files stands for its folder
    assert load_mnist(tmp_path / "t10k-labels-idx1-ubyte") is raw
    assert read_idx(tmp_path / "t10k-labels-idx1-ubyte").shape == (10000,)


def test_npz_loads_identically(npz_file, mnist):
    loaded = load_mnist(npz_file)
    assert loaded.source == str(npz_file)
    for key in IDX_NAMES:
        assert getattr(loaded, key).dtype == np.uint8
        np.testing.assert_array_equal(getattr(loaded, key), getattr(mnist, key))
    assert load_mnist(npz_file.parent) is loaded  # a folder holding mnist.npz is the same source


def test_explicit_path_beats_mnist_data(monkeypatch, tmp_path, mnist_dir, mnist):
    other = small_npz(tmp_path / "env" / "mnist.npz", mnist, 100)
    monkeypatch.setenv("MNIST_DATA", str(other))
    assert load_mnist(mnist_dir).source == str(mnist_dir)
    assert len(load_mnist().y_train) == 100


def test_mnist_data_beats_data_folder(monkeypatch, tmp_path, mnist_dir, mnist):
    small_npz(tmp_path / "data" / "mnist.npz", mnist, 100)
    monkeypatch.setattr(mdata, "data_dir_default", lambda: tmp_path / "data")
    monkeypatch.setenv("MNIST_DATA", str(mnist_dir))
    assert load_mnist().source == str(mnist_dir)


def test_data_folder_beats_keras_cache_which_comes_last(no_sources, tmp_path, mnist):
    keras_npz = small_npz(mdata.keras_cache_path(), mnist, 30)
    assert load_mnist().source == str(keras_npz)
    folder_npz = small_npz(tmp_path / "data" / "mnist.npz", mnist, 20)
    loaded = load_mnist()
    assert loaded.source == str(folder_npz) and len(loaded.y_train) == 20


def test_a_named_source_that_is_missing_does_not_fall_back(monkeypatch, tmp_path, mnist_dir):
    monkeypatch.setenv("MNIST_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(MnistNotFoundError, match="nowhere.*MNIST_DATA"):
        load_mnist()
    partial = tmp_path / "partial"
    partial.mkdir()
    shutil.copy(mnist_dir / "train-images-idx3-ubyte.gz", partial)
    with pytest.raises(MnistNotFoundError, match="missing train-labels-idx1-ubyte"):
        load_mnist(partial)


def test_offline_without_a_copy_says_how_to_provide_one(no_sources, monkeypatch):
    with pytest.raises(MnistNotFoundError) as info:
        load_mnist(download=False)
    assert "MNIST_DATA" in str(info.value) and "data/" in str(info.value)
    monkeypatch.setitem(sys.modules, "keras", None)  # makes `import keras` fail, as without Keras installed
    with pytest.raises(MnistNotFoundError, match="download failed .*keras.*MNIST_DATA"):
        load_mnist()


@pytest.mark.slow  # imports Keras (TensorFlow) for a real download attempt
def test_failed_download_says_why_and_how_to_provide_the_data(no_sources, monkeypatch):
    # a real fetch through keras.utils.get_file, to a local port where nothing listens
    monkeypatch.setattr(mdata, "MNIST_URL", "http://127.0.0.1:9/mnist.npz")
    with pytest.raises(MnistNotFoundError) as info:
        load_mnist()
    message = str(info.value)
    for way in ("download failed", "--data", "MNIST_DATA", "data/", "mnist.npz", "internet", "127.0.0.1:9"):
        assert way in message, way
    assert "\n" not in message


def test_truncated_file_names_it_and_the_sizes(tmp_path, mnist_dir, payloads):
    folder = idx_set(tmp_path, mnist_dir, x_train=payloads["x_train"][:1000])
    with pytest.raises(MnistDataError, match="expected 47040016 bytes, found 1000") as info:
        load_mnist(folder)
    assert str(folder / "train-images-idx3-ubyte") in str(info.value)


def test_corrupt_gzip_names_the_file(tmp_path, mnist_dir):
    gz = (mnist_dir / "t10k-images-idx3-ubyte.gz").read_bytes()
    folder = idx_set(tmp_path, mnist_dir, x_test=gz[: len(gz) // 2])
    with pytest.raises(MnistDataError, match="t10k-images-idx3-ubyte.gz: corrupt gzip"):
        load_mnist(folder)


def test_bad_magic_names_the_file(tmp_path, mnist_dir, payloads):
    # 0x0D is IDX's float32 type code: a valid IDX file, but not MNIST's uint8
    folder = idx_set(tmp_path, mnist_dir, y_test=b"\x00\x00\x0d\x01" + payloads["y_test"][4:])
    with pytest.raises(MnistDataError, match="t10k-labels-idx1-ubyte: .*magic number 0x00000d01") as info:
        load_mnist(folder)
    assert "0x00000801" in str(info.value)  # the message says what was expected


def test_label_out_of_range_names_the_file(tmp_path, mnist_dir, payloads):
    labels = bytearray(payloads["y_train"])
    labels[8 + 7] = 10
    folder = idx_set(tmp_path, mnist_dir, y_train=gzip.compress(bytes(labels)))
    with pytest.raises(MnistDataError, match=r"train-labels-idx1-ubyte.gz: value 10 at flat index 7 .*0-9"):
        load_mnist(folder)


def test_count_mismatch_names_both_files(tmp_path, mnist_dir, payloads):
    short = (9999).to_bytes(4, "big")
    labels = payloads["y_test"][:4] + short + payloads["y_test"][8:-1]
    folder = idx_set(tmp_path, mnist_dir, y_test=labels)
    with pytest.raises(MnistDataError, match="10000 images but .*t10k-labels-idx1-ubyte holds 9999 labels"):
        load_mnist(folder)


def test_broken_npz_files_name_the_file(tmp_path, mnist):
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"PK\x03\x04 this is not really a zip archive")
    with pytest.raises(MnistDataError, match="garbage.npz"):
        load_mnist(garbage)
    keyless = tmp_path / "keyless.npz"
    np.savez(keyless, x_train=mnist.x_train[:10], y_train=mnist.y_train[:10])
    with pytest.raises(MnistDataError, match="keyless.npz: missing arrays x_test, y_test"):
        load_mnist(keyless)
    floats = tmp_path / "floats.npz"
    np.savez(floats, x_train=mnist.x_train[:10] / 255.0, y_train=mnist.y_train[:10],
             x_test=mnist.x_test[:10], y_test=mnist.y_test[:10])  # fmt: skip
    with pytest.raises(MnistDataError, match=r"floats.npz \[x_train\]: dtype float64"):
        load_mnist(floats)


def test_loaded_once_per_source_and_thread_safe(mnist_dir):
    results = []
    threads = [threading.Thread(target=lambda: results.append(load_mnist(mnist_dir))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 4 and all(r is results[0] for r in results)
    start = time.perf_counter()
    again = load_mnist(str(mnist_dir))
    assert again is results[0]
    assert time.perf_counter() - start < 0.05


def test_load_from_gz_is_fast(mnist_dir):
    start = time.perf_counter()
    load_mnist(mnist_dir)
    seconds = time.perf_counter() - start
    print(f"load_mnist from IDX gz: {seconds:.3f} s")
    assert seconds < 2.0  # well under 1 s here; the slack is for a busy CI machine


def test_sample_returns_true_pairs(mnist):
    images, labels = sample(mnist, "test", count=25, seed=3)
    assert images.shape == (25, 28, 28) and images.dtype == np.uint8 and labels.shape == (25,)
    for image, label in zip(images, labels, strict=True):
        where = np.flatnonzero((mnist.x_test == image).all(axis=(1, 2)))
        assert len(where) and mnist.y_test[where[0]] == label


def test_sample_digit_filter_and_seed(mnist):
    images, labels = sample(mnist, "train", digit=7, count=40, seed=1)
    assert labels.tolist() == [7] * 40
    again_images, again_labels = sample(mnist, "train", digit=7, count=40, seed=1)
    np.testing.assert_array_equal(images, again_images)
    other, _ = sample(mnist, "train", digit=7, count=40, seed=2)
    assert not np.array_equal(images, other)
    _, mixed = sample(mnist, count=1000, seed=0)
    assert len(set(mixed.tolist())) == 10


def test_sample_count_larger_than_available_gives_all(mnist):
    tiny = Mnist(mnist.x_train[:50], mnist.y_train[:50], mnist.x_test[:5], mnist.y_test[:5], source="tiny")
    _, labels = sample(tiny, digit=1, count=1000, seed=0)
    assert sorted(labels.tolist()) == [1] * int((mnist.y_train[:50] == 1).sum())


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"count": 0}, "count must be an integer from 1 to 1000, received 0"),
        ({"count": 1001}, "received 1001"),
        ({"count": 2.5}, "received 2.5"),
        ({"digit": 10}, "digit must be None .* received 10"),
        ({"digit": "3"}, "received '3'"),
        ({"split": "valid"}, "split must be 'train' or 'test', received 'valid'"),
        ({"seed": -1}, "seed must be None .* received -1"),
    ],
)
def test_sample_rejects_bad_arguments(mnist, kwargs, words):
    with pytest.raises(ValueError, match=words):
        sample(mnist, **kwargs)


def test_class_counts_and_mean_images(mnist):
    counts = class_counts(mnist, "test")
    assert counts.shape == (10,) and counts.sum() == 10000
    means = mean_images(mnist, "train")
    assert means.shape == (10, 28, 28) and means.dtype == np.float32
    assert means.min() >= 0.0 and means.max() <= 1.0
    weighted = (means.mean(axis=(1, 2)) * np.array(TRAIN_COUNTS)).sum() / 60000
    assert weighted == pytest.approx(0.1307, abs=1e-4)
    # a 1 uses less ink than an 8
    assert means[1].sum() < means[8].sum()
    with pytest.raises(ValueError, match="received 'all'"):
        mean_images(mnist, "all")


def run_script(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, str(ROOT / "scripts" / "samples.py"), *args]
    return subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=120)


def test_samples_script_writes_a_png(tmp_path, mnist_dir):
    out = tmp_path / "grid.png"
    done = run_script("--data", str(mnist_dir), "--split", "test", "--digit", "4", "--count", "12",
                      "--seed", "0", "--out", str(out))  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 1000
    assert str(out) in done.stdout


def test_samples_script_reports_errors_without_traceback(tmp_path, mnist_dir):
    missing = run_script("--data", str(tmp_path / "bogus"), "--out", str(tmp_path / "x.png"))
    assert missing.returncode == 2
    assert "bogus" in missing.stderr and "MNIST_DATA" in missing.stderr
    assert "Traceback" not in missing.stderr
    bad_digit = run_script("--data", str(mnist_dir), "--digit", "12", "--out", str(tmp_path / "x.png"))
    assert bad_digit.returncode == 2 and "received 12" in bad_digit.stderr
    assert "Traceback" not in bad_digit.stderr and not (tmp_path / "x.png").exists()
