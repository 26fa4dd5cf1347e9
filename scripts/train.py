"""Train a model from the command line; the last stdout line is a JSON summary.

python scripts/train.py --arch mlp --epochs 10 --batch-size 32     # the tutorial
python scripts/train.py --arch cnn                                 # the CNN preset
"""

import argparse
import dataclasses
import json
import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mnist_core.config import PRESETS, TrainConfig  # noqa: E402
from mnist_core.data import MnistDataError, MnistNotFoundError, load_mnist  # noqa: E402

MODELS_DIR = Path(__file__).resolve().parents[1] / "models"


def build_parser() -> argparse.ArgumentParser:
    """Flags come from TrainConfig's fields, so limits and help live in one place."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        if f.type is bool:
            parser.add_argument(
                flag, action=argparse.BooleanOptionalAction, default=None, help=f.metadata["help"]
            )
        elif "choices" in f.metadata:
            default = f.default if f.name == "arch" else None
            parser.add_argument(flag, choices=f.metadata["choices"], default=default, help=f.metadata["help"])
        else:
            low, high = f.metadata["min"], f.metadata["max"]
            parser.add_argument(
                flag, type=f.type, default=None, help=f"{f.metadata['help']} ({low} to {high})"
            )
    parser.add_argument(
        "--data", help="MNIST folder or .npz (default: MNIST_DATA, data/, Keras cache, download)"
    )
    parser.add_argument(
        "--out", type=Path, help="where to save the .keras model (default: models/ARCH-TIME.keras)"
    )
    parser.add_argument("--plot", type=Path, help="also save the accuracy and loss curves as a PNG")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The preset of --arch, with every flag that was given applied on top."""
    names = [f.name for f in dataclasses.fields(TrainConfig) if f.name != "arch"]
    overrides = {name: getattr(args, name) for name in names if getattr(args, name) is not None}
    return dataclasses.replace(PRESETS[args.arch], **overrides)


def progress_line(record: dict) -> str:
    """One line of progress for a batch or epoch record."""
    if record["type"] == "batch":
        width = 30
        filled = int(width * record["progress"])
        eta = record["eta_seconds"]  # None until the first batch's warm-up is past
        return (
            f"\r[{'#' * filled}{'.' * (width - filled)}] epoch {record['epoch']} "
            f"step {record['step']}/{record['steps']}  loss {record['loss']:.4f}  "
            f"accuracy {record['accuracy']:.4f}  {record['samples_per_second']:.0f} samples/s  "
            f"ETA {'…' if eta is None else f'{eta:.0f} s'} "
        )
    return (
        f"\repoch {record['epoch']}: loss {record['loss']:.4f}  accuracy {record['accuracy']:.4f}  "
        f"val_loss {record['val_loss']:.4f}  val_accuracy {record['val_accuracy']:.4f}  "
        f"({record['epoch_seconds']:.1f} s)" + " " * 30 + "\n"
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = config_from_args(args)
        data = load_mnist(args.data)
    except (ValueError, MnistNotFoundError, MnistDataError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    # TensorFlow loads only now, after the arguments and the data have been checked.
    from mnist_core.store import new_model_name
    from mnist_core.training import start_training

    out = args.out or MODELS_DIR / f"{new_model_name(config.arch, MODELS_DIR)}.keras"
    print(f"training {config}", file=sys.stderr)
    job = start_training(config, data)
    try:
        for record in job.follow():
            if record["type"] in ("batch", "epoch") and not args.quiet:
                print(progress_line(record), end="", file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        job.stop()
        job.wait()
        print("\ninterrupted: training stopped, nothing saved", file=sys.stderr)
        return 130
    done = job.result
    if job.status == "failed":
        print(f"\nerror: {done['message']}", file=sys.stderr)
        return 1

    metrics = {key: done[key] for key in ("test_accuracy", "test_loss", "epoch_seconds", "history")}
    command = shlex.join(["python", "scripts/train.py", *(sys.argv[1:] if argv is None else argv)])
    evaluation = job.evaluate()  # fits the temperature (saved with the model) and scores it on the test set
    path = job.save(out, config=config.to_dict(), metrics=metrics, command=command)
    if args.plot:
        from mnist_core.plots import history_figure, save_figure

        save_figure(history_figure(done["history"]), args.plot)
    print(
        f"test accuracy {done['test_accuracy']:.4f}; temperature {evaluation.temperature:.3f}: expected "
        f"calibration error {evaluation.ece_uncalibrated:.4f} -> {evaluation.ece:.4f}; saved {path}",
        file=sys.stderr,
    )
    summary = {
        "test_accuracy": done["test_accuracy"],
        "test_loss": done["test_loss"],
        "epoch_seconds": done["epoch_seconds"],
        "temperature": evaluation.temperature,
        "ece_before": evaluation.ece_uncalibrated,
        "ece_after": evaluation.ece,
        "model_path": str(path),
        "config": config.to_dict(),
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
