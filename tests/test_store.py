"""Tests for mnist_core.store: round trips, atomic saves, refusing bad files, listing and naming."""

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import keras
import numpy as np
import pytest

from mnist_core import store
from mnist_core.models import build_model
from mnist_core.store import (
    FORMAT_VERSION,
    ModelFileError,
    check_model_shape,
    clean_stale_temps,
    list_models,
    load_model,
    new_model_name,
    resolve_model_name,
    save_model,
)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def images(mnist):
    return mnist.x_test[:64].astype(np.float32) / 255.0


def _outputs(model, images):
    return keras.ops.convert_to_numpy(model(images, training=False))


def _temp_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


def _sequential(input_shape, classes=10, *extra_layers):
    return keras.Sequential(
        [
            keras.Input(input_shape),
            *extra_layers,
            keras.layers.Flatten(),
            keras.layers.Dense(classes, activation="softmax"),
        ]
    )


def test_round_trip_keeps_predictions_and_metadata(tmp_path, images):
    model = build_model("mlp")
    config = {"arch": "mlp", "epochs": 1, "learning_rate": 0.001}
    metrics = {"test_accuracy": np.float32(0.9731), "test_loss": 0.09}
    path = save_model(
        model,
        tmp_path / "models" / "default.keras",
        config=config,
        metrics=metrics,
        command="python scripts/train.py --epochs 1",
    )
    assert path == tmp_path / "models" / "default.keras"
    loaded, metadata = load_model(path)
    np.testing.assert_allclose(_outputs(loaded, images), _outputs(model, images), atol=1e-6)
    assert metadata["format_version"] == FORMAT_VERSION
    assert metadata["name"] == "default"
    assert metadata["config"] == config
    assert metadata["metrics"]["test_accuracy"] == pytest.approx(0.9731)
    assert metadata["command"] == "python scripts/train.py --epochs 1"
    assert metadata["keras_version"] == keras.__version__
    assert metadata["tensorflow_version"]
    created = datetime.fromisoformat(metadata["created"])
    assert created.utcoffset().total_seconds() == 0
    assert abs((datetime.now(UTC) - created).total_seconds()) < 120
    assert json.loads((tmp_path / "models" / "default.json").read_text())["name"] == "default"
    assert _temp_files(tmp_path / "models") == []


def test_save_requires_keras_suffix(tmp_path):
    with pytest.raises(ValueError, match=r"\.keras"):
        save_model(build_model("mlp"), tmp_path / "model.h5")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("failure", ["model.save", "os.replace", "interrupt"])
def test_failed_save_leaves_previous_files_and_no_temp_files(tmp_path, monkeypatch, failure):
    target = save_model(build_model("mlp"), tmp_path / "default.keras", metrics={"test_accuracy": 0.5})
    old_model, old_meta = target.read_bytes(), target.with_suffix(".json").read_bytes()
    new = build_model("mlp")
    if failure == "model.save":
        original_save = new.save

        def half_save(path, *args, **kwargs):
            original_save(path, *args, **kwargs)
            Path(path).write_bytes(Path(path).read_bytes()[:1000])  # a partial file, then the crash
            raise OSError("disk full")

        monkeypatch.setattr(new, "save", half_save)
        expected = OSError
    elif failure == "os.replace":
        monkeypatch.setattr(store.os, "replace", lambda *a: (_ for _ in ()).throw(OSError("rename failed")))
        expected = OSError
    else:
        monkeypatch.setattr(store, "_sha256", lambda path: (_ for _ in ()).throw(KeyboardInterrupt()))
        expected = KeyboardInterrupt
    with pytest.raises(expected):
        save_model(new, target, metrics={"test_accuracy": 0.9})
    monkeypatch.undo()
    assert target.read_bytes() == old_model
    assert target.with_suffix(".json").read_bytes() == old_meta
    assert _temp_files(tmp_path) == []
    assert load_model(target)[1]["metrics"] == {"test_accuracy": 0.5}


def test_crash_between_the_two_renames_drops_stale_metadata(tmp_path, monkeypatch, images):
    target = save_model(build_model("mlp"), tmp_path / "default.keras", metrics={"test_accuracy": 0.5})
    new = build_model("mlp")
    real_replace = os.replace
    calls = []

    def replace_model_only(source, destination):
        calls.append(destination)
        if len(calls) == 2:
            raise OSError("crashed before the metadata rename")
        real_replace(source, destination)

    monkeypatch.setattr(store.os, "replace", replace_model_only)
    with pytest.raises(OSError, match="metadata rename"):
        save_model(new, target, metrics={"test_accuracy": 0.9})
    monkeypatch.undo()
    assert calls == [target, target.with_suffix(".json")]
    loaded, metadata = load_model(target)
    np.testing.assert_allclose(_outputs(loaded, images), _outputs(new, images), atol=1e-6)
    assert metadata == {}  # the old sidecar describes the old model, so it is not trusted
    assert _temp_files(tmp_path) == []


