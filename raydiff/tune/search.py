"""How a sweep's trials are chosen: a grid (Ray's grid search), a grid with planned budgets
(`PlannedGridSearcher`), or an Optuna search (`RaydiffOptunaSearch`).

`search_setup(space)` returns what the Tuner needs for each. Both searchers keep their whole
state in plain attributes, which Ray pickles into the experiment folder (`searcher-state-*.pkl`)
and restores on `Tuner.restore`: a resumed sweep continues the same Optuna study, and the planner
keeps the onsets it has seen and the budgets it has promised.
"""

from __future__ import annotations

import math
import pickle
from dataclasses import dataclass
from typing import Any

from ray import tune
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from raydiff.config import SearchConfig, SearchSpace
from raydiff.metrics.objectives import key as objective_key
from raydiff.models import param_count
from raydiff.tune.planner import BudgetPlanner, PointInfo, group_of, small_n_first


@dataclass
class SearchSetup:
    param_space: dict[str, Any]
    search_alg: Searcher | None
    num_samples: int
    max_concurrent: int | None
    n_trials: int  # for messages


def quiet_optuna() -> None:
    """Optuna logs every told trial at INFO; the sweep has its own table."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)


# ---------------------------------------------------------------------------------- Optuna


def optuna_space(search: SearchConfig) -> dict[str, Any]:
    """Dotted key → Optuna distribution. Ray passes the keys through unchanged (it splits on
    "/" only), so a suggestion is the override dict the trainable already understands."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    out = {}
    for k, d in search.axes.items():
        if d.kind == "choice":
            out[k] = CategoricalDistribution(list(d.values))
        elif d.kind in ("uniform", "log_uniform"):
            out[k] = FloatDistribution(d.values[0], d.values[1], log=d.kind == "log_uniform")
        else:
            out[k] = IntDistribution(d.values[0], d.values[1], log=d.kind == "int_log")
    return out


def optuna_sampler(search: SearchConfig):
    import optuna

    if search.sampler == "random":
        return optuna.samplers.RandomSampler(seed=search.seed)
    if search.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=search.seed)
    kwargs = {} if search.startup_trials is None else {"n_startup_trials": search.startup_trials}
    return optuna.samplers.TPESampler(seed=search.seed, **kwargs)


class RaydiffOptunaSearch(OptunaSearch):
    """OptunaSearch that tells Optuna a trial failed when its objectives are not numbers.

    A diverged trial reports None objectives (see raydiff.metrics.objectives); the stock
    searcher would tell Optuna [None, ...] as a completed multi-objective trial."""

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if isinstance(self.metric, str) and not _finite(result.get(self.metric)):
            return
        super().on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        metrics = self.metric if isinstance(self.metric, list) else [self.metric]
        if result and not all(_is_number(result.get(m)) for m in metrics):
            result, error = None, True
        super().on_trial_complete(trial_id, result=result, error=error)

    def __setstate__(self, state):
        self.__dict__.update(state)
        quiet_optuna()  # unpickled in a fresh driver by Tuner.restore

    @property
    def study(self):
        return self._ot_study


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isnan(v)


def _finite(v: Any) -> bool:
    return _is_number(v) and math.isfinite(v)


def build_optuna(search: SearchConfig, study_name: str) -> RaydiffOptunaSearch:
    quiet_optuna()
    metrics = [objective_key(m) for m in search.metrics]
    single = len(metrics) == 1
    return RaydiffOptunaSearch(
        optuna_space(search),
        metric=metrics[0] if single else metrics,
        mode=search.modes[0] if single else search.modes,
        sampler=optuna_sampler(search),
        study_name=study_name,
    )


# ----------------------------------------------------------------------- planned budgets


