"""Model builders and the one place where compile settings live."""

import keras
from keras import layers

NUM_CLASSES = 10
IMAGE_SHAPE = (28, 28)


def build_mlp(dtype: str | None = None) -> keras.Model:
    """The tutorial's network, layer for layer (`dtype` as for build_cnn)."""
    return keras.Sequential(
        [
            keras.Input(shape=IMAGE_SHAPE),
            layers.Flatten(dtype=dtype),
            layers.Dense(128, activation="relu", dtype=dtype),
            layers.Dense(64, activation="relu", dtype=dtype),
            layers.Dense(NUM_CLASSES, activation="softmax"),
        ],
        name="mlp",
    )


def build_cnn(dtype: str | None = None) -> keras.Model:
    """Two conv blocks with batch normalisation; 99.5% on MNIST in the preset's 12 epochs.

    `dtype`: a Keras dtype policy for every layer but the softmax (training_dtype); None: float32.
    """
    first, second = CNN_FILTERS
    return keras.Sequential(
        [
            keras.Input(shape=IMAGE_SHAPE),
            layers.Reshape((*IMAGE_SHAPE, 1), dtype=dtype),
            *_conv_block(first, dtype),  # 28 -> 26 -> 13
            *_conv_block(second, dtype),  # 13 -> 11 -> 5
            layers.Flatten(dtype=dtype),
            layers.Dense(128, use_bias=False, dtype=dtype),
            layers.BatchNormalization(momentum=BN_MOMENTUM, dtype=dtype),
            layers.Activation("relu", dtype=dtype),
            layers.Dropout(0.3, dtype=dtype),
            # The probabilities and the loss stay float32 whatever the policy.
            layers.Dense(NUM_CLASSES, activation="softmax"),
        ],
        name="cnn",
    )


# Filters of the two conv blocks: 24 and 48 take 0.76x the CPU time of 32 and 64 (bfloat16); with the
# clean last epochs (training.clean_epochs) they keep 99.5% (BENCHMARKS.md, "Training faster").
CNN_FILTERS = (24, 48)


# Keras' default 0.99 leaves a short run (a few hundred steps) with moving statistics still close to
# their initial values and its test accuracy near chance; 0.9 settles within about 50 steps.
BN_MOMENTUM = 0.9


def _conv_block(filters: int, dtype: str | None = None) -> list:
    # Unpadded ("valid") convolutions: fewer positions to compute than "same" ones, at the same accuracy.
    # Pooling comes straight after the convolution, so batch normalisation and ReLU touch a quarter of
    # the positions (ReLU commutes with max; so does batch norm's per-channel scale while it stays
    # positive). Measured on 2 cores: 5.2 s of CPU per augmented epoch on 20,000 images, against 8.7 s
    # with pooling last.
    return [
        layers.Conv2D(filters, 3, use_bias=False, dtype=dtype),
        layers.MaxPooling2D(dtype=dtype),
        layers.BatchNormalization(momentum=BN_MOMENTUM, dtype=dtype),
        layers.Activation("relu", dtype=dtype),
    ]


def with_augmentation(model: keras.Model) -> keras.Model:
    """`model` behind random shifts and rotations, for training only, that a callback can switch off
    (`augmentation_switch`; training.clean_epochs: the run's last epochs see the images as they are).

    The augmentation stays outside the network itself: Keras' random layers augment whenever they are
    called without `training=False`, and a saved model must never do that.
    """
    shifts_and_turns = keras.Sequential(
        [
            keras.Input(shape=IMAGE_SHAPE),
            layers.Reshape((*IMAGE_SHAPE, 1)),
            layers.RandomRotation(0.03, fill_mode="constant"),
            layers.RandomTranslation(0.08, 0.08, fill_mode="constant"),
            layers.Reshape(IMAGE_SHAPE),
        ],
        name="shifts_and_turns",
    )
    return keras.Sequential(
        [keras.Input(shape=IMAGE_SHAPE), WhileOn(shifts_and_turns, name="augmentation"), model],
        name=f"{model.name}_augmented",
    )


