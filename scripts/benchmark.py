"""Measure MNIST Studio against plain Keras and PyTorch in one run, side by side; a table and JSON.

python scripts/benchmark.py                      # all sections (about 7 minutes on 2 cores)
python scripts/benchmark.py --only training      # one section: training, cnn, predict, startup, memory,
                                                 # browser

Sections: the tutorial MLP (batch 32) in plain Keras `fit`, through our training job and in PyTorch; the
CNN preset; sketch -> probabilities latency; start-up of `python app.py` next to a bare `import gradio`;
peak memory of a training run; stroke end -> prediction shown in headless Chromium (scripts/browser.py).
PyTorch is optional: `pip install -r requirements-bench.txt`.
"""

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from browser import copy_shipped_model, free_port, stop_process  # noqa: E402  (scripts/browser.py)

from mnist_core.config import TrainConfig  # noqa: E402
from mnist_core.data import load_mnist  # noqa: E402

SHIPPED_MODEL = ROOT / "models" / "default.keras"
# The targets.
TARGET_RATIO_TO_PYTORCH = 1.0  # our job's seconds per epoch / PyTorch's, tutorial MLP at batch 32
TARGET_PREDICT_MS = 5.0  # sketch -> ten probabilities, p50, server-side
TARGET_STARTUP_RATIO = 1.5  # page answering / bare `import gradio`
TARGET_PEAK_RSS_GB = 1.5  # GB = 10**9 bytes
TARGET_STROKE_MS = 300.0  # end of a stroke -> prediction on screen, p50, in the browser
# "Unchanged accuracy": no more than half a point below plain Keras (the tutorial's seeds spread 0.4 points).
ACCURACY_TOLERANCE = 0.005
SKETCH_SIZE = 800  # gr.Sketchpad's default canvas
SKETCH_BRUSH = 31  # the app's brush (22 px on its 560 px canvas) scaled to 800 px
APP_CANVAS = 560  # app.py's gr.Sketchpad canvas_size
PREDICT_WARMUP = 20
KERAS_PREDICT_CALLS = 30  # model.predict costs ~60 ms a call: a reference, not a target
POLL_SECONDS = 0.02
APP_START_SECONDS = 180  # gradio plus TensorFlow on a busy 2-core machine


def tutorial_fit(data, epochs: int) -> dict:
    """The tutorial's code, as it writes it, timed per epoch (validation included)."""
    import keras
    from keras import Sequential
    from keras.layers import Dense, Flatten

    x_train, x_test = data.x_train / 255.0, data.x_test / 255.0
    y_train = keras.utils.to_categorical(data.y_train, 10)
    y_test = keras.utils.to_categorical(data.y_test, 10)
    keras.utils.set_random_seed(TrainConfig().seed)  # the same seed as our job, for a like-for-like run
    model = Sequential(
        [
            keras.Input(shape=(28, 28)),
            Flatten(),
            Dense(128, activation="relu"),
            Dense(64, activation="relu"),
            Dense(10, activation="softmax"),
        ]
    )
    model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
    timer = EpochTimer()
    model.fit(
        x_train,
        y_train,
        validation_data=(x_test, y_test),
        epochs=epochs,
        batch_size=32,
        verbose=0,
        callbacks=[timer.callback()],
    )
    _, accuracy = model.evaluate(x_test, y_test, verbose=0)
    return {"epoch_seconds": timer.seconds, "test_accuracy": float(accuracy)}