class PlannedGridSearcher(Searcher):
    """Suggests the grid's points one at a time, small-N first, each with the budget the
    planner gives it at that moment; learns onsets from finished trials.

    Run under a concurrency limit (Ray wraps it in a ConcurrencyLimiter when the Tuner gets
    max_concurrent_trials), a point is suggested only when a slot is free, i.e. just before it
    starts, so its budget uses every onset known by then.
    """

    def __init__(self, points: list[dict[str, Any]], infos: list[PointInfo], planner: BudgetPlanner):
        super().__init__(metric=None, mode=None)
        self.points = points
        self.infos = infos
        self.planner = planner
        self.order = small_n_first(infos)
        self.next = 0
        self.live: dict[str, tuple[int, bool]] = {}  # trial id → (grid index, planned)

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        if self.next >= len(self.order):
            return Searcher.FINISHED
        i = self.order[self.next]
        self.next += 1
        plan = self.planner.plan(self.infos[i])
        self.live[trial_id] = (i, plan.planned)
        config: dict[str, Any] = {
            "point": dict(self.points[i]),
            "planner": {"tau_mem_predicted": plan.tau_predicted, "budget_planned": plan.planned, "budget_reason": plan.reason},
        }
        if plan.planned:  # the budget is the plan itself, not scaled again by budget_scaling
            config.update({"train.max_steps": plan.budget, "train.budget_scaling": "fixed"})
        return config

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        i, planned = self.live.pop(trial_id, (None, False))
        if i is None or error or not result:
            return
        tau = None if result.get("diverged") else result.get("tau_mem_step")
        prev = result.get("tau_prev_step")  # the evaluation before the onset bounds it (training/reports.py)
        self.planner.observe(
            self.infos[i], tau, int(result.get("step") or 0), int(result.get("budget_steps") or 0), planned, prev
        )

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.__dict__.copy(), f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.__dict__.update(pickle.load(f))


def longest_first(points: list[PointInfo]) -> list[int]:
    """Grid indices, the most expensive trial first: steps to onset grow as N / B (images seen to
    onset grow with N), and each step costs as the model's size. The longest trial then sets the
    sweep's wall clock alone rather than after the others (stable for equal costs, so a grid of
    equal points runs in its order)."""

    def cost(p: PointInfo) -> float:
        return p.axes["n_train"] / p.axes["batch_size"] * p.axes["params"]

    return [p.index for p in sorted(points, key=lambda p: (-cost(p), p.index))]


def point_infos(space: SearchSpace) -> list[PointInfo]:
    infos = []
    for i, (point, exp) in enumerate(zip(space.points(), space.experiments())):
        axes = {"n_train": exp.data.n_train, "batch_size": exp.batch, "lr": exp.train.lr, "params": param_count(exp.model, exp.data)}
        ratio = exp.eval.geometric_ratio if exp.eval.cadence == "geometric" else None
        infos.append(PointInfo(i, axes, exp.budget_steps, exp.eval_every_steps, ratio, group_of(point)))
    return infos


# --------------------------------------------------------------------------------- setup


def search_setup(space: SearchSpace, name: str, width: int | None = None) -> SearchSetup:
    """What the Tuner gets. `width`: how many trials the cluster holds at once when grown to its
    bounds (tune/resources.cluster_concurrency); searchers that suggest trials one by one (Optuna,
    the planner) are told it, or Ray lets them keep only one trial pending and nodes start one
    after another."""
    if space.search is not None:
        s = space.search
        concurrent = s.max_concurrent or space.sweep.max_concurrent or width
        return SearchSetup({}, build_optuna(s, name), s.num_samples, concurrent, s.num_samples)
    points = space.points()
    bp = space.sweep.budget_planner
    if bp.enabled:
        planner = BudgetPlanner(bp, space.base.stop.patience)
        searcher = PlannedGridSearcher(points, point_infos(space), planner)
        slots = space.sweep.max_concurrent or width or 1
        return SearchSetup({}, searcher, len(points), slots, len(points))
    order = longest_first(point_infos(space))  # the long pole starts first, not last
    return SearchSetup({"point": tune.grid_search([points[i] for i in order])}, None, 1, space.sweep.max_concurrent, len(points))

