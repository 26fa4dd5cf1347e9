"""Measure MNIST Studio against plain Keras in one run, side by side; prints a table and writes JSON.

python scripts/benchmark.py                      # all sections
python scripts/benchmark.py --only training      # one section
"""

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mnist_core.config import TrainConfig  # noqa: E402
from mnist_core.data import load_mnist  # noqa: E402


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


def bench_training(data, epochs: int) -> list[dict]:
    rows = []
    plain = tutorial_fit(data, epochs)
    rows.append({"what": "tutorial MLP, plain Keras model.fit (batch 32)", **plain})
    ours = job_fit(data, TrainConfig(epochs=epochs))
    rows.append({"what": "tutorial MLP, MNIST Studio training job (batch 32)", **ours})
    base = statistics.median(plain["epoch_seconds"])
    for row in rows:
        row["median_epoch_seconds"] = statistics.median(row["epoch_seconds"])
        row["ratio_to_plain_keras"] = row["median_epoch_seconds"] / base
    return rows


def print_table(rows: list[dict]) -> None:
    print(f"{'measurement':58} {'median s/epoch':>15} {'vs Keras':>9} {'test acc':>9}")
    for row in rows:
        print(
            f"{row['what']:58} {row['median_epoch_seconds']:15.2f} "
            f"{row['ratio_to_plain_keras']:9.3f} {row['test_accuracy']:9.4f}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", help="MNIST folder or .npz (default: MNIST_DATA, data/, Keras cache)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per training measurement (default 3)")
    parser.add_argument("--only", choices=["training"], help="run one section")
    parser.add_argument("--json", type=Path, default=Path("benchmark-results/benchmark.json"))
    args = parser.parse_args(argv)
    data = load_mnist(args.data)
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    print(f"machine: {machine}")
    results = {"machine": machine, "training": bench_training(data, args.epochs)}
    print_table(results["training"])
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
