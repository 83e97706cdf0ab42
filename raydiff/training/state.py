"""What a trial checkpoints: model, EMA, optimizer, counters, RNG streams, the evaluation history."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

from raydiff.config import ExperimentConfig
from raydiff.data import ImageData
from raydiff.errors import UserError
from raydiff.models import build_network, count_params


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("is cuda, but this process sees no CUDA GPU; use auto or cpu", key="train.device")
    return torch.device(name)


def configure_backends(device: torch.device) -> dict[str, Any]:
    """The process-wide CUDA settings a trial on `device` runs with, set once at its start; on
    any other device nothing is touched (the CPU's results stay bit-identical). Returns the
    settings as they are now. Idempotent: setting them again changes nothing.

    cudnn.benchmark: cuDNN times its convolution algorithms once per input shape and keeps the
    fastest (a trial's shapes are fixed: the batch, the sample batch). TF32: float32 matmuls and
    convolutions on tensor cores (10-bit mantissa products, float32 accumulation; the bf16 autocast
    regions are unaffected); set_float32_matmul_precision("high") is the same switch for matmuls."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.set_float32_matmul_precision("high")
    return {
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "matmul_tf32": torch.backends.cuda.matmul.allow_tf32,
        "cudnn_tf32": torch.backends.cudnn.allow_tf32,
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
    }


class TrainState:
    """Model, EMA, optimizer, counters, RNG streams and the evaluation history."""

    def __init__(self, cfg: ExperimentConfig, data: ImageData, device: torch.device):
        c, h, _ = data.shape
        torch.manual_seed(cfg.train.seed)
        self.net = build_network(cfg.model, c, h, data.num_classes).to(device)
        self.ema = build_network(cfg.model, c, h, data.num_classes).to(device) if cfg.train.ema_beta() > 0 else None
        if self.ema is not None:
            self.ema.load_state_dict(self.net.state_dict())
            self.ema.requires_grad_(False)
        t = cfg.train
        fused = device.type == "cuda"
        if t.optimizer == "sgd":
            self.opt = torch.optim.SGD(
                self.net.parameters(), lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay,
                fused=fused, foreach=None if fused else True,
            )  # fmt: skip
        else:
            self.opt = torch.optim.Adam(
                self.net.parameters(), lr=t.lr, betas=tuple(t.adam_betas), eps=t.adam_eps,
                weight_decay=t.weight_decay, fused=fused, foreach=None if fused else True,
            )  # fmt: skip
        self.batch_gen = torch.Generator().manual_seed(t.seed + 10_007)
        # train.sampling: epochs: the current epoch's permutation of the N images and how far into it
        self.epoch_perm: torch.Tensor | None = None
        self.epoch_pos = 0
        self.step = 0
        self.wall_s = 0.0
        self.history: list[dict[str, Any]] = []  # one compact row per evaluation
        self.params = count_params(self.net)

    def state_dict(self) -> dict[str, Any]:
        return {
            "net": self.net.state_dict(),
            "ema": None if self.ema is None else self.ema.state_dict(),
            "opt": self.opt.state_dict(),
            "step": self.step,
            "wall_s": self.wall_s,
            "history": list(self.history),
            "epoch_perm": None if self.epoch_perm is None else self.epoch_perm.clone(),
            "epoch_pos": self.epoch_pos,
            "rng": {
                "batch": self.batch_gen.get_state(),
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
                "numpy": np.random.get_state(),
                "python": random.getstate(),
            },
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["net"])
        if self.ema is not None and state["ema"] is not None:
            self.ema.load_state_dict(state["ema"])
        self.opt.load_state_dict(state["opt"])
        self.step = int(state["step"])
        self.wall_s = float(state["wall_s"])
        self.history = list(state["history"])
        self.epoch_perm, self.epoch_pos = state.get("epoch_perm"), int(state.get("epoch_pos", 0))
        rng = state["rng"]
        self.batch_gen.set_state(rng["batch"])
        torch.set_rng_state(rng["torch"])
        if rng["cuda"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        np.random.set_state(rng["numpy"])
        random.setstate(rng["python"])
