"""Save a grid of random labelled MNIST digits as a PNG (the tutorial's visualize_data)."""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mnist_core.data import MnistDataError, MnistNotFoundError, load_mnist, sample  # noqa: E402
from mnist_core.plots import samples_figure, save_figure  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    """Parse the flags, draw the samples, write the PNG; 0 on success, 2 on bad data or arguments."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--data",
        help="folder with the MNIST IDX files or mnist.npz, or an .npz file "
        "(default: $MNIST_DATA, then data/, then the Keras cache, then a download)",
    )
    parser.add_argument("--split", choices=("train", "test"), default="train", help="which split to sample")
    parser.add_argument("--digit", type=int, help="only this digit, 0-9 (default: any)")
    parser.add_argument("--count", type=int, default=16, help="how many samples, 1-1000 (default: 16)")
    parser.add_argument("--seed", type=int, help="random seed, for the same samples every run")
    parser.add_argument("--columns", type=int, default=8, help="images per row (default: 8)")
    parser.add_argument("--out", type=Path, default=Path("samples.png"), help="PNG to write")
    args = parser.parse_args(argv)
    try:
        data = load_mnist(args.data)
        images, labels = sample(data, args.split, digit=args.digit, count=args.count, seed=args.seed)
        save_figure(samples_figure(images, labels, columns=args.columns), args.out)
    except (MnistNotFoundError, MnistDataError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # e.g. the output folder is not writable
        print(f"error: cannot write {args.out}: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {len(labels)} {args.split} samples from {data.source} to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
