"""Bonnaire et al. (2025) as their released code writes it (tbonnair/Why-Diffusion-Models-Don-t-
Memorize, Experiments/src): the DDIM sampler (Utils/Diffusion.py, sample_diffusion_from_noise_DDIM),
the training t range, f_mem on float samples, clean-fid's legacy_pytorch resize, and their U-Net
(Utils/Unet.py) as raydiff's `style: bonnaire2025`. Their sampler is re-derived here in float64
numpy from the DDIM equations as their loop applies them; raydiff's must agree."""

from __future__ import annotations

import collections
import math

import numpy as np
import pytest
import torch
from torch import nn

from raydiff.config import ModelConfig, load_search_space, packaged_search_space
from raydiff.config.presets import PRESETS
from raydiff.config.sections import UNET_STYLES
from raydiff.data import from_model, load, to_model
from raydiff.diffusion import DDPM, build_process
from raydiff.errors import ConfigError
from raydiff.evaluation import Evaluator
from raydiff.metrics.memorization import memorized_pixel
from raydiff.models import build_unet, count_params
from raydiff.models.unet import STYLES, UNet, timestep_embedding
from tiny_trial import tiny

CPU = torch.device("cpu")


class ExactNoise(nn.Module):
    """The ideal ε-predictor for one image x0: ε̂(x_t, t) = (x_t − √ᾱ_t x0)/√(1 − ᾱ_t); records its calls."""

    def __init__(self, x0: torch.Tensor, abar: torch.Tensor):
        super().__init__()
        self.x0, self.abar, self.calls = x0, abar, []

    def forward(self, x, c_noise, class_labels=None):
        self.calls.append(int(c_noise[0]))
        a = self.abar[c_noise.long()].float().view(-1, 1, 1, 1)
        return (x - a.sqrt() * self.x0) / (1 - a).sqrt()


def their_ddim(eps_fn, noise: np.ndarray, abar: np.ndarray, ddim_steps: int = 100) -> tuple[np.ndarray, list[int]]:
    """Their loop: time_steps = linspace(0, T − 1, ddim_steps, dtype=int)[::-1]; for each pair
    (t, t_prev): x0 = (x − √(1 − ᾱ_t) ε)/√ᾱ_t (never clipped), x = √ᾱ_prev x0 + √(1 − ᾱ_prev) ε (η = 0)."""
    ts = list(np.linspace(0, len(abar) - 1, ddim_steps, dtype=int)[::-1])
    x, calls = noise.astype(np.float64), []
    for t, t_prev in zip(ts[:-1], ts[1:]):
        calls.append(int(t))
        eps = eps_fn(x, int(t))
        x0 = (x - math.sqrt(1 - abar[t]) * eps) / math.sqrt(abar[t])
        x = math.sqrt(abar[t_prev]) * x0 + math.sqrt(max(1 - abar[t_prev], 1e-8)) * eps
    return x, calls


def test_floored_grid_is_theirs():
    p = DDPM(grid="floored")
    want = sorted(np.linspace(0, 999, 100, dtype=int).tolist(), reverse=True)
    assert p.timesteps(99) == want and want[-1] == 0 and want[-2] == 10  # floor(999/99) = 10, not round
    assert DDPM().timesteps(100)[-2] == 10 and DDPM().timesteps(100)[1] == 989  # rounded: 989.0 vs floored 988
    assert p.timesteps(99)[1] == 988
    with pytest.raises(ValueError, match="floored grid"):
        p.timesteps(1000)


def test_unclipped_ddim_on_their_grid_matches_their_loop():
    """x0 outside [−1, 1] (their centered pixels reach beyond it): theirs never clamps; 99 calls,
    the last at t = 10, the chain ends on x at index 0 — not on x̂₀."""
    p = DDPM(clip_x0=False, grid="floored")
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(2, 1, 4, 4, generator=g) * 6 - 3  # in [−3, 3]
    noise = torch.randn(2, 1, 4, 4, generator=g)
    net = ExactNoise(x0, p.alphas_cumprod)
    out = p.sample(net, noise, steps=99, sampler="ddim")
    abar = p.alphas_cumprod.numpy()
    x0n = x0.double().numpy()

    def eps_fn(x, t):
        return (x - math.sqrt(abar[t]) * x0n) / math.sqrt(1 - abar[t])

    want, calls = their_ddim(eps_fn, noise.numpy(), abar)
    assert net.calls == calls and len(calls) == 99 and calls[-1] == 10
    np.testing.assert_allclose(out.numpy(), want, rtol=1e-4, atol=1e-4)
    at_zero = math.sqrt(abar[0]) * x0n + math.sqrt(1 - abar[0]) * eps_fn(want, 0)  # x at index 0, ≠ x0
    np.testing.assert_allclose(out.numpy(), at_zero, rtol=1e-3, atol=1e-3)
    assert float((out - x0).abs().max()) > 1e-3


