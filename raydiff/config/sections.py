"""The frozen sections of an experiment and of a sweep, with their value checks.

One dataclass per concern (data, model, diffusion, train, eval, stop; the sweep's own settings),
each with a `validate()` that checks values only: pure, no file, no device, no dataset. What the
world must hold for a config to run (the dataset's size, image folders, embedding files, devices,
storage) is checked once by `raydiff.preflight`. Lengths, EMA and cadence are given in optimizer
steps or in images seen (`every_images`, `ema_halflife_images`); `ExperimentConfig` resolves both.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field, fields
from typing import Any

from raydiff import measures
from raydiff.config.schema import check_name, choice, field_hint, plain, positive, unknown_key
from raydiff.errors import ConfigError

DATASETS = ("digits", "cifar10", "gmm", "folder", "hf")  # hf: a Hugging Face `datasets` dataset (hub or local)
CROPS = ("none", "center")  # none: resize to a square as is; center: shorter side to image_size, then the centre square
ORDERS = ("rows", "sorted", "shuffled")  # "the first N" of an hf split: its rows as stored | sorted by order_column | shuffled by data.seed
OBJECTIVES = ("ddpm", "flow")
MODEL_KINDS = ("raydiff", "diffusers", "python")
FACTORY = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")  # package.module:callable
SAMPLERS = {"ddpm": ("ddim", "ancestral"), "flow": ("euler",)}
SWEEP_MODES = ("grid", "one_factor")
BUDGET_SCALINGS = ("fixed", "n_over_b")
OPTIMIZERS = ("adam", "sgd")
FEATURES = ("auto", "inception", "digits_classifier")
MEMORIZATION_SPACES = ("pixel", "features", "both")  # the older switch; eval.measures supersedes it
FID_REFERENCES = ("auto", "images", "splits")
FIGURE_PLACES = ("loop", "snapshots")  # figures (FID, SWD) measured in the training loop | on EMA snapshots, off it
CADENCES = ("uniform", "geometric")
STEP_GRIDS = ("rounded", "floored")  # DDPM's respaced sampling grid (diffusion/ddpm.py)
UNET_STYLES = ("raydiff", "bonnaire2025")  # models/unet.py STYLES: the blocks' details
FID_MODES = ("clean", "legacy_pytorch")  # clean-fid's resize before Inception (metrics/fid.py)
NORMALIZATIONS = ("symmetric", "centered")  # uint8 → [-1, 1] | [0, 1] minus the training mean per channel
BATCH_RULES = ("fixed", "min_n")  # B = batch_size | B = min(N, batch_cap or batch_size)
COMPILE_MODES = ("off", "default", "reduce-overhead", "max-autotune")
SAMPLINGS = ("replacement", "epochs")  # batches drawn with replacement | shuffled epochs
NATIVE_SHAPES = {"digits": (8, 1), "cifar10": (32, 3)}  # (image_size, channels), fixed by the data
DEFAULT_SHAPES = {"gmm": (8, 1), "folder": (32, 3), "hf": (32, 3)}  # configurable
CLASSES = {"digits": 10, "cifar10": 10}  # labelled datasets (gmm: its components; folder: none)


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
    seed: int = 0  # gmm sampling, and order: shuffled of an hf dataset; real datasets take the first N
    # the model's pixel range: symmetric: uint8 → [-1, 1]; centered: [0, 1] minus the per-channel
    # mean of the N training images (Bonnaire et al.'s loader), the same mean for every image
    normalization: str = "symmetric"
    # folder and hf: how an image becomes image_size × image_size (channels 1: grayscale, ITU-R 601)
    crop: str = "none"
    # hf: a dataset of the Hugging Face hub ("owner/name") or a local one (a save_to_disk folder, or a
    # folder of parquet/image files), read through the `datasets` library (pip install -e ".[hf]")
    hf_name: str | None = None
    hf_config: str | None = None  # the hub dataset's subset (config name)
    hf_revision: str | None = None  # a commit of the hub repository: pinned, so "the first N" never moves
    split: str = "train"  # the split(s) the first N come from; "train+valid+test" concatenates
    test_split: str | None = None  # held-out images: the first n_test of this split; None: the last n_test of `split`
    image_column: str = "image"
    label_column: str | None = None  # None: unlabeled
    label_classes: int | None = None  # labels 0..label_classes-1; needed with class_conditional
    order: str = "rows"
    order_column: str | None = None  # order: sorted

    @property
    def num_classes(self) -> int:
        """Class labels the network is conditioned on (0: unconditional)."""
        if not self.class_conditional:
            return 0
        if self.dataset == "hf":
            return self.label_classes or 0
        return self.gmm_components if self.dataset == "gmm" else CLASSES.get(self.dataset, 0)

    @property
    def shape(self) -> tuple[int, int]:
        """(image_size, channels), the dataset's own where the file leaves them unset."""
        size, channels = {**DEFAULT_SHAPES, **NATIVE_SHAPES}[self.dataset]
        return (self.image_size or size, self.channels or channels)

    def validate(self) -> None:
        choice("data.dataset", self.dataset, DATASETS)
        positive("data.n_train", self.n_train)
        positive("data.n_test", self.n_test)
        if self.image_size is not None:
            positive("data.image_size", self.image_size)
        if self.channels is not None:
            choice("data.channels", self.channels, (1, 3))
        positive("data.gmm_components", self.gmm_components)
        positive("data.gmm_std", self.gmm_std)
        native = NATIVE_SHAPES.get(self.dataset)
        if native and (self.image_size, self.channels) != (None, None) and self.shape != native:
            raise ConfigError(
                f"{self.dataset} images are {native[0]}×{native[0]} with {native[1]} channel(s);"
                " leave image_size and channels unset",
                key="data.image_size",
            )
        if self.dataset == "folder" and not self.root:
            raise ConfigError("the folder dataset needs a path of images", key="data.root")
        choice("data.normalization", self.normalization, NORMALIZATIONS)
        choice("data.crop", self.crop, CROPS)
        if self.crop != "none" and self.dataset not in ("folder", "hf"):
            raise ConfigError(f"crops folder and hf images; {self.dataset} images are used as they are", key="data.crop")
        choice("data.order", self.order, ORDERS)
        if self.label_classes is not None:
            positive("data.label_classes", self.label_classes)
        hf_keys = ("hf_name", "hf_config", "hf_revision", "test_split", "label_column", "label_classes", "order_column")
        if self.dataset != "hf":
            given = [k for k in hf_keys if getattr(self, k) is not None]
            if given or self.order != "rows" or self.split != "train" or self.image_column != "image":
                what = given[0] if given else ("order" if self.order != "rows" else "split" if self.split != "train" else "image_column")
                raise ConfigError(f"belongs to dataset: hf (this one is {self.dataset})", key=f"data.{what}")
            return
        if not self.hf_name:
            raise ConfigError("the hf dataset needs a name: a hub id (owner/name) or a local folder", key="data.hf_name")
        if self.hf_revision is not None and not re.fullmatch(r"[0-9a-f]{40}", self.hf_revision):
            raise ConfigError(f"must be a commit of the hub repository, 40 hex digits (got {self.hf_revision!r})",
                              key="data.hf_revision")  # fmt: skip
        for key in ("split", "image_column"):
            if not getattr(self, key):
                raise ConfigError("must not be empty", key=f"data.{key}")
        if (self.order == "sorted") != (self.order_column is not None):
            raise ConfigError("order: sorted needs order_column, and order_column needs order: sorted", key="data.order_column")
        if self.class_conditional and (self.label_column is None or self.label_classes is None):
            raise ConfigError("class_conditional on an hf dataset needs label_column and label_classes", key="data.class_conditional")


