"""`train(config, report)`: the one training function.

The Ray trainable, `raydiff train` and the benchmarks are thin wrappers around it. It knows
nothing about Ray: it calls `report(metrics, checkpoint)` at every evaluation, where `checkpoint`
is a zero-argument function returning the full training state (so a reporter that does not keep
checkpoints pays nothing), and stops early when `report` returns True.

Length, EMA and cadence are counted in optimizer steps and reported in images seen too
(images = steps × B), so sweeps over the batch size compare on either axis.
"""

from __future__ import annotations

import copy
import math
import os
import random
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from raydiff.config import ExperimentConfig
from raydiff.data import ImageData, load, to_model_range
from raydiff.diffusion import build_process
from raydiff.evaluation import Evaluator
from raydiff.metrics.objectives import objective_values
from raydiff.metrics.onset import loss_divergence_onset, mem_onset
from raydiff.models.unet import build_unet, count_params

Checkpoint = Callable[[], dict[str, Any]]
Reporter = Callable[[dict[str, Any], Checkpoint | None], bool | None]

# a non-finite loss is looked for every this many steps (a device sync each time on GPU)
NONFINITE_CHECK_EVERY = 50
FAULT_ENV = "RAYDIFF_FAULT_AT_STEP"  # test hook, see injected_fault_step


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        from raydiff.errors import UserError

        raise UserError("is cuda, but this process sees no CUDA GPU; use auto or cpu", key="train.device")
    return torch.device(name)


def eval_schedule(cfg: ExperimentConfig, budget: int) -> list[int]:
    """The steps at which to evaluate, ascending, always ending at the budget.

    uniform: every k steps. geometric: the gap grows by `geometric_ratio` each time (never below
    k), since onset times scale with N: a fixed relative resolution for a fraction of the evals.
    """
    k = cfg.eval_every_steps
    steps, s, gap = [], 0, float(k)
    while True:
        s = s + max(k, round(gap))
        if s >= budget:
            break
        steps.append(s)
        if cfg.eval.cadence == "geometric":
            gap = s * (cfg.eval.geometric_ratio - 1.0)
    return steps + [budget]


