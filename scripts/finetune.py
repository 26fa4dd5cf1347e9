"""Fine-tune a model on your own digits (a set file the Draw tab downloads); the last stdout line is JSON.

python scripts/finetune.py --base models/default.keras --data my-digits.npz --out tuned.keras

It trains on the set's x_train drawings with mnist_core.finetune's recipe (mixed with MNIST training
images) and measures the model before and after on the set's x_test drawings, which it never trains on,
and on the MNIST test set.
"""

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mnist_core.collection import read_set  # noqa: E402
from mnist_core.data import MnistDataError, MnistNotFoundError, load_mnist  # noqa: E402

VALIDATION_IMAGES = 2000  # of the MNIST test set, scored after each epoch, as the app's runs do


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--base", type=Path, required=True, help="the .keras model to start from")
    parser.add_argument(
        "--data", type=Path, required=True, help="your set: .npz with x_train, y_train (and x_test, y_test)"
    )
    parser.add_argument("--out", type=Path, required=True, help="where to save the tuned .keras model")
    parser.add_argument(
        "--mnist", help="MNIST folder or .npz (default: MNIST_DATA, data/, Keras cache, download)"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed of the fine-tuning (default: 0)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def progress_callback(steps: int, epochs: int, out=sys.stderr):
    """A Keras callback drawing a progress bar per step and a line per epoch on `out`."""
    import keras

    class Progress(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch, self.started = epoch + 1, time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            logs = logs or {}
            width = 30
            filled = int(width * (batch + 1) / steps)
            print(
                f"\r[{'#' * filled}{'.' * (width - filled)}] epoch {self.epoch}/{epochs} "
                f"step {batch + 1}/{steps}"
                f"  loss {logs.get('loss', 0.0):.4f}  accuracy {logs.get('accuracy', 0.0):.4f} ",
                end="",
                file=out,
                flush=True,
            )

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            validation = f"  MNIST val_accuracy {logs['val_accuracy']:.4f}" if "val_accuracy" in logs else ""
            print(
                f"\repoch {epoch + 1}/{epochs}: loss {logs.get('loss', 0.0):.4f}  accuracy "
                f"{logs.get('accuracy', 0.0):.4f}{validation}  ({time.perf_counter() - self.started:.1f} s)"
                + " "
                * 20,
                file=out,
                flush=True,
            )

    return Progress()


def _percent(value) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}%"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.out.suffix != ".keras":
        print(f"error: --out must name a .keras file, received {str(args.out)!r}", file=sys.stderr)
        return 2
    if not 0 <= args.seed <= 2**31 - 1:
        print(f"error: --seed must be from 0 to {2**31 - 1}, received {args.seed}", file=sys.stderr)
        return 2
    try:
        x_train, y_train, x_test, y_test = read_set(args.data)
        if not len(y_train):
            raise ValueError(
                f"{args.data} has no drawings to train on (x_train is empty); only set-aside ones in x_test"
            )
        data = load_mnist(args.mnist)
        # TensorFlow loads only now, after the set and MNIST have been checked.
        from mnist_core.store import load_model

        base, metadata = load_model(args.base)
    except (ValueError, MnistNotFoundError, MnistDataError, FileNotFoundError, IsADirectoryError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    import numpy as np

    from mnist_core import finetune
    from mnist_core.evaluate import evaluate_model
    from mnist_core.store import save_model

    config = finetune.tune_config(metadata.get("config"), len(y_train), args.seed)
    counts = (np.bincount(y_train, minlength=10) + np.bincount(y_test, minlength=10)).tolist()
    print(
        f"fine-tuning {args.base} on {len(y_train)} drawings ({len(y_test)} set aside to measure on) "
        f"and {config.train_size:,} MNIST images: {config.epochs} epochs",
        file=sys.stderr,
    )
    mnist_before = evaluate_model(base, data.x_test, data.y_test)
    own_before = finetune.accuracy(base, x_test, y_test)
    steps = finetune.steps(len(y_train), config)
    callbacks = [] if args.quiet else [progress_callback(steps, config.epochs)]
    started = time.perf_counter()
    tuned = finetune.fine_tune(
        base,
        x_train,
        y_train,
        data,
        seed=args.seed,
        config=config,
        callbacks=callbacks,
        validation_data=(data.x_test[:VALIDATION_IMAGES], data.y_test[:VALIDATION_IMAGES]),
    )
    seconds = time.perf_counter() - started
    mnist_after = evaluate_model(tuned, data.x_test, data.y_test)
    own_after = finetune.accuracy(tuned, x_test, y_test)

    summary = {
        "own_before": own_before,
        "own_after": own_after,
        "mnist_before": mnist_before.test_accuracy,
        "mnist_after": mnist_after.test_accuracy,
        "own_measured_on": len(y_test),
        "trained_on": len(y_train),
        "drawings_per_digit": counts,
        "seconds": round(seconds, 2),
    }
    metrics = {
        "test_accuracy": mnist_after.test_accuracy,
        "test_loss": mnist_after.test_loss,
        "base_model": str(args.base),
        **{key: summary[key] for key in ("drawings_per_digit", "trained_on", "own_measured_on")},
        "own_before": own_before,
        "own_after": own_after,
        "mnist_before": mnist_before.test_accuracy,
        "fit_seconds": summary["seconds"],
    }
    command = shlex.join(["python", "scripts/finetune.py", *(sys.argv[1:] if argv is None else argv)])
    try:
        path = save_model(tuned, args.out, config=config.to_dict(), metrics=metrics, command=command)
    except (OSError, ValueError) as error:
        print(f"error: could not save {args.out}: {error}", file=sys.stderr)
        return 2
    if not len(y_test):
        print("the set has no set-aside drawings (x_test): nothing to measure on", file=sys.stderr)
    print(
        f"your digits: {_percent(own_before)} -> {_percent(own_after)} on {len(y_test)} set aside; "
        f"MNIST test: {_percent(mnist_before.test_accuracy)} -> {_percent(mnist_after.test_accuracy)}; "
        f"fine-tuning took {seconds:.1f} s; saved {path}",
        file=sys.stderr,
    )
    print(json.dumps({**summary, "model_path": str(path)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