@dataclass(frozen=True)
class ModelConfig:
    preset: str | None = None  # fills the fields below it that the file leaves unset
    # whose network: raydiff's U-Net (models/unet.py), a diffusers UNet2DModel (models/external.py,
    # `pip install -e ".[diffusers]"`), or any module from a `python` factory
    kind: str = "raydiff"
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
    # the blocks' details (models/unet.py STYLES): raydiff's, or bonnaire2025: their Utils/Unet.py
    # (GroupNorm 8 groups, 4 heads, GELU time MLP, PyTorch default init, Dropout2d, their sinusoid)
    style: str = "raydiff"
    # kind: diffusers — UNet2DModel's own keys; unset ones follow the fields above:
    # block_out_channels = base_channels × channel_mults, layers_per_block = num_res_blocks,
    # attention blocks (AttnDownBlock2D/AttnUpBlock2D) at attn_resolutions, attention_head_dim = head_dim
    block_out_channels: tuple[int, ...] | None = None
    layers_per_block: int | None = None
    down_block_types: tuple[str, ...] | None = None
    up_block_types: tuple[str, ...] | None = None
    norm_num_groups: int = 32
    # kind: python — "package.module:callable" returning an nn.Module net(x, t[, class_labels]) → output
    # of x's shape, called with `kwargs` (and in_channels, image_size, num_classes where it takes them)
    factory: str | None = None
    kwargs: tuple[tuple[str, Any], ...] = ()

    def validate(self) -> None:
        choice("model.kind", self.kind, MODEL_KINDS)
        choice("model.style", self.style, UNET_STYLES)
        if self.style != "raydiff" and self.kind != "raydiff":
            raise ConfigError(f"is for raydiff's U-Net (model.kind: raydiff; this model is {self.kind})", key="model.style")
        if self.style == "bonnaire2025":
            widths = {self.base_channels * m for m in self.channel_mults}
            if any(w % 8 for w in widths):
                raise ConfigError(f"bonnaire2025 normalizes with 8 groups: every width {sorted(widths)} must divide by 8", key="model.style")
        if self.kind == "python":
            if not self.factory or not FACTORY.fullmatch(self.factory):
                raise ConfigError(f"kind python needs a factory 'package.module:callable' (got {self.factory!r})", key="model.factory")
        elif self.factory is not None or self.kwargs:
            raise ConfigError(f"is for model.kind: python (this model is {self.kind})", key="model.factory" if self.factory else "model.kwargs")
        if self.kind == "diffusers":
            self._validate_diffusers()
        elif any(v is not None for v in (self.block_out_channels, self.layers_per_block, self.down_block_types, self.up_block_types)):
            raise ConfigError(f"block_out_channels, layers_per_block and the block types are for model.kind: diffusers (this model is {self.kind})", key="model.kind")
        positive("model.base_channels", self.base_channels)
        if not self.channel_mults or any(m <= 0 for m in self.channel_mults):
            raise ConfigError("must be a non-empty list of positive integers", key="model.channel_mults")
        positive("model.num_res_blocks", self.num_res_blocks)
        positive("model.head_dim", self.head_dim)
        if self.emb_dim is not None:
            positive("model.emb_dim", self.emb_dim)
        if self.noise_dim is not None:
            positive("model.noise_dim", self.noise_dim)
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"must be in [0, 1) (got {self.dropout})", key="model.dropout")

    def _validate_diffusers(self) -> None:
        channels = self.diffusers_channels
        if not channels or any(c <= 0 for c in channels):
            raise ConfigError("must be a non-empty list of positive integers", key="model.block_out_channels")
        if self.layers_per_block is not None:
            positive("model.layers_per_block", self.layers_per_block)
        positive("model.norm_num_groups", self.norm_num_groups)
        if any(c % self.norm_num_groups for c in channels):
            raise ConfigError(f"every block's channels {list(channels)} must divide by model.norm_num_groups ({self.norm_num_groups})", key="model.norm_num_groups")
        for key, types in (("model.down_block_types", self.down_block_types), ("model.up_block_types", self.up_block_types)):
            if types is not None and len(types) != len(channels):
                raise ConfigError(f"needs one block type per level ({len(channels)}; got {len(types)})", key=key)

    @property
    def diffusers_channels(self) -> tuple[int, ...]:
        """UNet2DModel's block_out_channels: given, or base_channels × channel_mults."""
        return tuple(self.block_out_channels or (self.base_channels * m for m in self.channel_mults))


