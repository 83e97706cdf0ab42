"""The stop decision: a pure function of what a trial has reported.

`train()` calls `decide` once at every evaluation and puts the answer in its report
(`stop_status`, `stop_reason`); the Ray stopper, the results callback, the progress table,
`raydiff train` and the benchmarks read those fields and never decide again. Onset is the one
rule of `raydiff.metrics.onset.mem_onset`, so a stop here means the trial's τ_mem.
"""

from __future__ import annotations

import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from raydiff.metrics.onset import mem_onset

if typing.TYPE_CHECKING:  # annotations only: the rule needs just the stop section's values
    from raydiff.config import StopConfig

@dataclass(frozen=True)
class StopDecision:
    status: str  # memorized | budget | diverged (a trial that raised is "error": tune/callback.py)
    reason: str


def decide(result: Mapping[str, Any], stop: "StopConfig") -> StopDecision | None:
    """Why this trial must stop now, or None to let it go on.

    `result` carries `diverged` (and `diverged_step`), the evaluation history (`history_steps`,
    `history_mem_frac`), `step` and `budget_steps`. Order matters: a diverged trial is diverged
    even if it had memorized; an onset seen at the last evaluation of the budget is an onset.
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


def reported(result: Mapping[str, Any]) -> StopDecision | None:
    """The decision a report carries (None: the trial goes on, or the report is not a decision)."""
    status = result.get("stop_status")
    return StopDecision(status, result.get("stop_reason") or "") if status else None


def final_status(result: Mapping[str, Any]) -> StopDecision:
    """How a trial that ended without an error ended, from its last report. A trial whose function
    returned without a decision in its last report spent its budget."""
    return reported(result) or StopDecision("budget", f"step budget of {result.get('budget_steps')} spent without onset")


def stop_fields(decision: StopDecision | None) -> dict[str, str | None]:
    """The decision as the report's fields."""
    return {"stop_status": decision.status if decision else None, "stop_reason": decision.reason if decision else None}
