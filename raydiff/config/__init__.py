"""Frozen, typed configuration, validated once at the boundary.

    schema.py    plain data → typed dataclasses: coercion, unknown keys (did you mean …?),
                 duplicate YAML keys; the small value-check helpers
    sections.py  the frozen sections (data, model, diffusion, train, eval, stop, sweep) and their
                 value checks: pure, no file, no device
    presets.py   named model architectures (the network module knows nothing of them)
    search.py    the Optuna `search:` section
    space.py     the search space: axes, points, overrides, the loaders

World checks (dataset sizes, folders, files, devices, storage) are `raydiff.preflight`'s. See
docs/architecture.md for the layers.
"""

from raydiff.config.presets import PRESETS
from raydiff.config.schema import parse_yaml, plain
from raydiff.config.search import Distribution, Objective, SearchConfig
from raydiff.config.sections import (
    DATASETS,
    NATIVE_SHAPES,
    SECTIONS,
    BudgetPlannerConfig,
    DataConfig,
    DiffusionConfig,
    EvalConfig,
    ExperimentConfig,
    ModelConfig,
    OnsetPrior,
    Resources,
    StopConfig,
    SweepConfig,
    TrainConfig,
)
from raydiff.errors import ConfigError
from raydiff.config.space import (
    SearchSpace,
    apply_overrides,
    experiment_from_dict,
    load_search_space,
    normalized_time,
    packaged_search_space,
    search_space_from_dict,
)

__all__ = [
    "DATASETS", "NATIVE_SHAPES", "PRESETS", "SECTIONS", "BudgetPlannerConfig", "ConfigError", "DataConfig", "DiffusionConfig",
    "Distribution", "EvalConfig", "ExperimentConfig", "ModelConfig", "Objective", "OnsetPrior", "Resources", "SearchConfig",
    "SearchSpace", "StopConfig", "SweepConfig", "TrainConfig", "apply_overrides", "experiment_from_dict",
    "load_search_space", "normalized_time", "packaged_search_space", "parse_yaml", "plain", "search_space_from_dict",
]  # fmt: skip
