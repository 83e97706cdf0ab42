"""Experiment trackers, asked for by name: `raydiff sweep --log-to tensorboard,mlflow`.

raydiff's own record is the Parquet files; Ray Tune's automatic CSV, JSON and TensorBoardX
loggers are off (TUNE_DISABLE_AUTO_CALLBACK_LOGGERS=1, set by run_sweep): each wrote every report
of every trial again, and tensorboardX complained of each unmeasured metric. `--log-to
tensorboard`, `csv` or `json` brings Ray's back; `mlflow` and `wandb` add Ray's integrations.
None is required: asking for one whose package is not installed is a one-line error before Ray
starts.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from raydiff.errors import UserError

# name → the package it needs (json and csv: none beyond Ray)
LOGGERS = {"tensorboard": "tensorboardX", "csv": "ray", "json": "ray", "mlflow": "mlflow", "wandb": "wandb"}


def parse_log_to(values: list[str] | None) -> tuple[str, ...]:
    """`--log-to mlflow --log-to wandb` or `--log-to mlflow,wandb` → ("mlflow", "wandb")."""
    names: list[str] = []
    for v in values or []:
        for name in filter(None, (p.strip() for p in v.split(","))):
            if name not in LOGGERS:
                raise UserError(f"--log-to: unknown logger {name!r} (allowed: {', '.join(LOGGERS)})")
            if name not in names:
                names.append(name)
    return tuple(names)


def logger_callbacks(names: tuple[str, ...], experiment: str) -> list[Any]:
    """Ray's logger callback for each name; UserError if its package is not installed."""
    out = []
    for name in names:
        if name not in LOGGERS:
            raise UserError(f"--log-to: unknown logger {name!r} (allowed: {', '.join(LOGGERS)})")
        if importlib.util.find_spec(LOGGERS[name]) is None:
            raise UserError(f"--log-to {name} needs the {LOGGERS[name]} package: pip install {LOGGERS[name]}")
        if name in ("tensorboard", "csv", "json"):
            from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback, TBXLoggerCallback

            # each trial folder under <storage>/<sweep>/: events.out.tfevents.*, progress.csv, result.json
            out.append({"tensorboard": TBXLoggerCallback, "csv": CSVLoggerCallback, "json": JsonLoggerCallback}[name]())
        elif name == "mlflow":
            from ray.air.integrations.mlflow import MLflowLoggerCallback

            # tracking URI from $MLFLOW_TRACKING_URI, else ./mlruns; one MLflow run per trial
            out.append(MLflowLoggerCallback(experiment_name=experiment, save_artifact=False))
        else:
            from ray.air.integrations.wandb import WandbLoggerCallback

            # project = the sweep; credentials and mode from wandb's own environment (WANDB_API_KEY, WANDB_MODE)
            out.append(WandbLoggerCallback(project=experiment, log_config=True))
    return out
