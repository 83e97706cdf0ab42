"""`train(config, report)`: the one training function, the loop.

The Ray trainable, `raydiff train` and the benchmarks are thin wrappers around it. It knows
nothing about Ray (importing it loads no Ray module): it calls `report(metrics, checkpoint)` at
every evaluation, where `checkpoint` is a zero-argument function returning the full training state
(so a reporter that does not keep checkpoints pays nothing). Each report carries the stop decision,
computed once per evaluation (raydiff/training/reports.py); the loop ends when `report` returns
True, which the Ray trainable and `raydiff train` do for a report that carries a decision (a
benchmark may train on past one). Its parts live in raydiff/training/: the schedule, the state,
the optimizer step, the report contract and refinement.

Length, EMA and cadence are counted in optimizer steps and reported in images seen too
(images = steps × B), so sweeps over the batch size compare on either axis.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch

from raydiff.config import ExperimentConfig
from raydiff.data import load
from raydiff.diffusion import build_process
from raydiff.evaluation import Evaluator
from raydiff.training.refine import crossings, merge_interim, raw_memorization, refine
from raydiff.training.reports import Onsets, diverged_report, evaluation_report, history_row, interim_report, static_fields
from raydiff.training.schedule import fidelity_schedule, refine_steps, upcoming_evaluations
from raydiff.training.state import TrainState, configure_backends, resolve_device
from raydiff.training.step import OptimizerStep, sampling_network

Checkpoint = Callable[[], dict[str, Any]]
Reporter = Callable[[dict[str, Any], Checkpoint | None], bool | None]
Snapshot = Callable[[int, dict[str, torch.Tensor]], Any]  # (step, the evaluated weights) → saved

NONFINITE_CHECK_EVERY = 50


def train(
    config: ExperimentConfig, report: Reporter, state: dict[str, Any] | None = None, snapshot: Snapshot | None = None
) -> dict[str, Any]:
    """Train one model until `report` says stop, the loss diverges or the step budget is spent.
    With eval.figures: snapshots, `snapshot(step, weights)` receives the evaluated weights on the
    figure schedule instead of the loop measuring its figures (none is kept without one).

    Returns the last reported metrics.
    """
    cfg = config
    device = resolve_device(cfg.train.device)
    configure_backends(device)  # cudnn.benchmark and TF32 on CUDA; nothing elsewhere
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
    evaluator.count = sum(not h.get("refined") and not h.get("fidelity_only") for h in ts.history)  # FID cadence across a restore
    step = OptimizerStep(cfg, ts, process, data, device)
    static = static_fields(cfg, ts, data)
    eval_net = ts.ema if (ts.ema is not None and cfg.eval.use_ema) else ts.net
    # evaluations sample through the compiled network when train.compile is on; weights (snapshots,
    # refinement's copies) are read from the plain module
    sample_net = sampling_network(eval_net, cfg.train.compile)
    raw_net = sampling_network(ts.net, cfg.train.compile) if cfg.raw_tests else ts.net
    refine_k, b = cfg.eval.refine_snapshots, cfg.batch
    schedule = upcoming_evaluations(cfg, ts.step, ts.history)
    fidelity_at = set(fidelity_schedule(cfg, cfg.budget_steps))  # on an evaluation's step, that evaluation measures it
    off_loop = cfg.eval.figures == "snapshots"  # figures measured on snapshots, not here
    saved: list[int] = []  # snapshot steps not reported yet
    t_start = time.perf_counter() - ts.wall_s
    last: dict[str, Any] = {}
    while schedule:
        next_eval = schedule.pop(0)
        # steps, keeping copies of the evaluated weights where refinement may look between
        # evaluations, and measuring FID alone where the fidelity schedule asks
        snap_at = set(refine_steps(ts.step, next_eval, refine_k)) if refine_k else set()
        snaps: list[tuple[int, float, dict[str, torch.Tensor]]] = []  # (step, wall_s, weights)
        interim: list[tuple[dict, dict]] = []  # (history row, metrics) reported before this evaluation
        while ts.step < next_eval:
            step()
            if ts.step in snap_at:  # a copy of the evaluated weights: cheap beside one evaluation
                snaps.append((ts.step, time.perf_counter() - t_start, {k: v.detach().clone() for k, v in eval_net.state_dict().items()}))
            if ts.step in fidelity_at and ts.step != next_eval and off_loop:
                if snapshot is not None and snapshot(ts.step, eval_net.state_dict()):
                    saved.append(ts.step)
            elif ts.step in fidelity_at and ts.step != next_eval:
                m = evaluator.fidelity(sample_net, ts.step)
                interim.append(({**history_row(ts.step, b, time.perf_counter() - t_start, m), "fidelity_only": True}, m))
            if (ts.step % NONFINITE_CHECK_EVERY == 0 or ts.step == next_eval) and not step.finite():
                ts.wall_s = time.perf_counter() - t_start
                last = diverged_report(cfg, static, ts)
                report(last, None)
                return last
        # evaluate; when a definition the stop waits on has just crossed, refine its bracket from the snapshots
        if off_loop and snapshot is not None and evaluator.figure_due(ts.step in fidelity_at):
            if snapshot(ts.step, eval_net.state_dict()):
                saved.append(ts.step)
        metrics = evaluator(sample_net, ts.step, fid=ts.step in fidelity_at)
        if saved:  # the snapshots saved since the last report: whoever measures them hears of them here
            metrics["snapshots"], saved = list(saved), []
        if cfg.raw_tests:  # the EMA lags the raw weights: test them too (ExperimentConfig.raw_tests)
            metrics.update(raw_memorization(evaluator, raw_net, ts.step, metrics, cfg.raw_tests))
        fresh = crossings(cfg, ts.history, metrics) if snaps else ()
        if fresh:  # a definition the stop waits on has just crossed: narrow its bracket from the snapshots
            interim += refine(evaluator, eval_net, snaps, b, fresh, cfg.eval.refine_fraction)
        ts.wall_s = time.perf_counter() - t_start
        # report: the interim rows first, in step order (no checkpoint, no decision), then this evaluation
        for i_row, i_metrics in merge_interim(interim):
            ts.history.append(i_row)
            report(interim_report(cfg, static, ts, i_metrics, i_row), None)
        ts.history.append(history_row(ts.step, b, ts.wall_s, metrics))
        onset = Onsets.of(cfg, ts.history)  # once per evaluation: the report, its decision and the schedule read it
        last = evaluation_report(cfg, static, ts, metrics, step.mean_loss(), onset)
        if report(last, ts.state_dict):  # a reporter that follows the decision returns bool(stop_status)
            break
        schedule = upcoming_evaluations(cfg, ts.step, ts.history, schedule, onset)
    return last
