"""Fine-tuning a model on someone's own digits, mixed with MNIST training images so it keeps the rest.

The recipe (one place, used by the app's runs, scripts/finetune.py and scripts/evaluate.py --adaptation):
the network's layers up to its Flatten (the CNN's convolutions) stay as they are, and so does every batch
normalisation; only the dense layers after it train. Their input, the frozen layers' output, is computed
once, for COPIES randomly turned and shifted copies of each drawing (OWN_SAMPLES in all) and for MNIST
training images making up the rest (1 - OWN_SHARE); a copy of the model then trains TUNE_EPOCHS epochs on
those features. Set-aside drawings (collection.HOLD_OUT_EVERY) are never trained on.

Measured with scripts/evaluate.py --adaptation (BENCHMARKS.md, "Teaching it your handwriting"): six
simulated writers the shipped CNN reads at 80-90.5% are read at 95-100% after 5 drawings per digit (+11.0
points on average), and MNIST's test accuracy drops by at most 0.25 points for any of them. Tried and
dropped, on the two hardest writers in 4 epochs: training the convolutions too read them no better, cost
MNIST up to 0.46 points and took 3-5x as long; a rate of 1e-3 cost MNIST 0.31 points. On all six, 4 epochs
instead of 8 lifted them 0.6 points less. 200 drawings take 7-10 s on two busy cores (the frozen features
~1.3 s, Keras' tracing ~1.5 s, the dense layers the rest); MNIST then drops 0.12-0.26 points.
"""

from __future__ import annotations

import math

import numpy as np

from .config import FULL_TRAIN_SIZE, TrainConfig

TUNE_EPOCHS = 8
TUNE_BATCH = 128
TUNE_LEARNING_RATE = 3e-4
OWN_SHARE = 0.25  # of each epoch's images are the person's drawings (augmented copies), the rest MNIST
OWN_SAMPLES = (400, 2000)  # the drawings' copies in the training set: at least, at most
COPIES = 8  # augmented copies of each drawing, within OWN_SAMPLES
MIN_DRAWINGS = 1  # a set with fewer trains nothing
# An epoch is whole TensorFlow calls of models.SAMPLES_PER_EXECUTION samples: Keras reports a call's last
# step to the callbacks, and a partial call at the end would report steps past the epoch's end.
EPOCH_MULTIPLE = 1024
ROTATION, SHIFT = 0.03, 0.08  # the copies' random turn (fraction of a full turn) and shift (of the side)


def tune_plan(drawings: int) -> tuple[int, int]:
    """(augmented copies of the drawings, MNIST images) that one fine-tuning on `drawings` drawings trains
    on, every epoch."""
    if isinstance(drawings, bool) or not isinstance(drawings, int | np.integer) or drawings < MIN_DRAWINGS:
        raise ValueError(f"fine-tuning needs at least {MIN_DRAWINGS} drawing, received {drawings!r}")
    low, high = OWN_SAMPLES
    own = min(high, max(low, COPIES * int(drawings)))
    total = max(1, round(own / OWN_SHARE / EPOCH_MULTIPLE)) * EPOCH_MULTIPLE
    return own, min(FULL_TRAIN_SIZE, max(100, total - own))


def tune_config(base_config: dict | None, drawings: int, seed: int = 0) -> TrainConfig:
    """The TrainConfig of a fine-tuning run: the base's architecture and label smoothing, the recipe's
    epochs, batch and rate; train_size is the MNIST images mixed in."""
    base = base_config or {}
    arch = base.get("arch") if base.get("arch") in ("mlp", "cnn") else "cnn"
    return TrainConfig(
        arch=arch,
        epochs=TUNE_EPOCHS,
        batch_size=TUNE_BATCH,
        learning_rate=TUNE_LEARNING_RATE,
        train_size=tune_plan(drawings)[1],
        seed=seed,
        label_smoothing=float(base.get("label_smoothing") or 0.0),
        augment=True,
    )


def steps(drawings: int, config: TrainConfig) -> int:
    """Gradient steps in one epoch of a fine-tuning on `drawings` drawings."""
    own, _ = tune_plan(drawings)
    return math.ceil((own + config.train_size) / config.batch_size)


def copy_model(model):
    """A fresh copy of `model` (architecture and weights), so the original stays as it is."""
    import keras

    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


def accuracy(predictor_or_model, x, y) -> float | None:
    """Share of `x` (uint8) read as `y`; None for no images."""
    from .predict import Predictor

    if len(y) == 0:
        return None
    predictor = (
        predictor_or_model if isinstance(predictor_or_model, Predictor) else Predictor(predictor_or_model)
    )
    probabilities = predictor.predict(np.asarray(x, np.float32) / 255.0)
    return float((probabilities.argmax(1) == np.asarray(y)).mean())


