"""Frozen, typed experiment configuration.

A search space YAML has one section per concern plus the sweep's own settings:

    sweep: {name: default, mode: grid, resources: {cpu: 1}}
    grid:  {data.n_train: [32, 64, 128, 256]}
    data: ...   model: ...   diffusion: ...   train: ...   eval: ...   stop: ...

`load_search_space` parses and validates it once, at the boundary: every later layer receives
frozen dataclasses it can trust. Every error names the file, the dotted key and what is allowed.
"""

from __future__ import annotations

import dataclasses
import difflib
import itertools
import math
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from raydiff.errors import ConfigError

if typing.TYPE_CHECKING:
    from raydiff.config_search import SearchConfig

DATASETS = ("digits", "cifar10", "gmm", "folder")
OBJECTIVES = ("ddpm", "flow")
SAMPLERS = {"ddpm": ("ddim", "ancestral"), "flow": ("euler",)}
SWEEP_MODES = ("grid", "one_factor")
BUDGET_SCALINGS = ("fixed", "n_over_b")
OPTIMIZERS = ("adam", "sgd")
FEATURES = ("auto", "inception", "digits_classifier")
MEMORIZATION_SPACES = ("pixel", "features", "both")
FID_REFERENCES = ("auto", "images")
CADENCES = ("uniform", "geometric")
NATIVE_SHAPES = {"digits": (8, 1), "cifar10": (32, 3)}  # (image_size, channels), fixed by the data
DEFAULT_SHAPES = {"gmm": (8, 1), "folder": (32, 3)}  # configurable


@dataclass(frozen=True)
class DataConfig:
    dataset: str = "digits"
    n_train: int = 64  # N: the first N images of the training split
    n_test: int = 256  # fixed held-out images: test loss, FID reference, sanity checks
    root: str | None = None  # cache dir (cifar10) or image folder (folder)
    download: bool = True
    image_size: int | None = None  # None: the dataset's own (digits 8, cifar10 32, gmm 8, folder 32)
    channels: int | None = None  # None: the dataset's own (digits 1, cifar10 3, gmm 1, folder 3)
    gmm_components: int = 10
    gmm_std: float = 0.15
    class_conditional: bool = False
    seed: int = 0  # gmm sampling only; real datasets take the first N

    @property
    def shape(self) -> tuple[int, int]:
        """(image_size, channels), the dataset's own where the file leaves them unset."""
        size, channels = {**DEFAULT_SHAPES, **NATIVE_SHAPES}[self.dataset]
        return (self.image_size or size, self.channels or channels)

    def validate(self) -> None:
        _choice("data.dataset", self.dataset, DATASETS)
        _positive("data.n_train", self.n_train)
        _positive("data.n_test", self.n_test)
        if self.image_size is not None:
            _positive("data.image_size", self.image_size)
        if self.channels is not None:
            _choice("data.channels", self.channels, (1, 3))
        _positive("data.gmm_components", self.gmm_components)
        _positive("data.gmm_std", self.gmm_std)
        native = NATIVE_SHAPES.get(self.dataset)
        if native and (self.image_size, self.channels) != (None, None) and self.shape != native:
            raise ConfigError(
                f"{self.dataset} images are {native[0]}×{native[0]} with {native[1]} channel(s);"
                " leave image_size and channels unset",
                key="data.image_size",
            )
        if self.dataset == "folder" and not self.root:
            raise ConfigError("the folder dataset needs a path of images", key="data.root")


