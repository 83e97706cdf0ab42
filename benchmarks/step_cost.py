"""9. Where a sweep's training step goes: the default's step measured, in one run, in a bare
PyTorch loop, in `train()` (what `raydiff train` runs), in one Ray trial, and in two Ray trials
at once (what the embedded default does on a 2-core machine), with two bare loops at once as the
last one's baseline: two processes sharing a machine's cores, caches and memory bandwidth, Ray or
no Ray.

Every side trains the same model on the same data (N=64, B=64, the default's clip and EMA) for
the same steps on one torch thread; raydiff's sides are timed between evaluations from their own
reports or metrics rows (Δwall_s − eval_s), so evaluation is not counted.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import Section, alternate, config, default_space, median, smoke_space
from benchmarks.framework import bare_rate, busy_rate, raydiff_rate
from raydiff.training.schedule import eval_schedule

ROOT = Path(__file__).resolve().parent.parent


def ray_rates(cfg, seeds: list[int], storage: str, name: str) -> list[float]:
    """One sweep of len(seeds) trials of `cfg` (differing only by seed), all at once, on a Ray
    that is already up; each trial's steps/s from its metrics rows."""
    from benchmarks.ray_tax import one_point_space
    from raydiff.config import search_space_from_dict
    from raydiff.results_folder import load_sweep
    from raydiff.tune.sweep import run_sweep

    raw = json.loads(one_point_space(cfg, name).to_json())
    raw["grid"] = {"train.seed": seeds}
    loc = run_sweep(search_space_from_dict(raw), storage=storage, out=io.StringIO())
    by_trial = load_sweep(loc.uri).evals
    assert len(by_trial) == len(seeds), sorted(by_trial)
    return [busy_rate(rows) for rows in by_trial.values()]


def bare_pair(cfg, warmup: int, steps: int) -> list[float]:
    """Two bare loops at once: this process and a second one started beside it."""
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    code = (
        "import sys, json, torch; torch.set_num_threads(1)\n"
        "from benchmarks.framework import bare_rate\nfrom raydiff.config import experiment_from_dict\n"
        "cfg = experiment_from_dict(json.loads(sys.stdin.read()))\n"
        f"print(bare_rate(cfg, {warmup}, {steps}, extras=True))\n"
    )
    other = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT, env=env)
    other.stdin.write(json.dumps(cfg.to_dict()))
    other.stdin.close()
    mine = bare_rate(cfg, warmup, steps, extras=True)
    out = other.stdout.read()
    if other.wait() != 0:
        raise RuntimeError(f"the second bare loop failed ({other.returncode})")
    return [mine, float(out.strip().splitlines()[-1])]


def threads_speedup(cfg, steps: int, reps: int) -> float:
    """Steps/s of raydiff's training step on two torch threads over one (what a trial would gain
    from a core its finished neighbours left idle), alternated, medians."""
    import torch

    from raydiff.data import load
    from raydiff.diffusion import build_process
    from raydiff.training.step import OptimizerStep
    from raydiff.training.state import TrainState

    data, device = load(cfg.data), torch.device("cpu")
    ts = TrainState(cfg, data, device)
    step = OptimizerStep(cfg, ts, build_process(cfg.diffusion), data, device)
    before = torch.get_num_threads()

    def rate(threads: int) -> float:
        torch.set_num_threads(threads)
        for _ in range(3):
            step()
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        return steps / (time.perf_counter() - t0)

    try:
        res = alternate({"one": lambda: rate(1), "two": lambda: rate(2)}, reps)
    finally:
        torch.set_num_threads(before)
    return median(res["two"]) / median(res["one"])


