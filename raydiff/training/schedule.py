"""When a trial evaluates: its cadence (uniform or geometric), the evaluations brought forward
while an onset is in sight or awaits confirmation, the fidelity-only evaluations' schedule, and the
snapshot steps refinement may look at. Pure functions of the config and the history (no torch), so
a restored trial resumes the same steps and the dry run can simulate a trial's evaluations."""

from __future__ import annotations

from typing import Any

from raydiff.config import ExperimentConfig
from raydiff.metrics.stop import onset_in_sight, stop_step
from raydiff.training.reports import Onsets


def eval_schedule(cfg: ExperimentConfig, budget: int) -> list[int]:
    """The steps at which to evaluate, ascending, always ending at the budget.

    uniform: every k steps. geometric: the gap grows by `geometric_ratio` each time (never below
    k), since onset times scale with N: a fixed relative resolution for a fraction of the evals.
    """
    return spaced_steps(cfg, cfg.eval_every_steps, budget) + [budget]


def upcoming_evaluations(
    cfg: ExperimentConfig, step: int, history: list[dict[str, Any]], schedule: list[int] | None = None, onset: Onsets | None = None,
) -> list[int]:  # fmt: skip
    """The evaluations still to come after `step` (`schedule`, else the configured ones). While an
    onset awaits its confirming evaluations, or is in sight (eval.approach_fraction; see
    metrics/stop.onset_in_sight), the next one comes after the smallest gap (eval.every_steps),
    not at the next scheduled step: patience costs a few steps, not a geometric gap. A pure
    function of the history, so a trial restored from a checkpoint resumes the same steps."""
    if schedule is None:
        schedule = [s for s in eval_schedule(cfg, cfg.budget_steps) if s > step]
    if not schedule:
        return schedule
    onset = onset or Onsets.of(cfg, history)  # the last evaluation's, where the loop has them
    if onset.tau is not None and cfg.stop.continue_for:  # the stop comes exactly at τ + continue_for × τ
        until = stop_step(onset.tau, cfg.stop.continue_for)
        return [until, *schedule] if step < until < schedule[0] else schedule
    soon = step + cfg.eval_every_steps
    if soon < schedule[0] and onset_in_sight(onset.series, cfg.stop, cfg.eval.approach_fraction, onset.found):
        return [soon, *schedule]
    return schedule


def fidelity_schedule(cfg: ExperimentConfig, budget: int) -> list[int]:
    """The steps of fidelity-only evaluations (eval.fid_every_steps; none when unset): spaced as
    the evaluations are, from fid_every_steps, before the budget."""
    return spaced_steps(cfg, cfg.eval.fid_every_steps, budget) if cfg.eval.fid_every_steps else []


def spaced_steps(cfg: ExperimentConfig, k: int, budget: int) -> list[int]:
    """Steps k, then gaps of k (uniform) or growing by eval.geometric_ratio (never below k), < budget."""
    steps, s, gap = [], 0, float(k)
    while True:
        s = s + max(k, round(gap))
        if s >= budget:
            return steps
        steps.append(s)
        if cfg.eval.cadence == "geometric":
            gap = s * (cfg.eval.geometric_ratio - 1.0)


def refine_steps(lo: int, hi: int, k: int) -> list[int]:
    """The steps strictly between evaluations at `lo` and `hi` at which to snapshot the evaluated
    weights for bracket refinement: k evenly spaced (fewer when the gap is under k + 1), ascending."""
    return sorted({lo + (hi - lo) * i // (k + 1) for i in range(1, k + 1)} - {lo, hi})
