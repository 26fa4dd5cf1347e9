"""Exports: each file loaded in its own runtime (Keras, onnxruntime, LiteRT) must give the Keras model's
probabilities on real MNIST test digits."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import last_json, run_script

from mnist_core.export import FORMATS, SUFFIXES, TOLERANCE, check_export_path

ROOT = Path(__file__).resolve().parents[1]
CHECK_DIGITS = 200


@pytest.fixture(scope="module")
def images(mnist):
    return mnist.x_test[:CHECK_DIGITS].astype(np.float32) / 255.0


@pytest.fixture(scope="module")
def shipped():
    from mnist_core.store import load_model

    return load_model(ROOT / "models" / "default.keras")[0]


@pytest.fixture(scope="module")
def mlp(mnist):
    """The tutorial MLP, freshly built and trained for one short epoch, so its probabilities are not flat."""
    import keras

    from mnist_core.models import build_mlp, compile_model

    keras.utils.set_random_seed(0)
    model = compile_model(build_mlp())
    x, y = mnist.x_train[:2000].astype(np.float32) / 255.0, keras.utils.to_categorical(mnist.y_train[:2000])
    model.fit(x, y, epochs=1, batch_size=64, verbose=0)
    return model


@pytest.mark.slow
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("which", ["shipped", "mlp"])
def test_export_matches_keras_in_its_own_runtime(fmt, which, request, tmp_path, images):
    from mnist_core.export import check_export, export_model, predict_export

    model = request.getfixturevalue(which)
    out = export_model(model, fmt, tmp_path / f"{which}{SUFFIXES[fmt]}")
    assert out.is_file() and out.stat().st_size > 10_000
    assert [p.name for p in tmp_path.iterdir()] == [out.name]  # no temp file left beside it
    assert check_export(out, fmt, model, images) <= TOLERANCE
    probabilities = predict_export(out, fmt, images)
    assert probabilities.shape == (CHECK_DIGITS, 10)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, atol=1e-5)
    # The digits are read, not guessed (chance is 0.1): the file holds the trained weights.
    labels = request.getfixturevalue("mnist").y_test[:CHECK_DIGITS]
    assert (probabilities.argmax(axis=1) == labels).mean() > (0.97 if which == "shipped" else 0.6)
    # A dynamic batch: one digit and seven digits run through the same file.
    np.testing.assert_allclose(predict_export(out, fmt, images[:1]), probabilities[:1], atol=1e-6)
    np.testing.assert_allclose(predict_export(out, fmt, images[3:10]), probabilities[3:10], atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["onnx", "litert"])
def test_the_check_catches_a_file_of_another_model(fmt, tmp_path, shipped, mlp, images):
    from mnist_core.export import check_export, export_model

    out = export_model(mlp, fmt, tmp_path / f"mlp{SUFFIXES[fmt]}")
    assert check_export(out, fmt, shipped, images) > 0.1


@pytest.mark.slow
def test_onnx_file_has_stable_names_and_a_dynamic_batch(tmp_path, mlp):
    import onnxruntime

    from mnist_core.export import export_model

    session = onnxruntime.InferenceSession(export_model(mlp, "onnx", tmp_path / "m.onnx"))
    (source,), (result,) = session.get_inputs(), session.get_outputs()
    assert (source.name, source.shape, source.type) == ("images", ["batch", 28, 28], "tensor(float)")
    assert (result.name, result.shape) == ("probabilities", ["batch", 10])


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["onnx", "litert"])
def test_a_model_taking_channels_last_images_exports_too(fmt, tmp_path, images):
    """Models of input (None, 28, 28, 1) are accepted by the app; their files take that shape."""
    import keras

    from mnist_core.export import check_export, export_model

    keras.utils.set_random_seed(1)
    model = keras.Sequential(
        [
            keras.Input(shape=(28, 28, 1)),
            keras.layers.Conv2D(4, 3, activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    out = export_model(model, fmt, tmp_path / f"channels{SUFFIXES[fmt]}")
    assert check_export(out, fmt, model, images) <= TOLERANCE


@pytest.mark.slow
def test_export_bytes_gives_a_file_onnxruntime_opens(mlp, images):
    import onnxruntime

    from mnist_core.export import export_bytes

    data, filename = export_bytes(mlp, "onnx", "mlp-20261202-101500")
    assert filename == "mlp-20261202-101500.onnx"
    session = onnxruntime.InferenceSession(data)
    probabilities = session.run(None, {"images": images})[0]
    np.testing.assert_allclose(probabilities, np.asarray(mlp(images, training=False)), atol=TOLERANCE)


@pytest.mark.slow
def test_a_failed_export_leaves_the_old_file_whole(tmp_path, mlp, monkeypatch):
    from mnist_core import export

    out = tmp_path / "kept.onnx"
    out.write_bytes(b"the old export")

    def half_written(model, path):
        Path(path).write_bytes(b"half a file")
        raise RuntimeError("converter crashed")

    monkeypatch.setitem(export._WRITERS, "onnx", half_written)
    with pytest.raises(RuntimeError, match="converter crashed"):
        export.export_model(mlp, "onnx", out)
    assert out.read_bytes() == b"the old export"
    assert [p.name for p in tmp_path.iterdir()] == ["kept.onnx"]


def test_bad_format_or_suffix_is_a_value_error_saying_what_is_expected(tmp_path):
    from mnist_core.export import export_model

    with pytest.raises(ValueError, match=r"unknown export format 'tflite'; expected one of 'keras'"):
        export_model(None, "tflite", tmp_path / "m.tflite")
    with pytest.raises(
        ValueError,
        match=r"'litert' writes \.tflite files; .*m\.onnx' \(suffix '\.onnx'\); use e\.g\. 'm\.tflite'",
    ):
        export_model(None, "litert", tmp_path / "m.onnx")
    with pytest.raises(ValueError, match=r"suffix '\(none\)'"):
        check_export_path("keras", tmp_path / "model")
    assert not list(tmp_path.iterdir())


def test_bad_images_are_a_value_error(tmp_path):
    from mnist_core.export import predict_export

    with pytest.raises(ValueError, match=r"received an array of shape \(3, 784\); expected"):
        predict_export(tmp_path / "m.onnx", "onnx", np.zeros((3, 784), np.float32))


def test_importing_the_module_does_not_load_tensorflow():
    heavy = {"tensorflow", "keras", "onnx", "onnxruntime", "ai_edge_litert", "tf2onnx"}
    code = f"import sys, mnist_core.export; print(sorted({heavy!r} & set(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert result.stdout.strip() == "[]", result.stderr


@pytest.mark.slow
def test_script_exports_checks_and_ends_with_json(tmp_path, mnist_dir):
    out = tmp_path / "default.tflite"
    result = run_script(
        "export.py",
        ROOT / "models" / "default.keras",
        "--format",
        "litert",
        "--out",
        out,
        mnist_dir=mnist_dir,
    )
    assert result.returncode == 0, result.stderr
    summary = last_json(result.stdout)
    assert summary["format"] == "litert" and summary["out"] == str(out)
    assert summary["bytes"] == out.stat().st_size > 100_000
    assert 0 <= summary["max_abs_diff"] <= TOLERANCE
    assert "200 MNIST test digits" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--format", "litert", "--out", "m.onnx"], "error: export format 'litert' writes .tflite files"),
        (["--format", "tflite", "--out", "m.tflite"], "error: argument --format: invalid choice: 'tflite'"),
    ],
)
def test_script_bad_input_exits_2_with_an_error(args, message, tmp_path):
    result = run_script("export.py", ROOT / "models" / "default.keras", *args[:-1], tmp_path / args[-1])
    assert result.returncode == 2
    assert message in result.stderr
    assert not list(tmp_path.iterdir())


def test_script_missing_model_exits_2(tmp_path):
    result = run_script(
        "export.py", tmp_path / "none.keras", "--format", "onnx", "--out", tmp_path / "m.onnx", "--no-check"
    )
    assert result.returncode == 2
    assert "error: model file" in result.stderr and "does not exist" in result.stderr