@dataclass(frozen=True)
class ModelConfig:
    preset: str | None = None  # fills the fields below it that the file leaves unset
    base_channels: int = 32
    channel_mults: tuple[int, ...] = (1, 2)
    num_res_blocks: int = 1
    attn_resolutions: tuple[int, ...] = ()
    head_dim: int = 64
    emb_dim: int | None = None  # noise/class embedding width; None: 4 × base_channels
    dropout: float = 0.0
    noise_dim: int | None = None  # sinusoidal c_noise features; None: base_channels
    scale_shift: bool = False  # embedding as scale and shift of a GroupNorm (ADM's AdaGN)
    resblock_updown: bool = False  # down/up-sample with residual blocks (ADM) instead of convs

    def validate(self) -> None:
        _positive("model.base_channels", self.base_channels)
        if not self.channel_mults or any(m <= 0 for m in self.channel_mults):
            raise ConfigError("must be a non-empty list of positive integers", key="model.channel_mults")
        _positive("model.num_res_blocks", self.num_res_blocks)
        _positive("model.head_dim", self.head_dim)
        if self.emb_dim is not None:
            _positive("model.emb_dim", self.emb_dim)
        if self.noise_dim is not None:
            _positive("model.noise_dim", self.noise_dim)
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"must be in [0, 1) (got {self.dropout})", key="model.dropout")


@dataclass(frozen=True)
class DiffusionConfig:
    objective: str = "ddpm"  # ddpm: ε-prediction; flow: rectified flow, velocity prediction
    num_timesteps: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 2e-2
    sampler: str | None = None  # None: ddim for ddpm, euler for flow
    sample_steps: int = 50
    guidance: float = 0.0  # classifier-free guidance weight (0: plain conditional model)

    def validate(self) -> None:
        _choice("diffusion.objective", self.objective, OBJECTIVES)
        _positive("diffusion.num_timesteps", self.num_timesteps)
        if not 0.0 < self.beta_start < self.beta_end < 1.0:
            raise ConfigError(
                f"need 0 < beta_start < beta_end < 1 (got {self.beta_start}, {self.beta_end})",
                key="diffusion.beta_end",
            )
        if self.sampler is not None:
            _choice("diffusion.sampler", self.sampler, SAMPLERS[self.objective])
        _positive("diffusion.sample_steps", self.sample_steps)
        if self.objective == "ddpm" and self.sample_steps > self.num_timesteps:
            raise ConfigError(
                f"must be ≤ num_timesteps ({self.num_timesteps}) (got {self.sample_steps})",
                key="diffusion.sample_steps",
            )
        if self.guidance < 0:
            raise ConfigError(f"must be ≥ 0 (got {self.guidance})", key="diffusion.guidance")

    @property
    def resolved_sampler(self) -> str:
        return self.sampler or SAMPLERS[self.objective][0]


@dataclass(frozen=True)
class TrainConfig:
    batch_size: int = 64
    lr: float = 1e-3
    max_steps: int = 20_000  # the step budget (before budget_scaling)
    budget_scaling: str = "fixed"  # n_over_b: max_steps × (N / budget_ref_n) × (budget_ref_batch / B)
    budget_ref_n: int = 2048
    budget_ref_batch: int = 16
    optimizer: str = "adam"  # adam (Marion & Wu) | sgd: SGD with momentum (Bonnaire et al.: 0.95)
    momentum: float = 0.95  # sgd only
    adam_betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-8
    weight_decay: float = 0.0
    grad_clip: float | None = 1.0
    ema_decay: float = 0.0  # per step; 0 disables EMA
    ema_halflife_images: float | None = None  # if set, overrides ema_decay: same decay per image at any B
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    bf16: bool = True  # bf16 autocast on CUDA (ignored on CPU)

    def validate(self) -> None:
        _positive("train.batch_size", self.batch_size)
        _positive("train.lr", self.lr)
        _positive("train.max_steps", self.max_steps)
        _choice("train.budget_scaling", self.budget_scaling, BUDGET_SCALINGS)
        _positive("train.budget_ref_n", self.budget_ref_n)
        _positive("train.budget_ref_batch", self.budget_ref_batch)
        if not all(0.0 <= b < 1.0 for b in self.adam_betas):
            raise ConfigError(f"must be two numbers in [0, 1) (got {list(self.adam_betas)})", key="train.adam_betas")
        _positive("train.adam_eps", self.adam_eps)
        _choice("train.optimizer", self.optimizer, OPTIMIZERS)
        if not 0.0 <= self.momentum < 1.0:
            raise ConfigError(f"must be in [0, 1) (got {self.momentum})", key="train.momentum")
        if self.weight_decay < 0:
            raise ConfigError(f"must be ≥ 0 (got {self.weight_decay})", key="train.weight_decay")
        if self.grad_clip is not None:
            _positive("train.grad_clip", self.grad_clip)
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"must be in [0, 1) (got {self.ema_decay})", key="train.ema_decay")
        if self.ema_halflife_images is not None:
            _positive("train.ema_halflife_images", self.ema_halflife_images)
        _choice("train.device", self.device, ("auto", "cpu", "cuda"))

    def ema_beta(self) -> float:
        """EMA decay per optimizer step. A half-life in images keeps B-sweeps comparable."""
        if self.ema_halflife_images is not None:
            return 0.5 ** (self.batch_size / self.ema_halflife_images)
        return self.ema_decay


