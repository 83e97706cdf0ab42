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
from raydiff.tune.callback import overrides_of

STATE_FILE = "state.pt"


def trainable(config: dict[str, Any], base: dict[str, Any], threads: int = 1) -> None:
    cfg = apply_overrides(experiment_from_dict(base), overrides_of(config))
    torch.set_num_threads(max(1, threads))
    state = None
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            state = torch.load(os.path.join(d, STATE_FILE), map_location="cpu", weights_only=False)

    def report(metrics: dict[str, Any], state_fn) -> bool:
        if state_fn is None:
            tune.report(metrics)
            return False
        with tempfile.TemporaryDirectory(prefix="raydiff-ckpt-") as d:
            torch.save(state_fn(), os.path.join(d, STATE_FILE))
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))
        return False  # Ray's stopper ends the trial

    train(cfg, report, state)
