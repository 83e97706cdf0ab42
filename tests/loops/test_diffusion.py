"""DDPM and rectified flow against values computed by hand (stub networks, no training)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from raydiff.config import DiffusionConfig
from raydiff.diffusion import DDPM, RectifiedFlow, build_process
from raydiff.diffusion.base import guided


class Identity(nn.Module):
    """net(x, c_noise, labels) = x; records what it was called with."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def forward(self, x, c_noise, class_labels=None):
        self.calls.append((c_noise.clone(), class_labels))
        return x.clone()


# ---------------------------------------------------------------------------------- DDPM


def test_ddpm_schedule_matches_hand_values():
    p = DDPM()  # T = 1000, β linear 1e-4 → 2e-2 (Ho et al.; Bonnaire et al.)
    b0, bT = 1e-4, 2e-2
    b1 = 1e-4 + (2e-2 - 1e-4) / 999
    b2 = 1e-4 + 2 * (2e-2 - 1e-4) / 999
    assert p.betas.shape == (1000,)
    assert float(p.betas[0]) == pytest.approx(b0, rel=1e-12)
    assert float(p.betas[-1]) == pytest.approx(bT, rel=1e-12)
    assert float(p.betas[1]) == pytest.approx(b1, rel=1e-12)
    assert float(p.betas[2]) == pytest.approx(b2, rel=1e-12)
    assert float(p.alphas_cumprod[0]) == pytest.approx(1 - b0, rel=1e-12)
    assert float(p.alphas_cumprod[1]) == pytest.approx((1 - b0) * (1 - b1), rel=1e-12)
    assert float(p.alphas_cumprod[2]) == pytest.approx((1 - b0) * (1 - b1) * (1 - b2), rel=1e-12)
    # the end of the chain: ᾱ_T = Π(1 − β_t) ≈ 4.0358e-5 (float64 product in plain Python)
    prod = 1.0
    for i in range(1000):
        prod *= 1 - (b0 + i * (bT - b0) / 999)
    assert float(p.alphas_cumprod[-1]) == pytest.approx(prod, rel=1e-9)
    assert prod == pytest.approx(4.0358e-5, rel=1e-3)


def test_build_process_from_config():
    ddpm = build_process(DiffusionConfig(objective="ddpm", num_timesteps=10, beta_start=0.01, beta_end=0.1))
    assert isinstance(ddpm, DDPM) and ddpm.num_timesteps == 10
    assert float(ddpm.betas[1]) == pytest.approx(0.01 + 0.09 / 9)
    assert isinstance(build_process(DiffusionConfig(objective="flow")), RectifiedFlow)


def test_q_sample_formula():
    p = DDPM()
    x0 = torch.tensor([0.5, -1.0, 0.25, 1.0]).view(4, 1, 1, 1)
    eps = torch.tensor([1.0, 0.5, -2.0, 0.0]).view(4, 1, 1, 1)
    t = torch.tensor([0, 1, 2, 2])
    b = [1e-4 + i * (2e-2 - 1e-4) / 999 for i in range(3)]
    abar = [1 - b[0], (1 - b[0]) * (1 - b[1]), (1 - b[0]) * (1 - b[1]) * (1 - b[2])]
    want = [math.sqrt(abar[ti]) * x + math.sqrt(1 - abar[ti]) * e for ti, x, e in zip([0, 1, 2, 2], x0.flatten().tolist(), eps.flatten().tolist())]
    got = p.q_sample(x0, t, eps).flatten().tolist()
    assert got == pytest.approx(want, rel=1e-6, abs=1e-7)


def test_ddpm_loss_with_fixed_t_and_noise():
    p = DDPM()
    net = Identity()
    x0 = torch.tensor([[[[0.5, -0.5]]], [[[1.0, 0.0]]]])  # [2, 1, 1, 2]
    eps = torch.tensor([[[[1.0, 2.0]]], [[[-1.0, 0.5]]]])
    t = torch.tensor([0, 2])
    b = [1e-4 + i * (2e-2 - 1e-4) / 999 for i in range(3)]
    abar = {0: 1 - b[0], 2: (1 - b[0]) * (1 - b[1]) * (1 - b[2])}
    want = []
    for i, ti in enumerate([0, 2]):
        # identity net predicts ε̂ = x_t; loss = mean over pixels of (x_t − ε)²
        xs, es = x0[i].flatten().tolist(), eps[i].flatten().tolist()
        xt = [math.sqrt(abar[ti]) * x + math.sqrt(1 - abar[ti]) * e for x, e in zip(xs, es)]
        want.append(sum((a - e) ** 2 for a, e in zip(xt, es)) / len(xs))
    loss = p.loss(net, x0, None, t=t, noise=eps)
    assert loss.shape == (2,)
    assert loss.tolist() == pytest.approx(want, rel=1e-6)
    c_noise, labels = net.calls[0]
    assert c_noise.tolist() == [0.0, 2.0] and labels is None  # the net sees the step index as c_noise


@pytest.mark.parametrize(
    "steps, expected",
    [
        pytest.param(1, [999], id="1-from-pure-noise"),
        pytest.param(4, [999, 666, 333, 0], id="4"),
        pytest.param(10, [999, 888, 777, 666, 555, 444, 333, 222, 111, 0], id="10"),
        pytest.param(1000, list(range(999, -1, -1)), id="all"),
    ],
)
def test_timesteps_respacing(steps, expected):
    assert DDPM().timesteps(steps) == expected


