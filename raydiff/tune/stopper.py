"""The memorization-onset stopper.

It decides from what the trial reports, never from state of its own: every result carries the
trial's whole evaluation history (`history_steps`, `history_mem_frac`; a few dozen numbers), so a
stopper rebuilt after an experiment restore, or unpickled on another driver, decides exactly as
the original would. The onset rule is `raydiff.metrics.onset.mem_onset`, shared with the trial's
own record and with `raydiff analyze`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ray import tune

from raydiff.config import StopConfig
from raydiff.metrics.onset import mem_onset

STATUSES = ("memorized", "budget", "diverged", "error")


@dataclass(frozen=True)
class StopDecision:
    status: str  # memorized | budget | diverged
    reason: str


def decide(result: dict[str, Any], stop: StopConfig) -> StopDecision | None:
    """Why this trial must stop now, or None to let it go on.

    Order matters: a diverged trial is diverged even if it had memorized; an onset seen at the
    last evaluation of the budget counts as an onset.
    """
    if result.get("diverged"):
        return StopDecision("diverged", f"non-finite training loss at step {result.get('diverged_step')}")
    steps, fracs = result.get("history_steps"), result.get("history_mem_frac")
    if steps and fracs:
        onset = mem_onset(steps, fracs, stop.mem_frac_threshold, stop.patience)
        if onset is not None:
            return StopDecision(
                "memorized",
                f"mem_frac ≥ {stop.mem_frac_threshold:g} at {stop.patience} consecutive evaluations from step {onset}",
            )
    step, budget = result.get("step"), result.get("budget_steps")
    if step is not None and budget is not None and step >= budget:
        return StopDecision("budget", f"step budget of {budget} spent without onset")
    return None


class MemorizationOnsetStopper(tune.Stopper):
    def __init__(self, stop: StopConfig):
        self.stop = stop

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        return decide(result, self.stop) is not None

    def stop_all(self) -> bool:
        return False
