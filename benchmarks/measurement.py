"""3. Measurement tax: the share of a trial's wall time spent evaluating (sampling, nearest
neighbours, loss probes, FID), from what trials report (Σ eval_s / wall_s).

3a  the embedded default's grid under the stopper, before and after the speed-ups (trials.py).
3b  CIFAR-size (32×32×3): a short trial measured directly, and the tax of whole trials computed
    from measured costs (seconds per training step, per evaluation, per memorization-only
    evaluation) and the cadence, for the embedded default's evaluation settings and for the
    paper grid's (marion2026_cifar10.yaml), before and after. gmm data (no network); no FID
    (Inception cannot be fetched here): FID's sampling is counted, its Inception pass is not.
3c  fewer sampler steps for the memorization test: mem_frac of the same weights (a model at
    onset and a memorizing one) at 250 steps and fewer, with the 250-step bootstrap interval.
"""

from __future__ import annotations

import math
import time

import torch

from benchmarks.common import Section, config, default_space, fmt, median, smoke_space
from benchmarks.trials import grid_runs
from raydiff.data import load, to_model_range
from raydiff.diffusion import build_process
from raydiff.evaluation import Evaluator
from raydiff.metrics.memorization import fraction_with_interval, memorized_pixel
from raydiff.models import build_unet
from raydiff.training.state import TrainState
from raydiff.training.schedule import eval_schedule
from raydiff.trial import train


def grid_tax(quick: bool) -> Section:
    runs = grid_runs(quick)
    rows = []
    for b, a in zip(runs["before"], runs["after"]):
        rows.append([b.overrides.get("data.n_train"), b.tax, b.evals, b.tau, a.tax, a.evals, a.refined, a.tau])
    tot = {k: sum(r.eval_s for r in v) / sum(r.wall_s for r in v) for k, v in runs.items()}
    rows.append(["all", tot["before"], sum(r.evals for r in runs["before"]), None, tot["after"],
                 sum(r.evals for r in runs["after"]), sum(r.refined for r in runs["after"]), None])  # fmt: skip
    return Section(
        "3a", "Measurement tax, embedded default (digits 8×8, stopper on)", "≤ 3% (issue 15)",
        f"Σ eval_s / Σ wall_s = {tot['before']:.1%} before → {tot['after']:.1%} after",
        None if quick else tot["after"] <= 0.03,
        ["N", "tax before", "evals", "τ_mem", "tax after", "evals", "of which refinement", "τ_mem"], rows,
        notes=["before: the default's evaluation settings as they were (every 50 steps, ×1.2, 25 sampler "
               "steps, no refinement); after: the packaged default now",
               "each trial runs in this process on one torch thread; the two sides alternate point by point"],
        data={k: [vars(r) for r in v] for k, v in runs.items()},
    )  # fmt: skip


# ------------------------------------------------------------------------------ costs


def measure_costs(cfg, reps: int, block: int) -> dict[str, float]:
    """Seconds per training step, per evaluation (no FID) and per memorization-only evaluation,
    alternated (steps, full eval, mem eval, steps, …) on one model; medians."""
    device = torch.device("cpu")
    data = load(cfg.data)
    process = build_process(cfg.diffusion)
    ts = TrainState(cfg, data, device)
    ev = Evaluator(cfg, data, process, device)
    x = to_model_range(data.x_train)
    n, b = x.shape[0], cfg.train.batch_size

    def steps() -> float:
        t0 = time.perf_counter()
        for _ in range(block):
            loss = process.loss(ts.net, x[torch.randint(0, n, (b,))]).mean()
            ts.opt.zero_grad(set_to_none=True)
            loss.backward()
            ts.opt.step()
        return (time.perf_counter() - t0) / block

    out: dict[str, list[float]] = {"step": [], "eval": [], "mem": []}
    steps()  # warm-up
    for _ in range(reps):
        out["step"].append(steps())
        out["eval"].append(ev(ts.net, 0)["eval_s"])
        out["mem"].append(ev(ts.net, 0, memorization_only=True)["eval_s"])
    return {k: median(v) for k, v in out.items()}


def evals_to_stop(cfg, tau: int) -> tuple[int, int, int]:
    """(steps, full evaluations, memorization-only evaluations) of a trial whose mem_frac crosses
    the threshold at step τ and stays above: the stopper's cost under cfg's cadence."""
    sched = eval_schedule(cfg, 4 * tau + 10 * cfg.eval_every_steps)  # far enough past τ to stop
    first = next(i for i, s in enumerate(sched) if s >= tau)
    k = cfg.eval.refine_snapshots
    stop_i = first + (cfg.stop.patience - 1)
    refine = math.ceil(math.log2(k + 1)) if k else 0
    if k and sched[first] - (sched[first - 1] if first else 0) > 1:
        stop_i = first  # a refined snapshot and the crossing evaluation make the two in a row
    return sched[stop_i], stop_i + 1, refine


def projected_tax(cfg, costs: dict[str, float], tau: int) -> float:
    steps, full, mem = evals_to_stop(cfg, tau)
    ev = full * costs["eval"] + mem * costs["mem"]
    return ev / (steps * costs["step"] + ev)


