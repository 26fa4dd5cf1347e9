"""The code of a run (mnist_core.codegen): scripts that run on their own and rebuild the app's networks."""

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mnist_core import codegen
from mnist_core.codegen import keras_script, script_name
from mnist_core.config import PRESETS, TrainConfig
from mnist_core.finetune import tune_config

ROOT = Path(__file__).resolve().parents[1]
# What a generated script may import: the standard library's few, keras and numpy.
ALLOWED_IMPORTS = {"argparse", "gzip", "math", "os", "pathlib", "keras", "numpy"}
VARIANTS = {
    "mlp preset": PRESETS["mlp"],
    "cnn preset": PRESETS["cnn"],
    "mlp, every option": TrainConfig(
        epochs=3, batch_size=64, learning_rate=0.002, train_size=5000, seed=7, label_smoothing=0.2,
        augment=True, drawn_share=0.1, schedule="cosine",
    ),
    "cnn, plain": TrainConfig(arch="cnn", epochs=2, batch_size=1, learning_rate=0.0003, augment=False),
    "fine-tuning": tune_config({"arch": "cnn", "label_smoothing": 0.1}, drawings=30, seed=3),
}  # fmt: skip


def _imports(text: str) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            names.add(node.module.split(".")[0])
    return names


def _unnamed(layer) -> dict:
    """A layer's config without its name."""
    return {key: value for key, value in layer.get_config().items() if key != "name"}


def _settings(text: str) -> dict:
    """The script's settings block run with no arguments: its epochs, batch size and so on."""
    head = text.split("# Seed Python's")[0]
    saved, sys.argv = sys.argv, ["script.py"]
    try:
        namespace: dict = {}
        exec(compile(head, "script.py", "exec"), namespace)
    finally:
        sys.argv = saved
    return {name: namespace[name] for name in ("epochs", "train_size", "batch_size", "learning_rate", "seed")}


@pytest.mark.parametrize("config", VARIANTS.values(), ids=VARIANTS.keys())
def test_script_is_self_contained_and_carries_the_settings(config):
    text = keras_script(config, run_name="run 4", fine_tuned_from="default")
    compile(text, script_name(config), "exec")
    assert "mnist_core" not in text
    assert _imports(text) <= ALLOWED_IMPORTS, _imports(text) - ALLOWED_IMPORTS
    names = ("epochs", "train_size", "batch_size", "learning_rate", "seed")
    assert _settings(text) == {name: getattr(config, name) for name in names}
    assert ("CosineDecay" in text) == (config.schedule == "cosine")
    assert ("RandomRotation" in text) == config.augment
    assert ("PreciseBatchNorm" in text) == (config.arch == "cnn")
    assert (f"label_smoothing={config.label_smoothing!r}" in text) == (config.label_smoothing > 0)
    assert ("drawn digits" in text) == (config.drawn_share > 0)
    assert "Fine-tuned from: default." in text and "# Written by MNIST Studio for run 4." in text
    assert script_name(config) == f"train_{config.arch}.py"


def test_tutorial_preset_reads_like_the_tutorial():
    text = keras_script(PRESETS["mlp"])
    steps = [
        "load_mnist(",
        'print(f"Training set shape:',
        "/ 255.0",
        "to_categorical(y_train, 10)",
        'layers.Dense(128, activation="relu")',
        "model.summary()",
        '"categorical_crossentropy"',
        "history = model.fit(",
        "validation_data=(x_test, y_test)",
        "model.evaluate(x_test, y_test",
        'print(f"Test set accuracy:',
        "model.predict(",
        "model.save(",
        "keras.models.load_model(",
    ]
    where = [text.find(step) for step in steps]
    assert -1 not in where and where == sorted(where), dict(zip(steps, where, strict=True))
    for extra in ("CosineDecay", "label_smoothing", "RandomRotation", "PreciseBatchNorm", "drawn"):
        assert extra not in text
    assert "the tutorial's settings" in text.splitlines()[0]


def test_names_cannot_break_out_of_their_comment():
    name = 'x\n"""\nimport mnist_core\u2028#'
    text = keras_script(PRESETS["mlp"], run_name=name, fine_tuned_from="y\rz" * 50)
    compile(text, "script.py", "exec")
    assert _imports(text) <= ALLOWED_IMPORTS
    named = [line for line in text.splitlines() if "mnist_core" in line or "y zy z" in line]
    assert len(named) == 2 and all(line.startswith("# ") for line in named), named