@dataclass(frozen=True)
class DiffusionConfig:
    objective: str = "ddpm"  # ddpm: ε-prediction; flow: rectified flow, velocity prediction
    num_timesteps: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 2e-2
    sampler: str | None = None  # None: ddim for ddpm, euler for flow
    sample_steps: int = 50
    guidance: float = 0.0  # classifier-free guidance weight (0: plain conditional model)
    # DDPM only (diffusion/ddpm.py). clip_x0: clamp DDIM's predicted x0 to [-1, 1] at every step
    # (false: Bonnaire et al.'s sampler). step_grid: rounded: sample_steps network calls ending
    # on x̂₀; floored: sample_steps calls between floor(linspace(0, T − 1, sample_steps + 1)),
    # ending on x at index 0 (theirs, 99 calls). t_min: training t uniform on {t_min … T − 1}
    # (theirs: 1)
    clip_x0: bool = True
    step_grid: str = "rounded"
    t_min: int = 0

    def validate(self) -> None:
        choice("diffusion.objective", self.objective, OBJECTIVES)
        choice("diffusion.step_grid", self.step_grid, STEP_GRIDS)
        if not 0 <= self.t_min < self.num_timesteps:
            raise ConfigError(f"must be in 0..num_timesteps − 1 ({self.num_timesteps - 1}) (got {self.t_min})", key="diffusion.t_min")
        if self.objective == "flow" and (not self.clip_x0 or self.step_grid != "rounded" or self.t_min):
            raise ConfigError("clip_x0, step_grid and t_min are DDPM's (this objective is flow)", key="diffusion.objective")
        positive("diffusion.num_timesteps", self.num_timesteps)
        if not 0.0 < self.beta_start < self.beta_end < 1.0:
            raise ConfigError(
                f"need 0 < beta_start < beta_end < 1 (got {self.beta_start}, {self.beta_end})",
                key="diffusion.beta_end",
            )
        if self.sampler is not None:
            choice("diffusion.sampler", self.sampler, SAMPLERS[self.objective])
        positive("diffusion.sample_steps", self.sample_steps)
        if self.objective == "ddpm" and self.step_grid == "floored" and self.sample_steps >= self.num_timesteps:
            raise ConfigError(
                f"the floored grid takes ≤ num_timesteps − 1 ({self.num_timesteps - 1}) steps (got {self.sample_steps})",
                key="diffusion.sample_steps",
            )
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
    # the batch: fixed: batch_size; min_n: min(N, batch_cap or batch_size) (Bonnaire et al.: min(n, 512)).
    # ExperimentConfig.batch resolves it; read that, not batch_size, for the B a trial trains with
    batch_rule: str = "fixed"
    batch_cap: int | None = None  # min_n only; None: batch_size
    # replacement: every batch drawn uniformly with replacement; epochs: shuffled epochs without
    # replacement (a fresh permutation of the N images per epoch, a batch may straddle two epochs)
    sampling: str = "replacement"
    # torch.compile of the network for the training step: off | default | reduce-overhead (CUDA
    # graphs) | max-autotune. Evaluations (and `raydiff measure`) sample through the evaluated
    # network compiled once in torch.compile's default mode; the EMA update, snapshots and
    # checkpoints use the plain module. Measured by benchmarks/gpu.sh; on CPU it compiles for
    # minutes and is no faster (RESULTS.md)
    compile: str = "off"

    def validate(self) -> None:
        positive("train.batch_size", self.batch_size)
        choice("train.compile", self.compile, COMPILE_MODES)
        choice("train.batch_rule", self.batch_rule, BATCH_RULES)
        if self.batch_cap is not None:
            positive("train.batch_cap", self.batch_cap)
            if self.batch_cap > LIMITS["train.batch_size"]:
                raise ConfigError(f"must be ≤ {LIMITS['train.batch_size']:,} (got {self.batch_cap:,})", key="train.batch_cap")
            if self.batch_rule != "min_n":
                raise ConfigError("applies only with train.batch_rule: min_n", key="train.batch_cap")
        choice("train.sampling", self.sampling, SAMPLINGS)
        positive("train.lr", self.lr)
        positive("train.max_steps", self.max_steps)
        choice("train.budget_scaling", self.budget_scaling, BUDGET_SCALINGS)
        positive("train.budget_ref_n", self.budget_ref_n)
        positive("train.budget_ref_batch", self.budget_ref_batch)
        if not all(0.0 <= b < 1.0 for b in self.adam_betas):
            raise ConfigError(f"must be two numbers in [0, 1) (got {list(self.adam_betas)})", key="train.adam_betas")
        positive("train.adam_eps", self.adam_eps)
        choice("train.optimizer", self.optimizer, OPTIMIZERS)
        if not 0.0 <= self.momentum < 1.0:
            raise ConfigError(f"must be in [0, 1) (got {self.momentum})", key="train.momentum")
        if self.weight_decay < 0:
            raise ConfigError(f"must be ≥ 0 (got {self.weight_decay})", key="train.weight_decay")
        if self.grad_clip is not None:
            positive("train.grad_clip", self.grad_clip)
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"must be in [0, 1) (got {self.ema_decay})", key="train.ema_decay")
        if self.ema_halflife_images is not None:
            positive("train.ema_halflife_images", self.ema_halflife_images)
        choice("train.device", self.device, ("auto", "cpu", "cuda"))

    def ema_beta(self, batch: int | None = None) -> float:
        """EMA decay per optimizer step at B = `batch` (default batch_size; ExperimentConfig.batch
        resolves the batch rule). A half-life in images keeps B-sweeps comparable."""
        if self.ema_halflife_images is not None:
            return 0.5 ** ((batch or self.batch_size) / self.ema_halflife_images)
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
    # refinement stops once the bracket is within this fraction of τ̂ (its upper end): below the
    # sampling noise of one memorization test there is nothing more to learn (None: to one snapshot)
    refine_fraction: float | None = None
    # onset in sight: once the latest mem_frac reaches this fraction of stop.mem_frac_threshold,
    # the following evaluations come after the smallest gap (every_steps) until the onset fires,
    # so a geometric cadence does not run a long gap past an onset it could see coming (None: off;
    # a crossing's confirming evaluations come after the smallest gap either way)
    approach_fraction: float | None = None
    num_samples: int = 128  # generated samples per evaluation for the memorization test
    # the sequential test: generate this many samples, then as many again as there are (r, 2r,
    # 4r, … in total), and stop once the fraction's interval lies wholly on one side of stop.mem_frac_threshold
    # (metrics/memorization.settled), or at num_samples. A generalizing model (f ≈ 0) is settled
    # by a few dozen samples; near onset the full count is used (None: all at once)
    sequential_round: int | None = None
    mem_sample_steps: int | None = None  # sampler steps for those samples; None: diffusion.sample_steps
    sample_batch: int = 512
    sample_seed: int = 1234  # same initial noise at every evaluation
    mem_ratio: float = 1.0 / 3.0  # Bonnaire et al.: memorized when ‖x−a₁‖/‖x−a₂‖ < 1/3
    # the pixel ratio test on the sampler's float output (Bonnaire et al.'s compute_fmem.py reads
    # the saved float tensors) instead of on the samples rounded to uint8 pixels (raydiff)
    mem_on_floats: bool = False
    memorization_space: str = "pixel"  # pixel | features | both: the older switch (eval.measures supersedes it)
    # the measures a trial runs (names in raydiff/measures' registry: memorization tests, loss,
    # figures such as fid and swd). None: memorization_space's tests, the loss probes, and FID and
    # SWD where their cadence is on. ExperimentConfig.measured resolves it.
    measures: tuple[str, ...] | None = None
    mem_cosine: float = 0.6  # Marion & Wu: memorized when max cosine similarity > 0.6
    embedding: str | None = None  # TorchScript embedding (SSCD) path or URL, for features space
    fid_every: int = 4  # FID at every k-th evaluation (0: never); FID is the costly part
    fid_samples: int = 512
    # FID also in fidelity-only evaluations (no memorization test) on their own schedule from
    # this step: spaced like the evaluations (geometric with eval.geometric_ratio, or uniform).
    # They draw no training randomness, so they add fidelity points without moving τ_mem.
    fid_every_steps: int | None = None
    fid_features: str = "auto"  # auto: inception for 32×32 RGB, digits_classifier for digits
    # clean-fid's mode for Inception: clean (PIL bicubic resize to 299) or legacy_pytorch
    # (bilinear F.interpolate, as pytorch-fid resizes inside the network: Bonnaire et al.'s FID)
    fid_mode: str = "clean"
    # the feature networks' arithmetic (Inception, SSCD, DINOv2, CLIP, the digits classifier):
    # fp32, or bf16 autocast (on a GPU about twice as fast; features agree with fp32 to a cosine
    # of 0.999 and FID within 2%: tests/loops/test_gpu_ready.py). fp32 unless asked
    feature_precision: str = "fp32"
    fid_split: str = "test"  # the split `fid` compares with (test | train); `fid_train` is always train
    fid_reference: str = "auto"  # auto: clean-fid's precomputed split statistics where they exist
    # (CIFAR-10, Inception, clean mode, 32 px), else the data's images; images: always the images.
    # splits (Marion & Wu): each split against its own images with as many generated samples as
    # it holds — test: the n_test held-out images; train: the N training images (fid_samples is
    # then not used: ExperimentConfig.fid_counts); the references' features once per trial
    swd_samples: int = 2000  # sliced Wasserstein distance in FID feature space on FID evaluations, between
    # the first swd_samples FID samples and as many held-out images (sliced_wasserstein) and
    # training images (sliced_wasserstein_train; at most N) (0: off)
    swd_projections: int = 1000
    # where the figures (the fidelity measures: FID, SWD) are measured. loop: in the evaluations,
    # as the trial trains. snapshots: the trial saves its EMA weights on the figure schedule (the
    # steps FID would have been measured at) into <storage>/<sweep>/snapshots/, and `raydiff measure`
    # measures them off the training loop — again, with another measure, without retraining
    figures: str = "loop"
    snapshot_budget_mb: float = 2048.0  # per trial: snapshots past this many MB are not saved (noted)
    probe_images: int = 64  # fixed images for the train/test loss probes
    probe_noise_levels: int = 8
    use_ema: bool = True  # evaluate the EMA weights (when EMA is on)
    # the memorization tests on the raw weights too, when the EMA weights are evaluated: the EMA
    # trails the raw weights by ~1/(1-β) steps, a lag in τ that flattens B and η exponents.
    # None: only the tests whose `<test>_raw` definition stop.on names (a raw test costs a second
    # sampling pass); true: every test with a raw variant; false: never
    raw_memorization: bool | None = None
    save_samples: int = 16  # generated samples stored per evaluation (0: none) for figures
    # per memorization test (a registry name), its threshold instead of the test's conventional one
    mem_thresholds: tuple[tuple[str, Any], ...] = ()
    # per feature network (dinov2, clip), the hub id or local folder it is loaded from
    # (metrics/features.DEFAULT_MODELS otherwise)
    feature_models: tuple[tuple[str, Any], ...] = ()

    def resolved_measures(self) -> tuple[str, ...]:
        """eval.measures, or the older settings' equivalent: memorization_space's tests (pixel,
        features or both), the loss probes, FID where its cadence is on and SWD with it."""
        if self.measures is not None:
            return tuple(self.measures)
        tests = {"pixel": ("pixel",), "features": ("features",), "both": ("pixel", "features")}[self.memorization_space]
        fidelity = ("fid", "swd") if self.swd_samples else ("fid",)
        return (*tests, "loss", *(fidelity if (self.fid_every or self.fid_every_steps) else ()))

    def validate(self) -> None:
        self._validate_tests()
        if self.every_steps is None and self.every_images is None:
            raise ConfigError("set every_steps or every_images", key="eval.every_steps")
        if self.every_steps is not None:
            positive("eval.every_steps", self.every_steps)
        if self.every_images is not None:
            positive("eval.every_images", self.every_images)
        choice("eval.cadence", self.cadence, CADENCES)
        if self.geometric_ratio <= 1.0:
            raise ConfigError(f"must be > 1 (got {self.geometric_ratio})", key="eval.geometric_ratio")
        if self.approach_fraction is not None and not 0.0 < self.approach_fraction < 1.0:
            raise ConfigError(f"must be in (0, 1) (got {self.approach_fraction})", key="eval.approach_fraction")
        if self.refine_snapshots < 0:
            raise ConfigError(f"must be ≥ 0 (got {self.refine_snapshots})", key="eval.refine_snapshots")
        if self.refine_fraction is not None and not 0.0 < self.refine_fraction < 1.0:
            raise ConfigError(f"must be in (0, 1) (got {self.refine_fraction})", key="eval.refine_fraction")
        if self.num_samples < 2:
            raise ConfigError(f"must be ≥ 2 (got {self.num_samples})", key="eval.num_samples")
        if self.sequential_round is not None and self.sequential_round < 1:
            # a round of num_samples or more is one look at all of them (a space's round survives
            # an override of num_samples)
            raise ConfigError(f"must be ≥ 1 (got {self.sequential_round})", key="eval.sequential_round")
        positive("eval.sample_batch", self.sample_batch)
        if self.mem_sample_steps is not None:
            positive("eval.mem_sample_steps", self.mem_sample_steps)
        if not 0.0 < self.mem_ratio < 1.0:
            raise ConfigError(f"must be in (0, 1) (got {self.mem_ratio})", key="eval.mem_ratio")
        choice("eval.memorization_space", self.memorization_space, MEMORIZATION_SPACES)
        if self.measures is not None:
            if not self.measures:
                raise ConfigError(f"name at least one measure ({', '.join(measures.names())})", key="eval.measures")
            for i, name in enumerate(self.measures):
                choice(f"eval.measures[{i}]", name, measures.names())
            if len(set(self.measures)) != len(self.measures):
                raise ConfigError(f"names a measure twice ({list(self.measures)})", key="eval.measures")
            if self.memorization_space != "pixel":
                raise ConfigError("set eval.measures or eval.memorization_space, not both (measures supersedes it)", key="eval.measures")
        if not -1.0 < self.mem_cosine < 1.0:
            raise ConfigError(f"must be in (-1, 1) (got {self.mem_cosine})", key="eval.mem_cosine")
        if "embedding" in needs(self.resolved_measures()) and not self.embedding:
            raise ConfigError("feature-space memorization needs an embedding path or URL", key="eval.embedding")
        if self.fid_every < 0:
            raise ConfigError(f"must be ≥ 0 (got {self.fid_every})", key="eval.fid_every")
        if self.fid_every_steps is not None:
            positive("eval.fid_every_steps", self.fid_every_steps)
        if self.fid_samples < 2:
            raise ConfigError(f"must be ≥ 2 (got {self.fid_samples})", key="eval.fid_samples")
        choice("eval.fid_features", self.fid_features, FEATURES)
        choice("eval.fid_split", self.fid_split, ("test", "train"))
        choice("eval.feature_precision", self.feature_precision, ("fp32", "bf16"))
        choice("eval.fid_mode", self.fid_mode, FID_MODES)
        choice("eval.fid_reference", self.fid_reference, FID_REFERENCES)
        if self.swd_samples < 0 or self.swd_samples == 1:
            raise ConfigError(f"must be 0 (off) or ≥ 2 (got {self.swd_samples})", key="eval.swd_samples")
        positive("eval.swd_projections", self.swd_projections)
        choice("eval.figures", self.figures, FIGURE_PLACES)
        positive("eval.snapshot_budget_mb", self.snapshot_budget_mb)
        positive("eval.probe_images", self.probe_images)
        positive("eval.probe_noise_levels", self.probe_noise_levels)
        if self.save_samples < 0:
            raise ConfigError(f"must be ≥ 0 (got {self.save_samples})", key="eval.save_samples")

    def _validate_tests(self) -> None:
        """mem_thresholds names registered memorization tests, each with a threshold in its score's
        range; feature_models names feature networks of registered cosine tests, each a non-empty id."""
        tests = measures.names("memorization")
        for name, value in self.mem_thresholds:
            key = f"eval.mem_thresholds.{name}"
            if name not in tests:
                raise ConfigError(f"unknown memorization test (allowed: {', '.join(tests)})", key=key)
            lo, hi = (0.0, 1.0) if measures.get(name).score_name == "ratio" else (-1.0, 1.0)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo < value < hi:
                raise ConfigError(f"must be a number in ({lo:g}, {hi:g}) (got {value!r})", key=key)
        networks = sorted({getattr(measures.get(n), "network", "") for n in tests} - {"", "embedding", "inception"})
        for name, value in self.feature_models:
            key = f"eval.feature_models.{name}"
            if name not in networks:
                raise ConfigError(f"unknown feature network (allowed: {', '.join(networks)})", key=key)
            if not isinstance(value, str) or not value.strip():
                raise ConfigError(f"must be a hub id or a folder (got {value!r})", key=key)


