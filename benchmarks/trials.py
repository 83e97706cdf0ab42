"""Trials run directly (no Ray) under the onset stopper, shared by the measurement-tax (3) and
stopper-savings (5) benchmarks: the embedded default's grid, before and after the speed-ups,
alternated point by point so both see the same load."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch

from benchmarks.common import BEFORE_EVAL, alternate, config, default_space, smoke_space
from raydiff.trial import train


@dataclass
class TrialRun:
    overrides: dict[str, Any]
    steps: int = 0
    wall_s: float = 0.0  # the trial's own clock (training + evaluation), as reported
    eval_s: float = 0.0  # all evaluations, refinement ones included
    evals: int = 0
    refined: int = 0  # of which memorization-only refinement evaluations
    fid_evals: int = 0
    tau: int | None = None
    status: str = ""
    history: list[tuple[int, float | None]] = field(default_factory=list)  # (step, mem_frac)

    @property
    def tax(self) -> float:
        return self.eval_s / self.wall_s

    @property
    def train_s_per_step(self) -> float:
        return (self.wall_s - self.eval_s) / self.steps


def run_trial(cfg, overrides: dict[str, Any]) -> TrialRun:
    out = TrialRun(overrides)

    def report(m: dict[str, Any], ckpt) -> bool:
        out.evals += 1
        out.eval_s += m.get("eval_s", 0.0)
        out.refined += bool(m.get("refined"))
        out.fid_evals += m.get("fid") is not None
        out.history.append((m["step"], m.get("mem_frac")))
        if m.get("refined"):
            return False
        status = m.get("stop_status")  # train()'s stop decision for this evaluation (None: go on)
        out.status = status or "budget"
        return status is not None

    last = train(cfg, report)
    out.steps, out.wall_s, out.tau = last["step"], last["wall_s"], last.get("tau_mem_step")
    return out


_CACHE: dict[bool, dict[str, list[TrialRun]]] = {}


def grid_runs(quick: bool) -> dict[str, list[TrialRun]]:
    """{"before": [...], "after": [...]}, one TrialRun per grid point, before/after alternated."""
    if quick in _CACHE:
        return _CACHE[quick]
    torch.set_num_threads(1)  # a 1-CPU trial, as the default sweep runs them
    if quick:
        space, points = smoke_space(), [{"data.n_train": 8, "train.max_steps": 20, "eval.every_steps": 10}]
    else:
        space, points = default_space(), default_space().points()
    runs: dict[str, list[TrialRun]] = {"before": [], "after": []}
    for i, p in enumerate(points):
        sides = {
            "before": lambda p=p: run_trial(config(space, {**BEFORE_EVAL, **p}), p),
            "after": lambda p=p: run_trial(config(space, p), p),
        }
        if i % 2:  # alternate which side goes first from point to point
            sides = dict(reversed(list(sides.items())))
        t0 = time.perf_counter()
        for side, res in alternate(sides, 1).items():
            runs[side].append(res[0])
        print(f"  grid point {p}: {time.perf_counter() - t0:.0f} s", flush=True)
    _CACHE[quick] = runs
    return runs
