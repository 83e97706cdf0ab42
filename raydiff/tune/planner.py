"""Step budgets from the scaling law: the pure logic (no Ray; `tune/search.py` drives it).

A grid's trials run small-N first. Each trial that finishes with an onset adds a point
(N, B, η, P) → τ_mem; once `min_onsets` of them (and one more than the law has coefficients) sit
in the group of the trial about to start, the law log τ = c + α·log N + … is fitted over the
axes they vary (`raydiff.analysis.fits.fit_power_law`) and, if R² ≥ `min_r2`, the trial gets

    budget = safety × τ̂  +  the evaluations that confirm an onset (patience gaps),

never more than its configured budget. Otherwise it keeps the configured budget (a *fallback*,
with the reason recorded). A group is the trials that differ only in N, B, η and the model:
the law says nothing across other axes (objective, dataset, ...).

What this can and cannot save: a trial stops at its onset under either budget, so a trial whose
onset comes inside `safety × τ̂` costs the same steps. Steps are saved on trials that do not
memorize within that budget (which under the fixed budget run to its end). The risk is a trial
whose onset comes after `safety × τ̂` but before the configured budget: it is cut off before its
onset. After the first such cut-off the planner stops planning (the law has failed once; every
later trial gets its configured budget) and the cut trial stays in the results as censored.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from raydiff.analysis.fits import AXES, fit_power_law
from raydiff.config import BudgetPlannerConfig, OnsetPrior

LAW_AXES = tuple(AXES)  # the scaling law's axes, as raydiff analyze fits them
LAW_KEYS = ("data.n_train", "train.batch_size", "train.lr")  # plus every model.* key (through params)


@dataclass(frozen=True)
class PointInfo:
    """What the planner knows of one grid point before it runs."""

    index: int  # position in the grid
    axes: dict[str, float]  # n_train, batch_size, lr, params
    budget: int  # the configured step budget (budget_scaling applied)
    eval_every: int  # evaluation gap in steps (uniform cadence; the first gap for geometric)
    geometric_ratio: float | None = None  # None: uniform cadence
    group: str = ""  # the overrides outside the law's axes: the law is fitted within one group


@dataclass(frozen=True)
class Plan:
    budget: int  # the step budget the trial runs with
    planned: bool  # True: from the law; False: the configured budget (fallback)
    tau_predicted: float | None  # τ̂ in steps (None: no usable fit)
    reason: str


@dataclass
class Observation:
    axes: dict[str, float]
    group: str
    tau: float | None  # onset (middle of the interval the evaluations bracket it in); None: no onset
    steps_done: int
    budget: int
    planned: bool


def group_of(point: dict[str, Any]) -> str:
    """The overrides of a grid point that the law does not model, as a stable string."""
    rest = {k: v for k, v in point.items() if k not in LAW_KEYS and not k.startswith("model.")}
    return ", ".join(f"{k}={rest[k]!r}" for k in sorted(rest))


def small_n_first(points: Sequence[PointInfo]) -> list[int]:
    """Grid indices, smallest N first (then smallest configured budget; stable otherwise):
    small-N trials memorize soonest, so the law is known before the expensive trials start."""
    return [p.index for p in sorted(points, key=lambda p: (p.axes["n_train"], p.budget, p.index))]


def confirm_allowance(p: PointInfo, at_step: float, patience: int) -> int:
    """Steps after an onset at `at_step` until the stopper has seen `patience` evaluations: the
    scheduled gap in which the onset falls, then the confirming evaluations, each after the
    smallest gap (trial.upcoming_evaluations)."""
    gap = p.eval_every if p.geometric_ratio is None else max(p.eval_every, at_step * (p.geometric_ratio - 1.0))
    return int(math.ceil(gap)) + (patience - 1) * p.eval_every


def _log_predict(fit, values: dict[str, np.ndarray]) -> float:
    if hasattr(fit, "log_predict"):
        return float(np.ravel(fit.log_predict(values))[0])
    return float(np.log(np.ravel(fit.predict(values))[0]))


@dataclass
class BudgetPlanner:
    cfg: BudgetPlannerConfig
    patience: int  # the stop rule's: evaluations at or above the threshold that make an onset
    observations: list[Observation] = field(default_factory=list)
    tripped: str | None = None  # why planning stopped (a planned trial was cut off)

    def observe(
        self, p: PointInfo, tau: int | None, steps_done: int, budget: int, planned: bool, prev_eval: int | None = None
    ) -> None:
        """A finished trial: its onset (None: none) after `steps_done` of `budget` steps.

        The onset step is the first evaluation at or past the true onset, which lies after the
        evaluation before it (`prev_eval`; None: one uniform gap earlier): the law is fitted to the middle of that
        interval, so a coarse evaluation grid does not bend the fitted exponent.
        """
        if tau is not None:
            prev = prev_eval if prev_eval is not None else max(0, tau - p.eval_every)
            tau = 0.5 * (prev + tau)
        self.observations.append(Observation(dict(p.axes), p.group, tau, steps_done, budget, planned))
        if planned and tau is None and steps_done >= budget and self.tripped is None:
            self.tripped = (
                f"a trial with N={p.axes['n_train']:g} spent its planned budget of {budget} steps without an"
                " onset: the law failed once, so later trials keep their configured budgets"
            )

    def plan(self, p: PointInfo) -> Plan:
        fallback = Plan(p.budget, False, None, f"configured budget {p.budget}")
        if self.tripped:
            return replace(fallback, reason=f"{fallback.reason} (planner off: {self.tripped})")
        onsets = [o for o in self.observations if o.tau is not None and o.group == p.group]
        axes = [a for a in LAW_AXES if len({o.axes[a] for o in onsets}) > 1]
        if len(onsets) < self.cfg.min_onsets:
            return replace(fallback, reason=f"{fallback.reason} ({len(onsets)} onset(s) known, need {self.cfg.min_onsets})")
        if len(onsets) < len(axes) + 2:  # a residual degree of freedom, so R² can judge the fit
            return replace(fallback, reason=f"{fallback.reason} ({len(onsets)} onsets cannot fit {len(axes)} axes)")
        for a in LAW_AXES:  # an axis the onsets do not vary can only be predicted at their value
            if a not in axes and onsets and not math.isclose(p.axes[a], onsets[0].axes[a], rel_tol=1e-9):
                return replace(fallback, reason=f"{fallback.reason} (the onsets so far never vary {a})")
        try:
            fit = fit_power_law(
                {a: np.array([o.axes[a] for o in onsets], dtype=float) for a in axes},
                np.array([o.tau for o in onsets], dtype=float),
                n_boot=0,
            )
        except ValueError as e:
            return replace(fallback, reason=f"{fallback.reason} (no fit: {e})")
        if not fit.r2 >= self.cfg.min_r2:  # NaN (no spread) counts as poor
            return replace(fallback, reason=f"{fallback.reason} (fit R² = {fit.r2:.2f} < {self.cfg.min_r2:g})")
        tau_hat = math.exp(_log_predict(fit, {a: np.array([p.axes[a]], dtype=float) for a in axes}))
        target = self.cfg.safety * tau_hat
        budget = int(math.ceil(target)) + confirm_allowance(p, target, self.patience)
        fit_text = f"fit on {len(onsets)} onsets, R² = {fit.r2:.3f}"
        if budget >= p.budget:
            return Plan(p.budget, False, tau_hat, f"configured budget {p.budget} (≤ {self.cfg.safety:g} × τ̂ = {target:.0f}; {fit_text})")
        return Plan(budget, True, tau_hat, f"planned: {self.cfg.safety:g} × τ̂ {tau_hat:.0f} + confirmation = {budget} ({fit_text})")


def prior_tau(prior: OnsetPrior, n_train: float, batch_size: float, lr: float) -> float:
    """τ_mem in steps by the space's prior (sweep.budget_planner.prior): its τ at its point, scaled
    as τ ∝ N / (B·η) — e.g. marion2026_cifar10's 20,000 · (N / 2048) · (16 / B) · (1e-4 / η)."""
    return prior.tau * (n_train / prior.n_train) * (prior.batch_size / batch_size) * (prior.lr / lr)


def planned_columns(trial_config: dict[str, Any]) -> dict[str, Any]:
    """The planner's record of a trial (from its Tune config), for trials.parquet; a trial of a
    plain grid or an Optuna search was not planned."""
    info = trial_config.get("planner") or {}
    out = {"tau_mem_predicted": info.get("tau_mem_predicted"), "budget_planned": bool(info.get("budget_planned"))}
    if info.get("budget_reason"):
        out["budget_reason"] = info["budget_reason"]
    return out