def needs(names: tuple[str, ...]) -> set[str]:
    """What the named measures need between them (registry `needs`: samples, probes, networks)."""
    return {n for m in names for n in measures.get(m).needs}


@dataclass(frozen=True)
class StopConfig:
    # Onset by the ratio test (pixel, features, raw weights): mem_frac ≥ threshold at `patience`
    # consecutive evaluations. 0.1 sits far above the ≈0 a generalizing model scores (held-out
    # images score 0) yet early on the rise to 1, and patience 2 keeps one noisy evaluation of
    # 128 samples from ending a trial.
    mem_frac_threshold: float = 0.1
    patience: int = 2
    # Loss-divergence onset (Marion & Wu): the test loss departs from the train loss by `loss_gap`
    # (relative, against the gap at the first evaluation), confirmed over `loss_window` evaluations.
    loss_gap: float = 0.05
    loss_window: int = 3
    # The stop rule: the onset definitions that must all have fired (metrics/stop.py), then
    # `continue_for` × τ more steps, so the rise of f_mem after onset is observed, not cut off.
    # None: the trial's memorization test (pixel; features when only that is measured).
    on: tuple[str, ...] | None = None
    continue_for: float = 0.0
    # The headline τ_mem: the onset definition `raydiff analyze` reads tau_mem_step by, fits, draws
    # the collapse figures with and names in the report (pixel | features | pixel_raw | loss;
    # Marion & Wu: loss). None: mem_frac, the trial's memorization test
    headline: str | None = None

    def validate(self) -> None:
        if not 0.0 < self.mem_frac_threshold <= 1.0:
            raise ConfigError(f"must be in (0, 1] (got {self.mem_frac_threshold})", key="stop.mem_frac_threshold")
        positive("stop.patience", self.patience)
        positive("stop.loss_gap", self.loss_gap)
        positive("stop.loss_window", self.loss_window)
        if self.on is not None and not self.on:
            raise ConfigError(f"name at least one onset definition ({', '.join(measures.definition_names())})", key="stop.on")
        for i, d in enumerate(self.on or ()):
            choice(f"stop.on[{i}]", d, measures.definition_names())
        if self.on and len(set(self.on)) != len(self.on):
            raise ConfigError(f"names a definition twice ({list(self.on)})", key="stop.on")
        if self.headline is not None:
            choice("stop.headline", self.headline, measures.definition_names())
        if not 0.0 <= self.continue_for <= 100.0:
            raise ConfigError(f"must be in [0, 100], a fraction of τ (got {self.continue_for})", key="stop.continue_for")


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
        """Value checks of every section and across them (pure; the dataset's size and whether
        the network runs on its images are preflight checks)."""
        for f in fields(self):
            getattr(self, f.name).validate()
        for key, limit in LIMITS.items():
            section, _, name = key.partition(".")
            value = getattr(getattr(self, section), name)
            if value is not None and value > limit:
                raise ConfigError(f"must be ≤ {limit:,} (got {value:,})", key=key)
        for key in SEEDS:
            section, _, name = key.partition(".")
            value = getattr(getattr(self, section), name)
            if not 0 <= value <= MAX_SEED:
                raise ConfigError(f"must be in 0..{MAX_SEED:,} (got {value:,})", key=key)
        for key in ("model.channel_mults", "model.attn_resolutions"):
            values = getattr(self.model, key.partition(".")[2])
            if len(values) > 8 or any(v > 1024 for v in values):
                raise ConfigError(f"at most 8 values, each ≤ 1024 (got {list(values)})", key=key)
        if self.budget_steps > LIMITS["train.max_steps"]:
            raise ConfigError(
                f"the scaled budget is {self.budget_steps:,} steps ({self.budget_reason}); at most {LIMITS['train.max_steps']:,}",
                key="train.max_steps",
            )
        definitions = self.definitions
        for d in self.stop.on or ():
            if d not in definitions:
                raise ConfigError(
                    f"stops on {d!r}, which this trial does not measure (measures: {', '.join(self.measured)};"
                    f" raw weights: {', '.join(self.raw_tests) or 'none'})",
                    key="stop.on",
                )
        if not self.memorization_tests and not self.stop.on:
            raise ConfigError("runs no memorization test: name one in eval.measures, or stop.on's definitions", key="eval.measures")
        if self.stop.headline and self.stop.headline not in definitions:
            raise ConfigError(
                f"names {self.stop.headline!r}, which this trial does not measure (measures: {', '.join(self.measured)};"
                f" raw weights: {', '.join(self.raw_tests) or 'none'})",
                key="stop.headline",
            )
        if self.eval.fid_reference == "splits" and (self.eval.fid_every or self.eval.fid_every_steps):
            for key, count in (("data.n_train", self.data.n_train), ("data.n_test", self.data.n_test)):
                if count < 2:  # each split's FID draws as many samples as the split holds: a covariance needs two
                    raise ConfigError(f"must be ≥ 2 with eval.fid_reference: splits (got {count})", key=key)
        steps = self.eval.mem_sample_steps
        if steps is not None and self.diffusion.step_grid == "floored" and steps >= self.diffusion.num_timesteps:
            raise ConfigError(
                f"the floored grid takes ≤ diffusion.num_timesteps − 1 ({self.diffusion.num_timesteps - 1}) steps (got {steps})",
                key="eval.mem_sample_steps",
            )
        if steps is not None and self.diffusion.objective == "ddpm" and steps > self.diffusion.num_timesteps:
            raise ConfigError(
                f"must be ≤ diffusion.num_timesteps ({self.diffusion.num_timesteps}) (got {steps})", key="eval.mem_sample_steps"
            )
        return self

    @property
    def budget_steps(self) -> int:
        t = self.train
        if t.budget_scaling == "fixed":
            return t.max_steps
        scale = (self.data.n_train / t.budget_ref_n) * (t.budget_ref_batch / self.batch)
        return max(1, round(t.max_steps * scale))

    @property
    def budget_reason(self) -> str:
        t = self.train
        if t.budget_scaling == "fixed":
            return f"fixed: max_steps={t.max_steps}"
        return (
            f"n_over_b: {t.max_steps} × (N={self.data.n_train}/{t.budget_ref_n})"
            f" × ({t.budget_ref_batch}/B={self.batch})"
        )

    @property
    def measured(self) -> tuple[str, ...]:
        """The measures this trial runs (registry names, eval.measures resolved)."""
        return self.eval.resolved_measures()

    @property
    def memorization_tests(self) -> tuple[str, ...]:
        """The memorization tests among them, in order: the first is the one `mem_frac` reports."""
        return tuple(m for m in self.measured if measures.get(m).kind == "memorization")

    @property
    def raw_tests(self) -> tuple[str, ...]:
        """The memorization tests also run on the raw weights, when the EMA's are evaluated (the EMA
        trails the raw weights by ~1/(1−β) steps): those whose `<test>_raw` definition stop.on
        names, or, with eval.raw_memorization true, every test that has a raw variant."""
        if not (self.train.ema_beta() > 0 and self.eval.use_ema) or self.eval.raw_memorization is False:
            return ()
        capable = [m for m in self.memorization_tests if measures.get(m).raw_variant]
        if self.eval.raw_memorization:
            return tuple(capable)
        return tuple(m for m in capable if m + measures.RAW in (self.stop.on or ()))

    @property
    def measures_raw(self) -> bool:
        """Memorization is measured on the raw weights too (their EMA is what is evaluated)."""
        return bool(self.raw_tests)

    @property
    def definitions(self) -> tuple[str, ...]:
        """The onset definitions this trial measures: its onset-capable measures, then raw variants."""
        ran = set(self.measured)
        raw = {m + measures.RAW for m in self.raw_tests}
        return tuple(d.name for d in measures.definitions() if (d.name in raw if d.raw else d.measure in ran))

    @property
    def fid_counts(self) -> dict[str, int]:
        """Generated samples each split's FID compares with its reference: eval.fid_samples for
        both, or with eval.fid_reference `splits` as many as the split's reference holds (Marion &
        Wu: the n_test held-out images, the N training images). The figures draw the largest."""
        e, d = self.eval, self.data
        if e.fid_reference == "splits":
            return {"test": d.n_test, "train": d.n_train}
        return {"test": e.fid_samples, "train": e.fid_samples}

    @property
    def figure_samples(self) -> int:
        """Samples one measurement of the figures draws (the first k of them serve a split of k)."""
        return max(self.fid_counts.values())

    @property
    def eval_every_steps(self) -> int:
        e = self.eval
        if e.every_images is not None:
            return max(1, math.ceil(e.every_images / self.batch))
        return int(e.every_steps)  # validated: one of the two is set

    @property
    def batch(self) -> int:
        """B, the images per optimizer step: train.batch_size, or under batch_rule min_n
        min(N, batch_cap or batch_size) (Bonnaire et al.: min(n, 512))."""
        t = self.train
        if t.batch_rule == "min_n":
            return min(self.data.n_train, t.batch_cap or t.batch_size)
        return t.batch_size

    def to_dict(self) -> dict[str, Any]:
        return plain(dataclasses.asdict(self))