def test_clipping_changes_samples_outside_the_range():
    g = torch.Generator().manual_seed(1)
    x0 = torch.full((1, 1, 2, 2), 2.5)
    noise = torch.randn(1, 1, 2, 2, generator=g)
    clipped = DDPM().sample(ExactNoise(x0, DDPM().alphas_cumprod), noise, steps=20, sampler="ddim")
    free = DDPM(clip_x0=False).sample(ExactNoise(x0, DDPM().alphas_cumprod), noise, steps=20, sampler="ddim")
    assert float(clipped.max()) <= 1.0 + 1e-6  # raydiff: x̂₀ clamped, the last step returns it
    torch.testing.assert_close(free, x0, rtol=1e-4, atol=1e-4)  # theirs: the exact predictor's x0


def test_default_sampler_is_unchanged():
    """The defaults are raydiff's: clipped x̂₀, the rounded grid, t from 0."""
    p = DDPM()
    assert (p.clip_x0, p.grid, p.t_min) == (True, "rounded", 0)
    assert p.timesteps(4) == [999, 666, 333, 0]


class RecordT(nn.Module):
    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, x, c_noise, class_labels=None):
        self.seen.append(c_noise.clone())
        return torch.zeros_like(x)


@pytest.mark.parametrize("t_min, low", [(0, 0), (1, 1)])
def test_training_t_range(t_min, low):
    """theirs: torch.randint(low=1, high=T); raydiff's default from 0."""
    torch.manual_seed(0)
    net = RecordT()
    DDPM(num_timesteps=4, beta_start=0.1, beta_end=0.2, t_min=t_min).loss(net, torch.zeros(4000, 1, 1, 1))
    assert sorted(set(net.seen[0].long().tolist())) == list(range(low, 4))


def test_build_process_passes_the_options():
    space = load_search_space(packaged_search_space("bonnaire2025"))
    d = space.base.diffusion
    p = build_process(d)
    assert (p.clip_x0, p.grid, p.t_min) == (False, "floored", 1)
    assert len(p.timesteps(space.base.eval.mem_sample_steps)) == 100  # their ddim_steps: 100 grid points


@pytest.mark.parametrize(
    "section, values, key",
    [
        ("diffusion", {"step_grid": "ceil"}, "diffusion.step_grid"),
        ("diffusion", {"t_min": 1000}, "diffusion.t_min"),
        ("diffusion", {"step_grid": "floored", "sample_steps": 1000}, "diffusion.sample_steps"),
        ("diffusion", {"objective": "flow", "clip_x0": False}, "diffusion.objective"),
        ("model", {"style": "edm"}, "model.style"),
        ("model", {"style": "bonnaire2025", "base_channels": 12}, "model.style"),
        ("eval", {"fid_mode": "legacy_tensorflow"}, "eval.fid_mode"),
    ],
)
def test_bad_values_name_their_key(section, values, key):
    with pytest.raises(ConfigError) as e:
        tiny(**{section: values})
    assert e.value.key == key


# ------------------------------------------------------------------------------- the U-Net

# Read from their code (Utils/Unet.py, built as generate.py builds it: multipliers (1, 2, 4),
# attention (False, True, True), dropout 0.1, one input channel) for W = 8 … 64: trainable
# parameters (their frozen 1000 × W sinusoid table, nn.Embedding.from_pretrained, aside), and per
# module kind the count: 46 GroupNorms all of 8 groups, 11 attention blocks of 4 heads, 17
# Dropout2d(0.1) (their other 18 have p = 0: no-ops), 1 GELU (the time MLP), 19 Linear layers
# outside attention (the time MLP's 2, one per residual block).
THEIRS = {8: 255_089, 16: 1_010_657, 32: 4_023_233, 48: 9_037_729, 64: 16_054_145}
THEIR_MODULES = {"GroupNorm(8)": 46, "attention(4 heads)": 11, "Dropout2d(0.1)": 17, "GELU": 1, "Linear": 19}


def structure(net: nn.Module) -> collections.Counter:
    c = collections.Counter()
    for m in net.modules():
        if isinstance(m, nn.GroupNorm):
            c[f"GroupNorm({m.num_groups})"] += 1
        elif hasattr(m, "heads") and hasattr(m, "qkv"):
            c[f"attention({m.heads} heads)"] += 1
        elif isinstance(m, nn.Dropout2d):
            c[f"Dropout2d({m.p:g})"] += 1
        elif isinstance(m, nn.Dropout):
            c[f"Dropout({m.p:g})"] += 1
        elif isinstance(m, (nn.GELU, nn.Linear)):
            c[type(m).__name__] += 1
    return c


def bonnaire(width: int, style: str) -> UNet:
    preset = {k: tuple(v) if isinstance(v, list) else v for k, v in PRESETS[f"bonnaire-w{width}"].items()}
    return build_unet(ModelConfig(**preset, style=style), 1, 32)