def _split(model) -> int:
    """How many of `model`'s layers stay frozen: those up to its last Flatten (0 when it has none)."""
    import keras

    flattens = [i for i, layer in enumerate(model.layers) if isinstance(layer, keras.layers.Flatten)]
    return flattens[-1] + 1 if flattens else 0


def _augmented(x_own, repeats, seed: int) -> np.ndarray:
    """The images `x_own[repeats]` (uint8), each randomly turned and shifted."""
    import keras
    from keras import layers

    from .models import IMAGE_SHAPE

    augment = keras.Sequential(
        [
            keras.Input(shape=IMAGE_SHAPE),
            layers.Reshape((*IMAGE_SHAPE, 1)),
            layers.RandomRotation(ROTATION, fill_mode="constant", seed=seed),
            layers.RandomTranslation(SHIFT, SHIFT, fill_mode="constant", seed=seed),
            layers.Reshape(IMAGE_SHAPE),
        ]
    )
    x = np.asarray(x_own, np.float32)[repeats] / 255.0
    out = np.concatenate([np.asarray(augment(x[i : i + 512], training=True)) for i in range(0, len(x), 512)])
    return np.round(np.clip(out, 0, 1) * 255).astype(np.uint8)


def fine_tune(
    model,
    x_own,
    y_own,
    data,
    *,
    seed: int = 0,
    config: TrainConfig | None = None,
    callbacks=(),
    validation_data=None,
):
    """A copy of `model` fine-tuned on the drawings `x_own` (uint8 (n, 28, 28)) and labels `y_own`, mixed
    with MNIST training images (`data`: data.Mnist). `callbacks` go to the one Keras `fit`, which runs
    config.epochs epochs of steps(len(y_own), config) steps; `validation_data` = (uint8 images, integer
    labels) is scored after every epoch (val_loss, val_accuracy in the logs)."""
    import keras

    from .models import all_layers, compile_model, steps_per_execution
    from .training import one_hot

    x_own, y_own = np.asarray(x_own, np.uint8), np.asarray(y_own, np.uint8)
    if x_own.ndim != 3 or x_own.shape[1:] != (28, 28) or y_own.shape != (len(x_own),):
        raise ValueError(
            f"fine_tune got images {x_own.shape} and labels {y_own.shape}; expected (n, 28, 28) and (n,)"
        )
    config = config or tune_config(None, len(y_own), seed)
    own, _ = tune_plan(len(y_own))
    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(data.y_train), min(config.train_size, len(data.y_train)), replace=False)
    repeats = np.resize(rng.permutation(len(y_own)), own)  # every drawing as often as the others, +-1
    x = np.concatenate([_augmented(x_own, repeats, seed), data.x_train[chosen]])
    y = np.concatenate([y_own[repeats], data.y_train[chosen]])
    tuned = copy_model(model)
    # A network that is no plain stack of layers trains whole (its batch normalisation still frozen).
    split = _split(tuned) if isinstance(tuned, keras.Sequential) else 0
    frozen = keras.Sequential([keras.Input(shape=(28, 28)), *tuned.layers[:split]]) if split else None
    features = _features(frozen, x)
    head = (
        keras.Sequential([keras.Input(shape=features.shape[1:]), *tuned.layers[split:]]) if split else tuned
    )
    normalisations = [
        layer for layer in all_layers(head) if isinstance(layer, keras.layers.BatchNormalization)
    ]
    for layer in normalisations:  # inference mode: their statistics stay MNIST's
        layer.trainable = False
    compile_model(
        head,
        config.learning_rate,
        label_smoothing=config.label_smoothing,
        steps_per_execution=_per_call(steps(len(y_own), config), steps_per_execution(config.batch_size)),
    )
    validation = None
    if validation_data is not None:
        x_val, y_val = (np.asarray(part) for part in validation_data)
        labels = (
            y_val.astype(np.float32) if y_val.ndim == 2 else one_hot(y_val.astype(np.int64))
        )  # or one-hot
        validation = (_features(frozen, x_val.astype(np.uint8)), labels)
    try:
        head.fit(
            features,
            one_hot(y),
            epochs=config.epochs,
            batch_size=config.batch_size,
            callbacks=list(callbacks),
            validation_data=validation,
            verbose=0,
        )
    finally:
        for layer in normalisations:
            layer.trainable = True
    return tuned


def _per_call(steps_count: int, most: int) -> int:
    """Steps per TensorFlow call: the most, up to `most`, that divide an epoch's steps evenly."""
    return next(n for n in range(min(most, steps_count), 0, -1) if steps_count % n == 0)


def _features(frozen, x_uint8) -> np.ndarray:
    """The frozen layers' output for uint8 images (the images themselves in [0, 1] when none are frozen)."""
    x = np.asarray(x_uint8, np.float32) / 255.0
    if frozen is None:
        return x
    return np.concatenate(
        [np.asarray(frozen(x[i : i + 1024], training=False)) for i in range(0, len(x), 1024)]
    )
