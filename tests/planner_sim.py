"""A model of a planned grid for the tests: trials with known onset times, no Ray, no training.

`simulate` runs a grid through `raydiff.tune.planner.BudgetPlanner` as `tune/search.py` would,
each trial memorizing at a given step and stopping `patience` evaluations later or at its budget.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from raydiff.config import BudgetPlannerConfig
from raydiff.tune.planner import BudgetPlanner, Plan, PointInfo, small_n_first


@dataclass(frozen=True)
class SimTrial:
    index: int
    n_train: float
    tau_true: float | None  # None: never memorizes
    budget: int
    planned: bool
    tau_predicted: float | None
    status: str  # memorized | budget
    steps: int
    cut_off: bool  # no onset within its budget although the configured budget would have caught it


@dataclass(frozen=True)
class SimResult:
    trials: list[SimTrial]

    @property
    def total_steps(self) -> int:
        return sum(t.steps for t in self.trials)

    @property
    def cut_off(self) -> int:
        return sum(t.cut_off for t in self.trials)


def detect_step(p: PointInfo, tau: float, patience: int) -> tuple[int, int]:
    """(onset step as evaluated, step at which the stopper sees it) on a uniform evaluation grid."""
    onset = int(math.ceil(tau / p.eval_every)) * p.eval_every
    return onset, onset + (patience - 1) * p.eval_every


def simulate(
    points: Sequence[PointInfo],
    tau_true: Callable[[PointInfo], float | None],
    cfg: BudgetPlannerConfig | None,
    patience: int = 2,
    concurrency: int = 1,
) -> SimResult:
    """Run a grid on a model of onset times: a trial memorizes at `tau_true(point)` steps (None:
    never), is seen `patience` evaluations later, and stops there or at its budget. `cfg` None
    (or disabled): every trial keeps its configured budget, in grid order. With `concurrency`
    slots, a trial's budget is decided when it starts, from the trials finished by then (time is
    counted in steps, all trials equally fast)."""
    on = cfg is not None and cfg.enabled
    planner = BudgetPlanner(cfg, patience) if on else None
    order = small_n_first(points) if on else [p.index for p in points]
    by_index = {p.index: p for p in points}
    running: list[tuple[int, int, SimTrial]] = []  # (finish time, start order, trial)
    done: list[SimTrial] = []
    now, started = 0, 0
    queue = list(order)
    while queue or running:
        while queue and len(running) < concurrency:
            p = by_index[queue.pop(0)]
            plan = planner.plan(p) if planner else Plan(p.budget, False, None, "configured")
            tau = tau_true(p)
            onset, seen = detect_step(p, tau, patience) if tau is not None else (None, None)
            if seen is not None and seen <= plan.budget:
                status, steps = "memorized", seen
            else:
                status, steps = "budget", plan.budget
            cut = status == "budget" and seen is not None and seen <= p.budget
            trial = SimTrial(p.index, p.axes["n_train"], tau, plan.budget, plan.planned, plan.tau_predicted, status, steps, cut)
            running.append((now + steps, started, trial))
            started += 1
        running.sort(key=lambda r: (r[0], r[1]))
        now, _, trial = running.pop(0)
        done.append(trial)
        if planner:
            p = by_index[trial.index]
            onset = detect_step(p, trial.tau_true, patience)[0] if trial.status == "memorized" else None
            planner.observe(p, onset, trial.steps, trial.budget, trial.planned)
    return SimResult(sorted(done, key=lambda t: t.index))