def cifar_size(quick: bool) -> Section:
    torch.set_num_threads(1)
    size, steps, reps, block = (16, 10, 1, 2) if quick else (32, 300, 3, 20)
    gmm = {"data.dataset": "gmm", "data.image_size": size, "data.channels": 3, "data.n_train": 64,
           "model.preset": "digits-tiny", "train.batch_size": 16, "eval.fid_every": 0, "eval.fid_every_steps": None}  # fmt: skip
    space = default_space()
    short = config(space, {**gmm, "train.max_steps": steps, "stop.patience": 10**6})
    # a short trial measured directly: the embedded default's evaluation settings at 32×32×3
    reports = []
    train(short, lambda m, _c: reports.append(m) and False)
    direct_tax = sum(r["eval_s"] for r in reports) / reports[-1]["wall_s"]

    # projections: the default's eval settings, and the paper grid's, before/after
    base = config(space, gmm)
    costs = measure_costs(base, reps, block)
    model_tax = _fixed_budget_tax(short, costs, steps)
    rows = []
    marion = _marion_eval(size, quick)
    settings = {
        "default eval, before": {**gmm, **_before()},
        "default eval, after": gmm,
        "paper eval (marion2026_cifar10.yaml), before": {**gmm, **marion},
        "paper eval, after: 50 mem steps + 7 snapshots, ×1.5": {**gmm, **marion, "eval.mem_sample_steps": 50,
                                                                "eval.refine_snapshots": 7, "eval.geometric_ratio": 1.5},
        "paper eval, after + FID every 8th, 1,024 probe images": {
            **gmm, **marion, "eval.mem_sample_steps": 50, "eval.refine_snapshots": 7, "eval.geometric_ratio": 1.5,
            "eval.fid_every": 8, "eval.probe_images": 1024},
    }  # fmt: skip
    taus = (2_000, 20_000, 200_000)
    scaled = {}
    for name, over in settings.items():
        cfg = config(space, over)
        c = _scale_costs(costs, base, cfg)
        scaled[name] = c
        rows.append([name, *[projected_tax(cfg, c, t) for t in taus]])
    return Section(
        "3b", "Measurement tax, CIFAR-size (gmm 32×32×3, no FID)", "the paper grid's ≤ 10% at τ = 20k (issue 15)",
        f"whole trials with onset at τ = 20k steps: the default's evaluation {rows[0][2]:.1%} → {rows[1][2]:.1%}; "
        f"the paper grid's {rows[2][2]:.0%} → {rows[4][2]:.0%} (projected from measured costs)",
        None if quick else rows[4][2] <= 0.10,
        ["evaluation settings", *[f"tax, onset at τ = {t:,} steps" for t in taus]], rows,
        notes=[
            f"measured directly: a {steps}-step trial with the default's evaluation settings spends {direct_tax:.0%} of "
            f"its wall time evaluating (the cost model below predicts {model_tax:.0%} for it): early evaluations "
            "dominate a short trial, so whole trials are projected",
            f"U-Net digits-tiny widths at {size}×{size}×3 ({base.train.batch_size} per batch): costs per training step "
            f"{costs['step'] * 1e3:.0f} ms, per evaluation {costs['eval']:.2f} s, per memorization-only evaluation "
            f"{costs['mem']:.2f} s (medians of {reps}, alternated)",
            "projected rows: tax of a whole trial stopped at onset (crossing at τ, patience 2), from those costs "
            "scaled by image-forward counts (probes, samples × sampler steps, FID samples / fid_every); "
            "Inception for FID and SSCD are not counted (not available here): the paper rows are lower bounds",
            "on a GPU sampling runs at batch 512 while training runs at B = 16, so the GPU's share is lower than this "
            "CPU projection (gpu.py measures the cost of one evaluation there)",
        ],
        data={"costs": costs, "scaled": scaled, "direct_tax": direct_tax},
    )  # fmt: skip


def _before() -> dict:
    from benchmarks.common import BEFORE_EVAL

    return dict(BEFORE_EVAL)


def _marion_eval(size: int, quick: bool) -> dict:
    """The paper grid's evaluation block, minus what needs a network (SSCD, Inception)."""
    return {
        "eval.every_images": 16384, "eval.cadence": "geometric", "eval.geometric_ratio": 1.25,
        "eval.num_samples": 1024, "diffusion.sample_steps": 250, "eval.mem_sample_steps": None,
        "eval.probe_images": 5120, "eval.probe_noise_levels": 8, "eval.fid_every": 4, "eval.fid_samples": 5120,
        "eval.refine_snapshots": 0, "data.n_train": 2048, "data.n_test": 5120,
    }  # fmt: skip