def refine_steps(lo: int, hi: int, k: int) -> list[int]:
    """The steps strictly between evaluations at `lo` and `hi` at which to snapshot the evaluated
    weights for bracket refinement: k evenly spaced (fewer when the gap is under k + 1), ascending."""
    return sorted({lo + (hi - lo) * i // (k + 1) for i in range(1, k + 1)} - {lo, hi})


def crossed(history: list[dict[str, Any]], mem_frac: float | None, threshold: float) -> bool:
    """mem_frac has just risen to the threshold: this evaluation is at or above it, the last
    measured one before it (if any) below. That bracket is what refinement narrows."""
    if mem_frac is None or not math.isfinite(mem_frac) or mem_frac < threshold:
        return False
    before = [h["mem_frac"] for h in history if h.get("mem_frac") is not None]
    return not before or not (math.isfinite(before[-1]) and before[-1] >= threshold)


def bisect_crossing(n: int, above: Callable[[int], bool]) -> int:
    """Binary search over n snapshots in time order, bracketed by an evaluation below the threshold
    before them and one above after them: the index of the first snapshot found above (n: none),
    for ⌈log₂(n + 1)⌉ calls of `above`. Every snapshot evaluated before that index is below and
    every one after it above, so the one onset rule, run over the merged history, lands on it."""
    lo, hi = -1, n
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if above(mid):
            hi = mid
        else:
            lo = mid
    return hi


class TrainState:
    """Model, EMA, optimizer, counters, RNG streams and the evaluation history."""

    def __init__(self, cfg: ExperimentConfig, data: ImageData, device: torch.device):
        c, h, _ = data.shape
        torch.manual_seed(cfg.train.seed)
        self.net = build_unet(cfg.model, c, h, data.num_classes).to(device)
        self.ema = build_unet(cfg.model, c, h, data.num_classes).to(device) if cfg.train.ema_beta() > 0 else None
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
        rng = state["rng"]
        self.batch_gen.set_state(rng["batch"])
        torch.set_rng_state(rng["torch"])
        if rng["cuda"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        np.random.set_state(rng["numpy"])
        random.setstate(rng["python"])


def onset_summary(cfg: ExperimentConfig, history: list[dict[str, Any]]) -> dict[str, Any]:
    """τ_mem by both definitions, from the evaluation history (the stopper uses the same rule)."""
    steps = [h["step"] for h in history]
    tau = mem_onset(steps, [h.get("mem_frac") for h in history], cfg.stop.mem_frac_threshold, cfg.stop.patience)
    tau_loss = loss_divergence_onset(
        steps, [h.get("train_loss") for h in history], [h.get("test_loss") for h in history],
        cfg.stop.loss_gap, cfg.stop.loss_window,
    )  # fmt: skip
    return {"tau_mem_step": tau, "tau_mem_loss_step": tau_loss}


def train(config: ExperimentConfig, report: Reporter, state: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train one model until `report` says stop, the loss diverges or the step budget is spent.

    Returns the last reported metrics.
    """
    cfg = config
    device = resolve_device(cfg.train.device)
    data = load(cfg.data)
    process = build_process(cfg.diffusion)
    ts = TrainState(cfg, data, device)
    # The evaluator's fixed noise has its own generators, but building it may draw from the global
    # RNG (a feature net's init): fork it, so that a run restored from a checkpoint continues the
    # very random stream an uninterrupted run would have used (same seed → same τ_mem).
    with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
        evaluator = Evaluator(cfg, data, process, device)
    if state is not None:
        ts.load_state_dict(state)
    resumed_from_step = ts.step  # 0 unless restored from a checkpoint
    evaluator.count = sum(not h.get("refined") for h in ts.history)  # keeps the FID cadence aligned across a restore
    fault_step = injected_fault_step(cfg)

    x_train = to_model_range(data.x_train).to(device)  # [N, C, H, W], resident for the whole run
    y_train = data.y_train.to(device) if data.num_classes else None
    n, b = x_train.shape[0], cfg.train.batch_size
    budget = cfg.budget_steps
    schedule = [s for s in eval_schedule(cfg, budget) if s > ts.step]
    ema_beta = cfg.train.ema_beta()
    net_params = list(ts.net.parameters())
    ema_params = list(ts.ema.parameters()) if ts.ema is not None else []
    label_dropout = 0.1 if (cfg.diffusion.guidance > 0 and y_train is not None) else 0.0
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda" and cfg.train.bf16)
    static = {
        "params": ts.params,
        "n_train": n,
        "batch_size": b,
        "lr": cfg.train.lr,
        "budget_steps": budget,
        "budget_reason": cfg.budget_reason,
        "pid": os.getpid(),  # which process ran it (Ray fills in the same): a restarted trial shows a new pid ...
        "resumed_from_step": resumed_from_step,  # ... and the checkpoint step it resumed from
    }

    loss_sum = torch.zeros((), device=device)
    loss_count = 0
    t_start = time.perf_counter() - ts.wall_s
    last: dict[str, Any] = {}
    ts.net.train()
    eval_net = ts.ema if (ts.ema is not None and cfg.eval.use_ema) else ts.net
    refine_k, threshold = cfg.eval.refine_snapshots, cfg.stop.mem_frac_threshold
    for next_eval in schedule:
        snap_at = set(refine_steps(ts.step, next_eval, refine_k)) if refine_k else set()
        snaps: list[tuple[int, float, dict[str, torch.Tensor]]] = []  # (step, wall_s, weights)
        while ts.step < next_eval:
            idx = torch.randint(0, n, (b,), generator=ts.batch_gen).to(device, non_blocking=True)
            labels = None
            if y_train is not None:
                labels = y_train[idx]
                if label_dropout:
                    drop = torch.rand(b, device=device) < label_dropout
                    labels = torch.where(drop, torch.full_like(labels, data.num_classes), labels)
            with autocast:
                loss = process.loss(ts.net, x_train[idx], labels).mean()
            ts.opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.train.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(net_params, cfg.train.grad_clip, foreach=True)
            ts.opt.step()
            if ema_params:
                torch._foreach_lerp_(ema_params, net_params, 1.0 - ema_beta)
            ts.step += 1
            if ts.step == fault_step:
                raise RuntimeError(f"injected fault at step {ts.step} ({FAULT_ENV}, a test hook)")
            loss_sum += loss.detach()
            loss_count += 1
            if ts.step in snap_at:  # a copy of the evaluated weights: cheap beside one evaluation
                weights = {k: v.detach().clone() for k, v in eval_net.state_dict().items()}
                snaps.append((ts.step, time.perf_counter() - t_start, weights))
            if ts.step % NONFINITE_CHECK_EVERY == 0 or ts.step == next_eval:
                if not math.isfinite(float(loss_sum)):
                    ts.wall_s = time.perf_counter() - t_start
                    last = {
                        **static, "step": ts.step, "images_seen": ts.step * b, "wall_s": ts.wall_s,
                        "loss": float("nan"), "diverged": True, "diverged_step": ts.step,
                        "tau_mem_step": None, "node_id": _node_id(),
                        **objective_values(ts.history, None, ts.step, b, diverged=True),
                    }  # fmt: skip
                    report(last, None)
                    return last

        metrics = evaluator(eval_net, ts.step)
        refined = []  # (row, metrics) of snapshot evaluations, ascending in step
        if snaps and crossed(ts.history, metrics.get("mem_frac"), threshold):
            refined = _refine(evaluator, eval_net, snaps, threshold, b)
        ts.wall_s = time.perf_counter() - t_start
        row = {"step": ts.step, "images_seen": ts.step * b, "wall_s": ts.wall_s}
        row.update({k: metrics.get(k) for k in ("train_loss", "test_loss", "mem_frac", "mem_frac_lo", "mem_frac_hi", "fid")})
        for r_row, r_metrics in refined:
            # reported before the evaluation that found the crossing, without the history (so no
            # stopper acts on them) and without a checkpoint; that evaluation's report carries both
            ts.history.append(r_row)
            r_onset = onset_summary(cfg, ts.history)
            report({
                **static, **r_metrics, **r_row, **r_onset, "diverged": False,
                **objective_values(ts.history, r_onset["tau_mem_step"], r_row["step"], b), "node_id": _node_id(),
            }, None)  # fmt: skip
        ts.history.append(row)
        onset = onset_summary(cfg, ts.history)
        last = {
            **static,
            **metrics,
            **row,
            "loss": float(loss_sum) / max(1, loss_count),
            "diverged": False,
            **onset,
            "tau_mem_images": None if onset["tau_mem_step"] is None else onset["tau_mem_step"] * b,
            "tau_mem_seconds": _wall_at(ts.history, onset["tau_mem_step"]),
            # search objectives, in every report (an Optuna search reads them; see metrics/objectives.py)
            **objective_values(ts.history, onset["tau_mem_step"], ts.step, b),
            # the stopper decides from these, so it needs no state of its own
            "history_steps": [h["step"] for h in ts.history],
            "history_mem_frac": [h.get("mem_frac") for h in ts.history],
            "node_id": _node_id(),
        }
        loss_sum.zero_()
        loss_count = 0
        if report(last, ts.state_dict):
            break
    return last


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


def _refine(evaluator: Evaluator, net: torch.nn.Module, snaps: list, threshold: float, b: int) -> list[tuple[dict, dict]]:
    """Evaluate (memorization only) the snapshots a binary search for the crossing visits."""
    scratch = copy.deepcopy(net)
    done: dict[int, dict[str, Any]] = {}

    def above(i: int) -> bool:
        scratch.load_state_dict(snaps[i][2])
        done[i] = evaluator(scratch, snaps[i][0], memorization_only=True)
        v = done[i].get("mem_frac")
        return v is not None and math.isfinite(v) and v >= threshold

    bisect_crossing(len(snaps), above)
    out = []
    for i in sorted(done):
        step, wall_s, _ = snaps[i]
        m = done[i]
        row = {"step": step, "images_seen": step * b, "wall_s": wall_s, "refined": True}
        row.update({k: m.get(k) for k in ("train_loss", "test_loss", "mem_frac", "mem_frac_lo", "mem_frac_hi", "fid")})
        out.append((row, m))
    return out


def _wall_at(history: list[dict[str, Any]], step: int | None) -> float | None:
    if step is None:
        return None
    return next(h["wall_s"] for h in history if h["step"] == step)


def _node_id() -> str:
    try:
        import ray

        if ray.is_initialized():
            return ray.get_runtime_context().get_node_id()
    except Exception:  # noqa: BLE001 - outside Ray there is no node id to record
        pass
    import socket

    return socket.gethostname()