class EpochTimer:
    """Wall time of each epoch, from a callback that has no per-batch hooks (so it costs nothing)."""

    def __init__(self):
        self.seconds: list[float] = []

    def callback(self):
        import keras

        timer = self

        class _Timer(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                self.started = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                timer.seconds.append(time.perf_counter() - self.started)

        return _Timer()


def job_fit(data, config: TrainConfig) -> dict:
    """The same configuration through our training job, with live streaming on."""
    from mnist_core.training import start_training

    job = start_training(config, data)
    records = sum(1 for record in job.follow() if record["type"] in ("batch", "epoch"))
    done = job.result
    if job.status != "finished":
        raise RuntimeError(f"the training job ended {job.status}: {done['message']}")
    return {
        "epoch_seconds": done["epoch_seconds"],
        "test_accuracy": done["test_accuracy"],
        "records": records,
    }


def torch_fit(data, epochs: int, threads: int | None = None) -> dict | None:
    """The same MLP in PyTorch, written the idiomatic fast way; None when PyTorch is not installed."""
    try:
        import torch
    except ImportError:
        print("PyTorch not installed: pip install -r requirements-bench.txt")
        return None
    from torch import nn

    # One thread by default: at batch 32 the matrices are too small to share between 2 cores (1 thread is
    # the faster here), and PyTorch's threads stall each other whenever another process holds a core.
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(TrainConfig().seed)
    # Tensors are made once; a batch is a slice of a permuted index, so no DataLoader runs per step.
    x_train = torch.from_numpy(data.x_train.astype(np.float32) / 255.0)
    y_train = torch.from_numpy(data.y_train.astype(np.int64))
    x_test = torch.from_numpy(data.x_test.astype(np.float32) / 255.0)
    y_test = torch.from_numpy(data.y_test.astype(np.int64))
    model = nn.Sequential(
        nn.Flatten(),
        nn.Linear(28 * 28, 128),
        nn.ReLU(),
        nn.Linear(128, 64),
        nn.ReLU(),
        nn.Linear(64, 10),
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-7)  # Keras' Adam epsilon
    loss_fn = nn.CrossEntropyLoss()  # softmax + cross-entropy on logits, like Keras' softmax layer + loss
    seconds, loss, accuracy = [], 0.0, 0.0
    for _ in range(epochs):
        started = time.perf_counter()
        model.train()
        order = torch.randperm(len(x_train))
        for start in range(0, len(order), 32):
            batch = order[start : start + 32]
            optimizer.zero_grad()
            loss_fn(model(x_train[batch]), y_train[batch]).backward()
            optimizer.step()
        # Validation on the test set every epoch, inside the epoch's time, as Keras' fit does it.
        model.eval()
        with torch.no_grad():
            logits = torch.cat([model(x_test[i : i + 1000]) for i in range(0, len(x_test), 1000)])
            loss = float(loss_fn(logits, y_test))
            accuracy = float((logits.argmax(1) == y_test).float().mean())
        seconds.append(time.perf_counter() - started)
    return {
        "epoch_seconds": seconds,
        "test_loss": loss,
        "test_accuracy": accuracy,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }


def bench_training(data, epochs: int, torch_threads: int | None = None) -> list[dict]:
    rows = []
    plain = tutorial_fit(data, epochs)
    rows.append({"name": "plain_keras", "what": "tutorial MLP, plain Keras model.fit (batch 32)", **plain})
    ours = job_fit(data, TrainConfig(epochs=epochs))
    rows.append({"name": "job", "what": "tutorial MLP, MNIST Studio training job (batch 32)", **ours})
    torch_run = torch_fit(data, epochs, torch_threads)
    if torch_run is not None:
        threads = f"{torch_run['threads']} thread{'s' * (torch_run['threads'] > 1)}"
        what = f"tutorial MLP, PyTorch (same network, batch 32, {threads})"
        rows.append({"name": "pytorch", "what": what, **torch_run})
    base = statistics.median(plain["epoch_seconds"])
    torch_median = statistics.median(torch_run["epoch_seconds"]) if torch_run else None
    for row in rows:
        row["median_epoch_seconds"] = statistics.median(row["epoch_seconds"])
        row["ratio_to_plain_keras"] = row["median_epoch_seconds"] / base
        if torch_median:
            row["ratio_to_pytorch"] = row["median_epoch_seconds"] / torch_median
    return rows


def bench_cnn(data, epochs: int) -> dict:
    """The CNN preset through our training job: seconds per epoch and training samples per second."""
    config = TrainConfig.preset("cnn", epochs=epochs)
    run = job_fit(data, config)
    median = statistics.median(run["epoch_seconds"])
    # Validation on the 10,000 test images is inside each epoch's time, as in the training section.
    return {
        "what": f"CNN preset, MNIST Studio training job (batch {config.batch_size}, {epochs} epochs)",
        **run,
        "median_epoch_seconds": median,
        "samples_per_second": config.train_size / median,
    }


# --- prediction ---------------------------------------------------------------------------------


def percentiles_ms(seconds: list[float]) -> dict:
    """p50 and p99 of timings given in seconds, in milliseconds."""
    ms = sorted(1000 * s for s in seconds)
    return {"p50_ms": statistics.median(ms), "p99_ms": float(np.percentile(ms, 99)), "calls": len(ms)}


def timed(fn, calls: int, warmup: int = PREDICT_WARMUP) -> list[float]:
    """Seconds per call of fn() over `calls` calls after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    seconds = []
    for _ in range(calls):
        started = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - started)
    return seconds


def sketches(size: int = SKETCH_SIZE) -> list[dict]:
    """One gr.Sketchpad value (RGBA layer, white background, composite) per digit, as the app receives it."""
    from mnist_core.drawn import digit_strokes, place_strokes, render_sketch

    brush = SKETCH_BRUSH * size / SKETCH_SIZE
    return [render_sketch(place_strokes(digit_strokes(d), size), size, brush) for d in range(10)]


def gradio_decode_seconds(size: int, calls: int) -> list[float]:
    """What Gradio does before the handler runs: gr.Sketchpad.preprocess of the PNGs the browser sent."""
    import gradio as gr
    from gradio.components.image_editor import EditorData
    from gradio.data_classes import FileData
    from PIL import Image

    component = gr.Sketchpad(type="numpy", canvas_size=(size, size))
    with tempfile.TemporaryDirectory() as folder:
        payloads = []
        for index, value in enumerate(sketches(size)):
            files = {}
            for key, array in (("background", value["background"]), ("layer", value["layers"][0])):
                files[key] = FileData(path=str(Path(folder, f"{key}{index}.png")))
                Image.fromarray(array).save(files[key].path)
            files["composite"] = FileData(path=str(Path(folder, f"composite{index}.png")))
            Image.fromarray(value["composite"]).save(files["composite"].path)
            payloads.append(
                EditorData(
                    background=files["background"], layers=[files["layer"]], composite=files["composite"]
                )
            )
        turn = iter(range(10**9))
        return timed(lambda: component.preprocess(payloads[next(turn) % len(payloads)]), calls, warmup=3)


def pipeline_ms(predictor, values: list[dict], calls: int) -> dict:
    """Sketch -> probabilities over `values` in turn: p50 / p99 of the whole, the preprocessing, the model."""
    from mnist_core.preprocess import to_mnist

    preprocess, model_call, total = [], [], []
    for index in range(PREDICT_WARMUP + calls):
        value = values[index % len(values)]
        started = time.perf_counter()
        image = to_mnist(value)
        prepared = time.perf_counter()
        predictor.predict(image)
        ended = time.perf_counter()
        if index >= PREDICT_WARMUP:
            preprocess.append(prepared - started)
            model_call.append(ended - prepared)
            total.append(ended - started)
    return {
        "sketch_to_probabilities": percentiles_ms(total),
        "preprocess": percentiles_ms(preprocess),
        "model_in_pipeline": percentiles_ms(model_call),
    }


def bench_predict(calls: int) -> dict:
    """Sketch -> ten probabilities with the shipped model: preprocessing and model, p50 / p99."""
    from mnist_core.predict import Predictor
    from mnist_core.preprocess import to_mnist
    from mnist_core.store import load_model

    model, _ = load_model(SHIPPED_MODEL)
    predictor = Predictor(model)
    values = sketches()
    read = [int(predictor.predict(to_mnist(value)).argmax()) for value in values]
    ready = to_mnist(values[0])
    return {
        "sketch": f"{SKETCH_SIZE}x{SKETCH_SIZE} RGBA gr.Sketchpad value, brush {SKETCH_BRUSH} px, digits 0-9",
        "model": str(SHIPPED_MODEL.relative_to(ROOT)),
        "digits_read_right": sum(got == digit for digit, got in enumerate(read)),
        **pipeline_ms(predictor, values, calls),
        "app_canvas": pipeline_ms(predictor, sketches(APP_CANVAS), calls),
        "model_alone": percentiles_ms(timed(lambda: predictor.predict(ready), calls)),
        "keras_model_predict": percentiles_ms(
            timed(lambda: model.predict(ready[None], verbose=0), KERAS_PREDICT_CALLS, warmup=2)
        ),
        "gradio_decode": percentiles_ms(gradio_decode_seconds(SKETCH_SIZE, max(30, calls // 5))),
        "gradio_decode_app_canvas": percentiles_ms(gradio_decode_seconds(APP_CANVAS, max(30, calls // 5))),
    }


# --- start-up -----------------------------------------------------------------------------------


def wall_seconds(command: list[str]) -> float:
    """Wall time of a command that must succeed."""
    started = time.perf_counter()
    subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def page_answers(url: str) -> bool:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through a proxy
    try:
        with opener.open(url, timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


@contextlib.contextmanager
def running_app(models_dir: Path, data_path: str | None) -> Iterator[tuple[str, subprocess.Popen, float]]:
    """`python app.py` on a free port: (url, process, start time), once the page answers; stopped after."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    command = [sys.executable, "app.py", "--port", str(port), "--models-dir", str(models_dir)]
    if data_path:
        command += ["--data", data_path]
    with tempfile.TemporaryFile() as log:
        started = time.perf_counter()
        app = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        try:
            while not page_answers(url):
                if app.poll() is not None or time.perf_counter() - started > APP_START_SECONDS:
                    log.seek(0)
                    tail = log.read().decode(errors="replace")[-2000:]
                    raise RuntimeError(f"app.py did not answer on {url} (exit {app.poll()}):\n{tail}")
                time.sleep(POLL_SECONDS)
            yield url, app, started
        finally:
            stop_process(app, timeout=10)


def time_app_start(models_dir: Path, data_path: str | None, image: Path) -> dict:
    """Seconds from `python app.py` to the page answering, and to the first prediction (model ready)."""
    from gradio_client import Client, handle_file

    with running_app(models_dir, data_path) as (url, _, started):
        page = time.perf_counter() - started
        # /predict waits (up to 30 s) while TensorFlow and the model load, then answers.
        client = Client(url, verbose=False)
        while True:
            try:
                client.predict(handle_file(str(image)), api_name="/predict")
                break
            except Exception as error:
                if "loading" not in str(error) or time.perf_counter() - started > APP_START_SECONDS:
                    raise
        ready = time.perf_counter() - started
    return {"page_seconds": page, "model_ready_seconds": ready}


def bench_startup(runs: int, data_path: str | None) -> dict:
    """`python app.py` until the page answers, next to `python -c "import gradio"`, interleaved."""
    from PIL import Image

    imports, starts = [], []
    with tempfile.TemporaryDirectory() as folder:
        models_dir = copy_shipped_model(Path(folder, "models"))
        image = Path(folder, "digit.png")
        Image.fromarray(sketches(280)[3]["composite"]).save(image)
        for _ in range(runs):
            imports.append(wall_seconds([sys.executable, "-c", "import gradio"]))
            starts.append(time_app_start(models_dir, data_path, image))
    page = [start["page_seconds"] for start in starts]
    ready = [start["model_ready_seconds"] for start in starts]
    import_gradio = statistics.median(imports)
    return {
        "runs": runs,
        "import_gradio_seconds": imports,
        "page_seconds": page,
        "model_ready_seconds": ready,
        "median_import_gradio_seconds": import_gradio,
        "median_page_seconds": statistics.median(page),
        "median_model_ready_seconds": statistics.median(ready),
        "page_ratio_to_import_gradio": statistics.median(page) / import_gradio,
    }


# --- memory -------------------------------------------------------------------------------------


def proc_status_bytes(pid: int | str, field: str) -> int | None:
    """A memory field of /proc/PID/status (VmRSS, VmHWM, ...) in bytes; None where it cannot be read."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024
    return None


def peak_rss_bytes(pid: int | str = "self") -> int:
    """Peak resident set size of a process: VmHWM on Linux; ru_maxrss of this process elsewhere."""
    peak = proc_status_bytes(pid, "VmHWM")
    if peak is not None:
        return peak
    if pid != "self":
        raise RuntimeError(f"cannot read the peak memory of process {pid} (no /proc on this system)")
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB on Linux


def child_job(data_path: str | None, config_json: str) -> int:
    """Run one training job in this (fresh) process; print its figures and peak RSS as a JSON line."""
    run = job_fit(load_mnist(data_path), TrainConfig.from_dict(json.loads(config_json)))
    print(json.dumps({**run, "peak_rss_bytes": peak_rss_bytes()}))
    return 0


# The tutorial MLP and the CNN preset, 1 epoch each on the full 60,000 images.
MEMORY_RUNS = {"MLP 1 epoch": TrainConfig(epochs=1), "CNN 1 epoch": TrainConfig.preset("cnn", epochs=1)}


def app_training_peaks(data_path: str | None) -> list[dict]:
    """Peak RSS of the app's process (Gradio, TensorFlow, MNIST, the model) through Train API runs."""
    from gradio_client import Client

    rows = []
    with tempfile.TemporaryDirectory() as folder:
        models_dir = copy_shipped_model(Path(folder, "models"))
        with running_app(models_dir, data_path) as (url, app, _):
            client = Client(url, verbose=False)
            runs = []
            for what, config in MEMORY_RUNS.items():
                runs.append(what)
                settings = (config.epochs, config.batch_size, config.learning_rate, config.train_size)
                client.predict(config.arch, *settings, api_name="/train")
                status = client.predict(api_name="/training_status")
                while status["status"] in ("running", "saving", "stopping"):
                    time.sleep(0.5)
                    status = client.predict(api_name="/training_status")
                if status["status"] != "finished":
                    raise RuntimeError(f"the app's {what} run ended {status['status']}: {status['message']}")
                # The process's peak so far: one app trains the runs one after the other, as a person would.
                peak = peak_rss_bytes(app.pid)
                rows.append(
                    {
                        "what": f"peak RSS, app process: {' then '.join(runs)}",
                        "test_accuracy": status["test_accuracy"],
                        "peak_rss_bytes": peak,
                        "peak_rss_gb": peak / 1e9,
                    }
                )
    return rows


def bench_memory(data_path: str | None) -> list[dict]:
    """Peak RSS of training on the full set, 1 epoch: a process with just the job, then the app itself."""
    rows = []
    for what, config in MEMORY_RUNS.items():
        command = [sys.executable, str(Path(__file__).resolve()), "--child-job", json.dumps(config.to_dict())]
        if data_path:
            command += ["--data", data_path]
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"the training process for {what} failed:\n{done.stderr[-2000:]}")
        child = json.loads(done.stdout.strip().splitlines()[-1])
        rows.append(
            {
                "what": f"peak RSS, job process: {what}",
                **child,
                "peak_rss_gb": child["peak_rss_bytes"] / 1e9,
            }
        )
    return rows + app_training_peaks(data_path)


