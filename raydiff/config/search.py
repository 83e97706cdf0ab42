"""The `search:` section of a search space: an Optuna search instead of a grid.

    search:
      kind: optuna
      sampler: tpe            # tpe | random | nsga2
      seed: 0
      num_samples: 8          # trials in all
      max_concurrent: 2       # default: sweep.max_concurrent, else what the cluster holds
      objective:              # one entry: single-objective; several: a Pareto front
        - {metric: tau_mem_step, mode: max}
        - {metric: best_fid_before_onset, mode: min}
      axes:
        train.lr:         {log_uniform: [1.0e-5, 4.0e-4]}
        train.batch_size: {choice: [16, 32]}
        data.n_train:     {int_log: [32, 256]}

Distributions: uniform / log_uniform (float keys), int / int_log (integer keys), both bounds
inclusive, and choice (any key, scalar values). The objectives are the ones
`raydiff.metrics.objectives` reports at every evaluation. Validated once, like the rest.
"""

from __future__ import annotations

import itertools
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from raydiff.config.schema import coerce, plain, type_name, unknown_key
from raydiff.config.sections import ExperimentConfig, SweepConfig, axis_hint
from raydiff.errors import ConfigError
from raydiff.metrics.objectives import OBJECTIVES

KINDS = ("optuna",)
SAMPLERS = ("tpe", "random", "nsga2")
DISTRIBUTIONS = ("uniform", "log_uniform", "int", "int_log", "choice")
RANGE_KINDS = {"uniform": float, "log_uniform": float, "int": int, "int_log": int}
SEARCH_INT_MAX = 100_000  # trials, concurrency, start-up trials; Optuna's seed takes it too
SEARCH_KEYS = ("kind", "sampler", "seed", "num_samples", "max_concurrent", "startup_trials", "objective", "axes")


@dataclass(frozen=True)
class Distribution:
    kind: str  # uniform | log_uniform | int | int_log | choice
    values: tuple[Any, ...]  # (low, high), both inclusive, or the choices

    @property
    def ends(self) -> tuple[Any, ...]:
        return self.values

    def to_raw(self) -> dict[str, list]:
        return {self.kind: list(self.values)}


@dataclass(frozen=True)
class Objective:
    metric: str  # a name of raydiff.metrics.objectives.OBJECTIVES
    mode: str  # min | max


@dataclass(frozen=True)
class SearchConfig:
    kind: str = "optuna"
    sampler: str = "tpe"
    seed: int | None = 0
    num_samples: int = 8
    max_concurrent: int | None = None
    startup_trials: int | None = None  # TPE: random trials before its model takes over (None: Optuna's 10)
    objective: tuple[Objective, ...] = (Objective("tau_mem_step", "max"),)
    axes: dict[str, Distribution] = field(default_factory=dict)

    @property
    def metrics(self) -> list[str]:
        return [o.metric for o in self.objective]

    @property
    def modes(self) -> list[str]:
        return [o.mode for o in self.objective]

    def corners(self) -> list[dict[str, Any]]:
        """Every combination of each axis's ends: the trials that bound the space."""
        keys = list(self.axes)
        return [dict(zip(keys, combo)) for combo in itertools.product(*(self.axes[k].ends for k in keys))]

    def to_raw(self) -> dict[str, Any]:
        """The YAML form, for search_space.json (a resumed sweep parses it again)."""
        return {
            "kind": self.kind, "sampler": self.sampler, "seed": self.seed, "num_samples": self.num_samples,
            "max_concurrent": self.max_concurrent, "startup_trials": self.startup_trials,
            "objective": [{"metric": o.metric, "mode": o.mode} for o in self.objective],
            "axes": {k: plain(d.to_raw()) for k, d in self.axes.items()},
        }  # fmt: skip


def _int(raw: dict, name: str, minimum: int, default: int | None) -> int | None:
    value = raw.get(name, default)
    if value is None:
        return None
    value = coerce(value, int, f"search.{name}")
    if not minimum <= value <= SEARCH_INT_MAX:
        raise ConfigError(f"must be in {minimum}..{SEARCH_INT_MAX:,} (got {value:,})", key=f"search.{name}")
    return value


def _axis_type(key: str) -> Any:
    hint = axis_hint(key, f"search.axes.{key}")
    if typing.get_origin(hint) in (typing.Union, types.UnionType):  # X | None: the X
        return next(a for a in typing.get_args(hint) if a is not type(None))
    return hint


