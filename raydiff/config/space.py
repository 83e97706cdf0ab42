"""The search space: a base experiment, the axes that vary it, the sweep's settings.

    sweep: {name: default, mode: grid, resources: {cpu: 1}}
    grid:  {data.n_train: [32, 64, 128, 256]}
    data: ...   model: ...   diffusion: ...   train: ...   eval: ...   stop: ...
    search: ...   (an Optuna search instead of the grid: config/search.py)

`load_search_space` parses and validates a file once, at the boundary: every trial's config is
resolved and value-checked here, held by the `SearchSpace`, and every later layer receives frozen
dataclasses it can trust. Every error names the file, the dotted key and what is allowed. What
the world must hold (the dataset's size, folders, files, devices, storage) is `raydiff.preflight`.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from raydiff.config.presets import PRESETS
from raydiff.config.schema import build, choice, coerce, parse_yaml, plain, type_name, unknown_key
from raydiff.config.search import SearchConfig, parse_search
from raydiff.config.sections import SECTIONS, SWEEP_MODES, ExperimentConfig, SweepConfig, axis_hint
from raydiff.errors import ConfigError

TOP_LEVEL = ("sweep", "grid", "search", *SECTIONS)
MAX_TRIALS = 10_000  # a grid larger than this is a typo, not a study (the papers' largest: 320)
PACKAGED = Path(__file__).resolve().parent.parent / "search_spaces"  # raydiff/search_spaces/*.yaml


@dataclass(frozen=True)
class SearchSpace:
    """A validated search space: the base experiment, the axes and the sweep settings."""

    sweep: SweepConfig
    base: ExperimentConfig
    grid: dict[str, tuple[Any, ...]]  # dotted key → values; one_factor: the first value is the default point
    source: str = "<dict>"
    search: SearchConfig | None = None  # an Optuna search instead of the grid (config/search.py)
    # every grid point's experiment, resolved and checked once (an Optuna search: the base's) ...
    resolved: tuple[ExperimentConfig, ...] = field(default=(), compare=False, repr=False)
    # ... and an Optuna search's corners (every combination of each axis's ends)
    corners: tuple[ExperimentConfig, ...] = field(default=(), compare=False, repr=False)

    def points(self) -> list[dict[str, Any]]:
        """The trials as override dicts (dotted key → value), in a stable order."""
        keys = list(self.grid)
        if not keys:
            return [{}]
        if self.sweep.mode == "grid":
            return [dict(zip(keys, combo)) for combo in itertools.product(*(self.grid[k] for k in keys))]
        center = {k: self.grid[k][0] for k in keys}
        out = [dict(center)]
        for k in keys:
            for v in self.grid[k][1:]:
                out.append({**center, k: v})
        return out

    def experiments(self) -> list[ExperimentConfig]:
        """The grid's experiments, in the order of `points()` (an Optuna search: its base)."""
        return list(self.resolved) if self.resolved else resolve(self, self.points())

    def experiment(self, overrides: dict[str, Any]) -> ExperimentConfig:
        """The experiment of one trial: a grid point's resolved config, or (an Optuna suggestion, a
        planned budget) the base with these overrides applied and checked."""
        if self.search is None and set(overrides) <= set(self.grid):
            points = self.points()
            if overrides in points:
                return self.experiments()[points.index(overrides)]
        return apply_overrides(self.base, overrides)

    def with_mode(self, mode: str) -> "SearchSpace":
        """The same space swept in another mode (`raydiff sweep --mode`), its trials re-resolved."""
        choice("sweep.mode", mode, SWEEP_MODES)
        return resolved(dataclasses.replace(self, sweep=dataclasses.replace(self.sweep, mode=mode)))

    def extremes(self) -> list[ExperimentConfig]:
        """The experiments at the corners of the space: every grid point, or, for an Optuna
        search, every combination of each axis's ends (its bounds, or all of its choices)."""
        if self.search is None:
            return self.experiments()
        return list(self.corners) if self.corners else resolve(self, self.search.corners())

    def minima(self) -> dict[str, float]:
        """N_min, B_min, η_min over the sweep, for the normalized time (`normalized_time`)."""
        exps = self.extremes()
        return {
            "n_train": min(e.data.n_train for e in exps),
            "batch_size": min(e.batch for e in exps),
            "lr": min(e.train.lr for e in exps),
        }

    def to_dict(self) -> dict[str, Any]:
        """The plain form (search_space.json): `search_space_from_dict` reads it back."""
        return {
            "sweep": plain(dataclasses.asdict(self.sweep)),
            "grid": {k: list(v) for k, v in self.grid.items()},
            **({"search": self.search.to_raw()} if self.search is not None else {}),
            **self.base.to_dict(),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, indent=1)