@dataclass(frozen=True)
class EvalConfig:
    every_steps: int | None = 250  # cadence in optimizer steps ...
    every_images: int | None = None  # ... or in images seen (overrides every_steps)
    cadence: str = "uniform"  # uniform | geometric (spacing grows by geometric_ratio)
    geometric_ratio: float = 1.25
    # weight snapshots kept, evenly spaced, between evaluations: when mem_frac first crosses the
    # onset threshold, a binary search over them (memorization test only) narrows τ_mem's bracket
    # to 1/(k+1) of the gap for ⌈log₂(k+1)⌉ extra evaluations (0: off). Each snapshot is a copy
    # of the evaluated weights on the trial's device: k × the model's size in memory.
    refine_snapshots: int = 0
    num_samples: int = 128  # generated samples per evaluation for the memorization test
    mem_sample_steps: int | None = None  # sampler steps for those samples; None: diffusion.sample_steps
    sample_batch: int = 512
    sample_seed: int = 1234  # same initial noise at every evaluation
    mem_ratio: float = 1.0 / 3.0  # Bonnaire et al.: memorized when ‖x−a₁‖/‖x−a₂‖ < 1/3
    memorization_space: str = "pixel"  # pixel | features | both
    mem_cosine: float = 0.6  # Marion & Wu: memorized when max cosine similarity > 0.6
    embedding: str | None = None  # TorchScript embedding (SSCD) path or URL, for features space
    bootstrap: int = 1000
    fid_every: int = 4  # FID at every k-th evaluation (0: never); FID is the costly part
    fid_samples: int = 512
    fid_features: str = "auto"  # auto: inception for 32×32 RGB, digits_classifier for digits
    fid_split: str = "test"  # the split `fid` compares with (test | train); `fid_train` is always train
    fid_reference: str = "auto"  # auto: clean-fid's precomputed split statistics where they exist
    # (CIFAR-10, Inception, clean mode, 32 px), else the data's images; images: always the images
    swd_samples: int = 2000  # sliced Wasserstein distance in FID feature space on FID evaluations, between
    # the first swd_samples FID samples (at most fid_samples) and held-out images (0: off)
    swd_projections: int = 1000
    probe_images: int = 64  # fixed images for the train/test loss probes
    probe_noise_levels: int = 8
    use_ema: bool = True  # evaluate the EMA weights (when EMA is on)
    save_samples: int = 16  # generated samples stored per evaluation (0: none) for figures

    def validate(self) -> None:
        if self.every_steps is None and self.every_images is None:
            raise ConfigError("set every_steps or every_images", key="eval.every_steps")
        if self.every_steps is not None:
            _positive("eval.every_steps", self.every_steps)
        if self.every_images is not None:
            _positive("eval.every_images", self.every_images)
        _choice("eval.cadence", self.cadence, CADENCES)
        if self.geometric_ratio <= 1.0:
            raise ConfigError(f"must be > 1 (got {self.geometric_ratio})", key="eval.geometric_ratio")
        if self.refine_snapshots < 0:
            raise ConfigError(f"must be ≥ 0 (got {self.refine_snapshots})", key="eval.refine_snapshots")
        if self.num_samples < 2:
            raise ConfigError(f"must be ≥ 2 (got {self.num_samples})", key="eval.num_samples")
        _positive("eval.sample_batch", self.sample_batch)
        if self.mem_sample_steps is not None:
            _positive("eval.mem_sample_steps", self.mem_sample_steps)
        if not 0.0 < self.mem_ratio < 1.0:
            raise ConfigError(f"must be in (0, 1) (got {self.mem_ratio})", key="eval.mem_ratio")
        _choice("eval.memorization_space", self.memorization_space, MEMORIZATION_SPACES)
        if not -1.0 < self.mem_cosine < 1.0:
            raise ConfigError(f"must be in (-1, 1) (got {self.mem_cosine})", key="eval.mem_cosine")
        if self.memorization_space != "pixel" and not self.embedding:
            raise ConfigError("feature-space memorization needs an embedding path or URL", key="eval.embedding")
        if self.memorization_space != "pixel" and "://" not in self.embedding and not Path(self.embedding).expanduser().is_file():
            raise ConfigError(f"no such TorchScript file: {self.embedding} (a path or an http(s) URL)", key="eval.embedding")
        _positive("eval.bootstrap", self.bootstrap)
        if self.fid_every < 0:
            raise ConfigError(f"must be ≥ 0 (got {self.fid_every})", key="eval.fid_every")
        if self.fid_samples < 2:
            raise ConfigError(f"must be ≥ 2 (got {self.fid_samples})", key="eval.fid_samples")
        _choice("eval.fid_features", self.fid_features, FEATURES)
        _choice("eval.fid_split", self.fid_split, ("test", "train"))
        _choice("eval.fid_reference", self.fid_reference, FID_REFERENCES)
        if self.swd_samples < 0 or self.swd_samples == 1:
            raise ConfigError(f"must be 0 (off) or ≥ 2 (got {self.swd_samples})", key="eval.swd_samples")
        _positive("eval.swd_projections", self.swd_projections)
        _positive("eval.probe_images", self.probe_images)
        _positive("eval.probe_noise_levels", self.probe_noise_levels)
        if self.save_samples < 0:
            raise ConfigError(f"must be ≥ 0 (got {self.save_samples})", key="eval.save_samples")


