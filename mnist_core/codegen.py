"""The code of a run: a self-contained Keras script (keras, numpy, the standard library) that rebuilds a
TrainConfig's network and trains it with the same settings, written to be read; no TensorFlow here."""

from string import Template

from .config import FULL_TRAIN_SIZE, PRESETS, TrainConfig

# models.py and training.py, spelled out: importing them would load TensorFlow just to write text.
# tests/test_codegen.py checks each against its source.
BN_MOMENTUM = 0.9
CNN_FILTERS = (24, 48)
CLEAN_ONE_IN = 6  # training.CLEAN_ONE_IN: an augmented run's last epochs // 6 are clean
ROTATION, SHIFT = 0.03, 0.08  # models.with_augmentation
JIT_COMPILE = {"mlp": True, "cnn": False}
SAMPLES_PER_EXECUTION = 1024
RECALIBRATE_BELOW_STEPS = 500
RECALIBRATION_IMAGES = 1024


def script_name(config: TrainConfig) -> str:
    """The file name to offer the script under, e.g. "train_mlp.py"."""
    return f"train_{config.arch}.py"


def keras_script(
    config: TrainConfig, *, run_name: str | None = None, fine_tuned_from: str | None = None
) -> str:
    """A runnable Python script that trains `config`'s network as MNIST Studio does.

    `run_name` names the run or model in its header; `fine_tuned_from`, the base model of a fine-tuning,
    whose drawings the script cannot have: it then trains the same settings from scratch, and says so.
    """
    if not isinstance(config, TrainConfig):
        raise ValueError(f"keras_script expects a TrainConfig, received {type(config).__name__}")
    c = config
    uses_steps = c.arch == "cnn" or c.schedule == "cosine"
    fit_with = "trainer" if c.augment else "model"
    parts = [
        _header(c, run_name, fine_tuned_from),
        _IMPORTS.substitute(math="import math\n" if uses_steps else ""),
        _SETTINGS.substitute(
            arch=c.arch,
            epochs=c.epochs,
            train_size=f"{c.train_size:_}",
            train_size_note=_images(c.train_size),
            batch_size=c.batch_size,
            learning_rate=repr(c.learning_rate),
            rate_note=" (also Keras' default)" if c.learning_rate == 0.001 else "",
            seed=c.seed,
        ),
        _DATA,
        _drawn_note(c) + _SUBSET,
        _PREPROCESS,
        _CNN_MODEL.substitute(
            momentum=BN_MOMENTUM, first=CNN_FILTERS[0], second=CNN_FILTERS[1], flat=f"{25 * CNN_FILTERS[1]:,}"
        )
        if c.arch == "cnn"
        else _MLP_MODEL,
    ]
    if c.augment:
        parts.append(  # a leading blank line more: the classes it starts with need two before them
            "\n"
            + _AUGMENT.substitute(
                rotation=ROTATION,
                shift=SHIFT,
                degrees=round(ROTATION * 360),
                clean_one_in=CLEAN_ONE_IN,
            )
        )
    parts.append(_compile(c, fit_with, uses_steps))
    parts.append(_fit(c, fit_with))
    parts.append(_FINISH.substitute(fit_with=fit_with))
    return "\n\n".join(part.rstrip("\n") for part in parts) + "\n"


def _one_line(text: str, limit: int = 80) -> str:
    """`text` safe inside a comment: printable characters only, no line breaks, at most `limit` long."""
    kept = "".join(ch if ch.isprintable() else " " for ch in str(text)).strip()
    return kept if len(kept) <= limit else kept[: limit - 1] + "…"