# ---------------------------------------------------------------- experiments from plain data


def experiment_from_dict(raw: dict[str, Any], prefix: str = "") -> ExperimentConfig:
    """An ExperimentConfig from its plain form (as `to_dict` writes it), model presets resolved.
    Types are checked; values are not (call `.validate()`)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"must be a mapping (got {type_name(raw)})", key=prefix or None)
    for key in raw:
        if key not in SECTIONS:
            raise ConfigError(unknown_key(key, list(SECTIONS)), key=f"{prefix}{key}")
    sections = {}
    for name, cls in SECTIONS.items():
        section = raw.get(name) or {}
        if name == "model":
            section = with_preset(section, f"{prefix}model")
        sections[name] = build(cls, section, f"{prefix}{name}")
    return ExperimentConfig(**sections)


def with_preset(section: Any, path: str) -> Any:
    """A `model:` mapping with its preset's fields filled in where the mapping leaves them unset."""
    if not isinstance(section, dict) or section.get("preset") is None:
        return section
    preset = section["preset"]
    if preset not in PRESETS:
        raise ConfigError(f"unknown model preset {preset!r} (allowed: {', '.join(PRESETS)})", key=f"{path}.preset")
    return {**PRESETS[preset], **section}


def apply_overrides(base: ExperimentConfig, overrides: dict[str, Any], *, validate: bool = True) -> ExperimentConfig:
    """`base` with dotted-key overrides applied; value-checked unless `validate=False` (a trial
    rebuilding on a worker the config that the driver already checked)."""
    raw = base.to_dict()
    for key, value in overrides.items():
        section, _, name = key.partition(".")
        if key == "model.preset":
            # a preset replaces the architecture, so drop the base's architecture fields; dropout
            # and the blocks' style (model.style) are the file's, at every size
            raw["model"] = {"preset": value, "dropout": raw["model"]["dropout"], "style": raw["model"]["style"]}
            continue
        raw[section][name] = value
    exp = experiment_from_dict(raw)
    return exp.validate() if validate else exp


def resolved(space: SearchSpace) -> SearchSpace:
    """`space` holding its trials' experiments, each resolved and value-checked once here."""
    corners = resolve(space, space.search.corners()) if space.search else []
    points = space.points()
    experiments = resolve(space, points)
    check_distinct(points, experiments)
    return dataclasses.replace(space, resolved=tuple(experiments), corners=tuple(corners))


def check_distinct(points: list[dict[str, Any]], experiments: list[ExperimentConfig]) -> None:
    """Two grid points that resolve to the same experiment (a batch rule, an image-based cadence
    or a preset overriding what an axis set) would run one trial twice and fit it as two."""
    seen: dict[str, dict[str, Any]] = {}
    for point, exp in zip(points, experiments):
        key = json.dumps(exp.to_dict(), sort_keys=True, default=str)
        if key in seen:
            raise ConfigError(
                f"the trials with {point_text(seen[key]) or 'the base values'} and with {point_text(point)} resolve to the"
                " same experiment: an axis value that changes nothing; drop it, or vary train.seed to repeat a trial",
                key="grid",
            )  # fmt: skip
        seen[key] = point


def check_rule_presets(sweep: SweepConfig) -> None:
    """A resources_by rule naming a preset that does not exist would never match."""
    for i, rule in enumerate(sweep.resources_by):
        if rule.preset is not None and rule.preset not in PRESETS:
            raise ConfigError(f"unknown model preset {rule.preset!r}: the rule would never match (allowed: {', '.join(PRESETS)})",
                              key=f"sweep.resources_by[{i}].preset")  # fmt: skip