def run(quick: bool) -> Section:
    import ray

    if quick:
        space, reps = smoke_space(), 1
        over = {"data.n_train": 8, "train.max_steps": 15, "eval.every_steps": 5, "eval.cadence": "uniform"}
    else:  # the default's cadence, as section 1: evaluations at 100 … 675 and 812
        space, reps = default_space(), 2
        over = {"data.n_train": 64, "train.max_steps": 812}
    cfg = config(space, {**over, "eval.fid_every": 0, "eval.fid_every_steps": None, "stop.patience": 10**6})
    sched = eval_schedule(cfg, cfg.budget_steps)
    warmup, measured = sched[0], sched[-1] - sched[0]
    counter = [0]

    def ray_side(k: int) -> list[float]:
        counter[0] += 1
        return ray_rates(cfg, list(range(k)), storage, f"stepcost{counter[0]}")

    with tempfile.TemporaryDirectory(prefix="raydiff-stepcost-") as storage:
        ray.init(include_dashboard=False, logging_level="ERROR", log_to_driver=False, num_cpus=os.cpu_count())
        try:
            res = alternate({
                "bare": lambda: bare_rate(cfg, warmup, measured, extras=True),
                "train": lambda: raydiff_rate(cfg, warmup),
                "ray1": lambda: ray_side(1)[0],
                "ray2": lambda: median(ray_side(2)),
                "bare2": lambda: median(bare_pair(cfg, warmup, measured)),
            }, reps)  # fmt: skip
        finally:
            ray.shutdown()
    # two threads for one trial: the default's model, and a 2.9M-parameter U-Net at 32×32×3
    larger = config(space, {"data.dataset": "gmm", "data.image_size": 32, "data.channels": 3, "data.n_train": 64,
                            "model.preset": "marion-2.9m", "train.batch_size": 16, "diffusion.objective": "flow",
                            "diffusion.sampler": None})  # fmt: skip
    two_threads = {
        f"{cfg.model.preset or 'smoke'} (B={cfg.batch}, {cfg.data.dataset})": threads_speedup(cfg, 20 if quick else 300, 1 if quick else 3),
        "marion-2.9m (B=16, 32×32×3)": threads_speedup(larger, 2 if quick else 20, 1 if quick else 3),
    }
    rate = {k: median(v) for k, v in res.items()}
    sec = {k: 1.0 / v for k, v in rate.items()}  # seconds per step
    names = {
        "bare": "bare PyTorch loop, alone",
        "train": "raydiff's train() loop (raydiff train), alone",
        "ray1": "one Ray trial, alone",
        "bare2": "two bare loops at once (two processes)",
        "ray2": "two Ray trials at once (the default's sweep on 2 cores)",
    }
    rows = [[names[k], sec[k] * 1000, sec[k] / sec["bare"]] for k in names]
    ray_cost = sec["ray1"] / sec["train"]
    contention = sec["bare2"] / sec["bare"]
    return Section(
        "9", "Step cost: bare loop vs train() vs a Ray trial, alone and two at once", "Ray trial alone ≤ 1.02 × train()",
        f"a sweep's step (two Ray trials at once) = {sec['ray2'] / sec['bare']:.2f} × a bare step alone: "
        f"train() {sec['train'] / sec['bare']:.3f}, Ray {ray_cost:.3f}, two processes on the cores {contention:.2f}",
        None if quick else ray_cost <= 1.02,
        ["where the step runs", "ms per step (median)", "vs bare alone"], rows,
        notes=[
            f"{cfg.data.dataset} N={cfg.data.n_train}, B={cfg.batch}, {measured} timed steps after {warmup} warm-up steps, "
            f"{reps} alternated repetitions per side, one torch thread per process; Ray already running "
            f"(start-up not counted), {os.cpu_count()} CPUs",
            "raydiff's sides: timed between evaluations (Δwall_s − eval_s) from their reports / metrics rows",
            f"two at once vs alone: Ray trials {sec['ray2'] / sec['ray1']:.2f}×, bare loops {contention:.2f}× — "
            "what two processes cost each other on this machine, not something Ray adds",
            "a second torch thread for one trial (the core a finished neighbour leaves idle), steps/s vs one thread: "
            + ", ".join(f"{k} {v:.2f}×" for k, v in two_threads.items()),
        ],
        data={"rates": res, "ms_per_step": {k: v * 1000 for k, v in sec.items()}, "two_threads": two_threads},
    )  # fmt: skip
