import numpy as np
import pytest

from mnist_core.models import (
    augmentation_switch,
    build_cnn,
    build_model,
    native_bfloat16,
    training_dtype,
    with_augmentation,
)


def test_mlp_is_the_tutorial_network():
    model = build_model("mlp")
    kinds = [(type(layer).__name__, getattr(layer, "units", None)) for layer in model.layers]
    assert kinds == [("Flatten", None), ("Dense", 128), ("Dense", 64), ("Dense", 10)]
    assert [layer.activation.__name__ for layer in model.layers[1:]] == ["relu", "relu", "softmax"]
    assert model.count_params() == 784 * 128 + 128 + 128 * 64 + 64 + 64 * 10 + 10
    assert type(model.optimizer).__name__ == "Adam"
    assert float(model.optimizer.learning_rate) == pytest.approx(0.001)
    assert model.loss.name == "categorical_crossentropy"


@pytest.mark.parametrize("arch", ["mlp", "cnn"])
def test_shapes_and_probabilities(arch):
    model = build_model(arch)
    assert tuple(model.input_shape) == (None, 28, 28)
    assert tuple(model.output_shape) == (None, 10)
    out = np.asarray(model(np.random.default_rng(0).random((3, 28, 28), dtype=np.float32)))
    assert out.shape == (3, 10)
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-5)


def test_augmentation_wraps_the_network_and_stays_out_of_it():
    network = build_model("cnn")
    trainer = with_augmentation(network)
    x = np.zeros((2, 28, 28), dtype=np.float32)
    x[:, 4:24, 12:16] = 1.0
    # The wrapper augments when called plainly; the network itself never does.
    assert not np.allclose(np.asarray(trainer(x, training=True)), np.asarray(network(x, training=True)))
    np.testing.assert_allclose(np.asarray(network(x)), np.asarray(network(x)), atol=1e-6)
    np.testing.assert_allclose(np.asarray(trainer(x, training=False)), np.asarray(network(x)), atol=1e-6)
    # Switched off (a run's clean last epochs), the wrapper trains on the images as they are.
    augmentation_switch(trainer).on.assign(0.0)
    np.testing.assert_allclose(
        np.asarray(trainer(x, training=True)), np.asarray(network(x, training=True)), atol=1e-6
    )
    assert network.trainable_weights[0] is trainer.trainable_weights[0]


def test_cosine_schedule_warms_up_then_decays():
    model = build_model("cnn", 0.01, schedule="cosine", total_steps=100)
    rate = model.optimizer.learning_rate  # resolved per step by the schedule
    schedule = model.optimizer._learning_rate
    assert float(schedule(0)) < float(schedule(5)) == pytest.approx(0.01)
    assert float(schedule(99)) < 0.001
    assert rate is not None


@pytest.mark.parametrize(
    ("args", "kwargs", "fragment"),
    [
        (("svm",), {}, "arch must be one of ['cnn', 'mlp'], received 'svm'"),
        (("mlp",), {"schedule": "step"}, "schedule must be"),
        (("mlp",), {"schedule": "cosine"}, "needs total_steps"),
    ],
)
def test_bad_arguments(args, kwargs, fragment):
    with pytest.raises(ValueError) as error:
        build_model(*args, **kwargs)
    assert fragment in str(error.value)


def test_a_short_cnn_run_does_not_collapse(mnist):
    # 94 steps of the CNN preset: with Keras' default batch-norm momentum the test accuracy was ~11%.
    from mnist_core.config import TrainConfig
    from mnist_core.training import start_training

    job = start_training(TrainConfig.preset("cnn", epochs=1, train_size=6000, batch_size=64), mnist)
    assert job.wait(300)
    assert job.status == "finished", job.message
    assert job.result["test_accuracy"] > 0.9


def test_bfloat16_is_used_only_where_the_cpu_has_it(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor : 0\nflags : fpu avx2 avx512f avx512_bf16 avx512_vnni\n")
    assert native_bfloat16(cpuinfo)
    cpuinfo.write_text("processor : 0\nflags : fpu avx2 avx512f avx512_vnni\n")
    assert not native_bfloat16(cpuinfo)
    assert not native_bfloat16(tmp_path / "missing")
    assert training_dtype("mlp") is None  # the MLP is bound by per-step overhead: float32 always
    assert training_dtype("cnn") == ("mixed_bfloat16" if native_bfloat16() else None)


def test_a_network_trained_in_mixed_precision_is_kept_in_float32():
    from mnist_core.training import float32_copy

    mixed = build_cnn("mixed_bfloat16")
    x = np.random.default_rng(0).random((4, 28, 28), dtype=np.float32)
    assert mixed.layers[1].compute_dtype == "bfloat16" and mixed(x).dtype == "float32"
    kept = float32_copy(mixed, "cnn")
    assert {layer.dtype_policy.name for layer in kept.layers} == {"float32"}
    for ours, theirs in zip(kept.get_weights(), mixed.get_weights(), strict=True):
        np.testing.assert_array_equal(ours, theirs)
    # The same network: its probabilities within bfloat16's rounding (8 bits of mantissa).
    np.testing.assert_allclose(np.asarray(kept(x)), np.asarray(mixed(x)), atol=0.05)