def resolve(space: SearchSpace, points: list[dict[str, Any]]) -> list[ExperimentConfig]:
    """The experiments of these points, value-checked; an error names the axis values of the
    trial that broke it."""
    out = []
    for point in points:
        try:
            out.append(apply_overrides(space.base, point))
        except ConfigError as e:
            raise ConfigError(f"{e.message} (in the trial with {point_text(point)})", key=e.key) from None
    return out


def trial_count(grid: dict[str, tuple], mode: str) -> int:
    """How many trials a grid makes, without making them."""
    if mode == "grid":
        return math.prod(len(v) for v in grid.values())
    return 1 + sum(len(v) - 1 for v in grid.values())


def point_text(point: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in point.items())


def _check_axis(key: Any, values: Any) -> tuple[Any, ...]:
    path = f"grid.{key}"
    hint = axis_hint(key, path)
    if not isinstance(values, list):
        raise ConfigError(f"must be a list of values (got {values!r})", key=path)
    if not values:
        raise ConfigError("empty axis: give at least one value", key=path)
    checked = tuple(coerce(v, hint, f"{path}[{i}]") for i, v in enumerate(values))
    if len(set(map(repr, checked))) != len(checked):
        raise ConfigError(f"repeats a value ({list(values)})", key=path)
    return checked


# ---------------------------------------------------------------------------------- loading


def search_space_from_dict(raw: Any, source: str = "<dict>") -> SearchSpace:
    """A validated SearchSpace from plain data (parsed YAML, or a saved search_space.json)."""
    try:
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise ConfigError(f"a search space is a mapping of {', '.join(TOP_LEVEL)} (got {type_name(raw)})")
        for key in raw:
            if key not in TOP_LEVEL:
                raise ConfigError(unknown_key(key, list(TOP_LEVEL)), key=str(key))
        sweep = build(SweepConfig, raw.get("sweep"), "sweep")
        sweep.validate()
        check_rule_presets(sweep)
        grid_raw = raw.get("grid") or {}
        if not isinstance(grid_raw, dict):
            raise ConfigError(f"must be a mapping of axis → list of values (got {grid_raw!r})", key="grid")
        grid = {str(k): _check_axis(k, v) for k, v in grid_raw.items()}
        n = trial_count(grid, sweep.mode)
        if n > MAX_TRIALS:
            sizes = " × ".join(str(len(v)) for v in grid.values())
            raise ConfigError(f"{n:,} trials ({sizes}, {sweep.mode} mode); at most {MAX_TRIALS:,}", key="grid")
        base = experiment_from_dict({k: raw[k] for k in SECTIONS if k in raw}).validate()
        search = parse_search(raw["search"], sweep, grid, base) if raw.get("search") is not None else None
        return resolved(SearchSpace(sweep=sweep, base=base, grid=grid, source=source, search=search))
    except ConfigError as e:
        raise e.located(source) from None


def load_search_space(path: str | Path) -> SearchSpace:
    """A search-space YAML file, parsed and validated (an empty file is refused: the embedded
    default is `raydiff sweep` with no argument)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError("no such search-space file", where=str(path))
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read: {e}", where=str(path)) from None
    try:
        raw = parse_yaml(text)
    except ConfigError as e:
        raise e.located(str(path)) from None
    if raw is None:
        raise ConfigError(
            "the file holds no search space (empty, or comments only); for the embedded default run"
            " `raydiff sweep` with no argument",
            where=str(path),
        )
    return search_space_from_dict(raw, source=str(path))


def packaged_search_space(name: str) -> Path:
    """The path of a search space that ships with raydiff (default, smoke, the papers' …)."""
    return PACKAGED / f"{name}.yaml"


def normalized_time(step, n: float, b: float, lr: float, minima: dict[str, float]):
    """Marion & Wu's collapse variable, the one home of its formula:

        T = step · (N_min / N) · (B / B_min) · (η / η_min)

    `step` a number or a numpy array of steps; `minima` the sweep's N_min, B_min, η_min
    (SearchSpace.minima, or results_folder.reference_minima for a results folder). None stays None."""
    if step is None:
        return None
    return step * (minima["n_train"] / n) * (b / minima["batch_size"]) * (lr / minima["lr"])
