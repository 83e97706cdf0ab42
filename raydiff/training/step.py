"""One optimizer step on a batch of the resident training set: noise → loss → backward → clip →
step → EMA, with the batch drawn by train.sampling; and the test hook that injects a fault."""

from __future__ import annotations

import math
import os

import torch

from raydiff.config import ExperimentConfig
from raydiff.data import ImageData, to_model, train_mean
from raydiff.training.state import TrainState

FAULT_ENV = "RAYDIFF_FAULT_AT_STEP"  # test hook, see injected_fault_step


class OptimizerStep:
    """One optimizer step on a batch of B = cfg.batch images from the resident training set, drawn
    with replacement or from shuffled epochs (train.sampling): noise → loss → backward → clip →
    step → EMA. Keeps the running loss sum between evaluations."""

    def __init__(self, cfg: ExperimentConfig, ts: TrainState, process, data: ImageData, device: torch.device):
        self.ts, self.process, self.device = ts, process, device
        norm = cfg.data.normalization  # [N, C, H, W] in the model's range, resident for the whole run
        self.x_train = to_model(data.x_train, norm, train_mean(norm, data.x_train)).to(device)
        self.y_train = data.y_train.to(device) if data.num_classes else None  # [N] or None
        self.num_classes = data.num_classes
        self.n, self.b = self.x_train.shape[0], cfg.batch
        self.epochs = cfg.train.sampling == "epochs"
        self.grad_clip = cfg.train.grad_clip
        self.ema_beta = cfg.train.ema_beta(cfg.batch)
        self.net_params = list(ts.net.parameters())
        self.ema_params = list(ts.ema.parameters()) if ts.ema is not None else []
        # classifier-free guidance trains the "no label" token on 10% of the batches' labels
        self.label_dropout = 0.1 if (cfg.diffusion.guidance > 0 and self.y_train is not None) else 0.0
        self.autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda" and cfg.train.bf16)
        # train.compile: the training step's forward (and its backward, through AOTAutograd) runs
        # the compiled module, which shares ts.net's parameters; everything else uses ts.net itself
        mode = cfg.train.compile
        self.net = ts.net if mode == "off" else torch.compile(ts.net, mode=None if mode == "default" else mode)
        self.fault_step = injected_fault_step(cfg)
        self.loss_sum = torch.zeros((), device=device)  # summed on the device: no sync per step
        self.loss_count = 0

    def __call__(self) -> None:
        ts, b = self.ts, self.b
        idx = self.draw().to(self.device, non_blocking=True)  # [B]
        labels = None
        if self.y_train is not None:
            labels = self.y_train[idx]
            if self.label_dropout:
                drop = torch.rand(b, device=self.device) < self.label_dropout
                labels = torch.where(drop, torch.full_like(labels, self.num_classes), labels)
        with self.autocast:
            loss = self.process.loss(self.net, self.x_train[idx], labels).mean()
        ts.opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.net_params, self.grad_clip, foreach=True)
        ts.opt.step()
        if self.ema_params:
            torch._foreach_lerp_(self.ema_params, self.net_params, 1.0 - self.ema_beta)
        ts.step += 1
        if ts.step == self.fault_step:
            raise RuntimeError(f"injected fault at step {ts.step} ({FAULT_ENV}, a test hook)")
        self.loss_sum += loss.detach()
        self.loss_count += 1

    def draw(self) -> torch.Tensor:
        """The next batch's indices into the training set, int64 [B] on the CPU, from the trial's
        batch generator. replacement: B uniform draws. epochs: the next B of the current epoch's
        permutation, a fresh one drawn when it runs out (a batch may straddle two epochs); the
        permutation and the position in it are TrainState's, so a restore continues them."""
        ts, n, b = self.ts, self.n, self.b
        if not self.epochs:
            return torch.randint(0, n, (b,), generator=ts.batch_gen)
        parts, need = [], b
        while need:
            if ts.epoch_perm is None or ts.epoch_pos >= n:
                ts.epoch_perm, ts.epoch_pos = torch.randperm(n, generator=ts.batch_gen), 0
            part = ts.epoch_perm[ts.epoch_pos : ts.epoch_pos + need]
            parts.append(part)
            ts.epoch_pos += len(part)
            need -= len(part)
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def finite(self) -> bool:
        """The loss summed since the last evaluation is finite (a device sync)."""
        return math.isfinite(float(self.loss_sum))

    def mean_loss(self) -> float:
        """The mean training-batch loss since the last call; starts the next sum."""
        mean = float(self.loss_sum) / max(1, self.loss_count)
        self.loss_sum.zero_()
        self.loss_count = 0
        return mean


def sampling_network(net: torch.nn.Module, compile_mode: str) -> torch.nn.Module:
    """The module evaluations sample through: `net` itself when train.compile is off, else `net`
    compiled once (sharing its parameters, so it follows the EMA's updates and a restore). Always
    torch.compile's default mode: CUDA graphs (reduce-overhead) reuse their output buffers at the
    next replay, and a multistep sampler keeps the previous step's output."""
    return net if compile_mode == "off" else torch.compile(net)


def injected_fault_step(cfg: ExperimentConfig) -> int | None:
    """Test hook: RAYDIFF_FAULT_AT_STEP="S" makes every trial raise at step S, "S:section.key=V"
    only the trials whose config has that value (e.g. "100:data.n_train=16"), so tests can prove
    that a failing trial is recorded as an error while the rest of the sweep goes on."""
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return None
    step, _, cond = spec.partition(":")
    if cond:
        key, _, value = cond.partition("=")
        section, _, name = key.partition(".")
        if str(cfg.to_dict().get(section, {}).get(name)) != value:
            return None
    return int(step)
