"""Experiment trackers, asked for by name: `raydiff sweep --log-to tensorboard,mlflow`.

raydiff's own record is the Parquet files; Ray Tune's automatic CSV, JSON and TensorBoardX
loggers are off (TUNE_DISABLE_AUTO_CALLBACK_LOGGERS=1, set by run_sweep): each wrote every report
of every trial again, and tensorboardX complained of each unmeasured metric. `--log-to
tensorboard`, `csv` or `json` brings Ray's back; `mlflow` and `wandb` add trackers: one run per
trial, with the trial's resolved config as its parameters and every evaluation's numbers as
metrics at its optimizer step (MLflow: `MLflowTracker`; W&B: Ray's WandbLoggerCallback, a run per
trial in the project named after the sweep).

None is required. Asking for one whose package is not installed, or whose server does not answer
or refuses, is a one-line error before Ray starts (raydiff.trackers.check_tracker). A tracker that
fails once the sweep runs is one warning line and is dropped (`Guarded`): the sweep goes on, and
its Parquet never depends on a tracker.
"""

from __future__ import annotations

import importlib.util
import math
import os
import sys
from collections.abc import Callable
from numbers import Number
from typing import Any

from ray import tune

from raydiff.errors import UserError
from raydiff.trackers import LOGGERS, check_tracker, parse_log_to

__all__ = ["LOGGERS", "Guarded", "logger_callbacks", "mlflow_tracker", "parse_log_to"]

def logger_callbacks(names: tuple[str, ...], experiment: str, params_of: Callable[[dict], dict] | None = None) -> list[Any]:
    """A Tune callback for each name, each behind `Guarded`; UserError if its package is not
    installed or its server does not take runs. `params_of(trial.config)`: the parameters a
    tracker records for a trial (default: the trial's Tune config)."""
    out = []
    for name in names:
        if name not in LOGGERS:
            raise UserError(f"--log-to: unknown logger {name!r} (allowed: {', '.join(LOGGERS)})")
        if importlib.util.find_spec(LOGGERS[name]) is None:
            raise UserError(f"--log-to {name} needs the {LOGGERS[name]} package: pip install {LOGGERS[name]}")
        check_tracker(name)
        if name in ("tensorboard", "csv", "json"):
            from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback, TBXLoggerCallback

            # each trial folder under <storage>/<sweep>/: events.out.tfevents.*, progress.csv, result.json
            cb = {"tensorboard": TBXLoggerCallback, "csv": CSVLoggerCallback, "json": JsonLoggerCallback}[name]()
        elif name == "mlflow":
            # a server that goes down mid-sweep: one short try per request, then `Guarded` drops it
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
            cb = mlflow_tracker(experiment, params_of)
        else:
            from ray.air.integrations.wandb import WandbLoggerCallback

            # project = the sweep; credentials and mode from wandb's own environment (WANDB_API_KEY, WANDB_MODE)
            cb = WandbLoggerCallback(project=experiment, log_config=True)
        out.append(Guarded(cb, name))
    return out


def numbers(result: dict[str, Any]) -> dict[str, float]:
    """The numeric scalars of a trial's report (histories, text and None left out; bools as 0/1)."""
    return {k: float(v) for k, v in result.items() if isinstance(v, Number) and not (isinstance(v, float) and math.isnan(v))}


def flat(d: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """A nested config → {"data.n_train": "64", ...} (lists as their text)."""
    out: dict[str, str] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flat(v, key + "."))
        else:
            out[key] = str(v)[:500]  # MLflow's limit on a parameter's value
    return out


def mlflow_tracker(experiment: str, params_of: Callable[[dict], dict] | None):
    """Ray's MLflowLoggerCallback (tracking URI from $MLFLOW_TRACKING_URI, else ./mlruns; the
    experiment is the sweep), logging in batches: a trial's parameters once, each evaluation's
    numbers as one request at its optimizer step."""
    from mlflow.entities import Metric, Param
    from ray.air.integrations.mlflow import MLflowLoggerCallback

    class MLflowTracker(MLflowLoggerCallback):
        def log_trial_start(self, trial):
            if trial in self._trial_runs:
                return  # restored or resumed: its parameters are logged
            run = self.mlflow_util.start_run(tags={**self.tags, "trial_name": str(trial)}, run_name=str(trial))
            self._trial_runs[trial] = run.info.run_id
            params = flat(params_of(trial.config) if params_of else trial.config)
            items = [Param(k, v) for k, v in sorted(params.items())]
            client = self.mlflow_util._get_client()
            for i in range(0, len(items), 100):  # MLflow takes ≤ 100 parameters a request
                client.log_batch(run.info.run_id, params=items[i : i + 100])

        def log_trial_result(self, iteration, trial, result):
            step = int(result.get("step") or iteration)
            stamp = int(result.get("timestamp", 0) * 1000)
            metrics = [Metric(k, v, stamp, step) for k, v in numbers(result).items()]
            client = self.mlflow_util._get_client()
            for i in range(0, len(metrics), 1000):
                client.log_batch(self._trial_runs[trial], metrics=metrics[i : i + 1000])

    return MLflowTracker(experiment_name=experiment, save_artifact=False)


class Guarded(tune.Callback):
    """A tracker's callback that cannot stop the sweep: the first exception from any of its hooks
    is one warning line on stderr, and the tracker is dropped for the rest of the sweep."""

    HOOKS = ("setup", "on_step_begin", "on_step_end", "on_trial_start", "on_trial_restore", "on_trial_save",
             "on_trial_result", "on_trial_complete", "on_trial_recover", "on_trial_error", "on_checkpoint",
             "on_experiment_end")  # fmt: skip

    def __init__(self, inner: Any, name: str):
        self.inner = inner
        self.name = name
        self.failed: str | None = None

    def _call(self, hook: str, *args, **kwargs) -> None:
        if self.failed is not None:
            return
        try:
            getattr(self.inner, hook)(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - whatever the tracker raises, the sweep goes on
            text = str(e).strip().splitlines()[0][:300] if str(e).strip() else ""
            self.failed = f"{type(e).__name__}: {text}" if text else type(e).__name__
            print(f"raydiff: warning: --log-to {self.name} stopped ({self.failed}); the sweep goes on without it,"
                  " its results (Parquet) are complete", file=sys.stderr, flush=True)  # fmt: skip

    def get_state(self):
        return self.inner.get_state() if self.failed is None else None

    def set_state(self, state):
        if state is not None:
            self.inner.set_state(state)


def _hook(name: str):
    def call(self, *args, **kwargs):
        self._call(name, *args, **kwargs)

    call.__name__ = name
    return call


for _name in Guarded.HOOKS:
    setattr(Guarded, _name, _hook(_name))
