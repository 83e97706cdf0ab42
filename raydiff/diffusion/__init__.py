"""Diffusion processes: each owns its noise schedule, training loss and sampler.

Networks take (x, c_noise[, class_labels]) and know nothing of noise; a process decides what
c_noise is, how clean images are noised, what the network must predict, and how to sample.
"""

from __future__ import annotations

from raydiff.config import DiffusionConfig
from raydiff.diffusion.base import Process
from raydiff.diffusion.ddpm import DDPM
from raydiff.diffusion.flow import RectifiedFlow


def build_process(cfg: DiffusionConfig) -> Process:
    if cfg.objective == "ddpm":
        return DDPM(
            cfg.num_timesteps, cfg.beta_start, cfg.beta_end, clip_x0=cfg.clip_x0, grid=cfg.step_grid, t_min=cfg.t_min
        )
    return RectifiedFlow()


__all__ = ["DDPM", "Process", "RectifiedFlow", "build_process"]
