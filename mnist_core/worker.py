"""Training in a process of its own, for the app: the server's Python thread, its memory and its CPU
stay with the visitors.

A run trained inside the server shares its one GIL with every drawing answer and poll, its two cores
with them at equal priority, and it leaves the server's memory ~25 MB larger each time (TensorFlow's
traced graphs and allocator pools; measured over eight runs, gc and malloc_trim do not give it back).
Here one worker process, started with the first run and kept between runs, trains at a lower CPU
priority (nice 5: it gets what the visitors leave); it is replaced after WORKER_RUNS runs or once it
holds more than WORKER_MAX_RSS, so its memory is bounded too.

WorkerJob has the interface of training.TrainingJob that runs.Runs uses (records, epoch, status,
message, running, result, stop, wait, follow, evaluate, save); the trained Keras model stays in the
worker, which evaluates and saves it, and the server loads the saved file to draw with it.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
from multiprocessing.connection import Client, Listener
from pathlib import Path

from .config import TrainConfig
from .jobs import RecordedJob

logger = logging.getLogger(__name__)

WORKER_NICE = 5
WORKER_RUNS = 8  # runs one worker trains before a fresh one replaces it
WORKER_MAX_RSS = 2.5e9  # bytes: a worker that holds more after a run is replaced
POLL_SECONDS = 0.1  # how often the worker forwards new records and looks for a stop
START_SECONDS = 120  # for the process to connect (it imports nothing heavy before it does)
ANSWER_SECONDS = 300  # for an answer to data / evaluate / save / release (a CNN's evaluation takes ~2 s)
ADDRESS_ENV, KEY_ENV = "MNIST_WORKER_ADDRESS", "MNIST_WORKER_KEY"


class WorkerError(RuntimeError):
    """The training process failed to answer (it crashed, or was killed)."""


def _rss() -> int:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _serve(conn, nice: int) -> None:
    """The worker's main loop: data, then train / evaluate / save / release, until "exit" or EOF."""
    with contextlib.suppress(OSError):
        os.nice(nice)
    from .training import start_training

    data, job = None, None
    early: list[tuple] = []  # requests that came while a run was training (its evaluate, say)
    while True:
        try:
            kind, *args = early.pop(0) if early else conn.recv()
        except (EOFError, OSError):
            return
        try:
            if kind == "exit":
                return
            if kind == "data":
                data = args[0]
                conn.send(("ok", None))
            elif kind == "train":
                job = start_training(
                    TrainConfig.from_dict(args[0]), data, tune=args[1] if len(args) > 1 else None
                )
                sent = 0
                while True:
                    job.wait(POLL_SECONDS)
                    records = job.records[sent:]
                    for record in records:
                        if record["type"] == "done":
                            record = {k: v for k, v in record.items() if k != "model"}
                            record["has_model"] = job.model is not None
                        conn.send(("record", record))
                    sent += len(records)
                    while conn.poll():
                        message = conn.recv()
                        if message[0] == "stop":
                            job.stop()
                        else:  # the server answered the done record before this loop ended
                            early.append(message)
                    if not job.running and sent >= len(job.records):
                        break
            elif kind == "evaluate":
                conn.send(("ok", job.evaluate()))
            elif kind == "save":
                path, metadata = args
                conn.send(("ok", str(job.save(Path(path), **metadata))))
            elif kind == "release":
                job = None
                gc.collect()
                conn.send(("ok", _rss()))
            elif kind == "stop":
                pass  # a stop that came after its run had ended
        except Exception as error:  # the server's side raises it again with this message
            conn.send(("error", f"{type(error).__name__}: {error}"))


def _spawn(nice: int):
    """Start `python -m mnist_core.worker` and accept its connection: (connection, Popen). A fresh
    interpreter, not multiprocessing's spawn, which would import the server's main module again."""
    folder = tempfile.mkdtemp(prefix="mnist-worker-")
    address = os.path.join(folder, "socket")
    key = secrets.token_bytes(32)
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    env[ADDRESS_ENV], env[KEY_ENV] = address, key.hex()
    with Listener(address, family="AF_UNIX", authkey=key) as listener:
        process = subprocess.Popen([sys.executable, "-m", "mnist_core.worker", str(nice)], env=env, cwd=root)
        accepted: list = []
        waiting = threading.Thread(target=lambda: accepted.append(listener.accept()), daemon=True)
        waiting.start()
        waiting.join(START_SECONDS)
    shutil.rmtree(folder, ignore_errors=True)
    if not accepted:  # closing the listener ended the wait
        process.kill()
        raise WorkerError(f"the training process did not start within {START_SECONDS} s")
    conn = accepted[0]
    return conn, process