@dataclass(frozen=True)
class StopConfig:
    # Onset: mem_frac ≥ threshold at `patience` consecutive evaluations. 0.1 sits far above the
    # ≈0 a generalizing model scores (held-out images score 0) yet early on the rise to 1, and
    # patience 2 keeps one noisy evaluation of 128 samples from ending a trial.
    mem_frac_threshold: float = 0.1
    patience: int = 2
    # Loss-divergence onset (Marion & Wu): test loss exceeds train loss by `loss_gap` (relative)
    # over a moving window of `loss_window` evaluations. Recorded, never used to stop.
    loss_gap: float = 0.05
    loss_window: int = 3

    def validate(self) -> None:
        if not 0.0 < self.mem_frac_threshold <= 1.0:
            raise ConfigError(f"must be in (0, 1] (got {self.mem_frac_threshold})", key="stop.mem_frac_threshold")
        _positive("stop.patience", self.patience)
        _positive("stop.loss_gap", self.loss_gap)
        _positive("stop.loss_window", self.loss_window)


@dataclass(frozen=True)
class ExperimentConfig:
    """Everything one trial needs. Saved beside every result."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    stop: StopConfig = field(default_factory=StopConfig)

    def validate(self) -> "ExperimentConfig":
        for f in fields(self):
            getattr(self, f.name).validate()
        from raydiff import data  # local: data imports torch, config should stay light

        data.check_size(self.data)
        return self

    @property
    def budget_steps(self) -> int:
        t = self.train
        if t.budget_scaling == "fixed":
            return t.max_steps
        scale = (self.data.n_train / t.budget_ref_n) * (t.budget_ref_batch / t.batch_size)
        return max(1, round(t.max_steps * scale))

    @property
    def budget_reason(self) -> str:
        t = self.train
        if t.budget_scaling == "fixed":
            return f"fixed: max_steps={t.max_steps}"
        return (
            f"n_over_b: {t.max_steps} × (N={self.data.n_train}/{t.budget_ref_n})"
            f" × ({t.budget_ref_batch}/B={t.batch_size})"
        )

    @property
    def eval_every_steps(self) -> int:
        e = self.eval
        if e.every_images is not None:
            return max(1, math.ceil(e.every_images / self.train.batch_size))
        return int(e.every_steps)  # validated: one of the two is set

    def to_dict(self) -> dict[str, Any]:
        return _plain(dataclasses.asdict(self))


@dataclass(frozen=True)
class Resources:
    cpu: float = 1.0
    gpu: float = 0.0

    def validate(self) -> None:
        if self.cpu < 0:
            raise ConfigError(f"must be ≥ 0 (got {self.cpu})", key="sweep.resources.cpu")
        if self.gpu < 0:
            raise ConfigError(f"must be ≥ 0 (got {self.gpu})", key="sweep.resources.gpu")
        if self.gpu > 1 and self.gpu != int(self.gpu):
            raise ConfigError(f"a fraction must be < 1, else a whole number (got {self.gpu})", key="sweep.resources.gpu")


@dataclass(frozen=True)
class BudgetPlannerConfig:
    """Step budgets from the scaling law of the onsets seen so far (raydiff/tune/planner.py):
    trials run small-N first; once `min_onsets` onsets fit τ_mem with R² ≥ `min_r2`, a trial that
    starts gets safety × its predicted τ_mem (never more than its configured budget)."""

    enabled: bool = False
    safety: float = 3.0
    min_onsets: int = 3
    min_r2: float = 0.9

    def validate(self) -> None:
        if self.safety < 1.0:
            raise ConfigError(f"must be ≥ 1 (got {self.safety})", key="sweep.budget_planner.safety")
        if self.min_onsets < 3:
            raise ConfigError(f"must be ≥ 3 (got {self.min_onsets})", key="sweep.budget_planner.min_onsets")
        if not 0.0 < self.min_r2 <= 1.0:
            raise ConfigError(f"must be in (0, 1] (got {self.min_r2})", key="sweep.budget_planner.min_r2")


@dataclass(frozen=True)
class SweepConfig:
    name: str = "default"
    mode: str = "grid"  # grid: full product of the axes; one_factor: vary one axis at a time
    resources: Resources = field(default_factory=Resources)
    max_concurrent: int | None = None  # None: as many as the resources allow
    max_failures: int = 1  # restarts per trial from its last checkpoint
    storage: str | None = None  # local path or s3://…; None: ./results
    budget_planner: BudgetPlannerConfig = field(default_factory=BudgetPlannerConfig)

    def validate(self) -> None:
        if not self.name or any(c in self.name for c in "/\\ ") or self.name.startswith("."):
            raise ConfigError(f"must be a plain folder name (got {self.name!r})", key="sweep.name")
        _choice("sweep.mode", self.mode, SWEEP_MODES)
        self.resources.validate()
        if self.max_concurrent is not None:
            _positive("sweep.max_concurrent", self.max_concurrent)
        if self.max_failures < 0:
            raise ConfigError(f"must be ≥ 0 (got {self.max_failures})", key="sweep.max_failures")
        self.budget_planner.validate()


@dataclass(frozen=True)
class SearchSpace:
    """A validated search space: the base experiment, the axes and the sweep settings."""

    sweep: SweepConfig
    base: ExperimentConfig
    grid: dict[str, tuple[Any, ...]]  # dotted key → values; one_factor: the first value is the default point
    source: str = "<dict>"
    search: "SearchConfig | None" = None  # an Optuna search instead of the grid (config_search.py)

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
        return [apply_overrides(self.base, p) for p in self.points()]

    def with_mode(self, mode: str) -> "SearchSpace":
        """The same space swept in another mode (`raydiff sweep --mode`), its trials re-validated."""
        _choice("sweep.mode", mode, SWEEP_MODES)
        space = dataclasses.replace(self, sweep=dataclasses.replace(self.sweep, mode=mode))
        _check_points(space)
        return space

    def extremes(self) -> list[ExperimentConfig]:
        """The experiments at the corners of the space: every grid point, or, for an Optuna
        search, every combination of each axis's ends (its bounds, or all of its choices)."""
        if self.search is None:
            return self.experiments()
        return [apply_overrides(self.base, p) for p in self.search.corners()]

    def minima(self) -> dict[str, float]:
        """N_min, B_min, η_min over the sweep, for the normalized time of DESIGN.md."""
        exps = self.extremes()
        return {
            "n_train": min(e.data.n_train for e in exps),
            "batch_size": min(e.train.batch_size for e in exps),
            "lr": min(e.train.lr for e in exps),
        }


