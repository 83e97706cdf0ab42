"""The Ray Tune trainable: a thin wrapper that resolves the trial's config, restores its
checkpoint if Ray hands one back, and runs `raydiff.trial.train` with a reporter that saves the
full training state beside every reported evaluation."""

from __future__ import annotations

import os
import tempfile
from typing import Any

import torch
from ray import tune

from raydiff.config import apply_overrides, experiment_from_dict
from raydiff.trial import train
from raydiff.tune import ray_metrics
from raydiff.tune.callback import overrides_of
from raydiff.tune.stopper import decide

STATE_FILE = "state.pt"
REPORT_FILE = "report.pt"  # the metrics reported with the checkpoint


def for_tune(metrics: dict[str, Any]) -> dict[str, Any]:
    """The report as Ray gets it: lists (the evaluation history) become tuples. Ray's TensorBoard
    logger draws a histogram of every list and has tensorboardX print "NaN or Inf found in input
    tensor" for the history's unmeasured (None/NaN) entries; tuples it leaves alone, and the
    stopper, planner and results callback read either."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in metrics.items()}


def trainable(config: dict[str, Any], base: dict[str, Any], threads: int = 1) -> None:
    cfg = apply_overrides(experiment_from_dict(base), overrides_of(config))
    torch.set_num_threads(max(1, threads))
    state = last = None
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            state = torch.load(os.path.join(d, STATE_FILE), map_location="cpu", weights_only=False)
            if os.path.exists(os.path.join(d, REPORT_FILE)):
                last = torch.load(os.path.join(d, REPORT_FILE), weights_only=False)
    if last is not None and decide(last, cfg.stop) is not None:
        # The checkpoint is the trial's final one (the driver died before Ray recorded the trial
        # as finished): report the same result again instead of training past its stop.
        tune.report(for_tune(last))
        return

    ctx = tune.get_context()
    trial_id, sweep = ctx.get_trial_id() or "", ctx.get_experiment_name() or ""

    def report(metrics: dict[str, Any], state_fn) -> bool:
        ray_metrics.record(metrics, trial_id, sweep)  # dashboard gauges (tune/ray_metrics.py)
        if state_fn is None:
            tune.report(for_tune(metrics))
            return False
        with tempfile.TemporaryDirectory(prefix="raydiff-ckpt-") as d:
            torch.save(state_fn(), os.path.join(d, STATE_FILE))
            torch.save(metrics, os.path.join(d, REPORT_FILE))
            tune.report(for_tune(metrics), checkpoint=tune.Checkpoint.from_directory(d))
        return False  # Ray's stopper ends the trial

    train(cfg, report, state)
