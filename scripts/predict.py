"""Classify a test digit or an image file with a saved model, as the tutorial's last step does.

python scripts/predict.py models/default.keras                  # a random test image
python scripts/predict.py models/default.keras --index 0 --plot prediction.png
python scripts/predict.py models/default.keras --image my_digit.png
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mnist_core.data import MnistDataError, MnistNotFoundError, load_mnist  # noqa: E402
from mnist_core.preprocess import to_mnist  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("model", type=Path, help="a .keras (or the tutorial's legacy .h5) model file")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--index", type=int, help="index of a test image (default: a random one)")
    source.add_argument("--image", type=Path, help="an image file of a handwritten digit")
    parser.add_argument(
        "--data", help="MNIST folder or .npz (default: MNIST_DATA, data/, Keras cache, download)"
    )
    parser.add_argument("--plot", type=Path, help="save the image and its prediction as a PNG")
    args = parser.parse_args(argv)
    try:
        if args.image is not None:
            image, label = to_mnist(str(args.image)), None
            if image is None:
                raise ValueError(f"{args.image} looks blank: no digit found in it")
        else:
            data = load_mnist(args.data)
            index = np.random.default_rng().integers(len(data.x_test)) if args.index is None else args.index
            if not 0 <= index < len(data.x_test):
                raise ValueError(f"--index received {index}; expected 0 to {len(data.x_test) - 1}")
            image, label = data.x_test[index] / np.float32(255), int(data.y_test[index])
        from mnist_core.calibration import temperature_of
        from mnist_core.predict import Predictor
        from mnist_core.store import load_model

        model, metadata = load_model(args.model)
    except (ValueError, MnistNotFoundError, MnistDataError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    # Calibrated by the temperature saved with the model, as the Draw tab's are (1.0 when it has none).
    probabilities = Predictor(model, {"temperature": temperature_of(metadata)}).predict(image)
    prediction = int(probabilities.argmax())
    where = f"image {args.image}" if args.image else f"test image {index}, real label {label}"
    print(f"{where}: prediction {prediction} ({probabilities[prediction]:.1%})")
    if args.plot:
        from mnist_core.plots import samples_figure, save_figure

        labels = [prediction if label is None else label]
        save_figure(samples_figure(image[None], labels, predictions=[prediction], columns=1), args.plot)
    result = {"prediction": prediction, "label": label, "probabilities": probabilities.round(6).tolist()}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
