"""Optional experiment trackers, through Ray Tune's logger callbacks.

TensorBoard needs nothing from us: Ray adds its CSV, JSON and TensorBoardX loggers to every
run whose callbacks do not already include them (unless TUNE_DISABLE_AUTO_CALLBACK_LOGGERS=1),
so with tensorboardX installed each trial folder under <storage>/<sweep>/ holds event files:
`tensorboard --logdir <storage>/<sweep>`. MLflow and Weights & Biases are asked for by name
(`raydiff sweep --log-to mlflow,wandb`) and are never required: asking for one that is not
installed is a one-line error before Ray starts.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from raydiff.errors import UserError

LOGGERS = {"mlflow": "mlflow", "wandb": "wandb"}  # name → the package it needs


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
        if name == "mlflow":
            from ray.air.integrations.mlflow import MLflowLoggerCallback

            # tracking URI from $MLFLOW_TRACKING_URI, else ./mlruns; one MLflow run per trial
            out.append(MLflowLoggerCallback(experiment_name=experiment, save_artifact=False))
        else:
            from ray.air.integrations.wandb import WandbLoggerCallback

            # project = the sweep; credentials and mode from wandb's own environment (WANDB_API_KEY, WANDB_MODE)
            out.append(WandbLoggerCallback(project=experiment, log_config=True))
    return out
