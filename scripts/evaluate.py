"""Evaluate a saved model on the MNIST test set; the last stdout line is a JSON summary.

python scripts/evaluate.py models/default.keras --plot confusion.png
python scripts/evaluate.py models/default.keras --drawn --canvas 800   # also digits drawn on a canvas,
                                                                      # per source, digit and writing style
python scripts/evaluate.py models/default.keras --data my-digits.npz  # a set of your own digits
python scripts/evaluate.py models/default.keras --adaptation           # fine-tuned on simulated writers
"""

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mnist_core.collection import MAX_FILE_BYTES, read_set  # noqa: E402
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
        "--data",
        help="MNIST folder or .npz (default: MNIST_DATA, data/, Keras cache, download); an .npz of at most "
        f"{MAX_FILE_BYTES // 1024**2} MB is read as a set of your own digits (the Draw tab's download) and "
        "scored on its x_train, its x_test and all",
    )
    parser.add_argument(
        "--plot", type=Path, help="save the confusion matrix as a PNG, the reliability diagram beside it"
    )
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
    parser.add_argument(
        "--adaptation",
        action="store_true",
        help="fine-tune the model (mnist_core.finetune) on k drawings per digit of each simulated writer "
        "(mnist_core.writers) and report their accuracy on other drawings, and MNIST's, before and after",
    )
    parser.add_argument("--writers", type=int, help="--adaptation: only the first N writers (default: all)")
    parser.add_argument(
        "--ks", type=int, nargs="+", default=[1, 3, 5], help="--adaptation: drawings per digit trained on"
    )
    parser.add_argument(
        "--eval-per-digit", type=int, default=20, help="--adaptation: drawings per digit measured on"
    )
    parser.add_argument(
        "--mnist-images", type=int, help="--adaptation: MNIST test images scored after each fine-tuning"
    )
    parser.add_argument("--seed", type=int, default=0, help="--adaptation: seed of drawings and runs")
    args = parser.parse_args(argv)
    if args.canvas < 28:
        parser.error(f"--canvas must be at least 28 px, received {args.canvas}")
    if args.drawn_count < 1:
        parser.error(f"--drawn-count must be at least 1, received {args.drawn_count}")
    if args.adaptation:
        from mnist_core.writers import WRITERS

        if args.writers is not None and not 1 <= args.writers <= len(WRITERS):
            parser.error(f"--writers must be from 1 to {len(WRITERS)}, received {args.writers}")
        if min(args.ks) < 1 or args.eval_per_digit < 1 or (args.mnist_images or 1) < 1:
            parser.error("--ks, --eval-per-digit and --mnist-images must be at least 1")
    if is_set_file(args.data):
        if args.drawn or args.adaptation:
            print(f"error: --drawn and --adaptation score MNIST; {args.data} is a set file", file=sys.stderr)
            return 2
        return evaluate_set(args)
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
    from mnist_core.calibration import calibration_report, temperature_of

    # The temperature saved with the model; a model saved without one is fitted now on MNIST training
    # images (never on the test set it is scored on). evaluation.probabilities are the model's own.
    calibration = calibration_report(
        model, data, temperature_of(metadata, default=None), probabilities=evaluation.probabilities
    )
    fitted = f"fitted on {calibration['fit']['fit_on']}" if "fit" in calibration else "saved with the model"
    before, after = calibration["before"], calibration["after"]
    print(
        f"calibration: temperature {calibration['temperature']:.4f} ({fitted}); expected calibration error "
        f"{before['ece']:.4f} -> {after['ece']:.4f}, test loss {before['test_loss']:.4f} -> "
        f"{after['test_loss']:.4f}, mean top probability {before['mean_confidence']:.4f} -> "
        f"{after['mean_confidence']:.4f}"
    )
    summary["calibration"] = calibration
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
        from mnist_core.plots import confusion_figure, reliability_figure, save_figure

        summary["plot"] = str(save_figure(confusion_figure(evaluation.confusion), args.plot))
        print(f"confusion matrix saved to {args.plot}")
        reliability_plot = args.plot.with_name(f"{args.plot.stem}-reliability.png")
        summary["reliability_plot"] = str(save_figure(reliability_figure(calibration), reliability_plot))
        print(f"reliability diagram (before and after the temperature) saved to {reliability_plot}")
    if args.adaptation:
        summary["adaptation"] = adaptation(model, data, metadata, args)
    print(json.dumps(summary))
    return 0