class WhileOn(layers.Layer):
    """Its `inner` layers while training and switched on (`on`, a variable: switching needs no new trace);
    the input as it is otherwise."""

    def __init__(self, inner: keras.Layer, **kwargs):
        super().__init__(**kwargs)
        self.inner = inner
        self.on = self.add_weight(shape=(), initializer="ones", trainable=False, name="on")

    def call(self, inputs, training=False):
        if not training:
            return inputs
        return keras.ops.cond(self.on > 0, lambda: self.inner(inputs, training=True), lambda: inputs)


def augmentation_switch(trainer: keras.Model) -> "WhileOn | None":
    """The switch of the augmentation in `trainer` (with_augmentation's, however deeply wrapped); None."""
    return next((layer for layer in all_layers(trainer) if isinstance(layer, WhileOn)), None)


def all_layers(model: keras.Model) -> list:
    """The layers of `model`, those inside nested models included."""
    found, pending = [], list(model.layers)
    while pending:
        layer = pending.pop()
        found.append(layer)
        pending += getattr(layer, "layers", [])
    return found


ARCHITECTURES = {"mlp": build_mlp, "cnn": build_cnn}
# Networks that train in mixed bfloat16 where the CPU computes it natively (oneDNN's AVX512-BF16 or AMX
# kernels): an augmented CNN epoch takes 0.86x the CPU time of a float32 one. The MLP at batch 32 is bound
# by per-step overhead, not arithmetic. Weights stay float32, and the model a run keeps and saves is
# rebuilt in float32 with them (training.float32_copy). Elsewhere bfloat16 would be emulated, slower than
# float32: float32 there.
MIXED_PRECISION = {"mlp": False, "cnn": True}


def native_bfloat16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether this CPU has bfloat16 arithmetic (the avx512_bf16 or amx_bf16 flag); False where unknown."""
    try:
        with open(cpuinfo) as file:
            flags = next((line for line in file if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def training_dtype(arch: str) -> str | None:
    """The dtype policy a run of `arch` trains under here: "mixed_bfloat16" or None (float32)."""
    return "mixed_bfloat16" if MIXED_PRECISION.get(arch) and native_bfloat16() else None


# XLA cuts the MLP's epoch at batch 32 by about a third on a 2-core CPU; it slows the augmented CNN,
# whose random image transforms XLA cannot fuse.
JIT_COMPILE = {"mlp": True, "cnn": False}
# Keras runs this many samples per call into TensorFlow (steps_per_execution; for an XLA-compiled network,
# a stack of that many batches, training.StackedSteps), so small batches do not pay Python's per-step
# overhead; a stop lands after at most one such call.
SAMPLES_PER_EXECUTION = 1024


def steps_per_execution(batch_size: int) -> int:
    """Steps per TensorFlow call for `batch_size`: about SAMPLES_PER_EXECUTION samples, 1 to 32 steps."""
    return max(1, min(32, SAMPLES_PER_EXECUTION // batch_size))


def compile_model(
    model: keras.Model,
    learning_rate: float = 1e-3,
    *,
    schedule: str = "constant",
    total_steps: int | None = None,
    label_smoothing: float = 0.0,
    steps_per_execution: int = 1,
    jit_compile: bool = False,
) -> keras.Model:
    """Compile with Adam and categorical cross-entropy on one-hot labels, as the tutorial does."""
    if schedule == "constant":
        rate = learning_rate
    elif schedule == "cosine":
        if not total_steps or total_steps < 1:
            raise ValueError(f"schedule='cosine' needs total_steps >= 1, received {total_steps!r}")
        warmup = max(1, total_steps // 20)
        rate = keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=learning_rate / 10,
            decay_steps=max(1, total_steps - warmup),
            warmup_target=learning_rate,
            warmup_steps=warmup,
            alpha=0.01,
        )
    else:
        raise ValueError(f"schedule must be 'constant' or 'cosine', received {schedule!r}")
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=rate),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing),
        metrics=["accuracy"],
        steps_per_execution=steps_per_execution,
        jit_compile=jit_compile,
    )
    return model


def build_model(arch: str, learning_rate: float = 1e-3, **compile_options) -> keras.Model:
    """Build and compile the network registered under `arch`."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"arch must be one of {sorted(ARCHITECTURES)}, received {arch!r}")
    return compile_model(ARCHITECTURES[arch](), learning_rate, **compile_options)