def _header(c: TrainConfig, run_name, fine_tuned_from) -> str:
    if c == PRESETS.get(c.arch):
        what = "the tutorial's settings (the MLP preset)" if c.arch == "mlp" else "the CNN preset's settings"
    else:
        what = "the settings of a run"
    lines = [f"# Written by MNIST Studio{f' for {_one_line(run_name)}' if run_name else ''}."]
    if fine_tuned_from:
        lines += [
            f"# Fine-tuned from: {_one_line(fine_tuned_from)}.",
            "# That run started from the model above and trained it on a visitor's own drawings: the",
            "# layers up to Flatten and every batch normalisation stayed frozen while the dense layers",
            "# learned from shifted and turned copies of the drawings mixed with MNIST training images.",
            "# The drawings stay in the app, so this script trains the same network with the same",
            "# settings on MNIST alone, from scratch.",
        ]
    return (
        _DOCSTRING.substitute(
            arch=c.arch,
            what=what,
            name=script_name(c),
            epochs=c.epochs,
            train_size=_images(c.train_size),
        )
        + "\n\n"
        + "\n".join(lines)
    )


def _images(count: int) -> str:
    return f"all {count:,}" if count == FULL_TRAIN_SIZE else f"{count:,}"


def _drawn_note(c: TrainConfig) -> str:
    if not c.drawn_share:
        return ""
    return (
        f"# In MNIST Studio {c.drawn_share:.0%} of this run's training set were drawn digits: the app's own\n"
        "# hand-made writing styles, read through its Draw tab. They are not part of MNIST and are left out\n"
        "# here, so this script trains on the MNIST images alone (and a few fewer steps per epoch).\n"
    )