def print_table(rows: list[dict]) -> None:
    print(f"{'measurement':58} {'median s/epoch':>15} {'vs Keras':>9} {'vs PyTorch':>11} {'test acc':>9}")
    for row in rows:
        versus_torch = f"{row['ratio_to_pytorch']:11.3f}" if "ratio_to_pytorch" in row else f"{'-':>11}"
        print(
            f"{row['what']:58} {row['median_epoch_seconds']:15.2f} "
            f"{row['ratio_to_plain_keras']:9.3f} {versus_torch} {row['test_accuracy']:9.4f}"
        )


# --- browser ------------------------------------------------------------------------------------


def bench_browser(data_path: str | None, repeats: int) -> dict:
    """Headless Chromium draws on the app's sketchpad: ms from the pen's release to the answer shown."""
    from browser import measure_stroke_latency, serve_app, summary

    with tempfile.TemporaryDirectory() as folder:
        with serve_app(copy_shipped_model(Path(folder) / "models"), data_path) as url:
            figures = measure_stroke_latency(url, repeats)
    stats = summary(figures)
    print(
        f"browser: stroke end -> prediction shown, p50 {stats['p50_ms']:.0f} ms, "
        f"p90 {stats['p90_ms']:.0f} ms ({stats['count']} strokes, headless Chromium)"
    )
    return {**stats, "stroke_to_prediction_ms": [round(ms, 1) for ms in figures]}