@dataclass(frozen=True)
class Resources:
    cpu: float = 1.0
    gpu: float = 0.0  # a fraction < 1 packs trials on one GPU, each capped to that share of its memory
    custom: tuple[tuple[str, float], ...] = ()  # Ray custom resources, e.g. [[h100, 1]]: node types that have them

    def validate(self, key: str = "sweep.resources") -> None:
        if self.cpu < 0:
            raise ConfigError(f"must be ≥ 0 (got {self.cpu})", key=f"{key}.cpu")
        if self.gpu < 0:
            raise ConfigError(f"must be ≥ 0 (got {self.gpu})", key=f"{key}.gpu")
        if self.cpu > 10_000 or self.gpu > 1024:
            raise ConfigError(f"more than one node holds (cpu ≤ 10,000, gpu ≤ 1,024; got {self.cpu:g}, {self.gpu:g})", key=key)
        if self.gpu > 1 and self.gpu != int(self.gpu):
            raise ConfigError(f"a fraction must be < 1, else a whole number (got {self.gpu})", key=f"{key}.gpu")
        names = [name for name, _ in self.custom]
        if len(set(names)) != len(names) or any(not n or n in ("CPU", "GPU", "memory") for n in names):
            raise ConfigError(f"custom resources are distinct names other than CPU, GPU, memory (got {names})", key=f"{key}.custom")
        if any(not 0 < v <= 10_000 for _, v in self.custom):
            raise ConfigError(f"custom amounts must be in (0, 10,000] (got {list(self.custom)})", key=f"{key}.custom")


