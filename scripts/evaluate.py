"""Evaluate a saved model on the MNIST test set; the last stdout line is a JSON summary.

python scripts/evaluate.py models/default.keras --plot confusion.png
python scripts/evaluate.py models/default.keras --drawn --canvas 800   # also digits drawn on a canvas,
                                                                      # per source, digit and writing style
"""

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mnist_core.data import MnistDataError, MnistNotFoundError, load_mnist  # noqa: E402


def confusion_text(confusion) -> str:
    """The confusion matrix as aligned text, rows true digit, columns predicted."""
    lines = ["true\\pred" + "".join(f"{digit:>6}" for digit in range(10))]
    lines += [f"{digit:>9}" + "".join(f"{count:>6}" for count in row) for digit, row in enumerate(confusion)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("model", type=Path, help="a .keras (or the tutorial's legacy .h5) model file")
    parser.add_argument(
        "--data", help="MNIST folder or .npz (default: MNIST_DATA, data/, Keras cache, download)"
    )
    parser.add_argument("--plot", type=Path, help="save the confusion matrix as a PNG")
    parser.add_argument(
        "--drawn",
        action="store_true",
        help="also evaluate drawn digits (traced MNIST test digits and hand-made strokes rendered on a "
        "canvas) through the Draw tab's path: stroke points -> preprocess.strokes_to_mnist -> Predictor",
    )
    parser.add_argument(
        "--drawn-count", type=int, default=1000, help="traced digits in the drawn set (default: 1000)"
    )
    parser.add_argument(
        "--canvas", type=int, default=560, help="drawn canvas size in px (default: 560, the Draw tab's)"
    )
    parser.add_argument(
        "--drawn-heights",
        type=float,
        nargs=2,
        default=(0.3, 0.85),
        metavar=("LOW", "HIGH"),
        help="drawn digits' heights, fractions of the canvas (default: 0.3 0.85; 0.12 0.3 draws them small)",
    )
    parser.add_argument(
        "--drawn-read",
        choices=("points", "canvas"),
        default="points",
        help="read the drawn digits' stroke points as the Draw tab does (default), or the canvas' picture",
    )
    args = parser.parse_args(argv)
    if args.canvas < 28:
        parser.error(f"--canvas must be at least 28 px, received {args.canvas}")
    if args.drawn_count < 1:
        parser.error(f"--drawn-count must be at least 1, received {args.drawn_count}")
    try:
        data = load_mnist(args.data)
        from mnist_core.evaluate import evaluate_model
        from mnist_core.store import load_model

        model, metadata = load_model(args.model)
    except (ValueError, MnistNotFoundError, MnistDataError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    evaluation = evaluate_model(model, data.x_test, data.y_test)
    print(f"model: {args.model} ({metadata.get('command') or 'no metadata'})")
    print(f"test accuracy: {evaluation.test_accuracy:.4f}  test loss: {evaluation.test_loss:.4f}")
    print(
        "per-class accuracy: "
        + "  ".join(f"{d}: {a:.4f}" for d, a in enumerate(evaluation.per_class_accuracy))
    )
    print(confusion_text(evaluation.confusion))
    summary = {"model": str(args.model), **evaluation.to_dict()}
    if args.drawn:
        from mnist_core.drawn import evaluate_drawn

        try:
            drawn = evaluate_drawn(
                model,
                data,
                args.drawn_count,
                args.canvas,
                heights=tuple(args.drawn_heights),
                read=args.drawn_read,
            )
        except ValueError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        sources = "  ".join(
            f"{k}: {v['accuracy']:.4f} ({v['count']})" for k, v in drawn["per_source"].items()
        )
        print(f"drawn accuracy: {drawn['accuracy']:.4f} on {drawn['count']} digits, {args.canvas} px canvas")
        print(f"drawn per source: {sources}")
        print(
            "drawn per-class accuracy: "
            + "  ".join(f"{d}: {a:.4f}" for d, a in enumerate(drawn["per_class_accuracy"]))
        )
        print("drawn per style (hand-made strokes):")
        for style in drawn["per_style"]:
            read_as = ", ".join(f"{n} as {p}" for p, n in style["read_as"].items())
            print(
                f"  {style['digit']} {style['style']:>2} {style['name']:<34} {style['accuracy']:.4f}"
                f" ({style['count']}){'  misread: ' + read_as if read_as else ''}"
            )
        summary |= {"drawn_accuracy": drawn["accuracy"], "drawn": drawn}
    if args.plot:
        from mnist_core.plots import confusion_figure, save_figure

        summary["plot"] = str(save_figure(confusion_figure(evaluation.confusion), args.plot))
        print(f"confusion matrix saved to {args.plot}")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