# --- the combined table -------------------------------------------------------------------------


def summary_rows(results: dict) -> list[dict]:
    """One row per figure: what / figure / reference / ratio / target / met (None: no target)."""
    rows = []

    def add(what, figure, reference="", ratio=None, target="", met=None):
        row = {"what": what, "figure": figure, "reference": reference, "ratio": ratio}
        rows.append({**row, "target": target, "met": met})

    def per_epoch(row):
        return f"{row['median_epoch_seconds']:.2f} s/epoch"

    def ms(timing):
        return f"{timing['p50_ms']:.2f} ms (p99 {timing['p99_ms']:.1f})"

    if "training" in results:
        by_name = {row["name"]: row for row in results["training"]}
        plain, job, torch_row = by_name["plain_keras"], by_name["job"], by_name.get("pytorch")
        keras_fit = f"Keras fit {per_epoch(plain)}"
        what = "MLP batch 32 training: our job"
        if torch_row:
            ratio = job["ratio_to_pytorch"]
            target = f"<= {TARGET_RATIO_TO_PYTORCH}x"
            add(
                what,
                per_epoch(job),
                f"PyTorch {per_epoch(torch_row)}",
                ratio,
                target,
                ratio <= TARGET_RATIO_TO_PYTORCH,
            )
        ratio = job["ratio_to_plain_keras"]
        add(what, per_epoch(job), keras_fit, ratio, "<= 1.0x", ratio <= 1.0)
        if torch_row:
            add(
                "MLP batch 32 training: PyTorch",
                per_epoch(torch_row),
                keras_fit,
                torch_row["ratio_to_plain_keras"],
            )
        keras_accuracy = f"Keras fit {plain['test_accuracy']:.2%}"
        met = job["test_accuracy"] >= plain["test_accuracy"] - ACCURACY_TOLERANCE
        target = f">= Keras - {100 * ACCURACY_TOLERANCE:g} pt"
        add("MLP test accuracy: our job", f"{job['test_accuracy']:.2%}", keras_accuracy, None, target, met)
        if torch_row:
            add("MLP test accuracy: PyTorch", f"{torch_row['test_accuracy']:.2%}", keras_accuracy)
    if "cnn" in results:
        cnn = results["cnn"]
        figure = f"{per_epoch(cnn)}, {cnn['samples_per_second']:,.0f} samples/s"
        epochs = len(cnn["epoch_seconds"])
        add(f"CNN preset training: our job ({epochs} epoch{'s' * (epochs > 1)})", figure)
    if "predict" in results:
        predict = results["predict"]
        keras_ms = predict["keras_model_predict"]["p50_ms"]
        reference = f"model.predict {keras_ms:.1f} ms"
        total, alone = predict["sketch_to_probabilities"], predict["model_alone"]
        target, met = f"<= {TARGET_PREDICT_MS:g} ms", total["p50_ms"] <= TARGET_PREDICT_MS
        what = f"sketch {SKETCH_SIZE}px -> 10 probabilities, p50"
        add(what, ms(total), reference, total["p50_ms"] / keras_ms, target, met)
        add("  of which preprocessing (to_mnist)", ms(predict["preprocess"]))
        add("  of which the model", ms(predict["model_in_pipeline"]))
        if "app_canvas" in predict:
            canvas = predict["app_canvas"]
            total = canvas["sketch_to_probabilities"]
            met = total["p50_ms"] <= TARGET_PREDICT_MS
            what = f"sketch {APP_CANVAS}px (the app's) -> 10 probabilities, p50"
            add(what, ms(total), reference, total["p50_ms"] / keras_ms, target, met)
            add("  of which preprocessing (to_mnist)", ms(canvas["preprocess"]))
        add("model call alone (Predictor.predict), p50", ms(alone), reference, alone["p50_ms"] / keras_ms)
        add("Gradio's decoding of the sketch PNGs, p50", ms(predict["gradio_decode"]), "before the handler")
        decode = predict["gradio_decode_app_canvas"]
        add(f"  the same at the app's {APP_CANVAS} px canvas", ms(decode), "before the handler")
    if "startup" in results:
        startup = results["startup"]
        reference = f"import gradio {startup['median_import_gradio_seconds']:.2f} s"
        ratio = startup["page_ratio_to_import_gradio"]
        target, met = f"<= {TARGET_STARTUP_RATIO}x", ratio <= TARGET_STARTUP_RATIO
        page = f"{startup['median_page_seconds']:.2f} s"
        add("start-up: python app.py -> page answers", page, reference, ratio, target, met)
        ready = startup["median_model_ready_seconds"]
        ratio = ready / startup["median_import_gradio_seconds"]
        add("start-up: python app.py -> first prediction", f"{ready:.2f} s", reference, ratio)
    browser = results.get("browser")  # the browser section's figures (scripts/browser.py's summary)
    if isinstance(browser, dict) and "p50_ms" in browser:
        figure = f"{browser['p50_ms']:.0f} ms" + (
            f" (p90 {browser['p90_ms']:.0f})" if "p90_ms" in browser else ""
        )
        met = browser["p50_ms"] <= TARGET_STROKE_MS
        add(
            "browser: stroke end -> prediction shown, p50",
            figure,
            "",
            None,
            f"<= {TARGET_STROKE_MS:g} ms",
            met,
        )
    for row in results.get("memory", []):
        gb = row["peak_rss_gb"]
        add(row["what"], f"{gb:.2f} GB", "", None, f"<= {TARGET_PEAK_RSS_GB} GB", gb <= TARGET_PEAK_RSS_GB)
    return rows