def _distribution(key: str, raw: Any) -> Distribution:
    path = f"search.axes.{key}"
    if not isinstance(raw, dict) or len(raw) != 1:
        raise ConfigError(f"must be one of {', '.join(f'{{{d}: [...]}}' for d in DISTRIBUTIONS)} (got {raw!r})", key=path)
    (kind, values), = raw.items()
    if kind not in DISTRIBUTIONS:
        raise ConfigError(unknown_key(kind, list(DISTRIBUTIONS)), key=f"{path}.{kind}")
    hint = _axis_type(key)
    path = f"{path}.{kind}"
    if not isinstance(values, list) or not values:
        raise ConfigError(f"must be a non-empty list (got {values!r})", key=path)
    if kind == "choice":
        checked = tuple(coerce(v, hint, f"{path}[{i}]") for i, v in enumerate(values))
        if any(not isinstance(v, (str, int, float, bool, type(None))) for v in checked):
            raise ConfigError("Optuna chooses among single values (numbers, strings); put lists in a grid", key=path)
        if len(set(map(repr, checked))) != len(checked):
            raise ConfigError(f"repeats a value ({values})", key=path)
        return Distribution(kind, checked)
    want = RANGE_KINDS[kind]
    if hint is not want:
        allowed = [d for d, t in RANGE_KINDS.items() if t is hint] + ["choice"]
        raise ConfigError(f"{key} takes {', '.join(allowed)} (got {kind})", key=path)
    if len(values) != 2:
        raise ConfigError(f"must be [low, high] (got {values})", key=path)
    lo, hi = (coerce(v, want, f"{path}[{i}]") for i, v in enumerate(values))
    if not lo < hi:
        raise ConfigError(f"needs low < high (got {values})", key=path)
    if kind.endswith("_log") or kind == "log_uniform":
        if lo <= 0:
            raise ConfigError(f"a log scale needs low > 0 (got {lo})", key=path)
    if not all(math.isfinite(v) for v in (lo, hi)):
        raise ConfigError(f"bounds must be finite (got {values})", key=path)
    return Distribution(kind, (lo, hi))


def _objectives(raw: Any) -> tuple[Objective, ...]:
    if raw is None:
        return SearchConfig.objective
    items = raw if isinstance(raw, list) else [raw]
    if not items:
        raise ConfigError("give at least one objective", key="search.objective")
    out = []
    for i, item in enumerate(items):
        path = f"search.objective[{i}]" if isinstance(raw, list) else "search.objective"
        if isinstance(item, str):
            item = {"metric": item}
        if not isinstance(item, dict):
            raise ConfigError(f"must be {{metric: NAME, mode: min|max}} (got {item!r})", key=path)
        for k in item:
            if k not in ("metric", "mode"):
                raise ConfigError(unknown_key(k, ["metric", "mode"]), key=f"{path}.{k}")
        metric = item.get("metric")
        if not isinstance(metric, str) or metric not in OBJECTIVES:
            raise ConfigError(f"must be one of {', '.join(OBJECTIVES)} (got {metric!r})", key=f"{path}.metric")
        mode = item.get("mode", OBJECTIVES[metric])
        if not isinstance(mode, str) or mode not in ("min", "max"):
            raise ConfigError(f"must be one of min, max (got {mode!r})", key=f"{path}.mode")
        out.append(Objective(metric, mode))
    if len({o.metric for o in out}) != len(out):
        raise ConfigError("names an objective twice", key="search.objective")
    return tuple(out)


def parse_search(raw: Any, sweep: SweepConfig, grid: dict, base: ExperimentConfig) -> SearchConfig:
    """The validated `search:` section. `sweep`, `grid` and `base` are checked against it."""
    if not isinstance(raw, dict):
        raise ConfigError(f"must be a mapping (got {type_name(raw)})", key="search")
    for k in raw:
        if k not in SEARCH_KEYS:
            raise ConfigError(unknown_key(k, list(SEARCH_KEYS)), key=f"search.{k}")
    kind = raw.get("kind", "optuna")
    if not isinstance(kind, str) or kind not in KINDS:
        raise ConfigError(f"must be one of {', '.join(KINDS)} (got {kind!r})", key="search.kind")
    sampler = raw.get("sampler", "tpe")
    if not isinstance(sampler, str) or sampler not in SAMPLERS:
        raise ConfigError(f"must be one of {', '.join(SAMPLERS)} (got {sampler!r})", key="search.sampler")
    axes_raw = raw.get("axes")
    if not isinstance(axes_raw, dict) or not axes_raw:
        raise ConfigError("must map at least one dotted key to a distribution", key="search.axes")
    cfg = SearchConfig(
        kind=kind,
        sampler=sampler,
        seed=_int(raw, "seed", 0, SearchConfig.seed),
        num_samples=_int(raw, "num_samples", 1, SearchConfig.num_samples) or SearchConfig.num_samples,
        max_concurrent=_int(raw, "max_concurrent", 1, None),
        startup_trials=_int(raw, "startup_trials", 0, None),
        objective=_objectives(raw.get("objective")),
        axes={str(k): _distribution(str(k), v) for k, v in axes_raw.items()},
    )
    if cfg.startup_trials is not None and cfg.startup_trials >= cfg.num_samples:
        raise ConfigError(
            f"is {cfg.startup_trials}, but the search has {cfg.num_samples} trials: TPE would never use its model;"
            " lower it, or use sampler: random",
            key="search.startup_trials",
        )  # fmt: skip
    if grid:
        raise ConfigError("an Optuna search replaces the grid: move its axes into search.axes (as choice)", key="grid")
    if sweep.budget_planner.enabled:
        raise ConfigError("the budget planner plans grids; turn it off for an Optuna search", key="sweep.budget_planner.enabled")
    if cfg.max_concurrent and sweep.max_concurrent and cfg.max_concurrent != sweep.max_concurrent:
        raise ConfigError(
            f"differs from sweep.max_concurrent ({sweep.max_concurrent}); set one of them", key="search.max_concurrent"
        )
    if "best_fid_before_onset" in cfg.metrics and not base.eval.fid_every and "eval.fid_every" not in cfg.axes:
        raise ConfigError("best_fid_before_onset needs FID: set eval.fid_every > 0", key="search.objective")
    return cfg