def _write_bad_file(directory: Path, kind: str) -> Path:
    if kind == "random.keras":
        path = directory / kind
        path.write_bytes(random.Random(0).randbytes(4096))
    elif kind == "truncated.keras":
        good = save_model(build_model("mlp"), directory / "good.keras")
        path = directory / kind
        data = good.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "notamodel.keras":
        path = directory / kind
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("readme.txt", "just a zip")
    elif kind == "text.h5":
        path = directory / kind
        path.write_text("this is not HDF5\n")
    elif kind == "weights.npz":
        path = directory / kind
        np.savez(path, w=np.zeros(3))
    elif kind == "input32.keras":
        path = directory / kind
        _sequential((32, 32)).save(path)
    else:
        path = directory / kind
        _sequential((28, 28), classes=5).save(path)
    return path


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("random.keras", "corrupt or truncated"),
        ("truncated.keras", "corrupt or truncated"),
        ("notamodel.keras", "not a Keras model"),
        ("text.h5", "HDF5"),
        ("weights.npz", "unsupported"),
        ("input32.keras", r"\(None, 32, 32\)"),
        ("classes5.keras", r"\(None, 5\)"),
    ],
)
def test_bad_files_raise_model_file_error_naming_the_file(tmp_path, kind, reason):
    path = _write_bad_file(tmp_path, kind)
    before = sorted((p.name, p.read_bytes()) for p in tmp_path.iterdir())
    with pytest.raises(ModelFileError, match=reason) as raised:
        load_model(path)
    assert path.name in str(raised.value)
    assert sorted((p.name, p.read_bytes()) for p in tmp_path.iterdir()) == before


def test_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.keras"):
        load_model(tmp_path / "nothing.keras")


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_lambda_layer_is_refused_as_unsafe(tmp_path, suffix):
    path = tmp_path / f"lambda{suffix}"
    _sequential((28, 28), 10, keras.layers.Lambda(lambda x: x * 2.0)).save(path)
    with pytest.raises(ModelFileError, match="unsafe code was refused") as raised:
        load_model(path)
    assert path.name in str(raised.value)