def _compile(c: TrainConfig, fit_with: str, uses_steps: bool) -> str:
    text = "# 4. Compile: the optimizer, the loss to minimise and the metric to report.\n"
    if uses_steps:
        text += "steps_per_epoch = math.ceil(len(x_train) / batch_size)\n"
    if c.schedule == "cosine":
        text += _COSINE
        optimizer = "keras.optimizers.Adam(learning_rate=schedule)"
    else:
        optimizer = "keras.optimizers.Adam(learning_rate=learning_rate)"
    if c.label_smoothing:
        s = c.label_smoothing
        loss = f"keras.losses.CategoricalCrossentropy(label_smoothing={s!r}),"
        own, other = f"{1 - s + s / 10:.3g}", f"{s / 10:.3g}"
        loss_note = (
            f"# Label smoothing {s:.3g}: each target puts {own} on its digit and {other} on each other one,\n"
            "# so the network is not pushed towards ever surer answers.\n"
        )
    else:
        loss, loss_note = '"categorical_crossentropy",  # the loss for one-hot labels of several classes', ""
    jit = JIT_COMPILE[c.arch] and not c.augment
    if jit:
        jit_note = "speed only: XLA, measured a third off each epoch of this network on 2 CPU cores"
    elif c.augment:
        jit_note = "as MNIST Studio trains it: XLA cannot fuse the random image transforms"
    else:
        jit_note = "as MNIST Studio trains this network"
    per_call = max(1, min(32, SAMPLES_PER_EXECUTION // c.batch_size))
    return (
        text
        + loss_note
        + _COMPILE.substitute(
            fit_with=fit_with,
            optimizer=optimizer,
            loss=loss,
            per_call=per_call,
            jit=jit,
            jit_note=jit_note,
        )
    )


def _fit(c: TrainConfig, fit_with: str) -> str:
    with_callbacks = _FIT.substitute(fit_with=fit_with, callbacks="    callbacks=callbacks,\n")
    if c.arch != "cnn":
        return with_callbacks if c.augment else _FIT.substitute(fit_with=fit_with, callbacks="")
    recalibrate = _RECALIBRATE.substitute(
        below=RECALIBRATE_BELOW_STEPS,
        images=RECALIBRATION_IMAGES,
        start="" if c.augment else "callbacks = []\n",  # the augmentation's switch is already in the list
    )
    return recalibrate + "\n" + with_callbacks


_DOCSTRING = Template('''\
"""Train MNIST Studio's "$arch" network on MNIST in plain Keras, with $what.

Run it as it is to repeat the run ($epochs epochs on $train_size training images), or shorter for a look:

    python $name [--data PATH] [--epochs N] [--train-size N] [--save PATH]

--data        MNIST: a folder holding the four IDX files (.gz or raw) or mnist.npz, or an .npz file.
              Default: $$MNIST_DATA, else keras.datasets.mnist.load_data() (downloads it once).
--epochs      passes over the training images
--train-size  how many training images: a seeded random subset of the 60,000
--save        where the trained model goes (default: mnist_$arch.keras)

Needs numpy and Keras 3 with a backend, for example `pip install keras tensorflow`.
"""''')

_IMPORTS = Template("""\
import argparse
import gzip
${math}import os
from pathlib import Path

import keras
import numpy as np
from keras import layers
""")

_SETTINGS = Template("""\
# The run's settings; the command line can shorten the run.
parser = argparse.ArgumentParser(description="Train MNIST Studio's $arch network on MNIST.")
parser.add_argument("--data", default=os.environ.get("MNIST_DATA"), help="MNIST folder or .npz file")
parser.add_argument("--epochs", type=int, default=$epochs, help="passes over the training images")
parser.add_argument("--train-size", type=int, default=$train_size, help="training images (a seeded subset)")
parser.add_argument("--save", default="mnist_$arch.keras", help="where the trained model goes")
args = parser.parse_args()
epochs = args.epochs  # the run: $epochs
train_size = args.train_size  # the run: $train_size_note
batch_size = $batch_size  # images per gradient step
learning_rate = $learning_rate  # Adam's step size$rate_note
seed = $seed  # the same seed gives the same weights, shuffling and subset

# Seed Python's, NumPy's and the backend's random numbers, so that a second run repeats the first.
keras.utils.set_random_seed(seed)
""")

_DATA = """
# 1. Load MNIST: 60,000 training and 10,000 test images of 28x28 grey levels, 0 (paper) to 255 (ink),
# each with its digit 0-9.
def read_idx(folder, name):
    \"\"\"One IDX file, gzipped or raw: a big-endian header (byte 4 counts the dimensions), then uint8s.\"\"\"
    packed = folder / f"{name}.gz"
    data = gzip.decompress(packed.read_bytes()) if packed.is_file() else (folder / name).read_bytes()
    ndim = data[3]
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load_mnist(path):
    \"\"\"((x_train, y_train), (x_test, y_test)) as uint8 arrays, from `path`, else from Keras.\"\"\"
    if not path:
        return keras.datasets.mnist.load_data()  # downloads mnist.npz to ~/.keras/datasets the first time
    path = Path(path).expanduser()
    if not path.exists():
        raise SystemExit(f"{path} does not exist; pass --data with a folder of MNIST files or an .npz file")
    if path.is_dir() and not any(path.glob("train-images-idx3-ubyte*")):
        path = path / "mnist.npz"
    if path.is_file():
        with np.load(path) as npz:  # NumPy reads any copy; Keras accepts only the bytes of its own download
            return (npz["x_train"], npz["y_train"]), (npz["x_test"], npz["y_test"])
    return (
        (read_idx(path, "train-images-idx3-ubyte"), read_idx(path, "train-labels-idx1-ubyte")),
        (read_idx(path, "t10k-images-idx3-ubyte"), read_idx(path, "t10k-labels-idx1-ubyte")),
    )


(x_train, y_train), (x_test, y_test) = load_mnist(args.data)
print(f"Training set shape: {x_train.shape}, label shape: {y_train.shape}")
print(f"Test set shape: {x_test.shape}, label shape: {y_test.shape}")
"""

_SUBSET = """\
# Fewer training images than all: a random subset that the seed fixes (the same images MNIST Studio picks).
if train_size < len(x_train):
    chosen = np.random.default_rng(seed).choice(len(x_train), train_size, replace=False)
    x_train, y_train = x_train[chosen], y_train[chosen]
"""

_PREPROCESS = """\
# 2. Preprocess. Pixels from 0-255 to 0-1: small, similar inputs keep the first steps of training stable.
x_train = x_train.astype("float32") / 255.0
x_test = x_test.astype("float32") / 255.0

# Labels one-hot: the digit 3 becomes [0, 0, 0, 1, 0, 0, 0, 0, 0, 0], one target per output neuron.
y_train = keras.utils.to_categorical(y_train, 10)
y_test = keras.utils.to_categorical(y_test, 10)
"""

_MLP_MODEL = """\
# 3. Build the model: a small fully connected network (a multilayer perceptron).
model = keras.Sequential(
    [
        keras.Input(shape=(28, 28)),
        layers.Flatten(),  # each 28x28 image becomes one row of 784 pixels
        layers.Dense(128, activation="relu"),  # hidden layer 1: 128 neurons, ReLU
        layers.Dense(64, activation="relu"),  # hidden layer 2: 64 neurons, ReLU
        layers.Dense(10, activation="softmax"),  # output: one probability per digit 0-9
    ],
    name="mlp",
)

# The layers, their output shapes and their parameter counts.
model.summary()
"""

_CNN_MODEL = Template("""\
# 3. Build the model: two convolution blocks, then a small fully connected head.
# The convolutions have no bias (batch normalisation adds its own offset) and no padding, and pooling
# comes right after each one, so batch normalisation and ReLU work on a quarter of the positions. Batch
# normalisation's moving averages use momentum $momentum, not Keras' 0.99: they settle within about 50 steps.
# MNIST Studio trains this network in mixed precision where the CPU computes bfloat16 natively (the layers
# compute in bfloat16, the weights stay float32) and keeps a float32 copy; this script stays in float32,
# the same network to within rounding (keras.mixed_precision.set_global_policy("mixed_bfloat16") before
# building it would compute as the app does).
model = keras.Sequential(
    [
        keras.Input(shape=(28, 28)),
        layers.Reshape((28, 28, 1)),  # one grey channel, as Conv2D expects
        layers.Conv2D($first, 3, use_bias=False),  # $first filters of 3x3: 28x28 -> 26x26
        layers.MaxPooling2D(),  # -> 13x13
        layers.BatchNormalization(momentum=$momentum),
        layers.Activation("relu"),
        layers.Conv2D($second, 3, use_bias=False),  # $second filters: 13x13 -> 11x11
        layers.MaxPooling2D(),  # -> 5x5
        layers.BatchNormalization(momentum=$momentum),
        layers.Activation("relu"),
        layers.Flatten(),  # 5 x 5 x $second = $flat values
        layers.Dense(128, use_bias=False),
        layers.BatchNormalization(momentum=$momentum),
        layers.Activation("relu"),
        layers.Dropout(0.3),  # while training, drop 30% of these activations at random
        layers.Dense(10, activation="softmax"),  # output: one probability per digit 0-9
    ],
    name="cnn",
)

# The layers, their output shapes and their parameter counts.
model.summary()
""")

_AUGMENT = Template("""\
# Augmentation: every epoch, each training image is turned a little (up to $rotation of a full turn, about
# $degrees degrees) and shifted (up to $shift of its side). These layers sit in front of the network only
# while it trains; the saved model reads images as they are. The last sixth of the epochs (rounded down)
# see the images as they are, so that the network settles on the digits it will be shown: a switch that
# the training step reads (a variable, so turning it off needs no new trace) does that.
class WhileOn(layers.Layer):
    \"\"\"Its `inner` layers while training and switched on; the input as it is otherwise.\"\"\"

    def __init__(self, inner, **kwargs):
        super().__init__(**kwargs)
        self.inner = inner
        self.on = self.add_weight(shape=(), initializer="ones", trainable=False, name="on")

    def call(self, inputs, training=False):
        if not training:
            return inputs
        return keras.ops.cond(self.on > 0, lambda: self.inner(inputs, training=True), lambda: inputs)


class CleanFrom(keras.callbacks.Callback):
    \"\"\"Switches the augmentation off from epoch `first` (counted from 0), on before it.\"\"\"

    def __init__(self, switch, first):
        super().__init__()
        self.switch, self.first = switch, first

    def on_epoch_begin(self, epoch, logs=None):
        self.switch.on.assign(0.0 if epoch >= self.first else 1.0)


shifts_and_turns = keras.Sequential(
    [
        keras.Input(shape=(28, 28)),
        layers.Reshape((28, 28, 1)),
        layers.RandomRotation($rotation, fill_mode="constant"),
        layers.RandomTranslation($shift, $shift, fill_mode="constant"),
        layers.Reshape((28, 28)),
    ],
    name="shifts_and_turns",
)
augmentation = WhileOn(shifts_and_turns, name="augmentation")
trainer = keras.Sequential([keras.Input(shape=(28, 28)), augmentation, model], name="trainer")
callbacks = [CleanFrom(augmentation, epochs - epochs // $clean_one_in)]
""")

_COSINE = """\
# The learning rate warms up from a tenth of its peak over the first 5% of the steps, then falls along a
# cosine to 1% of the peak at the last step.
total_steps = steps_per_epoch * epochs
warmup_steps = max(1, total_steps // 20)
schedule = keras.optimizers.schedules.CosineDecay(
    initial_learning_rate=learning_rate / 10,
    decay_steps=max(1, total_steps - warmup_steps),
    warmup_target=learning_rate,
    warmup_steps=warmup_steps,
    alpha=0.01,
)
"""

_COMPILE = Template("""\
$fit_with.compile(
    optimizer=$optimizer,  # Adam adapts each weight's step size
    loss=$loss
    metrics=["accuracy"],  # share of images whose most likely digit is the right one
    steps_per_execution=$per_call,  # speed only: $per_call batches per call into the backend
    jit_compile=$jit,  # $jit_note
)
""")

_RECALIBRATE = Template("""
class PreciseBatchNorm(keras.callbacks.Callback):
    \"\"\"Before each validation, set every batch normalisation's moving averages to the exact statistics of
    `images`: one forward pass in training mode with momentum 0, which changes no weight.\"\"\"

    def __init__(self, network, images):
        super().__init__()
        self.network, self.images = network, images

    def on_test_begin(self, logs=None):
        norms = [layer for layer in self.network.layers if isinstance(layer, layers.BatchNormalization)]
        momenta = [layer.momentum for layer in norms]
        for layer in norms:
            layer.momentum = 0.0
        self.network(self.images, training=True)
        for layer, momentum in zip(norms, momenta, strict=True):
            layer.momentum = momentum


# The moving averages trail the weights by about 1 / (1 - momentum) steps. A short run (under $below steps)
# would be scored on averages that still describe its first steps, so, like MNIST Studio, it recomputes
# them from $images of its training images before each validation. Longer runs keep Keras' own.
${start}if steps_per_epoch * epochs < $below:
    sample = np.random.default_rng(seed).permutation(len(x_train))[:$images]
    callbacks.append(PreciseBatchNorm(model, x_train[sample]))
""")

_FIT = Template("""\
# 5. Train, scoring the test set after every epoch as the validation set.
history = $fit_with.fit(
    x_train,
    y_train,
    validation_data=(x_test, y_test),
    epochs=epochs,
    batch_size=batch_size,
${callbacks}    verbose=2,  # one line per epoch
)
""")

_FINISH = Template("""\
# 6. Evaluate on the 10,000 test images, which the network never trained on.
test_loss, test_accuracy = $fit_with.evaluate(x_test, y_test, verbose=0)
print(f"Test set loss: {test_loss:.4f}")
print(f"Test set accuracy: {test_accuracy:.4f}")

# 7. Predict one test image at random.
index = np.random.default_rng().integers(len(x_test))
probabilities = model.predict(x_test[index : index + 1], verbose=0)[0]
print(f"Test image {index}: real label {np.argmax(y_test[index])}, prediction {np.argmax(probabilities)}")

# 8. Save the trained network and load it back.
model.save(args.save)
loaded = keras.models.load_model(args.save)
print(f"Saved the model to {args.save} and loaded it back ({loaded.count_params():,} parameters).")
""")