@dataclass(frozen=True)
class ResourceRule:
    """A trial's request by its model: the first rule whose preset and parameter bound match."""

    preset: str | None = None  # this model preset (None: any)
    max_params: int | None = None  # networks with at most this many parameters (None: any size)
    cpu: float = 1.0
    gpu: float = 0.0
    custom: tuple[tuple[str, float], ...] = ()

    @property
    def resources(self) -> Resources:
        return Resources(self.cpu, self.gpu, self.custom)

    def validate(self, key: str) -> None:
        if self.preset is None and self.max_params is None:
            raise ConfigError("a rule names a preset or a max_params bound (the default is sweep.resources)", key=key)
        if self.max_params is not None:
            positive(f"{key}.max_params", self.max_params)
        self.resources.validate(key)


@dataclass(frozen=True)
class OnsetPrior:
    """τ_mem assumed before any onset is known: `tau` steps at the point (n_train, batch_size, lr),
    and at other points τ ∝ N / (B·η) (Marion & Wu, arXiv 2605.06077: τ_mem grows ∝ N and shrinks
    with B and η). An assumption the space states; the dry run's cost model runs on it."""

    tau: float
    n_train: int
    batch_size: int
    lr: float

    def validate(self, key: str = "sweep.budget_planner.prior") -> None:
        for name in ("tau", "n_train", "batch_size", "lr"):
            positive(f"{key}.{name}", getattr(self, name))