def test_scripts_pass_ruff(tmp_path):
    for number, config in enumerate(VARIANTS.values()):
        (tmp_path / f"{number}_{script_name(config)}").write_text(keras_script(config))
    config = ["--config", str(ROOT / "pyproject.toml")]
    for command in (["check", "--no-cache", *config, "."], ["format", "--check", "--no-cache", *config, "."]):
        result = subprocess.run(
            [sys.executable, "-m", "ruff", *command], cwd=tmp_path, capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, result.stdout + result.stderr


def test_constants_match_the_core():
    from mnist_core import models, training

    assert codegen.BN_MOMENTUM == models.BN_MOMENTUM
    assert codegen.CNN_FILTERS == models.CNN_FILTERS
    assert codegen.CLEAN_ONE_IN == training.CLEAN_ONE_IN
    assert codegen.JIT_COMPILE == models.JIT_COMPILE
    assert codegen.SAMPLES_PER_EXECUTION == models.SAMPLES_PER_EXECUTION
    assert codegen.RECALIBRATE_BELOW_STEPS == training.RECALIBRATE_BELOW_STEPS
    assert codegen.RECALIBRATION_IMAGES == training.RECALIBRATION_IMAGES
    for config in VARIANTS.values():
        per_call = models.steps_per_execution(config.batch_size)
        assert f"steps_per_execution={per_call}," in keras_script(config)
    # The script's augmentation, run here in front of a network, has the app's layers and settings.
    import keras

    text = keras_script(PRESETS["cnn"])
    block = re.search(r"^class WhileOn.*?^callbacks = \[CleanFrom.*?$", text, re.M | re.S).group(0)
    epochs = PRESETS["cnn"].epochs
    namespace = {"keras": keras, "layers": keras.layers, "model": models.build_mlp(), "epochs": epochs}
    exec(block, namespace)
    ours, theirs = namespace["trainer"], models.with_augmentation(namespace["model"])
    assert len(ours.layers) == len(theirs.layers) == 2
    assert type(ours.layers[0]).__name__ == type(theirs.layers[0]).__name__ == "WhileOn"
    mine_inner, app_inner = ours.layers[0].inner.layers, theirs.layers[0].inner.layers
    assert len(mine_inner) == len(app_inner) == 4
    for mine, app in zip(mine_inner, app_inner, strict=True):
        assert type(mine) is type(app)
        assert _unnamed(mine) == _unnamed(app), type(mine).__name__
    # Its clean epochs are the app's.
    (clean,) = namespace["callbacks"]
    assert clean.first == epochs - training.clean_epochs(PRESETS["cnn"]) == 10


def test_cosine_schedule_is_the_apps():
    import keras

    from mnist_core.models import build_mlp, compile_model

    text = keras_script(PRESETS["cnn"])
    block = re.search(r"^total_steps = .*?^\)$", text, re.M | re.S).group(0)
    namespace = {"keras": keras, "steps_per_epoch": 47, "epochs": 3, "learning_rate": 0.004}
    exec(block, namespace)
    app = compile_model(build_mlp(), 0.004, schedule="cosine", total_steps=47 * 3).optimizer
    app_schedule = keras.optimizers.schedules.deserialize(app.get_config()["learning_rate"])
    steps = np.array([0, 1, 6, 7, 50, 100, 140, 141])
    ours = [float(namespace["schedule"](step)) for step in steps]
    assert np.allclose(ours, [float(app_schedule(step)) for step in steps])


# One epoch on 2,000 images, measured: the MLP 84.4%, the CNN 90.4% (its batch norm recalibrated; without
# that, 11.4%: chance). A broken network, loss, labels or scaling falls well below these.
@pytest.mark.slow
@pytest.mark.parametrize("arch, at_least", [("mlp", 0.8), ("cnn", 0.85)])
def test_preset_script_trains_the_apps_network(arch, at_least, tmp_path, mnist_dir, mnist):
    import keras

    from mnist_core.models import ARCHITECTURES

    script = tmp_path / script_name(PRESETS[arch])
    script.write_text(keras_script(PRESETS[arch]))
    saved = tmp_path / "model.keras"
    env = {**os.environ, "MNIST_DATA": str(mnist_dir), "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run(
        [sys.executable, str(script), "--epochs", "1", "--train-size", "2000", "--save", str(saved)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "label shape: (2000,)" not in result.stdout  # the shapes printed are MNIST's, before the subset
    printed = float(re.search(r"Test set accuracy: ([0-9.]+)", result.stdout).group(1))
    assert printed > at_least, result.stdout[-2000:]

    model, reference = keras.models.load_model(saved, compile=False), ARCHITECTURES[arch]()
    assert model.input_shape == reference.input_shape and model.output_shape == reference.output_shape
    assert [type(layer) for layer in model.layers] == [type(layer) for layer in reference.layers]
    for ours, theirs in zip(model.layers, reference.layers, strict=True):
        assert _unnamed(ours) == _unnamed(theirs), type(ours).__name__
    assert model.count_params() == reference.count_params()
    # The saved model is the trained one: it scores on the test set what the script printed.
    probabilities = model.predict(mnist.x_test.astype(np.float32) / 255.0, batch_size=1000, verbose=0)
    assert abs(float((probabilities.argmax(1) == mnist.y_test).mean()) - printed) < 2e-3
