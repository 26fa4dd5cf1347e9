import dataclasses

import pytest

from mnist_core.config import ARCH_NAMES, LIMITS, PRESETS, TrainConfig


def test_defaults_are_the_tutorial():
    config = TrainConfig()
    assert (config.arch, config.epochs, config.batch_size, config.learning_rate) == ("mlp", 10, 32, 0.001)
    assert config.train_size == 60_000 and not config.augment and config.schedule == "constant"
    assert config.drawn_share == 0  # MNIST alone, as the tutorial
    assert PRESETS["mlp"] == config


def test_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        TrainConfig().epochs = 3


def test_whole_floats_from_sliders_become_ints():
    config = TrainConfig(epochs=3.0, batch_size=64.0)
    assert config.epochs == 3 and isinstance(config.epochs, int)
    assert config.batch_size == 64 and isinstance(config.batch_size, int)


@pytest.mark.parametrize(
    ("values", "fragment"),
    [
        ({"epochs": 0}, "epochs received 0"),
        ({"epochs": 101}, "[1, 100]"),
        ({"epochs": "5"}, "expected a number"),
        ({"epochs": 2.5}, "whole number"),
        ({"epochs": True}, "expected a number"),
        ({"batch_size": 4097}, "[1, 4096]"),
        ({"learning_rate": 0}, "(0.0, 1.0]"),
        ({"learning_rate": 1.5}, "(0.0, 1.0]"),
        ({"learning_rate": float("nan")}, "learning_rate received nan"),
        ({"learning_rate": None}, "expected a number"),
        ({"train_size": 10}, "[100, 60000]"),
        ({"arch": "resnet"}, "expected one of ['mlp', 'cnn']"),
        ({"schedule": "linear"}, "expected one of"),
        ({"augment": "yes"}, "true or false"),
        ({"drawn_share": 0.6}, "drawn_share received 0.6 (float); expected a value in [0.0, 0.5]"),
        ({"drawn_share": -0.1}, "[0.0, 0.5]"),
        ({"epochs": [1]}, "epochs received [1] (list); expected a number"),
        ({"batch_size": {"a": 1}}, "batch_size received {'a': 1} (dict)"),
    ],
)
def test_bad_values_say_what_was_received_and_expected(values, fragment):
    with pytest.raises(ValueError) as error:
        TrainConfig(**values)
    assert fragment in str(error.value)


def test_round_trip_through_dict():
    config = TrainConfig.preset("cnn", epochs=2)
    assert TrainConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="unknown TrainConfig fields"):
        TrainConfig.from_dict({**config.to_dict(), "lr": 1})


def test_presets_and_limits_agree_with_the_registry():
    from mnist_core.models import ARCHITECTURES

    assert set(ARCH_NAMES) == set(ARCHITECTURES) == set(PRESETS)
    assert LIMITS["epochs"] == (1, 100) and LIMITS["batch_size"] == (1, 4096)
    for preset in PRESETS.values():
        for name, (low, high) in LIMITS.items():
            assert low <= getattr(preset, name) <= high
    with pytest.raises(ValueError, match="arch must be one of"):
        TrainConfig.preset("svm")


def test_huge_values_are_not_echoed_back_in_full():
    for values in ({"epochs": "9" * 100_000}, {"arch": "x" * 100_000}):
        with pytest.raises(ValueError) as error:
            TrainConfig(**values)
        assert len(str(error.value)) < 300
    for arch in (["mlp"], None, "x" * 100_000):
        with pytest.raises(ValueError, match="arch must be one of") as error:
            TrainConfig.preset(arch)
        assert len(str(error.value)) < 300
