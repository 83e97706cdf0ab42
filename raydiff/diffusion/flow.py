"""Rectified flow (Liu et al. 2022), the objective of Marion & Wu (2026).

x_t = (1 − t)·x0 + t·ε for t ∈ [0, 1]; the network predicts the velocity v = ε − x0 (the
derivative of x_t in t) and is trained with MSE. Sampling integrates dx/dt = v from t = 1 (noise)
to t = 0 with Euler steps (the paper uses 250). The network sees c_noise = 1000·t, so the same
sinusoidal embedding suits both processes.
"""

from __future__ import annotations

import torch
from torch import nn

from raydiff.diffusion.base import guided

TIME_SCALE = 1000.0


class RectifiedFlow:
    def interpolate(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_t = (1 − t)·x0 + t·ε, t [B]."""
        t = t.to(x0.dtype).view(-1, 1, 1, 1)
        return (1.0 - t) * x0 + t * noise

    def loss(self, net: nn.Module, x0, class_labels=None, *, t=None, noise=None) -> torch.Tensor:
        b = x0.shape[0]
        if t is None:
            t = torch.rand(b, device=x0.device)
        if noise is None:
            noise = torch.randn_like(x0)
        t = t.to(x0.device, torch.float32)
        v_pred = net(self.interpolate(x0, t, noise), t * TIME_SCALE, class_labels)
        return (v_pred.float() - (noise - x0)).square().mean(dim=(1, 2, 3))

    def probe_times(self, k: int) -> torch.Tensor:
        return (torch.arange(k, dtype=torch.float32) + 0.5) / k

    @torch.no_grad()
    def sample(
        self, net, noise, class_labels=None, *, steps: int, sampler: str = "euler", guidance: float = 0.0, generator=None
    ):
        if sampler != "euler":
            raise ValueError(f"rectified flow samples with euler, not {sampler!r}")
        x = noise
        ts = torch.linspace(1.0, 0.0, steps + 1).tolist()
        for t, t_next in zip(ts[:-1], ts[1:]):
            c_noise = torch.full((x.shape[0],), t * TIME_SCALE, device=x.device)
            v = guided(net, x, c_noise, class_labels, guidance).float()
            x = x + (t_next - t) * v  # t_next < t: a step toward the data
        return x.clamp(-1.0, 1.0)
