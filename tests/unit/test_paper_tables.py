"""The papers' settings as tables, proven against the packaged spaces and rendered into docs/papers.md.

Each row: a setting, where raydiff holds it (a dotted key of the resolved base config, or an
expression over `cfg`, the base config, and `points`, the sweep's experiments, `points[0]` the
default point in one_factor mode), the value the
paper or its released code fixes, and the source (the paper, or a file of Bonnaire et al.'s code,
github.com/tbonnair/Why-Diffusion-Models-Don-t-Memorize, Experiments/src/). Rows whose source
starts with "not pinned" are the choices the sources leave open: raydiff's, with the reason.

`python3 tests/unit/test_paper_tables.py` prints docs/papers.md's section "The papers' settings";
`test_docs_table_is_the_rows` checks that docs/papers.md holds exactly that text.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from raydiff.config import load_search_space, packaged_search_space


class Row(NamedTuple):
    setting: str
    key: str  # a dotted key of the base config, or an expression over cfg and points
    expected: Any
    source: str


BONNAIRE_N = [128 * 2**k for k in range(9)]  # 128 … 32,768

BONNAIRE = [
    Row("images: CelebA, 32×32, gray", "data.shape", (32, 1), "paper; code: Utils/cfg.py (IMG_SHAPE)"),
    Row("training set: the first n images", "sorted({p.data.n_train for p in points})", BONNAIRE_N, "paper (n from 128 to 32,768)"),
    Row("CelebA's aligned faces, all 202,599, in file order (natsorted 000001.jpg …)",
        "(cfg.data.hf_name, cfg.data.hf_config, cfg.data.split, cfg.data.order)",
        ("flwrlabs/celeba", "img_align+identity+attr", "train+valid+test", "rows"), "code: Utils/loader.py (CelebADataset)"),
    Row("Resize(32), then CenterCrop(32), then Grayscale(1)", "(cfg.data.crop, cfg.data.image_size, cfg.data.channels)",
        ("center", 32, 1), "code: Utils/loader.py (load_CelebA)"),
    Row("held out: the last 2,048 images", "data.n_test", 2048, "code: Utils/loader.py (load_CelebA_pt, ntest)"),
    Row("pixels: [0, 1] minus the training mean per channel", "data.normalization", "centered",
        "code: Utils/loader.py (CENTER, not STANDARDIZE)"),
    Row("unconditional", "data.class_conditional", False, "code: Training/run_Unet.py (model(x, t))"),
    Row("U-Net widths W", "sorted({p.model.base_channels for p in points})", [8, 16, 32, 48, 64], "paper"),
    Row("U-Net multipliers", "model.channel_mults", (1, 2, 4), "code: Training/run_Unet.py (base_channels_multiples)"),
    Row("attention at 16×16 and 8×8", "model.attn_resolutions", (16, 8), "code: Training/run_Unet.py (apply_attention)"),
    Row("dropout", "model.dropout", 0.1, "code: Training/run_Unet.py (dropout_rate)"),
    Row("U-Net blocks: GroupNorm 8 groups, 4 heads, GELU time MLP, default init, Dropout2d, sinusoid /(half − 1)",
        "model.style", "bonnaire2025", "code: Utils/Unet.py"),
    Row("DDPM, ε-prediction", "diffusion.objective", "ddpm", "paper; code: Utils/Diffusion.py"),
    Row("T", "diffusion.num_timesteps", 1000, "paper; code: Utils/cfg.py (TIMESTEPS)"),
    Row("β linear from … to …", "(cfg.diffusion.beta_start, cfg.diffusion.beta_end)", (1e-4, 2e-2),
        "paper; code: Utils/Diffusion.py (linear_schedule)"),
    Row("SGD's momentum", "train.momentum", 0.95, "code: Training/run_Unet.py (SGD_Momentum: momentum=0.95)"),
    Row("optimizer", "train.optimizer", "sgd",
        "not pinned (run_Unet.py's -O overrides Utils/cfg.py's SGD_Momentum; their README's example runs Adam): ours, cfg.py's"),
    Row("learning rate", "train.lr", 0.01,
        "not pinned (run_Unet.py's -LR overrides Utils/cfg.py's 1e-2; their README's example runs 1e-4): ours, cfg.py's"),
    Row("batch B = min(n, 512), per n", "{p.data.n_train: p.batch for p in points}", {n: min(n, 512) for n in BONNAIRE_N},
        "code: Training/run_Unet.py (BATCH_SIZE)"),
    Row("shuffled epochs, without replacement", "train.sampling", "epochs", "code: Training/run_Unet.py (DataLoader, shuffle=True)"),
    Row("no gradient clipping", "train.grad_clip", None, "code: Utils/Diffusion.py (train_one_batch)"),
    Row("no EMA", "train.ema_decay", 0.0, "code: Utils/Diffusion.py (train saves the raw weights)"),
    Row("float32", "train.bf16", False, "code: Utils/Diffusion.py (no autocast)"),
    Row("steps at most", "budget_steps", 2_000_000, "code: Utils/cfg.py (N_STEPS)"),
    Row("sampler: DDIM, η = 0", "diffusion.resolved_sampler", "ddim", "code: Generation/generate.py (eta=0.0)"),
    Row("f_mem sampling: 99 network calls", "cfg.eval.mem_sample_steps or cfg.diffusion.sample_steps", 99,
        "code: Generation/generate.py (ddim_steps=100 grid points), Utils/Diffusion.py (one call per pair)"),
    Row("DDIM grid floor(linspace(0, 999, 100)), ending on x at index 0", "diffusion.step_grid", "floored",
        "code: Utils/Diffusion.py (np.linspace(…, dtype=int))"),
    Row("x̂₀ never clipped", "diffusion.clip_x0", False, "code: Utils/Diffusion.py (sample_diffusion_from_noise_DDIM)"),
    Row("training t from {1, …, 999}", "diffusion.t_min", 1, "code: Utils/Diffusion.py (train_one_batch: randint(low=1))"),
    Row("FID's sampling steps: the same samples", "diffusion.sample_steps", 99, "code: Evaluation/compute_FID.py (reads generate.py's)"),
    Row("f_mem samples: 100 batches × 100", "eval.num_samples", 10_000,
        "not pinned (Evaluation/compute_fmem.py's defaults -Ns 100, --batch_sample_size 100): ours, those"),
    Row("f_mem on the float samples, never rounded", "eval.mem_on_floats", True, "code: Evaluation/compute_fmem.py (torch.load)"),
    Row("nearest neighbours: L2 on flattened pixels", "eval.memorization_space", "pixel",
        "code: Evaluation/compute_fmem.py (torch.norm)"),
    Row("memorized: ‖x − a₁‖ / ‖x − a₂‖ below", "eval.mem_ratio", 1 / 3, "paper; code: Evaluation/compute_fmem.py (gap_threshold)"),
    Row("FID: pytorch-fid's Inception, bilinear resize", "(cfg.eval.fid_features, cfg.eval.fid_mode)", ("inception", "legacy_pytorch"),
        "code: Evaluation/compute_FID.py (python -m pytorch_fid)"),
    Row("FID samples", "eval.fid_samples", 10_000,
        "not pinned (Evaluation/compute_FID.py's defaults --N2 100 × --batch_size_samples 100): ours, those"),
    Row("FID at every evaluation", "eval.fid_every", 1, "code: Evaluation/compute_FID.py (every checkpoint)"),
    Row("evaluations: from step 250, 25% apart", "(cfg.eval_every_steps, cfg.eval.cadence, cfg.eval.geometric_ratio)",
        (250, "geometric", 1.25),
        "not pinned (theirs, Utils/cfg.py get_training_times: ≈ 50% apart below 10k steps, 5,000 apart to 1e5, ≈ 5% to 1e6): ours"),
    Row("τ_mem bracket refinement (snapshots)", "eval.refine_snapshots", 7, "not pinned: ours, τ_mem to 1/8 of a gap"),
    Row("onset: f_mem ≥ 10% at 2 evaluations", "(cfg.stop.mem_frac_threshold, cfg.stop.patience)", (0.1, 2),
        "not pinned (the paper reads τ_mem off f_mem): raydiff's onset"),
    Row("headline τ_mem: f_mem's onset", "stop.headline", "pixel", "paper (τ_mem read off f_mem)"),
    Row("training continues after onset, × τ", "stop.continue_for", 0.5,
        "not pinned: ours, so f_mem's rise past 0.1 is observed (stricter thresholds, the rise's start)"),
    Row("FID reference: the 2,048 held-out images", "eval.fid_reference", "auto", "not pinned (their stats*.npz are not released)"),
    Row("images per sampling batch", "eval.sample_batch", 1000, "not pinned (theirs 100; DDIM η = 0 makes batching irrelevant)"),
    Row("seed", "train.seed", 0, "not pinned: raydiff's default"),
]  # fmt: skip

MARION_N = [2048, 4096, 8192, 16384]
MARION_PRESETS = ["marion-2.9m", "marion-7.9m", "marion-25.8m", "marion-92.7m", "marion-201.3m"]

MARION = [
    Row("data: CIFAR-10, the first N training images", "data.dataset", "cifar10", "paper"),
    Row("N", "sorted({p.data.n_train for p in points})", MARION_N, "paper"),
    Row("held out: 5,120 fixed test images", "data.n_test", 5120, "paper"),
    Row("class-conditional", "data.class_conditional", True, "paper"),
    Row("model sizes P ≈ 2.9M … 201.3M", "sorted({p.model.preset for p in points}, key=MARION_PRESETS.index)", MARION_PRESETS,
        "paper, Table 1"),
    Row("U-Net: base width, multipliers, blocks per level", "(cfg.model.base_channels, cfg.model.channel_mults, cfg.model.num_res_blocks)",
        (128, (1, 2, 4), 3), "paper, Table 1"),
    Row("attention head dim, embedding width", "(cfg.model.head_dim, cfg.model.emb_dim)", (64, 512), "paper, Table 1"),
    Row("B", "sorted({p.batch for p in points})", [16, 32, 64, 128], "paper"),
    Row("η", "sorted({p.train.lr for p in points})", [1e-5, 5e-5, 1e-4, 4e-4], "paper (diverges above 4e-4)"),
    Row("default point: N, P, B, η", "(points[0].data.n_train, points[0].model.preset, points[0].batch, points[0].train.lr)", (2048, "marion-92.7m", 16, 1e-4),
        "paper"),
    Row("rectified flow", "diffusion.objective", "flow", "paper, Table 1"),
    Row("guidance weight", "diffusion.guidance", 0.0, "paper, Table 1 (CFG 0)"),
    Row("optimizer", "train.optimizer", "adam", "paper, Table 1"),
    Row("EMA decay", "train.ema_decay", 0.9999, "paper, Table 1"),
    Row("the EMA weights evaluated", "eval.use_ema", True, "not pinned (the paper does not say which weights): ours, EMA's usual use"),
    Row("sampling steps", "diffusion.sample_steps", 250, "paper, Table 1"),
    Row("the memorization test's sampler steps", "eval.mem_sample_steps", 50,
        "not pinned (the paper samples its figures with 250): ours, 50 agree with 250 on the copy test at 32×32×3 (benchmarks 3c)"),
    Row("the sequential memorization test's first round", "eval.sequential_round", 64, "not pinned: ours, a round that can settle"),
    Row("memorized: max SSCD cosine similarity above", "eval.mem_cosine", 0.6, "paper (§3.1)"),
    Row("measured in the training loop; figures on EMA snapshots", "(cfg.measured, cfg.eval.figures)", (("features", "loss", "fid", "swd"), "snapshots"),
        "not pinned: ours, the loop measures what the stop rule needs"),
    Row("SSCD model", "cfg.eval.embedding.rsplit('/', 1)[-1]", "sscd_disc_mixup.torchscript.pt",
        "not pinned (the paper names SSCD, not a checkpoint): ours, SSCD's disc_mixup"),
    Row("FID: each split against its own images", "eval.fid_reference", "splits", "paper (test: the 5,120 test images; train: the N training images)"),
    Row("FID samples per split at the default point: as many as its reference holds", "(points[0].fid_counts)", {"test": 5120, "train": 2048}, "paper"),
    Row("sliced Wasserstein samples, against train and test", "eval.swd_samples", 2000, "paper"),
    Row("τ_mem: test loss departs from train loss, by … over … evaluations", "(cfg.stop.loss_gap, cfg.stop.loss_window)", (0.05, 3),
        "paper (the definition); not pinned (5% and 3): ours"),
    Row("headline τ_mem: the loss divergence", "stop.headline", "loss", "paper (§3.1)"),
    Row("sampler", "diffusion.resolved_sampler", "euler", "not pinned (250 steps are): raydiff's flow sampler"),
    Row("pixels: uint8 → [-1, 1]", "data.normalization", "symmetric", "not pinned: the range the samplers clip to"),
    Row("batches", "(cfg.train.batch_rule, cfg.train.sampling)", ("fixed", "epochs"), "not pinned: a shuffled DataLoader's epochs"),
    Row("τ_mem bracket refinement (snapshots)", "eval.refine_snapshots", 3, "not pinned: ours, τ_mem to 1/4 of a gap"),
    Row("memorization samples", "eval.num_samples", 1024, "not pinned: ours"),
    Row("Adam β, ε", "(cfg.train.adam_betas, cfg.train.adam_eps)", ((0.9, 0.999), 1e-8), "not pinned: torch's defaults"),
    Row("no gradient clipping, no dropout", "(cfg.train.grad_clip, cfg.model.dropout)", (None, 0.0), "not pinned: ours"),
    Row("step budget at N = 2048, B = 16, ∝ N/B", "(points[0].budget_steps, cfg.train.budget_scaling)", (400_000, "n_over_b"), "not pinned: ours"),
]  # fmt: skip

TABLES = {  # packaged space → (title, rows)
    "bonnaire2025": ("Bonnaire, Urfin, Biroli & Mézard (2025), `bonnaire2025.yaml`", BONNAIRE),
    "marion2026_cifar10": ("Marion & Wu (2026), `marion2026_cifar10.yaml`", MARION),
}
DOTTED = re.compile(r"[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)*")
PAGE = Path(__file__).resolve().parents[2] / "docs" / "papers.md"
HEADING = "## The papers' settings"


def resolve(space, key: str) -> Any:
    """The value `key` names in a space: a dotted key of its base config, or an expression."""
    cfg = space.base
    if DOTTED.fullmatch(key):
        value = cfg
        for part in key.split("."):
            value = getattr(value, part)
        return value
    return eval(key, {"MARION_PRESETS": MARION_PRESETS}, {"cfg": cfg, "points": space.experiments()})  # noqa: S307


@pytest.fixture(scope="module")
def spaces():
    return {name: load_search_space(packaged_search_space(name)) for name in TABLES}


@pytest.mark.parametrize("name, row", [(name, row) for name, (_, rows) in TABLES.items() for row in rows],
                         ids=lambda x: x.setting if isinstance(x, Row) else x)  # fmt: skip
def test_space_has_the_papers_setting(spaces, name, row):
    assert resolve(spaces[name], row.key) == row.expected, f"{name}: {row.setting} ({row.source})"


def test_every_row_has_a_source():
    for _, rows in TABLES.values():
        for row in rows:
            assert row.source.startswith(("paper", "code: ", "not pinned")), row


def show(value: Any) -> str:
    """A value as the table prints it (YAML-like scalars; containers as Python writes them)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, tuple):
        return "(" + ", ".join(show(v) for v in value) + ")"
    if isinstance(value, list):
        return "[" + ", ".join(show(v) for v in value) + "]"
    if isinstance(value, dict):
        return ", ".join(f"{show(k)}: {show(v)}" for k, v in value.items())
    return str(value)


