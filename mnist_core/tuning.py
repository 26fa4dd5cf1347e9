"""A fine-tuning run: a visitor's set and their active model, trained like any run (the training queue,
the worker process, the live records), with finetune's recipe; it reports before and after."""

from __future__ import annotations

from typing import Any

from . import finetune
from .collection import TuneSpec
from .config import TrainConfig
from .training import TrainingJob, _Stream

VALIDATION_IMAGES = 2000  # of the MNIST test set, scored after each epoch for the live curves (~0.4 s)


class FineTuneJob(TrainingJob):
    """TrainingJob's records, stop and save, for a copy of `spec`'s base model tuned on its drawings."""

    _held_out_fit = False  # its base model may have trained on every MNIST training image

    def __init__(self, config: TrainConfig, data, spec: TuneSpec):
        super().__init__(config, data)
        self.spec = spec

    def _fit(self, started: float, done: dict[str, Any]) -> None:
        from .store import load_model

        spec, config, data = self.spec, self.config, self._data
        base, _ = load_model(spec.base_path)
        own_before = finetune.accuracy(base, spec.x_test, spec.y_test)
        steps = finetune.steps(len(spec.y_train), config)
        self._emit(
            {
                "type": "start",
                "config": config.to_dict(),
                "steps": steps,
                "samples": steps * config.batch_size,
                "drawn_samples": 0,
                "tune": {"base_model": spec.base_name, "drawings": len(spec.y_train)},
            }
        )
        validation = (data.x_test[:VALIDATION_IMAGES], data.y_test[:VALIDATION_IMAGES])
        stream = _Stream(
            self, steps, started, samples=steps * config.batch_size, validation_samples=len(validation[1])
        )
        self.model = finetune.fine_tune(
            base,
            spec.x_train,
            spec.y_train,
            data,
            seed=config.seed,
            config=config,
            callbacks=[stream],
            validation_data=validation,
        )
        if not self._fit_ended(stream, done):
            return
        done["tune"] = {
            "base_model": spec.base_name,
            "drawings_per_digit": spec.drawings_per_digit,
            "trained_on": len(spec.y_train),
            "own_measured_on": len(spec.y_test),
            "own_before": own_before,
            "own_after": finetune.accuracy(self.model, spec.x_test, spec.y_test),
            "mnist_before": spec.base_test_accuracy,
        }
