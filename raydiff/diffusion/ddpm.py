"""DDPM (Ho et al. 2020): discrete variance-preserving process with ε-prediction.

Bonnaire et al. (2025) use exactly this: T = 1000, β linear from 1e-4 to 2e-2, the network
predicts the noise ε and is trained with MSE. Sampling respaces the T steps to `steps` steps and
runs DDIM (η = 0, deterministic given the initial noise) or ancestral sampling (η = 1).

Three choices differ between raydiff's DDIM and Bonnaire et al.'s (Utils/Diffusion.py,
`sample_diffusion_from_noise_DDIM`), each a constructor option whose default is raydiff's:

    clip_x0   x̂₀ = (x_t − √(1 − ᾱ_t)·ε̂)/√ᾱ_t (DDIM eq. 9) clamped to [−1, 1] and ε̂ recomputed
              from it (raydiff), or used as predicted (theirs: no clamp)
    grid      "rounded": `steps` network calls on round(linspace(0, T − 1, steps)), the last one
              jumping to x̂₀ (raydiff); "floored": `steps` calls between the steps + 1 indices
              floor(linspace(0, T − 1, steps + 1)) (numpy's dtype=int), ending on x at index 0,
              not on x̂₀ (theirs: ddim_steps = 100 grid points, 99 calls)
    t_min     training t uniform on {t_min, …, T − 1}: 0 (raydiff) or 1 (theirs:
              torch.randint(low=1, high=T))
"""

from __future__ import annotations

import torch
from torch import nn

from raydiff.diffusion.base import guided


GRIDS = ("rounded", "floored")


class DDPM:
    def __init__(
        self,
        num_timesteps: int = 1000,
        beta_start: float = 1e-4,
        beta_end: float = 2e-2,
        *,
        clip_x0: bool = True,
        grid: str = "rounded",
        t_min: int = 0,
    ):
        if grid not in GRIDS:
            raise ValueError(f"grid must be one of {', '.join(GRIDS)} (got {grid!r})")
        if not 0 <= t_min < num_timesteps:
            raise ValueError(f"t_min must be in 0..{num_timesteps - 1} (got {t_min})")
        self.num_timesteps = num_timesteps
        self.clip_x0, self.grid, self.t_min = clip_x0, grid, t_min
        # float64 for the schedule: cumprod over 1000 factors loses digits in float32
        self.betas = torch.linspace(beta_start, beta_end, num_timesteps, dtype=torch.float64)
        self.alphas = 1.0 - self.betas
        self.alphas_cumprod = torch.cumprod(self.alphas, dim=0)
        # the coefficients too: 1 − ᾱ_t in float32 keeps only ~3 digits at small t (ᾱ_0 = 0.9999)
        self.sqrt_abar = self.alphas_cumprod.sqrt()
        self.sqrt_one_minus_abar = (1.0 - self.alphas_cumprod).sqrt()
        self._coefs = torch.stack([self.sqrt_abar, self.sqrt_one_minus_abar])  # [2, T]: one copy per step

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_t = √ᾱ_t · x0 + √(1 − ᾱ_t) · ε."""
        c = self._coefs.to(x0.device)[:, t].to(x0.dtype).view(2, -1, 1, 1, 1)  # [2, B, 1, 1, 1]
        return c[0] * x0 + c[1] * noise

    def loss(self, net: nn.Module, x0, class_labels=None, *, t=None, noise=None) -> torch.Tensor:
        b = x0.shape[0]
        if t is None:
            t = torch.randint(self.t_min, self.num_timesteps, (b,), device=x0.device)
        if noise is None:
            noise = torch.randn_like(x0)
        eps_pred = net(self.q_sample(x0, t, noise), t.float(), class_labels)
        return (eps_pred.float() - noise).square().mean(dim=(1, 2, 3))

    def probe_times(self, k: int) -> torch.Tensor:
        # midpoints of k equal bins of [0, T): covers low and high noise alike
        return ((torch.arange(k, dtype=torch.float64) + 0.5) * self.num_timesteps / k).long()

    def timesteps(self, steps: int) -> list[int]:
        """The respaced steps, descending. Rounded grid: `steps` evenly spaced indices from T − 1
        down to 0, each one network call, the last jumping to x̂₀ (one step: from pure noise at
        t = T − 1 to x̂₀). Floored grid: the steps + 1 indices floor(linspace(0, T − 1, steps + 1)),
        `steps` calls between them, ending on x at index 0 (the last index is not a call)."""
        if self.grid == "floored":
            if not 1 <= steps < self.num_timesteps:
                raise ValueError(f"the floored grid takes 1..{self.num_timesteps - 1} steps (got {steps})")
            grid = torch.linspace(0, self.num_timesteps - 1, steps + 1, dtype=torch.float64).floor().long()
            return sorted(set(grid.tolist()), reverse=True)
        if steps == 1:  # linspace(0, T − 1, 1) would be [0]: "sampling" from nearly clean images
            return [self.num_timesteps - 1]
        if steps >= self.num_timesteps:
            return list(range(self.num_timesteps - 1, -1, -1))
        grid = torch.linspace(0, self.num_timesteps - 1, steps, dtype=torch.float64).round().long()
        return sorted(set(grid.tolist()), reverse=True)

    @torch.no_grad()
    def sample(
        self, net, noise, class_labels=None, *, steps: int, sampler: str = "ddim", guidance: float = 0.0, generator=None
    ):
        eta = {"ddim": 0.0, "ancestral": 1.0}[sampler]
        x = noise
        ts = self.timesteps(steps)
        acp = self.alphas_cumprod
        if self.grid == "floored":
            ts = ts[:-1]  # the last index (0) is where the chain ends, not a network call
        for i, t in enumerate(ts):
            # the next index: the grid's, or −1 (ᾱ = 1: return x̂₀) after the rounded grid's last
            t_prev = ts[i + 1] if i + 1 < len(ts) else (0 if self.grid == "floored" else -1)
            a_t = float(acp[t])
            a_prev = float(acp[t_prev]) if t_prev >= 0 else 1.0
            c_noise = torch.full((x.shape[0],), float(t), device=x.device)
            eps = guided(net, x, c_noise, class_labels, guidance).float()
            x0 = (x - (1 - a_t) ** 0.5 * eps) / a_t**0.5  # DDIM eq. 9: the predicted x0
            if self.clip_x0:
                x0 = x0.clamp(-1.0, 1.0)
                eps = (x - a_t**0.5 * x0) / (1 - a_t) ** 0.5  # consistent with the clipped x0
            if t_prev < 0:
                x = x0
                break
            sigma = eta * ((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)) ** 0.5  # DDIM eq. 16
            x = a_prev**0.5 * x0 + max(1 - a_prev - sigma**2, 0.0) ** 0.5 * eps  # DDIM eq. 12
            if sigma > 0:
                x = x + sigma * torch.randn(x.shape, generator=generator).to(x.device)
        return x
