"""Shared fixtures: the real MNIST data, found the way CI finds it."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def _mnist_dir() -> Path:
    """MNIST_DATA, else the project's data/ folder, else the shared copy beside the checkout."""
    if os.environ.get("MNIST_DATA"):
        return Path(os.environ["MNIST_DATA"]).resolve()
    local = ROOT / "data"
    if any(local.glob("train-images-idx3-ubyte*")):
        return local
    return ROOT.parent / "shared" / "data" / "mnist"


MNIST_DIR = _mnist_dir()


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """The folder with the four canonical MNIST IDX files."""
    if not any(MNIST_DIR.glob("train-images-idx3-ubyte*")):
        pytest.fail(f"MNIST data not found in {MNIST_DIR}; set MNIST_DATA to the folder with the IDX files")
    return MNIST_DIR


@pytest.fixture(scope="session")
def mnist(mnist_dir):
    """The real MNIST set, loaded once for the whole session."""
    from mnist_core.data import load_mnist

    return load_mnist(mnist_dir)


def ready_studio(folder: Path, data, **options):
    """A Studio on a models folder (made) holding a copy of the shipped model, with `data` as its MNIST,
    its start-up load done."""
    from mnist_core.studio import Studio

    folder.mkdir(parents=True)
    for suffix in (".keras", ".json"):
        shutil.copy(ROOT / "models" / f"default{suffix}", folder)
    studio = Studio(folder, **options)
    studio._data = data
    studio.start_loading().join()
    return studio


def scan(image: np.ndarray, path: Path) -> Path:
    """An MNIST digit made to look like a scan: dark ink on light paper, enlarged, a little noise."""
    rng = np.random.default_rng(0)
    big = np.asarray(Image.fromarray(image).resize((224, 224), Image.Resampling.BICUBIC), np.float32)
    paper = 235 - big / 255 * 205 + rng.normal(0, 3, big.shape)
    Image.fromarray(np.clip(paper, 0, 255).astype(np.uint8)).convert("RGB").save(path)
    return path


def run_script(name: str, *args, mnist_dir=None, cwd=ROOT) -> subprocess.CompletedProcess:
    """`python scripts/<name> args` in a clean environment (MNIST_DATA only if `mnist_dir` is given)."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(Path.home()), "TF_CPP_MIN_LOG_LEVEL": "2"}
    if mnist_dir is not None:
        env["MNIST_DATA"] = str(mnist_dir)
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / name), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
        env=env,
    )


def last_json(stdout: str) -> dict:
    """A script's summary: its last stdout line, as JSON."""
    return json.loads(stdout.strip().splitlines()[-1])
