"""2. Ray tax: one trial through Ray Tune (`run_sweep` on a one-point space) against the same
`train()` called directly, same config, seed and step budget (no onset stop: patience larger
than the number of evaluations), alternated.

Three ratios: whole call including Ray's start and shutdown; the `run_sweep` call on a Ray that is
already up (as on a cluster; start-up excluded, and said so); and the trial's own wall_s inside
its worker (what checkpointing and `tune.report` add to the loop).
"""

from __future__ import annotations

import io
import tempfile

import torch

from benchmarks.common import Section, alternate, config, default_space, median, smoke_space, timed
from benchmarks.framework import raydiff_rate
from raydiff import results
from raydiff.config import search_space_from_dict
from raydiff.trial import train

TRIAL_SECONDS = 180  # "a trial of a few minutes"


def one_point_space(cfg, name: str):
    raw = {
        "sweep": {"name": name, "mode": "grid", "resources": {"cpu": 1, "gpu": 0}, "max_failures": 0},
        "grid": {},
        **cfg.to_dict(),
    }
    return search_space_from_dict(raw)


def ray_side(cfg, storage: str, counter: list[int]) -> dict[str, float]:
    import ray

    from raydiff.tune.sweep import run_sweep

    counter[0] += 1
    space = one_point_space(cfg, f"raytax{counter[0]}")
    t_init, _ = timed(lambda: ray.init(include_dashboard=False, logging_level="ERROR", log_to_driver=False))
    try:
        t_sweep, loc = timed(lambda: run_sweep(space, storage=storage, out=io.StringIO()))
    finally:
        t_down, _ = timed(ray.shutdown)
    fs, root = results.filesystem(loc.uri)
    trials = results.read_trials(fs, root).to_pylist()
    assert len(trials) == 1 and trials[0]["status"] == "budget", trials
    return {"init": t_init, "sweep": t_sweep, "down": t_down, "trial_wall": trials[0]["wall_s"], "steps": trials[0]["steps_done"]}


def direct_side(cfg) -> dict[str, float]:
    t, last = timed(lambda: train(cfg, lambda m, _ckpt: False))
    return {"call": t, "trial_wall": last["wall_s"], "steps": last["step"]}


def run(quick: bool) -> Section:
    torch.set_num_threads(1)  # what the trainable gives a 1-CPU trial
    if quick:
        space, n, steps, every, reps = smoke_space(), 8, 30, 10, 1
    else:  # a budget that takes about three minutes here, from the loop's measured speed
        space, n, every, reps = default_space(), 64, None, 2
        probe = config(space, {"data.n_train": n, "train.max_steps": 200, "eval.every_steps": 100,
                               "eval.cadence": "uniform", "eval.fid_every": 0, "eval.fid_every_steps": None})  # fmt: skip
        steps = max(500, int(round(TRIAL_SECONDS * 0.9 * raydiff_rate(probe, 100), -2)))  # ~10% goes to evaluation
    over = {"data.n_train": n, "train.max_steps": steps, "stop.patience": 10**6}
    if every:
        over["eval.every_steps"] = every
    cfg = config(space, over)
    counter = [0]
    with tempfile.TemporaryDirectory(prefix="raydiff-raytax-") as storage:
        res = alternate({"ray": lambda: ray_side(cfg, storage, counter), "direct": lambda: direct_side(cfg)}, reps)
    ray_total = median([r["init"] + r["sweep"] + r["down"] for r in res["ray"]])
    ray_sweep = median([r["sweep"] for r in res["ray"]])
    direct = median([r["call"] for r in res["direct"]])
    wall_ray = median([r["trial_wall"] for r in res["ray"]])
    wall_direct = median([r["trial_wall"] for r in res["direct"]])
    assert all(r["steps"] == steps for side in res.values() for r in side)
    ratio = ray_sweep / direct
    rows = [
        ["direct train() call (incl. data/model/evaluator set-up)", direct, 1.0],
        ["run_sweep, Ray already running (start-up excluded)", ray_sweep, ratio],
        ["ray.init + run_sweep + ray.shutdown", ray_total, ray_total / direct],
        ["trial's own wall_s: direct", wall_direct, 1.0],
        ["trial's own wall_s: in a Ray worker (checkpoint per report)", wall_ray, wall_ray / wall_direct],
    ]
    return Section(
        "2", "Ray tax: one trial through Ray Tune vs train() called directly", "≤ 1.02 (trial of a few minutes; issue 15)",
        f"wall-time ratio Ray/direct = {ratio:.3f} with Ray already up; {ray_total / direct:.3f} including Ray start-up",
        None if quick else ratio <= 1.02,
        ["what", "seconds (median)", "vs direct"], rows,
        notes=[
            f"{cfg.data.dataset} N={n}, B={cfg.train.batch_size}, fixed budget of {steps} steps (sized to take "
            f"about {TRIAL_SECONDS} s from the loop's speed measured just before), "
            f"default evaluation cadence ({len(res['direct'])} alternated repetitions per side)",
            "the headline excludes Ray's start-up and shutdown (a sweep pays them once, not per trial)",
        ],
        data={k: v for k, v in res.items()} | {"ratio": ratio, "ratio_with_startup": ray_total / direct},
    )  # fmt: skip
