"""What every diffusion process offers the training loop and the evaluator."""

from __future__ import annotations

from typing import Protocol

import torch
from torch import nn


class Process(Protocol):
    def loss(
        self,
        net: nn.Module,
        x0: torch.Tensor,
        class_labels: torch.Tensor | None = None,
        *,
        t: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Per-sample training loss [B] for clean images x0 [B, C, H, W] in [-1, 1].

        t and noise default to fresh random draws; the loss probes pass fixed ones.
        """

    def sample(
        self,
        net: nn.Module,
        noise: torch.Tensor,
        class_labels: torch.Tensor | None = None,
        *,
        steps: int,
        sampler: str,
        guidance: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Images x0 [S, C, H, W] in [-1, 1] generated from the initial noise [S, C, H, W]."""

    def probe_times(self, k: int) -> torch.Tensor:
        """k fixed noise levels spread over the process's range, for the loss probes."""


def guided(
    net: nn.Module, x: torch.Tensor, c_noise: torch.Tensor, class_labels: torch.Tensor | None, guidance: float
) -> torch.Tensor:
    """Network output with classifier-free guidance: (1 + w)·f(x | y) − w·f(x | ∅).

    With w = 0 (the papers' setting) this is the plain conditional output, one forward pass.
    """
    out = net(x, c_noise, class_labels)
    if guidance == 0.0 or class_labels is None:
        return out
    return (1.0 + guidance) * out - guidance * net(x, c_noise, None)
