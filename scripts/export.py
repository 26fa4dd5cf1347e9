"""Export a saved model as .keras, ONNX or LiteRT, then check the file in its own runtime against the
Keras model on the first 200 MNIST test digits; the last stdout line is a JSON summary.

python scripts/export.py models/default.keras --format onnx --out default.onnx
python scripts/export.py models/default.keras --format litert --out default.tflite
python scripts/export.py models/default.keras --format keras --out copy.keras --no-check

Exit status: 0 when the check passes (max abs difference of probabilities <= 1e-4), 1 when it does not,
2 for bad input (unknown format, wrong suffix, missing model or data).
"""

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mnist_core.data import MnistDataError, MnistNotFoundError, load_mnist  # noqa: E402
from mnist_core.export import FORMATS, SUFFIXES, TOLERANCE, check_export_path  # noqa: E402

CHECK_DIGITS = 200


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("model", type=Path, help="a .keras (or the tutorial's legacy .h5) model file")
    parser.add_argument(
        "--format",
        required=True,
        choices=FORMATS,
        help="keras (.keras), onnx (.onnx, for onnxruntime) or litert (.tflite, for LiteRT)",
    )
    parser.add_argument(
        "--out",
        required=True,
        type=Path,
        help="the file to write: " + ", ".join(f"{s} for {f}" for f, s in SUFFIXES.items()),
    )
    parser.add_argument(
        "--data", help="MNIST folder or .npz (default: MNIST_DATA, data/, Keras cache, download)"
    )
    parser.add_argument(
        "--no-check", action="store_true", help="skip loading the file in its runtime and comparing"
    )
    args = parser.parse_args(argv)
    try:
        out = check_export_path(args.format, args.out)
        if args.model.exists() and out.exists() and out.resolve() == args.model.resolve():
            raise ValueError(f"--out {str(out)!r} is the model file itself; write the export to another path")
        data = None if args.no_check else load_mnist(args.data)
        from mnist_core.export import check_export, export_model
        from mnist_core.store import load_model

        model, _ = load_model(args.model)
    except (ValueError, MnistNotFoundError, MnistDataError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    start = time.perf_counter()
    export_model(model, args.format, out)
    seconds = time.perf_counter() - start
    size = out.stat().st_size
    print(f"exported {args.model} as {args.format}: {out} ({size:,} bytes, {seconds:.2f} s)")
    summary = {
        "model": str(args.model),
        "format": args.format,
        "out": str(out),
        "bytes": size,
        "max_abs_diff": None,
        "export_seconds": round(seconds, 3),
    }
    status = 0
    if data is not None:
        images = data.x_test[:CHECK_DIGITS].astype("float32") / 255.0
        difference = check_export(out, args.format, model, images)
        summary["max_abs_diff"] = difference
        verdict = "ok" if difference <= TOLERANCE else f"FAILED, above {TOLERANCE:g}"
        print(
            f"max abs difference of probabilities against Keras on {len(images)} MNIST test digits: "
            f"{difference:.3g} ({verdict})"
        )
        if difference > TOLERANCE:
            print(
                f"error: the {args.format} file disagrees with the Keras model by {difference:.3g} "
                f"(allowed {TOLERANCE:g})",
                file=sys.stderr,
            )
            status = 1
    print(json.dumps(summary))
    return status


if __name__ == "__main__":
    sys.exit(main())