@dataclass(frozen=True)
class BudgetPlannerConfig:
    """Step budgets from the scaling law of the onsets seen so far (raydiff/tune/planner.py):
    trials run small-N first; once `min_onsets` onsets fit τ_mem with R² ≥ `min_r2`, a trial that
    starts gets safety × its predicted τ_mem (never more than its configured budget)."""

    enabled: bool = False
    safety: float = 3.0
    min_onsets: int = 3
    min_r2: float = 0.9
    # the onset assumed before any is seen (`raydiff sweep --dry-run`'s cost); None: none stated
    prior: OnsetPrior | None = None

    def validate(self) -> None:
        if self.prior is not None:
            self.prior.validate()
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
    # per-trial requests by model (tune/capacity.py): small presets packed as GPU fractions,
    # large ones a whole GPU on the node types that fit them; trials no rule matches get `resources`
    resources_by: tuple[ResourceRule, ...] = ()
    max_concurrent: int | None = None  # None: as many as the resources allow
    max_failures: int = 1  # restarts per trial from its last checkpoint
    storage: str | None = None  # local path or s3://…; None: ./results
    # checkpoints (model, EMA, optimizer): every k evaluations or T minutes, whichever first, and
    # always at onset and at the stop; Ray keeps the newest `keep_checkpoints` of a trial
    checkpoint_every: int = 4
    checkpoint_minutes: float | None = 10.0
    keep_checkpoints: int = 2
    budget_planner: BudgetPlannerConfig = field(default_factory=BudgetPlannerConfig)
    # the Ray tasks that measure the snapshots of trials with eval.figures: snapshots, as they land
    # (tune/figures.py): their own request, beside the trials'
    measure_resources: Resources = field(default_factory=Resources)

    def validate(self) -> None:
        check_name(self.name, "sweep.name")
        choice("sweep.mode", self.mode, SWEEP_MODES)
        self.resources.validate()
        for i, rule in enumerate(self.resources_by):
            rule.validate(f"sweep.resources_by[{i}]")
        if self.max_concurrent is not None:
            positive("sweep.max_concurrent", self.max_concurrent)
            if self.max_concurrent > 100_000:
                raise ConfigError(f"must be ≤ 100,000 (got {self.max_concurrent:,})", key="sweep.max_concurrent")
        if not 1 <= self.checkpoint_every <= 10_000:
            raise ConfigError(f"must be in 1..10,000 evaluations (got {self.checkpoint_every})", key="sweep.checkpoint_every")
        if self.checkpoint_minutes is not None and not 0 < self.checkpoint_minutes <= 10_000:
            raise ConfigError(f"must be in (0, 10,000] minutes (got {self.checkpoint_minutes})", key="sweep.checkpoint_minutes")
        if not 1 <= self.keep_checkpoints <= 100:
            raise ConfigError(f"must be in 1..100 (got {self.keep_checkpoints})", key="sweep.keep_checkpoints")
        if not 0 <= self.max_failures <= 1000:
            raise ConfigError(f"must be ≥ 0 and ≤ 1000 (got {self.max_failures})", key="sweep.max_failures")
        self.budget_planner.validate()
        self.measure_resources.validate("sweep.measure_resources")