@pytest.mark.filterwarnings("ignore:Do not pass an `input_shape`:UserWarning")
def test_tutorial_h5_model_loads_with_same_predictions(tmp_path, images, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # Exactly the tutorial's network and save call, including the legacy input_shape argument.
    model = keras.models.Sequential(
        [
            keras.layers.Flatten(input_shape=(28, 28)),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.save("mnist_model.h5")
    loaded, metadata = load_model(tmp_path / "mnist_model.h5")
    assert metadata == {}
    np.testing.assert_allclose(_outputs(loaded, images), _outputs(model, images), atol=1e-6)


def test_check_model_shape_accepts_channel_input_and_rejects_others(tmp_path):
    check_model_shape(_sequential((28, 28, 1)))
    check_model_shape(build_model("cnn"))
    with pytest.raises(ModelFileError, match=r"my model.*\(None, 784\)"):
        check_model_shape(_sequential((784,)), source="my model")
    with pytest.raises(ModelFileError, match="shape"):
        save_model(_sequential((28, 28), classes=5), tmp_path / "wrong.keras")
    assert list(tmp_path.iterdir()) == []


def _set_created(model_path: Path, created: str) -> None:
    meta_path = model_path.with_suffix(".json")
    metadata = json.loads(meta_path.read_text())
    metadata["created"] = created
    meta_path.write_text(json.dumps(metadata))


def test_list_models_orders_default_first_then_newest(tmp_path):
    model = build_model("mlp")
    for name, created, accuracy in [
        ("old", "2026-01-01T00:00:00+00:00", 0.91),
        ("default", "2025-01-01T00:00:00+00:00", 0.97),
        ("new", "2026-06-01T00:00:00+00:00", None),
    ]:
        path = save_model(
            model,
            tmp_path / f"{name}.keras",
            metrics=None if accuracy is None else {"test_accuracy": accuracy},
        )
        _set_created(path, created)
    (tmp_path / ".new.keras.tmp-123-abcd.keras").write_bytes(b"partial")
    (tmp_path / "orphan.json").write_text("{}")
    (tmp_path / "notes.txt").write_text("not a model")
    infos = list_models(tmp_path)
    assert [info.name for info in infos] == ["default", "new", "old"]
    assert [info.test_accuracy for info in infos] == [0.97, None, 0.91]
    assert infos[0].path == tmp_path / "default.keras"
    assert list_models(tmp_path / "absent") == []


def test_stale_sidecar_is_ignored(tmp_path):
    first = save_model(build_model("mlp"), tmp_path / "a.keras", metrics={"test_accuracy": 0.9})
    second = save_model(build_model("mlp"), tmp_path / "b.keras", metrics={"test_accuracy": 0.8})
    # Someone copies another model over a.keras: a.json no longer describes the file beside it.
    first.write_bytes(second.read_bytes())
    assert load_model(first)[1] == {}
    assert {info.name: info.test_accuracy for info in list_models(tmp_path)} == {"a": None, "b": 0.8}


@pytest.mark.parametrize("name", ["../x", "a/b", "/abs", "", "..", ".hidden", "a\\b", "x y", None])
def test_resolve_model_name_refuses_paths(tmp_path, name):
    with pytest.raises(ValueError, match="invalid model name"):
        resolve_model_name(tmp_path, name)


def test_resolve_model_name_finds_files(tmp_path):
    save_model(build_model("mlp"), tmp_path / "default.keras")
    (tmp_path / "legacy.h5").write_bytes(b"x")
    assert resolve_model_name(tmp_path, "default") == tmp_path / "default.keras"
    assert resolve_model_name(tmp_path, "default.keras") == tmp_path / "default.keras"
    assert resolve_model_name(tmp_path, "legacy") == tmp_path / "legacy.h5"
    with pytest.raises(FileNotFoundError, match="available: default, legacy"):
        resolve_model_name(tmp_path, "missing")


def test_new_model_name_is_utc_stamped_and_unique(tmp_path):
    now = datetime(2026, 11, 25, 19, 1, 2, tzinfo=UTC)
    assert new_model_name("cnn", now=now) == "cnn-20261125-190102"
    assert new_model_name("mlp", tmp_path, now=now) == "mlp-20261125-190102"
    (tmp_path / "mlp-20261125-190102.keras").write_bytes(b"")
    assert new_model_name("mlp", tmp_path, now=now) == "mlp-20261125-190102-2"
    (tmp_path / "mlp-20261125-190102-2.json").write_text("{}")
    assert new_model_name("mlp", tmp_path, now=now) == "mlp-20261125-190102-3"
    name = new_model_name("cnn")
    assert name.startswith("cnn-") and len(name) == len("cnn-20261125-190102")
    with pytest.raises(ValueError):
        new_model_name("../cnn")


CHILD = textwrap.dedent("""
    import os, sys
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    from mnist_core.store import load_model, save_model
    directory = sys.argv[1]
    models = [load_model(os.path.join(directory, name))[0] for name in ("a.keras", "b.keras")]
    print("ready", flush=True)
    i = 0
    while True:
        save_model(models[i % 2], os.path.join(directory, "target.keras"), config={"which": "ab"[i % 2]})
        i += 1
        print("saved", i, flush=True)
""")


@pytest.mark.slow
def test_sigkill_during_saves_never_leaves_a_corrupt_model(tmp_path, images):
    def big():  # ~2.7 MB, so a good share of the time is spent inside the write
        return _sequential(
            (28, 28),
            10,
            keras.layers.Flatten(),
            keras.layers.Dense(512, activation="relu"),
            keras.layers.Dense(512, activation="relu"),
        )

    runs = 3  # in parallel: TensorFlow's import dominates each child's run time
    dirs = [tmp_path / f"run{i}" for i in range(runs)]
    models = {"a": big(), "b": big()}
    expected = {key: _outputs(model, images) for key, model in models.items()}
    for directory in dirs:
        for key, model in models.items():
            save_model(model, directory / f"{key}.keras")
        save_model(models["a"], directory / "target.keras", config={"which": "a"})
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    children = [
        subprocess.Popen([sys.executable, "-c", CHILD, str(d)], stdout=subprocess.PIPE, env=env, text=True)
        for d in dirs
    ]
    rng = random.Random()
    saves = 0
    try:
        for child in children:
            assert child.stdout.readline().strip() == "ready", "the saving child process did not start"
        for child in children:
            time.sleep(rng.uniform(0.05, 0.5))
            child.send_signal(signal.SIGKILL)
            child.wait(timeout=30)
            saves += sum(line.startswith("saved") for line in child.stdout.read().splitlines())
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
    assert saves >= 1, "no save finished before the kills, so nothing was overwritten"
    for directory in dirs:
        model, metadata = load_model(directory / "target.keras")
        outputs = _outputs(model, images)
        matches = [key for key, value in expected.items() if np.allclose(outputs, value, atol=1e-6)]
        assert len(matches) == 1
        # The sidecar either describes this very model or is recognised as stale and dropped.
        assert metadata == {} or metadata["config"] == {"which": matches[0]}
        assert {info.name for info in list_models(directory)} == {"a", "b", "target"}  # no temp is listed
        clean_stale_temps(directory)  # what the app does at start-up: the killed process's temps go
        assert _temp_files(directory) == []


def test_clean_stale_temps_removes_only_temps_of_dead_processes(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True)
    dead_pid = int(dead.stdout)
    stale = [
        tmp_path / f".mlp-1.keras.tmp-{dead_pid}-abcd.keras",
        tmp_path / f".mlp-1.json.tmp-{dead_pid}-abcd.json",
        tmp_path / f"..active-model.json.tmp-{dead_pid}-0123.json",
    ]
    live = [
        tmp_path / f".cnn-2.keras.tmp-{os.getpid()}-abcd.keras",  # this process may still be writing it
        tmp_path / f".cnn-2.keras.tmp-{os.getppid()}-abcd.keras",
        tmp_path / "model.keras",
        tmp_path / ".notes",
    ]
    for path in stale + live:
        path.write_bytes(b"partial")
    assert sorted(clean_stale_temps(tmp_path)) == sorted(stale)
    assert sorted(tmp_path.iterdir()) == sorted(live)
    assert clean_stale_temps(tmp_path / "absent") == []