def _forwards(cfg) -> tuple[float, float]:
    """Image forward passes of one full evaluation (probes + samples + FID sampling averaged over
    fid_every) and of one memorization-only evaluation."""
    e, d = cfg.eval, cfg.diffusion
    mem_steps = e.mem_sample_steps or d.sample_steps
    probes = (min(e.probe_images, cfg.data.n_train) + min(e.probe_images, cfg.data.n_test)) * e.probe_noise_levels
    mem = e.num_samples * mem_steps
    fid = 0.0
    if e.fid_every:
        shared = mem_steps == d.sample_steps
        fid = (max(0, e.fid_samples - e.num_samples) if shared else e.fid_samples) * d.sample_steps / e.fid_every
    return probes + mem + fid, mem


def _scale_costs(costs: dict[str, float], measured_cfg, cfg) -> dict[str, float]:
    """Costs for cfg's evaluation from those measured under measured_cfg (linear in forwards)."""
    full0, mem0 = _forwards(measured_cfg)
    per_fwd = costs["mem"] / mem0
    full, mem = _forwards(cfg)
    return {"step": costs["step"], "eval": costs["eval"] * (full / full0) if full0 else full * per_fwd, "mem": mem * per_fwd}


def _fixed_budget_tax(cfg, costs: dict[str, float], steps: int) -> float:
    evals = len(eval_schedule(cfg, steps))
    ev = evals * costs["eval"]
    return ev / (steps * costs["step"] + ev)


# ----------------------------------------------------------------- sampler steps


def sampler_steps(quick: bool) -> Section:
    """mem_frac of the same EMA weights at several sampler step counts."""
    torch.set_num_threads(1)
    counts = (250, 50, 25, 10) if not quick else (50, 10)
    rows, data = [], {}
    for objective in ("ddpm",) if quick else ("ddpm", "flow"):
        if quick:
            cfg = config(smoke_space(), {"data.n_train": 8, "train.max_steps": 40, "eval.every_steps": 20, "eval.fid_every": 0, "eval.fid_every_steps": None})
        else:
            cfg = config(default_space(), {"data.n_train": 16, "eval.fid_every": 0, "eval.fid_every_steps": None, "diffusion.objective": objective,
                                           "diffusion.sampler": None, "eval.every_steps": 25, "eval.cadence": "uniform",
                                           "eval.refine_snapshots": 0})  # fmt: skip
        kept: list[tuple[int, float, dict]] = []  # (step, mem_frac, EMA weights)

        def report(m, ckpt, kept=kept, cfg=cfg):
            if ckpt is None:  # a refinement or divergence report carries no weights
                return False
            state = ckpt()
            weights = state["ema"] if state["ema"] is not None else state["net"]
            kept.append((m["step"], m["mem_frac"], {k: v.clone() for k, v in weights.items()}))
            return m["mem_frac"] >= 0.5 or m["step"] >= 3000

        train(cfg, report)
        # a model just past onset (first mem_frac ≥ threshold) and the last, memorizing one
        thr = cfg.stop.mem_frac_threshold
        onset = next((k for k in kept if k[1] >= thr), kept[-1])
        picks = {"at onset": onset, "memorizing": kept[-1]}
        data_ = load(cfg.data)
        process = build_process(cfg.diffusion)
        ev = Evaluator(cfg, data_, process, torch.device("cpu"))
        net = build_unet(cfg.model, data_.shape[0], data_.shape[1], data_.num_classes)
        for label, (step, _, weights) in picks.items():
            net.load_state_dict(weights)
            ref = None
            for s in counts:
                t0 = time.perf_counter()
                samples = ev.sample(net, cfg.eval.num_samples, s)
                sec = time.perf_counter() - t0
                flags, _ = memorized_pixel(to_model_range(samples), ev.train_flat, cfg.eval.mem_ratio)
                f = fraction_with_interval(flags)
                ref = ref or f
                agree = ref.lo <= f.value <= ref.hi
                rows.append([f"{objective}/{cfg.diffusion.resolved_sampler}", label, step, s, f.value,
                             f"[{fmt(f.lo)}, {fmt(f.hi)}]", agree, sec])  # fmt: skip
                data[f"{objective}/{label}/{s}"] = (f.value, f.lo, f.hi, sec)
    agree = [c for c in counts[1:] if all(r[6] for r in rows if r[3] == c)]
    default_steps = config(smoke_space() if quick else default_space(), {}).eval.mem_sample_steps or cfg.diffusion.sample_steps
    return Section(
        "3c", "Fewer sampler steps for the memorization test", f"mem_frac within the {counts[0]}-step interval",
        f"{', '.join(map(str, agree)) or 'no'} steps agree with {counts[0]} in every case; "
        f"{', '.join(str(c) for c in counts[1:] if c not in agree) or 'none'} do not (the default uses {default_steps})",
        None if quick else default_steps in agree,
        ["process", "model", "step", "sampler steps", "mem_frac", "95% bootstrap", f"within {counts[0]}-step interval",
         "sampling s"], rows,
        notes=[f"digits N=16 (the default's smallest point), {cfg.eval.num_samples} samples from the evaluator's fixed noise; "
               "'at onset' = the first evaluation with mem_frac ≥ the threshold, 'memorizing' = mem_frac ≥ 0.5"],
        data=data,
    )  # fmt: skip


def run(quick: bool) -> list[Section]:
    return [grid_tax(quick), cifar_size(quick), sampler_steps(quick)]
