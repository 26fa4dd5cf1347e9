"""What every training job shares: its records, its state and following them as they arrive.

training.TrainingJob (a run in this process) and worker.WorkerJob (a run in the training process) both
build on it; runs.Runs uses either through the same attributes. Importing it costs nothing (no Keras).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any


class RecordedJob:
    """Records accumulate in `records`, ending with a "done" record; `status` is "running" until then."""

    def __init__(self, config):
        self.config = config
        self.records: list[dict[str, Any]] = []
        self.status = "running"  # then "finished", "stopped" or "failed"
        self.message = ""
        self.epoch = 0
        self._changed = threading.Condition()
        self._stop_requested = threading.Event()

    @property
    def running(self) -> bool:
        return self.status == "running"

    @property
    def result(self) -> dict[str, Any] | None:
        """The final "done" record, once the job has ended."""
        return None if self.running else self.records[-1]

    def follow(self, start: int = 0, timeout: float | None = None) -> Iterator[dict[str, Any]]:
        """Yield records from index `start` as they arrive, ending after the "done" record."""
        index = start
        while True:
            with self._changed:
                self._changed.wait_for(lambda i=index: len(self.records) > i or not self.running, timeout)
                batch = self.records[index:]
                ended = not self.running
            yield from batch
            index += len(batch)
            if ended and index >= len(self.records):
                return

    def _emit(self, record: dict[str, Any]) -> None:
        """Add a record; a "done" record also ends the job with its status and message."""
        with self._changed:
            self.records.append(record)
            if record.get("epoch"):
                self.epoch = record["epoch"]
            if record["type"] == "done":
                self.message = record.get("message", "")
                self.status = record.get("status", "failed")
            self._changed.notify_all()