SECTIONS: dict[str, type] = {
    "data": DataConfig,
    "model": ModelConfig,
    "diffusion": DiffusionConfig,
    "train": TrainConfig,
    "eval": EvalConfig,
    "stop": StopConfig,
}
TOP_LEVEL = ("sweep", "grid", "search", *SECTIONS)


# ---------------------------------------------------------------- building from plain data


def build(cls: type, raw: Any, prefix: str) -> Any:
    """A dataclass from a mapping, checking every key and type. Does not run validate()."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"must be a mapping (got {_type_name(raw)})", key=prefix or None)
    hints = typing.get_type_hints(cls)
    names = [f.name for f in fields(cls)]
    kwargs = {}
    for key, value in raw.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if key not in names:
            raise ConfigError(_unknown(key, names), key=path)
        kwargs[key] = _coerce(value, hints[key], path)
    return cls(**kwargs)


def _coerce(value: Any, hint: Any, path: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], path)
    if dataclasses.is_dataclass(hint):
        return build(hint, value, path)
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"must be true or false (got {value!r})", key=path)
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"must be an integer (got {value!r})", key=path)
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads 1e-4 as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"must be a number (got {value!r})", key=path)
    if hint is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"must be a string (got {value!r})", key=path)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"must be a list (got {value!r})", key=path)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{path}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"must be a list of {len(args)} values (got {len(value)})", key=path)
        return tuple(_coerce(v, a, f"{path}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    return value


def _unknown(key: Any, allowed: list[str]) -> str:
    near = difflib.get_close_matches(str(key), allowed, n=1, cutoff=0.6)
    hint = f"; did you mean '{near[0]}'?" if near else ""
    return f"unknown key{hint} (allowed: {', '.join(allowed)})"


def _type_name(value: Any) -> str:
    return type(value).__name__


def _positive(key: str, value: float) -> None:
    if not value > 0:
        raise ConfigError(f"must be > 0 (got {value})", key=key)


def _choice(key: str, value: Any, allowed: tuple) -> None:
    if value not in allowed:
        raise ConfigError(f"must be one of {', '.join(map(str, allowed))} (got {value!r})", key=key)


def _plain(obj: Any) -> Any:
    """Tuples → lists, recursively, so configs round-trip through YAML and JSON."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def experiment_from_dict(raw: dict[str, Any], prefix: str = "") -> ExperimentConfig:
    """An ExperimentConfig from its plain form (as `to_dict` writes it), model presets resolved."""
    if not isinstance(raw, dict):
        raise ConfigError(f"must be a mapping (got {_type_name(raw)})", key=prefix or None)
    for key in raw:
        if key not in SECTIONS:
            raise ConfigError(_unknown(key, list(SECTIONS)), key=f"{prefix}{key}")
    sections = {}
    for name, cls in SECTIONS.items():
        section = raw.get(name) or {}
        if name == "model":
            section = _with_preset(section, f"{prefix}model")
        sections[name] = build(cls, section, f"{prefix}{name}")
    return ExperimentConfig(**sections)