def test_probe_times_cover_the_range():
    assert DDPM().probe_times(4).tolist() == [125, 375, 625, 875]
    assert RectifiedFlow().probe_times(4).tolist() == pytest.approx([0.125, 0.375, 0.625, 0.875])


class ExactNoise(nn.Module):
    """The ideal ε-predictor for a data set of one image x0: ε̂(x_t, t) = (x_t − √ᾱ_t x0) / √(1 − ᾱ_t)."""

    def __init__(self, x0: torch.Tensor, abar: torch.Tensor):
        super().__init__()
        self.x0, self.abar = x0, abar

    def forward(self, x, c_noise, class_labels=None):
        a = self.abar[c_noise.long()].float().view(-1, 1, 1, 1)
        return (x - a.sqrt() * self.x0) / (1 - a).sqrt()


@pytest.mark.parametrize("sampler", ["ddim", "ancestral"])
@pytest.mark.parametrize("steps", [1, 5, 50])
def test_sampler_recovers_x0_with_exact_noise(sampler, steps):
    p = DDPM()
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(3, 1, 4, 4, generator=g) * 1.6 - 0.8  # inside [-1, 1]: clipping must not bite
    noise = torch.randn(3, 1, 4, 4, generator=g)
    out = p.sample(ExactNoise(x0, p.alphas_cumprod), noise, steps=steps, sampler=sampler, generator=g)
    assert out.shape == x0.shape
    assert torch.allclose(out, x0, atol=1e-4)


def test_ddim_is_deterministic_given_noise():
    p = DDPM()
    net = lambda x, c, y=None: 0.1 * x  # noqa: E731 - a fixed, smooth stand-in network
    noise = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    a = p.sample(net, noise, steps=8, sampler="ddim")
    b = p.sample(net, noise, steps=8, sampler="ddim")
    assert torch.equal(a, b) and a.abs().max() <= 1.0


def test_guidance_combines_conditional_and_unconditional():
    def net(x, c, y=None):
        return torch.full_like(x, 1.0 if y is None else 3.0)

    x, c, y = torch.zeros(2, 1, 2, 2), torch.zeros(2), torch.tensor([1, 2])
    assert guided(net, x, c, y, 0.0).unique().tolist() == [3.0]
    assert guided(net, x, c, y, 0.5).unique().tolist() == [1.5 * 3.0 - 0.5 * 1.0]
    assert guided(net, x, c, None, 0.5).unique().tolist() == [1.0]


# ------------------------------------------------------------------------- rectified flow


def test_flow_loss_with_fixed_t_and_noise():
    p = RectifiedFlow()
    net = Identity()
    x0 = torch.tensor([[[[0.5, -0.5]]], [[[1.0, 0.0]]]])
    eps = torch.tensor([[[[1.0, 2.0]]], [[[-1.0, 0.5]]]])
    t = torch.tensor([0.25, 0.5])
    want = []
    for i, ti in enumerate([0.25, 0.5]):
        xs, es = x0[i].flatten().tolist(), eps[i].flatten().tolist()
        xt = [(1 - ti) * x + ti * e for x, e in zip(xs, es)]
        v = [e - x for x, e in zip(xs, es)]  # target velocity ε − x0
        want.append(sum((a - b) ** 2 for a, b in zip(xt, v)) / len(xs))
    assert p.loss(net, x0, None, t=t, noise=eps).tolist() == pytest.approx(want, rel=1e-6)
    assert net.calls[0][0].tolist() == pytest.approx([250.0, 500.0])  # c_noise = 1000·t


def test_flow_one_euler_step():
    p = RectifiedFlow()
    net = lambda x, c, y=None: 0.5 * x  # noqa: E731 - v = x/2
    noise = torch.tensor([[[[0.4, -1.2, 3.0]]]])
    # one step from t = 1 to 0: x ← ε + (0 − 1)·v(ε) = ε/2, then clipped to [-1, 1]
    out = p.sample(net, noise, steps=1)
    assert out.flatten().tolist() == pytest.approx([0.2, -0.6, 1.0])
    # two steps of dt = −½: x ← x·(1 − ½·½) twice = 0.5625·ε
    out2 = p.sample(net, torch.tensor([[[[0.4, -1.2]]]]), steps=2)
    assert out2.flatten().tolist() == pytest.approx([0.4 * 0.5625, -1.2 * 0.5625])


def test_flow_exact_velocity_recovers_x0():
    # for one data point the velocity is v(x_t, t) = (x_t − x0) / t: Euler is exact at any step count
    p = RectifiedFlow()
    x0 = torch.tensor([[[[0.3, -0.7], [0.0, 0.9]]]])

    def net(x, c, y=None):
        return (x - x0) / (c.view(-1, 1, 1, 1) / 1000.0)

    noise = torch.randn(1, 1, 2, 2, generator=torch.Generator().manual_seed(3))
    for steps in (1, 3, 10):
        assert torch.allclose(p.sample(net, noise, steps=steps), x0, atol=1e-5)
    with pytest.raises(ValueError):
        p.sample(net, noise, steps=2, sampler="ddim")