def is_set_file(path) -> bool:
    """Whether --data names a set of someone's own digits: an .npz no bigger than a set file may be
    (Keras' mnist.npz is 11 MB)."""
    p = Path(path) if path else None
    return p is not None and p.suffix == ".npz" and p.is_file() and p.stat().st_size <= MAX_FILE_BYTES


def evaluate_set(args) -> int:
    """Score the model on a set file's x_train, x_test and all of it."""
    import numpy as np

    try:
        x_train, y_train, x_test, y_test = read_set(args.data)
        from mnist_core.evaluate import evaluate_model
        from mnist_core.store import load_model

        model, metadata = load_model(args.model)
    except (ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"model: {args.model} ({metadata.get('command') or 'no metadata'})")
    parts = {"train": (x_train, y_train), "test": (x_test, y_test),
             "all": (np.concatenate([x_train, x_test]), np.concatenate([y_train, y_test]))}  # fmt: skip
    summary = {"model": str(args.model), "set": str(args.data)}
    for name, (x, y) in parts.items():
        if not len(y):
            print(f"{name}: no drawings")
            summary[name] = None
            continue
        evaluation = evaluate_model(model, x, y)
        print(f"{name}: accuracy {evaluation.test_accuracy:.4f} on {len(y)} drawings")
        summary[name] = {
            "accuracy": evaluation.test_accuracy,
            "loss": evaluation.test_loss,
            "count": len(y),
            "per_class_accuracy": evaluation.to_dict()["per_class_accuracy"],
        }
    print(confusion_text(evaluation.confusion))  # of the whole set
    summary["accuracy"] = summary["all"]["accuracy"]
    if args.plot:
        from mnist_core.plots import confusion_figure, save_figure

        summary["plot"] = str(save_figure(confusion_figure(evaluation.confusion), args.plot))
        print(f"confusion matrix saved to {args.plot}")
    print(json.dumps(summary))
    return 0


def adaptation(model, data, metadata: dict, args) -> dict:
    """writers.adaptation for the flags, with a line per fine-tuning on stderr and the table on stdout."""
    from mnist_core import writers

    names = list(writers.WRITERS)[: args.writers]

    def progress(name, k, row):
        print(
            f"  {name}: k={k}  {100 * row['base']:.1f}% -> {100 * row['after'][k]:.1f}%  MNIST "
            f"{100 * row['mnist_after'][k]:.2f}%  ({row['seconds'][k]:.1f} s)",
            file=sys.stderr,
            flush=True,
        )

    print(f"adaptation: {len(names)} writers, k = {args.ks} drawings per digit", file=sys.stderr)
    report = writers.adaptation(
        model, data, writers=names, ks=args.ks, eval_per_digit=args.eval_per_digit,
        mnist_images=args.mnist_images, seed=args.seed, base_config=metadata.get("config"), progress=progress,
    )  # fmt: skip
    print(adaptation_table(report))
    return report


def adaptation_table(report: dict) -> str:
    """The adaptation report as a markdown table, then the targets' figures."""
    ks, summary = report["ks"], report["summary"]
    mnist_head = "MNIST after (" + " / ".join(f"k={k}" for k in ks) + ")"
    head = ["writer", "base", *(f"k={k}" for k in ks), mnist_head]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]

    def cells(name, base, after, mnist):
        return [name, f"{100 * base:.1f}%", *(f"{100 * after[k]:.1f}%" for k in ks),
                " / ".join(f"{100 * mnist[k]:.2f}%" for k in ks)]  # fmt: skip

    for row in report["writers"]:
        row_cells = cells(row["writer"], row["base"], row["after"], row["mnist_after"])
        lines.append("| " + " | ".join(row_cells) + " |")
    mean = cells("mean", summary["base"], summary["after"], summary["mnist_after"])
    lines.append("| " + " | ".join(f"**{c}**" for c in mean) + " |")
    lift = summary["mean_lift_points"]
    lines.append(
        f"MNIST before: {100 * report['mnist_before']:.2f}% on {report['mnist_images']:,} test images; "
        f"{report['eval_per_digit']} drawings per digit measured per writer, never trained on."
    )
    lines.append(
        f"Writers read at <= 95% before: {summary['hard_writers']}; "
        f"their mean lift at k={summary['lift_at_k']}: "
        + ("n/a" if lift is None else f"{lift:+.1f} points")
        + f"; largest MNIST drop (any writer, any k): {summary['max_mnist_drop_points']:.2f} points; "
        f"mean fine-tuning {summary['seconds']:.1f} s."
    )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
