"""The command-line tools, run as a user runs them: subprocesses on the real data."""

import json
from pathlib import Path

import pytest
from conftest import last_json, run_script

ROOT = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def trained(tmp_path_factory, mnist_dir):
    """One short real training run through scripts/train.py, shared by the tests below."""
    out = tmp_path_factory.mktemp("models") / "small.keras"
    plot = out.with_name("curves.png")
    result = run_script(
        "train.py",
        "--arch",
        "mlp",
        "--epochs",
        "2",
        "--train-size",
        "3000",
        "--drawn-share",
        "0.1",
        "--out",
        out,
        "--plot",
        plot,
        mnist_dir=mnist_dir,
    )
    assert result.returncode == 0, result.stderr
    return out, result


@pytest.mark.slow
def test_train_saves_the_model_and_ends_with_json(trained):
    out, result = trained
    summary = last_json(result.stdout)
    assert summary["model_path"] == str(out) and out.exists()
    assert isinstance(summary["test_accuracy"], float) and summary["test_accuracy"] > 0.85
    assert len(summary["epoch_seconds"]) == 2 and all(s > 0 for s in summary["epoch_seconds"])
    assert summary["config"]["train_size"] == 3000 and summary["config"]["batch_size"] == 32
    assert summary["config"]["drawn_share"] == 0.1  # 333 drawn digits beside the 3,000 MNIST ones
    metadata = json.loads(out.with_suffix(".json").read_text())
    assert metadata["command"].startswith("python scripts/train.py --arch mlp --epochs 2")
    assert metadata["config"] == summary["config"]
    assert metadata["metrics"]["test_accuracy"] == pytest.approx(summary["test_accuracy"])
    assert "epoch 2" in result.stderr and "samples/s" in result.stderr, "no progress was shown"
    assert out.with_name("curves.png").read_bytes()[:8] == PNG_MAGIC


@pytest.mark.slow
def test_evaluate_reports_accuracy_per_class_and_confusion(trained, tmp_path, mnist_dir):
    out, train_result = trained
    plot = tmp_path / "confusion.png"
    result = run_script("evaluate.py", out, "--plot", plot, mnist_dir=mnist_dir)
    assert result.returncode == 0, result.stderr
    summary = last_json(result.stdout)
    assert summary["test_accuracy"] == pytest.approx(
        last_json(train_result.stdout)["test_accuracy"], abs=1e-4
    )
    assert len(summary["per_class_accuracy"]) == 10
    assert sum(map(sum, summary["confusion"])) == 10_000
    assert "per-class accuracy" in result.stdout and plot.read_bytes()[:8] == PNG_MAGIC


@pytest.mark.slow
def test_predict_a_test_image_like_the_tutorial(trained, tmp_path, mnist_dir):
    out, _ = trained
    plot = tmp_path / "prediction.png"
    result = run_script("predict.py", out, "--index", 0, "--plot", plot, mnist_dir=mnist_dir)
    assert result.returncode == 0, result.stderr
    summary = last_json(result.stdout)
    assert summary["label"] == 7 and summary["prediction"] == 7
    assert sum(summary["probabilities"]) == pytest.approx(1.0, abs=1e-4)
    assert "real label 7" in result.stdout and plot.read_bytes()[:8] == PNG_MAGIC


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--epochs", "0"], "epochs received 0"),
        (["--learning-rate", "2"], "learning_rate received 2.0"),
        (["--train-size", "5"], "train_size received 5"),
        (["--drawn-share", "0.9"], "drawn_share received 0.9"),
    ],
)
def test_train_rejects_bad_settings_before_loading_anything(args, fragment, mnist_dir):
    result = run_script("train.py", *args, mnist_dir=mnist_dir)
    assert result.returncode == 2
    assert fragment in result.stderr and "Traceback" not in result.stderr


def test_train_without_data_says_how_to_provide_it(tmp_path):
    result = run_script("train.py", "--data", tmp_path / "nowhere", "--epochs", "1")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "MNIST_DATA" in result.stderr


def test_evaluate_refuses_a_corrupt_model_clearly(tmp_path, mnist_dir):
    broken = tmp_path / "broken.keras"
    broken.write_bytes(b"not a model at all")
    result = run_script("evaluate.py", broken, mnist_dir=mnist_dir)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "broken.keras" in result.stderr
