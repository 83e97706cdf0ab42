"""The stop decision: a pure function of what a trial has reported.

`train()` calls `decide` once at every evaluation and puts the answer in its report
(`stop_status`, `stop_reason`); the Ray stopper, the results callback, the progress table,
`raydiff train` and the benchmarks read those fields and never decide again. Onset is the one
rule of `raydiff.metrics.onset.mem_onset`, so a stop here means the trial's τ_mem.
"""

from __future__ import annotations

import math
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from raydiff import measures
from raydiff.metrics.onset import loss_divergence_onset, mem_onset

if typing.TYPE_CHECKING:  # annotations only: the rule needs just the stop section's values
    from raydiff.config import StopConfig

@dataclass(frozen=True)
class StopDecision:
    status: str  # memorized | budget | diverged (a trial that raised is "error": tune/callback.py)
    reason: str


def onsets(result: Mapping[str, Any], stop: "StopConfig") -> dict[str, int | None]:
    """τ by every onset definition (raydiff/measures' registry) whose series the result carries
    (None: not fired yet), in the registry's order.

    `history_pixel` falls back to `history_mem_frac` in a report that carries no named
    memorization series (one built by hand, or before they existed): there mem_frac is pixel's."""
    steps = result.get("history_steps") or ()
    out: dict[str, int | None] = {}
    for d in measures.definitions():
        if d.rule == "loss_divergence":
            train, test = (result.get(k) for k in d.series)
            if train is not None and test is not None:
                refined = result.get("history_refined")  # refinement's snapshot rows: they narrow, never confirm
                out[d.name] = loss_divergence_onset(steps, train, test, stop.loss_gap, stop.loss_window, refined)
            continue
        fracs = _ratio_series(result, d)
        if fracs is not None:
            out[d.name] = mem_onset(steps, fracs, stop.mem_frac_threshold, stop.patience)
    return out


def stop_definitions(found: Mapping[str, int | None], stop: "StopConfig") -> tuple[str, ...]:
    """`stop.on`, or by default the trial's first memorization test (the registry's order: pixel,
    else the first feature test it measured)."""
    if stop.on:
        return tuple(stop.on)
    ratio = [d.name for d in measures.definitions() if d.rule == "ratio" and not d.raw and d.name in found]
    return (ratio[0],) if ratio else ("pixel",)


def stop_onset(found: Mapping[str, int | None], stop: "StopConfig") -> int | None:
    """The stop rule's τ: once every definition it names has fired, the latest of them."""
    taus = [found.get(d) for d in stop_definitions(found, stop)]
    return None if any(t is None for t in taus) else max(taus)


def decide(result: Mapping[str, Any], stop: "StopConfig", found: Mapping[str, int | None] | None = None) -> StopDecision | None:
    """Why this trial must stop now, or None to let it go on.

    `result` carries `diverged` (and `diverged_step`), the evaluation history (`history_steps`
    and the series of each onset definition: raydiff/measures' `Definition.series`), `step` and `budget_steps`. Order
    matters: a diverged trial is diverged even if it had memorized; once every definition of
    `stop.on` has fired, the trial runs `continue_for` × τ more steps (or to its budget) and is
    memorized; an onset seen at the last evaluation of the budget is an onset. `found`: the
    result's onsets (`onsets(result, stop)`) where the caller has computed them already.
    """
    if result.get("diverged"):
        return StopDecision("diverged", f"non-finite training loss at step {result.get('diverged_step')}")
    step, budget = result.get("step"), result.get("budget_steps")
    found = onsets(result, stop) if found is None else found
    tau = stop_onset(found, stop)
    if tau is not None:
        until = stop_step(tau, stop.continue_for)
        at_budget = step is not None and budget is not None and step >= budget
        if step is not None and (step >= until or at_budget):
            rule = f"mem_frac ≥ {stop.mem_frac_threshold:g} at {stop.patience} consecutive evaluations"
            more = f", then {stop.continue_for:g} × τ more steps" if stop.continue_for else ""
            names = stop_definitions(found, stop)
            if not stop.on:  # the trial's own memorization test, worded as it always was
                return StopDecision("memorized", f"{rule} from step {tau}{more}")
            what = ", ".join(f"{d} from step {found[d]}" for d in names)
            return StopDecision("memorized", f"every onset of stop.on fired ({what}){more}")
    if step is not None and budget is not None and step >= budget:
        return StopDecision("budget", f"step budget of {budget} spent without onset")
    return None


def stop_step(tau: int, continue_for: float) -> int:
    """Where a trial that fired at τ stops: τ + ⌈continue_for · τ⌉ (stop.continue_for)."""
    return tau + math.ceil(continue_for * tau)


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


def onset_in_sight(
    result: Mapping[str, Any], stop: "StopConfig", fraction: float | None, found: Mapping[str, int | None] | None = None
) -> bool:
    """An onset awaits confirmation, or (with `fraction`) a definition the stop rule waits on has
    not fired and its latest measured value is at least `fraction` × the threshold. `found`: the
    result's onsets, where the caller has them."""
    for values in _unfired(result, stop, found):
        if 0 < _trailing_run(values, stop.mem_frac_threshold) < stop.patience:
            return True
        if fraction is not None and values and _at_least(values[-1], fraction * stop.mem_frac_threshold):
            return True
    return False


def awaiting_confirmation(result: Mapping[str, Any], stop: "StopConfig") -> bool:
    """An onset has started but is not yet confirmed: for a ratio-test definition the stop rule
    waits on and that has not fired, the latest measured values are a run of 1 … patience − 1 at or
    above the threshold. `train()` then evaluates again after the smallest gap, not the next
    scheduled one, so `stop.patience` costs a few steps rather than a geometric gap (issue 15)."""
    return any(0 < _trailing_run(v, stop.mem_frac_threshold) < stop.patience for v in _unfired(result, stop))


def _ratio_series(result: Mapping[str, Any], d: "measures.Definition") -> list | None:
    """The series a ratio-test definition reads (None: the report does not carry it).
    `history_pixel` falls back to `history_mem_frac` in a report that carries no named
    memorization series (one built by hand, or before they existed): there mem_frac is pixel's."""
    fracs = result.get(d.series[0])
    if fracs is None and d.name == "pixel" and not any(k.startswith("history_") and k not in PLAIN for k in result):
        fracs = result.get("history_mem_frac")
    return fracs


PLAIN = ("history_steps", "history_mem_frac", "history_train_loss", "history_test_loss", "history_refined")  # not a named memorization series


def _unfired(result: Mapping[str, Any], stop: "StopConfig", found: Mapping[str, int | None] | None = None) -> Iterator[list]:
    """The measured values of each ratio-test definition the stop rule waits on that has not fired."""
    found = onsets(result, stop) if found is None else found
    by_name = {d.name: d for d in measures.definitions()}
    for name in stop_definitions(found, stop):
        d = by_name.get(name)
        if d is not None and d.rule == "ratio" and found.get(name) is None:
            yield [v for v in _ratio_series(result, d) or () if v is not None]


def _at_least(v: Any, bound: float) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v) and v >= bound


def _trailing_run(values: list, threshold: float) -> int:
    """How many of the last values are at or above the threshold (a NaN ends the run)."""
    run = 0
    for v in reversed(values):
        if not _at_least(v, threshold):
            break
        run += 1
    return run
