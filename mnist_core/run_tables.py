"""Plain columns behind the Train tab: a run's status, its curves, its epochs and the list of runs.

Dicts of lists and JSON-friendly values only; the UI turns them into charts, tables and words.
"""

from __future__ import annotations

import numpy as np

MAX_CURVE_POINTS = 400  # batch points per run and metric; gr.LinePlot thins lines past 1,000 anyway
HISTORY_COLUMNS = (
    "run",
    "network",
    "epochs",
    "batch size",
    "learning rate",
    "training images",
    "status",
    "test accuracy",
    "saved as",
)
EPOCH_COLUMNS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "seconds")


def status(run, queued: tuple[int, float] | None = None) -> dict:
    """A run (or None) as a JSON-friendly dict: phase, position, speed, latest metrics, result.

    `queued`: (place in the queue, seconds until it should start) of a waiting run.
    """
    if run is None:
        return {"run": None, "status": "idle", "updates": 0, "message": "no training run yet"}
    records = list(run.job.records) if run.job is not None else []
    batches = [r for r in records if r["type"] == "batch"]
    epochs = [r for r in records if r["type"] == "epoch"]
    start = next((r for r in records if r["type"] == "start"), {})
    result = {
        "run": run.number,
        # After a stop the core still scores the partial model on the test set before it ends.
        "status": "stopping" if run.phase == "running" and run.stop_requested else run.phase,
        "config": run.config.to_dict(),
        "epochs": run.config.epochs,
        "epoch": run.job.epoch if run.job is not None else 0,
        "steps": start.get("steps"),
        "samples": start.get("samples"),
        "updates": len(batches) + len(epochs),
        "test_accuracy": run.test_accuracy,
        "model": run.model_name,
        "message": run.message,
    }
    if queued is not None:
        result.update(queue_position=queued[0], starts_in_seconds=round(queued[1], 1))
    if batches:
        last = batches[-1]
        result.update({key: last[key] for key in ("step", "loss", "accuracy", "samples_per_second")})
        result.update(progress=last["progress"], eta_seconds=last["eta_seconds"], elapsed=last["elapsed"])
    if epochs:
        result.update(val_loss=epochs[-1]["val_loss"], val_accuracy=epochs[-1]["val_accuracy"])
    if not run.active and not run.waiting:
        result.update(progress=1.0 if run.phase == "finished" else result.get("progress", 0.0), eta_seconds=0)
    return result


def curves(runs: list, compare: bool = False) -> dict[str, dict[str, list]]:
    """Columns (epoch, value, series) for the loss and accuracy charts; all runs when `compare`."""
    charts = {metric: {"epoch": [], "value": [], "series": []} for metric in ("loss", "accuracy")}
    for run in runs if compare else runs[-1:]:
        prefix = f"run {run.number} " if compare else ""
        records = list(run.job.records) if run.job is not None else []
        batches = thin([r for r in records if r["type"] == "batch"], MAX_CURVE_POINTS)
        epochs = [r for r in records if r["type"] == "epoch"]
        for metric, chart in charts.items():
            for r in batches:
                chart["epoch"].append(r["epoch"] - 1 + r["step"] / r["steps"])
                chart["value"].append(float(r[metric]))
                chart["series"].append(f"{prefix}train")
            for r in epochs:
                chart["epoch"].append(float(r["epoch"]))
                chart["value"].append(float(r[f"val_{metric}"]))
                chart["series"].append(f"{prefix}validation")
    return charts


def epoch_table(run) -> dict[str, list]:
    """Per-epoch metrics of a run (or None: no rows)."""
    epochs = [r for r in (run.job.records if run and run.job else []) if r["type"] == "epoch"]
    table = {"epoch": [r["epoch"] for r in epochs]}
    table.update({key: [round(r[key], 4) for r in epochs] for key in EPOCH_COLUMNS[1:-1]})
    table["seconds"] = [round(r["epoch_seconds"], 1) for r in epochs]
    return table


def history_table(runs: list) -> dict[str, list]:
    """One row per run, newest first (a visitor's own runs, or every run for the class board)."""
    rows = [
        {
            "run": run.number,
            "network": run.config.arch.upper(),
            "epochs": run.config.epochs,
            "batch size": run.config.batch_size,
            "learning rate": run.config.learning_rate,
            "training images": run.config.train_size,
            "status": run.phase,
            "test accuracy": None if run.test_accuracy is None else round(run.test_accuracy, 4),
            "saved as": run.model_name or "",
        }
        for run in reversed(runs)
    ]
    return {column: [row[column] for row in rows] for column in HISTORY_COLUMNS}


BOARD_COLUMNS = (
    "run",
    "who",
    "network",
    "epochs",
    "batch size",
    "training images",
    "status",
    "test accuracy",
)


def board_table(runs: list) -> dict[str, list]:
    """The class board: every run on the server, newest first; "who" only when the visitor typed a name."""
    rows = [
        {
            "run": run.number,
            "who": run.owner_name,
            "network": run.config.arch.upper(),
            "epochs": run.config.epochs,
            "batch size": run.config.batch_size,
            "training images": run.config.train_size,
            "status": run.phase,
            "test accuracy": None if run.test_accuracy is None else round(run.test_accuracy, 4),
        }
        for run in reversed(runs)
    ]
    return {column: [row[column] for row in rows] for column in BOARD_COLUMNS}


def thin(records: list, limit: int) -> list:
    """At most `limit` records, evenly spread, always keeping the last."""
    if len(records) <= limit:
        return records
    keep = np.unique(np.linspace(0, len(records) - 1, limit).round().astype(int))
    return [records[i] for i in keep]
