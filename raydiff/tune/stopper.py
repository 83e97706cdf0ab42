"""The memorization-onset stopper for Ray Tune.

It decides nothing itself: `train()` computes the stop decision at every evaluation
(`raydiff.metrics.stop.decide`) and reports it as `stop_status`; the stopper stops the trial
whose report carries one. So a stopper rebuilt after an experiment restore, or unpickled on
another driver, stops exactly as the original would, and holds no state.
"""

from __future__ import annotations

from typing import Any

from ray import tune

from raydiff.metrics.stop import reported


class MemorizationOnsetStopper(tune.Stopper):
    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        return reported(result) is not None

    def stop_all(self) -> bool:
        return False