def _with_preset(section: Any, path: str) -> Any:
    if not isinstance(section, dict) or section.get("preset") is None:
        return section
    from raydiff.models.unet import PRESETS

    preset = section["preset"]
    if preset not in PRESETS:
        raise ConfigError(f"unknown model preset {preset!r} (allowed: {', '.join(PRESETS)})", key=f"{path}.preset")
    return {**PRESETS[preset], **section}


def apply_overrides(base: ExperimentConfig, overrides: dict[str, Any]) -> ExperimentConfig:
    """`base` with dotted-key overrides applied, re-validated."""
    raw = base.to_dict()
    for key, value in overrides.items():
        section, _, name = key.partition(".")
        if key == "model.preset":
            # a preset replaces the architecture, so drop the base's architecture fields
            raw["model"] = {"preset": value, "dropout": raw["model"]["dropout"]}
            continue
        raw[section][name] = value
    return experiment_from_dict(raw).validate()


def _check_axis(key: Any, values: Any) -> tuple[Any, ...]:
    path = f"grid.{key}"
    section, _, name = str(key).partition(".")
    if section not in SECTIONS or not name:
        raise ConfigError(
            f"an axis is 'section.key' with section one of {', '.join(SECTIONS)}", key=path
        )
    names = [f.name for f in fields(SECTIONS[section])]
    if name not in names:
        raise ConfigError(_unknown(name, names), key=path)
    if section == "stop":
        raise ConfigError("the stop rule is one per sweep (the stopper applies it to every trial)", key=path)
    if not isinstance(values, list):
        raise ConfigError(f"must be a list of values (got {values!r})", key=path)
    if not values:
        raise ConfigError("empty axis: give at least one value", key=path)
    hint = typing.get_type_hints(SECTIONS[section])[name]
    checked = tuple(_coerce(v, hint, f"{path}[{i}]") for i, v in enumerate(values))
    if len(set(map(repr, checked))) != len(checked):
        raise ConfigError(f"repeats a value ({list(values)})", key=path)
    return checked