# Upper bounds of what one trial can hold: past them allocation or conversion fails after start-up
# (or a trial never ends). Generous for the papers' grids (N ≤ 50k, B ≤ 512, 10k samples).
LIMITS: dict[str, int] = {
    "data.n_train": 10_000_000, "data.n_test": 1_000_000, "data.image_size": 1024, "data.gmm_components": 10_000,
    "model.base_channels": 4096, "model.num_res_blocks": 64, "model.head_dim": 4096, "model.emb_dim": 65_536,
    "model.noise_dim": 65_536, "diffusion.num_timesteps": 100_000, "diffusion.sample_steps": 100_000,
    "train.batch_size": 65_536, "train.max_steps": 1_000_000_000, "train.budget_ref_n": 1_000_000_000,
    "train.budget_ref_batch": 65_536, "eval.every_steps": 1_000_000_000, "eval.every_images": 10**12, "eval.fid_every_steps": 1_000_000_000,
    "eval.refine_snapshots": 1024, "eval.num_samples": 1_000_000, "eval.mem_sample_steps": 100_000,
    "eval.sample_batch": 65_536, "eval.fid_samples": 1_000_000,
    "eval.swd_samples": 1_000_000, "eval.swd_projections": 100_000, "eval.probe_images": 65_536,
    "eval.probe_noise_levels": 10_000, "eval.save_samples": 10_000,
}  # fmt: skip
SEEDS = ("data.seed", "train.seed", "eval.sample_seed")
MAX_SEED = 2**31 - 1  # every RNG raydiff seeds (torch, numpy, Python) takes it, offsets included


# the experiment's sections by their YAML name (the sweep's own settings are not among them)
SECTIONS: dict[str, type] = {
    "data": DataConfig,
    "model": ModelConfig,
    "diffusion": DiffusionConfig,
    "train": TrainConfig,
    "eval": EvalConfig,
    "stop": StopConfig,
}


def axis_hint(key: Any, path: str) -> Any:
    """The type of the field a sweep axis (`section.key`, a grid or search axis) varies."""
    section, _, name = str(key).partition(".")
    if section not in SECTIONS or not name:
        raise ConfigError(f"an axis is 'section.key' with section one of {', '.join(SECTIONS)}", key=path)
    names = [f.name for f in fields(SECTIONS[section])]
    if name not in names:
        raise ConfigError(unknown_key(name, names), key=path)
    if section == "stop":
        raise ConfigError("the stop rule is one per sweep (the stopper applies it to every trial)", key=path)
    return field_hint(SECTIONS[section], name)
