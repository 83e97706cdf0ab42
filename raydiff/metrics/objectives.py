"""Search objectives from a trial's evaluation history, defined at every report.

An Optuna search optimizes one or more of these. Ray Tune checks that every result carries the
searcher's metric, and Optuna needs a number, but τ_mem exists only once the onset is seen and FID
only on some evaluations. So every report carries `objective_<name>` for each name below, always
a float, chosen so that the value in the trial's LAST report, the one Optuna is told, is the right one:

- tau_mem_step: the onset step once it is seen; before that, and for a trial that spends its
  budget without an onset, the steps done so far. That is a lower bound (the trial is
  *censored*; `objective_tau_mem_censored` says so), the most that is known.
- tau_mem_images: the same in images seen (step × B), for searches over the batch size.
- best_fid_before_onset: the lowest FID measured at or before the onset step (the fidelity
  the model reaches before it memorizes); +inf until the first FID.

A diverged trial reports None for each: the searcher tells Optuna the trial failed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

# name → the direction that makes sense by default
OBJECTIVES: dict[str, str] = {
    "tau_mem_step": "max",
    "tau_mem_images": "max",
    "best_fid_before_onset": "min",
}
PREFIX = "objective_"


def key(name: str) -> str:
    """The result key a searcher reads for objective `name`."""
    return PREFIX + name


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def objective_values(
    history: Sequence[dict[str, Any]], tau_mem_step: int | None, step: int, batch_size: int, diverged: bool = False
) -> dict[str, Any]:
    """{objective_<name>: float} for every objective, plus objective_tau_mem_censored (bool).

    `history` is the evaluation rows so far (step, fid, ...), `tau_mem_step` the onset by the
    one onset rule (None: not yet), `step` the steps done.
    """
    if diverged:
        return {**{key(n): None for n in OBJECTIVES}, key("tau_mem_censored"): None}
    censored = tau_mem_step is None
    tau = step if censored else tau_mem_step
    fids = [h["fid"] for h in history if _finite(h.get("fid")) and (censored or h["step"] <= tau_mem_step)]
    return {
        key("tau_mem_step"): float(tau),
        key("tau_mem_images"): float(tau * batch_size),
        key("best_fid_before_onset"): float(min(fids)) if fids else math.inf,
        key("tau_mem_censored"): censored,
    }
