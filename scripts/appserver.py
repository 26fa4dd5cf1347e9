"""Start and stop `python app.py` for the tests, the benchmark, the load test and the browser driver.

    with AppServer(copy_shipped_model(folder / "models"), data="../shared/data/mnist") as app:
        app.url, app.pid, app.output()

One launcher: a free port on 127.0.0.1, a copy of the shipped model so that nothing writes into the
repository, both pipes drained so the server never blocks, and a clear error with the server's last
words when it does not start.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHIPPED_MODEL = ROOT / "models" / "default.keras"
START_SECONDS = 120  # gradio import plus a busy 2-core machine
READY_LINE = "MNIST Studio is running on"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def copy_shipped_model(folder: Path) -> Path:
    """A models folder holding a copy of the shipped model, so runs never write into the repository."""
    if not SHIPPED_MODEL.is_file():
        raise FileNotFoundError(f"{SHIPPED_MODEL} is missing: python scripts/train.py --arch cnn makes it")
    folder.mkdir(parents=True, exist_ok=True)
    for suffix in (".keras", ".json"):
        shutil.copy(SHIPPED_MODEL.with_suffix(suffix), folder)
    return folder


def stop_process(process: subprocess.Popen, timeout: float = 20) -> None:
    """Terminate `process`; kill it if it has not ended after `timeout` seconds."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class AppServer:
    """A running `python app.py` (from `app_dir`, default this checkout): url, process, what it printed."""

    def __init__(
        self,
        models_dir: Path,
        data: str | Path | None = None,
        args: tuple | list = (),
        env: dict | None = None,
        app_dir: Path = ROOT,
    ):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.models_dir = Path(models_dir)
        self.command = [sys.executable, "app.py", "--host", "127.0.0.1", "--port", str(self.port)]
        self.command += ["--models-dir", str(models_dir), *(["--data", str(data)] if data else []), *args]
        self.env = {"TF_CPP_MIN_LOG_LEVEL": "2", **os.environ, **(env or {})}
        self.app_dir = Path(app_dir)
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self.process: subprocess.Popen | None = None
        self.ready_seconds: float | None = None  # launch -> "running on" printed

    @property
    def pid(self) -> int:
        return self.process.pid

    def output(self) -> str:
        return "".join(self.stdout) + "".join(self.stderr)

    def start(self, timeout: float = START_SECONDS, ready: Callable[[str], bool] | None = None) -> AppServer:
        """Launch and wait until it has printed that it runs, or until `ready(url)` is true if given."""
        started = time.perf_counter()
        self.process = subprocess.Popen(
            self.command,
            cwd=self.app_dir,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for pipe, lines in ((self.process.stdout, self.stdout), (self.process.stderr, self.stderr)):
            threading.Thread(target=lambda p=pipe, out=lines: out.extend(p), daemon=True).start()
        while not (ready(self.url) if ready else any(READY_LINE in line for line in self.stdout)):
            if self.process.poll() is not None or time.perf_counter() - started > timeout:
                self.stop()
                raise RuntimeError(
                    f"the app did not start: {' '.join(self.command)}\n{self.output()[-3000:]}"
                )
            time.sleep(0.1)
        self.ready_seconds = time.perf_counter() - started
        return self

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)

    def __enter__(self) -> AppServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


@contextlib.contextmanager
def serve_app(models_dir: Path, data: str | Path | None = None, args: tuple = ()) -> Iterator[str]:
    """`python app.py` on 127.0.0.1 and a free port; yields its URL, stops it on exit."""
    with AppServer(models_dir, data, args) as app:
        yield app.url
