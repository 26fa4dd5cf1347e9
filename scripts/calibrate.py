"""Fit a saved model's temperature on MNIST training images and store it in its metadata sidecar.

python scripts/calibrate.py models/default.keras             # fit, report on the test set, store
python scripts/calibrate.py models/default.keras --dry-run   # fit and report only

The model file itself is not touched (its sidecar's model_sha256 stays valid). Runs of the app and of
scripts/train.py fit their own; this is for models saved before calibration existed, the shipped one too.
The last stdout line is a JSON summary.
"""

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mnist_core.data import MnistDataError, MnistNotFoundError, load_mnist  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("model", type=Path, help="a .keras model file with its .json sidecar")
    parser.add_argument(
        "--data", help="MNIST folder or .npz (default: MNIST_DATA, data/, Keras cache, download)"
    )
    parser.add_argument("--dry-run", action="store_true", help="report the fit without storing it")
    args = parser.parse_args(argv)
    try:
        data = load_mnist(args.data)
        from mnist_core.calibration import calibration_report, fit_images, fit_model
        from mnist_core.store import ModelFileError, load_model, write_calibration

        model, metadata = load_model(args.model)
        if not metadata and not args.dry_run:
            raise ModelFileError(f"{args.model.name}: no matching metadata sidecar to store a temperature in")
    except (ValueError, MnistNotFoundError, MnistDataError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    config = metadata.get("config") or {}
    tuned = bool((metadata.get("metrics") or {}).get("tune"))  # its base may have seen every image
    train_size, seed = int(config.get("train_size") or len(data.x_train)), int(config.get("seed") or 0)
    images, labels, fit_on = fit_images(data, train_size, seed, held_out=not tuned)
    calibration = fit_model(model, images, labels, fit_on)
    report = calibration_report(model, data, calibration["temperature"])
    calibration.update(test_ece_before=report["before"]["ece"], test_ece_after=report["after"]["ece"])
    print(f"temperature {calibration['temperature']:.4f}, fitted on {fit_on}")
    before, after = report["before"], report["after"]
    print(
        f"MNIST test ({report['count']} images, accuracy {report['test_accuracy']:.4f}): expected "
        f"calibration error {before['ece']:.4f} -> {after['ece']:.4f}, mean top probability "
        f"{before['mean_confidence']:.4f} -> {after['mean_confidence']:.4f}"
    )
    if not args.dry_run:
        print(f"stored in {write_calibration(args.model, calibration)}")
    print(json.dumps({"model": str(args.model), "calibration": calibration, "stored": not args.dry_run}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