def _cells(row: dict) -> list[str]:
    ratio = "" if row["ratio"] is None else f"{row['ratio']:.2f}"
    met = {True: "yes", False: "NO", None: ""}[row["met"]]
    return [row["what"], row["figure"], row["reference"], ratio, row["target"], met]


def print_summary(rows: list[dict]) -> None:
    widths = (52, 34, 30, 6, 18, 4)
    header = ["what", "figure", "reference", "ratio", "target", "met?"]
    for cells in [header, *map(_cells, rows)]:
        print(" ".join(f"{cell:<{width}}" for cell, width in zip(cells, widths, strict=True)))


def summary_markdown(rows: list[dict]) -> str:
    """The combined table in Markdown, for BENCHMARKS.md."""
    lines = ["| what | figure | reference | ratio | target | met? |", "| --- | --- | --- | --- | --- | --- |"]
    lines += ["| " + " | ".join(cell.strip() for cell in _cells(row)) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def describe_machine() -> dict:
    """CPU, cores, memory, load and the versions that matter, without importing the frameworks."""
    from importlib import metadata

    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        cpu = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), cpu)
    versions = {"python": platform.python_version()}
    for name in ("tensorflow-cpu", "tensorflow", "keras", "gradio", "numpy", "torch"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    details = {"cpu": cpu, "cores": os.cpu_count(), "versions": versions}
    if hasattr(os, "sysconf") and "SC_PHYS_PAGES" in os.sysconf_names:
        details["memory_gb"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9, 1)
    if hasattr(os, "getloadavg"):
        details["load_average_at_start"] = [round(x, 2) for x in os.getloadavg()]
    return details


SECTIONS = ("training", "cnn", "predict", "startup", "memory", "browser")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", help="MNIST folder or .npz (default: MNIST_DATA, data/, Keras cache)")
    # Five, so that the median skips the first epoch (tracing, XLA) and one more disturbed by other work.
    parser.add_argument("--epochs", type=int, default=5, help="epochs per MLP measurement (default 5)")
    parser.add_argument("--cnn-epochs", type=int, default=2, help="epochs of the CNN preset (default 2)")
    parser.add_argument("--predict-calls", type=int, default=300, help="timed predictions (default 300)")
    parser.add_argument("--startup-runs", type=int, default=3, help="app start-ups timed (default 3)")
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=1,
        help="torch.set_num_threads for the PyTorch row (default 1; 0: PyTorch's own, one per core)",
    )
    parser.add_argument(
        "--browser-repeats", type=int, default=10, help="strokes timed in headless Chromium (default 10)"
    )
    parser.add_argument("--only", choices=SECTIONS, help="run one section")
    parser.add_argument("--json", type=Path, default=Path("benchmark-results/benchmark.json"))
    parser.add_argument("--child-job", help=argparse.SUPPRESS)  # the memory section's training process
    args = parser.parse_args(argv)
    if args.child_job:
        return child_job(args.data, args.child_job)
    sections = [args.only] if args.only else list(SECTIONS)
    details = describe_machine()
    machine = (
        f"{details['cpu']}, {details['cores']} cores, {details.get('memory_gb', '?')} GB, "
        f"Python {platform.python_version()}"
    )
    print(f"machine: {machine}; load average {details.get('load_average_at_start')}")
    results = {"machine": machine, "machine_details": details, "command": " ".join(sys.argv)}
    data = load_mnist(args.data) if {"training", "cnn"} & set(sections) else None
    if "training" in sections:
        results["training"] = bench_training(data, args.epochs, args.torch_threads)
        print_table(results["training"])
    if "cnn" in sections:
        results["cnn"] = bench_cnn(data, args.cnn_epochs)
        print(f"{results['cnn']['what']}: {results['cnn']['median_epoch_seconds']:.2f} s/epoch")
    if "predict" in sections:
        results["predict"] = bench_predict(args.predict_calls)
    if "startup" in sections:
        results["startup"] = bench_startup(args.startup_runs, args.data)
    if "memory" in sections:
        results["memory"] = bench_memory(args.data)
    if "browser" in sections:
        results["browser"] = bench_browser(args.data, args.browser_repeats)
    if hasattr(os, "getloadavg"):
        details["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    results["summary"] = summary_rows(results)
    print()
    print_summary(results["summary"])
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2))
    args.json.with_suffix(".md").write_text(summary_markdown(results["summary"]))
    print(f"wrote {args.json} and {args.json.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