def render() -> str:
    """docs/papers.md's section, from the rows above."""
    out = [
        HEADING,
        "",
        "Every setting the papers (or Bonnaire et al.'s released code, github.com/tbonnair/",
        "Why-Diffusion-Models-Don-t-Memorize, `Experiments/src/`) fix, where raydiff holds it and the",
        "value the packaged space resolves to; \"not pinned\" rows are raydiff's choices where the sources",
        "leave one open. `tests/unit/test_paper_tables.py` asserts every row against the resolved configs",
        "and generates this table (`python3 tests/unit/test_paper_tables.py`).",
    ]
    for title, rows in TABLES.values():
        out += ["", f"**{title}**", "", "| setting | raydiff | value | source |", "| --- | --- | --- | --- |"]
        out += [f"| {r.setting} | `{r.key}` | {show(r.expected)} | {r.source} |" for r in rows]
    return "\n".join(out) + "\n"


def page_section(text: str) -> str:
    """The section of docs/papers.md under HEADING, up to the next heading of level 2 or 3."""
    start = text.index(HEADING)
    nxt = re.search(r"^#{2,3} ", text[start + len(HEADING) :], flags=re.M)
    end = len(text) if nxt is None else start + len(HEADING) + nxt.start()
    return text[start:end].rstrip("\n") + "\n"


def test_docs_table_is_the_rows():
    assert page_section(PAGE.read_text(encoding="utf-8")) == render()


if __name__ == "__main__":
    sys.stdout.write(render())