def _reject_repeated_keys(node: yaml.Node, path: str = "") -> None:
    """A key given twice in one mapping (YAML silently keeps the last one) is an error that names
    the key by its dotted path and both lines."""
    if isinstance(node, yaml.MappingNode):
        first_line: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value)
            dotted = f"{path}.{key}" if path else key
            line = key_node.start_mark.line + 1
            if key in first_line:
                raise ConfigError(f"line {line}: key '{dotted}' is given twice (first on line {first_line[key]})")
            first_line[key] = line
            _reject_repeated_keys(value_node, dotted)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _reject_repeated_keys(item, f"{path}[{i}]")


def parse_yaml(text: str) -> Any:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        if node is not None:
            _reject_repeated_keys(node)
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError(f"malformed YAML: {line}{e.problem or e.context}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"malformed YAML: {e}") from None


def search_space_from_dict(raw: Any, source: str = "<dict>") -> SearchSpace:
    try:
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise ConfigError(f"a search space is a mapping of {', '.join(TOP_LEVEL)} (got {_type_name(raw)})")
        for key in raw:
            if key not in TOP_LEVEL:
                raise ConfigError(_unknown(key, list(TOP_LEVEL)), key=str(key))
        sweep = build(SweepConfig, raw.get("sweep"), "sweep")
        sweep.validate()
        grid_raw = raw.get("grid") or {}
        if not isinstance(grid_raw, dict):
            raise ConfigError(f"must be a mapping of axis → list of values (got {grid_raw!r})", key="grid")
        grid = {str(k): _check_axis(k, v) for k, v in grid_raw.items()}
        base = experiment_from_dict({k: raw[k] for k in SECTIONS if k in raw}).validate()
        search = None
        if raw.get("search") is not None:
            from raydiff.config_search import parse_search  # local: it builds on this module

            search = parse_search(raw["search"], sweep, grid, base)
        space = SearchSpace(sweep=sweep, base=base, grid=grid, source=source, search=search)
        _check_points(space)
        return space
    except ConfigError as e:
        raise e.located(source) from None


def _check_points(space: SearchSpace) -> None:
    """Every trial validated before anything runs; an error names the axis values that broke it."""
    for point in space.search.corners() if space.search else space.points():
        try:
            apply_overrides(space.base, point)
        except ConfigError as e:
            where = ", ".join(f"{k}={v}" for k, v in point.items())
            raise ConfigError(f"{e.message} (in the trial with {where})", key=e.key) from None


def load_search_space(path: str | Path) -> SearchSpace:
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
    return search_space_from_dict(raw, source=str(path))


def packaged_search_space(name: str) -> Path:
    return Path(__file__).parent / "search_spaces" / f"{name}.yaml"