class TrainingWorker:
    """The app's training process: one run at a time, each as a WorkerJob."""

    def __init__(self, nice: int = WORKER_NICE, runs: int = WORKER_RUNS, max_rss: float = WORKER_MAX_RSS):
        self.nice, self.max_runs, self.max_rss = nice, runs, max_rss
        self._process = None
        self._conn = None
        self._data_id: int | None = None
        self._runs = 0
        self._lock = threading.Lock()  # one job at a time talks to the process

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None and self._process.poll() is None else None

    def start(self, config: TrainConfig, data, tune=None) -> WorkerJob:
        """A job for `config` (`tune`: a fine-tuning's collection.TuneSpec); it starts the process and sends
        the data itself (returns at once)."""
        return WorkerJob(self, config, data, tune)

    def prepare(self, data) -> None:
        """Start the process and hand it the data now, so that the first run need not wait for them."""
        with self._lock:
            self._ensure(data)

    def _ensure(self, data) -> None:
        if self._process is None or self._process.poll() is not None:
            self._conn, self._process = _spawn(self.nice)
            self._data_id, self._runs = None, 0
        if self._data_id != id(data):
            self._request("data", data)
            self._data_id = id(data)

    def _request(self, kind: str, *args):
        self._conn.send((kind, *args))
        return self._answer()

    def _answer(self):
        status, value = self._receive(ANSWER_SECONDS)
        if status == "error":
            raise WorkerError(value)
        return value

    def _receive(self, timeout: float | None = None):
        """The worker's next message; WorkerError if it died, or (after `timeout` s) it is ended."""
        if timeout is not None and not self._conn.poll(timeout):
            self.close()
            raise WorkerError(f"the training process did not answer within {timeout:.0f} s; it was restarted")
        try:
            return self._conn.recv()
        except (EOFError, OSError) as error:
            code = self._process.poll() if self._process is not None else None
            self.close()
            raise WorkerError(f"the training process ended unexpectedly (exit code {code})") from error

    def _released(self) -> None:
        """After a run: let go of its model; replace the process if it has trained enough or grown."""
        self._runs += 1
        try:
            rss = self._request("release")
        except WorkerError:
            return
        if self._runs >= self.max_runs or rss > self.max_rss:
            logger.info("replacing the training process after %s runs (%.0f MB)", self._runs, rss / 1e6)
            self.close()

    def close(self) -> None:
        """End the process (it is started again by the next run)."""
        process, conn = self._process, self._conn
        self._process, self._conn, self._data_id = None, None, None
        if conn is not None:
            with contextlib.suppress(OSError, ValueError):
                conn.send(("exit",))
            conn.close()
        if process is not None:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)


class WorkerJob(RecordedJob):
    """One run in the TrainingWorker; the same interface as training.TrainingJob, without `model`."""

    model = None  # the Keras model stays in the worker: see evaluate() and save()

    def __init__(self, worker: TrainingWorker, config: TrainConfig, data, tune=None):
        super().__init__(config)
        self.worker = worker
        self.tune = tune
        self.has_model = False
        self._ended = threading.Event()
        self._released = False
        self._data = data
        self._thread = threading.Thread(target=self._run, name="training-worker-job", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Ask the run to stop after its current batch."""
        self._stop_requested.set()
        conn = self.worker._conn
        if conn is not None and self.running:
            with contextlib.suppress(OSError, ValueError):
                conn.send(("stop",))

    def wait(self, timeout: float | None = None) -> bool:
        return self._ended.wait(timeout)

    def _run(self) -> None:
        self.worker._lock.acquire()  # released by release(), after the run's evaluate and save
        try:
            self.worker._ensure(self._data)
            self._data = None
            self.worker._conn.send(("train", self.config.to_dict(), self.tune))
            if self._stop_requested.is_set():  # a stop that came while the process started
                self.worker._conn.send(("stop",))
            while True:
                kind, record = self.worker._receive()
                if kind == "error":  # the worker could not start the run
                    raise WorkerError(record)
                if record["type"] == "done":
                    self.has_model = bool(record.get("has_model"))
                self._emit(record)
                if record["type"] == "done":
                    break
        except Exception as error:  # the process could not start or died: the run fails, the app stays
            self._emit({"type": "done", "status": "failed", "message": f"training failed: {error}"})
            self.release()
        finally:
            self._ended.set()

    def evaluate(self):
        """The trained model's evaluation.Evaluation on the MNIST test set, computed in the worker."""
        return self.worker._request("evaluate")

    def save(self, path: Path, **metadata) -> Path:
        """Save the trained model (store.save_model, in the worker); its path."""
        return Path(self.worker._request("save", str(path), metadata))

    def release(self) -> None:
        """The run is over: the worker lets go of its model (and may be replaced); idempotent."""
        if self._released:
            return
        self._released = True
        try:
            if self.worker._conn is not None:
                self.worker._released()
        finally:
            self.worker._lock.release()


if __name__ == "__main__":
    _serve(
        Client(os.environ[ADDRESS_ENV], family="AF_UNIX", authkey=bytes.fromhex(os.environ[KEY_ENV])),
        int(sys.argv[1]),
    )