@pytest.mark.parametrize("width", sorted(THEIRS))
def test_bonnaire_style_is_their_network(width):
    net = bonnaire(width, "bonnaire2025")
    assert count_params(net) == THEIRS[width]
    assert {k: v for k, v in structure(net).items()} == THEIR_MODULES


def test_raydiff_style_differs_where_the_issue_says():
    """Same parameters, other blocks: GroupNorm groups 4/16/32, heads C/64, SiLU, Dropout."""
    net = bonnaire(32, "raydiff")
    s = structure(net)
    assert count_params(net) == THEIRS[32]
    assert "GroupNorm(8)" not in s and s["Dropout(0.1)"] == 17 and "GELU" not in s
    assert {k for k in s if k.startswith("attention")} == {"attention(1 heads)", "attention(2 heads)"}


def test_bonnaire_style_keeps_default_init():
    """No zeroed output convolutions (theirs: PyTorch's default init everywhere)."""
    torch.manual_seed(0)
    ours, theirs = bonnaire(8, "raydiff"), bonnaire(8, "bonnaire2025")
    assert float(ours.conv_out.weight.detach().abs().sum()) == 0.0
    assert float(theirs.conv_out.weight.detach().abs().sum()) > 0.0
    x = torch.randn(2, 1, 32, 32)
    assert float(theirs(x, torch.tensor([3.0, 500.0])).detach().abs().mean()) > 0.0


def test_their_sinusoid():
    """Their SinusoidalPositionEmbeddings: emb = exp(−i·log(10⁴)/(half − 1)), [sin, cos]."""
    t = torch.tensor([0.0, 1.0, 999.0])
    dim, half = 32, 16
    f = np.exp(np.arange(half) * -(math.log(10000) / (half - 1)))
    want = np.concatenate([np.sin(t.numpy()[:, None] * f), np.cos(t.numpy()[:, None] * f)], axis=1)
    np.testing.assert_allclose(timestep_embedding(t, dim, kind="bonnaire2025").numpy(), want, rtol=1e-5, atol=1e-4)
    assert not torch.allclose(timestep_embedding(t, dim), timestep_embedding(t, dim, kind="bonnaire2025"))


def test_config_styles_are_the_networks():
    assert set(UNET_STYLES) == set(STYLES)


# ------------------------------------------------------------------------- f_mem and FID


@pytest.mark.parametrize("floats", [False, True])
def test_fmem_reads_the_sampler_floats_when_asked(floats):
    """eval.mem_on_floats: the ratio test on the sampler's output, never rounded to pixels (their
    compute_fmem.py); else on the uint8 samples. The stored samples are uint8 either way."""
    cfg = tiny(eval={"mem_on_floats": floats})
    data = load(cfg.data)
    with torch.random.fork_rng():
        ev = Evaluator(cfg, data, build_process(cfg.diffusion), CPU)
    torch.manual_seed(0)
    net = build_unet(cfg.model, 1, 8)
    nn.init.normal_(net.conv_out.weight, std=0.3)  # a net whose samples lie between pixel levels
    raw = ev.sample(net, 8, ev.mem_steps, floats=True)
    rounded = ev.sample(net, 8, ev.mem_steps)
    assert raw.dtype == torch.float32 and torch.equal(from_model(raw, *ev.norm), rounded)
    samples, verdicts = ev._memorization(net, ev.tests)
    assert samples.dtype == torch.uint8 and torch.equal(samples, rounded)

    def ratio(x):
        nb = memorized_pixel(x, ev.train_flat, cfg.eval.mem_ratio)[1]
        return nb.d1 / nb.d2

    want = ratio(raw if floats else to_model(rounded, *ev.norm))
    other = ratio(to_model(rounded, *ev.norm) if floats else raw)
    torch.testing.assert_close(verdicts["pixel"].score, want.cpu())
    assert not torch.allclose(verdicts["pixel"].score, other.cpu())


def test_legacy_pytorch_resize_is_bilinear_interpolate():
    """clean-fid's legacy_pytorch: F.interpolate bilinear (pytorch-fid's resize); clean: PIL bicubic."""
    from raydiff.metrics.fid import inception_resizer

    img = np.random.default_rng(0).uniform(0, 255, (32, 32, 3)).astype(np.float32)
    legacy = inception_resizer("legacy_pytorch")(img)
    want = torch.nn.functional.interpolate(torch.from_numpy(img).permute(2, 0, 1)[None], size=(299, 299), mode="bilinear", align_corners=False)
    np.testing.assert_allclose(legacy, want[0].permute(1, 2, 0).numpy().clip(0, 255), rtol=1e-6, atol=1e-4)
    assert np.abs(inception_resizer("clean")(img) - legacy).max() > 1.0
    with pytest.raises(ValueError, match="mode"):
        inception_resizer("legacy_tensorflow")
